"""The detection-tuning report: one evaluation, or a before/after pair, as Markdown, HTML and JSON.

`write_report(out_dir, evaluations, command)` writes `report.md`, `report.html` (self-contained:
styles inline, charts embedded as base64 PNG), `report.json` (every number, for scripts) and
`charts/*.png`. The report says what was run, how each number is defined, then the numbers:
summary, scenarios, rules, false positives and missed detections, and with two evaluations the
change from the first ("before") to the second ("after").
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from inspector import __version__
from inspector.eval import charts
from inspector.eval.document import Bullets, Document, Heading, Image, Para, Table, to_html, to_markdown
from inspector.eval.score import AlertOutcome, Evaluation, RuleScore, ScenarioScore

MAX_LISTED = 60

DEFINITIONS = (
    "**Matching.** Every alert is matched to the capture's truth: its `community_id` and endpoints select "
    "the labelled flow, its `tx_id` the labelled transaction (alerts without one: the transaction in progress "
    "at the alert's time). The label of that transaction (`benign` or a scenario) is the alert's.",
    "**TP**: alerts on attack traffic. **FP**: alerts on benign traffic, plus alerts matched to no labelled "
    "flow (`unmatched`). **Precision** = TP / (TP + FP).",
    "**Attack steps** are what recall counts: each scenario's steps list the rules expected to detect them (with "
    "the shipped pack and the lab's site config; the policy rule when a policy is loaded). A rule **detects** a "
    "step when one of its alerts matches a transaction of the step. **FN**: expected (step, rule) pairs that did "
    "not fire. **Recall** (per rule) = steps detected / steps expecting the rule.",
    "**Expected detections** (per scenario): (step, rule) pairs fired / expected. **Steps detected**: steps with "
    "an alert of any rule / all steps; steps no rule is expected to catch are known gaps and count as misses.",
    "**TN** (rules over transaction records): benign transactions of the rule's event types it stayed quiet on. "
    "**FP rate**: benign transactions with any alert / benign transactions.",
    "**Time to first detection**: seconds from the scenario's first packet to its first alert (any rule; median "
    "over captures holding the scenario). Per rule: the median over the scenarios that expect it.",
)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def _pair(values: list[str]) -> str:
    return values[0] if len(set(values)) == 1 else " → ".join(values)


def _cell(evaluations: list[Evaluation], getter: Any) -> str:
    return _pair([getter(e) for e in evaluations])


# -- sections -------------------------------------------------------------------------------------


def _what_was_run(doc: Document, evaluations: list[Evaluation], command: str, specs: list[str]) -> None:
    first = evaluations[0]
    doc.add(Heading("What was run"),
            Para(f"`{command}` (inspector {__version__}). Every capture was analyzed through the offline pipeline "
                 "(`inspector analyze`) with each rule set; the alerts were scored against the capture's ground "
                 "truth, written by the generator that made the traffic (`inspector lab generate`)."),
            Table(("capture", "packets", "flows", "scenarios", "benign sessions", "duration"),
                  tuple((f"`{c['path']}`", str(c["packets"]), str(c["flows"]), str(len(c["scenarios"])),
                         str(c["benign_sessions"]), f"{c['duration']:.0f} s") for c in first.captures),
                  numeric=frozenset({1, 2, 3, 4, 5})))
    labels = ["before", "after"] if len(evaluations) == 2 else ["rules"]
    doc.add(Bullets(tuple(f"**{label}** ({e.name}, {e.ruleset_size} rules): {spec}"
                          for label, e, spec in zip(labels, evaluations, specs, strict=True))))


def _summary(doc: Document, evaluations: list[Evaluation]) -> None:
    rows: list[tuple[str, ...]] = []

    def row(name: str, getter: Any) -> None:
        values = [getter(e.overall) for e in evaluations]
        rows.append((name, *values))

    row("alerts", lambda o: str(o.alerts))
    row("true positives (alerts on attack traffic)", lambda o: str(o.tp))
    row("false positives (benign, + unmatched)", lambda o: f"{o.fp} ({o.unmatched} unmatched)")
    row("precision", lambda o: _ratio(o.precision))
    row("expected detections fired", lambda o: f"{o.fired_pairs} / {o.expected_pairs} ({_ratio(o.expected_recall)})")
    row("attack steps detected (any rule)", lambda o: f"{o.steps_detected} / {o.steps} ({_ratio(o.detection_recall)})")
    row("scenarios with at least one alert", lambda o: f"{o.scenarios_detected} / {o.scenarios}")
    row("benign transactions alerted (FP rate)",
        lambda o: f"{o.benign_alerted} / {o.benign_transactions} ({_ratio(o.fp_rate)})")
    row("attack transactions alerted", lambda o: f"{o.attack_alerted} / {o.attack_transactions}")
    row("labelled transactions seen in EVE (their event type)",
        lambda o: f"{o.truth_transactions_seen} / {o.truth_transactions}"
        + (f" ({o.truth_transactions_other_type} as another type)" if o.truth_transactions_other_type else ""))
    header = ("", *(e.name for e in evaluations))
    doc.add(Heading("Summary"), Table(header, tuple(rows), numeric=frozenset(range(1, len(header)))))
    if len(evaluations) == 2:
        doc.add(Bullets(tuple(_changes(*evaluations))))


def _changes(before: Evaluation, after: Evaluation) -> list[str]:
    def by_sid(alerts: Any) -> Counter:
        return Counter(a.sid for a in alerts)

    def counted(what: str, by: Counter) -> str:
        return f"{what}: {sum(by.values())} (" + ", ".join(f"sid {sid} x{n}" for sid, n in sorted(by.items())) + ")."

    tp_before = by_sid(a for a in before.alerts if a.attack)
    tp_after = by_sid(a for a in after.alerts if a.attack)
    fp_before, fp_after = by_sid(before.false_positives), by_sid(after.false_positives)
    lines = [counted(what, by) for what, by in (
        ("Alerts on attack traffic added", tp_after - tp_before),
        ("Alerts on attack traffic removed", tp_before - tp_after),
        ("False positives removed", fp_before - fp_after),
        ("False positives added", fp_after - fp_before)) if by]
    missed_before = {(s.capture, s.scenario, s.step.id, sid) for s, sid in before.missed}
    missed_after = {(s.capture, s.scenario, s.step.id, sid) for s, sid in after.missed}
    if missed_before - missed_after:
        lines.append("Detections gained: " + ", ".join(f"{scn}/{step} by sid {sid}" for _, scn, step, sid
                                                       in sorted(missed_before - missed_after)) + ".")
    if missed_after - missed_before:
        lines.append("Detections lost: " + ", ".join(f"{scn}/{step} by sid {sid}" for _, scn, step, sid
                                                     in sorted(missed_after - missed_before)) + ".")
    return lines or ["No change in alerts, false positives or detections."]


def _scenario_row(name: str, evaluations: list[Evaluation]) -> tuple[str, ...]:
    scores: list[ScenarioScore | None] = [e.scenarios.get(name) for e in evaluations]
    last = scores[-1] or next(s for s in scores if s is not None)
    fired = Counter[int]()
    fired.update(last.alerts)
    missed = [f"{step.step.id}: {sid}" for step in last.steps for sid in step.missed]

    def value(getter: Any) -> str:
        return _pair([getter(s) if s is not None else "-" for s in scores])

    return (f"`{name}`", ", ".join(a.removeprefix("AML.") for a in last.atlas),
            value(lambda s: f"{s.steps_detected}/{len(s.steps)}"),
            value(lambda s: f"{s.fired_pairs}/{s.expected_pairs}"),
            value(lambda s: _seconds(s.first_alert)),
            ", ".join(f"{sid} x{n}" for sid, n in sorted(fired.items())) or "none",
            ", ".join(missed) or "-")


def _scenarios(doc: Document, evaluations: list[Evaluation]) -> None:
    names = list(dict.fromkeys(n for e in evaluations for n in e.scenarios))
    doc.add(Heading("Scenarios"),
            Para("One row per scenario: its MITRE ATLAS techniques, attack steps detected by any rule, expected "
                 "(step, rule) detections fired, time from its first packet to its first alert, the rules that "
                 "alerted on its traffic and the expected detections that did not fire (step: sid)"
                 + (" - in the last rule set; `a → b` shows a change." if len(evaluations) == 2 else ".")),
            Table(("scenario", "ATLAS", "steps detected", "expected detections", "first alert", "alerts (sid x n)",
                   "missed (step: sid)"),
                  tuple(_scenario_row(n, evaluations) for n in names)))
    titles = [(f"`{n}`", next(e.scenarios[n] for e in evaluations if n in e.scenarios).title) for n in names]
    doc.add(Table(("scenario", "what it does"), tuple(titles)))


def _rule_row(sid: int, evaluations: list[Evaluation]) -> tuple[str, ...]:
    scores: list[RuleScore | None] = [e.rule_scores.get(sid) for e in evaluations]
    last = next(s for s in reversed(scores) if s is not None)
    title = next((s.title for s in reversed(scores) if s is not None and s.loaded), last.title)
    if not last.loaded and title != last.title:
        title += " (not in the last rule set)"

    def value(getter: Any) -> str:
        return _pair([getter(s) if s is not None else "-" for s in scores])

    return (str(sid), title, value(lambda s: str(s.alerts)), value(lambda s: str(s.tp)),
            value(lambda s: str(s.fp)), value(lambda s: str(s.fn)), value(lambda s: "-" if s.tn is None else str(s.tn)),
            value(lambda s: _ratio(s.precision)), value(lambda s: _ratio(s.recall)),
            value(lambda s: _seconds(s.median_ttd)))


def _rules(doc: Document, evaluations: list[Evaluation]) -> None:
    sids = sorted({sid for e in evaluations for sid, r in e.rule_scores.items() if r.alerts or r.expected})
    quiet = sorted({sid for e in evaluations for sid in e.rule_scores} - set(sids))
    doc.add(Heading("Rules"),
            Para("Rules that alerted or that a step expects. TP, FP, TN and precision count alerts and transactions; "
                 "FN and recall count attack steps; TTD is the median time to the rule's first alert on a scenario "
                 "that expects it."),
            Table(("sid", "rule", "alerts", "TP", "FP", "FN", "TN", "precision", "recall", "TTD"),
                  tuple(_rule_row(sid, evaluations) for sid in sids), numeric=frozenset({0, 2, 3, 4, 5, 6, 7, 8, 9})))
    if quiet:
        doc.add(Para(f"{len(quiet)} other rule(s) raised no alert and no step expects them: "
                     + ", ".join(map(str, quiet)) + "."))


def _flow_text(alert: AlertOutcome) -> str:
    r = alert.record
    return f"{r.get('src_ip')}:{r.get('src_port')} → {r.get('dest_ip')}:{r.get('dest_port')}"


def _false_positives(doc: Document, evaluation: Evaluation, label: str) -> None:
    fps = evaluation.false_positives
    doc.add(Heading(f"False positives ({label})", 3))
    if not fps:
        doc.add(Para("None: no alert on benign traffic, none unmatched."))
        return
    starts = {c["path"]: c["start"] for c in evaluation.captures}
    rows = tuple((f"{a.ts - starts[a.capture]:.3f}", str(a.sid), a.signature, _flow_text(a),
                  a.match.tx.what if a.match.tx is not None else ("(flow)" if a.match.flow else "(no labelled flow)"))
                 for a in fps[:MAX_LISTED])
    doc.add(Table(("time (s)", "sid", "rule", "flow", "benign transaction (truth)"), rows, numeric=frozenset({0, 1})))
    _more(doc, len(fps))


def _missed(doc: Document, evaluation: Evaluation, label: str) -> None:
    missed = evaluation.missed
    doc.add(Heading(f"Missed detections ({label})", 3))
    if not missed:
        doc.add(Para("None: every expected detection fired."))
        return
    rows = tuple((f"`{step.scenario}`", step.step.id, step.step.description, str(sid),
                  evaluation.rule_scores[sid].title if sid in evaluation.rule_scores else "(not in the rule set)")
                 for step, sid in missed[:MAX_LISTED])
    doc.add(Table(("scenario", "step", "what the step does", "sid", "rule"), rows, numeric=frozenset({3})))
    _more(doc, len(missed))


def _more(doc: Document, listed: int) -> None:
    """Say how many rows a table capped at MAX_LISTED left out."""
    if listed > MAX_LISTED:
        doc.add(Para(f"... and {listed - MAX_LISTED} more (report.json lists them all)."))


def _charts(doc: Document, evaluations: list[Evaluation]) -> None:
    doc.add(Heading("Charts"))
    if not charts.available():
        doc.add(Para("matplotlib is not installed (`pip install 'ai-traffic-inspector[lab]'`): no charts."))
        return
    doc.add(Image("scenarios.png", charts.scenario_detection(evaluations),
                  "Per scenario: share of attack steps detected by any rule, and of expected detections fired."),
            Image("rules.png", charts.rule_outcomes(evaluations),
                  "Per rule: alerts on attack traffic (TP), on benign traffic (FP), and expected steps missed (FN)."),
            Image("timeline.png", charts.timeline(evaluations[-1]),
                  f"Alerts over time in the busiest capture ({evaluations[-1].name})."),
            Image("time-to-detection.png", charts.time_to_detection(evaluations),
                  "Seconds from each scenario's first packet to its first alert."))


def build_document(evaluations: list[Evaluation], command: str, specs: list[str]) -> Document:
    title = "Detection-tuning report" if len(evaluations) == 2 else "Detection evaluation report"
    doc = Document(title)
    _what_was_run(doc, evaluations, command, specs)
    doc.add(Heading("How to read this report"), Bullets(DEFINITIONS),
            Para("The scenarios, the truth format and these definitions are documented in `docs/lab.md`."))
    _summary(doc, evaluations)
    _scenarios(doc, evaluations)
    _rules(doc, evaluations)
    labels = ["before", "after"] if len(evaluations) == 2 else [evaluations[0].name]
    doc.add(Heading("False positives and missed detections"))
    for evaluation, label in zip(evaluations, labels, strict=True):
        _false_positives(doc, evaluation, label)
        _missed(doc, evaluation, label)
    _charts(doc, evaluations)
    return doc


# -- JSON -----------------------------------------------------------------------------------------


def evaluation_json(evaluation: Evaluation) -> dict[str, Any]:
    o = evaluation.overall
    return {
        "name": evaluation.name, "rules": evaluation.rules, "config": evaluation.config, "policy": evaluation.policy,
        "ruleset_size": evaluation.ruleset_size, "captures": evaluation.captures,
        "overall": {**{k: v for k, v in vars(o).items()}, "precision": o.precision,
                    "expected_recall": o.expected_recall, "detection_recall": o.detection_recall,
                    "fp_rate": o.fp_rate},
        "rules_scored": [{"sid": r.sid, "title": r.title, "loaded": r.loaded, "alerts": r.alerts, "tp": r.tp,
                          "fp": r.fp, "unmatched": r.unmatched, "fn": r.fn, "tn": r.tn, "expected_steps": r.expected,
                          "detected_steps": r.detected, "precision": r.precision, "recall": r.recall,
                          "median_ttd": r.median_ttd, "scenarios": dict(r.scenarios)}
                         for r in evaluation.rule_scores.values()],
        "scenarios": [{"name": s.name, "title": s.title, "atlas": list(s.atlas), "cves": list(s.cves),
                       "transactions": s.transactions, "transactions_alerted": s.transactions_alerted,
                       "steps": [{"capture": st.capture, "id": st.step.id, "expected": list(st.expected),
                                  "fired": list(st.fired), "missed": list(st.missed),
                                  "detected_by": sorted(st.first_alert), "transactions": st.transactions}
                                 for st in s.steps],
                       "steps_detected": s.steps_detected, "expected_pairs": s.expected_pairs,
                       "fired_pairs": s.fired_pairs, "expected_recall": s.expected_recall,
                       "detection_recall": s.detection_recall, "first_alert": s.first_alert,
                       "first_expected_alert": s.first_expected, "alerts": dict(s.alerts)}
                      for s in evaluation.scenarios.values()],
        "false_positives": [{"capture": a.capture, "ts": a.ts, "sid": a.sid, "signature": a.signature,
                             "community_id": a.record.get("community_id"), "tx_id": a.record.get("tx_id"),
                             "matched": a.match.matched,
                             "transaction": a.match.tx.what if a.match.tx is not None else None}
                            for a in evaluation.false_positives],
    }


def write_report(out_dir: str | Path, evaluations: list[Evaluation], command: str, specs: list[str]) -> Document:
    """Write report.md, report.html, report.json and charts/*.png into `out_dir`; the document."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = build_document(evaluations, command, specs)
    images = [b for b in doc.blocks if isinstance(b, Image)]
    if images:
        (out / "charts").mkdir(exist_ok=True)
        for image in images:
            (out / "charts" / image.name).write_bytes(image.png)
    (out / "report.md").write_text(to_markdown(doc))
    (out / "report.html").write_text(to_html(doc))
    payload = {"command": command, "inspector": __version__, "evaluations": [evaluation_json(e) for e in evaluations]}
    (out / "report.json").write_text(json.dumps(payload, indent=1, default=list) + "\n")
    return doc
