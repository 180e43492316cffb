"""The baseline of normal ML traffic, and the `anomaly` records its deviations become.

Sans-IO: :meth:`Baseline.observe` takes a transaction record and its time (capture time
offline, wall clock live) and returns anomaly records; nothing else goes in or out. Given the
same records in the same order with the same timestamps it returns the same anomalies, and its
state (and so the file `save` writes) is the same.

What is learned (features.py says how each value is read from a record):

==================  ==========================  ==============================================
kind                per                         model
==================  ==========================  ==============================================
``rate_spike``      client, server, subject;    requests per `interval`: RobustEwma of the
                    and `*` (all clients)       counts, the interval in progress scored as it
                    per server and subject      grows (robust z, Poisson floor)
``payload_size``    client, server, subject     log2(1 + request bytes): robust z (two-sided)
``new_shape``       server, subject (model)     set of input shape patterns (batch dim free)
``new_client``      server                      set of client addresses
``new_endpoint``    server                      set of subjects (models, endpoints)
``new_fingerprint`` server                      set of TLS client JA4 fingerprints
``new_protocol``    zone pair                   set of record types (with a policy only)
==================  ==========================  ==============================================

Novelty scores are bits of surprise (stats.NoveltySet); rate and size scores robust z-scores.
Anomalies are reported when the score reaches the kind's report threshold (`BaselineParams`; a
rate spike again each time its score doubles within the interval, so rules can ask for more),
and only after the warm-up: while learning online, nothing is reported until `warmup` seconds
of traffic have been seen. A baseline loaded from a file has had its warm-up. The baseline keeps
learning while it detects (a new value is reported once, then known; rates adapt).

Memory is bounded by the caps of `BaselineParams`; evictions are counted (`counters()`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from inspector.anomaly import features as feat
from inspector.anomaly.stats import BoundedTable, NoveltySet, OutlierGuard, RateCounter, RobustEwma
from inspector.records import format_ts

FORMAT = "inspector-baseline"
VERSION = 1

RATE_SPIKE, PAYLOAD_SIZE = "rate_spike", "payload_size"
NEW_SHAPE, NEW_CLIENT, NEW_ENDPOINT = "new_shape", "new_client", "new_endpoint"
NEW_FINGERPRINT, NEW_PROTOCOL = "new_fingerprint", "new_protocol"
KINDS = (RATE_SPIKE, PAYLOAD_SIZE, NEW_SHAPE, NEW_CLIENT, NEW_ENDPOINT, NEW_FINGERPRINT, NEW_PROTOCOL)

#: Novelty kind -> the set table it uses.
_SETS = {NEW_SHAPE: "shapes", NEW_CLIENT: "clients", NEW_ENDPOINT: "endpoints",
         NEW_FINGERPRINT: "fingerprints", NEW_PROTOCOL: "protocols"}
#: Common fields an anomaly record copies from the record that showed it.
_COMMON = ("flow_id", "community_id", "src_ip", "src_port", "dest_ip", "dest_port", "proto", "app_proto",
           "src_zone", "dest_zone", "tx_id")


@dataclass(frozen=True, slots=True, kw_only=True)
class BaselineParams:
    """The knobs of the baseline (docs/anomaly.md explains each). Saved with the baseline."""

    interval: float = 10.0  # seconds per rate interval
    rate_alpha: float = 0.1  # EWMA weight of a closed interval
    rate_min_history: int = 6  # closed intervals before a key's rate is scored
    rate_report_z: float = 4.0
    rate_relearn_after: int = 30  # intervals in a row above rate_report_z before they are learned
    size_alpha: float = 0.05  # EWMA weight of one request's size
    size_min_samples: int = 20
    size_floor_bits: float = 0.5  # smallest sigma of log2(size): a 2^(z*0.5) factor
    size_report_z: float = 4.0
    size_relearn_after: int = 100  # requests in a row past size_report_z before they are learned
    novelty_min_observations: int = 10  # a set reports new values once it has seen this many
    novelty_report_bits: float = 1.0
    warmup: float = 300.0  # seconds learned (online) before anything is reported
    # caps
    max_rate_keys: int = 20_000
    max_sets: int = 20_000
    max_clients: int = 1024  # per server
    max_endpoints: int = 1024  # per server
    max_shapes: int = 64  # per model
    max_fingerprints: int = 256  # per server
    max_protocols: int = 64  # per zone pair

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))

    def problems(self) -> list[str]:
        """What is out of range: intervals and windows must be positive, weights in (0, 1],
        thresholds and counts not negative, caps at least 1 (NaN and infinity are none of these)."""
        out = []
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                out.append(f"{f.name} must be a finite number, not {value}")
            elif f.name == "interval" and value <= 0:
                out.append(f"interval must be > 0 seconds, not {value}")
            elif f.name.endswith("_alpha") and not 0 < value <= 1:
                out.append(f"{f.name} must be in (0, 1], not {value}")
            elif f.name.startswith("max_") and value < 1:
                out.append(f"{f.name} must be at least 1, not {value}")
            elif value < 0:
                out.append(f"{f.name} must not be negative, not {value}")
        return out

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> BaselineParams:
        """Saved params; unknown names and values out of range raise ValueError."""
        if not isinstance(value, dict):
            raise ValueError(f"params must be an object, not {type(value).__name__}")
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"unknown params {', '.join(unknown)}")
        return cls(**{k: (int(v) if known[k] == "int" else float(v)) for k, v in value.items()})


class BaselineError(ValueError):
    """A baseline file that cannot be read."""


@dataclass(slots=True)
class _SizeState:
    stats: RobustEwma
    reported: int = -1  # the rate interval a size anomaly was last reported in
    outliers_in_a_row: int = 0  # sizes not learned, one after the other (OutlierGuard)


class Baseline:
    """Learns normal traffic from records and reports deviations as anomaly records."""

    def __init__(self, params: BaselineParams | None = None) -> None:
        self.params = params or BaselineParams()
        p = self.params
        self.rates: BoundedTable[RateCounter] = BoundedTable(p.max_rate_keys)
        self.sizes: BoundedTable[_SizeState] = BoundedTable(p.max_rate_keys)
        self.sets: BoundedTable[NoveltySet] = BoundedTable(p.max_sets)
        self._rate_guard = OutlierGuard(p.rate_report_z, p.rate_min_history, p.rate_relearn_after)
        self._size_guard = OutlierGuard(p.size_report_z, p.size_min_samples, p.size_relearn_after)
        self._set_caps = {"shapes": p.max_shapes, "clients": p.max_clients, "endpoints": p.max_endpoints,
                          "fingerprints": p.max_fingerprints, "protocols": p.max_protocols}
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.learned_seconds = 0.0  # traffic time of baselines loaded from files
        self.records = 0
        self.reported: dict[str, int] = dict.fromkeys(KINDS, 0)
        #: When false, observe() only learns (baseline learn).
        self.detect = True
        #: Loaded from a file: the warm-up is behind it.
        self.loaded = False
        self._learned_range: tuple[str | None, str | None] = (None, None)

    # -- the one entry point --------------------------------------------------------------------

    def observe(self, record: dict[str, Any], ts: float) -> list[dict[str, Any]]:
        """Learn from one transaction record; the anomaly records it shows (possibly none)."""
        if self.first_ts is None:
            self.first_ts = ts
        if self.last_ts is None or ts > self.last_ts:
            self.last_ts = ts
        self.records += 1
        report = self.detect and self.warmed_up
        found: list[tuple[str, float, dict[str, Any]]] = []
        client, server = feat.client_of(record), feat.server_of(record)
        subject = feat.subject_of(record)
        if server is not None and subject is not None:
            self._rates(record, ts, client, server, subject, found)
            if client is not None:
                self._size(record, ts, client, server, subject, found)
            for pattern in feat.shape_patterns(record):
                self._novel(NEW_SHAPE, f"{server}|{subject}", pattern, found, subject=subject)
            self._novel(NEW_ENDPOINT, server, subject, found, subject=subject)
        if server is not None and client is not None and record.get("event_type") != "tls":
            self._novel(NEW_CLIENT, server, client, found, subject=subject)
        ja4 = feat.ja4_of(record)
        if server is not None and ja4 is not None:
            self._novel(NEW_FINGERPRINT, server, ja4, found)
        pair = feat.zone_pair_of(record)
        if pair is not None and isinstance(record.get("event_type"), str):
            self._novel(NEW_PROTOCOL, pair, record["event_type"], found)
        if not report or not found:
            return []
        out = []
        for kind, score, extra in found:
            self.reported[kind] += 1
            out.append(self._record(record, ts, kind, score, extra))
        return out

    @property
    def warmed_up(self) -> bool:
        if self.loaded:
            return True
        if self.first_ts is None or self.last_ts is None:
            return self.learned_seconds >= self.params.warmup
        return self.learned_seconds + (self.last_ts - self.first_ts) >= self.params.warmup

    # -- the models -----------------------------------------------------------------------------

    def _rates(self, record: dict[str, Any], ts: float, client: str | None, server: str, subject: str,
               found: list) -> None:
        p = self.params
        index = math.floor(ts / p.interval)
        for who, what in ((client, subject), ("*", subject), ("*", "*")):
            if who is None:
                continue
            key = f"{who}|{server}|{what}"
            counter = self.rates.get(key) or self.rates.put(key, RateCounter())
            counter.add(ts, p.interval, p.rate_alpha, self._rate_guard)
            if counter.history < p.rate_min_history or counter.counts is None:
                continue
            z = counter.score()
            # Reported when it first reaches the threshold in an interval, then each time it doubles:
            # the records follow a growing spike (a handful per interval at most).
            floor = 2 * counter.reported_score if counter.reported == index else p.rate_report_z
            if z >= floor:
                counter.reported, counter.reported_score = index, z
                scope = "client" if who != "*" else "all_clients" if what != "*" else "server"
                target = subject if what != "*" else f"server {server}"
                found.append((RATE_SPIKE, z, {
                    "subject": subject, "scope": scope,
                    "observed": counter.count, "expected": round(counter.counts.mean, 3),
                    "baseline_count": counter.history,
                    "message": f"{counter.count} requests in {p.interval:g} s from "
                               f"{'this client' if who != '*' else 'all clients'} to {target} "
                               f"(usually {counter.counts.mean:.1f})"}))

    def _size(self, record: dict[str, Any], ts: float, client: str, server: str, subject: str,
              found: list) -> None:
        size = feat.payload_of(record)
        if size is None:
            return
        p = self.params
        x = math.log2(1 + size)
        index = math.floor(ts / p.interval)
        reported = False
        for who in (client, "*"):
            key = f"{who}|{server}|{subject}"
            state = self.sizes.get(key) or self.sizes.put(key, _SizeState(RobustEwma()))
            stats = state.stats
            z = abs(stats.z(x, p.size_floor_bits)) if stats.n else 0.0
            if (not reported and stats.n >= p.size_min_samples and state.reported != index
                    and z >= p.size_report_z):
                state.reported = index
                reported = True  # the client's own baseline first; all clients' when it has none
                usual = 2 ** stats.mean - 1
                found.append((PAYLOAD_SIZE, z, {
                    "subject": subject, "scope": "client" if who != "*" else "all_clients",
                    "observed": size, "expected": round(usual, 1), "baseline_count": stats.n,
                    "message": f"{size} request bytes to {subject} (usually about {usual:.0f})"}))
            if self._size_guard.learn(state, z, stats.n):
                stats.update(x, p.size_alpha)

    def _novel(self, kind: str, scope: str, value: str, found: list, *, subject: str | None = None) -> None:
        table = _SETS[kind]
        key = f"{table}|{scope}"
        known = self.sets.get(key) or self.sets.put(key, NoveltySet(self._set_caps[table]))
        bits = known.surprise()
        enough = known.observations >= self.params.novelty_min_observations
        if known.observe(value) and enough and bits >= self.params.novelty_report_bits:
            extra: dict[str, Any] = {"value": value, "scope": scope, "baseline_count": known.observations - 1,
                                     "message": f"{kind.removeprefix('new_').replace('_', ' ')} {value!r} never "
                                                f"seen for {scope} ({len(known.values) - 1} known)"}
            if subject is not None:
                extra["subject"] = subject
            found.append((kind, bits, extra))

    # -- records --------------------------------------------------------------------------------

    @staticmethod
    def _record(record: dict[str, Any], ts: float, kind: str, score: float, extra: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"timestamp": record.get("timestamp") or format_ts(ts), "event_type": "anomaly"}
        for name in _COMMON:
            if name in record:
                out[name] = record[name]
        anomaly = {"type": "baseline", "layer": record.get("event_type", ""), "event": kind, "kind": kind,
                   "score": round(score, 3)}
        anomaly.update(extra)
        out["anomaly"] = anomaly
        return out

    def counters(self) -> dict[str, Any]:
        sets_evicted = sum(s.evicted for _, s in self.sets)
        return {"records": self.records, "rate_keys": len(self.rates), "size_keys": len(self.sizes),
                "sets": len(self.sets), "rate_keys_evicted": self.rates.evicted,
                "size_keys_evicted": self.sizes.evicted, "sets_evicted": self.sets.evicted,
                "set_values_evicted": sets_evicted, "reported": dict(self.reported)}

    # -- files ----------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        span = self.learned_seconds
        if self.first_ts is not None and self.last_ts is not None:
            span += self.last_ts - self.first_ts
        return {
            "format": FORMAT, "version": VERSION,
            "params": asdict(self.params),
            "learned": {"records": self.records, "seconds": round(span, 6),
                        "first": self._learned_range[0] or (format_ts(self.first_ts) if self.first_ts else None),
                        "last": format_ts(self.last_ts) if self.last_ts is not None else self._learned_range[1]},
            "rates": {key: counter.to_json() for key, counter in self.rates},
            "sizes": {key: state.stats.to_json() for key, state in self.sizes},
            "sets": {key: known.to_json() for key, known in self.sets},
        }

    def to_text(self) -> str:
        """The baseline file's text (:meth:`save`, :meth:`load`)."""
        return json.dumps(self.to_json(), sort_keys=True, indent=1) + "\n"

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_text())

    @classmethod
    def from_json(cls, value: Any, params: BaselineParams | None = None) -> Baseline:
        """A baseline from its JSON; `params` overrides the saved ones. Raises BaselineError."""
        if not isinstance(value, dict) or value.get("format") != FORMAT:
            raise BaselineError(f"not an {FORMAT} file")
        if value.get("version") != VERSION:
            raise BaselineError(f"baseline version {value.get('version')!r}, this inspector reads {VERSION}")
        try:
            saved = BaselineParams.from_json(value.get("params") or {})
            for section in ("rates", "sizes", "sets", "learned"):
                if not isinstance(value.get(section), dict):
                    raise ValueError(f"{section} must be an object")
            baseline = cls(params or saved)
            caps = baseline._set_caps
            for key, counter in value["rates"].items():
                baseline.rates.put(str(key), RateCounter.from_json(counter))
            for key, stats in value["sizes"].items():
                baseline.sizes.put(str(key), _SizeState(RobustEwma.from_json(stats)))
            for key, known in value["sets"].items():
                baseline.sets.put(str(key), NoveltySet.from_json(known, caps.get(str(key).split("|", 1)[0], 64)))
            baseline.learned_seconds = float(value["learned"]["seconds"])
            baseline.records = int(value["learned"]["records"])
            baseline.loaded = True
            baseline._learned_range = (value["learned"].get("first"), value["learned"].get("last"))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
            detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise BaselineError(f"malformed baseline: {detail}") from None
        return baseline

    @classmethod
    def load(cls, path: str | Path, params: BaselineParams | None = None) -> Baseline:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise BaselineError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise BaselineError(f"{path}: not JSON: {exc}") from None
        try:
            return cls.from_json(value, params)
        except BaselineError as exc:
            raise BaselineError(f"{path}: {exc}") from None
