"""Starting inputs for the fuzz targets, made at run time from real bytes.

Conversations come out of the shipped captures (`pcaps/core`, `pcaps/clients`, `pcaps/crafted`:
real clients on loopback and h2-made traffic); header blocks from the hpack encoder; gRPC bodies
and protobuf messages from tritonclient's generated classes (when installed) and our encoder;
TLS from Python's ssl over memory BIOs; model files from pickle, zipfile and numpy. Each seed
list is capped so one input stays small (the targets run 100,000 times).
"""

from __future__ import annotations

import gzip
import io
import pickle
import random
import ssl
import struct
import zipfile
import zlib
from collections.abc import Iterable
from functools import cache, lru_cache
from pathlib import Path

from fuzz.harness import Chunks, encode_chunks
from inspector.capture.decode import PacketDecoder
from inspector.capture.packet import ACK, IPPROTO_TCP, SYN
from inspector.capture.reader import open_capture
from inspector.limits import DEFAULT_LIMITS
from inspector.protocols.protobuf import encode_message

REPO = Path(__file__).resolve().parents[1]
PCAPS = REPO / "pcaps"

#: Bytes kept of one conversation seed.
CONVERSATION_BYTES = 24 * 1024


def _tcp_packets(path: Path) -> list:
    reader = open_capture(path)
    decoder = PacketDecoder(DEFAULT_LIMITS)
    packets = []
    try:
        for frame in reader:
            packet = decoder.decode(frame)
            if packet is not None and packet.proto == IPPROTO_TCP:
                packets.append(packet)
    finally:
        reader.close()
    return packets


@cache
def conversations(relative: str) -> tuple[Chunks, ...]:
    """Each TCP connection of a shipped capture opened by a SYN, payloads in capture order
    (retransmitted copies dropped), cut at CONVERSATION_BYTES."""
    found: dict[tuple, Chunks] = {}
    next_seq: dict[tuple, int] = {}
    sizes: dict[tuple, int] = {}
    for packet in _tcp_packets(PCAPS / relative):
        forward = (packet.src, packet.sport, packet.dst, packet.dport)
        backward = (packet.dst, packet.dport, packet.src, packet.sport)
        if packet.flags & SYN and not packet.flags & ACK:
            found[forward] = []
            sizes[forward] = 0
        if not packet.payload:
            continue
        key, direction = (forward, 0) if forward in found else (backward, 1) if backward in found else (None, 0)
        if key is None or sizes[key] >= CONVERSATION_BYTES:
            continue
        side = (key, direction)
        if side in next_seq and (packet.seq - next_seq[side]) & 0xFFFFFFFF > 0x7FFFFFFF:
            continue  # a retransmission
        next_seq[side] = (packet.seq + len(packet.payload)) & 0xFFFFFFFF
        found[key].append((direction, bytes(packet.payload)))
        sizes[key] += len(packet.payload)
    return tuple(chunks for chunks in found.values() if chunks)


def conversation_seeds(*relatives: str, limit: int = 40) -> list[bytes]:
    seeds = [encode_chunks(chunks) for relative in relatives for chunks in conversations(relative)]
    return _spread(seeds, limit)


def _spread(seeds: list[bytes], limit: int) -> list[bytes]:
    """At most `limit` distinct seeds, taken evenly through the list."""
    unique = list(dict.fromkeys(seeds))
    if len(unique) <= limit:
        return unique
    step = len(unique) / limit
    return [unique[int(i * step)] for i in range(limit)]


# --- captures (reader target) -------------------------------------------------------------------


def _pcap_prefix(data: bytes, max_bytes: int) -> bytes:
    """A classic pcap cut after the last whole record that fits in `max_bytes`."""
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    pos = 24
    while pos + 16 <= len(data):
        incl = struct.unpack(order + "I", data[pos + 8:pos + 12])[0]
        if pos + 16 + incl > max_bytes:
            break
        pos += 16 + incl
    return data[:pos]


@lru_cache(maxsize=1)
def capture_seeds() -> list[bytes]:
    seeds = []
    for path in sorted(PCAPS.rglob("*.pcap")):
        seeds.append(_pcap_prefix(path.read_bytes(), 6 * 1024))
    formats = [gzip.compress(seeds[0], mtime=0), *_pcapng_seeds(seeds[:4]), *_relinked_seeds(seeds[:2])]
    return _spread(seeds, 40 - len(formats)) + formats


def _relinked_seeds(pcaps: Iterable[bytes]) -> list[bytes]:
    """Ethernet pcaps again under the other link layers a sharded run reads in its record loop
    (Linux cooked SLL and SLL2, one 802.1Q tag) and one it leaves to the decoder (two tags)."""
    from inspector.capture.reader import CaptureReader
    from inspector.lab.craft import RELINK_TYPES, relink, write_pcap

    out = []
    for data in pcaps:
        frames = [(frame.ts, frame.data) for frame in CaptureReader.from_fileobj(io.BytesIO(data), "seed")
                  if frame.linktype == RELINK_TYPES["ethernet"]]
        if not frames:
            continue
        for link in ("sll", "sll2", "vlan", "qinq"):
            written = io.BytesIO()
            write_pcap(written, [(ts, relink(frame, link)) for ts, frame in frames], linktype=RELINK_TYPES[link])
            out.append(written.getvalue())
    return out


def _pcapng_seeds(pcaps: Iterable[bytes]) -> list[bytes]:
    """The same frames as pcapng (section header, interface, enhanced packet blocks), with a
    Decryption Secrets Block in the first and an Interface Statistics Block (drop counters)
    ending each."""
    out = []
    for n, data in enumerate(pcaps):
        order = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
        linktype = struct.unpack(order + "I", data[20:24])[0]
        blocks = [_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)),
                  _block(1, struct.pack("<HHI", linktype, 0, 65535))]
        if n == 0:
            secret = b"CLIENT_RANDOM " + b"00" * 32 + b" " + b"11" * 48 + b"\n"
            blocks.append(_block(0x0A, struct.pack("<II", 0x544C534B, len(secret)) + _pad(secret)))
        pos = 24
        while pos + 16 <= len(data):
            sec, usec, incl, orig = struct.unpack(order + "IIII", data[pos:pos + 16])
            frame = data[pos + 16:pos + 16 + incl]
            stamp = sec * 1_000_000 + usec
            blocks.append(_block(6, struct.pack("<IIIII", 0, stamp >> 32, stamp & 0xFFFFFFFF, len(frame), orig)
                                 + _pad(frame)))
            pos += 16 + incl
        statistics = struct.pack("<HHQHHQ", 4, 8, 1000 + n, 5, 8, 7 + n) + struct.pack("<HH", 0, 0)  # recv, drop
        blocks.append(_block(5, struct.pack("<III", 0, 0, 0) + statistics))
        out.append(b"".join(blocks))
    return out


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _block(block_type: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)


# --- reassembly (segments) ----------------------------------------------------------------------

#: One segment of a reassembly input: flags, direction, sequence offset from the side's ISN,
#: payload length, then the payload.
SEGMENT = struct.Struct("!BBIH")


def encode_segments(segments: Iterable[tuple[int, int, int, bytes]]) -> bytes:
    """(flags, direction, sequence offset, payload) segments as one reassembly input."""
    return b"".join(SEGMENT.pack(flags, direction, offset & 0xFFFFFFFF, len(payload)) + payload
                    for flags, direction, offset, payload in segments)


@lru_cache(maxsize=1)
def segment_seeds() -> list[bytes]:
    """The TCP segments of small shipped captures, sequence numbers relative to each side's ISN."""
    seeds = []
    for relative in ("core/http1.pcap", "core/tcp-faults.pcap", "clients/tcpstore_libuv.pcap",
                     "crafted/nccl_sockets.pcap", "clients/llm-malformed.pcap"):
        packets = _tcp_packets(PCAPS / relative)
        by_flow: dict[frozenset, list] = {}
        for packet in packets:
            by_flow.setdefault(frozenset(((packet.src, packet.sport), (packet.dst, packet.dport))), []).append(packet)
        for flow_packets in list(by_flow.values())[:6]:
            first = flow_packets[0]
            client = (first.src, first.sport)
            isn: dict[int, int] = {}
            segments = []
            for packet in flow_packets[:60]:
                direction = 0 if (packet.src, packet.sport) == client else 1
                base = isn.setdefault(direction, packet.seq)
                segments.append((packet.flags, direction, packet.seq - base, bytes(packet.payload)[:2048]))
            seeds.append(encode_segments(segments))
    return _spread(seeds, 40)


# --- HPACK --------------------------------------------------------------------------------------

_HEADER_LISTS = [
    [(":method", "POST"), (":scheme", "http"), (":path", "/inference.GRPCInferenceService/ModelInfer"),
     (":authority", "triton:8001"), ("content-type", "application/grpc"), ("te", "trailers"),
     ("grpc-encoding", "gzip"), ("user-agent", "grpc-python/1.66.0")],
    [(":status", "200"), ("content-type", "application/grpc"), ("grpc-encoding", "identity")],
    [("grpc-status", "0"), ("grpc-message", "")],
    [(":method", "GET"), (":scheme", "https"), (":path", "/v2/models/resnet/ready?x=1"),
     (":authority", "models.internal"), ("authorization", "Bearer abc.def.ghi"), ("cookie", "session=1; a=b"),
     ("accept-encoding", "gzip, deflate")],
    [(":status", "404"), ("content-length", "1234"), ("x-custom-" + "a" * 40, "v" * 300)],
]


@lru_cache(maxsize=1)
def hpack_seeds() -> list[bytes]:
    """Sequences of header blocks from the hpack library's encoder (one connection each)."""
    import hpack

    seeds = []
    rng = random.Random(7)
    for huffman in (True, False):
        for table_size in (4096, 256, 0):
            encoder = hpack.Encoder()
            encoder.header_table_size = table_size
            blocks = []
            for _ in range(4):
                headers = rng.choice(_HEADER_LISTS)
                blocks.append((0, encoder.encode(headers, huffman=huffman)))
            seeds.append(encode_chunks(blocks))
    return seeds


# --- gRPC and protobuf --------------------------------------------------------------------------


def _grpc_frame(payload: bytes, flag: int = 0) -> bytes:
    return struct.pack("!BI", flag, len(payload)) + payload


@lru_cache(maxsize=1)
def protobuf_seeds() -> list[bytes]:
    """Real Triton messages (tritonclient's generated classes when installed) and nested
    messages from our encoder."""
    seeds = [
        encode_message([(1, "resnet50"), (2, "1"), (3, b"\x08\x01\x10\x02")]),
        encode_message([(1, encode_message([(1, "input0"), (2, "FP32"), (3, 1), (3, 3), (3, 224), (3, 224)])),
                        (7, b"\x00" * 64)]),
        encode_message([(1, 2**63), (2, -1 & 0xFFFFFFFFFFFFFFFF), (5, "text with ü")]),
    ]
    try:
        from tritonclient.grpc import service_pb2
    except ImportError:  # pragma: no cover - tritonclient is a test dependency
        return seeds
    request = service_pb2.ModelInferRequest(model_name="resnet50", model_version="1", id="req-1")
    tensor = request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 3, 4, 4])
    tensor.parameters["binary_data_size"].int64_param = 192
    request.raw_input_contents.append(b"\x00\x00\x80\x3f" * 48)
    request.outputs.add(name="OUTPUT0")
    seeds.append(request.SerializeToString())
    seeds.append(service_pb2.RepositoryModelLoadRequest(model_name="evil", parameters={
        "config": service_pb2.ModelRepositoryParameter(string_param='{"backend":"python"}'),
        "file:1/model.py": service_pb2.ModelRepositoryParameter(bytes_param=b"import os\nos.system('id')\n"),
    }).SerializeToString())
    seeds.append(service_pb2.LogSettingsRequest(settings={
        "log_file": service_pb2.LogSettingsRequest.SettingValue(string_param="/tmp/x.log"),
        "log_info": service_pb2.LogSettingsRequest.SettingValue(bool_param=True),
    }).SerializeToString())
    return seeds


#: gRPC framer modes the first byte of a grpc_framing input selects.
GRPC_MODES = (
    {"encoding": None}, {"encoding": "gzip"}, {"encoding": "deflate"}, {"encoding": "identity"},
    {"encoding": "snappy"}, {"encoding": None, "web": True}, {"encoding": None, "text": True},
    {"encoding": "gzip", "web": True},
)


@lru_cache(maxsize=1)
def grpc_seeds() -> list[bytes]:
    """A mode byte, then the body as chunks: plain, gzip and deflate messages, gRPC-Web trailers,
    gRPC-Web-text (base64)."""
    import base64

    messages = protobuf_seeds()
    seeds = []
    for mode, spec in enumerate(GRPC_MODES):
        body = b""
        for payload in messages[:3]:
            if spec["encoding"] == "gzip":
                body += _grpc_frame(gzip.compress(payload, mtime=0), 1)
            elif spec["encoding"] == "deflate":
                body += _grpc_frame(zlib.compress(payload), 1)
            else:
                body += _grpc_frame(payload)
        if spec.get("web") or spec.get("text"):
            body += _grpc_frame(b"grpc-status: 0\r\ngrpc-message: ok\r\n", 0x80)
        if spec.get("text"):
            body = base64.b64encode(body)
        pieces = [(0, body[i:i + 37]) for i in range(0, len(body), 37)]
        seeds.append(bytes([mode]) + encode_chunks(pieces))
    return seeds


# --- TLS ----------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def tls_seeds() -> list[bytes]:
    """Handshakes between Python's ssl client and server over memory BIOs (TLS 1.2 and 1.3)."""
    import tempfile

    from inspector.live.certs import cert_pem, key_pem, make_ca, make_leaf

    ca, ca_key = make_ca("fuzz CA")
    leaf, leaf_key = make_leaf(ca, ca_key, ["models.internal"], client=False)
    seeds = []
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp, "c.pem"), Path(tmp, "k.pem")
        cert.write_bytes(cert_pem(leaf))
        key.write_bytes(key_pem(leaf_key))
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            client_ctx.check_hostname = False
            client_ctx.verify_mode = ssl.CERT_NONE
            client_ctx.maximum_version = version
            client_ctx.set_alpn_protocols(["h2", "http/1.1"])
            server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            server_ctx.load_cert_chain(cert, key)
            server_ctx.maximum_version = version
            seeds.append(encode_chunks(_memory_handshake(client_ctx, server_ctx)))
    return seeds


def _memory_handshake(client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext) -> Chunks:
    bios = [ssl.MemoryBIO() for _ in range(4)]
    client = client_ctx.wrap_bio(bios[0], bios[1], server_hostname="models.internal")
    server = server_ctx.wrap_bio(bios[2], bios[3], server_side=True)
    chunks: Chunks = []
    for _ in range(8):
        for side, obj, outgoing, peer_in in ((0, client, bios[1], bios[2]), (1, server, bios[3], bios[0])):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
            data = outgoing.read()
            if data:
                chunks.append((side, data))
                peer_in.write(data)
    client.write(b"GET / HTTP/1.1\r\nHost: models.internal\r\n\r\n")
    chunks.append((0, bios[1].read()))
    return chunks


# --- model files --------------------------------------------------------------------------------

#: Object names the first byte of a model_files input selects (the name gives a format too).
MODEL_NAMES = (None, "model.pt", "model.pkl", "weights.bin", "model.safetensors", "model.gguf", "model.onnx",
               "arr.npy", "arr.npz", "model.joblib", "model.h5", "model.keras", "x.txt", "model.ckpt")


class _Exploit:
    def __reduce__(self) -> tuple:
        import os

        return (os.system, ("id",))


@lru_cache(maxsize=1)
def model_file_seeds() -> list[bytes]:
    """A name byte, then the file's first bytes: pickles of every protocol (one calling
    os.system), a torch-style zip, npy/npz, safetensors and GGUF headers."""
    payloads = [pickle.dumps({"w": [1.0, 2.0], "b": b"\x00" * 8}, protocol=p) for p in range(6)]
    payloads.append(pickle.dumps(_Exploit(), protocol=2))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"state": [1, 2, 3]}, protocol=2))
        archive.writestr("archive/version", "3\n")
        archive.writestr("archive/data/0", b"\x00" * 32)
    payloads.append(buf.getvalue())
    try:
        import numpy
    except ImportError:  # pragma: no cover
        numpy = None
    if numpy is not None:
        npy = io.BytesIO()
        numpy.save(npy, numpy.arange(12, dtype="float32").reshape(3, 4))
        payloads.append(npy.getvalue())
        npz = io.BytesIO()
        numpy.savez(npz, a=numpy.zeros(3), b=numpy.array([object()], dtype=object))
        payloads.append(npz.getvalue())
    header = b'{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"__metadata__":{"format":"pt"}}'
    payloads.append(struct.pack("<Q", len(header)) + header + b"\x00" * 16)
    payloads.append(b"GGUF" + struct.pack("<IQQ", 3, 1, 1) + struct.pack("<Q", 4) + b"name"
                    + struct.pack("<I", 8) + struct.pack("<Q", 5) + b"llama")
    return [bytes([n % len(MODEL_NAMES)]) + payload for n, payload in enumerate(payloads)]
