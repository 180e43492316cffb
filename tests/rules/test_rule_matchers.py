"""Field matching: every modifier both ways, case, lists, paths through lists, null, variables."""

from __future__ import annotations

import base64
from typing import Any

import pytest


def http(**fields: Any) -> dict:
    return {"event_type": "http", "src_ip": "10.1.2.3", "dest_ip": "10.0.1.2", "http": fields}


def grpc(**fields: Any) -> dict:
    return {"event_type": "grpc", "src_ip": "10.1.2.3", "http": {"url": "/x"}, "grpc": fields}


def triton(**fields: Any) -> dict:
    return {"event_type": "triton", "src_ip": "10.1.2.3", "http": {}, "grpc": {}, "triton": fields}


B64_SECRET = base64.b64encode(b"secret-token").decode()

# (id, selection, event, record, expected)
CASES = [
    # equality: strings case-insensitive by default
    ("eq", {"http.url": "/v2/health"}, "http", http(url="/v2/health"), True),
    ("eq-other-case", {"http.url": "/v2/health"}, "http", http(url="/V2/HEALTH"), True),
    ("eq-negative", {"http.url": "/v2/health"}, "http", http(url="/v2/health/ready"), False),
    ("eq-missing-field", {"http.url": "/v2/health"}, "http", http(hostname="a"), False),
    ("eq-missing-object", {"http.url": "/v2/health"}, "http", {"event_type": "http"}, False),
    ("eq-value-list-or", {"http.http_method": ["PUT", "DELETE"]}, "http", http(http_method="delete"), True),
    ("eq-value-list-none", {"http.http_method": ["PUT", "DELETE"]}, "http", http(http_method="GET"), False),
    ("cased-exact", {"http.url|cased": "/V2/Models"}, "http", http(url="/V2/Models"), True),
    ("cased-other-case", {"http.url|cased": "/V2/Models"}, "http", http(url="/v2/models"), False),
    # contains / startswith / endswith
    ("contains", {"http.url|contains": "../"}, "http", http(url="/files/../etc/passwd"), True),
    ("contains-case", {"http.url|contains": "PASSWD"}, "http", http(url="/etc/passwd"), True),
    ("contains-negative", {"http.url|contains": "../"}, "http", http(url="/files/a"), False),
    ("contains-list-or", {"http.url|contains": ["zzz", "etc"]}, "http", http(url="/etc/x"), True),
    ("contains-cased-neg", {"http.url|contains|cased": "ETC"}, "http", http(url="/etc/x"), False),
    ("contains-cased-pos", {"http.url|contains|cased": "ETC"}, "http", http(url="/ETC/x"), True),
    ("contains-all", {"http.url|contains|all": ["repository", "load"]}, "http",
     http(url="/v2/repository/models/m/load"), True),
    ("contains-all-one-missing", {"http.url|contains|all": ["repository", "unload"]}, "http",
     http(url="/v2/repository/models/m/load"), False),
    ("startswith", {"http.url|startswith": "/v2/repository"}, "http", http(url="/V2/Repository/index"), True),
    ("startswith-negative", {"http.url|startswith": "/v2/repository"}, "http", http(url="/x/v2/repository"), False),
    ("endswith", {"http.url|endswith": "/load"}, "http", http(url="/v2/repository/models/m/load"), True),
    ("endswith-negative", {"http.url|endswith": "/load"}, "http", http(url="/load/x"), False),
    ("string-op-on-number", {"http.url|contains": "1"}, "http", http(url=1), False),
    # regular expressions: Sigma semantics, case-sensitive unless |i
    ("re", {"http.url|re": r"/models/[^/]+/load$"}, "http", http(url="/v2/repository/models/m1/load"), True),
    ("re-negative", {"http.url|re": r"/models/[^/]+/load$"}, "http", http(url="/v2/models/m1/unload/x"), False),
    ("re-case-sensitive", {"http.url|re": r"^/V2/"}, "http", http(url="/v2/models"), False),
    ("re-i", {"http.url|re|i": r"^/V2/"}, "http", http(url="/v2/models"), True),
    ("re-s", {"http.url|re|s": r"a.b"}, "http", http(url="a\nb"), True),
    ("re-no-s", {"http.url|re": r"a.b"}, "http", http(url="a\nb"), False),
    ("re-list-or", {"http.url|re": [r"^/nope", r"^/v2"]}, "http", http(url="/v2/x"), True),
    ("re-all", {"http.url|re|all": [r"^/v2", r"load$"]}, "http", http(url="/v2/x/unload/y"), False),
    # cidr and IP equality
    ("cidr", {"src_ip|cidr": "10.0.0.0/8"}, "http", http(url="/"), True),
    ("cidr-negative", {"src_ip|cidr": "192.168.0.0/16"}, "http", http(url="/"), False),
    ("cidr-list", {"src_ip|cidr": ["192.168.0.0/16", "10.1.0.0/16"]}, "http", http(url="/"), True),
    ("cidr-v6", {"src_ip|cidr": "2001:db8::/32"}, "http",
     {"event_type": "http", "src_ip": "2001:db8:1::5", "http": {}}, True),
    ("cidr-v4-vs-v6", {"src_ip|cidr": "::/0"}, "http", http(url="/"), False),
    ("cidr-garbage-address", {"src_ip|cidr": "0.0.0.0/0"}, "http",
     {"event_type": "http", "src_ip": "not-an-ip", "http": {}}, False),
    ("ip-eq-canonical", {"src_ip": "2001:db8::1"}, "http",
     {"event_type": "http", "src_ip": "2001:DB8:0:0::1", "http": {}}, True),
    ("ip-eq-negative", {"src_ip": "10.1.2.4"}, "http", http(url="/"), False),
    ("ip-neq", {"src_ip|neq": "10.1.2.4"}, "http", http(url="/"), True),
    # exists
    ("exists-true", {"http.hostname|exists": True}, "http", http(hostname="a"), True),
    ("exists-true-missing", {"http.hostname|exists": True}, "http", http(url="/"), False),
    ("exists-true-null", {"http.hostname|exists": True}, "http", http(hostname=None), False),
    ("exists-false-missing", {"http.hostname|exists": False}, "http", http(url="/"), True),
    ("exists-false-present", {"http.hostname|exists": False}, "http", http(hostname="a"), False),
    ("exists-object", {"triton.log_settings|exists": True}, "triton", triton(log_settings={"log_file": "x"}), True),
    ("exists-empty-list", {"triton.tags|exists": True}, "triton", triton(tags=[]), False),
    ("exists-false-empty-list", {"triton.tags|exists": False}, "triton", triton(tags=[]), True),
    # numbers
    ("gt", {"http.status|gt": 499}, "http", http(status=500), True),
    ("gt-boundary", {"http.status|gt": 500}, "http", http(status=500), False),
    ("gte-boundary", {"http.status|gte": 500}, "http", http(status=500), True),
    ("lt", {"http.status|lt": 200}, "http", http(status=101), True),
    ("lt-boundary", {"http.status|lt": 200}, "http", http(status=200), False),
    ("lte-boundary", {"http.status|lte": 200}, "http", http(status=200), True),
    ("gt-float", {"http.length|gt": 0.5}, "http", http(length=1), True),
    ("gt-string-is-not-number", {"http.status|gt": 100}, "http", http(status="500"), False),
    ("gt-bool-is-not-number", {"grpc.status|gt": 0}, "grpc", grpc(status=True), False),
    ("gt-list-any-bound", {"http.status|gt": [600, 499]}, "http", http(status=500), True),
    ("gt-all-every-bound", {"http.status|gt|all": [600, 499]}, "http", http(status=500), False),
    ("num-eq", {"http.status": 200}, "http", http(status=200), True),
    ("num-eq-float", {"http.status": 200}, "http", http(status=200.0), True),
    ("num-eq-string", {"http.status": 200}, "http", http(status="200"), False),
    ("num-eq-bool", {"grpc.status": 1}, "grpc", grpc(status=True), False),
    ("bool-eq", {"grpc.compressed": True}, "grpc", grpc(compressed=True), True),
    ("bool-eq-int", {"grpc.compressed": True}, "grpc", grpc(compressed=1), False),
    ("bool-eq-false", {"grpc.compressed": False}, "grpc", grpc(compressed=False), True),
    # neq
    ("neq", {"http.http_method|neq": "GET"}, "http", http(http_method="POST"), True),
    ("neq-same", {"http.http_method|neq": "GET"}, "http", http(http_method="get"), False),
    ("neq-list", {"http.http_method|neq": ["GET", "POST"]}, "http", http(http_method="POST"), False),
    ("neq-missing", {"http.http_method|neq": "GET"}, "http", http(url="/"), False),
    ("neq-number", {"grpc.status|neq": 0}, "grpc", grpc(status=7), True),
    ("neq-number-same", {"grpc.status|neq": 0}, "grpc", grpc(status=0), False),
    # base64
    ("base64-contains", {"http.url|base64|contains": "secret-token"}, "http",
     http(url=f"/q?t={B64_SECRET}"), True),
    ("base64-contains-plain", {"http.url|base64|contains": "secret-token"}, "http",
     http(url="/q?t=secret-token"), False),
    ("base64-eq", {"http.url|base64": "abc"}, "http", http(url="YWJj"), True),
    ("base64-is-cased", {"http.url|base64": "abc"}, "http", http(url="ywjj"), False),
    ("base64offset-0", {"http.url|base64offset|contains": "secret"}, "http",
     http(url=base64.b64encode(b"my secret here").decode()), True),
    ("base64offset-1", {"http.url|base64offset|contains": "secret"}, "http",
     http(url=base64.b64encode(b"x secret here").decode()), True),
    ("base64offset-2", {"http.url|base64offset|contains": "secret"}, "http",
     http(url=base64.b64encode(b"secret here").decode()), True),
    ("base64offset-negative", {"http.url|base64offset|contains": "secret"}, "http",
     http(url=base64.b64encode(b"nothing to see").decode()), False),
    # null
    ("null-missing", {"http.hostname": None}, "http", http(url="/"), True),
    ("null-none", {"http.hostname": None}, "http", http(hostname=None), True),
    ("null-present", {"http.hostname": None}, "http", http(hostname="a"), False),
    ("null-or-value", {"http.hostname": [None, "a"]}, "http", http(hostname="A"), True),
    # list-valued fields and paths through lists of objects
    ("list-field-any", {"triton.tags": "prod"}, "triton", triton(tags=["dev", "prod"]), True),
    ("list-field-none", {"triton.tags": "prod"}, "triton", triton(tags=["dev", "test"]), False),
    ("list-field-contains-all", {"triton.tags|contains|all": ["de", "te"]}, "triton",
     triton(tags=["dev", "test"]), True),
    ("list-int-field", {"grpc.request.lengths|gt": 1000}, "grpc", grpc(request={"lengths": [10, 5000]}), True),
    ("list-int-field-neg", {"grpc.request.lengths|gt": 1000}, "grpc", grpc(request={"lengths": [10, 50]}), False),
    ("path-through-list", {"triton.inputs.name": "INPUT1"}, "triton",
     triton(inputs=[{"name": "INPUT0"}, {"name": "input1"}]), True),
    ("path-through-list-neg", {"triton.inputs.name": "INPUT2"}, "triton",
     triton(inputs=[{"name": "INPUT0"}, {"name": "input1"}]), False),
    ("path-through-list-of-lists", {"triton.inputs.shape|gt": 4096}, "triton",
     triton(inputs=[{"shape": [1, 3]}, {"shape": [1, 100000]}]), True),
    ("path-through-list-of-lists-neg", {"triton.inputs.shape|gt": 4096}, "triton",
     triton(inputs=[{"shape": [1, 3]}, {"shape": [1, 10]}]), False),
    ("path-through-list-missing", {"triton.inputs.shape|gt": 1}, "triton", triton(inputs=[{"name": "x"}]), False),
    ("path-through-list-null", {"triton.inputs.shape": None}, "triton", triton(inputs=[{"name": "x"}]), True),
    ("headers-list", {"http.request_headers.name": "x-api-key"}, "http",
     http(request_headers=[{"name": "accept", "value": "*"}, {"name": "X-Api-Key", "value": "k"}]), True),
    ("path-into-scalar", {"triton.inputs.name": "x"}, "triton", triton(inputs="x"), False),
    # layered records: a triton rule may use grpc and http fields
    ("layer-parent-field", {"grpc.method": "ModelInfer", "triton.model": "resnet"}, "triton",
     {"event_type": "triton", "grpc": {"method": "ModelInfer"}, "triton": {"model": "resnet"}}, True),
]


@pytest.mark.parametrize(("selection", "event", "record", "expected"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_selection_matches(compile_rule, selection, event, record, expected):
    rule = compile_rule({"sel": selection, "condition": "sel"}, event=event)
    assert rule.match(record) is expected


def test_map_is_and_across_fields(compile_rule):
    rule = compile_rule({"sel": {"http.http_method": "POST", "http.url|startswith": "/v2/repository"},
                         "condition": "sel"})
    assert rule.match(http(http_method="POST", url="/v2/repository/index"))
    assert not rule.match(http(http_method="GET", url="/v2/repository/index"))
    assert not rule.match(http(http_method="POST", url="/v2/models"))


def test_list_of_maps_is_or(compile_rule):
    rule = compile_rule({"sel": [{"http.http_method": "DELETE"}, {"http.url|contains": "unload"}],
                         "condition": "sel"})
    assert rule.match(http(http_method="DELETE", url="/"))
    assert rule.match(http(http_method="GET", url="/v2/repository/models/m/unload"))
    assert not rule.match(http(http_method="GET", url="/"))


def test_list_variable_expands_into_values(compile_rule):
    variables = {"ADMIN_NETS": ["192.168.0.0/16", "10.1.0.0/16"]}
    rule = compile_rule({"sel": {"src_ip|cidr": "$ADMIN_NETS"}, "condition": "sel"}, variables=variables)
    assert rule.match(http(url="/"))
    assert not rule.match({"event_type": "http", "src_ip": "172.16.0.1", "http": {}})


def test_variable_as_list_element(compile_rule):
    variables = {"APPROVED": ["models-prod", "models-dev"]}
    rule = compile_rule({"sel": {"http.hostname": ["$APPROVED", "extra"]}, "condition": "sel"}, variables=variables)
    assert [rule.match(http(hostname=h)) for h in ("models-dev", "EXTRA", "other")] == [True, True, False]


def test_scalar_variable_in_numeric_comparison(compile_rule):
    rule = compile_rule({"sel": {"grpc.request.lengths|gte": "$MAX_BYTES"}, "condition": "sel"},
                        event="grpc", variables={"MAX_BYTES": 4096})
    assert rule.match(grpc(request={"lengths": [4096]}))
    assert not rule.match(grpc(request={"lengths": [4095]}))


def test_empty_list_variable_matches_nothing_and_not_matches_everything(compile_rule):
    rule = compile_rule({"sel": {"http.url|startswith": "/"}, "approved": {"http.hostname": "$APPROVED"},
                         "condition": "sel and not approved"}, variables={"APPROVED": []})
    assert rule.match(http(url="/x", hostname="anything"))
    neq = compile_rule({"sel": {"http.hostname|neq": "$APPROVED"}, "condition": "sel"}, variables={"APPROVED": []})
    assert neq.match(http(hostname="anything"))
    assert not neq.match(http(url="/"))


def test_dollar_inside_a_value_is_literal(compile_rule):
    rule = compile_rule({"sel": {"http.url|contains": "$HOME/x"}, "condition": "sel"})
    assert rule.match(http(url="/a/$home/x"))
