"""Robustness tests: the repository root (for the `fuzz` package) and tests/live (the sidecar
helpers) on the import path."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT, ROOT / "tests" / "live"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
