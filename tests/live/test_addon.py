"""The addon inside mitmproxy's own test harness (taddons, tflow): options declared and checked,
hooks on flows without a network."""

from __future__ import annotations

import json
import struct

import pytest
from live_sidecar import write_rule
from mitmproxy import exceptions, http
from mitmproxy.test import taddons, tflow

from inspector.live.addon import InspectorAddon


def _grpc_flow(method: str) -> http.HTTPFlow:
    flow = tflow.tflow()
    flow.request = http.Request.make("POST", f"http://triton:8001/inference.GRPCInferenceService/{method}",
                                     struct.pack(">BI", 0, 2) + b"\x0a\x00",
                                     {"content-type": "application/grpc", "te": "trailers"})
    flow.request.http_version = "HTTP/2.0"
    return flow


@pytest.fixture
def rules(tmp_path):
    directory = tmp_path / "rules"
    directory.mkdir()
    write_rule(directory, 9900001, "Model load", "grpc", {"grpc.method": "RepositoryModelLoad"}, action="block")
    return directory


@pytest.fixture
def configured(rules, tmp_path):
    addon = InspectorAddon()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, inspector_rules=[str(rules)], inspector_eve=str(tmp_path / "eve.json"),
                       inspector_metrics="off")
        yield addon, tctx
        addon.done()


@pytest.mark.parametrize(("option", "value", "message"), [
    ("inspector_stream_threshold", "lots", "not a size"),
    ("inspector_redis", "http://redis:6379", "redis://"),
    ("inspector_metrics", "127.0.0.1:port", "port must be a number"),
    ("inspector_stream_methods", ["ModelStreamInfer"], "not a gRPC method path"),
    ("inspector_redis_timeout", 0.0, "must be positive"),
    ("inspector_client_ca", "/nonexistent/ca.pem", "inspector_client_ca"),
    ("inspector_block_message", "{foo} {sid}", r"unknown placeholder\(s\) \{foo\}"),
    ("inspector_block_message", "blocked {", "write {{ and }} for braces"),
    ("inspector_read_size", 4096, "not between 65535"),
])
def test_bad_option_values_are_refused(configured, option, value, message):
    addon, tctx = configured
    with pytest.raises(exceptions.OptionsError, match=message):
        tctx.configure(addon, **{option: value})


def test_rules_that_do_not_load_are_refused_with_file_and_line(configured, rules):
    addon, tctx = configured
    (rules / "bad.yml").write_text("title: x\nsid: 1\n")
    with pytest.raises(exceptions.OptionsError, match=r"bad\.yml:\d+"):
        tctx.configure(addon, inspector_rules=[str(rules)])


def test_every_option_has_a_help_paragraph(configured):
    _, tctx = configured
    for name, option in tctx.options._options.items():
        if name.startswith("inspector_"):
            assert len(option.help) > 40, name


def test_blocked_unary_grpc_gets_trailers_only_response(configured, tmp_path):
    addon, _ = configured
    flow = _grpc_flow("RepositoryModelLoad")
    addon.requestheaders(flow)
    addon.request(flow)
    assert flow.response is not None
    assert (flow.response.status_code, flow.response.headers["grpc-status"]) == (200, "7")
    assert flow.response.headers["grpc-message"] == "blocked by inspector: Model load (sid 9900001)"
    assert "content-length" not in flow.response.headers
    addon.runtime.inspector.flush()
    records = [json.loads(line) for line in (tmp_path / "eve.json").read_text().splitlines()]
    assert [r["event_type"] for r in records][:1] == ["alert"]
    assert records[-1]["grpc"]["status"] == 7


def test_allowed_call_is_left_alone(configured):
    addon, _ = configured
    flow = _grpc_flow("ModelInfer")
    addon.requestheaders(flow)
    addon.request(flow)
    assert flow.response is None and not flow.request.stream


def test_stream_methods_stream_and_large_bodies_are_held(configured):
    addon, _ = configured
    flow = _grpc_flow("ModelStreamInfer")
    addon.requestheaders(flow)
    assert callable(flow.request.stream)
    upload = tflow.tflow()
    upload.request = http.Request.make("PUT", "http://s3/models/big.bin")
    upload.request.headers["content-length"] = str(64 << 20)
    addon.requestheaders(upload)
    assert callable(upload.request.stream)


@pytest.mark.parametrize("method", ["POST", "GET", "DELETE", "OPTIONS"])
def test_http2_request_bodies_of_unknown_length_are_held_whatever_the_method(configured, method):
    """mitmproxy streams a buffered body once it outgrows the threshold (stream = True): for an
    HTTP/2 request without content-length that must become the inspector's held stream, or the
    body would go upstream unread. A GET or DELETE may carry a body as well as a POST."""
    addon, _ = configured
    flow = tflow.tflow()
    flow.request = http.Request.make(method, "https://feast:6566/get-online-features")
    flow.request.http_version = "HTTP/2.0"
    del flow.request.headers["content-length"]
    addon.requestheaders(flow)
    assert flow.request.stream is False  # buffered first: a small body is inspected whole
    flow.request.stream = True  # what mitmproxy sets when the body passes the threshold
    assert callable(flow.request.stream)


class _BrokenEngine:
    """Stands in for an engine with a bug: the failure policy is what is tested."""

    def evaluate(self, record, ts, skip=frozenset(), **options):
        raise RuntimeError("engine bug")


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_internal_errors_follow_the_failure_policy(configured, policy):
    addon, tctx = configured
    tctx.configure(addon, inspector_fail=policy)
    addon.runtime.inspector.engine = _BrokenEngine()
    flow = _grpc_flow("ModelInfer")
    addon.requestheaders(flow)
    addon.request(flow)
    metrics = addon.runtime.metrics
    if policy == "open":
        assert flow.response is None
        assert metrics.fail_open._value.get() == 1
    else:
        assert flow.response.headers["grpc-status"] == "7"
        assert flow.response.headers["grpc-message"] == "blocked by inspector: internal error"
        assert metrics.fail_closed._value.get() == 1


def test_h2c_upstreams_need_lazy_connections(rules, tmp_path):
    from mitmproxy.addons.proxyserver import Proxyserver

    addon = InspectorAddon()
    with taddons.context(addon, Proxyserver()) as tctx:
        tctx.configure(addon, inspector_rules=[str(rules)], inspector_eve=str(tmp_path / "eve.json"),
                       inspector_metrics="off")
        with pytest.raises(exceptions.OptionsError, match="connection_strategy=lazy"):
            tctx.configure(addon, inspector_h2c_upstreams=["triton:8001"])
        tctx.configure(addon, inspector_h2c_upstreams=["triton:8001"], connection_strategy="lazy")
        addon.done()


def test_h2c_upstreams_get_http2_prior_knowledge(configured):
    addon, tctx = configured
    tctx.configure(addon, inspector_h2c_upstreams=["triton:8001"])

    class _Data:
        def __init__(self, address, tls=False):
            self.server = tflow.tserver_conn()
            self.server.address = address
            self.server.tls = tls
            self.server.alpn = None

    h2c, other, tls = _Data(("triton", 8001)), _Data(("triton", 8000)), _Data(("triton", 8001), tls=True)
    for data in (h2c, other, tls):
        addon.server_connect(data)
    assert (h2c.server.alpn, other.server.alpn, tls.server.alpn) == (b"h2", None, None)


def test_mitmproxy_is_the_pinned_version():
    """The h2c upstream (ALPN set in server_connect) and the upstream close on aborts use
    mitmproxy internals: they are tested against this version, pinned in pyproject.toml."""
    from mitmproxy.version import VERSION

    assert VERSION.startswith("12.3."), VERSION


def test_the_addon_script_loads_in_mitmproxy(tmp_path):
    """addons/inspector_addon.py as `mitmdump -s` loads it: its options exist and take values."""
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "addons" / "inspector_addon.py"
    with taddons.context() as tctx:
        tctx.script(str(script))
        tctx.options.update(inspector_eve=str(tmp_path / "eve.json"), inspector_metrics="off")
        assert tctx.options.inspector_stream_methods == ["/inference.GRPCInferenceService/ModelStreamInfer"]
        assert tctx.options.inspector_fail == "open"


def test_no_generated_protobuf_in_the_proxy_process():
    """Generated protobuf modules made mitmproxy crash on stop (ARCHITECTURE.md): the proxy
    process imports every parser and the addon without any of them."""
    import subprocess
    import sys

    code = ("import sys, inspector.cli, inspector.live.addon, inspector.fields as f; f.catalogue(); "
            "bad = sorted(m for m in sys.modules if m.endswith('_pb2') or m.endswith('_pb2_grpc') "
            "or m.startswith('google.protobuf')); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_rule_set_warnings_are_logged(configured, rules, tmp_path, caplog):
    """What `rules validate` warns about (an empty rules directory here) is in the sidecar's log."""
    addon, tctx = configured
    empty = tmp_path / "no-rules-here"
    empty.mkdir()
    with caplog.at_level("WARNING", logger="inspector.live"):
        tctx.configure(addon, inspector_rules=[str(rules), str(empty)])
    assert any("warning:" in r.getMessage() and "no-rules-here" in r.getMessage() for r in caplog.records)
