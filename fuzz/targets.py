"""The fuzz targets: one entry per parser, each `run(data)` feeding it one input.

A target must never raise: any exception is a crash (the parsers' contract is that peer and
capture input becomes anomalies). Exceptions that are a documented part of an internal API are
caught inside the target, by name: `CaptureFormatError` is caught by `Analyzer.analyze_file`
itself, `HpackError` by the HTTP/2 session (the HPACK target calls the decoder directly).

Half of the inputs of the stream targets (odd lengths) run under `TIGHT_LIMITS`, so the caps,
evictions and truncation paths are fuzzed too, not only the defaults.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from fuzz import seeds
from fuzz.harness import CLIENT_IP, SERVER_IP, RecordCheck, decode_chunks, run_router, run_session, shipped_engine
from inspector.analyze import Analyzer
from inspector.capture.flows import FlowTable
from inspector.capture.hpack import HpackDecoder, HpackError
from inspector.capture.http1 import Http1Session
from inspector.capture.http2 import Http2Session
from inspector.capture.packet import IPPROTO_TCP, Packet
from inspector.capture.reader import CaptureFormatError, CaptureReader
from inspector.capture.router import StreamRouter
from inspector.limits import DEFAULT_LIMITS, Limits
from inspector.parallel import ShardAnalyzer, feed_capture, hash_placement
from inspector.protocols import nccl, tcpstore
from inspector.protocols.grpc import GrpcFramer
from inspector.protocols.modelfile import inspect_model
from inspector.protocols.protobuf import read_varint, safe_decode, try_decode_message

TIGHT_LIMITS = Limits(
    max_fragment_sets=4, max_fragment_total_bytes=8192, max_flows=3, max_out_of_order_bytes=4096,
    max_out_of_order_segments=8, max_header_bytes=1024, max_headers=16, max_header_list_size=2048,
    max_hpack_table_size=256, max_continuation_frames=4, max_streams_per_connection=4, max_pending_exchanges=4,
    max_chunk_line=64, body_keep_bytes=512, max_decompressed_bytes=4096, max_decompression_ratio=20,
    max_grpc_message_bytes=4096, grpc_keep_messages=2, grpc_keep_message_bytes=256, max_protobuf_depth=3,
    max_protobuf_fields=64, tcpstore_max_key_bytes=64, tcpstore_max_value_bytes=4096, tcpstore_max_keys=8,
    tcpstore_value_keep_bytes=256, nccl_max_message_bytes=4096, tls_max_handshake_bytes=2048,
    tls_max_pending_bytes=4096,
)


def limits_for(data: bytes) -> Limits:
    return TIGHT_LIMITS if len(data) & 1 else DEFAULT_LIMITS


@dataclass(frozen=True)
class Target:
    name: str
    parser: str  # what it exercises, for the report
    run: Callable[[bytes], Counter[str]]
    seeds: Callable[[], list[bytes]]


# --- capture files ----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _scratch_file() -> Path:
    directory = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())
    fd, name = tempfile.mkstemp(prefix="inspector-fuzz-", suffix=".pcap", dir=directory)
    os.close(fd)
    return Path(name)


def run_capture(data: bytes) -> Counter[str]:
    """The bytes as a capture file through `Analyzer.analyze_file`: reader, link and IP
    decoding, fragments, flows, reassembly, detection, every parser, records."""
    path = _scratch_file()
    path.write_bytes(data)
    sink = RecordCheck()
    # contain_errors off: a parser's exception must reach the harness as a crash, not become the
    # `parser_error` anomaly a run writes
    analyzer = Analyzer(lambda record: sink.emit(record, 0.0), limits=limits_for(data), contain_errors=False)
    analyzer.analyze_file(path)
    # the same file read for a flow-sharded run (the record loop's routing) and analyzed as its
    # worker 1 sees it
    messages: list[tuple] = []
    feed_capture(path, 2, lambda index, message: messages.append(message) if index == 1 else None,
                 hash_placement(2, limits_for(data)))
    ShardAnalyzer(1, 2, lambda batch: None, frozenset(), None, feed=iter(messages).__next__,
                  limits=limits_for(data), contain_errors=False).analyze_files([path])
    try:  # the reader on its own, from a file object, as the library API offers it
        with CaptureReader.from_fileobj(io.BytesIO(data), "fuzz") as reader:
            for _ in reader:
                pass
    except CaptureFormatError:
        pass
    return sink.event_types


# --- reassembly -------------------------------------------------------------------------------

_ISN = (0xFFFFF000, 0x7FFFFFF0)  # both sides wrap or cross the sign bit early


def run_reassembly(data: bytes) -> Counter[str]:
    """Segments (see `seeds.encode_segments`) through the flow table and TCP reassembly into
    stream routers. Bits 1-2 of the direction byte pick one of four connections."""
    limits = limits_for(data)
    sink = RecordCheck()
    table = FlowTable(limits, lambda flow: StreamRouter(flow, sink, limits, {}) if flow.proto == IPPROTO_TCP else None,
                      lambda flow: None)
    pos = 0
    end = len(data)
    ts = 1_700_000_000.0
    acked = [0, 0]
    while pos + seeds.SEGMENT.size <= end:
        flags, selector, offset, length = seeds.SEGMENT.unpack_from(data, pos)
        pos += seeds.SEGMENT.size
        payload = data[pos:pos + length]
        pos += length
        direction = selector & 1
        connection = (selector >> 1) & 3
        ts += 0.25 if selector & 0x80 else 0.001
        sport, dport = 40000 + connection, 8000
        src, dst = (CLIENT_IP, SERVER_IP) if direction == 0 else (SERVER_IP, CLIENT_IP)
        if direction:
            sport, dport = dport, sport
        acked[direction] = max(acked[direction], offset + len(payload))
        seq = (_ISN[direction] + offset) & 0xFFFFFFFF
        ack = (_ISN[1 - direction] + acked[1 - direction]) & 0xFFFFFFFF
        table.packet(Packet(ts, 0, 4, src, dst, IPPROTO_TCP, sport, dport, flags, seq, ack, payload,
                            54 + len(payload)))
    table.finish()
    return sink.event_types


# --- HTTP and HPACK ---------------------------------------------------------------------------


def run_http1(data: bytes) -> Counter[str]:
    sink = RecordCheck()
    run_session(Http1Session, data, sink, limits_for(data), http=True)
    return sink.event_types


def run_http2(data: bytes) -> Counter[str]:
    sink = RecordCheck()
    run_session(Http2Session, data, sink, limits_for(data), http=True)
    return sink.event_types


def run_hpack(data: bytes) -> Counter[str]:
    """Each chunk a header block for one decoder (dynamic table state carries over); a chunk
    from the other direction first sets the table size limit from its first two bytes."""
    limits = limits_for(data)
    decoder = HpackDecoder(limits.max_hpack_table_size, limits.max_header_list_size)
    reached: Counter[str] = Counter()
    for direction, block in decode_chunks(data):
        if direction:
            decoder.max_table_size = int.from_bytes(block[:2], "big")
            block = block[2:]
        try:
            headers = decoder.decode(block)
        except HpackError as exc:
            reached[type(exc).__name__] += 1
            continue
        reached["block"] += 1
        reached["headers"] += len(headers)
        assert decoder.table_used <= decoder.table_size
    return reached


# --- gRPC and protobuf ------------------------------------------------------------------------


def run_grpc_framing(data: bytes) -> Counter[str]:
    """A mode byte (`seeds.GRPC_MODES`: encoding, web, text), then body chunks for a framer; the
    kept payloads through the schema-less protobuf decoder as the Triton layer does."""
    if not data:
        return Counter()
    limits = limits_for(data)
    framer = GrpcFramer(limits, **seeds.GRPC_MODES[data[0] % len(seeds.GRPC_MODES)])
    ts = 1.0
    for _, piece in decode_chunks(data[1:]):
        ts += 0.001
        framer.feed(piece, ts)
    framer.end(ts)
    reached: Counter[str] = Counter(messages=framer.message_count, anomalies=len(framer.anomalies))
    assert len(framer.messages) <= limits.grpc_keep_messages
    for message in framer.messages:
        payload = getattr(message, "payload", b"") or b""
        assert len(payload) <= limits.grpc_keep_message_bytes  # decompressed or not, the kept prefix is capped
        if payload and try_decode_message(payload, limits=limits) is not None:
            reached["protobuf"] += 1
    return reached


def run_protobuf(data: bytes) -> Counter[str]:
    reached: Counter[str] = Counter()
    fields, _ = safe_decode(data)
    reached["flat" if fields is not None else "flat_rejected"] += 1
    for limits in (DEFAULT_LIMITS, TIGHT_LIMITS):
        if try_decode_message(data, limits=limits) is not None:
            reached["tree"] += 1
    pos = 0
    for _ in range(4):  # varints at a few offsets: the error is the documented ProtobufError
        if pos >= len(data):
            break
        try:
            _, pos = read_varint(data, pos)
        except ValueError:
            pos += 1
    return reached


# --- ML protocols -----------------------------------------------------------------------------


def _router_target(dport: int) -> Callable[[bytes], Counter[str]]:
    def run(data: bytes) -> Counter[str]:
        sink = RecordCheck(shipped_engine())
        run_router(data, sink, limits_for(data), dport=dport)
        return sink.event_types

    return run


def _raw_session(module) -> Callable[[bytes], Counter[str]]:
    def run(data: bytes) -> Counter[str]:
        sink = RecordCheck(shipped_engine())
        run_session(module.Session, data, sink, limits_for(data))
        return sink.event_types

    return run


def run_model_file(data: bytes) -> Counter[str]:
    """A name byte (`seeds.MODEL_NAMES`, bit 7: the body is the whole object), then the first
    bytes of a model object: format detection, archive listing, pickle scan."""
    if not data:
        return Counter()
    name = seeds.MODEL_NAMES[(data[0] & 0x7F) % len(seeds.MODEL_NAMES)]
    found = inspect_model(data[1:], name=name, body_complete=bool(data[0] & 0x80), total_size=len(data) - 1)
    if found is None:
        return Counter(none=1)
    from fuzz.harness import serialize_like_eve

    serialize_like_eve(found.record())
    return Counter({found.format: 1})


def _conv(*relatives: str) -> Callable[[], list[bytes]]:
    return lambda: seeds.conversation_seeds(*relatives)


_TARGET_LIST = [
    Target("capture_reader", "pcap/pcapng/gzip reader, link/IP decoding, fragments, whole offline pipeline",
           run_capture, seeds.capture_seeds),
    Target("reassembly", "flow table, TCP reassembly, stream router", run_reassembly, seeds.segment_seeds),
    Target("http1", "HTTP/1 session, exchange builder, content decoding, HTTP layers", run_http1,
           _conv("core/http1.pcap", "clients/llm-malformed.pcap", "clients/s3.pcap", "clients/triton_rest.pcap")),
    Target("http2", "HTTP/2 session with HPACK, exchange builder, gRPC observers, HTTP layers", run_http2,
           _conv("core/http2.pcap", "core/grpc.pcap")),
    Target("hpack", "HPACK decoder (dynamic table, Huffman, size updates)", run_hpack, seeds.hpack_seeds),
    Target("grpc_framing", "gRPC length-prefixed framing, compression, gRPC-Web(-text)", run_grpc_framing,
           seeds.grpc_seeds),
    Target("protobuf", "schema-less protobuf decoder", run_protobuf, seeds.protobuf_seeds),
    Target("triton_rest", "Triton/KServe v2 REST layer (+ rules)", _router_target(8000),
           _conv("clients/triton_rest.pcap")),
    Target("triton_grpc", "Triton gRPC layer over HTTP/2 (+ rules)", _router_target(8001),
           _conv("clients/triton_grpc.pcap")),
    Target("s3", "S3 layer, aws-chunked, model files in transit (+ rules)", _router_target(9000),
           _conv("clients/s3.pcap")),
    Target("llm", "OpenAI-compatible / TGI / Ollama LLM layer (+ rules)", _router_target(8000),
           _conv("clients/llm.pcap", "clients/llm-malformed.pcap")),
    Target("feast", "Feast layer (+ rules)", _router_target(6566), _conv("clients/feast.pcap")),
    Target("ray", "Ray layer (+ rules)", _router_target(8265), _conv("clients/ray.pcap")),
    Target("torchserve", "TorchServe layer (+ rules)", _router_target(8080), _conv("clients/torchserve.pcap")),
    Target("mlflow", "MLflow layer (+ rules)", _router_target(5000), _conv("clients/mlflow.pcap")),
    Target("ollama", "Ollama layer (+ rules)", _router_target(11434), _conv("clients/ollama.pcap")),
    Target("jupyter", "Jupyter layer (+ rules)", _router_target(8888), _conv("clients/jupyter.pcap")),
    Target("tcpstore", "PyTorch TCPStore session (+ rules)", _raw_session(tcpstore),
           _conv("clients/tcpstore_libuv.pcap", "clients/tcpstore_legacy.pcap", "crafted/tcpstore_old.pcap",
                 "crafted/tcpstore_anomalies.pcap")),
    Target("nccl", "NCCL socket/bootstrap/proxy/RAS session (+ rules)", _raw_session(nccl),
           _conv("crafted/nccl_bootstrap.pcap", "crafted/nccl_sockets.pcap", "crafted/nccl_malformed.pcap")),
    Target("tls", "TLS records, ClientHello/ServerHello, JA4/JA3 (router)", _router_target(8443), seeds.tls_seeds),
    Target("model_files", "model format detection, zip listing, pickle scan", run_model_file,
           seeds.model_file_seeds),
]

TARGETS: dict[str, Target] = {target.name: target for target in _TARGET_LIST}
