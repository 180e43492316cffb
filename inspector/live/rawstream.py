"""Raw-TCP protocols live (PyTorch TCPStore, NCCL bootstrap): mitmproxy's `tcp_message` bytes
into the same sans-IO sessions the offline stream router drives.

Detection is the router's (`inspector.capture.router.RAW_DETECTORS`): the first bytes of each
direction, never the port. Until a detector decides, bytes are kept (up to DETECTION_BYTES per
direction) and replayed into the session; a connection nothing claims is left alone. Each
`Transaction` a session reports becomes one record (`{"event_type": "tcpstore", "tcpstore":
{...}}`), evaluated and written like an HTTP transaction; anomalies become anomaly records.
A block verdict drops the message that completed the transaction and closes the connection
(raw protocols have no error message a client would understand).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from inspector.capture.router import DETECTION_BYTES, RAW_DETECTORS, Detection
from inspector.engine import BLOCK
from inspector.http import TO_CLIENT, TO_SERVER, SessionAnomaly
from inspector.limits import Limits
from inspector.live.flowinfo import LiveFlowInfo
from inspector.rawtcp import Transaction
from inspector.records import anomaly_record, base_record


class RawStream:
    """One raw TCP connection: detection, then its protocol session."""

    def __init__(self, info: LiveFlowInfo, limits: Limits) -> None:
        self.info = info
        self.limits = limits
        self.session: Any = None
        self.swap = False
        self.gave_up = False
        self.tx_id = 0
        self._pending: list[tuple[int, bytes, float]] = []
        self._seen = [b"", b""]

    def feed(self, direction: int, data: bytes, ts: float) -> list:
        """Session output (Transactions, anomalies) for the bytes of one message."""
        if self.session is not None:
            return self.session.receive_data(self._side(direction), data, ts)
        if self.gave_up or not data:
            return []
        self._pending.append((direction, data, ts))
        if len(self._seen[direction]) < DETECTION_BYTES:
            self._seen[direction] += data[:DETECTION_BYTES]
        return self._detect(final=False)

    def end(self, ts: float) -> list:
        out = self._detect(final=True) if self.session is None and not self.gave_up and self._pending else []
        if self.session is not None:
            for direction in (TO_SERVER, TO_CLIENT):
                out += self.session.receive_eof(direction, ts)
        return out

    def _side(self, direction: int) -> int:
        return 1 - direction if self.swap else direction

    def _detect(self, *, final: bool) -> list:
        client, server = self._seen
        undecided = False
        found: Detection | None = None
        for detector in RAW_DETECTORS:
            answer = detector(client, server)
            if isinstance(answer, Detection):
                found = answer
                break
            undecided = undecided or answer is None
        if found is None:
            if final or not undecided or max(len(client), len(server)) >= DETECTION_BYTES:
                self.gave_up = True
                self._pending = []
            return []
        self.info.app_proto = found.app_proto
        self.swap = found.swap
        self.session = found.make(self.limits)
        out: list = []
        for direction, data, ts in self._pending:
            out += self.session.receive_data(self._side(direction), data, ts)
        self._pending = []
        self._seen = [b"", b""]
        return out


def handle_results(stream: RawStream, results: list, inspector: Any, now: Callable[[], float]) -> str:
    """Records, engine and EVE for a session's output; "block" when a verdict blocks."""
    action = "allow"
    for item in results:
        if isinstance(item, Transaction):
            ts = item.ts or now()
            record = base_record(stream.info, item.event_type, ts)
            record[item.event_type] = item.data
            record["tx_id"] = stream.tx_id
            stream.tx_id += 1
            if inspector.settings.log_transactions:
                inspector.write(record)
            inspector.metrics.requests.labels(item.event_type).inc()
            inspector.metrics.transactions.labels(item.event_type).inc()
            verdict = inspector.engine.process(record, ts)
        elif isinstance(item, SessionAnomaly):
            ts = item.ts or now()
            record = anomaly_record(stream.info, ts, kind="applayer", layer=item.layer, event=item.event,
                                    message=item.message)
            inspector.metrics.anomalies.labels(item.layer, item.event).inc()
            if inspector.settings.log_transactions:
                inspector.write(record)
            verdict = inspector.engine.process(record, ts)
        else:
            continue
        for alert in verdict.alerts:
            inspector.metrics.alerts.labels(str(alert["alert"]["signature_id"]), alert["alert"]["action"]).inc()
            inspector.write(alert)
        if verdict.alerts:
            inspector.flush()
        if isinstance(item, Transaction):
            inspector.check_policy(record, ts)
        if verdict.action == BLOCK:
            action = BLOCK
    inspector.maybe_flush()
    return action
