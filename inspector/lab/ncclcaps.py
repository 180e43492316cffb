"""NCCL socket traffic built byte-exact from the wire brief, in crafted TCP conversations.

There is no GPU here, so no NCCL to capture: :class:`NcclWire` encodes what the brief
(../shared/reference/nccl-tcpstore-wire.md §1-3, NCCL v2.12-v2.30 sources) says each version puts
on the wire, with `struct`, and `inspector.lab.craft` carries it in real TCP conversations.
Nothing here comes from a live NCCL: the captures show the layouts as the brief documents them.

Captures (pcaps/crafted/), each with the records it must produce in `nccl_truth.json`:

* nccl_bootstrap.pcap - one two-rank bootstrap per version layout: <= 2.15 (no handshake, 64-byte
  rank info, 28-byte next hop and ring slices), 2.16-2.22 (handshake with the communicator magic,
  IPv6 addresses, old-style P2P send), 2.23 (NCCL_COMM_ID magic, 172-byte rank info, 128-byte next
  hop, 64-byte ring slice, new-style P2P), 2.24-2.28 (104-byte slices) and 2.29+ (176-byte rank
  info with an opaque ringConnectInfo, 120-byte slices, bidirectional ring);
* nccl_sockets.pcap - the other socket types (NCCL 2.26 shapes): proxy RPCs, net-socket data
  and control connections, IB out-of-band, RAS CONNINIT / CONNINITACK;
* nccl_malformed.pcap - a handshake type no NCCL knows, a lying frame length, a rank info cut
  by the end of the connection, an unknown proxy RPC type.

    python -m inspector.lab.ncclcaps pcaps/crafted
"""

from __future__ import annotations

import ipaddress
import random
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inspector.lab.craft import CLIENT, SERVER, Capture, TcpConversation, generate_captures

EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z

SOCKET_MAGIC = 0x564AB9F2FC4B9D6C
COMM_ID_MAGIC = 0x0280028002800280
BOOTSTRAP, PROXY, NET_SOCKET, NET_IB, RAS = 1, 2, 3, 4, 5

Truth = dict[str, Any]


class NcclWire:
    """Encoders for NCCL's socket messages (host order = little-endian)."""

    @staticmethod
    def sockaddr(endpoint: str) -> bytes:
        """sa28: u16 family, big-endian port, IPv4 at 4 / IPv6 at 8, zero padding."""
        host, _, port = endpoint.rpartition(":")
        address = ipaddress.ip_address(host.strip("[]"))
        if address.version == 4:
            raw = struct.pack("<H", 2) + struct.pack(">H", int(port)) + address.packed
        else:
            raw = struct.pack("<H", 10) + struct.pack(">H", int(port)) + bytes(4) + address.packed
        return raw.ljust(28, b"\0")

    @staticmethod
    def handshake(magic: int, socket_type: int) -> bytes:
        return struct.pack("<QI", magic, socket_type)

    @staticmethod
    def frame(payload: bytes) -> bytes:
        return struct.pack("<i", len(payload)) + payload

    @classmethod
    def rank_info(cls, size: int, rank: int, nranks: int, root_listen: str, ring: str | bytes, *,
                  iroot: int = 0, nroots: int = 1, offset: int = 0) -> bytes:
        """extInfo: 64 B (<= 2.22), 172 B (2.23-2.28) or 176 B (2.29+); `ring` bytes = opaque handle."""
        ring_raw = ring if isinstance(ring, bytes) else cls.sockaddr(ring)
        if size == 64:
            return struct.pack("<ii", rank, nranks) + cls.sockaddr(root_listen) + ring_raw
        head = struct.pack("<iiii", rank, nranks, iroot, nroots)
        if size == 176:
            head += struct.pack("<i", offset)
        return head + cls.sockaddr(root_listen) + ring_raw.ljust(128, b"\0")

    @classmethod
    def unique_id(cls, magic: int, root: str, nranks: int = 0) -> bytes:
        """ncclUniqueId 2.23+: u64 magic, sa28 of the root, i32 nRanks (2.29+ grow), zeros."""
        return (struct.pack("<Q", magic) + cls.sockaddr(root) + struct.pack("<i", nranks)).ljust(128, b"\0")

    @staticmethod
    def proxy_request(kind: int, connection: int, request: bytes, response_size: int, op_id: int) -> bytes:
        return (struct.pack("<iQii", kind, connection, len(request), response_size) + request
                + struct.pack("<Q", op_id))

    @staticmethod
    def proxy_response(op_id: int, result: int, response: bytes) -> bytes:
        return struct.pack("<Qii", op_id, result, len(response)) + response

    @classmethod
    def ras_conninit(cls, version_code: int, listen: str) -> bytes:
        """rasMsg CONNINIT: i32 type, pad, i32 ncclVersion, sa28 listening address, u64 x2 hashes (56 B)."""
        return struct.pack("<ii", 1, 0) + struct.pack("<i", version_code) + cls.sockaddr(listen) + struct.pack(
            "<QQ", 0x1234, 0)

    @staticmethod
    def ras_conninit_ack(nack: int = 0) -> bytes:
        return struct.pack("<iii", 2, 0, nack)


W = NcclWire


def _conv(cap: Capture, rng: random.Random, client: str, server: str, start: float) -> TcpConversation:
    (chost, cport), (shost, sport) = _split(client), _split(server)
    return TcpConversation(cap, (chost, cport), (shost, sport), start, rng).handshake()


def _split(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]"), int(port)


def _record(message: str, **values: Any) -> dict[str, Any]:
    return {"message": message, **values}


def _hs(socket_type: str, code: int, magic: int, kind: str, detection: str = "handshake_message") -> dict[str, Any]:
    return {"handshake": True, "detection": detection, "socket_type": socket_type, "socket_type_code": code,
            "magic": struct.pack("<Q", magic).hex(), "magic_kind": kind}


NO_HANDSHAKE = {"handshake": False, "detection": "message_shape", "socket_type": "bootstrap"}


def _one_way(cap: Capture, rng: random.Random, client: str, server: str, start: float, *chunks: bytes,
             reply: bytes = b"") -> None:
    conv = _conv(cap, rng, client, server, start)
    for chunk in chunks:
        conv.send(CLIENT, chunk, think=0.0002)
    if reply:
        conv.send(SERVER, reply, think=0.0002)
    conv.close()


# -- captures -----------------------------------------------------------------------------------


def bootstrap_capture(cap: Capture, rng: random.Random) -> Truth:
    records: list[dict[str, Any]] = []
    t = EPOCH + 10

    # NCCL <= 2.15: no handshake; rank 1 -> root (64 B), root -> rank 1 next hop (28 B), ring 28/28/8.
    root, rank0_ring, rank1_root, rank1_ring = "10.0.0.1:40001", "10.0.0.1:40002", "10.0.0.2:41001", "10.0.0.2:41002"
    _one_way(cap, rng, "10.0.0.2:50001", root, t, W.frame(W.rank_info(64, 1, 2, rank1_root, rank1_ring)))
    records.append(_record("rank_info", **NO_HANDSHAKE, rank=1, nranks=2, listen_addrs=[rank1_root, rank1_ring],
                           version_layout="<=2.15", message_size=64))
    _one_way(cap, rng, "10.0.0.1:50002", rank1_root, t + 0.01, W.frame(W.sockaddr(rank0_ring)))
    records.append(_record("next_hop", **NO_HANDSHAKE, message_size=28, version_layout="<=2.15",
                           listen_addrs=[rank0_ring]))
    slices = [W.sockaddr("10.0.0.2:43001"), W.sockaddr("10.0.0.2:44001"), struct.pack("<Q", 0xABCDEF)]
    _one_way(cap, rng, "10.0.0.2:50003", rank0_ring, t + 0.02, *[W.frame(s) for s in slices])
    records.append(_record("ring", **NO_HANDSHAKE, message_size=28, version_layout="<=2.15",
                           listen_addrs=["10.0.0.2:43001"]))
    records.append(_record("summary", **NO_HANDSHAKE, message_count=3, message_sizes=[28, 28, 8],
                           peer_message_count=0))

    # NCCL 2.16-2.22: handshake with the communicator magic (id bytes 0-7), IPv6, old-style P2P.
    t += 1
    magic = 0x1122334455667788
    hs = _hs("bootstrap", 1, magic, "communicator")
    root, rank1_root, rank1_ring = "[fd00::1]:40001", "[fd00::2]:41001", "[fd00::2]:41002"
    _one_way(cap, rng, "[fd00::2]:50011", root, t,
             W.handshake(magic, BOOTSTRAP) + W.frame(W.rank_info(64, 1, 2, rank1_root, rank1_ring)))
    records.append(_record("rank_info", **hs, rank=1, nranks=2, listen_addrs=[rank1_root, rank1_ring],
                           version_layout="2.16-2.22", message_size=64))
    _one_way(cap, rng, "[fd00::1]:50012", rank1_root, t + 0.01,
             W.handshake(magic, BOOTSTRAP) + W.frame(W.sockaddr("[fd00::1]:40002")))
    records.append(_record("next_hop", **hs, message_size=28, version_layout="2.16-2.22",
                           listen_addrs=["[fd00::1]:40002"]))
    tag = 1 << 31 | 7
    _one_way(cap, rng, "[fd00::1]:50013", "[fd00::2]:45001", t + 0.02, W.handshake(magic, BOOTSTRAP),
             W.frame(struct.pack("<i", 0)), W.frame(struct.pack("<I", tag)), W.frame(bytes(300)))
    records.append(_record("p2p", **hs, rank=0, tag=tag, tag_flags=["connect"], data_size=300,
                           version_layout="2.16-2.22"))

    # NCCL 2.23: NCCL_COMM_ID magic, 172-byte rank info, 128-byte next hop, 64-byte ring slice, new P2P.
    t += 1
    hs = _hs("bootstrap", 1, COMM_ID_MAGIC, "comm_id_magic")
    root, rank1_root, rank1_ring = "10.1.0.1:29600", "10.1.0.2:41001", "10.1.0.2:41002"
    _one_way(cap, rng, "10.1.0.2:50021", root, t,
             W.handshake(COMM_ID_MAGIC, BOOTSTRAP) + W.frame(W.rank_info(172, 1, 4, rank1_root, rank1_ring)))
    records.append(_record("rank_info", **hs, rank=1, nranks=4, iroot=0, nroots=1,
                           listen_addrs=[rank1_root, rank1_ring], version_layout="2.23-2.28", message_size=172))
    _one_way(cap, rng, "10.1.0.1:50022", rank1_root, t + 0.01,
             W.handshake(COMM_ID_MAGIC, BOOTSTRAP) + W.frame(W.sockaddr("10.1.0.3:41002").ljust(128, b"\0")))
    records.append(_record("next_hop", **hs, message_size=128, version_layout="2.23+",
                           listen_addrs=["10.1.0.3:41002"]))
    slice64 = W.sockaddr("10.1.0.2:43001") + W.sockaddr("10.1.0.2:44001") + struct.pack("<Q", 42)
    _one_way(cap, rng, "10.1.0.2:50023", "10.1.0.3:41002", t + 0.02, W.handshake(COMM_ID_MAGIC, BOOTSTRAP),
             *[W.frame(slice64) for _ in range(3)])
    records.append(_record("ring", **hs, message_size=64, version_layout="2.23",
                           listen_addrs=["10.1.0.2:43001", "10.1.0.2:44001"]))
    records.append(_record("summary", **hs, message_count=3, message_sizes=[64, 64, 64], peer_message_count=0))
    tag = 1 << 30 | 3
    _one_way(cap, rng, "10.1.0.2:50024", "10.1.0.3:45001", t + 0.03, W.handshake(COMM_ID_MAGIC, BOOTSTRAP),
             W.frame(struct.pack("<iI", 1, tag)), W.frame(b"x" * 1000))
    records.append(_record("p2p", **hs, rank=1, tag=tag, tag_flags=["allgather"], data_size=1000,
                           version_layout="2.23+"))

    # NCCL 2.24-2.28: 104-byte ring slices (RAS info added).
    t += 1
    magic = 0x0F1E2D3C4B5A6978
    hs = _hs("bootstrap", 1, magic, "communicator")
    slice104 = W.sockaddr("10.2.0.2:43001") + W.sockaddr("10.2.0.2:44001") + bytes(48)
    _one_way(cap, rng, "10.2.0.2:50031", "10.2.0.3:41002", t, W.handshake(magic, BOOTSTRAP),
             *[W.frame(slice104) for _ in range(2)])
    records.append(_record("ring", **hs, message_size=104, version_layout="2.24+",
                           listen_addrs=["10.2.0.2:43001", "10.2.0.2:44001"]))
    records.append(_record("summary", **hs, message_count=2, message_sizes=[104, 104], peer_message_count=0))

    # NCCL 2.29+: 176-byte rank info (opaque ringConnectInfo: NCCL_OOB_NET_ENABLE), bidirectional ring.
    t += 1
    magic = 0x7766554433221100
    hs = _hs("bootstrap", 1, magic, "communicator")
    opaque = bytes([0xEE]) * 64
    _one_way(cap, rng, "10.3.0.5:50041", "10.3.0.1:40001", t,
             W.handshake(magic, BOOTSTRAP) + W.frame(W.rank_info(176, 5, 16, "10.3.0.5:41001", opaque, iroot=1,
                                                                 nroots=2, offset=8)))
    records.append(_record("rank_info", **hs, rank=5, nranks=16, iroot=1, nroots=2, offset=8,
                           listen_addrs=["10.3.0.5:41001"], ring_connect_opaque=True, version_layout="2.29+",
                           message_size=176))
    slice120 = W.sockaddr("10.3.0.5:43001") + W.sockaddr("10.3.0.5:44001") + bytes(64)
    conv = _conv(cap, rng, "10.3.0.5:50042", "10.3.0.6:41002", t + 0.01)
    conv.send(CLIENT, W.handshake(magic, BOOTSTRAP) + W.frame(slice120))
    conv.send(SERVER, W.frame(slice120), think=0.0002)
    conv.send(CLIENT, W.frame(slice120), think=0.0002)
    conv.close()
    records.append(_record("ring", **hs, message_size=120, version_layout="head",
                           listen_addrs=["10.3.0.5:43001", "10.3.0.5:44001"]))
    records.append(_record("summary", **hs, message_count=2, message_sizes=[120, 120], peer_message_count=1))
    return {"records": records, "anomalies": [], "flows": 13}


def sockets_capture(cap: Capture, rng: random.Random) -> Truth:
    records: list[dict[str, Any]] = []
    t = EPOCH + 20
    magic = 0x5EE1C0DEDEADBEEF

    # proxy (intra-node, communicator magic): Init, Setup, Connect RPCs and their responses.
    hs = _hs("proxy", 2, magic, "communicator")
    conv = _conv(cap, rng, "10.5.0.1:50101", "10.5.0.1:46001", t)
    conv.send(CLIENT, W.handshake(magic, PROXY) + W.proxy_request(1, 0x7F00DEAD0000, struct.pack("<ii", 0, 0), 8, 1))
    conv.send(SERVER, W.proxy_response(1, 0, struct.pack("<Q", 0x7F00BEEF0000)), think=0.0002)
    conv.send(CLIENT, W.proxy_request(3, 0x7F00BEEF0000, bytes(32), 0, 2), think=0.0002)
    conv.send(SERVER, W.proxy_response(2, 0, b""), think=0.0002)
    conv.send(CLIENT, W.proxy_request(4, 0x7F00BEEF0000, bytes(64), 16, 3), think=0.0002)
    conv.send(SERVER, W.proxy_response(3, 3, bytes(16)), think=0.0002)
    conv.close()
    records.append(_record("proxy_request", **hs, proxy_type="Init", proxy_type_code=1, request_size=8,
                           response_size=8, version_layout="2.16+"))
    records.append(_record("summary", **hs, message_count=3, message_sizes=[8, 32, 64], peer_message_count=3,
                           message_types=["Init", "Setup", "Connect"], proxy_errors=1))

    # net-socket (NCCL_SOCKET_MAGIC): nSocks = 2 data sockets (index 0, 1) and the control socket (index 2).
    hs = _hs("net_socket", 3, SOCKET_MAGIC, "socket_magic", "socket_magic")
    for index in (0, 1, 2):
        conv = _conv(cap, rng, f"10.5.0.1:{50110 + index}", "10.5.0.2:47001", t + 0.01 * (index + 1))
        conv.send(CLIENT, W.handshake(SOCKET_MAGIC, NET_SOCKET) + bytes([index]))
        conv.send(CLIENT, struct.pack("<i", 65536) if index == 2 else bytes(rng.randrange(256) for _ in range(3000)),
                  think=0.0002)
        conv.close()
        records.append(_record("handshake", **hs, socket_index=index, version_layout="2.16+"))

    # IB out-of-band (NCCL_SOCKET_MAGIC, type 4): metadata layout UNVERIFIED, not decoded.
    conv = _conv(cap, rng, "10.5.0.1:50120", "10.5.0.2:48001", t + 0.05)
    conv.send(CLIENT, W.handshake(SOCKET_MAGIC, NET_IB) + bytes(64))
    conv.close()
    records.append(_record("handshake", **_hs("net_ib", 4, SOCKET_MAGIC, "socket_magic", "socket_magic"),
                           version_layout="2.16+"))

    # RAS (NCCL 2.26.3): CONNINIT with the version and the listening address, CONNINITACK back.
    hs = _hs("ras", 5, SOCKET_MAGIC, "socket_magic", "socket_magic")
    conv = _conv(cap, rng, "10.5.0.1:50130", "10.5.0.2:49001", t + 0.06)
    conv.send(CLIENT, W.handshake(SOCKET_MAGIC, RAS) + W.frame(W.ras_conninit(22603, "10.5.0.1:49001")))
    conv.send(SERVER, W.frame(W.ras_conninit_ack()), think=0.0002)
    conv.close()
    records.append(_record("ras_conninit", **hs, message_size=56, ras_message="CONNINIT", version_layout="2.24+",
                           nccl_version_code=22603, nccl_version="2.26.3", listen_addrs=["10.5.0.1:49001"]))
    records.append(_record("summary", **hs, message_count=1, message_sizes=[56], peer_message_count=1,
                           message_types=["CONNINIT", "CONNINITACK"]))
    return {"records": records, "anomalies": [], "flows": 6}


def malformed_capture(cap: Capture, rng: random.Random) -> Truth:
    records: list[dict[str, Any]] = []
    anomalies: list[str] = []
    t = EPOCH + 30
    # the public magic with a type no NCCL knows (2.16-2.30.4 listeners abort on it)
    _one_way(cap, rng, "10.6.0.9:50201", "10.6.0.1:40001", t, W.handshake(SOCKET_MAGIC, 7))
    records.append(_record("handshake", **_hs("unknown", 7, SOCKET_MAGIC, "socket_magic", "socket_magic"),
                           version_layout="2.16+"))
    anomalies.append("nccl.unknown_socket_type")
    # a lying frame length after a valid first message
    magic = 0x0102030405060708
    hs = _hs("bootstrap", 1, magic, "communicator")
    _one_way(cap, rng, "10.6.0.2:50202", "10.6.0.1:40001", t + 0.01,
             W.handshake(magic, BOOTSTRAP) + W.frame(W.rank_info(64, 1, 2, "10.6.0.2:41001", "10.6.0.2:41002")),
             struct.pack("<i", -5) + bytes(16))
    records.append(_record("rank_info", **hs, rank=1, nranks=2, listen_addrs=["10.6.0.2:41001", "10.6.0.2:41002"],
                           version_layout="2.16-2.22", message_size=64))
    anomalies.append("nccl.bad_message_length")
    # a rank info cut by the end of the connection
    _one_way(cap, rng, "10.6.0.3:50203", "10.6.0.1:40001", t + 0.02,
             W.handshake(magic, BOOTSTRAP) + W.frame(W.rank_info(172, 2, 4, "10.6.0.3:41001", "10.6.0.3:41002"))[:100])
    anomalies.append("nccl.truncated_message")
    # a proxy connection whose second RPC has an unknown type
    hs = _hs("proxy", 2, magic, "communicator")
    _one_way(cap, rng, "10.6.0.4:50204", "10.6.0.4:46001", t + 0.03,
             W.handshake(magic, PROXY) + W.proxy_request(6, 1, b"", 0, 1), W.proxy_request(99, 1, b"", 0, 2))
    records.append(_record("proxy_request", **hs, proxy_type="Close", proxy_type_code=6, request_size=0,
                           response_size=0, version_layout="2.16+"))
    anomalies.append("nccl.unknown_proxy_message")
    return {"records": records, "anomalies": anomalies, "flows": 4}


CAPTURES: dict[str, Callable[[Capture, random.Random], Truth]] = {
    "nccl_bootstrap.pcap": bootstrap_capture,
    "nccl_sockets.pcap": sockets_capture,
    "nccl_malformed.pcap": malformed_capture,
}


def generate(out_dir: str | Path, seed: int = 11) -> dict[str, Truth]:
    """Write the NCCL captures and nccl_truth.json into `out_dir`; returns the truth."""
    return generate_captures(CAPTURES, out_dir, seed, "nccl_truth.json")


if __name__ == "__main__":
    generate(sys.argv[1] if len(sys.argv) > 1 else "pcaps/crafted")
