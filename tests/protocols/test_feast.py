"""The `feast` layer: the feature server's REST API and its gRPC services.

pcaps/clients/feast.pcap (made by pcaps/clients/make_feast.py: urllib and grpcio against a
protocol-shaped feature server, not Feast itself) goes through the whole offline pipeline and each
`feast` object is asserted whole; hand-built exchanges cover malformed and unusual bodies.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from httpapi_support import (
    CLIENTS,
    REPO,
    alerts,
    analyze,
    anomalies,
    check_catalogue,
    exchange,
    exchanges,
    grpc_exchange,
    grpc_exchanges,
    layer_records,
    rerun_script,
    ruleset,
    run_layer,
)
from hypothesis import HealthCheck, given, settings

from inspector.engine import Engine
from inspector.protocols import feast
from inspector.protocols.protobuf import encode_message
from inspector.rules import load_config, load_rules

FEAST_PCAP = CLIENTS / "feast.pcap"
CONV_ACC = ['driver_hourly_stats:conv_rate', 'driver_hourly_stats:acc_rate']

FEAST_EXPECTED = [
    {'api': 'get_online_features', 'transport': 'rest', 'features': CONV_ACC, 'feature_count': 2,
     'full_feature_names': False, 'entities': ['driver_id'], 'entity_count': 2, 'values_returned': 6},
    {'api': 'get_online_features', 'transport': 'rest', 'feature_service': 'driver_activity_v1',
     'entities': ['driver_id'], 'entity_count': 500, 'values_returned': 500},
    {'api': 'get_online_features', 'transport': 'rest', 'features': ['missing_view:x'], 'feature_count': 1,
     'entities': ['driver_id'], 'entity_count': 1,
     'error': '{"module": "feast.errors", "class": "FeatureViewNotFoundException", '
              '"message": "Feature view missing_view does not exist"}'},
    {'api': 'retrieve_online_documents', 'transport': 'rest',
     'features': ['city_embeddings:vector', 'city_embeddings:state'], 'feature_count': 2, 'top_k': 3,
     'query_length': 4, 'values_returned': 6},
    {'api': 'push', 'transport': 'rest', 'push_source_name': 'driver_stats_push_source', 'to': 'online_and_offline',
     'columns': ['driver_id', 'conv_rate', 'event_timestamp'], 'row_count': 3},
    {'api': 'write_to_online_store', 'transport': 'rest', 'feature_view_name': 'driver_hourly_stats',
     'columns': ['driver_id', 'acc_rate'], 'row_count': 1},
    {'api': 'materialize', 'transport': 'rest', 'start_ts': '2026-01-01T00:00:00', 'end_ts': '2026-01-02T00:00:00',
     'feature_views': ['driver_hourly_stats']},
    {'api': 'materialize_incremental', 'transport': 'rest', 'end_ts': '2026-01-02T00:00:00'},
    {'api': 'read_document', 'transport': 'rest', 'file_path': '/etc/passwd', 'document_length': 32},
    {'api': 'save_document', 'transport': 'rest', 'file_path': '../../root/.ssh/authorized_keys',
     'error': 'Invalid file path'},
    {'api': 'health', 'transport': 'rest'},
    {'api': 'get_online_features', 'transport': 'rest',
     'error': '[{"type": "json_invalid", "loc": ["body", 1], "msg": "JSON decode error", "input": {}}]'},
    {'api': 'get_online_features', 'transport': 'grpc', 'full_feature_names': True, 'features': CONV_ACC,
     'feature_count': 2, 'entities': ['driver_id'], 'entity_count': 3},
    {'api': 'push', 'transport': 'grpc', 'push_source_name': 'driver_stats_push_source', 'to': 'online',
     'columns': ['driver_id', 'conv_rate']},
]


def feast_objects(path) -> list[dict]:
    return [r["feast"] for r in layer_records(path, "feast")]


def test_capture_record_by_record():
    _, records = analyze(FEAST_PCAP)
    transactions = [r for r in records if r["event_type"] not in ("flow", "anomaly")]
    assert [r["feast"] for r in transactions] == FEAST_EXPECTED
    assert {r["event_type"] for r in transactions} == {"feast"}
    assert anomalies(records) == [("feast", "feast_request_invalid_json")]
    grpc_records = [r for r in transactions if r["feast"]["transport"] == "grpc"]
    assert [(r["grpc"]["service"], r["grpc"]["method"], r["grpc"]["status"]) for r in grpc_records] == [
        ("feast.serving.ServingService", "GetOnlineFeatures", 0), ("grpc.connector.GrpcFeatureServer", "Push", 0)]
    assert {r["dest_port"] for r in transactions if r["feast"]["transport"] == "rest"} == {6566}


RULES = {
    "feast_read_document.yml": """
title: Feast read-document with a file path
id: 1e0f9a7c-3b2d-4c5e-8f60-7a8b9c0d0001
sid: 9410001
status: test
level: high
event: feast
detection:
  selection:
    feast.api: read_document
    feast.file_path|exists: true
  condition: selection
""",
    "feast_bulk_lookup.yml": """
title: Feast bulk entity enumeration
id: 1e0f9a7c-3b2d-4c5e-8f60-7a8b9c0d0002
sid: 9410002
status: test
level: medium
event: feast
detection:
  selection:
    feast.entity_count|gte: 100
  condition: selection
""",
}


def test_rules_fire_on_feast_fields(tmp_path):
    fired = alerts(FEAST_PCAP, ruleset(tmp_path, RULES))
    assert [(a["alert"]["signature_id"], a["feast"]["api"], a["feast"].get("file_path")) for a in fired] == [
        (9410002, "get_online_features", None), (9410001, "read_document", "/etc/passwd")]


@pytest.mark.slow
def test_capture_script_reproduces_the_transactions(tmp_path):
    rerun_script("make_feast.py", tmp_path)
    assert feast_objects(tmp_path / "feast.pcap") == FEAST_EXPECTED


# --- REST -------------------------------------------------------------------------------------------


def test_retrieve_documents_v2_and_caps():
    features = [f"v:f{i}" for i in range(200)]
    obj, _ = run_layer(feast, exchange("POST", "/retrieve-online-documents", {
        "features": features, "query_string": "x" * 10, "api_version": 2, "top_k": "7"}, status=None))
    assert obj == {"api": "retrieve_online_documents", "transport": "rest", "features": features[:feast.LIST_ITEMS],
                   "feature_count": 200, "top_k": 7, "query_string_length": 10, "api_version": 2}


def test_entity_keys_counted_over_every_entity():
    obj, _ = run_layer(feast, exchange("POST", "/get-online-features", {
        "features": ["v:f"], "entities": {"driver_id": [1, 2, 3], "customer_id": ["a", "b"], "odd": 5}},
        status=None))
    assert (obj["entities"], obj["entity_count"]) == (["driver_id", "customer_id", "odd"], 6)


@pytest.mark.parametrize(("method", "path", "port"), [
    ("GET", "/health", 8080),  # a bare /health elsewhere is not Feast
    ("GET", "/get-online-features", 6566),
    ("POST", "/get-online-features/x", 6566),
    ("POST", "/chat", 6566),
])
def test_not_claimed(method, path, port):
    assert run_layer(feast, exchange(method, path, {"a": 1}), dest_port=port) == (None, [])


def test_s3_calls_are_left_to_the_s3_layer():
    ex = exchange("POST", "/push", {"push_source_name": "x"})
    assert run_layer(feast, ex, earlier={"s3": {"operation": "PostObject"}}) == (None, [])


@pytest.mark.parametrize(("body", "events"), [
    (b'{"file_path": "/etc/pas', ["feast_request_invalid_json"]),
    (b'"just a string"', ["feast_request_not_object"]),
    (b"\x00\x01\x02", ["feast_request_invalid_json"]),
])
def test_malformed_requests(body, events):
    obj, problems = run_layer(feast, exchange("POST", "/read-document", body))
    assert obj == {"api": "read_document", "transport": "rest"}
    assert [e for e, _ in problems] == events


def test_truncated_answer_is_reported():
    obj, problems = run_layer(feast, exchange("POST", "/read-document", {"file_path": "/etc/shadow"},
                                              response_body=b'{"content": "root:$6$', response_truncated=True))
    assert obj == {"api": "read_document", "transport": "rest", "file_path": "/etc/shadow"}
    assert [e for e, _ in problems] == ["feast_response_truncated"]


# --- gRPC -------------------------------------------------------------------------------------------


def test_grpc_write_to_online_store_and_serving_info():
    payload = encode_message([(1, encode_message([(1, "acc_rate"), (2, "[0.5]")])), (2, "driver_hourly_stats"),
                              (3, 1)])
    obj, problems = run_layer(feast, grpc_exchange("/grpc.connector.GrpcFeatureServer/WriteToOnlineStore",
                                                   payload))
    assert obj == {"api": "write_to_online_store", "transport": "grpc", "feature_view_name": "driver_hourly_stats",
                   "columns": ["acc_rate"]}
    assert problems == []
    obj, _ = run_layer(feast, grpc_exchange("/feast.serving.ServingService/GetFeastServingInfo", b""))
    assert obj == {"api": "serving_info", "transport": "grpc"}


def test_grpc_feature_service_lookup():
    values = encode_message([(1, encode_message([(3, "a")])), (1, encode_message([(3, "b")]))])
    payload = encode_message([(1, "fraud_v2"), (3, encode_message([(1, "user_id"), (2, values)]))])
    obj, _ = run_layer(feast, grpc_exchange("/feast.serving.GrpcFeatureServer/GetOnlineFeatures", payload))
    assert obj == {"api": "get_online_features", "transport": "grpc", "feature_service": "fraud_v2",
                   "entities": ["user_id"], "entity_count": 2}


def test_grpc_undecodable_message_is_an_anomaly_and_keeps_what_came_first():
    payload = encode_message([(2, "driver_stats")]) + b"\x0a\xff\x01"  # a length running past the end
    obj, problems = run_layer(feast, grpc_exchange("/grpc.connector.GrpcFeatureServer/Push", payload))
    assert obj == {"api": "push", "transport": "grpc", "push_source_name": "driver_stats"}
    assert [e for e, _ in problems] == ["feast_protobuf_error"]


def test_other_grpc_services_are_not_feast():
    assert run_layer(feast, grpc_exchange("/inference.GRPCInferenceService/ModelInfer", b"")) == (None, [])


FEAST_PATHS = ["/get-online-features", "/retrieve-online-documents", "/push", "/write-to-online-store",
               "/materialize", "/materialize-incremental", "/read-document", "/save-document", "/health"]
FEAST_KEYS = ["features", "feature_service", "entities", "full_feature_names", "top_k", "query", "query_string",
              "api_version", "push_source_name", "feature_view_name", "df", "to", "start_ts", "end_ts",
              "feature_views", "file_path", "results", "values", "content", "error", "detail", "message"]
FEAST_GRPC = ["/feast.serving.ServingService/GetOnlineFeatures", "/grpc.connector.GrpcFeatureServer/Push",
              "/grpc.connector.GrpcFeatureServer/WriteToOnlineStore", "/feast.serving.GrpcFeatureServer/Other"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exchanges(FEAST_PATHS, FEAST_KEYS))
def test_never_raises(ex):
    obj, problems = run_layer(feast, ex, dest_port=6566)
    json.dumps(obj)
    assert all(event.startswith("feast_") for event, _ in problems)
    assert obj is not None or problems == []  # no anomalies about exchanges the layer does not claim


@settings(max_examples=300, deadline=None)
@given(grpc_exchanges(FEAST_GRPC))
def test_grpc_never_raises(ex):
    obj, problems = run_layer(feast, ex)
    assert obj is not None and obj["transport"] == "grpc"
    json.dumps(obj)
    assert {event for event, _ in problems} <= {"feast_protobuf_error"}


def test_fields_are_declared():
    extra, _ = run_layer(feast, exchange("POST", "/retrieve-online-documents",
                                         {"query_string": "q", "api_version": 2}, status=None))
    routed, _ = run_layer(feast, exchange("POST", "/pu%73h", {}, status=None))
    check_catalogue("feast", [*feast_objects(FEAST_PCAP), extra, routed])


def test_feast_evasion_capture_is_routed_as_starlette_routes_it():
    """feast serve 0.67.0 answered these percent-encoded route names (tests/protocols/captures/README.md)."""
    rules = load_rules([REPO / "signatures"], load_config(None))
    records = analyze(Path(__file__).parent / "captures" / "feast_evasion.pcap", Engine(rules))[1]
    calls = [(r["http"]["url"], r["feast"]["api"], r["feast"].get("routed_path"))
             for r in records if r["event_type"] == "feast"]
    assert calls == [("/get%2Donline%2Dfeatures", "get_online_features", "/get-online-features"),
                     ("/materialize%2Dincremental", "materialize_incremental", "/materialize-incremental"),
                     ("/pu%73h", "push", "/push")]
    fired = sorted(a["alert"]["signature_id"] for a in records if a["event_type"] == "alert")
    assert fired == [3400002, 3400004, 3400004, 3400005, 3400005, 3400005]


def test_feast_doubled_slash_is_not_routed():
    """Starlette does not merge slashes: feast serve 0.67.0 answered //read-document 404."""
    assert run_layer(feast, exchange("POST", "//read-document", {"file_path": "/etc/hostname"}))[0] is None


def test_feast_plain_path_has_no_routed_path():
    obj, problems = run_layer(feast, exchange("POST", "/push", {"push_source_name": "s", "df": {}}, status=None))
    assert "routed_path" not in obj and problems == []
