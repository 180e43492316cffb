"""Run a benchmark by name: `./dev bench offline CAPTURE`, `./dev bench engine`."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = {p.stem.removeprefix("bench_"): p for p in HERE.glob("bench_*.py")}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        print(f"usage: ./dev bench {{{'|'.join(sorted(BENCHMARKS))}}} [ARGS]")
        sys.exit(2)
    script = BENCHMARKS[sys.argv[1]]
    sys.argv = [str(script), *sys.argv[2:]]
    runpy.run_path(str(script), run_name="__main__")
