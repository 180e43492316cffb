"""Secrets never reach EVE, across every protocol record: Authorization values (Bearer, Basic,
SigV4 signatures), presigned-URL signatures and tokens in query strings, session tokens, API
keys and cookies, sent to each ML API's own paths over HTTP/1 and to gRPC over HTTP/2, run
through the whole record path (every layer, the rules, the EVE encoder). Keys written 0600;
the metrics endpoint binds to localhost unless told otherwise."""

from __future__ import annotations

import json
import stat
import subprocess
import sys

import pytest

from fuzz.harness import RecordCheck, drive_session, shipped_engine
from inspector.capture.http1 import Http1Session
from inspector.capture.http2 import Http2Session
from inspector.lab.h2wire import GrpcCall, H2Wire
from inspector.live.options import DEFAULT_METRICS

SIG = "fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024"
SIGV4 = (f"AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240101/us-east-1/s3/aws4_request, "
         f"SignedHeaders=host;x-amz-date, Signature={SIG}")
SECRETS = {
    "authorization": "Bearer bearer-secret-token-5150",
    "cookie": "session=cookie-secret-4711; _xsrf=xsrf-secret-0815",
    "x-api-key": "apikey-secret-1234567890",
    "x-amz-security-token": "FwoGZXIvYXdzEsessiontokensecret",
    "openai-api-key": "sk-proj-openai-secret-abcdef",
    "x-jupyter-token": "jupyter-token-secret-9999",
    "proxy-authorization": "Basic dXNlcjpwcm94eS1wYXNzd29yZA==",
}
QUERY = (f"X-Amz-Credential=AKIA%2F20240101&X-Amz-Signature={SIG}&X-Amz-Security-Token=querytokensecret"
         "&token=tok-secret-77")
LEAKS = [SIG, "bearer-secret-token-5150", "cookie-secret-4711", "xsrf-secret-0815", "apikey-secret-1234567890",
         "sessiontokensecret",
         "sk-proj-openai-secret-abcdef", "jupyter-token-secret-9999", "dXNlcjpwcm94eS1wYXNzd29yZA==",
         "querytokensecret", "tok-secret-77"]

#: One request per HTTP-borne protocol, on its own API paths (method, path, body).
REQUESTS = [
    ("POST", "/v2/models/resnet/infer", b'{"inputs": []}'),  # triton
    ("PUT", "/models-bucket/resnet.pt", b"\x80\x02}q\x00."),  # s3
    ("POST", "/v1/chat/completions", b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'),  # llm
    ("POST", "/get-online-features", b'{"features": ["a:b"], "entities": {"id": [1]}}'),  # feast
    ("POST", "/api/jobs/", b'{"entrypoint": "python x.py"}'),  # ray
    ("POST", "/models?url=https://user:pw-secret@h/x.mar", b""),  # torchserve
    ("POST", "/api/2.0/mlflow/runs/create", b'{"experiment_id": "1"}'),  # mlflow
    ("POST", "/api/pull", b'{"name": "llama3"}'),  # ollama
    ("GET", "/api/contents/notebook.ipynb", b""),  # jupyter
    ("GET", "/plain/page", b""),  # http
]


def _request(method: str, path: str, body: bytes) -> bytes:
    secrets = dict(SECRETS, authorization=SIGV4) if path.startswith("/models-bucket") else SECRETS  # S3 signs
    headers = "".join(f"{name}: {value}\r\n" for name, value in secrets.items())
    sep = "&" if "?" in path else "?"
    return (f"{method} {path}{sep}{QUERY} HTTP/1.1\r\nHost: models.internal\r\n{headers}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def _assert_clean(sink: RecordCheck) -> str:
    text = "\n".join(json.dumps(r, ensure_ascii=False) for r in sink.records)
    for leak in [*LEAKS, "pw-secret"]:
        assert leak not in text, f"{leak} reached EVE"
    return text


def test_no_secret_in_any_http_borne_record():
    response = (b"HTTP/1.1 200 OK\r\nSet-Cookie: session=setcookie-secret-31337; HttpOnly\r\n"
                b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    chunks = []
    for method, path, body in REQUESTS:
        chunks += [(0, _request(method, path, body)), (1, response)]
    sink = RecordCheck(shipped_engine(), keep=True)
    drive_session(Http1Session, iter(chunks), sink, http=True)
    text = _assert_clean(sink)
    assert "setcookie-secret-31337" not in text
    kinds = {r["event_type"] for r in sink.records}
    assert {"triton", "s3", "llm", "feast", "ray", "torchserve", "mlflow", "ollama", "jupyter", "http"} <= kinds
    assert "[redacted sha256:" in text and "Signature=[redacted]" in text  # hashed, SigV4 scope kept
    assert "Credential=AKIAIOSFODNN7EXAMPLE/20240101/us-east-1/s3/aws4_request" in text


def test_no_secret_in_grpc_records_over_http2():
    wire = H2Wire()
    wire.grpc(1, GrpcCall(path=f"/inference.GRPCInferenceService/ModelInfer?{QUERY}", requests=[b"\x0a\x01m"],
                          responses=[b""], extra_headers=[(k.encode(), v.encode()) for k, v in SECRETS.items()
                                                          if k != "proxy-authorization"]))
    sink = RecordCheck(shipped_engine(), keep=True)
    drive_session(Http2Session, iter(list(wire.chunks)), sink, http=True)
    _assert_clean(sink)
    (record,) = [r for r in sink.records if "grpc" in r]
    assert record["grpc"]["path"].endswith("X-Amz-Security-Token=[redacted]&token=[redacted]")


def test_certs_writes_private_keys_0600(tmp_path):
    subprocess.run([sys.executable, "-m", "inspector.cli", "certs", "--out", str(tmp_path), "--name", "m.svc",
                    "--client", "deployer"], check=True, capture_output=True)
    keys = sorted(p for p in tmp_path.iterdir() if "key" in p.name)
    assert keys
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key.name


def test_metrics_and_health_default_to_localhost():
    assert DEFAULT_METRICS.startswith("127.0.0.1:")


@pytest.mark.parametrize("header", ["authorization", "cookie", "x-api-key"])
def test_secret_headers_on_their_own_are_hashed(header):
    sink = RecordCheck(keep=True)
    drive_session(Http1Session, iter([(0, f"GET /x HTTP/1.1\r\nHost: a\r\n{header}: only-secret-42\r\n\r\n".encode())]),
                  sink, http=True)
    (record,) = sink.records
    (value,) = [h["value"] for h in record["http"]["request_headers"] if h["name"] == header]
    assert "only-secret-42" not in value and "[redacted sha256:" in value
