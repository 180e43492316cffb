"""The shipped core captures (pcaps/core/) and their ground truth, made by code, reproducibly.

Each capture exercises one part of the offline path with traffic a real stack would produce:
HTTP/1 framing, HTTP/2 (prior knowledge and h2c upgrade, via the h2 library), gRPC calls of
every shape (with Triton-style protobuf messages), and TCP faults (reordering, retransmission,
an overlap carrying different bytes, a capture gap, a connection picked up mid-stream).

The truth file lists, per capture, what the generator put on the wire: transactions (as the
record fields they must produce), the anomalies it provoked, and the flow count. Tests analyze
the committed captures and compare; regenerating with the same seed gives identical bytes.

    python -m inspector.lab.corecaps pcaps/core
"""

from __future__ import annotations

import base64
import gzip
import json
import random
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inspector.lab.craft import CLIENT, SERVER, Capture, TcpConversation, generate_captures
from inspector.lab.h2wire import GrpcCall, H2Wire
from inspector.protocols.protobuf import encode_field, encode_varint

EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z
TRITON = "/inference.GRPCInferenceService/"

Truth = dict[str, Any]


#: Bytes per element of Triton datatypes (BYTES has no fixed size).
DATATYPE_BYTES = {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2,
                  "UINT32": 4, "INT32": 4, "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8}


def model_infer_request(model: str, shape: list[int], datatype: str = "FP32", request_id: str = "") -> bytes:
    """A Triton ModelInferRequest (field numbers from grpc_service.proto) with raw contents."""
    packed_shape = b"".join(encode_varint(d) for d in shape)
    tensor = (encode_field(1, "INPUT0") + encode_field(2, datatype) + encode_field(3, packed_shape))
    elements = 1
    for d in shape:
        elements *= d
    raw = bytes(DATATYPE_BYTES[datatype] * elements)
    message = encode_field(1, model) + encode_field(2, "1")
    if request_id:
        message += encode_field(3, request_id)
    return message + encode_field(5, tensor) + encode_field(6, encode_field(1, "OUTPUT0")) + encode_field(7, raw)


def model_infer_response(model: str, shape: list[int]) -> bytes:
    packed_shape = b"".join(encode_varint(d) for d in shape)
    tensor = encode_field(1, "OUTPUT0") + encode_field(2, "FP32") + encode_field(3, packed_shape)
    elements = 1
    for d in shape:
        elements *= d
    return (encode_field(1, model) + encode_field(2, "1") + encode_field(5, tensor)
            + encode_field(6, bytes(4 * elements)))


def _conversation(cap: Capture, rng: random.Random, client: str, server: str, port: int, start: float,
                  **kw: Any) -> TcpConversation:
    return TcpConversation(cap, (client, rng.randrange(32768, 60999)), (server, port), start, rng, **kw)


def _send_h2(conv: TcpConversation, wire: H2Wire, start: int = 0, **faults: Any) -> int:
    """Send wire chunks from `start` on; returns the index reached."""
    for side, data in wire.chunks[start:]:
        conv.send(side, data, **faults)
    return len(wire.chunks)


def _tx(event_type: str, **fields: Any) -> dict[str, Any]:
    return {"event_type": event_type, **{k.replace("__", "."): v for k, v in fields.items()}}


# -- HTTP/1 ---------------------------------------------------------------------------------


def http1_capture(cap: Capture, rng: random.Random) -> Truth:
    txs = []
    conv = _conversation(cap, rng, "10.10.1.20", "10.20.0.5", 8000, EPOCH).handshake()
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32",
                                   "data": [0.1, 0.2, 0.3, 0.4]}]}).encode()
    conv.send(CLIENT, b"POST /v2/models/resnet/infer HTTP/1.1\r\nHost: triton.local:8000\r\n"
                      b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    answer = b'{"model_name":"resnet","outputs":[{"name":"OUTPUT0","shape":[1,4],"datatype":"FP32"}]}'
    conv.send(SERVER, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
              % (len(answer), answer), think=0.004)
    txs.append(_tx("triton", http__http_method="POST", http__url="/v2/models/resnet/infer", http__status=200,
                   http__hostname="triton.local", http__request_length=len(body), http__length=len(answer)))
    # chunked response with trailers
    conv.send(CLIENT, b"GET /v2/models/resnet/stats HTTP/1.1\r\nHost: triton.local:8000\r\n\r\n", think=0.01)
    chunks = [b'{"model_stats":[', b'{"name":"resnet","inference_count":42}', b"]}"]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\nX-Checksum: abc\r\n\r\n"
    conv.send(SERVER, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
              + chunked, think=0.002)
    txs.append(_tx("triton", http__http_method="GET", http__url="/v2/models/resnet/stats", http__status=200,
                   http__length=sum(len(c) for c in chunks)))
    # gzip-encoded response
    conv.send(CLIENT, b"GET /v2/models/resnet/config HTTP/1.1\r\nHost: triton.local:8000\r\n"
                      b"Accept-Encoding: gzip\r\n\r\n", think=0.01)
    config = json.dumps({"name": "resnet", "platform": "onnxruntime_onnx", "max_batch_size": 8}).encode() * 20
    packed = gzip.compress(config, mtime=0)
    conv.send(SERVER, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(packed), packed), think=0.002)
    txs.append(_tx("triton", http__url="/v2/models/resnet/config", http__status=200, http__length=len(packed)))
    # pipelining: three requests back to back, then three responses
    pipelined = b"".join(b"GET /v2/health/%s HTTP/1.1\r\nHost: triton.local:8000\r\n\r\n" % p
                         for p in (b"live", b"ready", b"live"))
    conv.send(CLIENT, pipelined, think=0.02)
    conv.send(SERVER, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" * 3, think=0.001)
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/health/live"):
        txs.append(_tx("triton", http__url=path, http__status=200, http__length=0))
    # HEAD: a response with Content-Length but no body
    conv.send(CLIENT, b"HEAD /v2 HTTP/1.1\r\nHost: triton.local:8000\r\n\r\n", think=0.01)
    conv.send(SERVER, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 120\r\n\r\n")
    txs.append(_tx("triton", http__http_method="HEAD", http__url="/v2", http__status=200, http__length=0))
    conv.close()

    # 100-continue upload, request body larger than one segment, on a second connection
    conv = _conversation(cap, rng, "10.10.1.21", "10.20.0.5", 8000, EPOCH + 0.5).handshake()
    model_config = json.dumps({"name": "resnet", "platform": "onnxruntime_onnx", "max_batch_size": 8,
                               "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [3, 224, 224]}]})
    weights = base64.b64encode(bytes(range(256)) * 12).decode()
    upload = json.dumps({"parameters": {"config": model_config, "file:1/model.onnx": weights}}).encode()
    conv.send(CLIENT, b"POST /v2/repository/models/resnet/load HTTP/1.1\r\nHost: triton.local:8000\r\n"
                      b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(upload))
    conv.send(SERVER, b"HTTP/1.1 100 Continue\r\n\r\n")
    conv.send(CLIENT, upload)
    conv.send(SERVER, b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 24\r\n"
                      b"Connection: close\r\n\r\n" + b'{"error":"bad model cfg"}'[:24])
    txs.append(_tx("triton", triton__api="model_load", triton__repository__file_overrides=["1/model.onnx"],
                   http__http_method="POST", http__url="/v2/repository/models/resnet/load",
                   http__status=400, http__request_length=len(upload), http__interim_status=[100]))
    conv.close(SERVER)
    return {"transactions": txs, "flows": 2, "anomalies": []}


# -- HTTP/2 ---------------------------------------------------------------------------------


def http2_capture(cap: Capture, rng: random.Random) -> Truth:
    txs = []
    conv = _conversation(cap, rng, "10.10.1.30", "10.20.0.6", 8080, EPOCH + 1).handshake()
    wire = H2Wire()
    base = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"llm.local:8080")]
    wire.request(1, [*base, (b":path", b"/v1/models"), (b"user-agent", b"OpenAI/Python 1.99.0")])
    wire.request(3, [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"llm.local:8080"),
                     (b":path", b"/v1/chat/completions"), (b"content-type", b"application/json"),
                     (b"authorization", b"Bearer sk-test-0123456789abcdef")],
                 json.dumps({"model": "llama-3-8b", "messages": [{"role": "user", "content": "hi"}]}).encode())
    # a request whose header block exceeds the frame size: h2 sends HEADERS + CONTINUATION
    big = [(b"x-trace-%02d" % i, b"v" * 900) for i in range(24)]
    wire.request(5, [*base, (b":path", b"/v1/models/llama-3-8b"), *big])
    models = json.dumps({"data": [{"id": "llama-3-8b"}]}).encode()
    wire.respond(1, [(b":status", b"200"), (b"content-type", b"application/json")], models)
    completion = json.dumps({"choices": [{"message": {"content": "x" * 40000}}]}).encode()
    wire.respond(3, [(b":status", b"200"), (b"content-type", b"application/json")], completion, pad_length=16)
    wire.respond(5, [(b":status", b"404")])
    # a request reset by the client before the answer
    wire.request(7, [*base, (b":path", b"/v1/models/slow")])
    wire.reset(CLIENT, 7)
    _send_h2(conv, wire)
    conv.close()
    txs += [
        _tx("http", http__url="/v1/models", http__status=200, http__protocol="HTTP/2", http__length=len(models),
            http__http2__stream_id=1, http__http_user_agent="OpenAI/Python 1.99.0"),
        _tx("llm", http__url="/v1/chat/completions", http__http_method="POST", http__status=200,
            http__length=len(completion), http__http2__stream_id=3),
        _tx("http", http__url="/v1/models/llama-3-8b", http__status=404, http__http2__stream_id=5),
        _tx("http", http__url="/v1/models/slow", http__http2__stream_id=7, http__http2__reset_code=8),
    ]

    # h2c upgrade from HTTP/1.1
    conv = _conversation(cap, rng, "10.10.1.31", "10.20.0.6", 8080, EPOCH + 1.5).handshake()
    wire = H2Wire(upgraded=True)
    settings = wire.upgrade_settings or b""
    token = base64.urlsafe_b64encode(settings).rstrip(b"=")
    conv.send(CLIENT, b"GET /v1/health HTTP/1.1\r\nHost: llm.local:8080\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                      b"Upgrade: h2c\r\nHTTP2-Settings: " + token + b"\r\n\r\n")
    conv.send(SERVER, b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
    wire.server.send_headers(1, [(b":status", b"200"), (b"content-type", b"text/plain")])
    wire.server.send_data(1, b"ok", end_stream=True)
    wire.pump()
    wire.request(3, [*base, (b":path", b"/v1/models")])
    wire.respond(3, [(b":status", b"200")], b"{}")
    _send_h2(conv, wire)
    conv.close()
    txs += [
        _tx("http", http__url="/v1/health", http__status=200, http__interim_status=[101], http__length=2),
        _tx("http", http__url="/v1/models", http__status=200, http__protocol="HTTP/2", http__http2__stream_id=3),
    ]
    return {"transactions": txs, "flows": 2, "anomalies": []}


# -- gRPC -----------------------------------------------------------------------------------


def grpc_capture(cap: Capture, rng: random.Random) -> Truth:
    txs = []
    infer = model_infer_request("resnet", [1, 3, 8, 8], request_id="req-1")
    reply = model_infer_response("resnet", [1, 10])
    calls: list[tuple[GrpcCall, dict[str, Any]]] = [
        (GrpcCall(TRITON + "ServerLive", [b""], [encode_field(1, 1)]), {}),
        (GrpcCall(TRITON + "ModelInfer", [infer], [reply]), {}),
        (GrpcCall(TRITON + "ModelInfer", [infer], [reply], compress_requests=True), {"grpc.encoding": "gzip"}),
        (GrpcCall(TRITON + "ModelStreamInfer", [infer, infer, infer],
                  [encode_field(2, reply)] * 3), {}),
        (GrpcCall(TRITON + "RepositoryModelLoad", [encode_field(2, "resnet")], [], status=7,
                  message="model control disabled", trailers_only=True), {"grpc.trailers_only": True}),
        (GrpcCall(TRITON + "ModelMetadata", [encode_field(1, "missing")], [], status=5,
                  message="Request for unknown model: 'missing' is not found"), {}),
    ]
    conv = _conversation(cap, rng, "10.10.2.40", "10.20.1.7", 8001, EPOCH + 2).handshake()
    wire = H2Wire()
    for n, (call, extra) in enumerate(calls):
        wire.grpc(1 + 2 * n, call)
        method = call.path.rsplit("/", 1)[1]
        request_lengths = [len(gzip.compress(m, mtime=0)) if call.compress_requests else len(m)
                           for m in call.requests]
        txs.append(_tx("triton", grpc__service="inference.GRPCInferenceService", grpc__method=method,
                       grpc__status=call.status, grpc__request__messages=len(call.requests),
                       grpc__request__lengths=request_lengths,
                       grpc__response__messages=len(call.responses),
                       grpc__response__lengths=[len(m) for m in call.responses],
                       http__http2__stream_id=1 + 2 * n, **extra))
    _send_h2(conv, wire)
    conv.close()

    # gRPC over IPv6 on an unusual port, with a large message split across many DATA frames
    conv = _conversation(cap, rng, "fd00:10::41", "fd00:20::8", 443, EPOCH + 3).handshake()
    wire = H2Wire()
    big = model_infer_request("bert", [16, 512], datatype="INT64")
    wire.grpc(1, GrpcCall(TRITON + "ModelInfer", [big], [reply], authority="[fd00:20::8]:443"))
    _send_h2(conv, wire)
    conv.close()
    txs.append(_tx("triton", grpc__method="ModelInfer", grpc__request__lengths=[len(big)], grpc__status=0,
                   src_ip="fd00:10::41", dest_port=443))

    # a deflate-compressed stream on a second connection to the default gRPC example port
    conv = _conversation(cap, rng, "10.10.2.42", "10.20.1.9", 50051, EPOCH + 3.5).handshake()
    wire = H2Wire()
    message = b"\x0a\x05world" * 3
    deflated = zlib.compress(message)
    headers = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/greet.GreetService/Greet"),
               (b":authority", b"greeter:50051"), (b"content-type", b"application/grpc+proto"),
               (b"te", b"trailers"), (b"grpc-encoding", b"deflate")]
    wire.request(1, headers, b"\x01" + len(deflated).to_bytes(4, "big") + deflated)
    wire.respond(1, [(b":status", b"200"), (b"content-type", b"application/grpc")],
                 b"\x00\x00\x00\x00\x07\x0a\x05hello", trailers=[(b"grpc-status", b"0")])
    _send_h2(conv, wire)
    conv.close()
    txs.append(_tx("grpc", grpc__service="greet.GreetService", grpc__method="Greet", grpc__encoding="deflate",
                   grpc__request__compressed=1, grpc__status=0, grpc__response__lengths=[7]))
    return {"transactions": txs, "flows": 3, "anomalies": []}


# -- TCP faults -----------------------------------------------------------------------------


def _kserve_exchange(conv: TcpConversation, model: str, size: int, **faults: Any) -> dict[str, Any]:
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, size], "datatype": "FP32",
                                   "data": [0.5] * size}]}).encode()
    conv.send(CLIENT, b"POST /v2/models/%s/infer HTTP/1.1\r\nHost: kserve.local\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (model.encode(), len(body), body), **faults)
    conv.send(SERVER, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", think=0.003)
    return _tx("triton", http__url=f"/v2/models/{model}/infer", http__status=200, http__request_length=len(body))


def tcp_faults_capture(cap: Capture, rng: random.Random) -> Truth:
    txs = []
    anomalies = []
    # reordered segments and a retransmission: reassembly puts them right, nothing is lost
    conv = _conversation(cap, rng, "10.10.3.50", "10.20.2.8", 8080, EPOCH + 4).handshake()
    txs.append(_kserve_exchange(conv, "reordered", 3000, reorder=True))
    txs.append(_kserve_exchange(conv, "retransmitted", 3000, retransmit=1, think=0.01))
    conv.close()
    # an overlap with different bytes (evasion shape): first copy wins, an anomaly says so
    conv = _conversation(cap, rng, "10.10.3.51", "10.20.2.8", 8080, EPOCH + 4.5).handshake()
    request = b"GET /v2/models/benign/ready HTTP/1.1\r\nHost: kserve.local\r\n\r\n"
    seq = conv.seq[CLIENT]
    conv.send(CLIENT, request)
    conv.wait(0.0005)
    evil = request.replace(b"benign", b"hacked")
    conv._emit(CLIENT, "PA", seq, conv.seq[SERVER], evil)
    conv.send(SERVER, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", think=0.002)
    conv.close()
    txs.append(_tx("triton", http__url="/v2/models/benign/ready", http__status=200))
    anomalies.append("tcp.overlap_mismatch")
    # a segment missing from the capture inside a request body: the exchange is still reported
    conv = _conversation(cap, rng, "10.10.3.52", "10.20.2.8", 8080, EPOCH + 5).handshake()
    txs.append(_tx("triton", http__url="/v2/models/gappy/infer", http__status=200, http__request_complete=False))
    _kserve_exchange(conv, "gappy", 3000, drop=1)
    conv.close()
    # capture starts mid-connection (no handshake), from a low client port that makes the port
    # heuristic pick the wrong side: the request line shows which side is the client
    conv = TcpConversation(cap, ("10.10.3.53", 1000), ("10.20.2.8", 8080), EPOCH + 5.5, rng)
    txs.append(_kserve_exchange(conv, "midstream", 10))
    conv.reset(CLIENT)
    return {"transactions": txs, "flows": 4, "anomalies": anomalies}


CAPTURES: dict[str, Callable[[Capture, random.Random], Truth]] = {
    "http1.pcap": http1_capture,
    "http2.pcap": http2_capture,
    "grpc.pcap": grpc_capture,
    "tcp-faults.pcap": tcp_faults_capture,
}


def generate(out_dir: str | Path, seed: int = 7) -> dict[str, Truth]:
    """Write every core capture and `truth.json` into `out_dir`; returns the truth."""
    return generate_captures(CAPTURES, out_dir, seed, "truth.json")


if __name__ == "__main__":
    generate(sys.argv[1] if len(sys.argv) > 1 else "pcaps/core")
