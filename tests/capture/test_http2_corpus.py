"""Http2Session (and the gRPC framer) on real cleartext HTTP/2 captures from the shared corpus.

Expected values come from the corpus ground truth: README.md's gRPC table, arkime's .test file and
tshark 4.0.17's view in _groundtruth/tshark_groundtruth.json. The lead's TCP reassembly is written
in parallel, so these simple captures are reassembled here by sequence number with dpkt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import dpkt
import pytest

from inspector.capture.http2 import PREFACE, Http2Session
from inspector.http import (
    TO_CLIENT,
    TO_SERVER,
    BodyReceived,
    HeadReceived,
    MessageEnded,
    SessionAnomaly,
    SessionEvent,
    header,
)
from inspector.protocols.grpc import GrpcFramer, grpc_observer_for

pytestmark = pytest.mark.corpus

_LINK_DECODERS = {
    dpkt.pcap.DLT_NULL: lambda buf: dpkt.loopback.Loopback(buf).data,
    dpkt.pcap.DLT_EN10MB: lambda buf: dpkt.ethernet.Ethernet(buf).data,
    dpkt.pcap.DLT_LINUX_SLL: lambda buf: dpkt.sll.SLL(buf).data,
}


@dataclass
class Connection:
    """One TCP connection: payload chunks `(ts, direction, bytes)` in capture order, each direction
    in sequence order (retransmissions dropped, out-of-order segments held back)."""

    server_port: int
    chunks: list[tuple[float, int, bytes]] = field(default_factory=list)

    def payload(self, direction: int) -> bytes:
        return b"".join(data for _, d, data in self.chunks if d == direction)


class _Direction:
    def __init__(self) -> None:
        self.next_seq: int | None = None
        self.held: dict[int, bytes] = {}


def tcp_connections(path: Path) -> list[Connection]:
    with path.open("rb") as f:
        pcapng = f.read(4) == b"\n\r\r\n"
        f.seek(0)
        reader = dpkt.pcapng.Reader(f) if pcapng else dpkt.pcap.Reader(f)
        decode = _LINK_DECODERS[reader.datalink()]
        packets = list(reader)
    states: dict[tuple, tuple[Connection, dict[int, _Direction], tuple]] = {}
    for ts, buf in packets:
        ip = decode(buf)
        if not isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6) or not isinstance(ip.data, dpkt.tcp.TCP):
            continue
        tcp = ip.data
        src, dst = (bytes(ip.src), tcp.sport), (bytes(ip.dst), tcp.dport)
        key = tuple(sorted((src, dst)))
        if key not in states:
            # The SYN sender (or else the first sender) is the client.
            client = dst if tcp.flags & dpkt.tcp.TH_SYN and tcp.flags & dpkt.tcp.TH_ACK else src
            server = dst if client == src else src
            states[key] = (Connection(server[1]), {TO_SERVER: _Direction(), TO_CLIENT: _Direction()}, client)
        conn, directions, client = states[key]
        direction = TO_SERVER if src == client else TO_CLIENT
        _deliver(conn, directions[direction], direction, ts, tcp)
    return [conn for conn, _, _ in states.values()]


def _deliver(conn: Connection, state: _Direction, direction: int, ts: float, tcp: dpkt.tcp.TCP) -> None:
    if tcp.flags & dpkt.tcp.TH_SYN:
        state.next_seq = (tcp.seq + 1) & 0xFFFFFFFF
        return
    data = bytes(tcp.data)
    if not data:
        return
    if state.next_seq is None:
        state.next_seq = tcp.seq
    state.held.setdefault(tcp.seq, data)
    progress = True
    while progress:
        progress = False
        for seq, payload in list(state.held.items()):
            offset = (state.next_seq - seq) & 0xFFFFFFFF
            if offset >= 0x80000000:
                continue  # still in the future
            del state.held[seq]
            if offset < len(payload):
                conn.chunks.append((ts, direction, payload[offset:]))
                state.next_seq = (state.next_seq + len(payload) - offset) & 0xFFFFFFFF
                progress = True


# --- running the session -------------------------------------------------------------------------


@dataclass
class Observed:
    events: list[SessionEvent]
    heads: list[HeadReceived]
    anomalies: list[str]
    trailers: dict[int, list[tuple[str, str]]]
    framers: dict[tuple[int, int], GrpcFramer]

    def requests(self) -> list[str]:
        return [f"{h.message.method} {h.message.path}" for h in self.heads if h.direction == TO_SERVER]

    def statuses(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for h in self.heads:
            if h.direction == TO_CLIENT:
                counts[str(h.message.status)] = counts.get(str(h.message.status), 0) + 1
        return counts


def run_connection(conn: Connection) -> Observed:
    """Feed one connection (HTTP/1 upgrade or CONNECT prefix stripped) to an Http2Session."""
    client = conn.payload(TO_SERVER)
    skip = {TO_SERVER: client.find(PREFACE), TO_CLIENT: 0}
    assert skip[TO_SERVER] >= 0
    upgraded = b"upgrade: h2c" in client[:skip[TO_SERVER]].lower()
    server = conn.payload(TO_CLIENT)
    if server.startswith(b"HTTP/1."):
        skip[TO_CLIENT] = server.index(b"\r\n\r\n") + 4
    session = Http2Session(upgraded=upgraded)
    events: list[SessionEvent] = []
    for ts, direction, data in conn.chunks:
        cut = min(skip[direction], len(data))
        skip[direction] -= cut
        events += session.receive_data(direction, data[cut:], ts)
    events += session.receive_eof(TO_SERVER, 0.0) + session.receive_eof(TO_CLIENT, 0.0)
    framers: dict[tuple[int, int], GrpcFramer] = {}
    trailers: dict[int, list[tuple[str, str]]] = {}
    for event in events:
        key = (event.stream_id or 0, event.direction or 0) if not isinstance(event, SessionAnomaly) else None
        if isinstance(event, HeadReceived):
            framer = grpc_observer_for(event.message)
            if framer is not None:
                framers[key] = framer
        elif isinstance(event, BodyReceived) and key in framers:
            framers[key].feed(event.data, event.ts)
        elif isinstance(event, MessageEnded):
            if key in framers:
                framers[key].end(event.ts)
            if event.direction == TO_CLIENT:
                trailers[event.stream_id] = event.trailers
    return Observed(events=events, heads=[e for e in events if isinstance(e, HeadReceived)],
                    anomalies=[e.event for e in events if isinstance(e, SessionAnomaly)],
                    trailers=trailers, framers=framers)


def http2_connections(path: Path) -> list[Observed]:
    return [run_connection(conn) for conn in tcp_connections(path) if PREFACE in conn.payload(TO_SERVER)]


# --- gRPC captures --------------------------------------------------------------------------------

GRPC_GO = [  # corpus README.md, "gRPC ground truth (tshark, decode-as 50051)"
    ("Unary.pcapng", "/greet.GreetService/Greet", [9], [15]),
    ("Server Streaming.pcapng", "/greet.GreetService/GreetManyTimes", [9], [25] * 10),
    ("Client Streaming.pcapng", "/greet.GreetService/LongGreet", [9, 7, 6], [42]),
    ("Bidi Streaming.pcapng", "/greet.GreetService/GreetEveryone", [9, 7, 6], [16, 14, 13]),
]


@pytest.mark.parametrize(("name", "path", "request_lengths", "response_lengths"), GRPC_GO)
def test_grpc_go_captures(corpus_dir: Path, name: str, path: str, request_lengths: list[int],
                          response_lengths: list[int]):
    observed = http2_connections(corpus_dir / "grpc-go-for-professionals" / name)
    assert len(observed) == 1  # Unary.pcapng: the one gRPC connection among unrelated loopback traffic
    (call,) = observed
    assert call.requests() == [f"POST {path}"]
    assert call.statuses() == {"200": 1}
    assert header(call.trailers[1], "grpc-status") == "0"
    assert call.framers[(1, TO_SERVER)].lengths == request_lengths
    assert call.framers[(1, TO_CLIENT)].lengths == response_lengths
    assert call.framers[(1, TO_SERVER)].message_count == len(request_lengths)
    assert call.framers[(1, TO_CLIENT)].message_count == len(response_lengths)
    assert call.anomalies == []
    for framer in call.framers.values():
        assert framer.anomalies == [] and framer.compressed_count == 0


def test_grpc_helloworld_through_connect_proxy(corpus_dir: Path):
    """suricata-verify http2-errorcode: a gRPC call seen on both legs of a CONNECT proxy; the client
    ends with GOAWAY INTERNAL_ERROR. (Values read from the capture's frames: tshark has no
    decode-as for these ports.)"""
    observed = http2_connections(corpus_dir / "suricata-verify" / "http2-errorcode" / "input.pcap")
    assert len(observed) == 2
    for call in observed:
        assert call.requests() == ["POST /helloworld.GreeterService/SayHello"]
        assert call.trailers[1] == [("grpc-status", "0"), ("grpc-message", "OK")]
        assert call.framers[(1, TO_SERVER)].lengths == [7]
        assert call.framers[(1, TO_CLIENT)].lengths == [14]
        assert call.framers[(1, TO_CLIENT)].messages[0].payload == b"\n\x0cHello, world"
        assert call.anomalies == ["goaway_error"]


# --- other cleartext HTTP/2 -----------------------------------------------------------------------


def test_arkime_nghttp2_continuation_and_push(corpus_dir: Path):
    """arkime http2-nghttp2.test: GET / (headers split by CONTINUATION) and the pushed
    GET /stylesheets/screen.css; both answered 200."""
    (conn,) = http2_connections(corpus_dir / "arkime" / "http2-nghttp2.pcap")
    assert conn.requests() == ["GET /", "GET /stylesheets/screen.css"]
    first = conn.heads[0].message
    assert [name for name, _ in first.headers if name.startswith("continuation-test-")] == [
        f"continuation-test-{n}" for n in range(1, 7)]
    assert conn.statuses() == {"200": 2}
    pushed = conn.heads[1]
    assert pushed.stream_id % 2 == 0 and pushed.end_stream
    assert conn.anomalies == []


# Cleartext HTTP/2 in the corpus with tshark's view. Status differences are explained inline.
TSHARK_CASES = [
    "suricata-verify/bug-5929-02/http2_multiple_headers.pcap",
    "suricata-verify/dns-over-http2/dns_over_https.pcap",
    "suricata-verify/http2-continuation/input.pcap",
    "suricata-verify/http2-deflate/http2_deflate.pcap",
    "suricata-verify/http2-keywords/input.pcap",
    "suricata-verify/http2-long-frame/input.pcap",
    "suricata-verify/http2-range/http2-range.pcap",
    "suricata-verify/http2-userinfo-authority/http2_userinfo_in_authority_1.pcap",
    "ndpi/http2.pcapng",
    "scapy/http2_h2c.pcap",
]


@pytest.mark.parametrize("name", TSHARK_CASES)
def test_matches_tshark(corpus_dir: Path, name: str):
    truth = json.loads((corpus_dir / "_groundtruth" / "tshark_groundtruth.json").read_text())[name]["http2"]
    observed = http2_connections(corpus_dir / name)
    requests = [request for conn in observed for request in conn.requests()]
    assert requests == truth["requests"]
    statuses: dict[str, int] = {}
    for conn in observed:
        for status, count in conn.statuses().items():
            statuses[status] = statuses.get(status, 0) + count
    expected = dict(truth["status_counts"])
    if name.endswith("dns_over_https.pcap"):
        # The client resets stream 7 (CANCEL) before the server's answer arrives; tshark counts
        # that answer, we drop frames in flight on a reset stream.
        expected["200"] -= 1
    assert statuses == expected
    assert all("internal_error" not in conn.anomalies for conn in observed)


def test_long_frame_is_flagged(corpus_dir: Path):
    """suricata-verify http2-long-frame: a 70,000-byte DATA frame to a client that allowed 16,384."""
    (conn,) = http2_connections(corpus_dir / "suricata-verify" / "http2-long-frame" / "input.pcap")
    assert conn.anomalies == ["frame_exceeds_max_size"]
    body = b"".join(e.data for e in conn.events if isinstance(e, BodyReceived) and e.stream_id == 1)
    assert len(body) == 70000
