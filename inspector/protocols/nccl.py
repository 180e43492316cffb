"""The `nccl` raw-TCP protocol: NCCL's socket handshake, bootstrap, proxy and RAS connections.

Wire facts (../shared/reference/nccl-tcpstore-wire.md, NCCL v2.12-v2.30): integers in host
order (little-endian); addresses are `sa28`, NCCL's 28-byte `union ncclSocketAddress` (u16
family, big-endian port, IPv4 at 4 or IPv6 at 8). From 2.16 every connection opens with a
12-byte handshake from the connecting side: `u64 magic, u32 type` (1 bootstrap, 2 proxy,
3 net-socket, 4 IB out-of-band, 5 RAS). Bootstrap and proxy sockets use the communicator's
magic (bytes 0-7 of the ncclUniqueId that travels through the TCPStore, or `NCCL_MAGIC` with
NCCL_COMM_ID); the others the public `NCCL_SOCKET_MAGIC`. Before 2.16 there is no handshake.

Detection (content only, never ports) and its confidence, in `nccl.detection`:

* `socket_magic` - the handshake with NCCL_SOCKET_MAGIC (any type): 8 fixed bytes, certain.
* `handshake_message` - a handshake with another magic, type bootstrap / proxy / RAS, followed
  by a message that fits: a bootstrap frame of a known size whose content checks out (rank
  below nranks, socket addresses of family 2 or 10, zero `sin_zero`), a proxy RPC header with a
  known type and sane sizes, or a RAS CONNINIT with an NCCL >= 2.24 version code. High.
* `message_shape` - no handshake (NCCL <= 2.15): the first frame is a 64-byte rank info (rank
  below nranks <= 65536, two IPv4/IPv6 socket addresses with zero padding) or a 28-byte socket
  address. Medium: about 40 constrained bytes, but no magic.

Records (`event_type: nccl`), each carrying the connection's handshake fields:

* one for the connection's first message worth one: `rank_info` (rank -> root: rank, nranks,
  listen addresses, and the version layout its size gives), `next_hop` (root -> rank), `ring`
  (first ring allgather slice), `p2p` (bootstrapSend: sender rank, tag and its flags, data size),
  `proxy_request` (first proxy RPC), `ras_conninit` (NCCL version), or `handshake` for the
  sockets whose payload is not decoded (net-socket with its index byte, IB out-of-band);
* `summary` at the end of connections that carried more than that (ring allgathers, proxy
  RPCs, RAS traffic): message counts and the first sizes.

Payload bytes (net-socket data, ring slices beyond their first bytes) are counted and skipped,
never held. A length that no NCCL sender produces becomes an anomaly and that direction is
given up.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Any

from inspector import fields
from inspector.http import TO_CLIENT, TO_SERVER, SessionAnomaly
from inspector.limits import Limits
from inspector.protocols.bytereader import BEGIN_1, Begin, ParseError, Skip, StreamReader
from inspector.rawtcp import SWAPPED, Transaction

APP_PROTO = "nccl"
LAYER = "nccl"

#: `NCCL_SOCKET_MAGIC` (socket.h) and `NCCL_MAGIC` (comm.h, used with NCCL_COMM_ID on 2.23+), as sent.
SOCKET_MAGIC = struct.pack("<Q", 0x564AB9F2FC4B9D6C)
COMM_ID_MAGIC = struct.pack("<Q", 0x0280028002800280)
HANDSHAKE_BYTES = 12

SOCKET_TYPES = {0: "unknown", 1: "bootstrap", 2: "proxy", 3: "net_socket", 4: "net_ib", 5: "ras"}
PROXY_MESSAGE_TYPES = {1: "Init", 2: "SharedInit", 3: "Setup", 4: "Connect", 5: "Start", 6: "Close", 7: "Abort",
                       8: "Stop", 9: "GetFd", 10: "QueryFd", 11: "Register", 12: "Deregister"}
RAS_MESSAGE_TYPES = {1: "CONNINIT", 2: "CONNINITACK", 3: "KEEPALIVE", 4: "PEERSUPDATE", 5: "COLLREQ", 6: "COLLRESP"}
#: bootstrapSend tag bits (bootstrap.cc).
P2P_TAG_FLAGS = ((31, "connect"), (30, "allgather"), (29, "commsplit"), (28, "intranode_allgather"), (27, "grow"))

#: Rank-info sizes -> the NCCL versions that send them (bootstrap.cc, `extInfo`).
RANK_INFO_LAYOUTS = {64: "2.16-2.22", 172: "2.23-2.28", 176: "2.29+"}
#: First ring allgather slice sizes -> versions (brief §2; "head" is NCCL master after v2.30.7).
RING_SLICE_LAYOUTS = {28: "2.16-2.22", 64: "2.23", 104: "2.24+", 120: "head"}

MAX_RANKS = 65536
#: Default caps: one bootstrap / RAS frame, one proxy request or response body.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_PROXY_BODY_BYTES = 16 * 1024 * 1024
#: Bytes of a message kept for decoding; sizes listed in a summary; distinct names listed.
MESSAGE_KEEP_BYTES = 256
SUMMARY_SIZES = 32
SUMMARY_NAMES = 16
#: Connector bytes held while the start cannot be classified yet.
MAX_UNCLASSIFIED_BYTES = 4096

_TCPSTORE_VALIDATE = b"\x00\xce\xf7\x85\x3c"
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_I32X2 = struct.Struct("<ii")


# -- socket addresses and ids -------------------------------------------------------------------


def decode_sockaddr(raw: bytes, strict: bool = False) -> str | None:
    """"ip:port" (or "[ip6]:port") of an sa28, or None when it is not one.

    `strict` (used to recognize NCCL without a magic) also wants a non-zero port, a zero
    `sin_zero` for IPv4 and a small scope id for IPv6.
    """
    if len(raw) < 16:
        return None
    family = raw[0] | raw[1] << 8
    port = raw[2] << 8 | raw[3]
    if family == 2:
        if strict and (port == 0 or any(raw[8:16])):
            return None
        return f"{ipaddress.IPv4Address(raw[4:8])}:{port}"
    if family == 10 and len(raw) >= 28:
        if strict and (port == 0 or _U32.unpack_from(raw, 24)[0] > 0xFFFF):
            return None
        return f"[{ipaddress.IPv6Address(raw[8:24])}]:{port}"
    return None


def magic_kind(magic: bytes) -> str:
    if magic == SOCKET_MAGIC:
        return "socket_magic"
    if magic == COMM_ID_MAGIC:
        return "comm_id_magic"
    return "communicator"


def decode_unique_id(value: bytes) -> dict[str, Any] | None:
    """What a 128-byte ncclUniqueId tells: root address, bootstrap magic, version layout.

    2.16+: u64 magic, sa28 of the root at 8, then (2.29+) i32 nRanks at 36; bytes 40-127 are
    left uninitialised by 2.16-2.22 and zeroed from 2.23. <= 2.15: the sa28 at 0, the rest zero.
    """
    if len(value) != 128:
        return None
    if value[8:10] in (b"\x02\x00", b"\x0a\x00"):
        root = decode_sockaddr(value[8:36])
        if root is None or root.endswith(":0"):
            return None
        out: dict[str, Any] = {"root_addr": root, "magic": value[:8].hex()}
        nranks = _I32.unpack_from(value, 36)[0]
        if 0 < nranks <= MAX_RANKS * 256:
            out["layout"] = "2.29+"
            out["nranks"] = nranks
        elif any(value[40:]):
            out["layout"] = "2.16-2.22"
        else:
            out["layout"] = "2.23+"
        return out
    if value[0:2] in (b"\x02\x00", b"\x0a\x00") and not any(value[28:]):
        root = decode_sockaddr(value[:28])
        if root is not None and not root.endswith(":0"):
            return {"root_addr": root, "layout": "<=2.15"}
    return None


def decode_rank_info(message: bytes, handshake: bool) -> dict[str, Any] | None:
    """The rank -> root `extInfo` (64, 172 or 176 bytes), or None when the fields do not fit."""
    size = len(message)
    if size == 64:
        rank, nranks = _I32X2.unpack_from(message)
        root, ring = decode_sockaddr(message[8:36], strict=True), decode_sockaddr(message[36:64], strict=True)
        if not (0 <= rank < nranks <= MAX_RANKS) or root is None or ring is None:
            return None
        return {"rank": rank, "nranks": nranks, "listen_addrs": [root, ring],
                "version_layout": RANK_INFO_LAYOUTS[64] if handshake else "<=2.15"}
    if size not in (172, 176):
        return None
    rank, nranks, iroot, nroots = struct.unpack_from("<iiii", message)
    offset = _I32.unpack_from(message, 16)[0] if size == 176 else None
    at = 20 if size == 176 else 16
    if not (0 <= rank < nranks <= MAX_RANKS and 0 <= iroot < nroots <= nranks):
        return None
    if offset is not None and not 0 <= offset <= nranks:
        return None
    root = decode_sockaddr(message[at:at + 28], strict=True)
    if root is None:
        return None
    info: dict[str, Any] = {"rank": rank, "nranks": nranks, "iroot": iroot, "nroots": nroots}
    if offset is not None:
        info["offset"] = offset
    ring = decode_sockaddr(message[at + 28:at + 56], strict=True)
    info["listen_addrs"] = [root, ring] if ring is not None else [root]
    if ring is None:
        info["ring_connect_opaque"] = True  # NCCL_OOB_NET_ENABLE: a net handle, not an address
    info["version_layout"] = RANK_INFO_LAYOUTS[size]
    return info


def version_name(code: int) -> str:
    """NCCL_VERSION_CODE (major*10000 + minor*100 + patch) as "2.24.3"."""
    return f"{code // 10000}.{code % 10000 // 100}.{code % 100}"


def tag_flags(tag: int) -> list[str]:
    return [name for bit, name in P2P_TAG_FLAGS if tag >> bit & 1]


# -- recognizing the start of a connection ------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Start:
    """How a connection opens: with a handshake (its magic and type) or straight with a frame."""

    handshake: bool
    detection: str
    magic: bytes = b""
    type_code: int | None = None


def _bootstrap_frame_fits(body: bytes, handshake: bool) -> bool | None:
    """Does `body` start with a bootstrap frame NCCL sends first? None: too few bytes yet."""
    if len(body) < 4:
        return None
    length = _I32.unpack_from(body)[0]
    message = body[4:4 + length] if length > 0 else b""
    if length in (64, 172, 176):
        if len(message) < length:
            if handshake and length != 64 and len(message) >= 16:  # rank, nranks, iroot, nroots
                rank, nranks, iroot, nroots = struct.unpack_from("<iiii", message)
                if 0 <= rank < nranks <= MAX_RANKS and 0 <= iroot < nroots <= nranks:
                    return True
            return None
        if decode_rank_info(message, handshake) is not None:
            return True
        return handshake and length == 64 and decode_sockaddr(message[:28], strict=True) is not None
    if length in (28, 128) or (handshake and length in (104, 120)):
        if len(message) < 28:
            return None
        return decode_sockaddr(message[:28], strict=True) is not None
    if not handshake:
        return False
    if length == 8:  # 2.23+ bootstrapSend: {rank, tag}
        if len(message) < 8:
            return None
        return 0 <= _I32.unpack_from(message)[0] < MAX_RANKS
    if length == 4:  # <= 2.22 bootstrapSend: [4][rank][4][tag]
        if len(body) < 12:
            return None
        return 0 <= _I32.unpack_from(body, 4)[0] < MAX_RANKS and _I32.unpack_from(body, 8)[0] == 4
    return False


def _proxy_request_fits(body: bytes) -> bool | None:
    if len(body) < 20:  # i32 type, u64 connection, i32 reqSize, i32 respSize
        return None
    kind = _I32.unpack_from(body)[0]
    request_size, response_size = _I32X2.unpack_from(body, 12)
    return (kind in PROXY_MESSAGE_TYPES and 0 <= request_size <= MAX_PROXY_BODY_BYTES
            and 0 <= response_size <= MAX_PROXY_BODY_BYTES)


def _ras_conninit_fits(body: bytes) -> bool | None:
    if len(body) < 16:
        return None
    length, kind = _I32X2.unpack_from(body)
    version = _I32.unpack_from(body, 12)[0]
    return 12 <= length <= 1 << 20 and kind == 1 and 22400 <= version < 100000


_HANDSHAKE_CHECKS = {1: lambda body: _bootstrap_frame_fits(body, True), 2: _proxy_request_fits, 5: _ras_conninit_fits}


def classify_start(data: bytes) -> Start | bool | None:
    """The connecting side's first bytes: a :class:`Start`, None (too few bytes) or False."""
    if data.startswith(_TCPSTORE_VALIDATE):
        return False
    if data[:8] == SOCKET_MAGIC:
        if len(data) < HANDSHAKE_BYTES:
            return None
        return Start(handshake=True, detection="socket_magic", magic=SOCKET_MAGIC,
                     type_code=_U32.unpack_from(data, 8)[0])
    undecided = False
    if len(data) < HANDSHAKE_BYTES:
        undecided = True
    else:
        type_code = _U32.unpack_from(data, 8)[0]
        check = _HANDSHAKE_CHECKS.get(type_code)
        if check is not None:
            fits = check(data[HANDSHAKE_BYTES:])
            if fits:
                return Start(handshake=True, detection="handshake_message", magic=data[:8], type_code=type_code)
            undecided = fits is None
    fits = _bootstrap_frame_fits(data, False)
    if fits:
        return Start(handshake=False, detection="message_shape")
    return None if undecided or fits is None else False


def detect(client: bytes, server: bytes) -> bool | str | None:
    """True / "swapped" when one side opens like NCCL, None while too few bytes, else False."""
    forward = classify_start(client) if client else None
    if isinstance(forward, Start):
        return True
    backward = classify_start(server) if server else None
    if isinstance(backward, Start):
        return SWAPPED
    if forward is False and (not server or backward is False):
        return False
    return None if forward is None or backward is None else False


# -- the session ---------------------------------------------------------------------------------


class Session:
    """One NCCL connection; direction TO_SERVER is the connecting side."""

    def __init__(self, limits: Limits) -> None:
        self._max_message = limits.nccl_max_message_bytes
        self._start: Start | None = None
        self._held = bytearray()
        self._held_server: list[bytes] = []
        self._readers: list[StreamReader | None] = [None, None]
        self._events: list = []
        self._ts = 0.0
        self._context: dict[str, Any] = {}
        self._counts = [0, 0]
        self._sizes: list[list[int]] = [[], []]
        self._role: str | None = None
        self._described = 0  # connector frames the first record describes
        self._pending: dict[str, Any] = {}
        self._names: list[str] = []
        self._errors = 0
        self._eof = [False, False]
        self._finished = False

    # -- interface ---------------------------------------------------------------------------

    def receive_data(self, direction: int, data: bytes, ts: float) -> list:
        self._ts = ts
        events: list = []
        self._events = events
        if self._finished or not data:
            return events
        if self._start is None:
            if direction == TO_CLIENT:
                if sum(map(len, self._held_server)) < MAX_UNCLASSIFIED_BYTES:
                    self._held_server.append(bytes(data))
                return events
            self._held += data
            start = classify_start(bytes(self._held))
            if start is None and len(self._held) < MAX_UNCLASSIFIED_BYTES:
                return events
            if not isinstance(start, Start):
                self._anomaly("unrecognized_start", "the connecting side does not open like NCCL")
                self._finished = True
                return events
            self._begin(start)
            held, self._held = bytes(self._held), bytearray()
            self._feed(TO_SERVER, held)
            for chunk in self._held_server:
                self._feed(TO_CLIENT, chunk)
            self._held_server = []
            return events
        self._feed(direction, data)
        return events

    def receive_gap(self, direction: int, length: int, ts: float) -> list:
        self._ts = ts
        events: list = []
        self._events = events
        reader = self._readers[direction]
        if reader is not None and not reader.finished:
            self._anomaly("stream_gap", f"{length} bytes missing from the capture; direction no longer parsed",
                          direction)
            reader.stop()
        return events

    def receive_eof(self, direction: int, ts: float) -> list:
        self._ts = ts
        events: list = []
        self._events = events
        if self._eof[direction]:
            return events
        self._eof[direction] = True
        if self._start is None:
            if direction == TO_SERVER and self._held:
                self._anomaly("truncated_handshake", "the connection ended before NCCL's first message was complete")
            return events
        reader = self._readers[direction]
        if reader is not None and not reader.idle:
            self._anomaly("truncated_message", "the connection ended inside a message", direction)
        if direction == TO_SERVER and self._role == "address_pending":
            self._role = "next_hop"
            self._emit("next_hop", **self._pending)
        if all(self._eof):
            self._emit_summary()
        return events

    # -- plumbing ----------------------------------------------------------------------------

    def _begin(self, start: Start) -> None:
        self._start = start
        context: dict[str, Any] = {"handshake": start.handshake, "detection": start.detection}
        if start.handshake:
            code = start.type_code or 0
            context["socket_type"] = SOCKET_TYPES.get(code, "unknown")
            context["socket_type_code"] = code
            context["magic"] = start.magic.hex()
            context["magic_kind"] = magic_kind(start.magic)
        else:
            context["socket_type"] = "bootstrap"
        self._context = context
        socket_type = context["socket_type"]
        self._readers[TO_SERVER] = StreamReader(self._connector())
        acceptor = {"bootstrap": self._frames, "ras": self._ras}.get(socket_type)
        if acceptor is not None:
            self._readers[TO_CLIENT] = StreamReader(acceptor(TO_CLIENT))
        elif socket_type == "proxy":
            self._readers[TO_CLIENT] = StreamReader(self._proxy_responses())

    def _feed(self, direction: int, data: bytes) -> None:
        reader = self._readers[direction]
        if reader is None or reader.finished:
            return
        reader.feed(data)
        if reader.error is not None:
            self._anomaly(reader.error.event, reader.error.message, direction)
            reader.error = None

    def _anomaly(self, event: str, message: str, direction: int | None = None) -> None:
        self._events.append(SessionAnomaly(layer=LAYER, event=event, message=message, ts=self._ts,
                                           direction=direction))

    def _emit(self, message: str, **values: Any) -> None:
        if message != "summary" and not self._described:
            self._described = 1 if message == "ring" else max(1, self._counts[TO_SERVER])
        data = dict(self._context)
        data["message"] = message
        data.update(values)
        self._events.append(Transaction(event_type=LAYER, data=data, ts=self._ts))

    def _emit_summary(self) -> None:
        connector, acceptor = self._counts
        if connector <= self._described and not acceptor:
            return
        values: dict[str, Any] = {"message_count": connector, "message_sizes": self._sizes[TO_SERVER],
                                  "peer_message_count": acceptor}
        if self._names:
            values["message_types"] = self._names
        if self._context.get("socket_type") == "proxy":
            values["proxy_errors"] = self._errors
        self._emit("summary", **values)

    def _count(self, direction: int, size: int, name: str | None = None) -> None:
        self._counts[direction] += 1
        if direction == TO_SERVER and len(self._sizes[TO_SERVER]) < SUMMARY_SIZES:
            self._sizes[TO_SERVER].append(size)
        if name is not None and name not in self._names and len(self._names) < SUMMARY_NAMES:
            self._names.append(name)

    # -- parsers (generators driven by StreamReader) -----------------------------------------

    def _connector(self):
        start = self._start
        assert start is not None
        if not start.handshake:
            yield from self._frames(TO_SERVER)
            return
        yield Begin(HANDSHAKE_BYTES)
        socket_type = self._context["socket_type"]
        if socket_type == "bootstrap":
            yield from self._frames(TO_SERVER)
        elif socket_type == "proxy":
            yield from self._proxy_requests()
        elif socket_type == "ras":
            yield from self._ras(TO_SERVER)
        elif socket_type == "net_socket":
            index = (yield BEGIN_1)[0]
            self._role = "handshake"
            self._emit("handshake", socket_index=index, version_layout=self._handshake_layout())
        else:
            self._role = "handshake"
            if socket_type == "unknown":
                self._anomaly("unknown_socket_type",
                              f"handshake type {start.type_code} is not an NCCL socket type (2.16-2.30.4 "
                              "listeners abort on it)", TO_SERVER)
            self._emit("handshake", version_layout=self._handshake_layout())

    def _handshake_layout(self) -> str:
        if self._start is not None and self._start.magic != SOCKET_MAGIC and self._start.type_code in (3, 4, 5):
            return "2.30.7+"  # NCCL_SOCKET_MAGIC overridden
        return "2.16+"

    def _frame_header(self):
        length = _I32.unpack((yield Begin(4)))[0]
        if length < 0 or length > self._max_message:
            raise ParseError("bad_message_length", f"frame length {length} (cap {self._max_message})")
        return length

    def _frames(self, direction: int):
        """Bootstrap framing: `i32 len` + bytes, forever."""
        while True:
            length = yield from self._frame_header()
            prefix = (yield Skip(length, MESSAGE_KEEP_BYTES)) if length else b""
            self._count(direction, length)
            if direction == TO_SERVER:
                self._bootstrap_message(length, prefix)

    def _bootstrap_message(self, length: int, prefix: bytes) -> None:
        start = self._start
        assert start is not None
        handshake = start.handshake
        index = self._counts[TO_SERVER] - 1
        role = self._role
        if index == 0:
            info = decode_rank_info(prefix, handshake) if length in RANK_INFO_LAYOUTS else None
            if info is not None:
                self._role = "rank_info"
                self._emit("rank_info", message_size=length, **info)
            elif length in (4, 8) and handshake:
                self._role = "p2p"
                self._pending = {"rank": _I32.unpack_from(prefix)[0] if len(prefix) >= 4 else None,
                                 "version_layout": "2.23+" if length == 8 else "2.16-2.22"}
                if length == 8:
                    self._pending["tag"] = _U32.unpack_from(prefix, 4)[0]
            elif length == 128:
                self._role = "next_hop"
                self._emit("next_hop", message_size=length, version_layout="2.23+", **_addresses(prefix[:28]))
            elif length == 28:
                self._role = "address_pending"
                self._pending = {"message_size": length, "version_layout": "2.16-2.22" if handshake else "<=2.15",
                                 **_addresses(prefix)}
            else:
                self._role = "ring"
                self._emit_ring(length, prefix)
        elif role == "address_pending":
            self._role = "ring"
            pending, self._pending = self._pending, {}
            self._emit("ring", **pending)
        elif role == "p2p" and "data_size" not in self._pending:
            pending = self._pending
            if "tag" not in pending:
                pending["tag"] = _U32.unpack_from(prefix)[0] if length == 4 and len(prefix) >= 4 else None
                return
            tag = pending["tag"]
            self._emit("p2p", rank=pending["rank"], tag=tag, tag_flags=tag_flags(tag) if tag is not None else [],
                       data_size=length, version_layout=pending["version_layout"])
            pending["data_size"] = length

    def _emit_ring(self, length: int, prefix: bytes) -> None:
        values: dict[str, Any] = {"message_size": length}
        layout = RING_SLICE_LAYOUTS.get(length)
        if layout is not None:
            values["version_layout"] = layout
            addrs = [a for a in (decode_sockaddr(prefix[0:28], strict=True),
                                 decode_sockaddr(prefix[28:56], strict=True) if length > 56 else None) if a]
            if addrs:
                values["listen_addrs"] = addrs
        self._emit("ring", **values)

    def _proxy_requests(self):
        """Proxy RPC requests: i32 type, u64 connection, i32 reqSize, i32 respSize, request, u64 opId."""
        while True:
            kind = _I32.unpack((yield Begin(4)))[0]
            yield 8
            request_size, response_size = _I32X2.unpack((yield 8))
            if kind not in PROXY_MESSAGE_TYPES:
                raise ParseError("unknown_proxy_message", f"proxy RPC type {kind}")
            if not (0 <= request_size <= MAX_PROXY_BODY_BYTES and 0 <= response_size <= MAX_PROXY_BODY_BYTES):
                raise ParseError("bad_message_length", f"proxy RPC sizes {request_size}/{response_size}")
            if request_size:
                yield Skip(request_size, 0)
            yield 8
            name = PROXY_MESSAGE_TYPES[kind]
            self._count(TO_SERVER, request_size, name)
            if self._role is None:
                self._role = "proxy_request"
                self._emit("proxy_request", proxy_type=name, proxy_type_code=kind, request_size=request_size,
                           response_size=response_size, version_layout="2.16+")

    def _proxy_responses(self):
        """Proxy RPC responses: u64 opId, i32 result, i32 respSize, response."""
        while True:
            yield Begin(8)
            result, size = _I32X2.unpack((yield 8))
            if not 0 <= size <= MAX_PROXY_BODY_BYTES:
                raise ParseError("bad_message_length", f"proxy response size {size}")
            if size:
                yield Skip(size, 0)
            self._count(TO_CLIENT, size)
            if result != 0:
                self._errors += 1

    def _ras(self, direction: int):
        """RAS framing: `i32 len` + rasMsg {i32 type, (pad), payload}."""
        while True:
            length = yield from self._frame_header()
            prefix = (yield Skip(length, 64)) if length else b""
            kind = _I32.unpack_from(prefix)[0] if len(prefix) >= 4 else -1
            name = RAS_MESSAGE_TYPES.get(kind, "unknown")
            first = self._counts[TO_SERVER] == 0 and direction == TO_SERVER
            self._count(direction, length, name)
            if first:
                self._role = "ras"
                values: dict[str, Any] = {"message_size": length, "ras_message": name, "version_layout": "2.24+"}
                if kind == 1 and len(prefix) >= 40:
                    code = _I32.unpack_from(prefix, 8)[0]
                    values["nccl_version_code"] = code
                    values["nccl_version"] = version_name(code)
                    values.update(_addresses(prefix[12:40]))
                self._emit("ras_conninit" if kind == 1 else "ras", **values)


def _addresses(raw: bytes) -> dict[str, Any]:
    addr = decode_sockaddr(raw[:28])
    return {"listen_addrs": [addr]} if addr else {}


fields.declare(LAYER, [
    ("nccl.message", "string", "What the record describes: rank_info, next_hop, ring, p2p, proxy_request, "
     "ras_conninit, ras, handshake or summary."),
    ("nccl.handshake", "boolean", "True when the connection opened with the 12-byte handshake (NCCL >= 2.16)."),
    ("nccl.detection", "string", "How the connection was recognized: socket_magic (certain), handshake_message "
     "(handshake + a fitting first message) or message_shape (no handshake, NCCL <= 2.15; medium confidence)."),
    ("nccl.socket_type", "string", "bootstrap, proxy, net_socket, net_ib, ras or unknown (from the handshake; "
     "bootstrap when recognized by shape)."),
    ("nccl.socket_type_code", "integer", "The handshake's u32 type (1-5; anything else makes old listeners abort)."),
    ("nccl.magic", "string", "The handshake's 8 magic bytes in wire order, hex; for bootstrap and proxy sockets "
     "equal to tcpstore.nccl_id.magic of the communicator's id."),
    ("nccl.magic_kind", "string", "socket_magic (public NCCL_SOCKET_MAGIC), comm_id_magic (NCCL_MAGIC with "
     "NCCL_COMM_ID) or communicator (the id's random magic)."),
    ("nccl.version_layout", "string", "NCCL versions whose layout the message has, e.g. <=2.15, 2.16-2.22, "
     "2.23-2.28, 2.29+, 2.23, 2.24+, head, 2.16+, 2.30.7+."),
    ("nccl.message_size", "integer", "Length of the decoded message, from its i32 frame header."),
    ("nccl.rank", "integer", "rank_info: the sending rank; p2p: the sender rank."),
    ("nccl.nranks", "integer", "rank_info: the communicator size the rank announces."),
    ("nccl.iroot", "integer", "rank_info 2.23+: index of the root this rank reports to."),
    ("nccl.nroots", "integer", "rank_info 2.23+: number of bootstrap roots."),
    ("nccl.offset", "integer", "rank_info 2.29+: the rank offset (grow)."),
    ("nccl.listen_addrs", "list[string]", "Socket addresses carried by the message (ip:port): rank_info: the "
     "rank's root and ring listeners; next_hop: the next rank's ring listener; ring: addresses in the first "
     "slice; ras_conninit: the RAS listener."),
    ("nccl.ring_connect_opaque", "boolean", "rank_info 2.23+: ringConnectInfo is a net handle "
     "(NCCL_OOB_NET_ENABLE), not an address."),
    ("nccl.tag", "integer", "p2p: the bootstrapSend tag (u32)."),
    ("nccl.tag_flags", "list[string]", "p2p: the tag's flag bits: connect, allgather, commsplit, "
     "intranode_allgather, grow."),
    ("nccl.data_size", "integer", "p2p: size of the data frame."),
    ("nccl.proxy_type", "string", "proxy_request: the RPC type name (Init ... Deregister)."),
    ("nccl.proxy_type_code", "integer", "proxy_request: the RPC type number (1-12)."),
    ("nccl.request_size", "integer", "proxy_request: reqSize."),
    ("nccl.response_size", "integer", "proxy_request: respSize."),
    ("nccl.ras_message", "string", "ras / ras_conninit: the first RAS message type (CONNINIT ...)."),
    ("nccl.nccl_version", "string", "ras_conninit: the sender's NCCL version, e.g. 2.24.3."),
    ("nccl.nccl_version_code", "integer", "ras_conninit: NCCL_VERSION_CODE as sent."),
    ("nccl.socket_index", "integer", "handshake of a net_socket connection: the index byte (== nSocks marks the "
     "control socket; nSocks is 0 by default, so index 0 is usually the control socket)."),
    ("nccl.message_count", "integer", f"summary: frames sent by the connecting side (sizes of the first "
     f"{SUMMARY_SIZES} in message_sizes)."),
    ("nccl.message_sizes", "list[integer]", f"summary: sizes of the connecting side's first {SUMMARY_SIZES} frames."),
    ("nccl.peer_message_count", "integer", "summary: frames sent by the accepting side (bidirectional ring "
     "from 2.28.7, proxy responses, RAS)."),
    ("nccl.message_types", "list[string]", f"summary: distinct proxy RPC or RAS message types seen (at most "
     f"{SUMMARY_NAMES})."),
    ("nccl.proxy_errors", "integer", "summary of a proxy connection: responses with a non-zero result."),
])
