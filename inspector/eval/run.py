"""Running an evaluation: captures and their truth files, analyzed with a rule set (config, policy), scored.

Each capture is analyzed on its own (a fresh flow table, rule engine and rate windows, as
`inspector analyze` does per file), through the same offline pipeline (inspector.analyze), and
its alerts are scored against the capture's truth (inspector.eval.score).

A truth file records the capture it describes (`capture`, its file name, and `packets`). A
capture whose packet count differs from its truth's is refused (TruthFormatError: scoring one
capture against another's truth gives numbers that mean nothing, 0 seen and every alert a false
positive); one with the same count under another name (a renamed copy) is scored with a warning
(`renamed_captures`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inspector.capture.reader import CaptureFormatError, open_capture
from inspector.eval.score import CaptureRun, Evaluation, score
from inspector.lab.truth import Truth, TruthFormatError, load_truth
from inspector.rules import load_config, load_rules
from inspector.rules.cli import analyze_captures


@dataclass(frozen=True, kw_only=True)
class RuleSetSpec:
    """A rule set to evaluate: rule paths, site config and segmentation policy (files), and a short name."""

    name: str
    rules: tuple[str, ...]
    config: str | None = None
    policy: str | None = None
    #: Anomaly baseline (`inspector baseline learn`): anomaly records for the anomaly rules.
    baseline: str | None = None

    def describe(self) -> str:
        text = ", ".join(f"`{r}`" for r in self.rules)
        text += f" with config `{self.config}`" if self.config else " with the default config"
        if self.policy:
            text += f" and policy `{self.policy}`"
        if self.baseline:
            text += f", anomaly baseline `{self.baseline}`"
        return text


def truth_beside(capture: Path) -> Path:
    """`x.pcap` -> `x.truth.json` in the same folder (how `inspector lab generate` names them)."""
    return capture.with_name(capture.name.rsplit(".", 1)[0] + ".truth.json")


def pair_truths(captures: list[Path], truths: list[Path]) -> list[tuple[Path, Truth]]:
    """Each capture with its truth: `truths` in the captures' order, or each capture's own
    `<stem>.truth.json` when none are given. TruthFormatError when one is missing or unreadable."""
    if truths and len(truths) != len(captures):
        raise TruthFormatError(f"{len(captures)} capture(s) but {len(truths)} truth file(s): give one --truth per "
                               "capture, in the same order, or none (each capture's <name>.truth.json is used)")
    paths = truths or [truth_beside(c) for c in captures]
    pairs = []
    for capture, path in zip(captures, paths, strict=True):
        if not path.is_file():
            raise TruthFormatError(f"no truth file for {capture}: {path} does not exist (--truth FILE)")
        truth = load_truth(path)
        packets = count_packets(capture)
        if truth.packets and packets is not None and packets != truth.packets:
            raise TruthFormatError(
                f"{path} is the truth of {truth.capture} ({truth.packets} packets), but {capture} has {packets} "
                "packets: it describes another capture (or the capture was changed since); give each capture "
                "its own truth file, in the same order")
        pairs.append((capture, truth))
    return pairs


def renamed_captures(pairs: list[tuple[Path, Truth]]) -> list[str]:
    """A warning for each capture scored against a truth that names another file (same packet count)."""
    return [f"{capture} is scored against the truth of {truth.capture} (same packet count: taken as a renamed copy)"
            for capture, truth in pairs if truth.capture and truth.capture != capture.name]


def count_packets(capture: Path) -> int | None:
    """Frames in the capture file (None when it cannot be read: the analysis reports why)."""
    try:
        reader = open_capture(capture)
    except (CaptureFormatError, OSError):
        return None
    try:
        for _ in reader:
            pass
    except (CaptureFormatError, OSError):
        return None
    finally:
        reader.close()
    return reader.packets


def evaluate(pairs: list[tuple[Path, Truth]], spec: RuleSetSpec) -> Evaluation:
    """Analyze every capture with `spec`'s rules and score the alerts (RuleLoadError, PolicyLoadError and
    BaselineError propagate)."""
    ruleset = load_rules(list(spec.rules), load_config(spec.config))
    policy = Path(spec.policy) if spec.policy else None
    baseline = Path(spec.baseline) if spec.baseline else None
    runs = [CaptureRun(path=str(capture), truth=truth,
                       records=analyze_captures([capture], ruleset, policy=policy, baseline=baseline))
            for capture, truth in pairs]
    return score(runs, ruleset, name=spec.name, rules=list(spec.rules), config=spec.config, policy=spec.policy)
