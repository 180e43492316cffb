"""The flow identity of a live connection: what `inspector.records.base_record` needs.

Offline a record's source and destination are the TCP flow's client and server. Live they are
the client's connection to the sidecar: `src_ip`/`src_port` the client, `dest_ip`/`dest_port`
the address the client connected to (the sidecar's listener), which is what a network sensor in
front of the pod would see. The upstream leg is the sidecar's own business.

`flow_id` is derived from the Community ID and the connection's start time, as offline, so the
records of one client connection share it.

With a segmentation policy, `zones` holds the connection's (source, destination) zones. The
destination zone is the upstream server's, not the listener's (inspector.policy.zones.
proxied_destination): `dest_ip` stays the listener, `dest_zone` says where the flow really goes.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from inspector.capture.packet import IPPROTO_TCP, IPPROTO_UDP
from inspector.communityid import community_id

_PROTO_NAMES = {IPPROTO_TCP: "TCP", IPPROTO_UDP: "UDP"}


def _address(host: str) -> tuple[str, bytes]:
    """(text, packed) of a socket address host; IPv4-mapped IPv6 folded to IPv4."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host, b""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address), address.packed


@dataclass(slots=True)
class LiveFlowInfo:
    """FlowInfo (inspector.records) of one client connection."""

    flow_id: int
    community_id: str
    src_text: str
    dest_text: str
    client_port: int
    server_port: int
    app_proto: str
    proto: int = IPPROTO_TCP
    #: (src_zone, dest_zone or None while the upstream address is unknown) when a policy is loaded.
    zones: tuple[str, str | None] | None = None

    @property
    def proto_name(self) -> str:
        return _PROTO_NAMES.get(self.proto, str(self.proto))


def flow_info(peer: tuple | None, sock: tuple | None, started: float, *, proto: int = IPPROTO_TCP,
              app_proto: str = "") -> LiveFlowInfo:
    """The flow identity of a connection from `peer` (the client) to `sock` (our listener)."""
    src_host, src_port = (peer[0], int(peer[1])) if peer else ("0.0.0.0", 0)
    dest_host, dest_port = (sock[0], int(sock[1])) if sock else ("0.0.0.0", 0)
    src_text, src_packed = _address(src_host)
    dest_text, dest_packed = _address(dest_host)
    if src_packed and len(src_packed) == len(dest_packed):
        cid = community_id(src_packed, dest_packed, proto, src_port, dest_port)
    else:
        cid = ""
    digest = hashlib.blake2b(f"{cid}|{src_text}|{src_port}|{started!r}".encode(), digest_size=8).digest()
    return LiveFlowInfo(flow_id=int.from_bytes(digest, "big") & ((1 << 51) - 1), community_id=cid,
                        src_text=src_text, dest_text=dest_text, client_port=src_port,
                        server_port=dest_port, app_proto=app_proto, proto=proto)
