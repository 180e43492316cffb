"""The offline pipeline: capture files -> frames -> packets -> flows -> sessions -> records.

`Analyzer` wires the capture layer to the record sinks and, when given one, the rule engine:
every record goes through `engine.process(record, ts)` (time from the capture) and its alerts are
written right after it. Each file is its own run of the flow table (captures given together are
usually unrelated); counters add up across files.

With a segmentation policy (a PolicyMonitor, inspector.policy), each flow gets its zones when the
flow table creates it (so every record of it carries `src_zone` / `dest_zone`), each transaction
record is checked (once per flow and protocol) and flows that end without one are checked at
their end; a flow the policy does not allow gives a `policy` record, written and offered to the
engine right after the record that triggered it (before the flow record, at a flow's end).

With egress allowlists (inspector.egress, `analyze --egress`: a capture of workloads' outbound
traffic), every HTTP record gets the `egress` decision before it is written and evaluated.

With a baseline (inspector.anomaly), each transaction record is also offered to it, and the
anomaly records it returns are written and offered to the engine right after it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from inspector.capture.decode import PacketDecoder
from inspector.capture.flows import Flow, FlowTable
from inspector.capture.packet import IPPROTO_TCP
from inspector.capture.reader import CaptureFormatError, open_capture
from inspector.capture.router import StreamRouter
from inspector.capture.tls_keylog import CaptureKeys, KeyLog
from inspector.egress.policy import EgressPolicy, egress_decision
from inspector.limits import DEFAULT_LIMITS, Limits
from inspector.records import anomaly_record, base_record, exception_site, format_ts

if TYPE_CHECKING:  # only with --baseline or --policy, which import them
    from inspector.anomaly.baseline import Baseline
    from inspector.policy.monitor import PolicyMonitor

_DECODE_LAYERS = {"fragment": "ip", "ipv4": "ip", "ipv6": "ip", "ethernet": "link", "vlan": "link",
                  "sll": "link", "sll2": "link", "null": "link", "loop": "link", "unsupported": "link"}

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".gz", ".dmp", ".pcap.gz", ".pcapng.gz")

#: Frames the decoder or flow table may fail on before the run stops with the exception.
MAX_FRAME_ERRORS = 100

#: Record types that are not transactions (not counted as such, never checked against a policy).
NOT_TRANSACTIONS = frozenset({"anomaly", "flow", "alert", "policy", "stats"})


class Verdict(Protocol):
    alerts: Sequence[dict[str, Any]]


class RecordEngine(Protocol):
    def process(self, record: dict[str, Any], ts: float) -> Verdict: ...

    def counters(self) -> dict[str, Any]: ...


@dataclass
class FileResult:
    path: str
    packets: int = 0
    error: str | None = None  # damage found (the part before it was analyzed)
    format: str = ""

    @property
    def problem(self) -> str:
        """The error as one line naming the file ("" when the file was read whole)."""
        if not self.error:
            return ""
        return self.error if self.error.startswith(self.path) else f"{self.path}: {self.error}"


@dataclass
class RunStats:
    files: list[FileResult] = field(default_factory=list)
    packets: int = 0
    frame_bytes: int = 0
    dropped: int = 0  # packets the captures say their capturing host dropped (pcapng statistics)
    flows: int = 0
    flows_by_app: Counter = field(default_factory=Counter)
    records: Counter = field(default_factory=Counter)  # by event_type
    transactions: Counter = field(default_factory=Counter)  # by protocol
    anomalies: Counter = field(default_factory=Counter)  # "layer.event"
    alerts: Counter = field(default_factory=Counter)  # (sid, signature)
    decode: Counter = field(default_factory=Counter)
    tcp: Counter = field(default_factory=Counter)
    detection: Counter = field(default_factory=Counter)
    last_ts: float = 0.0  # capture time of the run's last packet
    engine: dict[str, Any] | None = None  # the rule engine's counters (Engine.counters); None without rules

    @property
    def damaged(self) -> bool:
        return any(f.error for f in self.files)


def expand_paths(paths: Iterable[str | Path], skipped: list[Path] | None = None) -> list[Path]:
    """Files as given; directories walked (sorted) for regular files named like captures. Entries
    named like captures that are not (a dangling link, a FIFO that would block, a device) are
    left out, and added to `skipped` when given, so the caller can say so."""
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                if not f.name.lower().endswith(CAPTURE_SUFFIXES) or f.is_dir():
                    continue
                if f.is_file():
                    out.append(f)
                elif skipped is not None:
                    skipped.append(f)
        else:
            out.append(path)
    return out


def prepare_first_use() -> None:
    """Make now what an analysis otherwise makes the first time it needs it (start-up leaves
    them to runs that do): the HPACK Huffman automaton and picklescan's import. A flow-sharded
    run calls this before it forks, so its workers share them."""
    from inspector.capture.hpack import huffman_automaton
    from inspector.protocols import pickle_scan

    huffman_automaton()
    pickle_scan.preload()


def record_meta(record: dict[str, Any]) -> tuple:
    """What counting a written record takes: `("alert", sid, signature, flow_id)`,
    `("anomaly", "layer.event")`, `("flow", flow_id)` or `(event_type,)`."""
    event_type = record["event_type"]
    if event_type == "alert":
        info = record["alert"]
        return ("alert", info["signature_id"], info["signature"], record.get("flow_id"))
    if event_type == "anomaly":
        anomaly = record["anomaly"]
        return ("anomaly", f"{anomaly['layer']}.{anomaly['event']}")
    if event_type == "flow":
        return ("flow", record.get("flow_id"))
    return (event_type,)


class Analyzer:
    """Runs captures through the offline path. `write` receives every record to output."""

    def __init__(self, write: Callable[[dict[str, Any]], None], engine: RecordEngine | None = None,
                 limits: Limits = DEFAULT_LIMITS, flow_records: bool = True,
                 policy: PolicyMonitor | None = None, keylog: KeyLog | None = None,
                 baseline: Baseline | None = None, egress: EgressPolicy | None = None,
                 contain_errors: bool = True) -> None:
        """`contain_errors`: an exception out of a flow's parsers ends that flow's inspection with
        an anomaly instead of the run (inspector.capture.router); the fuzz harness turns it off
        to see every exception as the crash it is."""
        self._write = write
        self._contain_errors = contain_errors
        self.egress = egress  # egress allowlists (inspector.egress): HTTP records get an `egress` object
        self.baseline = baseline  # anomaly detection (inspector.anomaly): deviations become anomaly records
        self.keylog = keylog  # TLS secrets (--keylog); each capture's own secrets blocks are added
        self._tls_keys: CaptureKeys | None = None
        self._engine = engine
        self._limits = limits
        self._flow_records = flow_records
        self.policy = policy
        self.stats = RunStats(engine=None if engine is None else engine.counters())
        self._alerted_flows: set[int] = set()

    # -- record sink (the routers call this) ------------------------------------------------

    def emit(self, record: dict[str, Any], ts: float) -> None:
        transaction = self.count(record)
        if transaction and self.egress is not None and "http" in record:
            record["egress"] = egress_decision(self.egress, record["http"])
        self._write(record)
        engine = self._engine
        if engine is not None:
            verdict = engine.process(record, ts)
            for alert in verdict.alerts:
                self.count(alert)
                self._write(alert)
        if transaction and self.policy is not None:
            check = self.policy.check_record(record)
            if check is not None and check.record is not None:
                self.emit(check.record, ts)
        if transaction and self.baseline is not None:
            for anomaly in self.baseline.observe(record, ts):
                self.emit(anomaly, ts)

    def count(self, record: dict[str, Any]) -> bool:
        """Count one record written (an alert also marks its flow alerted); True for a transaction."""
        return self.count_meta(record_meta(record))

    def count_meta(self, meta: tuple) -> bool:
        """:meth:`count` from a record's :func:`record_meta` (what a sharded run's workers send)."""
        stats = self.stats
        kind = meta[0]
        stats.records[kind] += 1
        if kind == "alert":
            stats.alerts[(meta[1], meta[2])] += 1
            if meta[3] is not None:
                self._alerted_flows.add(meta[3])
            return False
        if kind == "anomaly":
            stats.anomalies[meta[1]] += 1
            return False
        if kind == "flow":
            self._alerted_flows.discard(meta[1])  # its record has been made
            return False
        if kind in NOT_TRANSACTIONS:
            return False
        stats.transactions[kind] += 1
        return True

    def flow_alerted(self, flow_id: Any) -> bool:
        """Whether an alert was written for the flow (its flow record's `alerted`)."""
        return flow_id in self._alerted_flows

    # -- files -------------------------------------------------------------------------------

    def analyze_file(self, path: str | Path, progress: Callable[[int], None] | None = None) -> FileResult:
        try:
            return self._analyze_file(path, progress)
        finally:
            if self._engine is not None:  # the engine's totals so far (it spans the files), also
                self.stats.engine = self._engine.counters()  # after a file that did not open

    def _analyze_file(self, path: str | Path, progress: Callable[[int], None] | None) -> FileResult:
        result = FileResult(str(path))
        self.stats.files.append(result)
        try:
            reader = self._open_capture(path)
        except CaptureFormatError as exc:
            result.error = str(exc)
            self._capture_damaged(result, 0.0)  # no packet of its own to date it: 1970, as an empty run
            return result
        except OSError as exc:
            result.error = f"cannot read: {exc.strerror or exc}"
            self._capture_damaged(result, 0.0)  # no packet of its own to date it: 1970, as an empty run
            return result
        result.format = reader.format + (" (gzip)" if reader.compressed else "")
        limits = self._limits
        self._tls_keys = CaptureKeys(self.keylog, reader.secrets, limits)
        decoder = PacketDecoder(limits)
        table = FlowTable(limits, self._make_handler, self._flow_end)
        stats = self.stats
        try:
            packets, frame_bytes, last_ts = self._run(reader, decoder, table, progress)
            self._finish(decoder, table)
        finally:
            reader.close()
        result.packets = packets
        if reader.error is not None:
            result.error = str(reader.error)
            self._capture_damaged(result, last_ts)
        stats.packets += packets
        stats.frame_bytes += frame_bytes
        stats.dropped += reader.dropped
        if packets and last_ts > stats.last_ts:
            stats.last_ts = last_ts
        stats.flows += table.flows_total
        stats.decode.update(decoder.counters)
        stats.tcp.update(table.tcp_counters.as_dict())
        stats.tcp["flows_evicted"] += table.flows_evicted
        stats.tcp["flows_timed_out"] += table.flows_timed_out
        return result

    def _run(self, reader: Any, decoder: PacketDecoder, table: FlowTable,
             progress: Callable[[int], None] | None) -> tuple[int, int, float]:
        """Every frame through the decoder and the flow table: (frames, their wire bytes, last time)."""
        frame_bytes = 0
        packets = 0
        last_ts = 0.0
        for packets, frame in enumerate(self._frames(reader, progress), 1):
            frame_bytes += frame.wire_len
            last_ts = frame.ts
            try:
                packet = decoder.decode(frame)
                if packet is not None:
                    table.packet(packet)
                else:  # no packet, but its time counts, as in a flow-sharded run (the other
                    table.tick(frame.ts)  # workers' frames are times there): flows idle out alike
            except Exception as exc:
                self._frame_failed(exc, frame)
            if not packets & 0xFF:
                self._decode_anomalies(decoder)
        return packets, frame_bytes, last_ts

    def _open_capture(self, path: str | Path) -> Any:
        """The reader of one capture (CaptureReader's interface; a sharded run's workers are fed)."""
        return open_capture(path)

    def _frame_failed(self, exc: Exception, frame: Any) -> None:
        """An exception out of the decoder or the flow table on one frame (a bug: they must not
        raise on any input): with containment the frame is skipped, counted (`frame_errors`) and
        reported with the exception's type and site, and the run goes on, up to
        `MAX_FRAME_ERRORS` frames; past them the exception ends the run (something fails on
        every frame: a bug to see, not to count). Without containment (the fuzz harness) it goes
        on at once."""
        detection = self.stats.detection
        if not self._contain_errors or detection["frame_errors"] >= MAX_FRAME_ERRORS:
            raise  # the exception the caller is handling
        detection["frame_errors"] += 1
        self.emit(anomaly_record(None, frame.ts, kind="decode", layer="inspector", event="parser_error",
                                 message=f"frame not analysed: {exception_site(exc)}", packet=frame.number),
                  frame.ts)

    def _finish(self, decoder: PacketDecoder, table: FlowTable) -> None:
        """End of a capture: unfinished fragments, then every open flow."""
        decoder.flush()
        self._decode_anomalies(decoder)
        table.finish()

    def _capture_damaged(self, result: FileResult, ts: float) -> None:
        """The EVE side of a capture that could not be read whole (or at all), naming the file."""
        self.emit(anomaly_record(None, ts, kind="decode", layer="capture", event="capture_damaged",
                                 message=result.problem), ts)

    @staticmethod
    def _frames(reader: Any, progress: Callable[[int], None] | None) -> Iterator[Any]:
        if progress is None:
            yield from reader
            return
        for n, frame in enumerate(reader):
            if not n & 0x3FF:
                progress(reader.bytes_read)
            yield frame
        progress(reader.bytes_read)

    def _make_handler(self, flow: Flow) -> StreamRouter | None:
        if self.policy is not None:
            flow.zones = self.policy.zones(flow.src_text, flow.dest_text)
        if flow.proto != IPPROTO_TCP:
            return None
        return StreamRouter(flow, self, self._limits, self.stats.detection, self._tls_keys,
                            contain_errors=self._contain_errors)

    def _decode_anomalies(self, decoder: PacketDecoder) -> None:
        self._emit_decode_anomalies(decoder.drain_anomalies())

    def _emit_decode_anomalies(self, anomalies: Iterable[Any]) -> None:
        for anomaly in anomalies:
            layer = anomaly.event.split("_", 1)[0]
            self.emit(anomaly_record(None, anomaly.ts, kind="decode", layer=_DECODE_LAYERS.get(layer, layer),
                                     event=anomaly.event, message=anomaly.message,
                                     packet=anomaly.number), anomaly.ts)

    def _flow_end(self, flow: Flow) -> None:
        self.stats.flows_by_app[flow.app_proto or flow.proto_name.lower()] += 1
        if self.policy is not None:
            check = self.policy.check_flow_end(flow, flow.last_ts)
            if check is not None and check.record is not None:
                self.emit(check.record, flow.last_ts)
        if not self._flow_records:
            return
        record = base_record(flow, "flow", flow.last_ts)
        handler = flow.handler
        record["flow"] = {
            "pkts_toserver": flow.pkts[0],
            "pkts_toclient": flow.pkts[1],
            "bytes_toserver": flow.bytes[0],
            "bytes_toclient": flow.bytes[1],
            "start": format_ts(flow.start_ts),
            "end": format_ts(flow.last_ts),
            "age": int(flow.last_ts - flow.start_ts),
            "state": flow.state,
            "reason": flow.end_reason,
            "alerted": self.flow_alerted(flow.flow_id),
        }
        gap_bytes = getattr(handler, "gap_bytes", 0)
        if gap_bytes:
            record["flow"]["gap_bytes"] = gap_bytes
        self._alerted_flows.discard(flow.flow_id)
        self.emit(record, flow.last_ts)
