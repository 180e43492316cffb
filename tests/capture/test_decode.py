"""PacketDecoder: link types, IPv4/IPv6, TCP/UDP/ICMP, fragments and anomalies.

Frames are built with scapy (or byte by byte where scapy has no layer) and read back from real
captures; packets are compared field by field with dpkt's parse of the same corpus frames.
"""

from __future__ import annotations

import csv
import random
import struct
from pathlib import Path

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    fragment6,
)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether

from inspector.capture.decode import (
    DECODER_COUNTERS,
    MAX_PENDING_ANOMALIES,
    DecodeAnomaly,
    PacketDecoder,
)
from inspector.capture.packet import ACK, PSH, SYN, Frame, Packet
from inspector.capture.reader import open_capture
from inspector.limits import Limits

MAC_A, MAC_B = "02:00:00:00:00:01", "02:00:00:00:00:02"
A4, B4 = "192.0.2.1", "198.51.100.7"
A6, B6 = "2001:db8::1", "2001:db8::2"
RAW_A4, RAW_B4 = bytes([192, 0, 2, 1]), bytes([198, 51, 100, 7])
RAW_A6 = bytes.fromhex("20010db8000000000000000000000001")
RAW_B6 = bytes.fromhex("20010db8000000000000000000000002")


def eth() -> Ether:
    """An Ethernet header with fixed addresses (scapy would otherwise look routes and ARP up)."""
    return Ether(src=MAC_A, dst=MAC_B)


TCP4 = (IP(src=A4, dst=B4) / TCP(sport=40000, dport=8000, seq=1000, ack=2000, flags="PA")
        / b"GET / HTTP/1.1\r\n")
TCP6 = IPv6(src=A6, dst=B6) / TCP(sport=40001, dport=50051, seq=7, ack=9, flags="S") / b"PRI *"


def frame(data: bytes, linktype: int = 1, *, wire_len: int | None = None, ts: float = 10.0,
          number: int = 1) -> Frame:
    return Frame(ts, linktype, data, len(data) if wire_len is None else wire_len, number)


def decode_one(data: bytes, linktype: int = 1, **kwargs: object) -> tuple[Packet | None, PacketDecoder]:
    decoder = PacketDecoder()
    return decoder.decode(frame(data, linktype, **kwargs)), decoder  # type: ignore[arg-type]


def nonzero(decoder: PacketDecoder) -> dict[str, int]:
    return {name: value for name, value in decoder.counters.items() if value}


def assert_tcp4(packet: Packet | None) -> None:
    assert packet is not None
    assert (packet.ip_version, packet.src, packet.dst, packet.proto) == (4, RAW_A4, RAW_B4, 6)
    assert (packet.sport, packet.dport, packet.seq, packet.ack) == (40000, 8000, 1000, 2000)
    assert packet.flags == PSH | ACK
    assert packet.payload == b"GET / HTTP/1.1\r\n"


def assert_tcp6(packet: Packet | None) -> None:
    assert packet is not None
    assert (packet.ip_version, packet.src, packet.dst, packet.proto) == (6, RAW_A6, RAW_B6, 6)
    assert (packet.sport, packet.dport, packet.seq, packet.ack, packet.flags) == (40001, 50051, 7, 9, SYN)
    assert packet.payload == b"PRI *"


# -- link types -------------------------------------------------------------------------------

def test_ethernet() -> None:
    data = bytes(eth() / TCP4)
    packet, decoder = decode_one(data, number=7, ts=123.5)
    assert_tcp4(packet)
    assert packet is not None
    assert (packet.ts, packet.number, packet.wire_len) == (123.5, 7, len(data))
    assert nonzero(decoder) == {}
    assert_tcp6(decode_one(bytes(eth() / TCP6))[0])


@pytest.mark.parametrize("tags", [
    [Dot1Q(vlan=10)],
    [Dot1AD(vlan=100), Dot1Q(vlan=10)],
    [Dot1Q(vlan=1), Dot1Q(vlan=2), Dot1Q(vlan=3)],
])
def test_vlan_stacks(tags: list) -> None:
    layers = eth()
    for tag in tags:
        layers = layers / tag
    assert_tcp4(decode_one(bytes(layers / TCP4))[0])
    assert_tcp6(decode_one(bytes(layers / TCP6))[0])


def test_pre_standard_qinq_tag_0x9100() -> None:
    inner = bytes(Dot1Q(vlan=20) / TCP4)
    data = bytes(6) + bytes(6) + b"\x91\x00" + struct.pack("!H", 30) + b"\x81\x00" + inner
    assert_tcp4(decode_one(data)[0])


def test_too_many_vlan_tags() -> None:
    data = bytes(12) + b"\x81\x00\x00\x01" * 9 + b"\x08\x00" + bytes(TCP4)
    packet, decoder = decode_one(data)
    assert packet is None
    assert [a.event for a in decoder.drain_anomalies()] == ["vlan_too_many_tags"]


def test_linux_sll_and_sll2() -> None:
    assert_tcp4(decode_one(bytes(CookedLinux(proto=0x0800) / TCP4), 113)[0])
    assert_tcp6(decode_one(bytes(CookedLinux(proto=0x86DD) / TCP6), 113)[0])
    assert_tcp4(decode_one(bytes(CookedLinuxV2(proto=0x0800) / TCP4), 276)[0])
    assert_tcp6(decode_one(bytes(CookedLinuxV2(proto=0x86DD) / TCP6), 276)[0])
    assert_tcp4(decode_one(bytes(CookedLinux(proto=0x8100) / Dot1Q(vlan=5) / TCP4), 113)[0])
    packet, decoder = decode_one(bytes(CookedLinux(proto=0x0806) / ARP()), 113)
    assert packet is None and nonzero(decoder) == {"non_ip": 1}


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize(("family", "layer"), [(2, TCP4), (24, TCP6), (28, TCP6), (30, TCP6)])
def test_bsd_null_loopback_either_byte_order(order: str, family: int, layer: object) -> None:
    packet, _ = decode_one(struct.pack(order + "I", family) + bytes(layer), 0)  # type: ignore[arg-type]
    (assert_tcp4 if family == 2 else assert_tcp6)(packet)


def test_null_loopback_unknown_family() -> None:
    packet, decoder = decode_one(struct.pack("<I", 7) + bytes(TCP4), 0)
    assert packet is None and nonzero(decoder) == {"non_ip": 1}


def test_openbsd_loop_is_network_order() -> None:
    assert_tcp4(decode_one(struct.pack("!I", 2) + bytes(TCP4), 108)[0])
    assert_tcp6(decode_one(struct.pack("!I", 24) + bytes(TCP6), 108)[0])
    packet, decoder = decode_one(struct.pack("<I", 2) + bytes(TCP4), 108)
    assert packet is None and nonzero(decoder) == {"non_ip": 1}


@pytest.mark.parametrize("linktype", [101, 12, 14])
def test_raw_ip(linktype: int) -> None:
    assert_tcp4(decode_one(bytes(TCP4), linktype)[0])
    assert_tcp6(decode_one(bytes(TCP6), linktype)[0])
    packet, decoder = decode_one(b"\x50" + bytes(39), linktype)
    assert packet is None
    assert [a.event for a in decoder.drain_anomalies()] == ["ip_version_mismatch"]


def test_linktype_ipv4_and_ipv6() -> None:
    assert_tcp4(decode_one(bytes(TCP4), 228)[0])
    assert_tcp6(decode_one(bytes(TCP6), 229)[0])
    packet, decoder = decode_one(bytes(TCP6), 228)  # tcpdump's LINKTYPE_IPV4_invalid case
    assert packet is None and decoder.counters["bad_ip_header"] == 1


def test_unsupported_linktype_counted_and_reported_once() -> None:
    decoder = PacketDecoder()
    for number in range(1, 4):
        assert decoder.decode(frame(bytes(TCP4), 105, number=number)) is None
    assert decoder.decode(frame(bytes(TCP4), 127)) is None
    assert decoder.counters["unsupported_linktype"] == 4
    anomalies = decoder.drain_anomalies()
    assert [(a.event, a.number) for a in anomalies] == [("unsupported_linktype", 1)] * 2
    assert "105" in anomalies[0].message and "127" in anomalies[1].message
    assert decoder.drain_anomalies() == []


@pytest.mark.parametrize(("linktype", "need"), [(1, 14), (113, 16), (276, 20), (0, 4), (108, 4)])
def test_frames_shorter_than_the_link_header(linktype: int, need: int) -> None:
    packet, decoder = decode_one(bytes(need - 1), linktype)
    assert packet is None
    assert nonzero(decoder) == {"truncated_link": 1}
    assert [a.event for a in decoder.drain_anomalies()] == ["link_truncated"]
    _, snapped = decode_one(bytes(need - 1), linktype, wire_len=100)
    assert snapped.drain_anomalies() == []  # the snap length explains it: counted only


def test_non_ip_ethertypes_are_counted() -> None:
    packet, decoder = decode_one(bytes(eth() / ARP()))
    assert packet is None and nonzero(decoder) == {"non_ip": 1}
    assert decoder.drain_anomalies() == []


# -- IPv4 ---------------------------------------------------------------------------------------

def test_ethernet_padding_is_trimmed() -> None:
    small = IP(src=A4, dst=B4) / TCP(sport=1, dport=2, flags="A") / b"hi"
    data = bytes(eth() / small) + b"\xee" * 4  # padded to the 60-byte minimum
    packet, decoder = decode_one(data)
    assert packet is not None and packet.payload == b"hi"
    assert nonzero(decoder) == {"ip_trailing_bytes": 1}


def test_total_length_beyond_captured_bytes() -> None:
    data = bytes(eth() / TCP4)
    packet, decoder = decode_one(data[:-4])  # not snapped: the packet lies about its length
    assert packet is not None and packet.payload == b"GET / HTTP/1.1"[:-2]
    assert nonzero(decoder) == {"truncated_ip": 1}
    anomaly = decoder.drain_anomalies()[0]
    assert anomaly.event == "ipv4_truncated"
    assert anomaly.message == "IPv4 total length 56, 52 bytes captured"

    assert packet.missing == 0  # a lie, not a loss: the stream is not told of missing bytes

    packet, decoder = decode_one(data[:-4], wire_len=len(data))  # snapped by the capture
    assert packet is not None and packet.payload == b"GET / HTTP/1.1"[:-2]
    assert nonzero(decoder) == {"snapped": 1} and decoder.drain_anomalies() == []
    assert packet.missing == 4  # the payload's last 4 bytes, which the stream will count as a gap


def test_snapped_ipv6_and_a_length_claiming_more_than_the_wire_held() -> None:
    data = bytes(eth() / IPv6(src=A6, dst=B6) / TCP(sport=1, dport=2, flags="PA") / (b"x" * 1000))
    packet, decoder = decode_one(data[:100], wire_len=len(data))  # tcpdump -s 100
    assert packet is not None and packet.payload == b"x" * 26 and packet.missing == 1000 - 26
    assert nonzero(decoder) == {"snapped": 1} and decoder.drain_anomalies() == []

    lying = bytearray(bytes(eth() / TCP4))
    lying[16:18] = (1400).to_bytes(2, "big")  # IPv4 total length 1400 in a frame of 70 bytes on the wire
    packet, decoder = decode_one(bytes(lying[:60]), wire_len=70)
    assert packet is not None and packet.missing == 10  # only what the wire held and the capture did not keep


def test_bad_ipv4_header_length_and_total_length() -> None:
    data = bytearray(bytes(eth() / TCP4))
    data[14] = 0x44  # IHL 4 words
    packet, decoder = decode_one(bytes(data))
    assert packet is None
    assert [(a.event, a.message) for a in decoder.drain_anomalies()] == [
        ("ipv4_bad_header_length", "IPv4 header length 16 below 20")]
    data[14] = 0x45
    data[16:18] = struct.pack("!H", 12)
    packet, decoder = decode_one(bytes(data))
    assert packet is None
    assert [a.event for a in decoder.drain_anomalies()] == ["ipv4_bad_total_length"]


def test_ipv4_options_are_skipped() -> None:
    packet = decode_one(bytes(eth() / IP(src=A4, dst=B4, options=[b"\x01\x01\x01\x00"])
                             / TCP(sport=40000, dport=8000, seq=1000, ack=2000, flags="PA")
                             / b"GET / HTTP/1.1\r\n"))[0]
    assert_tcp4(packet)


def test_zero_total_length_is_segmentation_offload() -> None:
    data = bytearray(bytes(eth() / TCP4))
    data[16:18] = b"\0\0"
    packet, decoder = decode_one(bytes(data))
    assert_tcp4(packet)
    assert nonzero(decoder) == {"ipv4_zero_total_length": 1}


def test_tcp_header_checks() -> None:
    data = bytearray(bytes(eth() / TCP4))
    tcp = 14 + 20
    data[tcp + 12] = 0x40  # data offset 16 bytes
    packet, decoder = decode_one(bytes(data))
    assert packet is None
    assert [a.event for a in decoder.drain_anomalies()] == ["tcp_bad_header_length"]
    data[tcp + 12] = 0xF0  # 60 bytes: beyond the 36-byte segment
    packet, decoder = decode_one(bytes(data))
    assert packet is None and nonzero(decoder) == {"bad_tcp_header": 1}
    assert "beyond the 36-byte segment" in decoder.drain_anomalies()[0].message
    packet, decoder = decode_one(bytes(eth() / IP(src=A4, dst=B4, proto=6) / b"short"))
    assert packet is None and nonzero(decoder) == {"truncated_tcp": 1}


def test_tcp_options_are_skipped() -> None:
    segment = IP(src=A4, dst=B4) / TCP(sport=40000, dport=8000, seq=1000, ack=2000, flags="PA",
                                       options=[("MSS", 1460), ("NOP", None), ("WScale", 7)])
    assert_tcp4(decode_one(bytes(eth() / segment / b"GET / HTTP/1.1\r\n"))[0])


def test_udp() -> None:
    data = bytes(eth() / IP(src=A4, dst=B4) / UDP(sport=5353, dport=53) / b"query")
    packet, decoder = decode_one(data)
    assert packet is not None
    assert (packet.proto, packet.sport, packet.dport, packet.flags, packet.seq, packet.payload) == (
        17, 5353, 53, 0, 0, b"query")
    shortened = bytearray(data)
    shortened[14 + 20 + 4:14 + 20 + 6] = struct.pack("!H", 10)  # UDP length says 2 bytes of data
    assert decode_one(bytes(shortened))[0].payload == b"qu"  # type: ignore[union-attr]
    shortened[14 + 20 + 4:14 + 20 + 6] = struct.pack("!H", 3)
    packet, decoder = decode_one(bytes(shortened))
    assert packet is None and [a.event for a in decoder.drain_anomalies()] == ["udp_bad_length"]


def test_icmp_type_and_code_stand_for_ports() -> None:
    packet = decode_one(bytes(eth() / IP(src=A4, dst=B4) / ICMP(type=8, code=0, id=1, seq=2) / b"ping"))[0]
    assert packet is not None
    assert (packet.proto, packet.sport, packet.dport, packet.payload) == (1, 8, 0, b"\x00\x01\x00\x02ping")
    packet = decode_one(bytes(eth() / IP(src=A4, dst=B4) / ICMP(type=3, code=3)))[0]
    assert packet is not None and (packet.sport, packet.dport) == (3, 3)
    packet = decode_one(bytes(eth() / IPv6(src=A6, dst=B6) / ICMPv6EchoRequest(id=1, seq=1)))[0]
    assert packet is not None and (packet.proto, packet.sport, packet.dport) == (58, 128, 0)


def test_other_protocols_have_zero_ports_and_the_payload() -> None:
    packet = decode_one(bytes(eth() / IP(src=A4, dst=B4, proto=47) / b"\x00\x00\x08\x00gre"))[0]
    assert packet is not None
    assert (packet.proto, packet.sport, packet.dport, packet.payload) == (47, 0, 0, b"\x00\x00\x08\x00gre")


# -- IPv6 ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("extensions", [
    [IPv6ExtHdrHopByHop()],
    [IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(), IPv6ExtHdrRouting(addresses=[B6])],
    [IPv6ExtHdrDestOpt(), AH(nh=6, payloadlen=4, spi=1, seq=1, icv=b"\0" * 12)],  # 24 bytes: (6 - 2) words
    [IPv6ExtHdrFragment(offset=0, m=0, id=5)],  # an atomic fragment is a whole packet
])
def test_ipv6_extension_headers_are_walked(extensions: list) -> None:
    layers = IPv6(src=A6, dst=B6)
    for header in extensions:
        layers = layers / header
    segment = TCP(sport=40001, dport=50051, seq=7, ack=9, flags="S") / b"PRI *"
    packet, decoder = decode_one(bytes(eth() / layers / segment))
    assert_tcp6(packet)
    assert nonzero(decoder) == {}


def test_ipv6_extension_header_limits() -> None:
    data = bytes(eth() / IPv6(src=A6, dst=B6) / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt())
    packet = decode_one(data)[0]
    assert packet is not None and packet.proto == 59  # "no next header": nothing behind
    layers = IPv6(src=A6, dst=B6)
    for _ in range(17):
        layers = layers / IPv6ExtHdrDestOpt()
    packet, decoder = decode_one(bytes(eth() / layers / TCP()))
    assert packet is None and [a.event for a in decoder.drain_anomalies()] == ["ipv6_too_many_extensions"]
    cut = bytes(eth() / IPv6(src=A6, dst=B6, plen=4) / IPv6ExtHdrHopByHop())[:14 + 44]
    packet, decoder = decode_one(cut)
    assert packet is None and [a.event for a in decoder.drain_anomalies()] == ["ipv6_extension_truncated"]


def test_ipv6_payload_length_beyond_capture() -> None:
    data = bytes(eth() / TCP6)
    packet, decoder = decode_one(data[:-2])
    assert packet is not None and packet.payload == b"PRI"
    assert [a.event for a in decoder.drain_anomalies()] == ["ipv6_truncated"]


def test_ipv6_jumbogram_length_zero_uses_captured_bytes() -> None:
    data = bytearray(bytes(eth() / TCP6))
    data[18:20] = b"\0\0"
    packet, decoder = decode_one(bytes(data))
    assert_tcp6(packet)
    assert nonzero(decoder) == {"ipv6_zero_payload_length": 1}


# -- fragments ----------------------------------------------------------------------------------

def decode_all(frames: list[Frame]) -> tuple[list[Packet], PacketDecoder]:
    decoder = PacketDecoder()
    packets = [p for p in (decoder.decode(f) for f in frames) if p is not None]
    return packets, decoder


def fragment_frames(datagram: object, size: int, order: list[int] | None = None, ts_step: float = 0.001,
                    linktype: int = 1) -> list[Frame]:
    pieces = [bytes(eth() / piece) if linktype == 1 else bytes(piece) for piece in fragment(datagram, size)]
    order = order if order is not None else list(range(len(pieces)))
    return [frame(pieces[i], linktype, ts=1.0 + n * ts_step, number=n + 1) for n, i in enumerate(order)]


BIG_UDP = IP(src=A4, dst=B4, id=77) / UDP(sport=1111, dport=2222) / (bytes(range(256)) * 12)  # 3,100 bytes


@pytest.mark.parametrize("arrangement", ["in order", "reversed", "shuffled"])
def test_ipv4_fragments_reassembled_in_any_order(arrangement: str) -> None:
    count = len(fragment(BIG_UDP, 400))
    order = list(range(count))
    if arrangement == "reversed":
        order.reverse()
    elif arrangement == "shuffled":
        random.Random(4).shuffle(order)
    frames = fragment_frames(BIG_UDP, 400, order)
    packets, decoder = decode_all(frames)
    assert len(packets) == 1
    packet = packets[0]
    assert (packet.proto, packet.sport, packet.dport) == (17, 1111, 2222)
    assert packet.payload == bytes(range(256)) * 12
    assert packet.number == len(frames) and packet.ts == frames[-1].ts
    assert packet.wire_len == sum(f.wire_len for f in frames)
    assert decoder.counters["ipv4_fragments"] == count and decoder.counters["ipv4_reassembled"] == 1
    assert decoder.drain_anomalies() == []


def test_fragmented_tcp_segment() -> None:
    segment = IP(src=A4, dst=B4, id=9) / TCP(sport=40000, dport=8000, seq=1000, ack=2000, flags="PA") / (
        b"GET / HTTP/1.1\r\n" + b"x" * 1000)
    packets, _ = decode_all(fragment_frames(segment, 256))
    assert len(packets) == 1
    assert (packets[0].seq, packets[0].ack, packets[0].flags) == (1000, 2000, PSH | ACK)
    assert packets[0].payload == b"GET / HTTP/1.1\r\n" + b"x" * 1000


def test_overlapping_fragment_with_different_bytes_first_wins() -> None:
    datagram = IP(src=A4, dst=B4, id=5, proto=17) / UDP(sport=1, dport=2, len=40, chksum=0) / (b"A" * 32)
    raw = bytes(datagram)[20:]  # UDP header + 32 bytes
    first = IP(src=A4, dst=B4, id=5, proto=17, flags="MF", frag=0) / raw[:24]
    evil = IP(src=A4, dst=B4, id=5, proto=17, flags="MF", frag=2) / (b"B" * 16)  # rewrites bytes 16..31
    last = IP(src=A4, dst=B4, id=5, proto=17, frag=3) / raw[24:]
    frames = [frame(bytes(eth() / p), number=n) for n, p in enumerate([first, evil, last], 1)]
    packets, decoder = decode_all(frames)
    assert len(packets) == 1
    assert packets[0].payload == b"A" * 16 + b"B" * 8 + b"A" * 8  # the first bytes to arrive win
    anomalies = decoder.drain_anomalies()
    # the rewrite disagrees with the first fragment, then the last fragment disagrees with the rewrite
    assert [(a.event, a.number) for a in anomalies] == [("fragment_overlap", 2), ("fragment_overlap", 3)]
    assert decoder.counters["fragment_overlaps"] == 2


def test_duplicate_fragment_overlaps_without_anomaly() -> None:
    frames = fragment_frames(BIG_UDP, 400)
    frames.insert(2, frames[1])
    packets, decoder = decode_all(frames)
    assert len(packets) == 1 and packets[0].payload == bytes(range(256)) * 12
    assert decoder.counters["fragment_overlaps"] == 1 and decoder.drain_anomalies() == []


def test_fragment_sets_expire_on_capture_time() -> None:
    frames = fragment_frames(BIG_UDP, 400, ts_step=10.0)  # 8 fragments over 70 s, timeout 30 s
    packets, decoder = decode_all(frames)
    assert packets == []
    assert decoder.counters["fragments_expired"] >= 1
    decoder.flush()
    assert decoder.counters["fragments_incomplete"] == 1


def test_fragment_set_cap_evicts_the_oldest() -> None:
    decoder = PacketDecoder(Limits(max_fragment_sets=2))
    sets = [fragment_frames(IP(src=A4, dst=B4, id=i) / UDP() / bytes(2000), 1000) for i in range(3)]
    assert [len(pieces) for pieces in sets] == [3, 3, 3]
    for pieces in sets:
        assert decoder.decode(pieces[0]) is None
    assert decoder.counters["fragment_sets_evicted"] == 1  # set 0 made room for set 2
    assert [decoder.decode(piece) for piece in sets[2][1:]][-1] is not None
    assert [decoder.decode(piece) for piece in sets[0][1:]] == [None, None]  # its start is gone
    assert decoder.counters["fragment_sets_evicted"] == 1
    decoder.flush()
    assert decoder.counters["fragments_incomplete"] == 2  # set 1, and what came of set 0 after eviction


def test_ping_of_death_is_refused() -> None:
    last = IP(src=A4, dst=B4, id=3, proto=1, frag=8189) / (b"\0" * 100)  # ends at byte 65612
    packet, decoder = decode_one(bytes(eth() / last))
    assert packet is None
    assert [a.event for a in decoder.drain_anomalies()] == ["fragment_oversize"]


def test_snapped_fragments_are_not_reassembled() -> None:
    frames = fragment_frames(BIG_UDP, 400)
    frames[1] = frame(frames[1].data[:100], wire_len=frames[1].wire_len, number=2)
    packets, decoder = decode_all(frames)
    assert packets == [] and decoder.counters["fragments_dropped"] == 1


def test_ipv6_fragments_are_reassembled() -> None:
    datagram = IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(id=1234) / UDP(sport=9, dport=10) / (b"v6" * 900)
    pieces = fragment6(datagram, 500)
    assert len(pieces) > 2
    frames = [frame(bytes(eth() / p), number=n) for n, p in enumerate(reversed(pieces), 1)]
    packets, decoder = decode_all(frames)
    assert len(packets) == 1
    assert (packets[0].ip_version, packets[0].src, packets[0].proto, packets[0].dport) == (6, RAW_A6, 17, 10)
    assert packets[0].payload == b"v6" * 900
    assert decoder.counters["ipv6_fragments"] == len(pieces) and decoder.counters["ipv6_reassembled"] == 1


def test_fragment_inside_a_reassembled_ipv6_datagram_is_refused() -> None:
    inner = IPv6ExtHdrFragment(nh=17, offset=0, m=1, id=99) / UDP(sport=1, dport=2) / bytes(100)
    outer = IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(id=98) / inner
    pieces = fragment6(outer, 120)
    assert len(pieces) == 2
    packets, decoder = decode_all([frame(bytes(eth() / p), number=n) for n, p in enumerate(pieces, 1)])
    assert packets == []
    assert decoder.counters["ipv6_reassembled"] == 1 and decoder.counters["fragments_dropped"] == 1
    assert [a.event for a in decoder.drain_anomalies()] == ["fragment_nested"]


# -- anomalies and robustness -------------------------------------------------------------------

def test_counters_are_all_present_from_the_start() -> None:
    assert list(PacketDecoder().counters) == list(DECODER_COUNTERS)
    assert all(value == 0 for value in PacketDecoder().counters.values())


def test_undrained_anomalies_are_capped(monkeypatch) -> None:
    from inspector.capture import decode

    monkeypatch.setattr(decode, "MAX_ANOMALIES_PER_EVENT", MAX_PENDING_ANOMALIES * 2)  # the other cap, apart
    decoder = PacketDecoder()
    bad = bytearray(bytes(eth() / TCP4))
    bad[14] = 0x41
    for number in range(MAX_PENDING_ANOMALIES + 5):
        decoder.decode(frame(bytes(bad), number=number))
    assert len(decoder.drain_anomalies()) == MAX_PENDING_ANOMALIES
    assert decoder.counters["anomalies_dropped"] == 5
    assert decoder.counters["bad_ip_header"] == MAX_PENDING_ANOMALIES + 5


def test_identical_anomalies_are_written_up_to_the_cap_then_counted() -> None:
    from inspector.capture.decode import MAX_ANOMALIES_PER_EVENT

    decoder = PacketDecoder()
    bad = bytearray(bytes(eth() / TCP4))
    bad[14] = 0x41
    written = []
    for number in range(MAX_ANOMALIES_PER_EVENT + 7):
        decoder.decode(frame(bytes(bad), number=number))
        written += decoder.drain_anomalies()
    assert len(written) == MAX_ANOMALIES_PER_EVENT and "counted, not written" in written[-1].message
    assert decoder.counters["anomalies_capped"] == 7


def test_anomaly_carries_frame_time_and_number() -> None:
    bad = bytearray(bytes(eth() / TCP4))
    bad[14] = 0x43
    decoder = PacketDecoder()
    decoder.decode(frame(bytes(bad), ts=55.25, number=42))
    assert decoder.drain_anomalies() == [DecodeAnomaly(event="ipv4_bad_header_length",
                                                       message="IPv4 header length 12 below 20", ts=55.25,
                                                       number=42)]


LINKTYPES_UNDER_TEST = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 105]


@settings(max_examples=500, deadline=None)
@given(linktype=st.sampled_from(LINKTYPES_UNDER_TEST), data=st.binary(max_size=200),
       snapped=st.booleans())
def test_random_frames_never_raise(linktype: int, data: bytes, snapped: bool) -> None:
    decoder = PacketDecoder()
    packet = decoder.decode(Frame(1.0, linktype, data, len(data) + snapped, 1))
    assert packet is None or isinstance(packet, Packet)
    decoder.drain_anomalies()


SEED_FRAMES = [
    (1, bytes(eth() / Dot1Q() / TCP4)),
    (1, bytes(eth() / IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(m=1, id=3) / UDP())),
    (1, bytes(eth() / IP(id=1, flags="MF") / UDP() / bytes(40))),
    (113, bytes(CookedLinux(proto=0x86DD) / TCP6)),
    (0, struct.pack("<I", 2) + bytes(IP() / ICMP())),
    (276, bytes(CookedLinuxV2(proto=0x0800) / IP() / UDP(len=9))),
]


@settings(max_examples=500, deadline=None)
@given(seed=st.sampled_from(SEED_FRAMES), edits=st.lists(st.tuples(st.integers(0, 500), st.integers(0, 255)),
                                                         min_size=1, max_size=6),
       cut=st.integers(0, 500))
def test_mutated_frames_never_raise(seed: tuple[int, bytes], edits: list[tuple[int, int]], cut: int) -> None:
    linktype, original = seed
    data = bytearray(original)
    for position, value in edits:
        data[position % len(data)] = value
    decoder = PacketDecoder()
    for piece in (bytes(data), bytes(data[:cut])):
        decoder.decode(Frame(1.0, linktype, piece, len(original), 1))
    decoder.flush()


@settings(max_examples=100, deadline=None)
@given(pieces=st.lists(st.tuples(st.integers(0, 8191), st.booleans(), st.binary(max_size=64)), max_size=20))
def test_random_fragment_streams_never_raise(pieces: list[tuple[int, bool, bytes]]) -> None:
    decoder = PacketDecoder(Limits(max_fragment_sets=4))
    for number, (offset, more, payload) in enumerate(pieces, 1):
        ip = IP(src=A4, dst=B4, id=number % 3, proto=17, frag=offset, flags="MF" if more else 0) / payload
        decoder.decode(frame(bytes(ip), 228, ts=float(number), number=number))
    decoder.flush()


# -- real captures ------------------------------------------------------------------------------

def dpkt_network_layer(linktype: int, buf: bytes) -> object:
    if linktype == 1:
        return dpkt.ethernet.Ethernet(buf).data
    if linktype == 113:
        return dpkt.sll.SLL(buf).data
    if linktype == 0:
        return dpkt.loopback.Loopback(buf).data
    if linktype in (101, 228):
        return dpkt.ip.IP(buf) if buf[0] >> 4 == 4 else dpkt.ip6.IP6(buf)
    return None


@pytest.mark.corpus
def test_corpus_packets_equal_dpkt_parse(corpus_dir: Path) -> None:
    """Every TCP and UDP packet dpkt parses in the (non-fuzz) corpus decodes to the same fields."""
    with open(corpus_dir / "INVENTORY.tsv", newline="") as f:
        paths = [row["local_path"] for row in csv.DictReader(f, delimiter="\t")
                 if "fuzz" not in row["local_path"]]
    compared = {"tcp": 0, "udp": 0}
    for path in paths:
        decoder = PacketDecoder()
        with open_capture(corpus_dir / path) as reader:
            for fr in reader:
                packet = decoder.decode(fr)
                try:
                    ip = dpkt_network_layer(fr.linktype, fr.data)
                except (dpkt.UnpackError, IndexError, struct.error):
                    continue
                transport = getattr(ip, "data", None)
                if packet is None or not isinstance(transport, dpkt.tcp.TCP | dpkt.udp.UDP):
                    continue
                assert (packet.src, packet.dst) == (ip.src, ip.dst), (path, fr.number)  # type: ignore[union-attr]
                assert (packet.sport, packet.dport) == (transport.sport, transport.dport), (path, fr.number)
                assert packet.payload == transport.data, (path, fr.number)
                if isinstance(transport, dpkt.tcp.TCP):
                    assert (packet.seq, packet.ack, packet.flags) == (transport.seq, transport.ack,
                                                                       transport.flags & 0xFF)
                    compared["tcp"] += 1
                else:
                    compared["udp"] += 1
    assert compared["tcp"] > 14_000 and compared["udp"] > 900


@pytest.mark.corpus
def test_every_corpus_frame_decodes_without_raising(corpus_dir: Path) -> None:
    with open(corpus_dir / "INVENTORY.tsv", newline="") as f:
        paths = [row["local_path"] for row in csv.DictReader(f, delimiter="\t")]
    totals: dict[str, int] = {}
    for path in paths:
        decoder = PacketDecoder()
        with open_capture(corpus_dir / path) as reader:
            for fr in reader:
                decoder.decode(fr)
        decoder.flush()
        assert all(isinstance(a, DecodeAnomaly) for a in decoder.drain_anomalies())
        for name, value in decoder.counters.items():
            totals[name] = totals.get(name, 0) + value
    assert totals["ipv4_reassembled"] == 4 and totals["unsupported_linktype"] == 0


@pytest.mark.corpus
def test_socks5_fragments_match_scapy_defragment(corpus_dir: Path) -> None:
    """arkime's capture carries 4 TCP segments cut in 62 fragments; scapy's defragment() agrees."""
    from scapy.layers.inet import defragment
    from scapy.utils import rdpcap

    path = corpus_dir / "arkime/socks5-http-302-frag.pcap"
    expected = [(p[IP].id, bytes(p[TCP].payload)) for p in defragment(rdpcap(str(path)))
                if IP in p and p[IP].id in (27991, 28002, 35542, 35548)]
    decoder = PacketDecoder()
    rebuilt = []
    with open_capture(path) as reader:
        for fr in reader:
            done = decoder.counters["ipv4_reassembled"]
            packet = decoder.decode(fr)
            if decoder.counters["ipv4_reassembled"] > done:
                assert packet is not None
                rebuilt.append((fr.number, packet.sport, packet.dport, packet.payload))
    assert decoder.counters["ipv4_fragments"] == 62
    assert [r[:3] for r in rebuilt] == [(7, 1637, 21477), (9, 21477, 1637), (27, 1637, 21477),
                                        (67, 21477, 1637)]
    assert sorted(r[3] for r in rebuilt) == sorted(payload for _, payload in expected)
    assert rebuilt[2][3].startswith(b"GET / HTTP/1.1\r\nHost: www.google.com\r\n")
    assert rebuilt[3][3].startswith(b"HTTP/1.1 302 Found\r\n")
    assert decoder.drain_anomalies() == []


@pytest.mark.corpus
@pytest.mark.parametrize(("path", "event"), [
    ("tcpdump/ipv4_invalid_hdr_length.pcap", "ipv4_bad_header_length"),
    ("tcpdump/ipv4_invalid_total_length.pcap", "ipv4_truncated"),
    ("tcpdump/ipv4_invalid_length.pcap", "ipv4_truncated"),
    ("suricata-verify/ipv4-truncated/truncated.pcap", "ipv4_truncated"),
    ("tcpdump/LINKTYPE_IPV4_invalid.pcap", "ip_version_mismatch"),
])
def test_corpus_malformed_ipv4(corpus_dir: Path, path: str, event: str) -> None:
    with open_capture(corpus_dir / path) as reader:
        _, decoder = decode_all(list(reader))
    assert [a.event for a in decoder.drain_anomalies()] == [event]


@pytest.mark.corpus
def test_corpus_tso_frame_with_zero_total_length(corpus_dir: Path) -> None:
    with open_capture(corpus_dir / "tcpdump/ipv4_tcp_http_xml_tso.pcap") as reader:
        packets, decoder = decode_all(list(reader))
    assert decoder.counters["ipv4_zero_total_length"] == 1
    assert len(packets) == 1 and packets[0].payload.startswith(b"POST http://gwm-ml-a2.wsodqa.com/")
    assert len(packets[0].payload) == 2030 - 14 - 20 - 20


@pytest.mark.corpus
def test_corpus_link_types(corpus_dir: Path) -> None:
    """One real capture per link type: NULL (IPv6 gRPC), SLL, raw IP, LINKTYPE_IPV4."""
    cases = {
        "grpc-go-for-professionals/Unary.pcapng": (0, 50051),
        "lbirchler-tls-decryption/tls3/tls3.cryptohack.org.pcapng": (113, 443),
        "zeek/tcp/payload-syn.pcap": (101, 80),
        "zeek/http-261/variant-04-te_cl_desync.pcap": (228, 80),
    }
    for path, (linktype, port) in cases.items():
        with open_capture(corpus_dir / path) as reader:
            frames = list(reader)
        packets, _ = decode_all(frames)
        assert {f.linktype for f in frames} == {linktype}, path
        assert any(port in (p.sport, p.dport) for p in packets), path
    with open_capture(corpus_dir / "grpc-go-for-professionals/Unary.pcapng") as reader:
        packets, _ = decode_all(list(reader))
    grpc = [p for p in packets if 50051 in (p.sport, p.dport)]
    assert grpc and all(p.ip_version == 6 and p.dst == bytes(15) + b"\x01" for p in grpc)
