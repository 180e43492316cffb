"""Address -> zone: longest-prefix match over the policy's CIDRs, IPv4 and IPv6.

Each address family keeps one dict per prefix length present (network number -> zone), tried
from the longest prefix down: a lookup is a handful of dict probes whatever the number of CIDRs.
An address in no zone (or not an address at all) is in the policy's unknown zone. IPv4-mapped
IPv6 addresses (`::ffff:10.0.0.1`) are looked up as IPv4; a zone id (`fe80::1%eth0`) is ignored.
Results are cached per address text (bounded), and callers look up once per flow.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from inspector.policy.model import Zone

#: Distinct addresses whose zone is remembered; the cache is emptied when it fills.
CACHE_SIZE = 65536

_V4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"


class ZoneMap:
    """Zone of an address by longest-prefix match."""

    def __init__(self, zones: Iterable[Zone], unknown_zone: str) -> None:
        self.unknown_zone = unknown_zone
        by_family: dict[int, dict[int, dict[int, str]]] = {4: {}, 6: {}}
        for zone in zones:
            for network in zone.cidrs:
                table = by_family[network.version].setdefault(network.prefixlen, {})
                table[int(network.network_address)] = zone.name
        self._tables = {
            version: [(self._mask(version, length), table) for length, table in sorted(tables.items(), reverse=True)]
            for version, tables in by_family.items()
        }
        self._cache: dict[str, str] = {}

    @staticmethod
    def _mask(version: int, length: int) -> int:
        bits = 32 if version == 4 else 128
        return ((1 << length) - 1) << (bits - length) if length else 0

    def lookup(self, address: str | None) -> str:
        """The zone of `address` (text form, as EVE writes it)."""
        if not address:
            return self.unknown_zone
        cache = self._cache
        zone = cache.get(address)
        if zone is None:
            zone = self._find(address)
            if len(cache) >= CACHE_SIZE:
                cache.clear()
            cache[address] = zone
        return zone

    def _find(self, address: str) -> str:
        parsed = parse_address(address)
        if parsed is None:
            return self.unknown_zone
        version, value = parsed
        for mask, table in self._tables[version]:
            zone = table.get(value & mask)
            if zone is not None:
                return zone
        return self.unknown_zone


def parse_address(text: str) -> tuple[int, int] | None:
    """(4 or 6, integer value) of an address text, IPv4-mapped IPv6 as IPv4; None if not one."""
    try:
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except OSError:
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, text.split("%", 1)[0])
    except (OSError, ValueError):
        return None
    if packed.startswith(_V4_MAPPED_PREFIX):
        return 4, int.from_bytes(packed[12:], "big")
    return 6, int.from_bytes(packed, "big")


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address.lower() == "localhost"
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    return parsed.is_loopback


def proxied_destination(listener: str | None, upstream_host: str | None,
                        upstream_peer: str | None = None) -> str | None:
    """The address whose zone is a proxied flow's destination zone (the live sidecar).

    A live record's `dest_ip` is the sidecar's listener (what a sensor in front of the pod sees);
    the flow's real destination is the upstream server: its connected address when known, else
    the upstream host when it is an address. An upstream on loopback is the server the sidecar
    shares its pod (or host) with, whose network address is the listener's: that is used. A
    hostname upstream not yet connected gives None (not known yet)."""
    upstream = upstream_peer or (upstream_host if upstream_host and parse_address(upstream_host) else None)
    if upstream is None:
        if upstream_host and upstream_host.lower() == "localhost":
            return listener
        return None
    if is_loopback(upstream):
        return listener
    return upstream
