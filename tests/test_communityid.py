"""Community ID v1 against the published test vectors (both directions hash alike)."""

import ipaddress

import pytest

from inspector.communityid import community_id

VECTORS = [
    ("66.35.250.204", "128.232.110.120", 6, 80, 34855, "1:LQU9qZlK+B5F3KDmev6m5PMibrg="),
    ("8.8.8.8", "192.168.1.52", 17, 53, 54585, "1:d/FP5EW3wiY1vCndhwleRRKHowQ="),
    ("192.168.170.8", "192.168.170.56", 132, 7, 7, "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs="),
    ("192.168.0.89", "192.168.0.1", 1, 8, 0, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="),
    ("fe80::260:97ff:fe07:69ea", "ff02::1", 58, 134, 0, "1:pkvHqCL88/tg1k4cPigmZXUtL00="),
    ("1.2.3.4", "43.3.132.3", 6, 4584, 3483, "1:koNcqhFRD5kb254ZrLsdv630jCM="),
]


def _raw(ip: str) -> bytes:
    return ipaddress.ip_address(ip).packed


@pytest.mark.parametrize(("src", "dst", "proto", "sport", "dport", "expected"), VECTORS)
def test_published_vectors(src, dst, proto, sport, dport, expected):
    assert community_id(_raw(src), _raw(dst), proto, sport, dport) == expected


@pytest.mark.parametrize(("src", "dst", "proto", "sport", "dport", "expected"),
                         [v for v in VECTORS if v[2] in (6, 17, 132)])
def test_direction_does_not_matter(src, dst, proto, sport, dport, expected):
    assert community_id(_raw(dst), _raw(src), proto, dport, sport) == expected


def test_icmp_echo_reply_hashes_like_request():
    request = community_id(_raw("192.168.0.89"), _raw("192.168.0.1"), 1, 8, 0)
    reply = community_id(_raw("192.168.0.1"), _raw("192.168.0.89"), 1, 0, 0)
    assert request == reply


def test_seed_changes_the_hash():
    a, b = _raw("10.0.0.1"), _raw("10.0.0.2")
    assert community_id(a, b, 6, 1, 2, seed=0) != community_id(a, b, 6, 1, 2, seed=1)
