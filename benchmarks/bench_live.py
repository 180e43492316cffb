"""The live sidecar's cost: requests/s and latency through `inspector proxy` (shipped rules, every
record written) vs plain mitmdump in the same mode, measured in the same run, printed as ratios.

Both proxies terminate TLS with the same certificate and forward to the same upstreams: a KServe
v2 REST server (HTTP/1.1, JSON inference), a Triton-protocol gRPC server over TLS and another in
cleartext (h2c: plain mitmdump gets benchmarks/mitm_h2c.py, the prior-knowledge switch alone),
and moto's S3 server holding a 64 MiB model object that boto3 GETs (both proxies stream bodies
over 1 MiB: plain mitmdump with stream_large_bodies=1m, inspector proxy holding the body until
its first part is inspected: the first MiB, or, as here, a safetensors file's header when the
block rules read nothing else of the body, inspector.live.settle). A third contender is plain
mitmdump with the sidecar's tuning of mitmproxy (benchmarks/mitm_tuned.py: the hook dispatch,
256 KiB reads, glibc's malloc thresholds): `i/m` is what a user gets against stock mitmdump,
`i/f` and the CPU column `i-f` the inspection's own cost. Runs alternate between the proxies scenario by
scenario so drift hits all of them.
Besides requests/s and latency, each proxy process's CPU time per request is printed (from
/proc): the least noisy figure on a shared machine, and the one the 8-client ratios follow.
Clients, proxies and servers share this machine's cores: absolute numbers mean little, the
ratios are the figures to watch.

    python benchmarks/bench_live.py [--seconds 5] [--concurrency 8] [--rounds 2] [--only s3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "live"))

import http.client  # noqa: E402
import ssl  # noqa: E402

import numpy as np  # noqa: E402
import tritonclient.grpc as grpcclient  # noqa: E402
from live_servers import MotoServer, RestServer, start_grpc  # noqa: E402
from live_sidecar import Sidecar, free_port, wait_for  # noqa: E402

from inspector.live.certs import cert_pem, key_pem, make_ca, make_leaf  # noqa: E402
from inspector.live.proxy import write_private  # noqa: E402

INFER_JSON = json.dumps({"inputs": [
    {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))},
    {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16}]}).encode()


class Certs:
    def __init__(self, directory: Path) -> None:
        ca, ca_key = make_ca("bench CA")
        leaf, leaf_key = make_leaf(ca, ca_key, ["localhost", "127.0.0.1"], client=False)
        self.ca = directory / "ca.pem"
        self.ca.write_bytes(cert_pem(ca))
        self.cert = directory / "server.pem"
        self.cert.write_bytes(cert_pem(leaf) + cert_pem(ca))
        self.key = directory / "server-key.pem"
        write_private(self.key, key_pem(leaf_key))
        self.combined = directory / "combined.pem"
        write_private(self.combined, key_pem(leaf_key) + cert_pem(leaf) + cert_pem(ca))


class Mitmdump:
    """Plain mitmdump, same modes and options as `inspector proxy` sets, no inspection (the h2c
    upstream gets only the prior-knowledge switch, benchmarks/mitm_h2c.py)."""

    def __init__(self, workdir: Path, certs: Certs, rest_port: int, grpc_port: int, h2c_port: int | None = None,
                 s3_port: int | None = None, *, tuned: bool = False) -> None:
        self.rest = free_port()
        self.grpc = free_port()
        self.h2c = free_port()
        self.s3 = free_port()
        self.command = [str(Path(sys.executable).with_name("mitmdump")), "-q",
                        "--mode", f"reverse:http://127.0.0.1:{rest_port}@127.0.0.1:{self.rest}",
                        "--mode", f"reverse:https://localhost:{grpc_port}@127.0.0.1:{self.grpc}",
                        "--set", f"certs=*={certs.combined}", "--set", "keep_host_header=true",
                        "--set", "connection_strategy=lazy", "--set", f"ssl_verify_upstream_trusted_ca={certs.ca}",
                        "--set", "stream_large_bodies=1m", "--set", f"confdir={workdir}"]
        self._ports = [self.rest, self.grpc]
        if tuned:
            self.command += ["-s", str(HERE / "mitm_tuned.py")]
        if h2c_port is not None:
            self.command += ["--mode", f"reverse:http://127.0.0.1:{h2c_port}@127.0.0.1:{self.h2c}",
                             "-s", str(HERE / "mitm_h2c.py"), "--set", f"h2c_upstreams=127.0.0.1:{h2c_port}"]
            self._ports.append(self.h2c)
        if s3_port is not None:
            self.command += ["--mode", f"reverse:http://127.0.0.1:{s3_port}@127.0.0.1:{self.s3}"]
            self._ports.append(self.s3)
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Mitmdump:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: all(_listening(port) for port in self._ports), timeout=20)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(15)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_load(worker, concurrency: int, seconds: float) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of `concurrency` threads calling `worker()` for `seconds`."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    stop = time.perf_counter() + seconds
    errors: list[BaseException] = []

    def loop(index: int) -> None:
        call = worker()
        own = latencies[index]
        try:
            while time.perf_counter() < stop:
                started = time.perf_counter()
                call()
                own.append(time.perf_counter() - started)
        except BaseException as exc:  # report, don't hang the benchmark
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(concurrency)]
    begun = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - begun
    if errors:
        raise RuntimeError(f"load failed: {errors[0]!r}")
    merged = [x for own in latencies for x in own]
    return len(merged) / elapsed, _percentile(merged, 0.5) * 1000, _percentile(merged, 0.99) * 1000


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rest_worker(port: int, ca: Path):
    def make():
        context = ssl.create_default_context(cafile=str(ca))
        conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=10)

        def call() -> None:
            conn.request("POST", "/v2/models/simple/infer", body=INFER_JSON,
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            body = response.read()
            if response.status != 200 or b"OUTPUT0" not in body:
                raise RuntimeError(f"REST answer {response.status}: {body[:200]!r}")

        return call

    return make


def grpc_worker(port: int, ca: Path):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.int32)

    def make():
        client = grpcclient.InferenceServerClient(f"localhost:{port}", ssl=True, root_certificates=str(ca))
        inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b)

        def call() -> None:
            result = client.infer("simple", inputs)
            if result.as_numpy("OUTPUT0")[0, 1] != 2:
                raise RuntimeError("wrong gRPC answer")

        return call

    return make


OBJECT_BYTES = 64 * 1024 * 1024
BUCKET, KEY = "models", "fraud-detector/1/model.safetensors"


def model_store() -> MotoServer:
    """moto's S3 server holding one 64 MiB safetensors-shaped object (put directly, not proxied)."""
    server = MotoServer()
    client = _s3_client(server.endpoint, None)
    client.create_bucket(Bucket=BUCKET)
    header = b'{"__metadata__":{"format":"pt"}}'
    client.put_object(Bucket=BUCKET, Key=KEY,
                      Body=len(header).to_bytes(8, "little") + header + bytes(OBJECT_BYTES - 8 - len(header)))
    return server


def _s3_client(endpoint: str, ca: Path | None):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
                        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                        verify=str(ca) if ca is not None else False,
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def s3_worker(port: int, ca: Path):
    def make():
        client = _s3_client(f"https://localhost:{port}", ca)

        def call() -> None:
            body = client.get_object(Bucket=BUCKET, Key=KEY)["Body"]
            got = 0
            while chunk := body.read(1024 * 1024):
                got += len(chunk)
            if got != OBJECT_BYTES:
                raise RuntimeError(f"S3 GET returned {got} bytes")

        return call

    return make


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement (default 5)")
    parser.add_argument("--concurrency", type=int, default=8, help="clients for the throughput runs (default 8)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per scenario (default 2)")
    parser.add_argument("--no-s3", action="store_true", help="skip the S3 GET scenario (it needs moto)")
    parser.add_argument("--only", choices=("rest", "grpc", "h2c", "s3"),
                        help="run only this scenario kind (e.g. s3: more rounds of the 64 MiB GET)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-live-"))
    certs = Certs(workdir)
    rest = RestServer()
    grpc_server, grpc_port, _ = start_grpc(cert=certs.cert.read_bytes(), key=certs.key.read_bytes())
    h2c_server, h2c_port, _ = start_grpc()
    moto = model_store() if not args.no_s3 and args.only in (None, "s3") else None
    listen = {kind: free_port() for kind in ("grpc", "h2c", "s3")}
    routes = ["--upstream", f"https://localhost:{grpc_port}", "--listen", f"127.0.0.1:{listen['grpc']}",
              "--upstream", f"h2c://127.0.0.1:{h2c_port}", "--listen", f"127.0.0.1:{listen['h2c']}"]
    if moto is not None:
        routes += ["--upstream", f"http://127.0.0.1:{moto.port}", "--listen", f"127.0.0.1:{listen['s3']}"]
    inspector = Sidecar(workdir, f"http://127.0.0.1:{rest.port}", [], cert=certs.cert, key=certs.key,
                        args=[*routes, "--upstream-ca", str(certs.ca), "-q"], name="inspector")
    inspector.command = [arg for arg in inspector.command if arg != "--rules"]
    plain = Mitmdump(workdir, certs, rest.port, grpc_port, h2c_port, moto.port if moto is not None else None)
    tuned = Mitmdump(workdir, certs, rest.port, grpc_port, h2c_port, moto.port if moto is not None else None,
                     tuned=True)
    proxies = {"mitmdump": plain, "mitmdump_tuned": tuned, "inspector": inspector}
    many = args.concurrency
    scenarios = [("REST infer, 1 client", "rest", 1), (f"REST infer, {many} clients", "rest", many),
                 ("gRPC ModelInfer, 1 client", "grpc", 1), (f"gRPC ModelInfer, {many} clients", "grpc", many),
                 ("gRPC to an h2c upstream, 1 client", "h2c", 1),
                 (f"gRPC to an h2c upstream, {many} clients", "h2c", many)]
    if moto is not None:
        scenarios.append(("S3 GET of a 64 MiB object", "s3", 1))
    if args.only is not None:
        scenarios = [scenario for scenario in scenarios if scenario[1] == args.only]
    workers = {"rest": rest_worker, "grpc": grpc_worker, "h2c": grpc_worker, "s3": s3_worker}
    results: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
    try:
        with plain, tuned, inspector:
            ports = {name: {"rest": proxy.rest, "grpc": proxy.grpc, "h2c": proxy.h2c, "s3": proxy.s3}
                     for name, proxy in (("mitmdump", plain), ("mitmdump_tuned", tuned))}
            ports["inspector"] = {"rest": inspector.port, **listen}
            rules = inspector.health()["rules"]
            print(f"inspector proxy with {rules} shipped rules, every record to {inspector.eve.name}; "
                  f"{os.cpu_count()} cores shared by clients, proxies and servers")
            for name, kind, concurrency in scenarios:
                for _ in range(args.rounds):
                    for proxy in proxies:
                        worker = workers[kind](ports[proxy][kind], certs.ca)
                        run_load(worker, concurrency, 0.5)  # warm connections and caches
                        pid = proxies[proxy].process.pid
                        cpu_before = cpu_seconds(pid)
                        rps, p50, p99 = run_load(worker, concurrency, args.seconds)
                        cpu_after = cpu_seconds(pid)
                        cpu_ms = (1000 * (cpu_after - cpu_before) / (rps * args.seconds)
                                  if cpu_before is not None and cpu_after is not None and rps else float("nan"))
                        results.setdefault((name, proxy), []).append((rps, p50, p99, cpu_ms))
            records = len(inspector.records())
            peak = inspector.peak_rss_mib()
    finally:
        grpc_server.stop(0)
        h2c_server.stop(0)
        rest.stop()
        if moto is not None:
            moto.stop()

    print("req/s and CPU ms per request of the proxy process, medians over the rounds; m = plain mitmdump, "
          "f = mitmdump with the sidecar's tuning of mitmproxy, i = inspector proxy")
    print(f"{'scenario':36} {'req/s (m/f/i)':>20} {'i/m':>5} {'i/f':>5} {'p50 ms (m/f/i)':>20} {'added p50':>9} "
          f"{'p99 ms (m/i)':>13} {'CPU ms/req (m/f/i)':>19} {'i-f':>6}")
    for name, _, _ in scenarios:
        m, f, i = ([statistics.median(r[k] for r in results[(name, proxy)]) for k in range(4)] for proxy in proxies)
        print(f"{name:36} {m[0]:6.0f}/{f[0]:6.0f}/{i[0]:<6.0f} {i[0] / m[0]:5.2f} {i[0] / f[0]:5.2f} "
              f"{m[1]:6.2f}/{f[1]:6.2f}/{i[1]:<6.2f} {i[1] - m[1]:+9.2f} {m[2]:5.1f}/{i[2]:<7.1f} "
              f"{m[3]:5.2f}/{f[3]:5.2f}/{i[3]:<7.2f} {i[3] - f[3]:+6.2f}")
    print(f"inspector wrote {records} EVE records; its peak RSS {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
