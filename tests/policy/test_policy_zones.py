"""Zone lookup: longest prefix over IPv4 and IPv6 CIDRs, the unknown zone, the live destination."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.policy.model import Zone
from inspector.policy.zones import ZoneMap, parse_address, proxied_destination


def zone(name: str, *cidrs: str) -> Zone:
    return Zone(name=name, plane="data", cidrs=tuple(ipaddress.ip_network(c) for c in cidrs))


ZONES = [zone("training", "10.10.0.0/16", "fd00:10::/48"), zone("mgmt", "10.10.5.0/24"),
         zone("host", "10.10.5.7/32"), zone("v6-host", "fd00:10::7/128"), zone("everything-v6", "::/0")]


@pytest.mark.parametrize(("address", "expected"), [
    ("10.10.1.1", "training"),
    ("10.10.5.1", "mgmt"),  # the /24 inside the /16 wins
    ("10.10.5.7", "host"),
    ("10.11.0.1", "outside"),
    ("::ffff:10.10.5.9", "mgmt"),  # IPv4-mapped IPv6 is looked up as IPv4
    ("fd00:10::1", "training"),
    ("fd00:10::7", "v6-host"),
    ("fe80::1%eth0", "everything-v6"),  # zone id ignored; ::/0 holds every IPv6 address
    ("2001:db8::1", "everything-v6"),
    ("not an address", "outside"),
    ("", "outside"),
    (None, "outside"),
])
def test_longest_prefix_match(address, expected):
    assert ZoneMap(ZONES, "outside").lookup(address) == expected


def test_results_are_cached_per_address_and_the_cache_is_bounded(monkeypatch):
    import inspector.policy.zones as zones

    monkeypatch.setattr(zones, "CACHE_SIZE", 3)
    table = ZoneMap(ZONES, "outside")
    for n in range(5):
        assert table.lookup(f"10.10.0.{n}") == "training"
    assert len(table._cache) == 2  # emptied at 3, then two more


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)), min_size=1, max_size=12),
       st.integers(0, 2**32 - 1))
def test_same_answer_as_a_linear_scan_of_every_network(networks, address_value):
    """Property: the table agrees with the obvious (slow) longest-prefix search."""
    zones, seen = [], set()
    for n, (value, length) in enumerate(networks):
        network = ipaddress.ip_network((value, length), strict=False)
        if network not in seen:
            seen.add(network)
            zones.append(Zone(name=f"z{n}", plane="data", cidrs=(network,)))
    address = ipaddress.ip_address(address_value)
    containing = [(z.cidrs[0].prefixlen, z.name) for z in zones if address in z.cidrs[0]]
    expected = max(containing)[1] if containing else "outside"
    assert ZoneMap(zones, "outside").lookup(str(address)) == expected


def test_parse_address():
    assert parse_address("10.0.0.1") == (4, 0x0A000001)
    assert parse_address("::ffff:10.0.0.1") == (4, 0x0A000001)
    assert parse_address("::1") == (6, 1)
    assert parse_address("10.0.0.256") is None


@pytest.mark.parametrize(("listener", "host", "peer", "expected"), [
    ("10.20.0.5", "127.0.0.1", None, "10.20.0.5"),  # sidecar: upstream on loopback -> the pod's address
    ("10.20.0.5", "localhost", None, "10.20.0.5"),
    ("10.20.0.5", "::1", None, "10.20.0.5"),
    ("10.20.0.5", "triton.ml.svc", "::ffff:127.0.0.1", "10.20.0.5"),
    ("10.0.0.9", "10.20.0.5", None, "10.20.0.5"),  # gateway: the upstream server's address
    ("10.0.0.9", "triton.ml.svc", "10.20.0.5", "10.20.0.5"),  # connected: its peer address
    ("10.0.0.9", "triton.ml.svc", None, None),  # not connected yet: not known
])
def test_proxied_destination(listener, host, peer, expected):
    assert proxied_destination(listener, host, peer) == expected
