"""EVE record helpers: timestamps and the http object on hostile values."""

from inspector.http import HttpExchange, HttpMessage
from inspector.protocols.http import http_object
from inspector.records import format_ts


def test_timestamp_format_is_suricatas():
    assert format_ts(1767225600.000001) == "2026-01-01T00:00:00.000001+0000"
    assert format_ts(1767225600.9999996) == "2026-01-01T00:00:01.000000+0000"


def test_corrupt_capture_timestamps_do_not_raise():
    assert format_ts(1e30).startswith("1970-01-01")
    assert format_ts(float("nan")).startswith("1970-01-01")


def test_unicode_digits_in_a_host_port_are_not_a_port():
    """'¹' passes str.isdigit() but int() refuses it: peer input must not crash the record."""
    request = HttpMessage(kind="request", version="HTTP/1.1", method="GET", path="/", authority="host:¹2")
    obj = http_object(HttpExchange(request=request, response=None, stream_id=0))
    assert obj["hostname"] == "host" and "http_port" not in obj
