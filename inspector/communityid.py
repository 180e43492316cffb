"""Community ID v1 flow hashing (https://github.com/corelight/community-id-spec).

`sha1(seed ‖ saddr ‖ daddr ‖ proto ‖ 0 ‖ sport ‖ dport)`, endpoints ordered so the smaller
(address, port) comes first, base64 of the digest, prefixed "1:". ICMP type/code stand in for
ports, with the request/reply pairing the spec defines so both directions hash alike.
"""

from __future__ import annotations

import base64
import hashlib
import struct

from inspector.capture.packet import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP

_PORT_PROTOS = frozenset({IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP, IPPROTO_ICMP, IPPROTO_ICMPV6})

# ICMP type -> the type of its counterpart (spec: "ICMP and ICMPv6 treatment").
_ICMP4_PAIRS = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
_ICMP6_PAIRS = {128: 129, 129: 128, 133: 134, 134: 133, 135: 136, 136: 135, 130: 131, 131: 130,
                144: 145, 145: 144, 146: 147, 147: 146}
_ICMP6_ONE_WAY_REQUESTS = frozenset({139, 140})  # node information query/response: no pairing


def _icmp_ports(proto: int, icmp_type: int, icmp_code: int) -> tuple[int, int, bool]:
    """(sport, dport, is_one_way) for an ICMP type/code, as the spec maps them."""
    pairs = _ICMP4_PAIRS if proto == IPPROTO_ICMP else _ICMP6_PAIRS
    if icmp_type in pairs:
        return icmp_type, pairs[icmp_type], False
    return icmp_type, icmp_code, True


def community_id(src: bytes, dst: bytes, proto: int, sport: int, dport: int, seed: int = 0) -> str:
    """Community ID v1 of a flow from raw addresses (4 or 16 bytes) and ports.

    For ICMP/ICMPv6, pass the type as `sport` and the code as `dport`.
    """
    one_way = False
    if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        sport, dport, one_way = _icmp_ports(proto, sport, dport)
    # One-way ICMP messages are hashed in the direction seen; everything else is ordered.
    if not one_way and (src, sport) > (dst, dport):
        src, dst, sport, dport = dst, src, dport, sport
    data = struct.pack("!H", seed) + src + dst + struct.pack("!BB", proto, 0)
    if proto in _PORT_PROTOS:
        data += struct.pack("!HH", sport, dport)
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")
