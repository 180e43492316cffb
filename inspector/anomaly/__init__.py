"""Anomaly detection on ML traffic: a baseline of normal traffic, deviations as `anomaly` records.

`Baseline` (baseline.py) is sans-IO: transaction records and their timestamps in, anomaly
records out (`anomaly.type: baseline`, `anomaly.kind`, `anomaly.score`), which the engine
matches like any record (`event: anomaly`, signatures/anomaly/). Learned online with a warm-up,
or from captures (`inspector baseline learn`, cli.py) and saved as JSON. The features it reads
are in features.py, the statistics in stats.py; docs/anomaly.md has the maths.
"""

from typing import TYPE_CHECKING

from inspector.lazyexports import lazy_exports

if TYPE_CHECKING:
    from inspector.anomaly.baseline import KINDS, Baseline, BaselineError, BaselineParams

__getattr__ = lazy_exports(__name__, dict.fromkeys(("KINDS", "Baseline", "BaselineError", "BaselineParams"),
                                                   "inspector.anomaly.baseline"))

__all__ = ["KINDS", "Baseline", "BaselineError", "BaselineParams"]
