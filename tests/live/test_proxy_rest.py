"""tritonclient.http (JSON and binary tensors) through `inspector proxy` over TLS to a KServe v2
REST server: correct results when allowed, KServe-style 403 `{"error": ...}` when blocked."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.http as httpclient
from live_sidecar import Sidecar, write_rule
from tritonclient.utils import InferenceServerException

from inspector.live.malloctune import glibc_version

SID_LOAD = 9200001
SID_INFER = 9200002
SID_ADMIN = 9200003


@pytest.fixture(scope="module")
def sidecar(rest_upstream, certs, tmp_path_factory):
    rules = tmp_path_factory.mktemp("rest-rules")
    write_rule(rules, SID_LOAD, "REST model load", "http", {"http.url|startswith": "/v2/repository/"},
               action="block")
    write_rule(rules, SID_INFER, "REST inference seen", "http", {"http.url|endswith": "/infer"})
    write_rule(rules, SID_ADMIN, "Admin page", "http", {"http.url|startswith": "/admin"}, action="block")
    with Sidecar(tmp_path_factory.mktemp("rest"), f"http://127.0.0.1:{rest_upstream.port}", rules,
                 cert=certs.server_cert, key=certs.server_key) as proxy:
        proxy.upstream = rest_upstream
        yield proxy


@pytest.fixture
def client(sidecar, certs):
    client = httpclient.InferenceServerClient(f"localhost:{sidecar.port}", ssl=True,
                                              ssl_options={"ca_certs": str(certs.ca)})
    yield client
    client.close()


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_inference_passes_with_correct_results(sidecar, client, binary):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 2, dtype=np.int32)
    inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a, binary_data=binary)
    inputs[1].set_data_from_numpy(b, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput(name, binary_data=binary) for name in ("OUTPUT0", "OUTPUT1")]
    result = client.infer("simple", inputs, outputs=outputs)
    assert result.as_numpy("OUTPUT0").tolist() == (a + b).tolist()
    assert result.as_numpy("OUTPUT1").tolist() == (a - b).tolist()
    alerts = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] == "alert"
                                              and r["alert"]["signature_id"] == SID_INFER])
    assert alerts[-1]["alert"]["action"] == "allowed"
    assert alerts[-1]["http"]["url"] == "/v2/models/simple/infer"


def test_blocked_call_gets_kserve_error_with_the_rule_message(sidecar, client):
    before = len(sidecar.upstream.calls)
    with pytest.raises(InferenceServerException) as raised:
        client.load_model("simple")
    assert raised.value.status() == "403"
    assert raised.value.message() == f"blocked by inspector: REST model load (sid {SID_LOAD})"
    assert sidecar.alerts(SID_LOAD)[-1]["alert"]["action"] == "blocked"  # written before the answer
    assert len(sidecar.upstream.calls) == before


def _post(sidecar, certs, path: str) -> urllib.error.HTTPError:
    import ssl

    context = ssl.create_default_context(cafile=str(certs.ca))
    request = urllib.request.Request(f"https://localhost:{sidecar.port}{path}", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, context=context, timeout=5)
    return raised.value


def test_kserve_paths_get_json_errors(sidecar, certs):
    error = _post(sidecar, certs, "/v2/repository/index")
    assert (error.code, error.headers["content-type"]) == (403, "application/json")
    assert json.loads(error.read()) == {"error": f"blocked by inspector: REST model load (sid {SID_LOAD})"}


def test_other_paths_get_plain_text(sidecar, certs):
    error = _post(sidecar, certs, "/admin/settings")
    assert (error.code, error.headers["content-type"]) == (403, "text/plain; charset=utf-8")
    assert error.read() == f"blocked by inspector: Admin page (sid {SID_ADMIN})\n".encode()


METRIC_NAMES = ["inspector_requests_total", "inspector_transactions_total", "inspector_alerts_total",
                "inspector_blocks_total", "inspector_inspection_seconds", "inspector_parse_anomalies_total",
                "inspector_uninspectable_total", "inspector_fail_open_total", "inspector_fail_closed_total",
                "inspector_ratelimit_backend_errors_total", "inspector_ratelimit_backend_up",
                "inspector_upstream_errors_total", "inspector_streams_total", "inspector_rules_loaded",
                "inspector_reloads_total", "inspector_eve_records_total"]


def test_metrics_and_health(sidecar, client):
    assert client.is_server_live()
    text = sidecar.metrics_text()
    for name in METRIC_NAMES:
        assert f"# HELP {name} " in text, name
    assert "_created" not in text  # no per-series creation timestamps: half the scrape for nothing
    assert sidecar.metric("inspector_requests_total", protocol="http") >= 1
    assert sidecar.metric("inspector_inspection_seconds_count", phase="request") >= 1
    assert sidecar.metric("inspector_rules_loaded") == 3
    malloc = "tuned" if glibc_version() else "not glibc"
    assert sidecar.health() == {"status": "ok", "rules": 3, "ratelimit_backend": "memory", "internal_errors": 0,
                                "hook_dispatch": "fast", "read_size": 262144, "malloc": malloc, "gc": "frozen"}


def test_upstream_errors_are_counted(certs, tmp_path):
    from live_sidecar import free_port

    rules = tmp_path / "rules"
    rules.mkdir()
    write_rule(rules, 9200009, "anything", "http", {"http.url|startswith": "/nothing-here"})
    with Sidecar(tmp_path, f"http://127.0.0.1:{free_port()}", rules, cert=certs.server_cert,
                 key=certs.server_key) as proxy:
        error = _post(proxy, certs, "/v2/health/live")
        assert error.code == 502
        assert proxy.metric("inspector_upstream_errors_total") == 1
