"""`inspector proxy --processes 2`: two sidecar processes behind one port (SO_REUSEPORT), each
with its own EVE file and metrics port; connections spread over both; a rate limit shared
through a real redis-server gives one alert for the whole set; SIGHUP and SIGTERM reach both."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import urllib.request
from pathlib import Path

import pytest
from live_sidecar import Sidecar, eve_records, wait_for, write_rule
from test_redis_rate import RedisServer

from inspector.live.processes import worker_eve, worker_metrics

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")

SID_RATE = 9410001
BODY = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))},
                              {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16}]}).encode()


def test_worker_names():
    assert worker_eve("/var/log/inspector/eve.json", 1) == "/var/log/inspector/eve.1.json"
    assert worker_metrics("127.0.0.1:9464", 2) == "127.0.0.1:9466"
    assert worker_metrics("off", 3) == "off"


def _records(path: Path) -> list[dict]:
    return eve_records(path)


def _health(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return json.loads(response.read())
    except OSError:  # not listening yet
        return {}


def test_two_processes_share_the_port_and_the_rate_window(rest_upstream, tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    write_rule(rules, SID_RATE, "Many inferences from one client", "triton", {"triton.api": "infer"},
               rate={"by": ["src_ip"], "count": 30, "window": "60s"})
    redis = RedisServer(tmp_path).start()
    sidecar = Sidecar(tmp_path, f"http://127.0.0.1:{rest_upstream.server_address[1]}", rules,
                      processes=2, args=["--processes", "2", "--redis", redis.url], name="pair")
    try:
        with sidecar:
            wait_for(lambda: _health(sidecar.metrics_port + 1).get("status") == "ok", timeout=20)
            statuses = []
            for _ in range(60):  # a new connection per request: the kernel picks a process for each
                connection = http.client.HTTPConnection("127.0.0.1", sidecar.port, timeout=10)
                connection.request("POST", "/v2/models/simple/infer", BODY, {"Content-Type": "application/json"})
                statuses.append(connection.getresponse().status)
                connection.close()
            assert statuses == [200] * 60
            eve = [tmp_path / "pair-eve.0.json", tmp_path / "pair-eve.1.json"]
            wait_for(lambda: sum(len([r for r in _records(p) if r["event_type"] == "triton"]) for p in eve) == 60,
                     timeout=15)
            per_process = [len([r for r in _records(p) if r["event_type"] == "triton"]) for p in eve]
            assert min(per_process) > 0, per_process  # both processes served
            alerts = [r for p in eve for r in _records(p) if r["event_type"] == "alert"]
            assert [a["alert"]["signature_id"] for a in alerts] == [SID_RATE]  # the 30th, whichever process
            assert {_health(sidecar.metrics_port + i)["ratelimit_backend"] for i in (0, 1)} == {"redis"}
            assert not (tmp_path / "pair-eve.json").exists()
            sidecar.signal(signal.SIGHUP)  # passed to both: each reloads
            wait_for(lambda: sidecar.log_text().count("reloaded") >= 2, timeout=10)
        assert sidecar.process is not None and sidecar.process.returncode == 0
    finally:
        redis.stop()


def test_processes_need_an_eve_file(tmp_path, rest_upstream):
    import subprocess
    import sys

    from live_sidecar import ROOT

    done = subprocess.run([sys.executable, "-m", "inspector.cli", "proxy", "--upstream",
                           f"http://127.0.0.1:{rest_upstream.server_address[1]}", "--listen", "127.0.0.1:0",
                           "--processes", "2"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2 and "--eve FILE" in done.stderr


def test_two_processes_in_front_of_a_tls_grpc_upstream(grpc_tls_upstream, certs, tmp_path):
    """A reverse proxy to https:// also listens on UDP (HTTP/3) in one process; with --processes the
    workers listen on TCP only, so they can share the port."""
    import tritonclient.grpc as grpcclient

    port, _ = grpc_tls_upstream
    rules = tmp_path / "rules"
    rules.mkdir()
    write_rule(rules, 9410002, "Readiness probe", "triton", {"triton.api": "health"})
    sidecar = Sidecar(tmp_path, f"https://localhost:{port}", rules, cert=certs.server_cert, key=certs.server_key,
                      processes=2, args=["--processes", "2", "--upstream-ca", str(certs.ca)], name="tls-pair")
    with sidecar:
        wait_for(lambda: _health(sidecar.metrics_port + 1).get("status") == "ok", timeout=20)
        for _ in range(12):
            client = grpcclient.InferenceServerClient(f"localhost:{sidecar.port}", ssl=True,
                                                      root_certificates=str(certs.ca))
            assert client.is_server_ready()
            client.close()
        eve = [tmp_path / "tls-pair-eve.0.json", tmp_path / "tls-pair-eve.1.json"]
        wait_for(lambda: sum(len([r for r in _records(p) if r["event_type"] == "alert"]) for p in eve) == 12,
                 timeout=15)


def test_a_dead_worker_stops_the_set(rest_upstream, tmp_path):
    """When a worker dies, the parent stops the others and exits non-zero (for the supervisor to
    restart the set) rather than serving at half capacity unnoticed."""
    import os
    import time

    rules = tmp_path / "rules"
    rules.mkdir()
    sidecar = Sidecar(tmp_path, f"http://127.0.0.1:{rest_upstream.server_address[1]}", rules,
                      processes=2, args=["--processes", "2"], name="dying")
    sidecar.start()
    try:
        wait_for(lambda: _health(sidecar.metrics_port + 1).get("status") == "ok", timeout=20)
        workers = [int(pid) for pid in Path(f"/proc/{sidecar.process.pid}/task/{sidecar.process.pid}/children")
                   .read_text().split()]
        assert len(workers) == 2
        os.kill(workers[1], signal.SIGKILL)
        status = sidecar.process.wait(20)
        assert status != 0
        time.sleep(0.5)
        assert not Path(f"/proc/{workers[0]}").exists() or "zombie" in Path(f"/proc/{workers[0]}/status").read_text()
        assert "worker 1 exited" in sidecar.log_text()
    finally:
        sidecar.stop()


def test_processes_auto_runs_one_per_usable_cpu(rest_upstream, tmp_path):
    from inspector.cpus import usable_cpus

    count = usable_cpus()  # on one CPU, auto is one process serving by itself (no workers forked)
    rules = tmp_path / "rules"
    rules.mkdir()
    sidecar = Sidecar(tmp_path, f"http://127.0.0.1:{rest_upstream.server_address[1]}", rules,
                      processes=count, args=["--processes", "auto"], name="auto")
    sidecar.start()
    try:
        wait_for(lambda: all(_health(sidecar.metrics_port + i).get("status") == "ok" for i in range(count)),
                 timeout=30)
        workers = Path(f"/proc/{sidecar.process.pid}/task/{sidecar.process.pid}/children").read_text().split()
        assert len(workers) == (count if count > 1 else 0)
    finally:
        sidecar.stop()
