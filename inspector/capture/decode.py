"""Decode a captured frame: link layer -> IPv4/IPv6 (+ fragments) -> TCP/UDP/ICMP -> Packet.

One function, :meth:`PacketDecoder.decode`, does the common path (Ethernet, IPv4 or IPv6, TCP)
with ``struct.unpack_from`` and slicing on the frame's bytes; rarer link types, VLAN stacks, IPv6
extension headers, fragments and non-TCP transports take helper methods. Nothing raises on frame
bytes: what cannot be decoded is counted in :attr:`PacketDecoder.counters` and, when the packet
itself is malformed (not merely cut by the capture's snap length), reported as a
:class:`DecodeAnomaly` that the caller drains with :meth:`PacketDecoder.drain_anomalies`.

Length rules: the IP length field wins over the captured length when it is smaller (Ethernet
padding is trimmed); when it is larger the captured bytes are used and ``truncated_ip`` is
counted. An IPv4 total length of 0 (TCP segmentation offload) or an IPv6 payload length of 0
(jumbogram) means "what was captured".
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from inspector.capture.fragments import FRAGMENT_COUNTERS, FragmentReassembler
from inspector.capture.packet import (
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    Frame,
    Packet,
)
from inspector.limits import DEFAULT_LIMITS, Limits

__all__ = ["DECODER_COUNTERS", "LINKTYPES", "DecodeAnomaly", "PacketDecoder"]

# Link types (https://www.tcpdump.org/linktypes.html)
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_DLT12 = 12  # DLT_RAW as written on some BSDs
LINKTYPE_RAW_DLT14 = 14  # DLT_RAW as written on OpenBSD
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

LINKTYPES = {
    LINKTYPE_NULL: "NULL", LINKTYPE_ETHERNET: "EN10MB", LINKTYPE_RAW_DLT12: "RAW",
    LINKTYPE_RAW_DLT14: "RAW", LINKTYPE_RAW: "RAW", LINKTYPE_LOOP: "LOOP", LINKTYPE_LINUX_SLL: "LINUX_SLL",
    LINKTYPE_IPV4: "IPV4", LINKTYPE_IPV6: "IPV6", LINKTYPE_LINUX_SLL2: "LINUX_SLL2",
}

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
VLAN_ETHERTYPES = frozenset((0x8100, 0x88A8, 0x9100))  # 802.1Q, 802.1ad, the pre-standard QinQ tag
MAX_VLAN_TAGS = 8
MAX_IPV6_EXTENSION_HEADERS = 16

# BSD loopback address families: AF_INET, then AF_INET6 as NetBSD/OpenBSD, FreeBSD and macOS number it
AF_INET = 2
AF_INET6_VALUES = frozenset((24, 28, 30))

# IPv6 extension headers walked to reach the transport header; the fragment header is separate
_IPV6_HOP_BY_HOP, _IPV6_ROUTING, _IPV6_FRAGMENT, _IPV6_AH, _IPV6_DEST_OPTS = 0, 43, 44, 51, 60
_IPV6_OPTION_HEADERS = frozenset((_IPV6_HOP_BY_HOP, _IPV6_ROUTING, _IPV6_DEST_OPTS, 135, 139, 140))

_IPV4_HEADER = struct.Struct("!BxHHHxB2x4s4s").unpack_from  # vihl, total, id, frag, proto, src, dst
_IPV6_HEADER = struct.Struct("!4xHB1x16s16s").unpack_from  # payload length, next header, src, dst
_TCP_HEADER = struct.Struct("!HHIIH").unpack_from  # sport, dport, seq, ack, offset+flags
_UDP_HEADER = struct.Struct("!HHH").unpack_from  # sport, dport, length
_U16 = struct.Struct("!H").unpack_from
_U32_LE = struct.Struct("<I").unpack_from
_U32_BE = struct.Struct("!I").unpack_from
_IPV4_SYNTHETIC = struct.Struct("!BBHHHBBH4s4s").pack
_IPV6_SYNTHETIC = struct.Struct("!IHBB16s16s").pack

MAX_PENDING_ANOMALIES = 10_000  # beyond this, undrained anomalies are counted, not kept
#: Anomaly records written per event per capture: past it they are counted (anomalies_capped), so
#: a few KB of gzip'd zero-length records cannot become tens of MB of identical records.
MAX_ANOMALIES_PER_EVENT = 1_000

DECODER_COUNTERS = (
    "unsupported_linktype",  # frames of a link type we do not decode
    "truncated_link",  # frame shorter than its link-layer header
    "non_ip",  # link layer carries something other than IPv4/IPv6 (ARP, LLC, MPLS, ...)
    "bad_ip_header",  # wrong version nibble, header or total length smaller than the header
    "truncated_ip",  # fewer bytes captured than the IP header or IP length needs, the snap length aside
    "snapped",  # IP packets cut by the capture's snap length (their TCP payload's tail: a gap)
    "ip_trailing_bytes",  # more bytes captured than the IP length says (trimmed: padding)
    "ipv4_zero_total_length",  # IPv4 total length 0, taken as the captured length (TSO)
    "ipv6_zero_payload_length",  # IPv6 payload length 0 (jumbogram), taken as the captured length
    "bad_ipv6_extension",  # extension headers cut short or too many
    "truncated_tcp",  # TCP header not fully captured
    "bad_tcp_header",  # TCP data offset below 20 or beyond the segment
    "truncated_udp",  # UDP header not fully captured
    "bad_udp_header",  # UDP length below 8
    "ipv4_fragments",  # IPv4 fragments seen
    "ipv4_reassembled",  # IPv4 datagrams rebuilt from fragments
    "ipv6_fragments",
    "ipv6_reassembled",
    *FRAGMENT_COUNTERS,
    "anomalies_dropped",  # anomalies not queued because MAX_PENDING_ANOMALIES were waiting
    "anomalies_capped",  # anomalies counted, not written: MAX_ANOMALIES_PER_EVENT of their event were
)


@dataclass(frozen=True, kw_only=True, slots=True)
class DecodeAnomaly:
    """Something malformed in one frame (or a fragment set), named by a snake_case event."""

    event: str  # e.g. ipv4_bad_header_length, tcp_bad_header_length, fragment_overlap
    message: str  # human-readable detail
    ts: float  # capture time of the frame
    number: int  # frame number in the capture


class PacketDecoder:
    """Turn Frames into Packets; see the module docstring for the rules."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.counters: dict[str, int] = dict.fromkeys(DECODER_COUNTERS, 0)
        self._anomalies: list[DecodeAnomaly] = []
        self._per_event: dict[str, int] = {}
        self._unsupported_reported: set[int] = set()
        self._in_reassembled = False  # decoding a rebuilt datagram: a fragment inside it is refused
        self._fragments = FragmentReassembler(limits, self.counters, self._anomaly)
        self._links = {
            LINKTYPE_NULL: self._link_null,
            LINKTYPE_LOOP: self._link_loop,
            LINKTYPE_RAW: self._link_raw,
            LINKTYPE_RAW_DLT12: self._link_raw,
            LINKTYPE_RAW_DLT14: self._link_raw,
            LINKTYPE_IPV4: self._link_ipv4,
            LINKTYPE_IPV6: self._link_ipv6,
            LINKTYPE_LINUX_SLL: self._link_sll,
            LINKTYPE_LINUX_SLL2: self._link_sll2,
        }

    def drain_anomalies(self) -> list[DecodeAnomaly]:
        """Return and forget the anomalies found since the last call."""
        anomalies, self._anomalies = self._anomalies, []
        return anomalies

    def flush(self) -> None:
        """End of capture: count unfinished fragment sets (fragments_incomplete)."""
        self._fragments.flush()

    def _anomaly(self, event: str, message: str, ts: float, number: int) -> None:
        if len(self._anomalies) >= MAX_PENDING_ANOMALIES:
            self.counters["anomalies_dropped"] += 1
            return
        seen = self._per_event.get(event, 0) + 1
        self._per_event[event] = seen
        if seen > MAX_ANOMALIES_PER_EVENT:
            self.counters["anomalies_capped"] += 1
            return
        if seen == MAX_ANOMALIES_PER_EVENT:
            message += f" (the {seen}th {event} of this capture: the next ones are counted, not written)"
        self._anomalies.append(DecodeAnomaly(event=event, message=message, ts=ts, number=number))

    def _fault(self, counter: str, event: str, message: str, frame: Frame, snapped: bool = False) -> None:
        """Count a frame we cannot decode; report it unless the capture's snap length explains it."""
        self.counters[counter] += 1
        if not snapped:
            self._anomaly(event, message, frame[0], frame[4])

    # -- the hot path -----------------------------------------------------------------------

    def decode(self, frame: Frame) -> Packet | None:
        """Decode one frame; None when it carries no IP packet we can use (counted, maybe reported)."""
        ts, linktype, data, wire_len, number = frame
        size = len(data)
        if linktype == LINKTYPE_ETHERNET:
            if size < 14:
                self._fault("truncated_link", "link_truncated", f"{size}-byte Ethernet frame", frame,
                            size < wire_len)
                return None
            ethertype = (data[12] << 8) | data[13]
            off = 14
            if ethertype in VLAN_ETHERTYPES:
                off, ethertype = self._vlan_tags(data, off, ethertype, frame)
        else:
            link = self._links.get(linktype)
            if link is None:
                self._unsupported_linktype(frame)
                return None
            off, ethertype = link(data, frame)
        snapped = size < wire_len
        missing = 0  # payload bytes beyond the snap length

        if ethertype == ETHERTYPE_IPV4:
            if size - off < 20:
                self._fault("truncated_ip", "ipv4_truncated", f"{size - off} bytes for a 20-byte IPv4 header",
                            frame, snapped)
                return None
            version_ihl, total_len, ident, frag, proto, src, dst = _IPV4_HEADER(data, off)
            ihl = (version_ihl & 0x0F) << 2
            if version_ihl >> 4 != 4 or ihl < 20:
                self._bad_ipv4_header(version_ihl, frame)
                return None
            end = off + total_len
            if end > size or total_len < ihl:
                if snapped and end > size:
                    missing = min(end, wire_len) - size
                end = self._ipv4_length(total_len, ihl, off, size, frame, snapped)
                if end < 0:
                    return None
            elif end < size:
                self.counters["ip_trailing_bytes"] += 1
            if frag & 0x3FFF:  # more-fragments flag or a fragment offset
                return self._ipv4_fragment(data, off + ihl, end, ident, frag, proto, src, dst, frame,
                                           off + total_len > end)
            start = off + ihl
            version = 4
        elif ethertype == ETHERTYPE_IPV6:
            if size - off < 40:
                self._fault("truncated_ip", "ipv6_truncated", f"{size - off} bytes for a 40-byte IPv6 header",
                            frame, snapped)
                return None
            if data[off] >> 4 != 6:
                self._fault("bad_ip_header", "ip_version_mismatch",
                            f"IPv6 packet with version {data[off] >> 4}", frame)
                return None
            payload_len, proto, src, dst = _IPV6_HEADER(data, off)
            start = off + 40
            end = start + payload_len
            cut = end > size
            if cut or payload_len == 0:
                if snapped and cut:
                    missing = min(end, wire_len) - size
                end = self._ipv6_length(payload_len, size, frame, snapped)
            elif end < size:
                self.counters["ip_trailing_bytes"] += 1
            if proto != IPPROTO_TCP and proto != IPPROTO_UDP and proto != IPPROTO_ICMPV6:
                walked = self._ipv6_extensions(data, start, end, proto, src, dst, frame, snapped, cut)
                if walked is None or isinstance(walked, Packet):
                    return walked
                proto, start = walked
            version = 6
        else:
            if ethertype >= 0:
                self.counters["non_ip"] += 1
            return None

        if proto == IPPROTO_TCP:
            if end - start < 20:
                self._fault("truncated_tcp", "tcp_truncated", f"{end - start} bytes for a 20-byte TCP header",
                            frame, snapped)
                return None
            sport, dport, seq, ack, offset_flags = _TCP_HEADER(data, start)
            data_offset = (offset_flags >> 10) & 0x3C
            if data_offset < 20 or start + data_offset > end:
                self._bad_tcp_header(data_offset, end - start, frame, snapped)
                return None
            packet = Packet(ts, number, version, src, dst, IPPROTO_TCP, sport, dport, offset_flags & 0xFF,
                            seq, ack, data[start + data_offset:end], wire_len)
            if missing > 0:
                packet.missing = missing
            return packet
        return self._transport(frame, version, src, dst, proto, data, start, end, snapped)

    # -- transports other than TCP ----------------------------------------------------------

    def _transport(self, frame: Frame, version: int, src: bytes, dst: bytes, proto: int, data: bytes,
                   start: int, end: int, snapped: bool) -> Packet | None:
        ts, _, _, wire_len, number = frame
        if proto == IPPROTO_UDP:
            if end - start < 8:
                self._fault("truncated_udp", "udp_truncated", f"{end - start} bytes for an 8-byte UDP header",
                            frame, snapped)
                return None
            sport, dport, length = _UDP_HEADER(data, start)
            if length < 8:
                if length != 0 or version != 6:  # a zero length is legal in an IPv6 jumbogram
                    self._fault("bad_udp_header", "udp_bad_length", f"UDP length {length}", frame)
                    return None
            elif start + length < end:
                end = start + length
            return Packet(ts, number, version, src, dst, IPPROTO_UDP, sport, dport, 0, 0, 0,
                          data[start + 8:end], wire_len)
        if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
            if end - start >= 2:  # Community ID: type and code stand for the ports
                return Packet(ts, number, version, src, dst, proto, data[start], data[start + 1], 0, 0, 0,
                              data[start + 4:end], wire_len)
            return Packet(ts, number, version, src, dst, proto, 0, 0, 0, 0, 0, b"", wire_len)
        return Packet(ts, number, version, src, dst, proto, 0, 0, 0, 0, 0, data[start:end], wire_len)

    # -- link layers ------------------------------------------------------------------------
    # Each returns (offset of the network header, ethertype); ethertype -1 means "already counted".

    def _unsupported_linktype(self, frame: Frame) -> None:
        self.counters["unsupported_linktype"] += 1
        linktype = frame[1]
        if linktype not in self._unsupported_reported:
            self._unsupported_reported.add(linktype)
            self._anomaly("unsupported_linktype", f"link type {linktype} is not decoded (reported once)",
                          frame[0], frame[4])

    def _vlan_tags(self, data: bytes, off: int, ethertype: int, frame: Frame) -> tuple[int, int]:
        tags = 0
        while ethertype in VLAN_ETHERTYPES:
            if len(data) < off + 4:
                self._fault("truncated_link", "link_truncated", f"VLAN tag {tags + 1} cut short", frame,
                            len(data) < frame[3])
                return off, -1
            tags += 1
            if tags > MAX_VLAN_TAGS:
                self._fault("non_ip", "vlan_too_many_tags", f"more than {MAX_VLAN_TAGS} VLAN tags", frame)
                return off, -1
            ethertype = _U16(data, off + 2)[0]
            off += 4
        return off, ethertype

    def _link_header(self, data: bytes, need: int, name: str, frame: Frame) -> bool:
        if len(data) >= need:
            return True
        self._fault("truncated_link", "link_truncated", f"{len(data)}-byte frame for a {need}-byte {name} "
                    "header", frame, len(data) < frame[3])
        return False

    def _address_family(self, family: int) -> tuple[int, int]:
        if family == AF_INET:
            return 4, ETHERTYPE_IPV4
        if family in AF_INET6_VALUES:
            return 4, ETHERTYPE_IPV6
        self.counters["non_ip"] += 1
        return 4, -1

    def _link_null(self, data: bytes, frame: Frame) -> tuple[int, int]:
        """BSD loopback: a 4-byte address family in the capturing host's byte order."""
        if not self._link_header(data, 4, "loopback", frame):
            return 0, -1
        family = _U32_LE(data, 0)[0]
        if family > 0xFFFF:  # written by a big-endian host
            family = _U32_BE(data, 0)[0]
        return self._address_family(family)

    def _link_loop(self, data: bytes, frame: Frame) -> tuple[int, int]:
        """OpenBSD loopback: the address family in network byte order."""
        if not self._link_header(data, 4, "loopback", frame):
            return 0, -1
        return self._address_family(_U32_BE(data, 0)[0])

    def _link_raw(self, data: bytes, frame: Frame) -> tuple[int, int]:
        """Raw IP: the version nibble says which."""
        if not self._link_header(data, 1, "raw IP", frame):
            return 0, -1
        version = data[0] >> 4
        if version == 4:
            return 0, ETHERTYPE_IPV4
        if version == 6:
            return 0, ETHERTYPE_IPV6
        self._fault("bad_ip_header", "ip_version_mismatch", f"raw IP frame with version {version}", frame)
        return 0, -1

    def _link_ipv4(self, data: bytes, frame: Frame) -> tuple[int, int]:
        return 0, ETHERTYPE_IPV4

    def _link_ipv6(self, data: bytes, frame: Frame) -> tuple[int, int]:
        return 0, ETHERTYPE_IPV6

    def _link_sll(self, data: bytes, frame: Frame) -> tuple[int, int]:
        """Linux cooked capture v1: 16 bytes, the protocol (an ethertype) last."""
        if not self._link_header(data, 16, "Linux SLL", frame):
            return 0, -1
        ethertype = _U16(data, 14)[0]
        if ethertype in VLAN_ETHERTYPES:
            return self._vlan_tags(data, 16, ethertype, frame)
        return 16, ethertype

    def _link_sll2(self, data: bytes, frame: Frame) -> tuple[int, int]:
        """Linux cooked capture v2: 20 bytes, the protocol (an ethertype) first."""
        if not self._link_header(data, 20, "Linux SLL2", frame):
            return 0, -1
        ethertype = _U16(data, 0)[0]
        if ethertype in VLAN_ETHERTYPES:
            return self._vlan_tags(data, 20, ethertype, frame)
        return 20, ethertype

    # -- IP details off the hot path --------------------------------------------------------

    def _bad_ipv4_header(self, version_ihl: int, frame: Frame) -> None:
        if version_ihl >> 4 != 4:
            self._fault("bad_ip_header", "ip_version_mismatch",
                        f"IPv4 packet with version {version_ihl >> 4}", frame)
        else:
            self._fault("bad_ip_header", "ipv4_bad_header_length",
                        f"IPv4 header length {(version_ihl & 0x0F) << 2} below 20", frame)

    def _ipv4_length(self, total_len: int, ihl: int, off: int, size: int, frame: Frame, snapped: bool) -> int:
        """The end of the IPv4 packet in the frame when the total length disagrees; -1 to drop it."""
        if total_len == 0:
            self.counters["ipv4_zero_total_length"] += 1
            end = size
        elif total_len < ihl:
            self._fault("bad_ip_header", "ipv4_bad_total_length",
                        f"IPv4 total length {total_len} below the header length {ihl}", frame)
            return -1
        elif snapped:  # the capture's snap length cut the packet: counted, not an anomaly
            self.counters["snapped"] += 1
            end = size
        else:
            self._fault("truncated_ip", "ipv4_truncated",
                        f"IPv4 total length {total_len}, {size - off} bytes captured", frame)
            end = size
        if end - off < ihl:
            self._fault("truncated_ip", "ipv4_truncated", f"IPv4 header of {ihl} bytes cut short", frame,
                        snapped)
            return -1
        return end

    def _ipv6_length(self, payload_len: int, size: int, frame: Frame, snapped: bool) -> int:
        """The end of the IPv6 packet when the payload length is 0 or beyond the captured bytes."""
        if payload_len == 0:
            self.counters["ipv6_zero_payload_length"] += 1
        elif snapped:  # the capture's snap length cut the packet: counted, not an anomaly
            self.counters["snapped"] += 1
        else:
            self._fault("truncated_ip", "ipv6_truncated", f"IPv6 payload length {payload_len}, fewer bytes captured",
                        frame)
        return size

    def _ipv6_extensions(self, data: bytes, start: int, end: int, proto: int, src: bytes, dst: bytes,
                         frame: Frame, snapped: bool, cut: bool) -> tuple[int, int] | Packet | None:
        """Walk IPv6 extension headers: (transport protocol, its offset), or a reassembled Packet/None.

        ``cut`` says the packet has fewer bytes than its payload length: a fragment of it is not kept.
        """
        for _ in range(MAX_IPV6_EXTENSION_HEADERS):
            if proto in _IPV6_OPTION_HEADERS or proto == _IPV6_AH:
                if end - start < 8:
                    self._fault("bad_ipv6_extension", "ipv6_extension_truncated",
                                f"extension header {proto} cut short", frame, snapped)
                    return None
                length = (data[start + 1] + 2) << 2 if proto == _IPV6_AH else (data[start + 1] + 1) << 3
                proto = data[start]
                start += length
                if start > end:
                    self._fault("bad_ipv6_extension", "ipv6_extension_truncated",
                                f"extension header of {length} bytes cut short", frame, snapped)
                    return None
            elif proto == _IPV6_FRAGMENT:
                if end - start < 8:
                    self._fault("bad_ipv6_extension", "ipv6_extension_truncated", "fragment header cut short",
                                frame, snapped)
                    return None
                proto = data[start]
                offset_flags = _U16(data, start + 2)[0]
                start += 8
                if offset_flags & 0xFFF9:  # an offset or more-fragments: a real fragment
                    ident = _U32_BE(data, start - 4)[0]
                    return self._ipv6_fragment(data, start, end, ident, offset_flags, proto, src, dst, frame,
                                               cut)
                # an atomic fragment (offset 0, no more fragments) is a whole packet
            else:
                return proto, start
        self._fault("bad_ipv6_extension", "ipv6_too_many_extensions",
                    f"more than {MAX_IPV6_EXTENSION_HEADERS} extension headers", frame)
        return None

    # -- fragments --------------------------------------------------------------------------

    # A completed datagram is decoded again as one unfragmented packet behind a minimal IP header
    # (options and extension headers before the fragment header are not kept).

    def _ipv4_fragment(self, data: bytes, start: int, end: int, ident: int, frag: int, proto: int,
                       src: bytes, dst: bytes, frame: Frame, cut: bool) -> Packet | None:
        self.counters["ipv4_fragments"] += 1
        if cut:  # bytes missing from the capture: the datagram cannot be rebuilt
            self.counters["fragments_dropped"] += 1
            return None
        done = self._fragments.add((4, src, dst, ident, proto), (frag & 0x1FFF) << 3, data[start:end],
                                   bool(frag & 0x2000), frame[0], frame[4], frame[3], 0xFFFF - 20)
        if done is None:
            return None
        self.counters["ipv4_reassembled"] += 1
        payload, wire_len = done
        header = _IPV4_SYNTHETIC(0x45, 0, 20 + len(payload), ident, 0, 64, proto, 0, src, dst)
        return self._decode_reassembled(frame, LINKTYPE_IPV4, header + payload, wire_len)

    def _ipv6_fragment(self, data: bytes, start: int, end: int, ident: int, offset_flags: int, proto: int,
                       src: bytes, dst: bytes, frame: Frame, cut: bool) -> Packet | None:
        self.counters["ipv6_fragments"] += 1
        if cut:
            self.counters["fragments_dropped"] += 1
            return None
        if self._in_reassembled:  # a fragment header inside a reassembled datagram
            self.counters["fragments_dropped"] += 1
            self._anomaly("fragment_nested", "fragment header inside a reassembled datagram", frame[0],
                          frame[4])
            return None
        done = self._fragments.add((6, src, dst, ident, proto), offset_flags & 0xFFF8, data[start:end],
                                   bool(offset_flags & 1), frame[0], frame[4], frame[3], 0xFFFF)
        if done is None:
            return None
        self.counters["ipv6_reassembled"] += 1
        payload, wire_len = done
        header = _IPV6_SYNTHETIC(0x60000000, len(payload), proto, 64, src, dst)
        return self._decode_reassembled(frame, LINKTYPE_IPV6, header + payload, wire_len)

    def _decode_reassembled(self, frame: Frame, linktype: int, datagram: bytes,
                            wire_len: int) -> Packet | None:
        self._in_reassembled = True
        try:
            packet = self.decode(Frame(frame[0], linktype, datagram, len(datagram), frame[4]))
        finally:
            self._in_reassembled = False
        if packet is not None:
            packet.wire_len = wire_len  # every fragment's bytes on the wire
        return packet

    def _bad_tcp_header(self, data_offset: int, available: int, frame: Frame, snapped: bool) -> None:
        if data_offset < 20:
            self._fault("bad_tcp_header", "tcp_bad_header_length", f"TCP data offset {data_offset} below 20",
                        frame)
        elif snapped:
            self.counters["truncated_tcp"] += 1
        else:
            self._fault("bad_tcp_header", "tcp_bad_header_length",
                        f"TCP data offset {data_offset} beyond the {available}-byte segment", frame)
