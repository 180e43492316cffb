"""Offline analysis speed: `inspector analyze` against a bare dpkt loop on the same capture.

Both run in this invocation, on the same file, after a warm-up read (page cache). Printed:
packets/s and MB/s of each, and the ratio inspector/dpkt (the goal is <= 2.5). Peak memory of
the analysis is measured in a child process (ru_maxrss), so the dpkt loop does not share it.

    python benchmarks/bench_offline.py CAPTURE [--rules PATH | --no-rules] [--repeat 3] [--tshark] [--workers N]
                                       [--rotated K] [--independent]
    python benchmarks/bench_offline.py --make-capture /tmp/ml.pcap --megabytes 200
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

import dpkt

REPO = Path(__file__).resolve().parent.parent


def dpkt_reader(fh: BinaryIO) -> dpkt.pcap.Reader | dpkt.pcapng.Reader:
    """dpkt's reader of a pcap or, by its first block's type, a pcapng."""
    pcapng = fh.read(4) == b"\x0a\x0d\x0d\x0a"  # a section header block
    fh.seek(0)
    return dpkt.pcapng.Reader(fh) if pcapng else dpkt.pcap.Reader(fh)


def dpkt_loop(path: Path) -> int:
    """The baseline: Ethernet -> IP -> TCP payload length, nothing else."""
    packets = 0
    with open(path, "rb") as fh:
        for _ts, buf in dpkt_reader(fh):
            packets += 1
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
                tcp = ip.data
                if isinstance(tcp, dpkt.tcp.TCP):
                    len(tcp.data)
    return packets


def analyze_child(path: Path, rules: list[str] | None) -> dict:
    """Run the analyzer in a child process; returns its timing and peak RSS."""
    code = f"""
import json, resource, sys, time
sys.path.insert(0, {str(REPO)!r})
from inspector.analyze import Analyzer
engine = None
rules = {rules!r}
if rules is not None:
    from inspector.engine import Engine
    from inspector.rules import load_config, load_rules
    config = load_config(None)
    engine = Engine(load_rules(rules or [{str(REPO / 'signatures')!r}], config), config)
out = open('/dev/null', 'w')
import json as _j
enc = _j.JSONEncoder(ensure_ascii=False, separators=(',', ':')).encode
def write(record):
    out.write(enc(record)); out.write('\\n')
a = Analyzer(write, engine=engine)
import gc
gc.freeze()  # as `inspector analyze` does before its run
t = time.perf_counter()
a.analyze_file({str(path)!r})
elapsed = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"elapsed": elapsed, "packets": a.stats.packets, "peak_mib": peak,
                  "records": sum(a.stats.records.values())}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def cli_run(paths: list[Path], workers: int) -> dict:
    """`inspector analyze CAPTURE... --workers N` (EVE to /dev/null) in a child: wall time, CPU
    time of all its processes and the largest process's peak RSS (the parent, or one worker)."""
    code = f"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
subprocess.run([sys.executable, "-m", "inspector.cli", "analyze", *{[str(p) for p in paths]!r}, "--eve", "/dev/null",
                "-q", "--workers", "{workers}"], cwd={str(REPO)!r}, check=False)
elapsed = time.perf_counter() - t
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({{"elapsed": elapsed, "cpu": usage.ru_utime + usage.ru_stime, "peak_mib": usage.ru_maxrss / 1024}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def rotate(path: Path, parts: int, directory: Path) -> list[Path]:
    """The capture cut into `parts` consecutive files of about equal packet counts, as a rotating
    capture (tcpdump -C / -G) leaves them."""
    with open(path, "rb") as fh:
        reader = dpkt_reader(fh)
        linktype, frames = reader.datalink(), list(reader)
    per_part = -(-len(frames) // parts)
    paths = []
    for index in range(parts):
        part = directory / f"{path.stem}.{index:03d}.pcap"
        with open(part, "wb") as out:
            writer = dpkt.pcap.Writer(out, linktype=linktype, nano=False)
            for ts, buf in frames[index * per_part:(index + 1) * per_part]:
                writer.writepkt(buf, ts)
        paths.append(part)
    return paths


def speedup(label: str, paths: list[Path], workers: int, repeat: int) -> None:
    """`--workers 1` against `--workers N`, alternating, medians."""
    one, many = [], []
    for _ in range(repeat):
        one.append(cli_run(paths, 1))
        many.append(cli_run(paths, workers))
    single, sharded = statistics.median(r["elapsed"] for r in one), statistics.median(r["elapsed"] for r in many)
    cpu_one, cpu_many = statistics.median(r["cpu"] for r in one), statistics.median(r["cpu"] for r in many)
    cores = min(workers, os.cpu_count() or 1)
    print(f"{label}: analyze --workers 1: {single:8.2f} s  CPU {cpu_one:.2f} s  peak "
          f"{max(r['peak_mib'] for r in one):.0f} MiB")
    print(f"{label}: analyze --workers {workers}: {sharded:8.2f} s  CPU {cpu_many:.2f} s of all processes "
          f"({cpu_many / cpu_one:.2f}x one process's)  largest process peak {max(r['peak_mib'] for r in many):.0f} MiB")
    print(f"{label}: speed-up --workers {workers} / --workers 1: {single / sharded:.2f}x  (goal >= 1.7 with 2; "
          f"ceiling at this CPU on {cores} cores: {cores * cpu_one / cpu_many:.2f}x)")
    pairs = ", ".join(f"{a['elapsed'] / b['elapsed']:.2f}x" for a, b in zip(one, many))
    print(f"{label}: each alternating pair (this machine's spread): {pairs}")


def independent_pair(path: Path, repeat: int) -> None:
    """What this machine gives two processes that share nothing: `--workers 1` alone against two
    `--workers 1` runs of the same file started together (alternating, medians). No split of one
    run into two processes can beat this ratio on the same machine at the same time."""
    from concurrent.futures import ThreadPoolExecutor

    alone, together = [], []
    with ThreadPoolExecutor(2) as pool:
        for _ in range(repeat):
            alone.append(cli_run([path], 1)["elapsed"])
            started = time.perf_counter()
            list(pool.map(lambda _: cli_run([path], 1), range(2)))
            together.append(time.perf_counter() - started)
    pairs = ", ".join(f"{2 * a / b:.2f}x" for a, b in zip(alone, together))
    one, two = statistics.median(alone), statistics.median(together)
    print(f"two independent processes at once: {two:8.2f} s for two runs against {one:.2f} s for one: "
          f"{2 * one / two:.2f}x the work per second of one (each pair: {pairs})")


def tshark_grpc(path: Path, ports: list[int]) -> tuple[float, float]:
    """tshark's gRPC extraction over the same file: (wall seconds, peak MiB)."""
    import resource
    import shutil

    tshark = shutil.which("tshark")
    if tshark is None:
        raise SystemExit("tshark not found (apt-get install tshark)")
    decode = [arg for port in ports for arg in ("-d", f"tcp.port=={port},http2")]
    started = time.perf_counter()
    # tshark exits 2 on a capture cut short (as inspector exits 1): the timing still counts.
    done = subprocess.run([tshark, "-n", "-r", str(path), *decode, "-Y", "grpc", "-T", "fields",
                           "-e", "grpc.message_length"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if done.returncode not in (0, 2):
        raise SystemExit(f"tshark failed: {done.stderr.decode(errors='replace')[-500:]}")
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return elapsed, peak


def make_capture(path: Path, megabytes: int) -> None:
    """A large capture of ML traffic: the shipped core captures' flows repeated with fresh
    ports and times until the size is reached (for benchmarks only; not committed)."""
    import random

    from inspector.lab import corecaps
    from inspector.lab.craft import Capture

    target = megabytes * 1024 * 1024
    from inspector.lab.craft import write_pcap

    def frames():
        written = 0
        round_ = 0
        while written < target:
            for name, make in corecaps.CAPTURES.items():
                cap = Capture()
                make(cap, random.Random(f"bench:{round_}:{name}"))
                for ts, _, frame in sorted(cap.frames):
                    written += len(frame) + 16
                    yield ts + round_ * 10.0, frame
            round_ += 1

    write_pcap(path, frames())
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("capture", nargs="?")
    parser.add_argument("--rules", action="append")
    parser.add_argument("--no-rules", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--make-capture", type=Path)
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--tshark", action="store_true",
                        help="also time tshark's gRPC extraction (-d tcp.port==P,http2 for --grpc-port)")
    parser.add_argument("--grpc-port", type=int, action="append", help="gRPC ports for tshark (default 8001 50051 443)")
    parser.add_argument("--workers", type=int, default=0, metavar="N",
                        help="also time `inspector analyze --workers N` against `--workers 1` (the CLI, shipped rules)")
    parser.add_argument("--independent", action="store_true",
                        help="with --workers 2: also time two independent one-process runs at once, the "
                        "most any split into two processes gets from this machine now")
    parser.add_argument("--rotated", type=int, default=0, metavar="K",
                        help="with --workers: also cut the capture into K files (a rotated capture set) and "
                        "time the set, which --workers splits by file")
    args = parser.parse_args()
    if args.make_capture:
        make_capture(args.make_capture, args.megabytes)
        return 0
    if not args.capture:
        parser.error("a capture is required")
    path = Path(args.capture)
    size_mb = os.path.getsize(path) / 1e6
    dpkt_loop(path)  # warm the page cache
    rules = None if args.no_rules else (args.rules or [])
    base_times, times, peaks = [], [], []
    packets = 0
    for _ in range(args.repeat):
        t = time.perf_counter()
        packets = dpkt_loop(path)
        base_times.append(time.perf_counter() - t)
        result = analyze_child(path, rules)
        times.append(result["elapsed"])
        peaks.append(result["peak_mib"])
    shark_times, shark_peak = [], 0.0
    if args.tshark:
        for _ in range(args.repeat):
            elapsed, shark_peak = tshark_grpc(path, args.grpc_port or [8001, 50051, 443])
            shark_times.append(elapsed)
    base, ours = statistics.median(base_times), statistics.median(times)
    print(f"capture: {path} ({size_mb:.1f} MB, {packets:,} packets), medians of {args.repeat}")
    print(f"dpkt loop          : {base:8.2f} s  {packets / base:12,.0f} pkt/s  {size_mb / base:8.1f} MB/s")
    print(f"inspector analyze  : {ours:8.2f} s  {packets / ours:12,.0f} pkt/s  {size_mb / ours:8.1f} MB/s"
          f"  peak {max(peaks):.0f} MiB  ({'no rules' if rules is None else 'rules'})")
    print(f"ratio inspector/dpkt: {ours / base:.2f}  (goal <= 2.5)")
    if shark_times:
        shark = statistics.median(shark_times)
        print(f"tshark gRPC fields : {shark:8.2f} s  {packets / shark:12,.0f} pkt/s  {size_mb / shark:8.1f} MB/s"
              f"  peak {shark_peak:.0f} MiB")
        print(f"ratio inspector/tshark: {ours / shark:.2f}  (goal <= 1.0)")
    if args.workers > 1:
        speedup("one file (flows sharded)", [path], args.workers, args.repeat)
        if args.independent:
            independent_pair(path, args.repeat)
        if args.rotated > 1:
            import tempfile

            with tempfile.TemporaryDirectory(prefix="bench-rotated-") as directory:
                parts = rotate(path, args.rotated, Path(directory))
                speedup(f"{args.rotated} rotated files (split by file)", parts, args.workers, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
