"""What holding a large answer for inspection costs a model pull: time to first byte and time to
the last, through `inspector proxy` (the shipped rules) against plain mitmdump and against
mitmdump with the sidecar's tuning of mitmproxy (benchmarks/mitm_tuned.py: its 256 KiB reads and
malloc thresholds, what a large body costs mitmproxy itself), same invocation.

One upstream (its own process, HTTP/1.1, S3's response headers) serves three objects of about the
same size: a safetensors model and a dataset (Parquet's magic), whose first bytes rule out a
pickle and so settle the shipped block rules (the hold ends after 300 bytes,
inspector.live.settle), and a pickle, held until its first MiB is in and scanned (what every
large answer got before). A client GETs each through each proxy in turn (alternating, so drift
hits all of them), reading the body in 1 MiB reads; medians are printed with the sidecar's added
time to first byte (`i-m`): the full hold's price is the difference between the rows; and each
proxy's CPU and minor page faults per GET (its process's user + system time and faults over all
its GETs): `i-f`, the CPU the inspection adds to a 64 MiB answer beyond mitmproxy's own part.

    python benchmarks/bench_hold.py [--size-mib 64] [--rounds 8] [--gets 3]
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "live"))

from live_servers import QuietHandler, safetensors_model  # noqa: E402
from live_sidecar import Sidecar, free_port, wait_for  # noqa: E402

OBJECTS = {"/models/m1/model.safetensors": "safetensors (settled after 300 B)",
           "/datasets/d1/part-0.parquet": "dataset (settled after 300 B)",
           "/models/m1/model.pkl": "pickle (held 1 MiB)"}


def objects(size: int) -> list[bytes]:
    """The three objects, each of len(safetensors_model(size, 64)) bytes."""
    model = safetensors_model(size, 64)
    dataset = b"PAR1" + bytes(range(256)) * ((len(model) - 4) // 256)
    dataset += b"\x00" * (len(model) - len(dataset))
    overhead = len(pickle.dumps(bytes(1 << 20), protocol=4)) - (1 << 20)  # PROTO, BINBYTES, MEMOIZE, STOP
    pickled = pickle.dumps(bytes(len(model) - overhead), protocol=4)
    return [model, dataset, pickled]


def serve(port: int, size: int) -> None:
    """The upstream (run in its own process): both objects, S3's response headers."""
    bodies = dict(zip(OBJECTS, objects(size), strict=True))

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            body = bodies.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("content-type", "binary/octet-stream")
            self.send_header("content-length", str(len(body)))
            self.send_header("x-amz-request-id", "4442587FB7D0A2F9")
            self.send_header("x-amz-id-2", "bench")
            self.end_headers()
            view = memoryview(body)
            for at in range(0, len(body), 1 << 18):
                self.wfile.write(view[at:at + (1 << 18)])

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


class Mitmdump:
    """Plain mitmdump in reverse mode, streaming bodies over 1 MiB as the sidecar does; `tuned`:
    with the sidecar's tuning of mitmproxy and no inspection (benchmarks/mitm_tuned.py)."""

    def __init__(self, workdir: Path, upstream: int, *, tuned: bool = False) -> None:
        self.port = free_port()
        self.command = [str(Path(sys.executable).with_name("mitmdump")), "-q", "--mode",
                        f"reverse:http://127.0.0.1:{upstream}@127.0.0.1:{self.port}",
                        "--set", "stream_large_bodies=1m", "--set", "keep_host_header=true",
                        "--set", "connection_strategy=lazy", "--set", f"confdir={workdir}"]
        if tuned:
            self.command += ["-s", str(HERE / "mitm_tuned.py")]
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Mitmdump:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: _answers(self.port), timeout=20)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(15)


def usage(pid: int) -> tuple[float, int]:
    """(user + system CPU seconds, minor page faults) of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(fields[7])


def _answers(port: int) -> bool:
    try:
        get(port, "/missing")
        return True
    except OSError:
        return False


def get(port: int, path: str) -> tuple[float, float, int]:
    """(seconds to the first body byte, seconds to the last, bytes) of one GET."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        started = time.perf_counter()
        connection.request("GET", path)
        response = connection.getresponse()
        first = response.read(1)
        first_at = time.perf_counter() - started
        got = len(first)
        while chunk := response.read(1 << 20):
            got += len(chunk)
        return first_at, time.perf_counter() - started, got
    finally:
        connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=64, help="object size (default 64)")
    parser.add_argument("--rounds", type=int, default=8, help="alternating rounds (default 8)")
    parser.add_argument("--gets", type=int, default=3, help="GETs per object, proxy and round (default 3)")
    args = parser.parse_args()
    sizes = {len(body) for body in objects(args.size_mib << 20)}
    assert len(sizes) == 1, sizes
    size = sizes.pop()  # whole tensors: a little under the MiBs asked

    workdir = Path(tempfile.mkdtemp(prefix="bench-hold-"))
    upstream_port = free_port()
    upstream = multiprocessing.get_context("spawn").Process(target=serve, args=(upstream_port, args.size_mib << 20),
                                                            daemon=True)
    upstream.start()
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        wait_for(lambda: _answers(upstream_port), timeout=30)
        plain = Mitmdump(workdir, upstream_port)
        tuned = Mitmdump(workdir, upstream_port, tuned=True)
        inspector = Sidecar(workdir, f"http://127.0.0.1:{upstream_port}", [ROOT / "signatures"], args=["-q"],
                            name="inspector")
        with plain, tuned, inspector:
            proxies = {"mitmdump": plain, "tuned": tuned, "inspector": inspector}
            ports = {name: proxy.port for name, proxy in proxies.items()}
            pids = {}
            for name, proxy in proxies.items():
                assert proxy.process is not None
                pids[name] = proxy.process.pid
            spent: dict[tuple[str, str], tuple[float, int]] = {}
            print(f"inspector proxy with {inspector.health()['rules']} shipped rules; {args.size_mib} MiB objects, "
                  f"{args.rounds} rounds x {args.gets} GETs per object and proxy")
            for path in OBJECTS:
                for port in ports.values():
                    get(port, path)  # warm
            for _ in range(args.rounds):
                for path in OBJECTS:
                    for proxy, port in ports.items():
                        before = usage(pids[proxy])
                        for _ in range(args.gets):
                            first_at, last_at, got = get(port, path)
                            if got != size:
                                raise RuntimeError(f"{proxy} {path}: {got} bytes of {size}")
                            results.setdefault((path, proxy), []).append((first_at, last_at))
                        after = usage(pids[proxy])
                        cpu, faults = spent.get((path, proxy), (0.0, 0))
                        spent[(path, proxy)] = (cpu + after[0] - before[0], faults + after[1] - before[1])
            holds = {ended: inspector.metric("inspector_body_holds_total", ended_by=ended)
                     for ended in ("settled", "prefix", "end")}
            handed_back = inspector.metric("inspector_streams_handed_back_total")
    finally:
        upstream.terminate()

    print(f"medians in ms; m = plain mitmdump, f = mitmdump with the sidecar's tuning of mitmproxy "
          f"(mitm_tuned.py), i = inspector proxy; holds ended by: {holds}; "
          f"answers handed back to mitmproxy past their first MiB: {handed_back:.0f}")
    print(f"{'object':36} {'first byte m/f/i':>20} {'i-m':>6} {'last byte m/f/i':>17} {'i-m':>7} "
          f"{'CPU ms/GET m/f/i':>17} {'i-f':>6} {'page faults/GET m/f/i':>22}")
    gets = args.rounds * args.gets
    for path, label in OBJECTS.items():
        m, f, i = ([statistics.median(r[k] for r in results[(path, proxy)]) * 1000 for k in range(2)]
                   for proxy in proxies)
        cm, cf, ci = (1000 * spent[(path, proxy)][0] / gets for proxy in proxies)
        fm, ff, fi = (spent[(path, proxy)][1] / gets for proxy in proxies)
        print(f"{label:36} {m[0]:6.2f}/{f[0]:6.2f}/{i[0]:<6.2f} {i[0] - m[0]:+6.2f} "
              f"{m[1]:5.0f}/{f[1]:5.0f}/{i[1]:<5.0f} {i[1] - m[1]:+7.1f} "
              f"{cm:5.0f}/{cf:5.0f}/{ci:<5.0f} {ci - cf:+6.1f} {fm:7.0f}/{ff:6.0f}/{fi:<6.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
