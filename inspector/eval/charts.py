"""The report's charts, drawn with matplotlib (Agg, no display) into PNG bytes.

* scenario detection: per scenario, the share of its steps detected and of its expected (step,
  rule) pairs fired, for each rule set evaluated;
* rule outcomes: per rule that alerted or was expected, TP, FP and FN counts side by side
  (for each rule set);
* timeline: the alerts of the busiest capture over time, one row per scenario plus one for
  benign traffic, attack alerts in blue and false positives in red, each scenario's span shaded;
* time to first detection per scenario (log scale).

matplotlib is an optional dependency (the `lab` extra); `available()` says whether it imports.
"""

from __future__ import annotations

import io
from typing import Any

from inspector.eval.score import Evaluation
from inspector.lab.truth import BENIGN

COLORS = ("#8c9bab", "#2b5d8a")  # before, after (a single evaluation uses the second)
TP_COLOR, FP_COLOR, FN_COLOR = "#2b5d8a", "#c23b3b", "#e0a030"


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    _pyplot().close(fig)
    return buffer.getvalue()


def scenario_detection(evaluations: list[Evaluation]) -> bytes:
    plt = _pyplot()
    names = list(evaluations[-1].scenarios)
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.32 * len(names) + 1.6), sharey=True)
    height = 0.8 / len(evaluations)
    for panel, (title, value) in enumerate((("attack steps detected (any rule)", "detection_recall"),
                                            ("expected detections fired", "expected_recall"))):
        ax = axes[panel]
        for n, evaluation in enumerate(evaluations):
            values = [getattr(evaluation.scenarios[s], value) or 0.0 if s in evaluation.scenarios else 0.0
                      for s in names]
            positions = [i + n * height - 0.4 + height / 2 for i in range(len(names))]
            color = COLORS[-1] if len(evaluations) == 1 else COLORS[n]
            ax.barh(positions, values, height=height, color=color, label=evaluation.name)
        ax.set_xlim(0, 1.0)
        ax.set_title(title, fontsize=10)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    if len(evaluations) > 1:
        axes[1].legend(fontsize=8, loc="lower right")
    return _png(fig)


def rule_outcomes(evaluations: list[Evaluation]) -> bytes:
    plt = _pyplot()
    sids = sorted({sid for e in evaluations for sid, r in e.rule_scores.items() if r.alerts or r.expected})
    fig, ax = plt.subplots(figsize=(max(8.0, 0.36 * len(sids) * len(evaluations) + 2), 3.6))
    width = 0.8 / (3 * len(evaluations))
    for n, evaluation in enumerate(evaluations):
        for k, (label, color, getter) in enumerate((("TP", TP_COLOR, lambda r: r.tp), ("FP", FP_COLOR, lambda r: r.fp),
                                                    ("FN", FN_COLOR, lambda r: r.fn))):
            values = [getter(evaluation.rule_scores[s]) if s in evaluation.rule_scores else 0 for s in sids]
            offset = (n * 3 + k) * width - 0.4 + width / 2
            tag = label if len(evaluations) == 1 else f"{label} ({evaluation.name})"
            ax.bar([i + offset for i in range(len(sids))], values, width=width, color=color,
                   alpha=1.0 if n == len(evaluations) - 1 else 0.45, label=tag)
    ax.set_xticks(range(len(sids)), [str(s) for s in sids], rotation=90, fontsize=7)
    ax.set_yscale("symlog", linthresh=5)
    ax.set_ylabel("alerts (TP, FP) / missed steps (FN)", fontsize=8)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def timeline(evaluation: Evaluation) -> bytes:
    plt = _pyplot()
    capture = max(evaluation.captures, key=lambda c: c["flows"])
    alerts = [a for a in evaluation.alerts if a.capture == capture["path"]]
    rows = [*capture["scenarios"], BENIGN]
    origin = capture["start"]
    unmatched = [a.ts - origin for a in alerts if a.match.label is None]
    if unmatched:
        rows.append("(unmatched)")
    fig, ax = plt.subplots(figsize=(11, 0.3 * len(rows) + 1.4))
    for y, name in enumerate(rows):
        span = capture["spans"].get(name)
        if span is not None:
            ax.plot([span[0] - origin, span[1] - origin], [y, y], color="#9fb3c8", linewidth=7, alpha=0.5,
                    solid_capstyle="butt", zorder=0)
        attack = [a.ts - origin for a in alerts if a.match.label == name and a.attack]
        benign = [a.ts - origin for a in alerts if a.match.label == name and not a.attack]
        ax.scatter(attack, [y] * len(attack), s=40, color=TP_COLOR, marker="|", linewidths=2, zorder=2)
        ax.scatter(benign, [y] * len(benign), s=30, color=FP_COLOR, marker="x", zorder=2)
    if unmatched:
        ax.scatter(unmatched, [len(rows) - 1] * len(unmatched), s=30, color=FP_COLOR, marker="x")
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"seconds since the first packet of {capture['path']} (shaded: the scenario's traffic; "
                  "|: alert on attack traffic, x: false positive)", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def time_to_detection(evaluations: list[Evaluation]) -> bytes:
    plt = _pyplot()
    names = list(evaluations[-1].scenarios)
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(names) + 1.4))
    height = 0.8 / len(evaluations)
    detected = False
    for n, evaluation in enumerate(evaluations):
        values = [(evaluation.scenarios[s].first_alert if s in evaluation.scenarios else None) for s in names]
        positions = [i + n * height - 0.4 + height / 2 for i in range(len(names))]
        color = COLORS[-1] if len(evaluations) == 1 else COLORS[n]
        ax.barh(positions, [max(v, 0.001) if v is not None else 0 for v in values], height=height, color=color,
                label=evaluation.name)
        for pos, value in zip(positions, values, strict=True):
            if value is None:
                ax.text(0.0012, pos, "not detected", va="center", fontsize=7, color=FP_COLOR)
            else:
                detected = True
    if detected:
        ax.set_xscale("log")
    else:  # nothing to put on a log axis (matplotlib would warn): a plain axis of empty rows
        ax.set_xlim(0, 1)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    scale = " (log scale)" if detected else ": no scenario detected"
    ax.set_xlabel(f"seconds from the scenario's first packet to its first alert{scale}", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    if len(evaluations) > 1:
        ax.legend(fontsize=8)
    return _png(fig)
