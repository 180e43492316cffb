"""CPU cost of `inspector analyze --workers N` against one process, counted in instructions.

Wall and CPU time drift on a shared VM (by up to 20% within an hour here), which hides the
few-percent effects sharding work is made of. Valgrind's callgrind counts the instructions every
process of a run executes (parent and forked workers): the same run gives the same count, to
0.1% in one process and about 0.5% sharded (the parent's waits follow the scheduling). Each
command runs once on the capture and once on an empty capture of the same link type, and the
difference is the analysis (start-up, imports and rule loading cancel out, and so does the
one-time work a run leaves to first use, done up front here in every run). Printed: the
instructions of `--workers 1` and of `--workers N` (all processes), their ratio (the CPU sharding
adds), and the speed-up that CPU would allow on N cores if the work split perfectly
(`N x one / all`): an upper bound of what `bench_offline.py --workers N` can show.

Valgrind runs Python 50-100x slower: use a capture of a few MB (`bench_offline.py --make-capture
FILE --megabytes 10`).

    python benchmarks/bench_instructions.py CAPTURE [--workers 2] [--shard flows]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_COLLECTED = re.compile(r"^==(\d+)== Collected : (\d+)", re.MULTILINE)
#: `inspector analyze`, with the one-time work a run leaves to first use (the HPACK Huffman
#: automaton, picklescan's import) done up front, as a sharded run does before it forks: the
#: empty-capture run then takes it away from one process and from the sharded run alike.
_ANALYZE = ("import sys\n"
            "from inspector.analyze import prepare_first_use\n"
            "prepare_first_use()\n"
            "from inspector.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")


def empty_like(capture: Path, out: Path) -> Path:
    """A pcap with no records and the capture's link type (pcap captures; others: Ethernet)."""
    linktype = 1
    head = capture.read_bytes()[:24]
    if len(head) == 24 and head[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        linktype = struct.unpack_from("<I", head, 20)[0]
    elif len(head) == 24 and head[:4] in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        linktype = struct.unpack_from(">I", head, 20)[0]
    out.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype))
    return out


def _counting_environment() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONHASHSEED"] = "0"
    return env


def instructions(capture: Path, workers: int, shard: str) -> list[int]:
    """Instructions of each process of `inspector analyze CAPTURE --workers N` under callgrind:
    the parent first, then the workers in the order they were forked (flows sharded: worker 0
    reads the capture). A forked process's count starts from its parent's at the fork, which the
    empty-capture run takes away again, all but the little the two runs' parents did
    differently before forking. String
    hashing is seeded alike in every run, so that dicts and sets behave the same, and bytecode
    is cached (PYTHONDONTWRITEBYTECODE dropped), so that the first run compiles it and no run
    counts compiling the project's modules."""
    command = ["valgrind", "--tool=callgrind", "--trace-children=yes", "--callgrind-out-file=/dev/null",
               sys.executable, "-c", _ANALYZE, "analyze", str(capture), "--eve", "/dev/null", "-q",
               "--workers", str(workers), "--shard", shard]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=_counting_environment())
    _, stderr = process.communicate()
    counts = {int(pid): int(n) for pid, n in _COLLECTED.findall(stderr)}
    if process.pid not in counts or process.returncode not in (0, 1):
        raise SystemExit(f"valgrind or the analysis failed:\n{stderr[-2000:]}")
    return [counts.pop(process.pid)] + [counts[pid] for pid in sorted(counts)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("capture", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shard", choices=("auto", "flows", "files"), default="flows")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (apt-get install valgrind)")
    if args.workers < 2:
        parser.error("--workers must be at least 2")
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as directory:
        empty = empty_like(args.capture, Path(directory) / "empty.pcap")
        runs = {(path, workers): None for path in (args.capture, empty) for workers in (1, args.workers)}
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {key: pool.submit(instructions, key[0], key[1], args.shard) for key in runs}
            counts = {key: future.result() for key, future in futures.items()}
    one = sum(counts[(args.capture, 1)]) - sum(counts[(empty, 1)])
    parts = [run - empty_run for run, empty_run in zip(counts[(args.capture, args.workers)],
                                                        counts[(empty, args.workers)], strict=True)]
    many = sum(parts)
    print(f"capture: {args.capture} ({args.capture.stat().st_size / 1e6:.1f} MB); instructions of the analysis "
          "(each run minus the same run on an empty capture)")
    print(f"analyze --workers 1          : {one / 1e6:10,.0f} M")
    print(f"analyze --workers {args.workers} --shard {args.shard}: {many / 1e6:10,.0f} M, all {len(parts)} processes "
          f"({many / one:.3f}x one process's)")
    workers = parts[1:]
    imbalance = max(workers) * len(workers) / sum(workers)
    print(f"  parent (merge, rate windows, output): {parts[0] / 1e6:,.0f} M; workers: "
          f"{', '.join(f'{w / 1e6:,.0f}' for w in workers)} M (the largest {imbalance:.3f}x their mean; "
          "flows sharded: worker 0 also reads, and flows go where the work is, so the split follows the "
          "scheduling)")
    print(f"speed-up these allow on {args.workers} cores, split perfectly: {args.workers * one / many:.2f}x "
          f"(goal >= 1.7 with 2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
