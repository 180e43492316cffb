"""Option parsers: values in, values out, clear errors for bad ones."""

from __future__ import annotations

import pytest

from inspector.live import options as opts
from inspector.live.proxy import Route, parse_routes, parse_upstream


@pytest.mark.parametrize(("text", "expected"), [("1m", 1 << 20), ("512k", 512 << 10), ("2g", 2 << 30),
                                                 ("1048576", 1 << 20), ("0", 0), ("1.5m", 3 << 19)])
def test_sizes(text, expected):
    assert opts.parse_size(text) == expected


@pytest.mark.parametrize(("text", "message"), [("lots", "not a size"), ("-1m", "negative")])
def test_bad_sizes(text, message):
    with pytest.raises(ValueError, match=message):
        opts.parse_size(text)


@pytest.mark.parametrize(("text", "expected"), [("127.0.0.1:9464", ("127.0.0.1", 9464)),
                                                 ("9464", ("127.0.0.1", 9464)),
                                                 ("[::1]:9464", ("::1", 9464)),
                                                 ("0.0.0.0:0", ("0.0.0.0", 0))])
def test_hostports(text, expected):
    assert opts.parse_hostport(text) == expected


@pytest.mark.parametrize("text", ["host:", "host:99999", "[::1]9464", "host:port"])
def test_bad_hostports(text):
    with pytest.raises(ValueError, match=r"port|IPv6"):
        opts.parse_hostport(text)


def test_metrics_off():
    assert opts.parse_metrics("off") is None
    assert opts.parse_metrics("127.0.0.1:1") == ("127.0.0.1", 1)


def test_stream_methods():
    methods = opts.parse_stream_methods(["inference.GRPCInferenceService/ModelStreamInfer", "/pkg.Svc/*", ""])
    assert methods == ("/inference.GRPCInferenceService/ModelStreamInfer", "/pkg.Svc/*")
    assert opts.matches_method("/pkg.Svc/Chat", methods)
    assert not opts.matches_method("/pkg.Other/Chat", methods)
    with pytest.raises(ValueError, match="not a gRPC method path"):
        opts.parse_stream_methods(["ModelStreamInfer"])


def test_h2c_upstreams():
    assert opts.parse_h2c_upstreams(["Triton:8001", "*"]) == frozenset({"triton:8001", "*"})
    with pytest.raises(ValueError, match="HOST:PORT"):
        opts.parse_h2c_upstreams(["8001"])


def test_redis_urls():
    assert opts.parse_redis_url(" redis://r:6379/0 ") == "redis://r:6379/0"
    assert opts.parse_redis_url("") is None
    with pytest.raises(ValueError, match="redis://"):
        opts.parse_redis_url("http://r:6379")


@pytest.mark.parametrize(("url", "expected"), [
    ("h2c://127.0.0.1:8001", ("h2c", "127.0.0.1", 8001)),
    ("https://triton.ml.svc", ("https", "triton.ml.svc", 443)),
    ("http://[::1]:8000/", ("http", "::1", 8000)),
])
def test_upstreams(url, expected):
    assert parse_upstream(url) == expected


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://x:1", "scheme must be one of"), ("h2c://:8001", "names no host"),
    ("http://x:1/prefix", "a path is not supported"), ("http://x:99999", "out of range"),
])
def test_bad_upstreams(url, message):
    with pytest.raises(ValueError, match=message):
        parse_upstream(url)


def test_routes_pair_upstreams_with_listeners():
    routes = parse_routes(["h2c://triton:8001", "http://triton:8000"], ["0.0.0.0:9001", "9000"])
    assert routes == [Route("h2c", "triton", 8001, "0.0.0.0", 9001), Route("http", "triton", 8000, "127.0.0.1", 9000)]
    assert routes[0].mode == "reverse:http://triton:8001@0.0.0.0:9001"
    with pytest.raises(ValueError, match="one --listen per upstream"):
        parse_routes(["h2c://triton:8001"], [])


def test_block_message_templates():
    template = "blocked: {signature} (sid {sid}) {{ok}}"
    assert opts.parse_block_message(template) == template
    for bad in ("{foo}", "{}", "{0}", "{signature.__class__}", "open {"):
        with pytest.raises(ValueError, match="inspector_block_message"):
            opts.parse_block_message(bad)
