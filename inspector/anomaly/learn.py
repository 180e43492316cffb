"""Learning a baseline from captures: the offline analyzer's transaction records, learned only.

`inspector baseline learn` (cli.py), the lab's shipped baseline (inspector/lab/generate.py) and
the anomaly rules' fixtures (inspector/lab/rulecaps/) all learn this way: with a segmentation
policy the records carry zones, so protocols are learned per zone pair.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from inspector.anomaly.baseline import Baseline, BaselineParams

if TYPE_CHECKING:
    from inspector.analyze import Analyzer
    from inspector.policy.model import Policy


def learn_baseline(captures: Iterable[str | Path], *, policy: Policy | None = None,
                   params: BaselineParams | None = None) -> tuple[Baseline, Analyzer]:
    """A baseline learned (nothing reported) from the captures, in order; and the analyzer that
    read them (its stats say whether a capture was damaged)."""
    from inspector.analyze import Analyzer
    from inspector.policy import PolicyMonitor

    baseline = Baseline(params)
    baseline.detect = False
    monitor = PolicyMonitor(policy) if policy is not None else None
    analyzer = Analyzer(lambda record: None, flow_records=False, policy=monitor, baseline=baseline)
    for path in captures:
        analyzer.analyze_file(Path(path))
    return baseline, analyzer
