"""The decoded view of one captured frame that the flow layer consumes."""

from __future__ import annotations

from typing import NamedTuple

# IP protocol numbers used by the flow layer.
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
IPPROTO_SCTP = 132

PROTO_NAMES = {IPPROTO_ICMP: "ICMP", IPPROTO_TCP: "TCP", IPPROTO_UDP: "UDP",
               IPPROTO_ICMPV6: "IPv6-ICMP", IPPROTO_SCTP: "SCTP"}

# TCP flag bits.
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80


class Frame(NamedTuple):
    """One record of a capture file, undecoded."""

    ts: float  # seconds since the epoch, capture time
    linktype: int  # LINKTYPE_* value (pcap header, or the pcapng interface's)
    data: bytes  # captured bytes (may be shorter than wire_len when snapped)
    wire_len: int  # original length on the wire
    number: int  # 1-based position in the file (Suricata's pcap_cnt)


class Packet:
    """An IPv4/IPv6 packet with its transport header decoded.

    Addresses are raw bytes (4 or 16): text is made only once per flow. For protocols other than
    TCP and UDP, ports are 0 (ICMP: type and code, Community ID style).
    """

    __slots__ = ("ack", "dport", "dst", "flags", "ip_version", "missing", "number", "payload", "proto",
                 "seq", "sport", "src", "ts", "wire_len")

    def __init__(self, ts: float, number: int, ip_version: int, src: bytes, dst: bytes,
                 proto: int, sport: int, dport: int, flags: int, seq: int, ack: int,
                 payload: bytes, wire_len: int) -> None:
        self.ts = ts
        self.number = number
        self.ip_version = ip_version
        self.src = src
        self.dst = dst
        self.proto = proto
        self.sport = sport
        self.dport = dport
        self.flags = flags  # TCP flags; 0 for other protocols
        self.seq = seq  # TCP sequence number; 0 for other protocols
        self.ack = ack  # TCP acknowledgement number
        self.payload = payload  # transport payload (TCP/UDP data)
        self.wire_len = wire_len  # frame length on the wire
        #: Bytes of the transport payload the capture did not keep (its snap length cut the
        #: frame): they follow `payload` on the wire. The decoder sets it; 0 otherwise.
        self.missing = 0

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return (f"Packet(#{self.number} {self.src.hex()}:{self.sport} -> {self.dst.hex()}:"
                f"{self.dport} proto={self.proto} flags={self.flags:#x} seq={self.seq} "
                f"len={len(self.payload)})")
