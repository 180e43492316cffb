"""Captures that fire each shipped rule, and their near misses, made by code (tests/signatures/).

For every rule stem in `FIXTURES` this writes `tests/signatures/<stem>/positive/` (traffic that
must fire the rule) and `negative/` (the benign twin: the same traffic one step short of the
attack), each with `input.pcap` and a suricata-verify style `test.yaml`, plus a site config
where the rule depends on site variables. Traffic is built like the core captures: real TCP
conversations (inspector.lab.craft) carrying bytes from real libraries (h2, hpack, gzip).

    python -m inspector.lab.rulecaps tests/signatures
"""

from __future__ import annotations

import gzip
import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpack import Encoder
from hyperframe.frame import ContinuationFrame, HeadersFrame

from inspector.lab.corecaps import EPOCH, TRITON, model_infer_request, model_infer_response
from inspector.lab.craft import CLIENT, SERVER, Capture, TcpConversation
from inspector.lab.h2wire import GrpcCall, H2Wire, grpc_frame
from inspector.protocols.protobuf import encode_field

OUTSIDE = "198.51.100.23"  # a client outside every site network
ADMIN = "10.99.0.5"  # inside ADMIN_NETS of the fixture configs
SERVER_IP = "10.20.0.5"
ADMIN_CONFIG = {"vars": {"ADMIN_NETS": ["10.99.0.0/24"]}}
RATE_CONFIG = {"vars": {"INFERENCE_RATE_COUNT": 20, "INFERENCE_RATE_WINDOW": "10s"}}

Build = Callable[[Capture, random.Random], None]


@dataclass
class Fixture:
    sid: int
    positive: Build
    negative: Build
    #: (event_type, records in the positive, records in the negative): the near miss is parsed.
    parsed: tuple[str, int, int] = ("triton", 1, 1)
    positive_count: int = 1
    config: dict[str, Any] | None = None
    notes: str = ""


def _conv(cap: Capture, rng: random.Random, client: str = OUTSIDE, port: int = 8000,
          start: float = EPOCH) -> TcpConversation:
    return TcpConversation(cap, (client, rng.randrange(32768, 60999)), (SERVER_IP, port), start,
                           rng).handshake()


def _http(conv: TcpConversation, request: bytes, response: bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
          think: float = 0.002) -> None:
    conv.send(CLIENT, request)
    conv.send(SERVER, response, think=think)


# -- stream -----------------------------------------------------------------------------------


def _overlap(cap: Capture, rng: random.Random, evil: bool) -> None:
    conv = _conv(cap, rng)
    request = b"GET /v2/models/fraud/ready HTTP/1.1\r\nHost: triton\r\n\r\n"
    seq = conv.seq[CLIENT]
    conv.send(CLIENT, request)
    conv.wait(0.0004)
    again = request.replace(b"fraud", b"evil!") if evil else request
    conv._emit(CLIENT, "PA", seq, conv.seq[SERVER], again)  # the retransmission
    conv.send(SERVER, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", think=0.002)
    conv.close()


# -- HTTP -------------------------------------------------------------------------------------


def _smuggling(cap: Capture, rng: random.Random, both: bool) -> None:
    conv = _conv(cap, rng)
    body = b"0\r\n\r\nGET /v2/repository/index HTTP/1.1\r\nHost: triton\r\n\r\n"
    chunked = b"5\r\nhello\r\n0\r\n\r\n"
    if both:
        head = (b"POST /v2/models/m/infer HTTP/1.1\r\nHost: triton\r\nContent-Length: %d\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" % len(body))
        _http(conv, head + body)
    else:
        _http(conv, b"POST /v2/models/m/infer HTTP/1.1\r\nHost: triton\r\nTransfer-Encoding: chunked\r\n\r\n"
              + chunked)
    conv.close()


def _bomb(cap: Capture, rng: random.Random, bomb: bool) -> None:
    conv = _conv(cap, rng)
    if bomb:
        payload = b"\0" * (24 * 1024 * 1024)
    else:  # ordinary JSON: compresses well, nowhere near a bomb's ratio
        payload = json.dumps([{"id": i, "score": rng.random(), "label": f"class-{rng.randrange(1000)}"}
                              for i in range(3000)]).encode()
    packed = gzip.compress(payload, mtime=0)
    _http(conv, b"POST /v2/models/m/infer HTTP/1.1\r\nHost: triton\r\nContent-Type: application/json\r\n"
                b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(packed), packed))
    conv.close()


# -- HTTP/2 -----------------------------------------------------------------------------------


def _continuations(cap: Capture, rng: random.Random, frames: int) -> None:
    """One request whose header block is spread over `frames` CONTINUATION frames."""
    conv = _conv(cap, rng, port=8001)
    wire = H2Wire()
    for side, data in wire.chunks:
        conv.send(side, data)
    headers = [(":method", "GET"), (":scheme", "http"), (":path", "/v2/health/ready"),
               (":authority", "triton:8001")] + [(f"x-pad-{i}", "v" * 40) for i in range(frames)]
    block = Encoder().encode(headers)
    piece = max(1, len(block) // (frames + 1))
    parts = [block[i:i + piece] for i in range(0, len(block), piece)]
    first = HeadersFrame(1, data=parts[0])
    first.flags.add("END_STREAM")
    out = first.serialize()
    for n, part in enumerate(parts[1:], 1):
        frame = ContinuationFrame(1, data=part)
        if n == len(parts) - 1:
            frame.flags.add("END_HEADERS")
        out += frame.serialize()
    conv.send(CLIENT, out)
    conv.close()


# -- gRPC -------------------------------------------------------------------------------------


def _grpc_calls(cap: Capture, rng: random.Random, calls: list[GrpcCall], client: str = OUTSIDE,
                gap: float = 0.0) -> None:
    conv = _conv(cap, rng, client=client, port=8001)
    wire = H2Wire()
    sent = 0
    for n, call in enumerate(calls):
        wire.grpc(1 + 2 * n, call)
        for side, data in wire.chunks[sent:]:
            conv.send(side, data)
        sent = len(wire.chunks)
        if gap:
            conv.wait(gap)
    conv.close()


def _snappy(cap: Capture, rng: random.Random, snappy: bool) -> None:
    """A ModelInfer whose message is compressed with snappy (unreadable) or gzip (readable)."""
    conv = _conv(cap, rng, port=8001)
    wire = H2Wire()
    message = model_infer_request("resnet", [1, 3, 8, 8])
    encoding = b"snappy" if snappy else b"gzip"
    body = (b"\x01" + len(opaque := rng.randbytes(200)).to_bytes(4, "big") + opaque if snappy
            else grpc_frame(message, compress=True))
    headers = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", (TRITON + "ModelInfer").encode()),
               (b":authority", b"triton:8001"), (b"content-type", b"application/grpc"), (b"te", b"trailers"),
               (b"grpc-encoding", encoding)]
    wire.request(1, headers, body)
    wire.respond(1, [(b":status", b"200"), (b"content-type", b"application/grpc")],
                 grpc_frame(model_infer_response("resnet", [1, 10])), trailers=[(b"grpc-status", b"0")])
    for side, data in wire.chunks:
        conv.send(side, data)
    conv.close()


def _failed_calls(cap: Capture, rng: random.Random, failures: int) -> None:
    calls = [GrpcCall(TRITON + "ModelMetadata", [encode_field(1, f"model-{i}")], [], status=5,
                      message=f"Request for unknown model: 'model-{i}' is not found") for i in range(failures)]
    _grpc_calls(cap, rng, calls, gap=0.2)


def _management(cap: Capture, rng: random.Random, client: str) -> None:
    calls = [GrpcCall(TRITON + "LogSettings", [encode_field(1, encode_field(1, "log_file")
                                                            + encode_field(2, encode_field(3, "/root/.bashrc")))],
                      [b""]),
             GrpcCall(TRITON + "ModelInfer", [model_infer_request("resnet", [1, 4])],
                      [model_infer_response("resnet", [1, 4])])]
    _grpc_calls(cap, rng, calls, client=client)


def _infer_rate(cap: Capture, rng: random.Random, spacing: float) -> None:
    calls = [GrpcCall(TRITON + "ModelInfer", [model_infer_request("resnet", [1, 4], request_id=str(i))],
                      [model_infer_response("resnet", [1, 4])]) for i in range(25)]
    _grpc_calls(cap, rng, calls, gap=spacing)


# -- Triton REST ------------------------------------------------------------------------------


def _rest_logging(cap: Capture, rng: random.Random, write: bool) -> None:
    conv = _conv(cap, rng)
    if write:
        body = json.dumps({"log_file": "/root/.bashrc", "log_info": True}).encode()
        request = (b"POST /v2/logging HTTP/1.1\r\nHost: triton:8000\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    else:
        request = b"GET /v2/logging HTTP/1.1\r\nHost: triton:8000\r\n\r\n"
    settings = b'{"log_file":"","log_info":true,"log_warning":true,"log_error":true}'
    _http(conv, request, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
          % (len(settings), settings))
    conv.close()


def _rest_infer_rate(cap: Capture, rng: random.Random, spacing: float) -> None:
    conv = _conv(cap, rng)
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                   "data": [0.1, 0.2, 0.3, 0.4]}]}).encode()
    for _ in range(25):
        _http(conv, b"POST /v2/models/fraud/infer HTTP/1.1\r\nHost: kserve\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
              b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        conv.wait(spacing)
    conv.close()


FIXTURES: dict[str, Fixture] = {
    "stream_overlap_mismatch": Fixture(
        1002001, lambda c, r: _overlap(c, r, True), lambda c, r: _overlap(c, r, False),
        notes="A request retransmitted with one word changed; the near miss retransmits it unchanged."),
    "http_request_smuggling": Fixture(
        2100001, lambda c, r: _smuggling(c, r, True), lambda c, r: _smuggling(c, r, False),
        parsed=("triton", 2, 1),
        notes="A POST with both Content-Length and Transfer-Encoding; the near miss is chunked only."),
    "http_decompression_bomb": Fixture(
        2100002, lambda c, r: _bomb(c, r, True), lambda c, r: _bomb(c, r, False),
        notes="24 MiB of zeros gzip'd in a request body; the near miss gzips 190 KB of JSON."),
    "http2_header_flood": Fixture(
        2110001, lambda c, r: _continuations(c, r, 400), lambda c, r: _continuations(c, r, 6),
        parsed=("triton", 0, 1),
        notes="A header block split over 400 CONTINUATION frames; the near miss uses 6."),
    "grpc_uninspectable_compression": Fixture(
        2200001, lambda c, r: _snappy(c, r, True), lambda c, r: _snappy(c, r, False),
        parsed=("triton", 1, 1),
        notes="ModelInfer with grpc-encoding snappy; the near miss is gzip, which is inspected."),
    "grpc_failed_call_burst": Fixture(
        2200002, lambda c, r: _failed_calls(c, r, 50), lambda c, r: _failed_calls(c, r, 49),
        parsed=("triton", 50, 49),
        notes="50 NOT_FOUND answers within a minute; the near miss stops at 49 (count 50/60s)."),
    "triton_grpc_management_outside_admin": Fixture(
        3100001, lambda c, r: _management(c, r, OUTSIDE), lambda c, r: _management(c, r, ADMIN),
        parsed=("triton", 2, 2),
        config=ADMIN_CONFIG,
        notes="LogSettings(log_file) then ModelInfer, from outside ADMIN_NETS; the near miss comes from inside."),
    "triton_rest_management_outside_admin": Fixture(
        3100002, lambda c, r: _rest_logging(c, r, True), lambda c, r: _rest_logging(c, r, False),
        config=ADMIN_CONFIG,
        notes="POST /v2/logging setting log_file from outside ADMIN_NETS; the near miss only reads it (GET)."),
    "triton_grpc_inference_rate": Fixture(
        3100003, lambda c, r: _infer_rate(c, r, 0.1), lambda c, r: _infer_rate(c, r, 0.6),
        parsed=("triton", 25, 25),
        config=RATE_CONFIG,
        notes="25 ModelInfer calls 0.1 s apart (count 20 in 10 s); the near miss spaces them 0.6 s apart."),
    "triton_rest_inference_rate": Fixture(
        3100004, lambda c, r: _rest_infer_rate(c, r, 0.1), lambda c, r: _rest_infer_rate(c, r, 0.6),
        parsed=("triton", 25, 25),
        config=RATE_CONFIG,
        notes="25 KServe infer POSTs 0.1 s apart (count 20 in 10 s); the near miss spaces them 0.6 s apart."),
}


def _yaml_config(config: dict[str, Any]) -> str:
    lines = ["# Site values for this fixture (laid over the shipped default config).", "vars:"]
    for name, value in config["vars"].items():
        lines.append(f"  {name}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def write_fixture(root: Path, stem: str, fixture: Fixture, rule_path: str) -> None:
    event_type, parsed_positive, parsed_negative = fixture.parsed
    for kind, build, count, parsed in (("positive", fixture.positive, fixture.positive_count, parsed_positive),
                                       ("negative", fixture.negative, 0, parsed_negative)):
        folder = root / stem / kind
        folder.mkdir(parents=True, exist_ok=True)
        cap = Capture()
        build(cap, random.Random(f"{stem}:{kind}"))
        cap.write(folder / "input.pcap")
        lines = [f"# {kind} fixture for {stem} (sid {fixture.sid}); made by inspector.lab.rulecaps",
                 "pcap: input.pcap",
                 f"rules: [../../../../{rule_path}]"]
        if fixture.config:
            (folder / "site.yaml").write_text(_yaml_config(fixture.config))
            lines.append("config: site.yaml")
        lines += ["checks:",
                  f"  - filter: {{count: {count}, match: {{event_type: alert, alert.signature_id: {fixture.sid}}}}}",
                  f"  - filter: {{count: {parsed}, match: {{event_type: {event_type}}}}}"]
        (folder / "test.yaml").write_text("\n".join(lines) + "\n")
    (root / stem / "README.md").write_text(
        f"# {stem} (sid {fixture.sid})\n\n{fixture.notes}\n\n"
        "Both captures are made by `python -m inspector.lab.rulecaps tests/signatures` "
        "(deterministic: the same bytes every run).\n")


def rule_paths(signatures: Path) -> dict[str, str]:
    """Rule stem -> path relative to the repository root."""
    return {p.stem: str(p.relative_to(signatures.parent)) for p in sorted(signatures.rglob("*.yml"))}


def generate(root: str | Path, signatures: str | Path = "signatures") -> None:
    root, signatures = Path(root), Path(signatures)
    paths = rule_paths(signatures)
    for stem, fixture in FIXTURES.items():
        write_fixture(root, stem, fixture, paths[stem])


if __name__ == "__main__":
    generate(sys.argv[1] if len(sys.argv) > 1 else "tests/signatures")
