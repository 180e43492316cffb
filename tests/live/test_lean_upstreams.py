"""The lean upstreams of benchmarks/bench_processes.py give real answers: tritonclient (REST and
gRPC, over TLS and h2c) gets the right outputs for the benchmark's request, so the sidecar
inspects a genuine exchange in both directions while the upstream costs the shared cores little."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from benchmarks.lean_upstreams import LeanGrpcServer, LeanRestServer

A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = np.ones((1, 16), dtype=np.int32)


def _check(result) -> None:
    assert result.as_numpy("OUTPUT0").tolist() == (A + B).tolist()
    assert result.as_numpy("OUTPUT1").tolist() == (A - B).tolist()


def test_rest_answers_every_call_on_one_connection():
    server = LeanRestServer()
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
        inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_data_from_numpy(A, binary_data=False)
        inputs[1].set_data_from_numpy(B, binary_data=False)
        for _ in range(3):
            _check(client.infer("simple", inputs))
        client.close()
    finally:
        server.stop()


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "h2c"])
def test_grpc_answers_model_infer(tls, certs):
    server = LeanGrpcServer(certs.server_cert.read_bytes(), certs.server_key.read_bytes()) if tls else LeanGrpcServer()
    try:
        client = grpcclient.InferenceServerClient(f"localhost:{server.port}", ssl=tls,
                                                  root_certificates=str(certs.ca) if tls else None)
        inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_data_from_numpy(A)
        inputs[1].set_data_from_numpy(B)
        _check(client.infer("simple", inputs))
        client.close()
    finally:
        server.stop()
