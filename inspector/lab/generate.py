"""Lab captures: scenarios mixed with benign background, written as a pcap and its truth file.

`generate_lab(["shadowray", "tensor-bomb"], seed=7, benign=40, duration=600)` builds one capture:
each scenario placed at a seeded time within the duration (standalone, a lone scenario starts a
second in), `benign` background sessions spread over it, every frame from real TCP conversations
(inspector.lab.craft), every flow and transaction labelled (inspector.lab.truth). The same
arguments give the same bytes: each scenario draws from its own generator seeded with
`"<seed>:<scenario>"`, the background from `"<seed>:benign"`.

`write_lab` writes `<name>.pcap`, `<name>.truth.json` and, beside them, the lab's `policy.yaml`
and `site.yaml` (inspector.lab.network). The shipped set (pcaps/lab/: one capture per scenario and
`mixed.pcap` with all of them and background) is made by

    python -m inspector.lab.generate pcaps/lab
"""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from inspector.lab import network
from inspector.lab.recorder import Lab
from inspector.lab.scenarios import SCENARIOS, get_scenario
from inspector.lab.scenarios.benign import KINDS, benign_sessions
from inspector.lab.traffic_http import EPOCH
from inspector.lab.truth import BENIGN, Truth

SHIPPED_SEED = 7
MIXED_BENIGN = 60
MIXED_DURATION = 600.0
#: The shipped anomaly baseline is learned from benign traffic of another seed (never the
#: evaluated captures): this many sessions over this many seconds.
BASELINE_SEED = 11
BASELINE_BENIGN = 300
BASELINE_DURATION = 600.0


@dataclass(frozen=True, kw_only=True)
class LabCapture:
    pcap: Path
    truth: Path
    packets: int
    flows: int


def default_duration(scenarios: Sequence[str], benign: int) -> float:
    """Long enough for the longest scenario; 300 s when there is background to spread."""
    longest = max((get_scenario(name).span for name in scenarios), default=0.0)
    return max(300.0 if benign else 0.0, longest + 10.0)


def generate_lab(scenarios: Sequence[str], *, seed: int = SHIPPED_SEED, benign: int = 0,
                 duration: float | None = None, capture_name: str = "lab.pcap") -> tuple[Lab, Truth]:
    """Build the capture in memory: the Lab (frames and truth flows) and its Truth."""
    names = list(dict.fromkeys(scenarios))
    chosen = [get_scenario(name) for name in names]
    span = duration if duration is not None else default_duration(names, benign)
    lab = Lab()
    placement = random.Random(f"{seed}:placement")
    lone = len(chosen) == 1 and not benign
    for scenario in chosen:
        offset = 1.0 if lone else placement.uniform(5.0, max(5.0, span - scenario.span - 5.0))
        with lab.making(scenario.name, random.Random(f"{seed}:{scenario.name}")):
            scenario.build(lab, EPOCH + offset)
    if benign:
        with lab.making(BENIGN, random.Random(f"{seed}:benign")):
            benign_sessions(lab, benign, EPOCH, span)
    truth = Truth(capture=capture_name, seed=seed, benign_sessions=benign, duration=span,
                  packets=len(lab.capture.frames),
                  flows=sorted(lab.flows, key=lambda f: (f.start, f.community_id)),
                  scenarios=[scenario.truth() for scenario in chosen])
    if truth.flows:
        truth.start = min(f.start for f in truth.flows)
        truth.end = max(f.end for f in truth.flows)
    for record in truth.scenarios:
        own = [f for f in truth.flows if f.label == record.name]
        record.start = min(f.start for f in own)
        record.end = max(f.end for f in own)
    return lab, truth


def write_lab(out_dir: str | Path, scenarios: Sequence[str], *, name: str | None = None, seed: int = SHIPPED_SEED,
              benign: int = 0, duration: float | None = None) -> LabCapture:
    """Write `<name>.pcap` and `<name>.truth.json` (and the lab's policy.yaml and site.yaml) into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = name or (scenarios[0] if len(scenarios) == 1 else "lab")
    lab, truth = generate_lab(scenarios, seed=seed, benign=benign, duration=duration, capture_name=f"{stem}.pcap")
    pcap = out / f"{stem}.pcap"
    lab.capture.write(pcap)
    truth_path = out / f"{stem}.truth.json"
    truth.write(truth_path)
    (out / "policy.yaml").write_text(network.policy_yaml())
    (out / "site.yaml").write_text(network.site_yaml())
    return LabCapture(pcap=pcap, truth=truth_path, packets=truth.packets, flows=len(truth.flows))


def learn_baseline(out_dir: str | Path, *, seed: int = BASELINE_SEED, benign: int = BASELINE_BENIGN,
                   duration: float = BASELINE_DURATION) -> Path:
    """`<out_dir>/baseline.json`: an anomaly baseline learned (as `inspector baseline learn --policy`
    does) from benign lab traffic of its own seed, for `inspector eval --baseline`."""
    import tempfile

    from inspector.anomaly.learn import learn_baseline
    from inspector.policy import load_policy

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    policy = out / "policy.yaml"
    policy.write_text(network.policy_yaml())
    lab, _ = generate_lab([], seed=seed, benign=benign, duration=duration)
    with tempfile.TemporaryDirectory() as scratch:
        training = Path(scratch) / "benign.pcap"
        lab.capture.write(training)
        baseline, _ = learn_baseline([training], policy=load_policy(policy))
    path = out / "baseline.json"
    baseline.save(path)
    return path


def write_shipped(out_dir: str | Path) -> list[LabCapture]:
    """pcaps/lab: one capture per scenario, mixed.pcap (every scenario and background), and the
    anomaly baseline learned from benign traffic of another seed."""
    written = [write_lab(out_dir, [name], seed=SHIPPED_SEED) for name in SCENARIOS]
    written.append(write_lab(out_dir, list(SCENARIOS), name="mixed", seed=SHIPPED_SEED, benign=MIXED_BENIGN,
                             duration=MIXED_DURATION))
    learn_baseline(out_dir)
    (Path(out_dir) / "README.md").write_text(_readme(written))
    return written


def _readme(written: list[LabCapture]) -> str:
    lines = ["# Lab captures", "",
             "Made by `python -m inspector.lab.generate pcaps/lab` (inspector/lab/scenarios/; deterministic: the "
             "tests regenerate every file and compare bytes). Each capture has its ground truth beside it "
             "(`<name>.truth.json`, format in docs/lab.md); `policy.yaml` and `site.yaml` describe the lab's network "
             "for `inspector analyze --policy/--config` and `inspector eval`. `baseline.json` is an anomaly baseline "
             f"learned from {BASELINE_BENIGN} benign sessions over {BASELINE_DURATION:.0f} s of seed {BASELINE_SEED} "
             "(not these captures), for `--baseline`.", "",
             "| capture | scenario | packets | flows |", "|---|---|---|---|"]
    for item in written:
        stem = item.pcap.stem
        title = SCENARIOS[stem].title if stem in SCENARIOS else (
            f"all {len(SCENARIOS)} scenarios and {MIXED_BENIGN} benign sessions ({len(KINDS)} kinds) over "
            f"{MIXED_DURATION:.0f} s")
        lines.append(f"| {item.pcap.name} | {title} | {item.packets} | {item.flows} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "pcaps/lab"
    for item in write_shipped(target):
        print(f"{item.pcap}: {item.packets} packets, {item.flows} flows")
