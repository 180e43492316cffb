"""Soak: sustained load through `inspector proxy` (real mitmproxy, shipped rules, every record
written) for minutes, the sidecar's RSS sampled every few seconds. Memory must be flat.

The upstream is the KServe v2 REST test server; client threads make inference calls (JSON and
binary-free), readiness probes, requests with unique URLs and query strings (new keys for any
per-URL state), a share that fires alert rules (a model load with file overrides: sid 3100002
family), and open a new connection every few requests (new client ports, new flows). The RSS
of the sidecar process (VmRSS) is sampled every `--interval` seconds. After a warm-up (the
first fifth of the run) a least-squares line is fitted: the verdict is *flat* when the fitted
growth over the measured part stays under 5% of the mean RSS (and under 8 MiB).

    python benchmarks/bench_soak.py [--minutes 4] [--seconds N] [--interval 5] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "live"))

from live_servers import RestServer  # noqa: E402
from live_sidecar import Sidecar  # noqa: E402

INFER = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))},
                               {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16}]})
LOAD_WITH_FILE = json.dumps({"parameters": {"config": "{}", "file:1/model.py": "aW1wb3J0IG9z"}})


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def client(port: int, stop: threading.Event, counts: dict[str, int], worker: int) -> None:
    n = 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    while not stop.is_set():
        n += 1
        if n % 20 == 0:  # a new connection: a new client port, a new flow
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        kind = n % 10
        try:
            if kind < 6:
                conn.request("POST", "/v2/models/simple/infer", body=INFER,
                             headers={"Content-Type": "application/json"})
            elif kind < 8:
                conn.request("GET", f"/v2/models/simple/ready?probe={worker}-{n}")
            elif kind < 9:
                conn.request("GET", f"/v2/models/m{worker}x{n}/ready")  # unique URL, upstream 404
            else:
                conn.request("POST", "/v2/repository/models/simple/load", body=LOAD_WITH_FILE,
                             headers={"Content-Type": "application/json", "Authorization": f"Bearer t{n}"})
            response = conn.getresponse()
            response.read()
            counts[f"status_{response.status}"] = counts.get(f"status_{response.status}", 0) + 1
        except (OSError, http.client.HTTPException):
            counts["errors"] = counts.get("errors", 0) + 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.close()


def slope_per_second(samples: list[tuple[float, float]]) -> float:
    xs = [t for t, _ in samples]
    ys = [v for _, v in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--seconds", type=float, help="duration in seconds (overrides --minutes)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    duration = args.seconds if args.seconds is not None else args.minutes * 60
    upstream = RestServer()
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sidecar = Sidecar(Path(tmp), f"http://127.0.0.1:{upstream.port}", ROOT / "signatures").start()
        try:
            pid = sidecar.process.pid
            stop = threading.Event()
            threads = [threading.Thread(target=client, args=(sidecar.port, stop, counts, w), daemon=True)
                       for w in range(args.concurrency)]
            for thread in threads:
                thread.start()
            started = time.monotonic()
            samples: list[tuple[float, float]] = []
            while (now := time.monotonic() - started) < duration:
                samples.append((now, rss_mib(pid)))
                print(f"  t={now:6.0f}s  rss={samples[-1][1]:6.1f} MiB  requests={sum(counts.values())}",
                      flush=True)
                upstream.calls.clear() if hasattr(upstream, "calls") else None
                time.sleep(args.interval)
            stop.set()
            for thread in threads:
                thread.join(15)
            samples.append((time.monotonic() - started, rss_mib(pid)))
            alerts = len(sidecar.alerts())
            records = len(sidecar.records())
        finally:
            sidecar.stop()
            upstream.stop()
    measured = [s for s in samples if s[0] >= duration / 5]
    slope = slope_per_second(measured)
    span = measured[-1][0] - measured[0][0]
    growth = slope * span
    mean = statistics.fmean(v for _, v in measured)
    requests = sum(v for k, v in counts.items() if k.startswith("status_"))
    flat = growth < min(0.05 * mean, 8.0)
    print(f"duration        {samples[-1][0]:.0f} s, {len(samples)} samples every {args.interval:.0f} s")
    print(f"requests        {requests} ({requests / samples[-1][0]:.0f}/s), errors {counts.get('errors', 0)}, "
          f"statuses {dict(sorted((k, v) for k, v in counts.items() if k.startswith('status_')))}")
    print(f"EVE             {records} records, {alerts} alerts")
    print(f"RSS             start {samples[0][1]:.1f} MiB, after warm-up {measured[0][1]:.1f}, "
          f"end {samples[-1][1]:.1f},"
          f" max {max(v for _, v in samples):.1f}")
    print(f"slope           {slope * 60:+.3f} MiB/min after warm-up ({growth:+.2f} MiB over {span:.0f} s)")
    print(f"verdict         {'flat' if flat else 'NOT flat'}")
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
