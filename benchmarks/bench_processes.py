"""The sidecar past one core: requests/s through `inspector proxy --processes N` against
`--processes 1`, same rules, same upstreams, same load, measured in the same run.

Both sidecars terminate TLS with the same certificate, forward to the same upstreams (a KServe v2
REST server, a Triton-protocol gRPC server over TLS and another in cleartext, h2c, as Triton's
gRPC port speaks it) and share rate windows through a real redis-server when one is installed
(what keeps rate rules correct across processes).

Clients, sidecars and servers share this machine's cores, so what the load generator and the
upstreams spend is taken from the sidecar. With nghttp2's h2load installed (`--load auto`, the
default) the load comes from it (C, one thread, `--connections` keep-alive connections of one
request in flight each, every answer checked to be a 2xx) and the upstreams are the lean ones
of benchmarks/lean_upstreams.py (one prepared, real answer per call): nginx, also C, where it is
installed (`--upstreams auto`), else asyncio and grpcio servers; `--load python` uses
`--clients` processes of `--concurrency` threads of the Python clients (tritonclient,
http.client) and the test servers instead. The kernel assigns each connection to one of the
sidecar's processes. Besides the ratio, each run reports how busy the whole machine was and how
many cores the sidecar's processes used: a run at 100% busy is bound by the machine, not by the
sidecar.

    python benchmarks/bench_processes.py [--processes 2] [--seconds 8] [--load auto|h2load|python]
                                         [--upstreams auto|nginx|python]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "live"))

from bench_live import INFER_JSON, Certs, grpc_worker, rest_worker, run_load  # noqa: E402
from lean_upstreams import LeanGrpcServer, LeanRestServer, NginxUpstreams, nginx_installed  # noqa: E402
from live_servers import RestServer, grpc_frame, start_grpc  # noqa: E402
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


#: Scenario -> title. Clients speak TLS to the sidecar in all of them.
SCENARIOS = {"rest": "REST infer (http upstream)", "grpc": "gRPC ModelInfer (TLS up)",
             "h2c": "gRPC ModelInfer (h2c up)"}


def grpc_infer_frame() -> bytes:
    """A ModelInferRequest for the `simple` model, framed as one gRPC message."""
    import numpy as np
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name="simple")
    for name in ("INPUT0", "INPUT1"):
        tensor = request.inputs.add()
        tensor.name, tensor.datatype = name, "INT32"
        tensor.shape.extend([1, 16])
    request.raw_input_contents.append(np.arange(16, dtype=np.int32).tobytes())
    request.raw_input_contents.append(np.ones(16, dtype=np.int32).tobytes())
    return grpc_frame(request.SerializeToString())


def h2load(kind: str, port: int, workdir: Path, connections: int, seconds: float) -> float:
    """requests/s of nghttp2's h2load (C, one thread, `connections` keep-alive connections of one
    request in flight each) against the sidecar: KServe REST inference over HTTP/1.1, or gRPC
    ModelInfer over HTTP/2 with a prepared request. Every answer must be a 2xx."""
    body = workdir / f"{kind}.body"
    if kind == "rest":
        body.write_bytes(INFER_JSON)
        target = ["--h1", "-H", "content-type: application/json", f"https://localhost:{port}/v2/models/simple/infer"]
    else:
        body.write_bytes(grpc_infer_frame())
        target = ["-H", "content-type: application/grpc", "-H", "te: trailers",
                  f"https://localhost:{port}/inference.GRPCInferenceService/ModelInfer"]
    command = ["h2load", "-c", str(connections), "-m", "1", "-t", "1", "-D", str(int(seconds)),
               "-d", str(body), *target]
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60).stdout
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", output)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    rate = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", output)
    if done is None or codes is None or rate is None:
        raise RuntimeError(f"h2load: unexpected output:\n{output}")
    if int(done.group(3)) or int(codes.group(1)) == 0 or any(int(codes.group(i)) for i in (2, 3, 4)):
        raise RuntimeError(f"h2load: failed requests or non-2xx answers:\n{output}")
    return float(rate.group(1))


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
    parser.add_argument("--load", choices=("auto", "h2load", "python"), default="auto",
                        help="load generator: nghttp2's h2load (C, light on the shared cores; auto when "
                             "installed) or the Python clients of bench_live.py (tritonclient, http.client)")
    parser.add_argument("--connections", type=int, default=16, help="h2load connections (default 16)")
    parser.add_argument("--upstreams", choices=("auto", "nginx", "python"), default="auto",
                        help="with h2load: the upstreams' server, nginx (C, the prepared answers as static "
                             "files; auto when installed) or lean Python servers (asyncio, grpcio)")
    args = parser.parse_args()
    use_h2load = args.load == "h2load" or (args.load == "auto" and shutil.which("h2load") is not None)
    if args.load == "h2load" and shutil.which("h2load") is None:
        parser.error("h2load is not installed (apt-get install nghttp2-client)")
    if args.upstreams == "nginx" and not nginx_installed():
        parser.error("nginx is not installed (apt-get install nginx-light)")

    workdir = Path(tempfile.mkdtemp(prefix="bench-processes-"))
    certs = Certs(workdir)
    if use_h2load and (args.upstreams == "nginx" or (args.upstreams == "auto" and nginx_installed())):
        upstreams = NginxUpstreams((free_port(), free_port(), free_port()), certs.cert, certs.key)
        rest_port, grpc_port, h2c_port = upstreams.rest, upstreams.grpc, upstreams.h2c
        stop_servers = [upstreams.stop]
        upstream, upstream_pid = "nginx", upstreams.process.pid
    elif use_h2load:  # upstreams as light as the load generator (benchmarks/lean_upstreams.py)
        rest = LeanRestServer()
        grpc_server = LeanGrpcServer(cert=certs.cert.read_bytes(), key=certs.key.read_bytes())
        h2c_server = LeanGrpcServer()
        rest_port, grpc_port, h2c_port = rest.port, grpc_server.port, h2c_server.port
        stop_servers = [grpc_server.stop, h2c_server.stop, rest.stop]
        upstream, upstream_pid = "lean Python servers", None
    else:
        rest = RestServer()
        grpc_test_server, grpc_port, _ = start_grpc(cert=certs.cert.read_bytes(), key=certs.key.read_bytes())
        h2c_test_server, h2c_port, _ = start_grpc()
        rest_port = rest.port
        stop_servers = [lambda: grpc_test_server.stop(0), lambda: h2c_test_server.stop(0), rest.stop]
        upstream, upstream_pid = "the test servers", None
    redis = None
    extra: list[str] = []
    if shutil.which("redis-server"):
        from test_redis_rate import RedisServer

        redis = RedisServer(workdir).start()
        extra = ["--redis", redis.url]

    def parts_cpu() -> tuple[float, float, float]:
        """CPU seconds so far of the load generator (finished child processes: h2load, the Python
        clients), the upstreams (nginx, else the threads of this process) and redis-server."""
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        if upstream_pid is not None:
            upstreams_cpu = tree_cpu_seconds(upstream_pid)
        else:
            own = resource.getrusage(resource.RUSAGE_SELF)
            upstreams_cpu = own.ru_utime + own.ru_stime
        return (children.ru_utime + children.ru_stime, upstreams_cpu,
                tree_cpu_seconds(redis.process.pid) if redis is not None else 0.0)
    sidecars = {}
    for count in (1, args.processes):
        listen = {"grpc": free_port(), "h2c": free_port()}
        sidecar = Sidecar(workdir, f"http://127.0.0.1:{rest_port}", [], cert=certs.cert, key=certs.key,
                          args=["--upstream", f"https://localhost:{grpc_port}",
                                "--listen", f"127.0.0.1:{listen['grpc']}",
                                "--upstream", f"h2c://127.0.0.1:{h2c_port}", "--listen", f"127.0.0.1:{listen['h2c']}",
                                "--upstream-ca", str(certs.ca), "--processes", str(count), "-q", *extra],
                          name=f"p{count}")
        sidecar.command = [arg for arg in sidecar.command if arg != "--rules"]
        sidecars[count] = (sidecar, listen)
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    try:
        for sidecar, _ in sidecars.values():
            sidecar.start()
        for count, (sidecar, _) in sidecars.items():
            for index in range(count):
                wait_for(lambda s=sidecar, i=index: _healthy(s.metrics_port + i), timeout=30)
        generator = (f"h2load, {args.connections} connections" if use_h2load
                     else f"{args.clients} client processes x {args.concurrency} threads")
        print(f"shipped rules; {'rate windows in redis' if redis else 'no redis-server: rate windows per process'}; "
              f"load: {generator}; upstreams: {upstream}")
        for scenario in SCENARIOS:
            kind = "rest" if scenario == "rest" else "grpc"
            for _ in range(args.rounds):
                for count, (sidecar, listen) in sidecars.items():
                    port = sidecar.port if scenario == "rest" else listen[scenario]

                    def measure(seconds: float, kind: str = kind, port: int = port) -> float:
                        if use_h2load:
                            return h2load(kind, port, workdir, args.connections, seconds)
                        return load(kind, port, certs.ca, args.clients, args.concurrency, seconds)

                    measure(1.0)  # warm up
                    busy0, total0 = machine_jiffies()
                    cpu0 = tree_cpu_seconds(sidecar.process.pid)
                    parts0 = parts_cpu()
                    rps = measure(args.seconds)
                    busy1, total1 = machine_jiffies()
                    cores_used = (tree_cpu_seconds(sidecar.process.pid) - cpu0) / args.seconds
                    parts = [(after - before) / args.seconds for before, after in zip(parts0, parts_cpu(), strict=True)]
                    results.setdefault((scenario, count), []).append(
                        (rps, 100 * (busy1 - busy0) / max(total1 - total0, 1), cores_used, *parts))
                    time.sleep(0.5)
    finally:
        for sidecar, _ in sidecars.values():
            sidecar.stop()
        for stop in stop_servers:
            stop()
        if redis is not None:
            redis.stop()
    cores = os.cpu_count() or 1
    speedups: dict[str, list[float]] = {}
    print(f"{'scenario':26} {'1 process req/s':>16} {f'{args.processes} processes req/s':>20} {'speed-up':>9} "
          f"{'machine busy (1/N)':>19} {'sidecar cores (1/N)':>20} {'ms/req sidecar+rest':>20} {'ceiling':>8}")
    for scenario, title in SCENARIOS.items():
        one = [statistics.median(r[i] for r in results[(scenario, 1)]) for i in range(3)]
        many = [statistics.median(r[i] for r in results[(scenario, args.processes)]) for i in range(3)]
        sidecar_ms, rest_ms, ceiling = scaling_ceiling(one[0], one[1], one[2], cores, args.processes)
        pairs = [b[0] / a[0] for a, b in zip(results[(scenario, 1)], results[(scenario, args.processes)], strict=True)]
        speedups[title] = pairs
        print(f"{title:26} {one[0]:16.0f} {many[0]:20.0f} {statistics.median(pairs):8.2f}x "
              f"{one[1]:8.0f}% /{many[1]:4.0f}%  {one[2]:10.2f} / {many[2]:.2f} "
              f"{sidecar_ms:12.2f} + {rest_ms:.2f} {ceiling:7.2f}x")
    for title, pairs in speedups.items():
        print(f"{title:26} each round's pair, 1 then {args.processes} processes: "
              + ", ".join(f"{ratio:.2f}x" for ratio in pairs))
    print("speed-up: the median of the rounds' pairs (this machine's speed drifts between rounds); "
          "machine busy: all cores, clients and servers included; sidecar cores: CPU seconds of the "
          "sidecar's processes per second; ms/req: CPU per request of the sidecar and of everything else "
          "(load generator, upstreams, Redis, kernel), from the 1-process runs; ceiling: the speed-up "
          f"{args.processes} processes could reach on these {cores} cores at those costs, were they perfect")
    print(f"\nCPU ms per request, 1 process: {'sidecar':>8} {'load':>6} {'upstreams':>10} {'redis':>6} "
          f"{'the rest':>9}")
    for scenario, title in SCENARIOS.items():
        runs = results[(scenario, 1)]
        rps = statistics.median(r[0] for r in runs)
        busy, sidecar_cores, load_cores, upstream_cores, redis_cores = (
            statistics.median(r[i] for r in runs) for i in range(1, 6))
        rest = busy / 100 * cores - sidecar_cores - load_cores - upstream_cores - redis_cores
        print(f"{title:31} " + " ".join(f"{1000 * value / rps:{width}.2f}" for value, width in (
            (sidecar_cores, 8), (load_cores, 6), (upstream_cores, 10), (redis_cores, 6), (rest, 9))))
    print("load: the load generator's processes; upstreams: nginx, or this process's threads (the "
          "lean Python servers) and the benchmark itself; the rest: the kernel (loopback TCP) and "
          "everything else the machine ran")
    return 0


def scaling_ceiling(rps: float, busy_percent: float, sidecar_cores: float, cores: int,
                    processes: int) -> tuple[float, float, float]:
    """(sidecar ms, everything else's ms, ceiling) per request: the most `processes` sidecars
    could give on `cores` cores when each request costs the sidecar and the rest of the machine
    what one process's run measured (the sidecar's processes limited to one core each, the
    machine to all of them)."""
    if rps <= 0:
        return float("nan"), float("nan"), float("nan")
    sidecar = sidecar_cores / rps
    rest = max(busy_percent / 100 * cores / rps - sidecar, 0.0)
    best = min(processes / sidecar if sidecar else float("inf"), cores / (sidecar + rest))
    return 1000 * sidecar, 1000 * rest, best / rps


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
