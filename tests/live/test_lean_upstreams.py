"""The lean upstreams of benchmarks/bench_processes.py give real answers: tritonclient (REST and
gRPC, over TLS and h2c) gets the right outputs for the benchmark's request, from the Python
servers and from nginx (installed by the test command), so the sidecar inspects a genuine
exchange in both directions while the upstream costs the shared cores little."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from live_sidecar import free_port

from benchmarks.lean_upstreams import LeanGrpcServer, LeanRestServer, NginxUpstreams

A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = np.ones((1, 16), dtype=np.int32)


def _check(result) -> None:
    assert result.as_numpy("OUTPUT0").tolist() == (A + B).tolist()
    assert result.as_numpy("OUTPUT1").tolist() == (A - B).tolist()


def _rest_calls(port: int) -> None:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(A, binary_data=False)
    inputs[1].set_data_from_numpy(B, binary_data=False)
    try:
        for _ in range(3):
            _check(client.infer("simple", inputs))
    finally:
        client.close()


def _grpc_calls(port: int, ca: str | None) -> None:
    client = grpcclient.InferenceServerClient(f"localhost:{port}", ssl=ca is not None, root_certificates=ca)
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(A)
    inputs[1].set_data_from_numpy(B)
    try:
        for _ in range(3):  # one HTTP/2 connection: each call a new stream
            _check(client.infer("simple", inputs))
    finally:
        client.close()


def test_rest_answers_every_call_on_one_connection():
    server = LeanRestServer()
    try:
        _rest_calls(server.port)
    finally:
        server.stop()


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "h2c"])
def test_grpc_answers_model_infer(tls, certs):
    server = LeanGrpcServer(certs.server_cert.read_bytes(), certs.server_key.read_bytes()) if tls else LeanGrpcServer()
    try:
        _grpc_calls(server.port, str(certs.ca) if tls else None)
    finally:
        server.stop()


def test_nginx_answers_rest_and_grpc_over_tls_and_h2c(certs):
    """The test command installs nginx; without it this fails, saying so (NginxUpstreams)."""
    upstreams = NginxUpstreams((free_port(), free_port(), free_port()), certs.server_cert, certs.server_key)
    try:
        _rest_calls(upstreams.rest)
        _grpc_calls(upstreams.grpc, str(certs.ca))
        _grpc_calls(upstreams.h2c, None)
    finally:
        upstreams.stop()
    assert upstreams.process.returncode == 0  # stopped gracefully, not killed
    assert not upstreams.root.exists()
