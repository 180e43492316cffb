"""Start-up: what a command costs before it reads a byte, against the bare interpreter.

Alternating, in this invocation: `python -c pass` (the interpreter and its site imports), `python
-c "import rich.console, rich.table"` (what the commands' terminal output would add if it were
imported up front), and `inspector analyze EMPTY -q` on an empty capture with the shipped rules
(imports, rule loading, the run's set-up and end). Printed: the fastest of `--repeat` runs of
each, and the command's time over the interpreter's. Every `inspector` command and every
`--workers N` run pays the command's start-up once, before anything splits across processes.

    python benchmarks/bench_startup.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from inspector.lab.craft import write_pcap

REPO = Path(__file__).resolve().parent.parent


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=15, help="runs of each, alternating (default 15)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        empty = Path(directory) / "empty.pcap"
        write_pcap(empty, [])
        contenders = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "import rich.console, rich.table": [sys.executable, "-c", "import rich.console, rich.table"],
            "inspector analyze EMPTY -q": [sys.executable, "-m", "inspector", "analyze", str(empty), "-q",
                                           "--eve", "/dev/null"],
        }
        best = dict.fromkeys(contenders, float("inf"))
        for _ in range(args.repeat):
            for name, argv in contenders.items():
                best[name] = min(best[name], timed(argv))
    bare = best["python -c pass"]
    for name, seconds in best.items():
        print(f"{name:34s} {seconds * 1000:7.0f} ms  (+{(seconds - bare) * 1000:4.0f} ms over the interpreter)")
    command = best["inspector analyze EMPTY -q"]
    print(f"start-up of `inspector analyze`: {command / bare:.1f}x the bare interpreter's")


if __name__ == "__main__":
    main()
