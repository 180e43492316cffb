"""Scoring one rule set's alerts against the truth of lab captures: per rule, per scenario, overall.

Every alert is matched to the truth (inspector.eval.match). Then:

* **TP** (per rule): an alert matched to attack traffic (a transaction or flow labelled with a
  scenario). **FP**: an alert matched to benign traffic, or matched to nothing at all
  (`unmatched`, counted in FP and listed apart).
* **Attack steps** are the units of recall. Each step of each scenario in a capture expects
  some sids (the truth's `sids`, plus `policy_sids` when the evaluation ran with a policy). A
  step is **detected by** a rule when one of the rule's alerts matches a transaction of that
  step. **FN** (per rule): a step expecting the rule that the rule did not detect (whether
  the rule is loaded or not). Rate rules fire on the count-th event of a burst, which is one
  transaction of the step: the step is detected.
* **Precision** = TP / (TP + FP), over the rule's alerts (undefined without alerts).
  **Recall** = steps detected / steps expecting the rule (undefined when none expects it).
* **TN** (per rule, for rules over transaction records): benign transaction records carrying
  one of the rule's event types on which the rule raised no alert. Not defined for rules over
  policy, anomaly or flow records.
* **Time to first detection**: seconds from a scenario's first packet (the SYN of its first
  flow) to the first alert matched to it (any rule), and to the first alert of an expected rule.
  Per rule: the median, over the scenarios it detected, of the time to its first alert there.
* Per scenario: steps detected by any rule / all steps (steps with no expected rule are known
  gaps and count as misses here), and the **expected-rule recall**: (step, sid) pairs fired /
  pairs expected.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from inspector.eval.match import Match, TruthIndex, eve_time
from inspector.lab.truth import BENIGN, Truth, TruthStep
from inspector.rules.layers import record_layers
from inspector.rules.model import RuleSet

#: Record types that are not transactions.
NOT_TRANSACTIONS = frozenset({"alert", "anomaly", "flow", "policy", "stats"})


@dataclass(frozen=True, kw_only=True)
class CaptureRun:
    """One capture analyzed with one rule set: every EVE record in order, and its truth."""

    path: str
    truth: Truth
    records: list[dict[str, Any]]


@dataclass(frozen=True, kw_only=True)
class AlertOutcome:
    sid: int
    signature: str
    capture: str
    ts: float
    match: Match
    record: dict[str, Any]

    @property
    def attack(self) -> bool:
        return self.match.label not in (None, BENIGN)


@dataclass(kw_only=True)
class RuleScore:
    sid: int
    title: str
    level: str
    events: tuple[str, ...]
    loaded: bool = True
    alerts: int = 0
    tp: int = 0
    fp: int = 0
    unmatched: int = 0
    tn: int | None = None
    expected: int = 0  # steps expecting this rule
    detected: int = 0  # of those, steps it detected
    scenarios: Counter = field(default_factory=Counter)  # scenario -> alerts on it
    ttd: list[float] = field(default_factory=list)

    @property
    def fn(self) -> int:
        return self.expected - self.detected

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.detected / self.expected if self.expected else None

    @property
    def median_ttd(self) -> float | None:
        return statistics.median(self.ttd) if self.ttd else None


@dataclass(kw_only=True)
class StepScore:
    capture: str
    scenario: str
    step: TruthStep
    expected: tuple[int, ...]
    transactions: int = 0
    first_alert: dict[int, float] = field(default_factory=dict)  # sid -> first alert time on the step

    @property
    def detected(self) -> bool:
        return bool(self.first_alert)

    @property
    def fired(self) -> tuple[int, ...]:
        return tuple(s for s in self.expected if s in self.first_alert)

    @property
    def missed(self) -> tuple[int, ...]:
        return tuple(s for s in self.expected if s not in self.first_alert)


@dataclass(kw_only=True)
class ScenarioScore:
    name: str
    title: str
    atlas: tuple[str, ...]
    cves: tuple[str, ...]
    instances: int = 0
    flows: int = 0
    transactions: int = 0
    transactions_alerted: int = 0
    steps: list[StepScore] = field(default_factory=list)
    alerts: Counter = field(default_factory=Counter)  # sid -> alerts matched to the scenario
    ttd_any: list[float] = field(default_factory=list)  # per instance
    ttd_expected: list[float] = field(default_factory=list)

    @property
    def steps_detected(self) -> int:
        return sum(1 for s in self.steps if s.detected)

    @property
    def expected_pairs(self) -> int:
        return sum(len(s.expected) for s in self.steps)

    @property
    def fired_pairs(self) -> int:
        return sum(len(s.fired) for s in self.steps)

    @property
    def expected_recall(self) -> float | None:
        return self.fired_pairs / self.expected_pairs if self.expected_pairs else None

    @property
    def detection_recall(self) -> float | None:
        return self.steps_detected / len(self.steps) if self.steps else None

    @property
    def first_alert(self) -> float | None:
        return statistics.median(self.ttd_any) if self.ttd_any else None

    @property
    def first_expected(self) -> float | None:
        return statistics.median(self.ttd_expected) if self.ttd_expected else None


@dataclass(kw_only=True)
class Overall:
    captures: int = 0
    packets: int = 0
    flows: int = 0
    alerts: int = 0
    tp: int = 0
    fp: int = 0
    unmatched: int = 0
    benign_transactions: int = 0
    benign_alerted: int = 0
    attack_transactions: int = 0
    attack_alerted: int = 0
    truth_transactions: int = 0
    #: Labelled transactions with an EVE record of the truth's `event_type` (matched by flow and tx_id).
    truth_transactions_seen: int = 0
    #: Labelled transactions whose only EVE record has another `event_type` (a parser that did not
    #: claim its traffic, or a truth label that is not the record the analyzer writes).
    truth_transactions_other_type: int = 0
    steps: int = 0
    steps_detected: int = 0
    expected_pairs: int = 0
    fired_pairs: int = 0
    scenarios: int = 0
    scenarios_detected: int = 0

    @property
    def precision(self) -> float | None:
        return self.tp / self.alerts if self.alerts else None

    @property
    def expected_recall(self) -> float | None:
        return self.fired_pairs / self.expected_pairs if self.expected_pairs else None

    @property
    def detection_recall(self) -> float | None:
        return self.steps_detected / self.steps if self.steps else None

    @property
    def fp_rate(self) -> float | None:
        return self.benign_alerted / self.benign_transactions if self.benign_transactions else None


@dataclass(kw_only=True)
class Evaluation:
    """The scores of one rule set (with its config and policy) over the captures."""

    name: str
    rules: list[str]
    config: str | None
    policy: str | None
    ruleset_size: int
    rule_scores: dict[int, RuleScore]
    scenarios: dict[str, ScenarioScore]
    overall: Overall
    alerts: list[AlertOutcome]
    captures: list[dict[str, Any]]

    @property
    def false_positives(self) -> list[AlertOutcome]:
        return [a for a in self.alerts if not a.attack]

    @property
    def missed(self) -> list[tuple[StepScore, int]]:
        return [(step, sid) for scenario in self.scenarios.values() for step in scenario.steps for sid in step.missed]


def score(runs: list[CaptureRun], ruleset: RuleSet, *, name: str, rules: list[str], config: str | None,
          policy: str | None) -> Evaluation:
    """Score the alerts of `runs` (all analyzed with `ruleset`) against their truth."""
    with_policy = policy is not None
    rule_scores = {rule.sid: RuleScore(sid=rule.sid, title=rule.title, level=rule.level, events=rule.events)
                   for rule in ruleset}
    transaction_rules = [r for r in ruleset if not set(r.events) & NOT_TRANSACTIONS]
    for score_ in rule_scores.values():
        if score_.sid in {r.sid for r in transaction_rules}:
            score_.tn = 0
    scenarios: dict[str, ScenarioScore] = {}
    overall = Overall()
    outcomes: list[AlertOutcome] = []
    captures: list[dict[str, Any]] = []
    for run in runs:
        _score_capture(run, with_policy, rule_scores, transaction_rules, scenarios, overall, outcomes)
        captures.append({"path": run.path, "packets": run.truth.packets, "flows": len(run.truth.flows),
                         "scenarios": [s.name for s in run.truth.scenarios],
                         "benign_sessions": run.truth.benign_sessions, "duration": run.truth.duration,
                         "start": run.truth.start, "spans": {s.name: (s.start, s.end) for s in run.truth.scenarios}})
    for scenario in scenarios.values():
        for step in scenario.steps:
            for sid in step.expected:
                rule = rule_scores.get(sid)
                if rule is None:
                    rule = rule_scores[sid] = RuleScore(sid=sid, title="(not in the rule set)", level="-",
                                                        events=(), loaded=False)
                rule.expected += 1
                rule.detected += sid in step.first_alert
        overall.steps += len(scenario.steps)
        overall.steps_detected += scenario.steps_detected
        overall.expected_pairs += scenario.expected_pairs
        overall.fired_pairs += scenario.fired_pairs
        overall.scenarios += 1
        overall.scenarios_detected += bool(scenario.alerts)
    return Evaluation(name=name, rules=rules, config=config, policy=policy, ruleset_size=len(ruleset),
                      rule_scores=dict(sorted(rule_scores.items())), scenarios=scenarios, overall=overall,
                      alerts=outcomes, captures=captures)


def _score_capture(run: CaptureRun, with_policy: bool, rule_scores: dict[int, RuleScore], transaction_rules: list,
                   scenarios: dict[str, ScenarioScore], overall: Overall, outcomes: list[AlertOutcome]) -> None:
    truth = run.truth
    index = TruthIndex(truth)
    overall.captures += 1
    overall.packets += truth.packets
    overall.flows += len(truth.flows)
    steps: dict[tuple[str, str], StepScore] = {}
    starts: dict[str, float] = {}
    for record in truth.scenarios:
        scenario = scenarios.get(record.name)
        if scenario is None:
            scenario = scenarios[record.name] = ScenarioScore(name=record.name, title=record.title,
                                                              atlas=record.atlas, cves=record.cves)
        scenario.instances += 1
        starts[record.name] = record.start
        for step in record.steps:
            steps[(record.name, step.id)] = StepScore(capture=run.path, scenario=record.name, step=step,
                                                      expected=step.expected(with_policy))
        scenario.steps.extend(steps[(record.name, step.id)] for step in record.steps)
    for flow in truth.flows:
        if flow.label != BENIGN and flow.label in scenarios:
            scenarios[flow.label].flows += 1
        for tx in flow.transactions:
            overall.truth_transactions += 1
            if tx.label != BENIGN and tx.label in scenarios:
                scenarios[tx.label].transactions += 1
                if tx.step is not None and (tx.label, tx.step) in steps:
                    steps[(tx.label, tx.step)].transactions += 1

    alerted: dict[tuple[str, int], set[int]] = {}  # (community_id, tx_id) -> sids that alerted on it
    first_any: dict[str, float] = {}
    first_expected: dict[str, float] = {}
    first_by_rule: dict[tuple[int, str], float] = {}
    for record in run.records:
        if record.get("event_type") != "alert":
            continue
        info = record["alert"]
        sid = info["signature_id"]
        ts = eve_time(record)
        match = index.match(record, ts)
        outcome = AlertOutcome(sid=sid, signature=info["signature"], capture=run.path, ts=ts, match=match,
                               record=record)
        outcomes.append(outcome)
        rule = rule_scores.get(sid)
        if rule is None:
            rule = rule_scores[sid] = RuleScore(sid=sid, title=info["signature"], level="-", events=())
        rule.alerts += 1
        overall.alerts += 1
        if "tx_id" in record and record.get("community_id"):
            alerted.setdefault((record["community_id"], record["tx_id"]), set()).add(sid)
        if not match.matched:
            rule.fp += 1
            rule.unmatched += 1
            overall.fp += 1
            overall.unmatched += 1
            continue
        if not outcome.attack:
            rule.fp += 1
            overall.fp += 1
            continue
        rule.tp += 1
        overall.tp += 1
        label = match.label
        assert label is not None
        rule.scenarios[label] += 1
        if label in scenarios:
            scenarios[label].alerts[sid] += 1
            first_any[label] = min(first_any.get(label, ts), ts)
            key = (sid, label)
            first_by_rule[key] = min(first_by_rule.get(key, ts), ts)
        step = steps.get((label, match.step)) if match.step is not None else None
        if step is not None:
            step.first_alert[sid] = min(step.first_alert.get(sid, ts), ts)
            if sid in step.expected:
                first_expected[label] = min(first_expected.get(label, ts), ts)
    for label, ts in first_any.items():
        scenarios[label].ttd_any.append(ts - starts[label])
    for label, ts in first_expected.items():
        scenarios[label].ttd_expected.append(ts - starts[label])
    for (sid, label), ts in first_by_rule.items():
        expecting = any(sid in s.expected for (name, _), s in steps.items() if name == label)
        if expecting:
            rule_scores[sid].ttd.append(ts - starts[label])

    seen: set[tuple[str, int]] = set()
    other_type: set[tuple[str, int]] = set()
    for record in run.records:
        if record.get("event_type") in NOT_TRANSACTIONS or "tx_id" not in record:
            continue
        match = index.match(record)
        if match.tx is not None:
            labelled = (match.flow.community_id, match.tx.tx)  # type: ignore[union-attr]
            (seen if record.get("event_type") == match.tx.event_type else other_type).add(labelled)
        key = (record.get("community_id"), record["tx_id"])
        sids = alerted.get(key, set())
        if match.label == BENIGN:
            overall.benign_transactions += 1
            overall.benign_alerted += bool(sids)
            for rule in transaction_rules:
                if sids and rule.sid in sids:
                    continue
                if record_layers(record, rule.events):
                    rule_scores[rule.sid].tn += 1  # type: ignore[operator]
        elif match.label is not None:
            overall.attack_transactions += 1
            overall.attack_alerted += bool(sids)
            if match.label in scenarios:
                scenarios[match.label].transactions_alerted += bool(sids)
    overall.truth_transactions_seen += len(seen)
    overall.truth_transactions_other_type += len(other_type - seen)
