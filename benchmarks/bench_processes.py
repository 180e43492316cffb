"""The sidecar past one core: requests/s through `inspector proxy --processes N` against
`--processes 1`, same rules, same upstreams, same load, measured in the same run.

Both sidecars terminate TLS with the same certificate, forward to the same upstreams (a KServe v2
REST server and a Triton-protocol gRPC server over TLS) and share rate windows through a real
redis-server when one is installed (what keeps rate rules correct across processes). The load
comes from `--clients` client processes (so the clients' GIL is not the ceiling), each with
`--concurrency` threads, each thread on its own keep-alive connection (the kernel assigns each
connection to one of the sidecar's processes, so with few connections the split can be uneven). Clients, sidecars and
servers share this machine's cores: on a 2-core machine the clients and servers take a large
share, which bounds the speed-up any sidecar can show here; the ratio is the figure to watch,
with how busy the whole machine was during each run and how many cores the sidecar's processes
used (a run at 100% busy is bound by the machine, not by the sidecar).

    python benchmarks/bench_processes.py [--processes 2] [--seconds 8] [--clients 2] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "live"))

from bench_live import Certs, grpc_worker, rest_worker, run_load  # noqa: E402
from live_servers import RestServer, start_grpc  # noqa: E402
from live_sidecar import Sidecar, free_port, wait_for  # noqa: E402


def _client(kind: str, port: int, ca: Path, concurrency: int, seconds: float, queue: multiprocessing.Queue) -> None:
    worker = rest_worker(port, ca) if kind == "rest" else grpc_worker(port, ca)
    queue.put(run_load(worker, concurrency, seconds))


def load(kind: str, port: int, ca: Path, clients: int, concurrency: int, seconds: float) -> float:
    """Total requests/s of `clients` processes of `concurrency` threads each."""
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue = context.Queue()
    processes = [context.Process(target=_client, args=(kind, port, ca, concurrency, seconds, queue))
                 for _ in range(clients)]
    for process in processes:
        process.start()
    results = [queue.get(timeout=seconds + 60) for _ in processes]
    for process in processes:
        process.join()
    return sum(r[0] for r in results)


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children (the sidecar's workers)."""
    import os

    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(stat[1]) == pid:
            total += int(stat[11]) + int(stat[12])
    return total / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=2, help="client processes (default 2)")
    parser.add_argument("--concurrency", type=int, default=4, help="threads per client process (default 4)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-processes-"))
    certs = Certs(workdir)
    rest = RestServer()
    grpc_server, grpc_port, _ = start_grpc(cert=certs.cert.read_bytes(), key=certs.key.read_bytes())
    redis = None
    extra: list[str] = []
    if shutil.which("redis-server"):
        from test_redis_rate import RedisServer

        redis = RedisServer(workdir).start()
        extra = ["--redis", redis.url]
    sidecars = {}
    for count in (1, args.processes):
        grpc_listen = free_port()
        sidecar = Sidecar(workdir, f"http://127.0.0.1:{rest.port}", [], cert=certs.cert, key=certs.key,
                          args=["--upstream", f"https://localhost:{grpc_port}", "--listen", f"127.0.0.1:{grpc_listen}",
                                "--upstream-ca", str(certs.ca), "--processes", str(count), "-q", *extra],
                          name=f"p{count}")
        sidecar.command = [arg for arg in sidecar.command if arg != "--rules"]
        sidecars[count] = (sidecar, grpc_listen)
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    try:
        for sidecar, _ in sidecars.values():
            sidecar.start()
        for count, (sidecar, _) in sidecars.items():
            for index in range(count):
                wait_for(lambda s=sidecar, i=index: _healthy(s.metrics_port + i), timeout=30)
        print(f"shipped rules; {'rate windows in redis' if redis else 'no redis-server: rate windows per process'}; "
              f"{args.clients} client processes x {args.concurrency} threads")
        for kind in ("rest", "grpc"):
            for _ in range(args.rounds):
                for count, (sidecar, grpc_listen) in sidecars.items():
                    port = sidecar.port if kind == "rest" else grpc_listen
                    load(kind, port, certs.ca, args.clients, args.concurrency, 1.0)  # warm up
                    busy0, total0 = machine_jiffies()
                    cpu0 = tree_cpu_seconds(sidecar.process.pid)
                    rps = load(kind, port, certs.ca, args.clients, args.concurrency, args.seconds)
                    busy1, total1 = machine_jiffies()
                    cores_used = (tree_cpu_seconds(sidecar.process.pid) - cpu0) / args.seconds
                    results.setdefault((kind, count), []).append(
                        (rps, 100 * (busy1 - busy0) / max(total1 - total0, 1), cores_used))
                    time.sleep(0.5)
    finally:
        for sidecar, _ in sidecars.values():
            sidecar.stop()
        grpc_server.stop(0)
        rest.stop()
        if redis is not None:
            redis.stop()
    print(f"{'scenario':10} {'1 process req/s':>16} {f'{args.processes} processes req/s':>20} {'speed-up':>9} "
          f"{'machine busy (1/N)':>19} {'sidecar cores (1/N)':>20}")
    for kind in ("rest", "grpc"):
        one = [statistics.median(r[i] for r in results[(kind, 1)]) for i in range(3)]
        many = [statistics.median(r[i] for r in results[(kind, args.processes)]) for i in range(3)]
        print(f"{kind:10} {one[0]:16.0f} {many[0]:20.0f} {many[0] / one[0]:8.2f}x "
              f"{one[1]:8.0f}% /{many[1]:4.0f}%  {one[2]:10.2f} / {many[2]:.2f}")
    print("machine busy: all cores, clients and servers included; sidecar cores: CPU seconds of the "
          "sidecar's processes per second")
    return 0


def _healthy(port: int) -> bool:
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return json.loads(response.read()).get("status") == "ok"
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
