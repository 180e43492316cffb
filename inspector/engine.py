"""The detection engine: EVE transaction records in, verdicts and EVE alert records out. No I/O.

`Engine(ruleset).process(record, ts)` offers the record to the rules that can match it
(inspector.rules.dispatch), applies suppressions and rate windows, and returns a
:class:`Verdict`. `ts` is the record's time in epoch seconds (capture time offline, wall clock
live); rate windows run on it, never on the engine's own clock.

Alert records follow Suricata's EVE shape: the record's top-level values (timestamp, flow_id,
community_id, src/dest ip/port, proto, app_proto, ...) with `event_type: "alert"`, an `alert`
object, then every protocol object the record carried (`http`, `grpc`, `triton`, ...)::

    "alert": {"action": "allowed" | "blocked", "gid": 1, "signature_id": <sid>, "rev": <rev>,
              "signature": <title>, "category": <category>, "severity": 1..4,
              "metadata": {"rule_id": [uuid], "level": [...], "status": [...],
                           "rule_action": ["alert" | "block"], "tags": [...], "references": [...]}}

Metadata values are lists of strings, as Suricata writes rule metadata. Severity: critical 1,
high 2, medium 3, low 4, informational 4. Category: the rule's `category:`, else
"<events> <level>". Alert records share their protocol objects (and metadata) with the input
record: treat them as read-only.

Blocking: `block` rules block only when the engine runs in blocking mode (`blocking=True`,
the live sidecar). Offline (the default) they alert like `alert` rules, with
`alert.action: "allowed"` and `metadata.rule_action: ["block"]` saying what live would do. In
blocking mode a `block` rate rule blocks every event over its threshold, and writes an alert
once per window.

Progressive transactions (the live sidecar): a transaction may be evaluated more than once as
it progresses (the request before it goes upstream, then the whole exchange).
`Engine.evaluate(record, ts, skip)` also returns the sids of every rule that matched; passing
those of the earlier evaluations as `skip` makes a rule match a transaction at most once, so
alerts are not repeated and rate windows count the transaction once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from inspector.rules.config import Config
from inspector.rules.dispatch import Dispatcher
from inspector.rules.model import Rule, RuleSet
from inspector.rules.rate import MemoryRateStore, RateResult, RateStore

ALLOW, ALERT, BLOCK = "allow", "alert", "block"


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """What to do with one record: `action`, the alert records to write, the rules that decided."""

    action: str
    alerts: tuple[dict[str, Any], ...] = ()
    rules: tuple[Rule, ...] = ()


ALLOWED = Verdict(action=ALLOW)
_NONE: frozenset[int] = frozenset()


class Engine:
    """Runs a rule set over records. One instance per independent stream of time."""

    def __init__(self, ruleset: RuleSet, config: Config | None = None, *, blocking: bool = False,
                 rate_store: RateStore | None = None) -> None:
        self.ruleset = ruleset
        self.config = config if config is not None else ruleset.config
        self.blocking = blocking
        self.rate_store: RateStore = (rate_store if rate_store is not None
                                     else MemoryRateStore(self.config.rate_max_keys))
        self.dispatcher = Dispatcher(ruleset.rules)
        #: The block rules alone, for a step that only block rules may act on (live, before the
        #: request goes upstream): the same Rule objects, so rate state is shared.
        self.block_dispatcher = Dispatcher([rule for rule in ruleset.rules if rule.action == BLOCK])
        self._suppressions = self.config.suppressions
        self._alert_objects = {rule.sid: self._alert_objects_for(rule) for rule in ruleset.rules}
        self.records = 0
        self.evaluations = 0
        self.matches = 0
        self.suppressed = 0
        self.rate_pending = 0
        self.rate_quiet = 0
        self.blocks = 0
        self.alerts_by_sid: Counter[int] = Counter()

    def process(self, record: dict[str, Any], ts: float, *, enforce: bool = True) -> Verdict:
        """Evaluate one transaction record at time `ts` (epoch seconds)."""
        return self.evaluate(record, ts, enforce=enforce)[0]

    def evaluate(self, record: dict[str, Any], ts: float, skip: AbstractSet[int] = frozenset(), *,
                 block_only: bool = False, enforce: bool = True) -> tuple[Verdict, frozenset[int]]:
        """:meth:`process` for a transaction seen in steps: rules whose sid is in `skip` are not
        offered the record; also returns the sids of every rule that matched (suppressed,
        rate-pending and quiet ones included). `block_only`: only the block rules are offered it.
        `enforce`: False when the traffic can no longer be stopped (a streamed answer already
        sent): block rules then alert, their alerts `allowed`, and nothing counts as a block."""
        self.records += 1
        candidates = (self.block_dispatcher if block_only else self.dispatcher).candidates(record)
        if skip and candidates:
            candidates = [rule for rule in candidates if rule.sid not in skip]
        if not candidates:
            return ALLOWED, _NONE
        self.evaluations += len(candidates)
        matched = [rule for rule in candidates if rule.match(record)]
        if not matched:
            return ALLOWED, _NONE
        matched_sids = frozenset(rule.sid for rule in matched)
        self.matches += len(matched)
        alerts: list[dict[str, Any]] = []
        deciding: list[Rule] = []
        block = False
        for rule in matched:
            if self._suppressions and self._suppressions.silences(rule.sid, record):
                self.suppressed += 1
                continue
            blocks = self.blocking and enforce and rule.action == BLOCK
            if rule.rate is not None:
                rate = rule.rate
                key = (rule.sid, *rate.key_values(record))
                result = self.rate_store.hit(key, ts, rate.window, rate.count)
                if result is RateResult.BELOW:
                    self.rate_pending += 1
                    continue
                if result is RateResult.ABOVE:
                    self.rate_quiet += 1
                    if blocks:
                        block = True
                        deciding.append(rule)
                    continue
            alerts.append(self.alert_record(record, rule.sid, blocks))
            self.alerts_by_sid[rule.sid] += 1
            deciding.append(rule)
            block = block or blocks
        if not deciding:
            return ALLOWED, matched_sids
        if block:
            self.blocks += 1
        return Verdict(action=BLOCK if block else ALERT, alerts=tuple(alerts), rules=tuple(deciding)), matched_sids

    def counters(self) -> dict[str, Any]:
        """A snapshot of the engine's counters. Each match is either `suppressed` (a site
        suppression), `rate_pending` (a rate rule below its count), `rate_quiet` (a rate rule
        inside the window after its alert) or an alert: `matches` is their sum."""
        return {
            "rules": len(self.ruleset.rules),
            "records": self.records,
            "evaluations": self.evaluations,
            "matches": self.matches,
            "alerts": sum(self.alerts_by_sid.values()),
            "alerts_by_sid": dict(sorted(self.alerts_by_sid.items())),
            "suppressed": self.suppressed,
            "rate_pending": self.rate_pending,
            "rate_quiet": self.rate_quiet,
            "blocks": self.blocks,
            "rate_keys": len(self.rate_store),
            "rate_keys_evicted": self.rate_store.evicted,
        }

    def alert_record(self, record: dict[str, Any], sid: int, blocked: bool = False) -> dict[str, Any]:
        """Rule `sid`'s alert on `record`: the record's scalars in their order (event_type keeps
        its place), the `alert` object, then the record's objects."""
        alert = {key: value for key, value in record.items() if value.__class__ is not dict}
        alert["event_type"] = "alert"
        alert["alert"] = dict(self._alert_objects[sid][blocked])
        for key, value in record.items():
            if value.__class__ is dict and key not in ("event_type", "alert"):
                alert[key] = value
        return alert

    @staticmethod
    def _alert_objects_for(rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        """The rule's `alert` object, as (allowed, blocked)."""
        metadata = {
            "rule_id": [rule.id],
            "level": [rule.level],
            "status": [rule.status],
            "rule_action": [rule.action],
            "tags": list(rule.tags),
            "references": list(rule.references),
        }
        allowed = {
            "action": "allowed", "gid": 1, "signature_id": rule.sid, "rev": rule.rev,
            "signature": rule.title, "category": rule.category, "severity": rule.severity,
            "metadata": metadata,
        }
        return allowed, {**allowed, "action": "blocked"}
