"""The engine: verdicts, EVE alert records, layers, blocking mode, suppression, rate rules, counters."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inspector.engine import ALLOWED, Engine
from inspector.rules import Config, load_config, load_rules
from inspector.rules.testing import isolated_catalogue

RULES = {
    "triton_log.yml": """\
        title: Triton log file redirected
        id: 9a1e6a8e-0000-4000-8000-000000000001
        sid: 3100001
        rev: 2
        status: stable
        level: critical
        references: [https://example.org/advisory]
        tags: [atlas.aml.t0049, cve.2024-0087]
        event: triton
        detection:
          selection:
            triton.api: log_settings
            triton.log_settings.log_file|exists: true
          filter_admin:
            src_ip|cidr: $ADMIN_NETS
          condition: selection and not filter_admin
        action: block
        """,
    "grpc_reflection.yml": """\
        title: gRPC server reflection
        id: 9a1e6a8e-0000-4000-8000-000000000002
        sid: 2200001
        status: test
        level: low
        event: grpc
        detection:
          selection:
            grpc.service|startswith: grpc.reflection.
          condition: selection
        """,
    "http_traversal.yml": """\
        title: Path traversal in a model API URL
        id: 9a1e6a8e-0000-4000-8000-000000000003
        sid: 2100001
        status: test
        level: high
        event: [http, grpc]
        category: Path traversal
        detection:
          selection:
            http.url|contains: ['../', '%2e%2e']
          condition: selection
        """,
    "anomaly.yml": """\
        title: HTTP/2 anomaly
        id: 9a1e6a8e-0000-4000-8000-000000000004
        sid: 2290001
        status: test
        level: medium
        event: anomaly
        detection:
          selection:
            anomaly.layer: http2
          condition: selection
        """,
    "infer_rate.yml": """\
        title: Inference flood per client and model
        id: 9a1e6a8e-0000-4000-8000-000000000005
        sid: 3100050
        status: test
        level: medium
        event: triton
        detection:
          selection:
            grpc.method: ModelInfer
          condition: selection
        rate:
          by: [src_ip, triton.model]
          count: 3
          window: 10s
        action: block
        """,
}

REFLECTION = {"timestamp": "2026-01-02T03:04:05.000001+0000", "event_type": "grpc", "flow_id": 7,
              "community_id": "1:abc=", "src_ip": "10.0.0.5", "src_port": 51234, "dest_ip": "10.0.1.2",
              "dest_port": 8001, "proto": "TCP", "app_proto": "http2",
              "http": {"url": "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", "status": 200},
              "grpc": {"service": "grpc.reflection.v1alpha.ServerReflection", "method": "ServerReflectionInfo"}}


def triton_record(src_ip: str = "192.0.2.9", **triton: object) -> dict:
    return {"timestamp": "2026-01-02T03:04:05.000001+0000", "event_type": "triton", "flow_id": 9,
            "src_ip": src_ip, "dest_ip": "10.0.1.2", "dest_port": 8000,
            "http": {"url": "/v2/logging", "http_method": "POST"},
            "triton": {"api": "log_settings", "log_settings": {"log_file": "/tmp/x"}, **triton}}


def infer(src_ip: str = "10.0.0.5", model: str | None = "resnet") -> dict:
    record = {"event_type": "triton", "src_ip": src_ip,
              "http": {"url": "/inference.GRPCInferenceService/ModelInfer"},
              "grpc": {"service": "inference.GRPCInferenceService", "method": "ModelInfer"},
              "triton": {"api": "infer"}}
    if model:
        record["triton"]["model"] = model
    return record


@pytest.fixture
def rules_dir(tmp_path: Path) -> Iterator[Path]:
    with isolated_catalogue():
        for name, text in RULES.items():
            (tmp_path / name).write_text(textwrap.dedent(text))
        yield tmp_path


def engine_for(rules_dir: Path, site: str | None = None, **kwargs: object) -> Engine:
    config_path = None
    if site is not None:
        config_path = rules_dir / "site.config"
        config_path.write_text(textwrap.dedent(site))
    config = load_config(config_path)
    return Engine(load_rules(rules_dir, config), config, **kwargs)


def test_alert_record_shape(rules_dir):
    verdict = engine_for(rules_dir).process(REFLECTION, 1767323045.000001)
    assert verdict.action == "alert"
    assert [r.sid for r in verdict.rules] == [2200001]
    assert verdict.alerts == ({
        "timestamp": "2026-01-02T03:04:05.000001+0000", "event_type": "alert", "flow_id": 7,
        "community_id": "1:abc=", "src_ip": "10.0.0.5", "src_port": 51234, "dest_ip": "10.0.1.2",
        "dest_port": 8001, "proto": "TCP", "app_proto": "http2",
        "alert": {"action": "allowed", "gid": 1, "signature_id": 2200001, "rev": 1,
                  "signature": "gRPC server reflection", "category": "grpc low", "severity": 4,
                  "metadata": {"rule_id": ["9a1e6a8e-0000-4000-8000-000000000002"], "level": ["low"],
                               "status": ["test"], "rule_action": ["alert"], "tags": [], "references": []}},
        "http": REFLECTION["http"], "grpc": REFLECTION["grpc"],
    },)
    assert list(verdict.alerts[0])[-3:] == ["alert", "http", "grpc"]


def test_no_match_is_the_shared_allow_verdict(rules_dir):
    engine = engine_for(rules_dir)
    assert engine.process({"event_type": "http", "http": {"url": "/v2/health/ready"}}, 1.0) is ALLOWED
    assert engine.process({"event_type": "tls", "tls": {"sni": "x"}}, 1.0) is ALLOWED
    assert engine.process({}, 1.0) is ALLOWED
    assert ALLOWED.action == "allow" and not ALLOWED.alerts


def test_block_rule_offline_alerts_and_says_what_live_would_do(rules_dir):
    verdict = engine_for(rules_dir).process(triton_record(), 5.0)
    assert verdict.action == "alert"
    (alert,) = verdict.alerts
    assert alert["alert"]["action"] == "allowed"
    assert alert["alert"]["metadata"]["rule_action"] == ["block"]
    assert alert["alert"]["severity"] == 1
    assert alert["alert"]["metadata"]["tags"] == ["atlas.aml.t0049", "cve.2024-0087"]
    assert set(alert) >= {"http", "triton"}


def test_block_rule_in_blocking_mode_blocks(rules_dir):
    verdict = engine_for(rules_dir, blocking=True).process(triton_record(), 5.0)
    assert verdict.action == "block"
    assert verdict.alerts[0]["alert"]["action"] == "blocked"
    reflection = engine_for(rules_dir, blocking=True).process(REFLECTION, 5.0)
    assert (reflection.action, reflection.alerts[0]["alert"]["action"]) == ("alert", "allowed")


def test_site_variables_apply(rules_dir):
    engine = engine_for(rules_dir, "vars:\n  ADMIN_NETS: [192.0.2.0/24]\n")
    assert engine.process(triton_record(), 1.0) is ALLOWED
    assert engine.process(triton_record(src_ip="198.51.100.1"), 1.0).action == "alert"


def test_layered_dispatch(rules_dir):
    engine = engine_for(rules_dir)
    # A Triton-over-gRPC record carries grpc and http: the grpc and http|grpc rules see it.
    record = infer(model="resnet")
    record["grpc"]["service"] = "grpc.reflection.v1.ServerReflection"
    record["http"]["url"] = "/a/../b"
    assert [r.sid for r in engine.process(record, 1.0).rules] == [2100001, 2200001]
    # A rule for two layers fires once per record, not once per layer.
    assert len(engine.process({"event_type": "grpc", "http": {"url": "/../"}, "grpc": {}}, 1.0).alerts) == 1
    # A plain gRPC record never reaches the triton rule, even with matching-looking fields elsewhere.
    assert engine.process({"event_type": "grpc", "grpc": {}, "api": "log_settings"}, 1.0) is ALLOWED


def test_anomaly_records_only_meet_anomaly_rules(rules_dir):
    engine = engine_for(rules_dir)
    anomaly = {"event_type": "anomaly", "anomaly": {"layer": "http2", "event": "hpack_error"},
               "http": {"url": "/../etc/passwd"}}
    assert [r.sid for r in engine.process(anomaly, 1.0).rules] == [2290001]


def test_suppression_silences_and_counts(rules_dir):
    engine = engine_for(rules_dir, """\
        suppress:
          - sid: 2200001
            src_ip: [10.0.0.0/24]
          - sid: [3100001]
            triton.model: secret-model
        """)
    assert engine.process(REFLECTION, 1.0) is ALLOWED
    assert engine.process({**REFLECTION, "src_ip": "10.0.9.5"}, 1.0).action == "alert"
    assert engine.process(triton_record(model="Secret-Model"), 1.0) is ALLOWED
    assert engine.process(triton_record(model="other"), 1.0).action == "alert"
    counters = engine.counters()
    assert (counters["suppressed"], counters["matches"], counters["alerts"]) == (2, 4, 2)


def test_rate_rule_keys_and_window(rules_dir):
    engine = engine_for(rules_dir)
    sids = [[r.sid for r in engine.process(infer("10.0.0.5"), ts).rules] for ts in (0.0, 1.0, 2.0, 3.0)]
    assert sids == [[], [], [3100050], []]
    # another model is another key; a record without triton.model keys on null
    assert engine.process(infer("10.0.0.5", model="bert"), 4.0) is ALLOWED
    no_model = [engine.process(infer("10.0.0.5", model=None), ts).action for ts in (5.0, 6.0, 7.0)]
    assert no_model == ["allow", "allow", "alert"]
    # Quiet until 10 s after the alert at 2.0, then 3 events within 10 s alert again.
    assert [engine.process(infer("10.0.0.5"), ts).action for ts in (12.0, 12.5)] == ["allow", "alert"]
    counters = engine.counters()
    assert counters["rate_keys"] == 3
    assert counters["alerts_by_sid"] == {3100050: 3}
    assert counters["rate_pending"] == 6
    assert counters["rate_quiet"] == 1  # the event at 3.0, inside the window of the alert at 2.0
    assert counters["matches"] == counters["alerts"] + counters["rate_pending"] + counters["rate_quiet"]


def test_rate_block_rule_blocks_every_event_over_threshold_in_blocking_mode(rules_dir):
    engine = engine_for(rules_dir, blocking=True)
    verdicts = [engine.process(infer(), ts) for ts in (0.0, 1.0, 2.0, 3.0, 4.0)]
    assert [v.action for v in verdicts] == ["allow", "allow", "block", "block", "block"]
    assert [len(v.alerts) for v in verdicts] == [0, 0, 1, 0, 0]
    assert [r.sid for r in verdicts[4].rules] == [3100050]
    assert engine.counters()["blocks"] == 3


def test_suppressed_matches_do_not_count_toward_rate(rules_dir):
    engine = engine_for(rules_dir, "suppress:\n  - {sid: 3100050, src_ip: 10.0.0.5}\n")
    for ts in range(10):
        assert engine.process(infer(), float(ts)) is ALLOWED
    assert engine.counters()["rate_keys"] == 0


def test_rate_key_table_is_bounded(rules_dir):
    engine = engine_for(rules_dir, "engine:\n  rate_max_keys: 2\n")
    for i in range(5):
        engine.process(infer(f"10.0.0.{i}"), float(i))
    assert (engine.counters()["rate_keys"], engine.counters()["rate_keys_evicted"]) == (2, 3)


def test_counters(rules_dir):
    engine = engine_for(rules_dir)
    engine.process(REFLECTION, 1.0)
    engine.process({"event_type": "http", "http": {"url": "/x"}}, 2.0)
    # Evaluations: the reflection and traversal rules on the first record, traversal on the second
    # (few rules filed by trigram: a value seen for the first time offers them all).
    assert engine.counters() == {"rules": len(engine.ruleset), "records": 2, "evaluations": 3, "matches": 1,
                                 "alerts": 1, "alerts_by_sid": {2200001: 1}, "suppressed": 0, "rate_pending": 0,
                                 "rate_quiet": 0, "blocks": 0, "rate_keys": 0, "rate_keys_evicted": 0}


@pytest.mark.parametrize("record", [
    {"event_type": "grpc", "grpc": "not an object", "http": None},
    {"event_type": "grpc", "grpc": {"service": 5, "method": ["ModelInfer"]}},
    {"event_type": "triton", "triton": {"api": None, "log_settings": "x"}, "grpc": [], "http": {"url": b"x"}},
    {"event_type": None},
    {"event_type": ["grpc"], "grpc": {}},
])
def test_odd_records_never_raise(rules_dir, record):
    engine = engine_for(rules_dir)
    assert engine.process(record, 0.0).action in ("allow", "alert")


def test_engine_takes_config_from_ruleset_by_default(rules_dir):
    config = Config(variables={"ADMIN_NETS": []})
    engine = Engine(load_rules(rules_dir, config))
    assert engine.config is config and engine.process(triton_record(), 1.0).action == "alert"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
    | st.sampled_from(["ModelInfer", "log_settings", "10.0.0.5", "../", "grpc.reflection.x", "http2"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["api", "log_settings", "log_file", "model", "method", "service", "url", "layer",
                         "status", "x"]), inner, max_size=4),
    max_leaves=20)
records = st.dictionaries(
    st.sampled_from(["event_type", "src_ip", "http", "grpc", "triton", "anomaly", "timestamp", "flow_id"]),
    st.sampled_from(["grpc", "triton", "http", "anomaly", "flow"]) | json_values, max_size=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(records, st.floats(0, 1e6)), max_size=5))
def test_arbitrary_records_never_raise(rules_dir, batch):
    engine = engine_for(rules_dir, blocking=True)
    for record, ts in batch:
        verdict = engine.process(record, ts)
        assert verdict.action in ("allow", "alert", "block")
        assert all(alert["event_type"] == "alert" for alert in verdict.alerts)
