"""Matching EVE records to a lab capture's ground truth: which labelled flow and transaction a record is about.

The rule, for a record (an alert, or a transaction record) of a capture with truth T:

1. **Flow.** The record's `community_id` selects T's flows with that Community ID whose endpoints
   are the record's (`src_ip`:`src_port` and `dest_ip`:`dest_port`, in either order). Of several
   (a 5-tuple reused), the one whose time span, widened by one second each side, holds the
   record's timestamp; else the one nearest in time. No `community_id` (a decode anomaly about a
   packet, not a flow) or no such flow: the record is **unmatched**.
2. **Transaction.** Within the flow, the transaction whose index `tx` equals the record's
   `tx_id` (EVE numbers a flow's transactions 0, 1, 2 ... as they complete, the way the truth
   does); a record without `tx_id` (a policy verdict at a flow's end, an anomaly) takes the
   transaction whose [start, end] holds its timestamp, else the last one that started before
   it; a flow without transactions leaves it at the flow.
3. **Label.** The transaction's label (`benign` or a scenario name), else the flow's; the
   transaction's `step`, when it has one, says which attack step the record belongs to.

Timestamps are EVE's (`timestamp`, capture time to the microsecond), compared with the truth's
epoch seconds.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from inspector.lab.truth import Truth, TruthFlow, TruthTransaction

#: Slack (seconds) around a flow's span when choosing between flows sharing a Community ID.
FLOW_SLACK = 1.0


def eve_time(record: dict[str, Any]) -> float:
    """A record's `timestamp` as epoch seconds."""
    return datetime.strptime(record["timestamp"], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


@dataclass(frozen=True, slots=True)
class Match:
    """What a record is about: its truth flow and transaction (either may be None) and the label."""

    flow: TruthFlow | None
    tx: TruthTransaction | None
    label: str | None  # None: unmatched

    @property
    def step(self) -> str | None:
        return self.tx.step if self.tx is not None else None

    @property
    def matched(self) -> bool:
        return self.label is not None


UNMATCHED = Match(None, None, None)


class TruthIndex:
    """A truth file indexed for matching records to it."""

    def __init__(self, truth: Truth) -> None:
        self.truth = truth
        self._by_cid: dict[str, list[TruthFlow]] = {}
        for flow in truth.flows:
            self._by_cid.setdefault(flow.community_id, []).append(flow)
        self._starts: dict[int, list[float]] = {}

    def match(self, record: dict[str, Any], ts: float | None = None) -> Match:
        cid = record.get("community_id")
        if not cid:
            return UNMATCHED
        ends = {(record.get("src_ip"), record.get("src_port")), (record.get("dest_ip"), record.get("dest_port"))}
        flows = [f for f in self._by_cid.get(cid, ()) if {(f.src_ip, f.src_port), (f.dest_ip, f.dest_port)} == ends]
        if not flows:
            return UNMATCHED
        at = eve_time(record) if ts is None else ts
        flow = flows[0] if len(flows) == 1 else _closest(flows, at)
        tx = self._transaction(flow, record.get("tx_id"), at)
        return Match(flow, tx, tx.label if tx is not None else flow.label)

    def _transaction(self, flow: TruthFlow, tx_id: Any, at: float) -> TruthTransaction | None:
        transactions = flow.transactions
        if not transactions:
            return None
        if isinstance(tx_id, int) and not isinstance(tx_id, bool):
            if 0 <= tx_id < len(transactions) and transactions[tx_id].tx == tx_id:
                return transactions[tx_id]
            found = next((t for t in transactions if t.tx == tx_id), None)
            if found is not None:
                return found
        for tx in transactions:
            if tx.start <= at <= tx.end:
                return tx
        starts = self._starts.get(id(flow))
        if starts is None:
            starts = self._starts[id(flow)] = [t.start for t in transactions]
        index = bisect.bisect_right(starts, at) - 1
        return transactions[max(index, 0)]


def _closest(flows: list[TruthFlow], at: float) -> TruthFlow:
    inside = [f for f in flows if f.start - FLOW_SLACK <= at <= f.end + FLOW_SLACK]
    if inside:
        return inside[0]
    return min(flows, key=lambda f: min(abs(at - f.start), abs(at - f.end)))
