"""The ground truth of a lab capture: every flow and every transaction, labelled benign or with its scenario.

A truth file (`<capture>.truth.json`, format `inspector-lab-truth/1`) is what the generator put
on the wire, written as the generator saw it - never derived from parsing the capture - so the
evaluation (inspector.eval) can score what the inspector found against it::

    {"format": "inspector-lab-truth/1", "capture": "mixed.pcap", "packets": 9120, "seed": 7,
     "benign_sessions": 40, "duration": 600.0, "start": 1767225600.0, "end": 1767226199.3,
     "scenarios": [{"name": "triton-log-file", "title": "...", "atlas": ["AML.T0049", ...],
                    "cves": ["CVE-2024-0087"], "start": ..., "end": ...,
                    "steps": [{"id": "rest", "description": "...", "sids": [3100005, 3100001],
                               "policy_sids": [4600001]}]}],
     "flows": [{"community_id": "1:...", "src_ip": "203.0.113.66", "src_port": 40211,
                "dest_ip": "10.20.0.5", "dest_port": 8000, "proto": "TCP",
                "src_zone": "outside", "dest_zone": "inference",
                "start": 1767225641.2, "end": 1767225641.25, "label": "triton-log-file",
                "transactions": [{"tx": 0, "start": ..., "end": ..., "event_type": "triton",
                                  "label": "triton-log-file", "step": "rest",
                                  "what": "POST /v2/logging log_file=/root/.bashrc"}]}]}

* A **flow** is one TCP connection: its Community ID v1 and 5-tuple (client first), the time of
  its SYN and of its last packet, its zones in the lab network, and a label: `benign` or a
  scenario name.
* A **transaction** is one request/answer (an HTTP exchange, a gRPC call, a TCPStore query, an
  NCCL connection's message): `tx` is its index in the flow, counted the way EVE's `tx_id` is
  (0, 1, 2 ... in the order the exchanges complete), `start` the time its first request byte
  left, `end` the time its last answer byte arrived, `event_type` the EVE record it must make.
* A scenario's **steps** group its attack transactions by what they do (`step`), each with the
  rule sids expected to detect it with the shipped pack and the lab's site config (`sids`), and
  the ones expected in addition when the lab policy is loaded (`policy_sids`). Transactions of
  a scenario outside every step (an attacker's reconnaissance) are still attack traffic.

Times are epoch seconds (capture time) rounded to the microsecond, as EVE writes them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "inspector-lab-truth/1"
BENIGN = "benign"


def _t(ts: float) -> float:
    return round(ts, 6)


@dataclass(kw_only=True)
class TruthTransaction:
    tx: int
    start: float
    end: float
    event_type: str
    label: str
    step: str | None = None
    what: str = ""


@dataclass(kw_only=True)
class TruthFlow:
    community_id: str
    src_ip: str
    src_port: int
    dest_ip: str
    dest_port: int
    start: float
    end: float
    label: str
    src_zone: str
    dest_zone: str
    proto: str = "TCP"
    transactions: list[TruthTransaction] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class TruthStep:
    id: str
    description: str
    sids: tuple[int, ...] = ()
    policy_sids: tuple[int, ...] = ()

    def expected(self, with_policy: bool) -> tuple[int, ...]:
        return self.sids + self.policy_sids if with_policy else self.sids


@dataclass(kw_only=True)
class TruthScenario:
    name: str
    title: str
    atlas: tuple[str, ...]
    cves: tuple[str, ...]
    steps: tuple[TruthStep, ...]
    start: float = 0.0
    end: float = 0.0


@dataclass(kw_only=True)
class Truth:
    capture: str
    seed: int
    benign_sessions: int
    duration: float
    packets: int = 0
    start: float = 0.0
    end: float = 0.0
    scenarios: list[TruthScenario] = field(default_factory=list)
    flows: list[TruthFlow] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return [BENIGN] + [s.name for s in self.scenarios]

    def scenario(self, name: str) -> TruthScenario | None:
        return next((s for s in self.scenarios if s.name == name), None)

    def transactions(self) -> list[tuple[TruthFlow, TruthTransaction]]:
        return [(flow, tx) for flow in self.flows for tx in flow.transactions]

    # -- JSON ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "capture": self.capture, "packets": self.packets, "seed": self.seed,
            "benign_sessions": self.benign_sessions, "duration": self.duration,
            "start": _t(self.start), "end": _t(self.end),
            "scenarios": [{"name": s.name, "title": s.title, "atlas": list(s.atlas), "cves": list(s.cves),
                           "start": _t(s.start), "end": _t(s.end),
                           "steps": [{"id": st.id, "description": st.description, "sids": list(st.sids),
                                      "policy_sids": list(st.policy_sids)} for st in s.steps]}
                          for s in self.scenarios],
            "flows": [_flow_dict(f) for f in self.flows],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    def write(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())


def _flow_dict(flow: TruthFlow) -> dict[str, Any]:
    data = asdict(flow)
    data["start"], data["end"] = _t(flow.start), _t(flow.end)
    for tx in data["transactions"]:
        tx["start"], tx["end"] = _t(tx["start"]), _t(tx["end"])
    return data


class TruthFormatError(ValueError):
    """A truth file that is not `inspector-lab-truth/1` or misses what the evaluation needs."""


def load_truth(path: str | Path) -> Truth:
    """Read a truth file (TruthFormatError with the reason when it is not one)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise TruthFormatError(f"{path}: cannot read a truth file: {exc}") from exc
    return truth_from_dict(data, str(path))


def truth_from_dict(data: Any, source: str = "<truth>") -> Truth:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise TruthFormatError(f"{source}: not a lab truth file (format {FORMAT!r} expected)")
    try:
        scenarios = [TruthScenario(name=s["name"], title=s.get("title", s["name"]), atlas=tuple(s.get("atlas", ())),
                                   cves=tuple(s.get("cves", ())), start=float(s.get("start", 0.0)),
                                   end=float(s.get("end", 0.0)),
                                   steps=tuple(TruthStep(id=st["id"], description=st.get("description", ""),
                                                         sids=tuple(int(x) for x in st.get("sids", ())),
                                                         policy_sids=tuple(int(x) for x in st.get("policy_sids", ())))
                                               for st in s.get("steps", ())))
                     for s in data.get("scenarios", ())]
        flows = [TruthFlow(community_id=f["community_id"], src_ip=f["src_ip"], src_port=int(f["src_port"]),
                           dest_ip=f["dest_ip"], dest_port=int(f["dest_port"]), proto=f.get("proto", "TCP"),
                           start=float(f["start"]), end=float(f["end"]), label=f["label"],
                           src_zone=f.get("src_zone", ""), dest_zone=f.get("dest_zone", ""),
                           transactions=[TruthTransaction(tx=int(t["tx"]), start=float(t["start"]),
                                                          end=float(t["end"]), event_type=t["event_type"],
                                                          label=t.get("label", f["label"]), step=t.get("step"),
                                                          what=t.get("what", ""))
                                         for t in f.get("transactions", ())])
                 for f in data.get("flows", ())]
        return Truth(capture=data.get("capture", ""), seed=int(data.get("seed", 0)),
                     benign_sessions=int(data.get("benign_sessions", 0)), duration=float(data.get("duration", 0.0)),
                     packets=int(data.get("packets", 0)), start=float(data.get("start", 0.0)),
                     end=float(data.get("end", 0.0)), scenarios=scenarios, flows=flows)
    except (KeyError, TypeError, ValueError) as exc:
        raise TruthFormatError(f"{source}: malformed truth file: {exc!r}") from exc
