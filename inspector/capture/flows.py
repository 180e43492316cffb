"""The flow table: bidirectional flows keyed on the 5-tuple, TCP state, expiry and caps.

A flow's *client* is the side that sent the SYN; without a handshake in the capture, the side
with the higher port (the ephemeral one) is taken as the client, and the stream router may swap
the two sides once content shows which side asked (`Flow.swap`, before any byte was parsed).

Flows end on FIN in both directions or RST (after `Limits.tcp_closed_linger` seconds of capture
time, so late retransmissions still find their flow), on idle timeout, on eviction when the
table is full (least recently active first), and at the end of the capture. Time is the capture's.
"""

from __future__ import annotations

import hashlib
import socket
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from inspector.capture.packet import ACK, FIN, IPPROTO_TCP, PROTO_NAMES, RST, SYN, Packet
from inspector.capture.tcp import TcpCounters, TcpDirection
from inspector.communityid import community_id
from inspector.http import TO_CLIENT, TO_SERVER
from inspector.limits import Limits


class FlowHandler(Protocol):
    """What the flow table drives for each flow (the stream router, offline)."""

    def on_data(self, direction: int, data: bytes, ts: float) -> None: ...
    def on_gap(self, direction: int, length: int, ts: float) -> None: ...
    def on_eof(self, direction: int, ts: float) -> None: ...
    def on_stream_anomaly(self, direction: int, event: str, message: str, ts: float) -> None: ...
    def on_datagram(self, direction: int, payload: bytes, ts: float) -> None: ...
    def finish(self, ts: float) -> None: ...


def ip_text(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


class Flow:
    """One bidirectional flow."""

    __slots__ = (
        "alerted",
        "app_proto",
        "bytes",
        "client_ip",
        "client_port",
        "closed_at",
        "closed_number",
        "community_id",
        "dest_text",
        "end_reason",
        "fin",
        "flow_id",
        "handler",
        "ip_version",
        "last_number",
        "last_ts",
        "pkts",
        "proto",
        "rst",
        "server_ip",
        "server_port",
        "src_text",
        "start_ts",
        "streams",
        "syn",
        "synack",
        "zones",
    )

    def __init__(self, packet: Packet, client_is_sender: bool) -> None:
        if client_is_sender:
            self.client_ip, self.client_port = packet.src, packet.sport
            self.server_ip, self.server_port = packet.dst, packet.dport
        else:
            self.client_ip, self.client_port = packet.dst, packet.dport
            self.server_ip, self.server_port = packet.src, packet.sport
        self.proto = packet.proto
        self.ip_version = packet.ip_version
        self.start_ts = packet.ts
        self.last_ts = packet.ts
        self.last_number = packet.number  # frame number of its latest packet (LRU order across shards)
        self.pkts = [0, 0]
        self.bytes = [0, 0]
        self.syn = False
        self.synack = False
        self.fin = [False, False]
        self.rst = False
        self.closed_at: float | None = None
        self.closed_number = 0  # frame number of the packet that closed it
        self.end_reason = ""
        self.app_proto = "failed" if packet.proto == IPPROTO_TCP else ""
        self.streams: list[TcpDirection] | None = None
        self.handler: FlowHandler | None = None
        self.alerted = False
        self.zones: tuple[str, str | None] | None = None  # (src, dest) zones, set when a policy is loaded
        self.src_text = ip_text(self.client_ip)
        self.dest_text = ip_text(self.server_ip)
        self.community_id = community_id(self.client_ip, self.server_ip, self.proto,
                                         self.client_port, self.server_port)
        digest = hashlib.blake2b(f"{self.community_id}|{self.start_ts!r}".encode(), digest_size=8).digest()
        self.flow_id = int.from_bytes(digest, "big") & ((1 << 51) - 1)  # exact in JSON doubles

    @property
    def proto_name(self) -> str:
        return PROTO_NAMES.get(self.proto, str(self.proto))

    @property
    def state(self) -> str:
        if self.proto != IPPROTO_TCP:
            return "established" if self.pkts[TO_CLIENT] else "new"
        if self.rst or all(self.fin):
            return "closed"
        if self.pkts[TO_CLIENT] or self.synack:
            return "established"
        return "new"

    def swap(self) -> None:
        """Exchange client and server (before any stream byte was parsed)."""
        self.client_ip, self.server_ip = self.server_ip, self.client_ip
        self.client_port, self.server_port = self.server_port, self.client_port
        self.src_text, self.dest_text = self.dest_text, self.src_text
        if self.zones is not None:
            self.zones = (self.zones[1] or "", self.zones[0])
        self.pkts.reverse()
        self.bytes.reverse()
        self.fin.reverse()
        if self.streams is not None:
            self.streams.reverse()
            self.streams[0].direction, self.streams[1].direction = TO_SERVER, TO_CLIENT


#: Capture seconds between two looks for idle and linger-closed flows (at the first frame at or
#: past the time; inspector.parallel works the same schedule out for its workers).
EXPIRY_CHECK_INTERVAL = 1.0


class FlowTable:
    """Flows by canonical 5-tuple, least recently active first."""

    def __init__(self, limits: Limits, handler_factory: Callable[[Flow], FlowHandler | None],
                 on_flow_end: Callable[[Flow], None]) -> None:
        self._limits = limits
        self._handler_factory = handler_factory
        self._on_flow_end = on_flow_end
        self._flows: OrderedDict[tuple, Flow] = OrderedDict()
        self._closing: OrderedDict[tuple, Flow] = OrderedDict()
        #: Capture time at which the next expiry check runs (a packet or a tick at or past it).
        self.next_expiry_check = float("-inf")
        self._now = float("-inf")
        self.tcp_counters = TcpCounters()
        self.flows_total = 0
        self.flows_evicted = 0
        self.flows_timed_out = 0
        self.port_reuse = 0
        #: Called with each flow about to end (before its last records): how a sharded run
        #: (inspector.parallel) orders what the flow's end writes.
        self.on_flow_ending: Callable[[Flow, str], None] | None = None

    def __len__(self) -> int:
        return len(self._flows)

    def packet(self, p: Packet) -> None:
        ts = p.ts
        if ts > self._now:
            self._now = ts
            if ts >= self.next_expiry_check:
                self._expire(ts)
                self.next_expiry_check = ts + EXPIRY_CHECK_INTERVAL
        a = (p.src, p.sport)
        b = (p.dst, p.dport)
        key = (a, b, p.proto) if a <= b else (b, a, p.proto)
        flows = self._flows
        flow = flows.get(key)
        is_tcp = p.proto == IPPROTO_TCP
        flags = p.flags
        if flow is not None and is_tcp and flags & SYN and not flags & ACK and flow.closed_at is not None:
            self.port_reuse += 1
            self._end(key, flow, "closed")
            flow = None
        if flow is None:
            flow = self._new_flow(key, p)
        else:
            flows.move_to_end(key)
        flow.last_number = p.number
        direction = TO_SERVER if p.src == flow.client_ip and p.sport == flow.client_port else TO_CLIENT
        flow.pkts[direction] += 1
        flow.bytes[direction] += p.wire_len
        if ts > flow.last_ts:
            flow.last_ts = ts
        if is_tcp:
            self._tcp(flow, key, direction, p)
        elif flow.handler is not None and p.payload:
            flow.handler.on_datagram(direction, p.payload, ts)

    def _new_flow(self, key: tuple, p: Packet) -> Flow:
        if len(self._flows) >= self._limits.max_flows:
            old_key, old_flow = next(iter(self._flows.items()))
            self.flows_evicted += 1
            self._end(old_key, old_flow, "evicted")
        # The SYN's sender is the client; otherwise guess the ephemeral (higher) port.
        if p.proto == IPPROTO_TCP and p.flags & SYN:
            client_is_sender = not p.flags & ACK
        else:
            client_is_sender = p.sport >= p.dport
        flow = Flow(p, client_is_sender)
        if p.proto == IPPROTO_TCP:
            flow.streams = []
        handler = self._handler_factory(flow)
        flow.handler = handler
        if p.proto == IPPROTO_TCP and handler is not None:
            flow.streams = [TcpDirection(TO_SERVER, handler, self._limits, self.tcp_counters),
                            TcpDirection(TO_CLIENT, handler, self._limits, self.tcp_counters)]
        self._flows[key] = flow
        self.flows_total += 1
        return flow

    def _tcp(self, flow: Flow, key: tuple, direction: int, p: Packet) -> None:
        flags = p.flags
        if flags & SYN:
            if flags & ACK:
                flow.synack = True
            else:
                flow.syn = True
        streams = flow.streams
        if streams:
            stream = streams[direction]
            if flags & SYN:
                stream.syn(p.seq)
            if flags & ACK:
                streams[1 - direction].peer_ack(p.ack, p.ts)
            if flags & SYN and p.payload:
                stream.syn_data(p.payload, p.ts)
            elif p.payload or flags & FIN or p.missing:
                stream.segment(p.seq, p.payload, bool(flags & FIN), p.ts, p.missing)
        if flags & FIN:
            flow.fin[direction] = True
        if flags & RST:
            flow.rst = True
        if flow.closed_at is None and (flow.rst or (flow.fin[0] and flow.fin[1])):
            flow.closed_at = p.ts
            flow.closed_number = p.number
            self._closing[key] = flow
        if flow.rst and streams:
            # Nothing more will be sent: what waits is flushed past any gap.
            for s in streams:
                s.flush(p.ts)

    def _expire(self, now: float) -> None:
        limits = self._limits
        closing = self._closing
        while closing:
            key, flow = next(iter(closing.items()))
            if flow.closed_at is not None and now - flow.closed_at < limits.tcp_closed_linger:
                break
            self._end(key, flow, "closed")
        idle_before = now - limits.flow_idle_timeout
        flows = self._flows
        while flows:
            key, flow = next(iter(flows.items()))
            if flow.last_ts >= idle_before:
                break
            self.flows_timed_out += 1
            self._end(key, flow, "timeout")

    def tick(self, ts: float) -> None:
        """Advance capture time without a packet (a frame another shard owns): flows time out
        at the same frames as when every packet passes here."""
        if ts > self._now:
            self._now = ts
            if ts >= self.next_expiry_check:
                self._expire(ts)
                self.next_expiry_check = ts + EXPIRY_CHECK_INTERVAL

    def _end(self, key: tuple, flow: Flow, reason: str) -> None:
        if self.on_flow_ending is not None:
            self.on_flow_ending(flow, reason)
        self._flows.pop(key, None)
        self._closing.pop(key, None)
        flow.end_reason = reason
        ts = flow.last_ts
        if flow.streams:
            for stream in flow.streams:
                stream.flush(ts)
        if flow.handler is not None:
            flow.handler.finish(ts)
        self._on_flow_end(flow)

    def finish(self) -> None:
        """End of capture: every flow still open ends with reason `shutdown`."""
        for key, flow in list(self._flows.items()):
            self._end(key, flow, "closed" if flow.closed_at is not None else "shutdown")
