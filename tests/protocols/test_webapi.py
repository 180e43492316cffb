"""inspector.protocols.webapi: query strings, URL redaction, lenient scalars, event streams, JSON lines."""

from __future__ import annotations

import pytest
from httpapi_support import exchange
from hypothesis import given
from hypothesis import strategies as st

from inspector.apps import LayerContext, transaction_record
from inspector.protocols import webapi


def reference_sse(body: bytes) -> list[tuple[str, str]]:
    """The event-stream rules, line by line, written plainly (the oracle for the fast path)."""
    text = body.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    events, name, data = [], "", []
    for line in text.split("\n"):
        if line == "":
            if data:
                events.append((name, "\n".join(data)))
            name, data = "", []
            continue
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
    if data:
        events.append((name, "\n".join(data)))
    return events


SSE_PIECES = st.sampled_from([b"data: {\"a\": 1}\n\n", b"data:x\n\n", b"data: \n\n", b"data:  two spaces\n\n",
                              b"event: ping\n", b": comment\n", b"\n", b"\r\n", b"data: a\r\ndata: b\r\n\r\n",
                              b"id: 7\n", b"data", b"retry: 10\n", b"data: [DONE]\n\n", b"\xff"])


@given(st.lists(SSE_PIECES, max_size=12).map(b"".join))
def test_sse_events_match_the_line_by_line_rules(body):
    assert webapi.sse_events(body)[0] == reference_sse(body)


def test_sse_fast_path_on_a_typical_stream():
    body = b"".join(b'data: {"n": %d}\n\n' % i for i in range(3)) + b"data: [DONE]\n\n"
    assert webapi.sse_events(body)[0] == [("", '{"n": 0}'), ("", '{"n": 1}'), ("", '{"n": 2}'), ("", "[DONE]")]


def test_ndjson_values_counts_bad_lines():
    assert webapi.ndjson_values(b'{"a": 1}\n\nnope\n[2]\n{"cut') == ([{"a": 1}, [2]], 2)


@pytest.mark.parametrize(("target", "params"), [
    ("/p?a=1&b=%2F..%2F&a=2&c&d=x+y", {"a": "1", "b": "/../", "c": "", "d": "x y"}),
    ("/p", {}),
    ("/p?", {}),
    ("/p?x=%ff#frag", {"x": "\ufffd"}),
])
def test_query_params(target, params):
    assert webapi.query_params(target) == params


def test_query_params_are_capped():
    assert len(webapi.query_params("/p?" + "&".join(f"k{i}=v" for i in range(500)))) == webapi.MAX_QUERY_PARAMS


@pytest.mark.parametrize(("url", "redacted"), [
    ("https://user:pass@host:8443/p?token=t&x=1", "https://user:[redacted]@host:8443/p?token=[redacted]&x=1"),
    ("https://user@host/p", "https://user@host/p"),
    ("s3://bucket/key?X-Amz-Signature=abc", "s3://bucket/key?X-Amz-Signature=[redacted]"),
    ("file:///etc/passwd", "file:///etc/passwd"),
    ("//proc/self/root", "//proc/self/root"),
    ("http:///#/../../etc/", "http:///#/../../etc/"),
])
def test_redact_inner_url(url, redacted):
    assert webapi.redact_inner_url(url) == redacted


@pytest.mark.parametrize(("url", "parts"), [
    ("HTTP://Evil.Example:8888/x.mar", ("http", "evil.example")),
    ("https://u:p@[2001:db8::1]:443/m", ("https", "2001:db8::1")),
    ("file:///etc/passwd", ("file", None)),
    ("s3://bucket/key", ("s3", "bucket")),
    ("models/local.mar", (None, None)),
    ("c:stuff", ("c", None)),
])
def test_url_parts(url, parts):
    assert webapi.url_parts(url) == parts


@pytest.mark.parametrize(("value", "as_int", "as_number", "as_bool"), [
    (3, 3, 3, None), (True, None, None, True), ("12", 12, 12.0, None), ("-4", -4, -4.0, None),
    ("1", 1, 1.0, True), ("yes", None, None, True), ("0.5", None, 0.5, None), (2.0, 2, 2.0, None),
    ("nan", None, None, None), ("9" * 30, None, 1e30, None), (None, None, None, None),
])
def test_lenient_scalars(value, as_int, as_number, as_bool):
    assert (webapi.integer(value), webapi.number(value), webapi.boolean(value)) == (as_int, as_number, as_bool)


@given(st.text(max_size=60))
def test_url_helpers_never_raise(url):
    webapi.redact_inner_url(url)
    webapi.url_parts(url)
    webapi.query_params(url)
    webapi.path_only(url)


@pytest.mark.parametrize(("target", "routed"), [
    ("/api/2.0/mlflow%2Dartifacts/artifacts/x?y=%61", "/api/2.0/mlflow-artifacts/artifacts/x"),
    ("//api//2.0/mlflow/experiments/create", "//api//2.0/mlflow/experiments/create"),  # merged only on request
    ("/api/2.0/mlflow/experiments%2Fcreate", "/api/2.0/mlflow/experiments/create"),
    ("/%61pi/x#frag", "/api/x"),
    ("/a/../b/./c", "/a/../b/./c"),  # dot segments kept, as Werkzeug/Starlette/Tornado keep them
    ("/a%252e", "/a%2e"),  # decoded once, as the servers do
    ("/bad%ffbyte", "/bad\ufffdbyte"),
])
def test_routing_path(target, routed):
    assert webapi.routing_path(target) == routed


@pytest.mark.parametrize(("target", "flagged"), [
    ("/%61pi/x", True), ("/get%2Dartifact", True), ("/a/%2e%2e/b", True), ("/a%5Fb", True), ("/a%7eb", True),
    ("/my%20dir/a.txt", False), ("/a%2Fb", False), ("/x?q=%61", False), ("/caf%C3%A9", False), ("//x", False),
])
def test_path_obfuscation_is_an_encoded_unreserved_character(target, flagged):
    assert (webapi.path_obfuscation(target) is not None) is flagged


def test_routing_path_options():
    assert webapi.routing_path("//api//x%2Fy", merge_slashes=True) == "/api/x/y"
    assert webapi.routing_path("/api/jobs%2Fx%2fy%61", decode_slash=False) == "/api/jobs%2Fx%2Fya"


def test_routing_path_leaves_an_oversized_path_alone():
    target = "/%61" * (webapi.MAX_ROUTING_PATH // 3)
    assert webapi.routing_path(target) == target


@given(st.text(max_size=200))
def test_routing_helpers_never_raise(target):
    webapi.routing_path(target)
    webapi.path_obfuscation(target)


def _ctx(target: str) -> LayerContext:
    return LayerContext(exchange("POST", target, {}, status=None), {})


def _recorder(routes: dict[str, str]):
    calls: list[tuple[str, object]] = []

    def route(path, unquote):
        calls.append((path, unquote))
        return routes.get(path)

    return route, calls


def test_route_request_routes_a_plain_path_once_without_decoding(monkeypatch):
    monkeypatch.setattr(webapi, "routing_path", None)  # must not be needed
    route, calls = _recorder({"/api/pull": "pull"})
    ctx = _ctx("/api/pull?x=%61")
    assert webapi.route_request(ctx, route) == ("pull", "/api/pull", False)
    assert webapi.route_request(ctx, route, same=lambda a, b: a == b) == ("pull", "/api/pull", False)
    assert webapi.route_request(ctx, route, merge_slashes=True) == ("pull", "/api/pull", False)
    assert calls == [("/api/pull", webapi.unquote_path), ("/api/pull", webapi.as_is),
                     ("/api/pull", webapi.unquote_path)]
    assert webapi.route_request(_ctx("/other"), route) == (None, "/other", False)
    assert ctx.routed_paths is None


def test_route_request_tries_the_routing_path_only_when_it_differs(monkeypatch):
    decoded = []
    real = webapi.routing_path
    monkeypatch.setattr(webapi, "routing_path", lambda path, **kw: decoded.append((path, kw)) or real(path, **kw))
    route, calls = _recorder({"/api/pull": "pull"})
    ctx = _ctx("/api%2F%70ull")
    assert webapi.route_request(ctx, route) == ("pull", "/api/pull", True)
    assert webapi.route_request(ctx, route) == ("pull", "/api/pull", True)  # another layer: memo
    assert webapi.route_request(ctx, route, decode_slash=False) == (None, "/api%2Fpull", False)
    assert calls[:2] == [("/api%2F%70ull", webapi.unquote_path), ("/api/pull", webapi.as_is)]
    assert len(decoded) == 2  # one per variant
    calls.clear()
    assert webapi.route_request(_ctx("/api/pu%zz"), route) == (None, "/api/pu%zz", False)
    assert calls == [("/api/pu%zz", webapi.unquote_path)]  # decoding changes nothing: not routed twice


def test_route_request_on_the_routing_path_only():
    routes = {"/api/x/create": ("x/create", ""), "/api/x%2Fcreate": ("x%2Fcreate", ""), "//api/x/create": None,
              "/api/x/cre%61te": ("cre%61te", "/api/x")}
    route, calls = _recorder(routes)
    same = lambda a, b: a == b  # noqa: E731
    assert webapi.route_request(_ctx("/api/x%2Fcreate"), route, same=same) == \
        (("x/create", ""), "/api/x/create", True)
    assert webapi.route_request(_ctx("//api/x/create"), route, merge_slashes=True, same=same) == \
        (("x/create", ""), "/api/x/create", True)
    assert webapi.route_request(_ctx("/api/x/cre%61te"), route, same=same)[2] is True
    assert webapi.route_request(_ctx("/api/x/cre%61te"), route, same=lambda a, b: True) == \
        (("x/create", ""), "/api/x/create", False)  # `same` decides
    calls.clear()
    assert webapi.route_request(_ctx("/api/x/create"), route, same=same) == (("x/create", ""), "/api/x/create", False)
    assert len(calls) == 1


def test_note_routing_is_said_once_per_exchange():
    ctx = _ctx("/api/%67enerate")
    first: dict = {}
    second: dict = {}
    ctx.layer = "ollama"
    webapi.note_routing(ctx, "ollama", first, "/api/generate", True)
    ctx.layer = "llm"
    webapi.note_routing(ctx, "llm", second, "/api/generate", True)
    assert first == {"routed_path": "/api/generate"} and second == {}
    assert [event for _, event, _ in ctx.anomalies] == ["ollama_path_obfuscated"]


def test_an_encoded_ollama_chat_is_noted_by_the_ollama_object_only():
    record, found = transaction_record(None, exchange("POST", "/api/%67enerate", {"model": "m", "prompt": "hi"},
                                                      status=None))
    assert record["event_type"] == "llm" and record["ollama"]["routed_path"] == "/api/generate"
    assert "routed_path" not in record["llm"]
    assert [event for _, event, _ in found if event.endswith("path_obfuscated")] == ["ollama_path_obfuscated"]
