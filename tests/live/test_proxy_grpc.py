"""tritonclient gRPC through `inspector proxy` (TLS on the client side) to a real grpcio
Triton-protocol server, upstream in cleartext HTTP/2 (h2c) and over TLS.

Rules are test rules on `grpc.*` fields, so these tests do not depend on the Triton parser.
"""

from __future__ import annotations

import queue
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_raw import raw_grpc_call
from live_servers import grpc_frame
from live_sidecar import Sidecar, write_rule
from tritonclient.utils import InferenceServerException

SID_LOAD = 9100001
SID_STREAM = 9100002
SID_INFER = 9100003


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    directory = tmp_path_factory.mktemp("grpc-rules")
    write_rule(directory, SID_LOAD, "Model load from the test client", "grpc",
               {"grpc.method": "RepositoryModelLoad"}, action="block")
    write_rule(directory, SID_STREAM, "Oversized stream message", "grpc",
               {"grpc.method": "ModelStreamInfer", "grpc.request.bytes|gt": 400}, action="block")
    write_rule(directory, SID_INFER, "Inference call seen", "grpc", {"grpc.method": "ModelInfer"})
    return directory


@pytest.fixture(scope="module", params=["h2c", "tls"])
def sidecar(request, rules, certs, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(f"grpc-{request.param}")
    if request.param == "h2c":
        port, servicer = request.getfixturevalue("grpc_upstream")
        upstream, args = f"h2c://127.0.0.1:{port}", []
    else:
        port, servicer = request.getfixturevalue("grpc_tls_upstream")
        upstream, args = f"https://localhost:{port}", ["--upstream-ca", str(certs.ca)]
    proxy = Sidecar(workdir, upstream, rules, cert=certs.server_cert, key=certs.server_key, args=args)
    with proxy:
        proxy.servicer = servicer
        yield proxy


@pytest.fixture
def client(sidecar, certs):
    client = grpcclient.InferenceServerClient(f"localhost:{sidecar.port}", ssl=True,
                                              root_certificates=str(certs.ca))
    yield client
    client.close()


def _inputs(n: int, start: int = 0) -> list[grpcclient.InferInput]:
    a = np.arange(start, start + n, dtype=np.int32).reshape(1, n)
    b = np.full((1, n), 3, dtype=np.int32)
    inputs = [grpcclient.InferInput("INPUT0", [1, n], "INT32"), grpcclient.InferInput("INPUT1", [1, n], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs


def test_unary_calls_pass_with_correct_results(sidecar, client):
    assert client.is_server_live()
    assert client.get_model_metadata("simple").name == "simple"
    result = client.infer("simple", _inputs(16))
    assert result.as_numpy("OUTPUT0").tolist() == [[i + 3 for i in range(16)]]
    assert result.as_numpy("OUTPUT1").tolist() == [[i - 3 for i in range(16)]]
    records = sidecar.wait_records(lambda rs: [r for r in rs if r.get("grpc", {}).get("method") == "ModelInfer"
                                               and r["event_type"] != "alert"])
    grpc = records[-1]["grpc"]
    assert (grpc["service"], grpc["status"], grpc["request"]["messages"], grpc["response"]["messages"]) == (
        "inference.GRPCInferenceService", 0, 1, 1)
    assert records[-1]["src_ip"] == "127.0.0.1" and records[-1]["dest_port"] == sidecar.port
    alerts = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] == "alert"
                                              and r["alert"]["signature_id"] == SID_INFER])
    assert alerts[-1]["alert"]["action"] == "allowed"


def test_gzip_compressed_messages_are_decompressed_and_inspected(sidecar, client):
    result = client.infer("simple", _inputs(16, start=100), compression_algorithm="gzip")
    assert result.as_numpy("OUTPUT0").tolist() == [[100 + i + 3 for i in range(16)]]
    records = sidecar.wait_records(lambda rs: [r for r in rs if r.get("grpc", {}).get("encoding") == "gzip"
                                               and r["event_type"] != "alert"])
    grpc = records[-1]["grpc"]
    assert grpc["request"]["compressed"] == 1 and grpc["status"] == 0
    anomalies = [r for r in sidecar.records() if r["event_type"] == "anomaly" and r["anomaly"]["layer"] == "grpc"]
    assert anomalies == []
    assert sidecar.metric("inspector_uninspectable_total", action="block") == 0


def test_blocked_unary_call_gets_permission_denied_with_the_rule_message(sidecar, client):
    before = sidecar.servicer.calls.count("RepositoryModelLoad")
    with pytest.raises(InferenceServerException) as raised:
        client.load_model("simple")
    assert raised.value.status() == "StatusCode.PERMISSION_DENIED"
    assert raised.value.message() == f"blocked by inspector: Model load from the test client (sid {SID_LOAD})"
    # The alert is on disk before the client got its answer: no waiting here.
    alerts = sidecar.alerts(SID_LOAD)
    assert alerts and alerts[-1]["alert"]["action"] == "blocked"
    assert alerts[-1]["grpc"]["method"] == "RepositoryModelLoad"
    assert sidecar.servicer.calls.count("RepositoryModelLoad") == before  # never went upstream
    record = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] != "alert"
                                              and r.get("grpc", {}).get("method") == "RepositoryModelLoad"])[-1]
    assert (record["grpc"]["status"], record["grpc"]["status_name"]) == (7, "PERMISSION_DENIED")
    assert record["grpc"]["trailers_only"] is True
    assert sidecar.metric("inspector_blocks_total", reason="rule") >= 1


def test_stream_messages_are_inspected_one_by_one(sidecar, client):
    results: queue.Queue = queue.Queue()
    before = sidecar.servicer.calls.count("ModelStreamInfer.message")
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        started = time.monotonic()
        client.async_stream_infer("simple", _inputs(16), request_id="small-1")
        result, error = results.get(timeout=10)
        assert error is None and result.get_response().id == "small-1"
        assert result.as_numpy("OUTPUT0").tolist() == [[i + 3 for i in range(16)]]
        assert time.monotonic() - started < 5  # answered while the stream is open: not buffered
        client.async_stream_infer("simple", _inputs(256), request_id="big")  # over 400 bytes: blocked
        client.async_stream_infer("simple", _inputs(16, start=50), request_id="small-2")
        result, error = results.get(timeout=10)
        assert result is None
        assert error.message() == f"blocked by inspector: Oversized stream message (sid {SID_STREAM})"
        result, error = results.get(timeout=10)
        assert error is None and result.get_response().id == "small-2"
    finally:
        client.stop_stream()
    assert sidecar.servicer.calls.count("ModelStreamInfer.message") - before == 2  # the big one never left
    alerts = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] == "alert"
                                              and r["alert"]["signature_id"] == SID_STREAM])
    assert alerts[-1]["alert"]["action"] == "blocked" and alerts[-1]["grpc"]["request"]["messages"] == 1
    record = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] != "alert"
                                              and r.get("grpc", {}).get("method") == "ModelStreamInfer"])[-1]
    assert record["grpc"]["request"]["messages"] == 3  # what the client sent
    assert record["grpc"]["response"]["messages"] == 3  # two answers and the injected error


def test_uninspectable_compression_is_blocked(sidecar, certs):
    """grpc-encoding snappy: the sidecar cannot decompress it, so the policy (block) applies."""
    before = sidecar.servicer.calls.count("ModelInfer")
    body = grpc_frame(b"\xff\x00 not snappy we can read", compressed=True)
    headers, trailers, data = raw_grpc_call(sidecar.port, str(certs.ca),
                                            "/inference.GRPCInferenceService/ModelInfer", body,
                                            [("grpc-encoding", "snappy")])
    status = headers.get("grpc-status") or trailers.get("grpc-status")
    message = headers.get("grpc-message") or trailers.get("grpc-message")
    assert (headers[":status"], status, data) == ("200", "7", b"")
    assert "could not be decompressed" in message and "snappy" in message
    assert sidecar.servicer.calls.count("ModelInfer") == before
    assert sidecar.metric("inspector_uninspectable_total", action="block") >= 1


def test_cleartext_grpc_client_is_refused_and_said(rules, grpc_upstream, tmp_path):
    """A listener without --cert: a gRPC client in cleartext HTTP/2 (prior knowledge) cannot pass
    (mitmproxy does not accept h2c from clients). The sidecar says so, once, as an anomaly and a
    log line, not as an `http` record of a `PRI *` request."""
    port, servicer = grpc_upstream
    before = len(servicer.calls)
    with Sidecar(tmp_path, f"h2c://127.0.0.1:{port}", rules) as sidecar:
        plain = grpcclient.InferenceServerClient(f"127.0.0.1:{sidecar.port}")
        with pytest.raises(InferenceServerException):
            plain.is_server_live()
        plain.close()
        anomalies = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] == "anomaly"
                                                     and r["anomaly"]["event"] == "h2c_prior_knowledge_refused"])
        assert anomalies and "over TLS" in anomalies[0]["anomaly"]["message"]
        assert not [r for r in sidecar.records() if r["event_type"] == "http"]
        assert "cleartext HTTP/2 with prior knowledge" in sidecar.log_text() and len(servicer.calls) == before
        sidecar.assert_records_valid()
