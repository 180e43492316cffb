"""`inspector lab replay`: scenarios sent live with the real clients (tritonclient, boto3, openai, sockets)
through a real `inspector proxy` to real loopback servers; the sidecar raises the alerts the scenario's
steps expect. Also: a target that is not loopback is refused before anything is sent."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from live_servers import MotoServer
from live_sidecar import ROOT, Sidecar, wait_for

from inspector.lab.scenarios import SCENARIOS

LAB = ROOT / "pcaps" / "lab"
LAB_ARGS = ["--config", str(LAB / "site.yaml"), "--policy", str(LAB / "policy.yaml")]
SIGNATURES = ROOT / "signatures"


def _replay(scenario: str, target: str, *extra: str) -> tuple[int, list[dict]]:
    done = subprocess.run([sys.executable, "-m", "inspector.cli", "lab", "replay", scenario, "--target", target,
                           "--rate", "400", "--json", *extra], capture_output=True, text=True, cwd=ROOT, timeout=180)
    results = json.loads(done.stdout) if done.stdout.strip().startswith("[") else []
    assert results, done.stdout + done.stderr
    return done.returncode, results


def _expected(scenario: str) -> set[int]:
    return set(SCENARIOS[scenario].sids)


def _fired(sidecar: Sidecar, wanted: set[int]) -> Counter:
    def enough():
        fired = Counter(a["alert"]["signature_id"] for a in sidecar.alerts())
        return fired if wanted <= set(fired) else None

    try:
        return wait_for(enough, timeout=10)
    except AssertionError:
        return Counter(a["alert"]["signature_id"] for a in sidecar.alerts())


def test_grpc_scenarios_through_a_tls_sidecar(tmp_path, certs, grpc_upstream):
    port, servicer = grpc_upstream
    with Sidecar(tmp_path, f"h2c://127.0.0.1:{port}", SIGNATURES, cert=certs.server_cert, key=certs.server_key,
                 args=LAB_ARGS) as sidecar:
        target = f"grpcs://localhost:{sidecar.port}"
        wanted: set[int] = set()
        for scenario in ("triton-log-file", "triton-model-load", "grpc-compression-evasion", "tensor-bomb"):
            status, results = _replay(scenario, target, "--ca", str(certs.ca))
            assert status == 0, results
            assert not any("UNAVAILABLE" in r["detail"] for r in results), results  # every call got through
            wanted |= _expected(scenario)
        fired = _fired(sidecar, wanted)
    assert wanted <= set(fired), f"missing {sorted(wanted - set(fired))}; fired {dict(fired)}"
    assert "RepositoryModelLoad" in servicer.calls  # the replay reached the real server


def test_rest_and_llm_scenarios_through_a_sidecar(tmp_path, rest_upstream):
    upstream = f"http://127.0.0.1:{rest_upstream.server_address[1]}"
    with Sidecar(tmp_path, upstream, SIGNATURES, args=LAB_ARGS) as sidecar:
        wanted: set[int] = set()
        for scenario in ("tensor-bomb", "shm-offset-abuse", "prompt-injection", "llm-extraction-probing"):
            status, results = _replay(scenario, f"http://127.0.0.1:{sidecar.port}")
            assert status == 0, results
            wanted |= _expected(scenario)
        fired = _fired(sidecar, wanted)
    assert wanted <= set(fired), f"missing {sorted(wanted - set(fired))}; fired {dict(fired)}"


def test_llm_scenario_with_openai_over_tls(tmp_path, rest_upstream, certs):
    upstream = f"http://127.0.0.1:{rest_upstream.server_address[1]}"
    with Sidecar(tmp_path, upstream, SIGNATURES, cert=certs.server_cert, key=certs.server_key,
                 args=LAB_ARGS) as sidecar:
        status, results = _replay("prompt-injection", f"https://localhost:{sidecar.port}", "--ca", str(certs.ca))
        assert status == 0
        assert not any("connection error" in r["detail"].lower() for r in results), results
        fired = _fired(sidecar, _expected("prompt-injection"))
    assert _expected("prompt-injection") <= set(fired)


@pytest.fixture(scope="module")
def moto_server():
    server = MotoServer()
    try:
        yield server.endpoint
    finally:
        server.stop()


def test_s3_scenarios_with_boto3_through_a_tls_sidecar_to_moto(tmp_path, moto_server, certs):
    with Sidecar(tmp_path, moto_server, SIGNATURES, cert=certs.server_cert, key=certs.server_key,
                 args=LAB_ARGS) as sidecar:
        wanted: set[int] = set()
        for scenario in ("malicious-model-pull", "bucket-poisoning"):
            status, results = _replay(scenario, f"https://localhost:{sidecar.port}", "--ca", str(certs.ca))
            assert all(r["ok"] for r in results if r["step"] is None), results  # the setup calls got through
            assert status == 0, results
            wanted |= _expected(scenario)
        fired = _fired(sidecar, wanted)
    assert wanted <= set(fired), f"missing {sorted(wanted - set(fired))}; fired {dict(fired)}"


class _Sink:
    """A TCP server that reads everything and answers each read with four zero bytes (a TCPStore-ish reply)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    self.received += len(data)
                    conn.sendall(b"\x00\x00\x00\x00")
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()


def test_tcpstore_rendezvous_intrusion_over_raw_tcp(tmp_path):
    sink = _Sink()
    try:
        with Sidecar(tmp_path, f"tcp://127.0.0.1:{sink.port}", SIGNATURES, args=LAB_ARGS) as sidecar:
            status, results = _replay("rendezvous-intrusion", f"tcp://127.0.0.1:{sidecar.port}")
            assert status == 0, results
            records = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] == "tcpstore"] or None)
            fired = _fired(sidecar, {3600002})
    finally:
        sink.close()
    assert sink.received > 0
    assert {r["tcpstore"]["query"] for r in records} >= {"SET", "GET"}
    assert 3600002 in fired  # the pickle in the rendezvous value, seen live


@pytest.mark.parametrize("target", ["http://10.1.2.3:8000", "grpc://192.0.2.7:8001", "tcp://[2001:db8::1]:29500"])
def test_targets_off_loopback_are_refused_before_any_traffic(target):
    done = subprocess.run([sys.executable, "-m", "inspector.cli", "lab", "replay", "tensor-bomb", "--target", target],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, env=dict(os.environ))
    assert done.returncode == 2
    assert "loopback" in (done.stdout + done.stderr)


def test_unknown_scenario_and_bad_target_are_usage_errors(tmp_path: Path):
    unknown = subprocess.run([sys.executable, "-m", "inspector.cli", "lab", "replay", "nope", "--target",
                              "http://127.0.0.1:1"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert unknown.returncode == 2 and "unknown scenario" in unknown.stdout + unknown.stderr
    scheme = subprocess.run([sys.executable, "-m", "inspector.cli", "lab", "replay", "tensor-bomb", "--target",
                             "ftp://127.0.0.1:21"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert scheme.returncode == 2 and "unsupported target scheme" in scheme.stdout + scheme.stderr
