"""Dispatch and index: narrowing never loses a match (property test against evaluating every rule)."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inspector.rules import dispatch
from inspector.rules.dispatch import LONG_VALUE, Dispatcher, choose_index
from inspector.rules.layers import STANDALONE_EVENT_TYPES, known_event_types, record_layers
from inspector.rules.schema import build_rule
from inspector.rules.testing import isolated_catalogue

WORDS = ["ModelInfer", "ModelMetadata", "ServerLive", "inference.GRPCInferenceService", "/v2/models/resnet/infer",
         "/v2/repository/index", "../", "%2e%2e", "etc/passwd", "resnet", "bert", "POST", "GET", "load", "x",
         "/v2/models/resnet/load", "/ETC/pa\u017f\u017fwd", "/\u0130ndex"]

DETECTIONS = [
    ("grpc", {"s": {"grpc.method": "ModelInfer"}, "condition": "s"}),
    ("grpc", {"s": {"grpc.method": ["ModelMetadata", "ServerLive"]}, "condition": "s"}),
    ("grpc", {"s": {"grpc.method|cased": "ModelInfer"}, "condition": "s"}),
    ("grpc", {"s": {"grpc.service|startswith": "inference."}, "f": {"grpc.method": "ServerLive"},
              "condition": "s and not f"}),
    ("http", {"s": {"http.url|contains": ["../", "%2e%2e"]}, "condition": "s"}),
    ("http", {"s": {"http.url|contains": "x"}, "condition": "s"}),  # too short to index
    ("http", {"s": {"http.url|endswith": "/infer", "http.http_method": "POST"}, "condition": "s"}),
    ("http", {"s": {"http.url|contains|all": ["repository", "index"]}, "condition": "s"}),
    ("http", {"a": {"http.http_method": "GET"}, "b": {"http.url|contains": "passwd"}, "condition": "a or b"}),
    ("http", {"s": [{"http.http_method": "POST"}, {"http.status": 500}], "condition": "s"}),
    ("http", {"s": {"http.status": [500, 503]}, "condition": "s"}),
    ("http", {"s": {"http.hostname": None}, "condition": "not s"}),
    (["http", "grpc"], {"s": {"http.request_headers.value|contains": "resnet"}, "condition": "s"}),
    ("triton", {"s": {"triton.inputs.name": "INPUT0", "triton.model|startswith": "res"}, "condition": "s"}),
    ("triton", {"s": {"triton.tags": "load"}, "condition": "1 of them"}),
    ("triton", {"s": {"grpc.method": "ModelInfer"}, "t": {"triton.model": "bert"}, "condition": "all of them"}),
    ("anomaly", {"s": {"anomaly.layer": "http2"}, "condition": "s"}),
    ("http", {"s": {"http.url|re": r"/models/[a-z]+/(load|unload)$"}, "condition": "s"}),
    ("http", {"s": {"http.url|re|i": r"etc/pass"}, "condition": "s"}),
    ("http", {"s": {"http.url|re": [r"(?i:REPOSITORY)/index", r"\.\./"]}, "condition": "s"}),
    ("http", {"s": {"http.url|re": r"^(a|b)"}, "condition": "s"}),
]


def build_rules(catalog):
    rules = []
    for sid, (event, detection) in enumerate(DETECTIONS, 1):
        doc = {"title": f"r{sid}", "id": str(uuid.uuid4()), "sid": sid, "status": "test", "level": "low",
               "event": event, "detection": detection}
        rule, errors = build_rule(doc, "<test>", catalogue=catalog, variables={},
                                  known_events=known_event_types(catalog))
        assert not errors, errors
        rules.append(rule)
    return rules


def word_variants():
    return st.sampled_from(WORDS).flatmap(lambda w: st.sampled_from(
        [w, w.upper(), w.swapcase(), f"/a/{w}/b", f"/A/{w.upper()}/B", w[1:], f"{w}{w}"]))


scalars = st.one_of(word_variants(), st.integers(0, 600), st.booleans(), st.none())
http_objects = st.fixed_dictionaries({
    "url": word_variants(), "http_method": word_variants(),
    "request_headers": st.lists(st.fixed_dictionaries({"name": word_variants(), "value": word_variants()}),
                                max_size=3)}, optional={
    "status": st.sampled_from([200, 500, 503, True, "500"]), "hostname": scalars})
grpc_objects = st.fixed_dictionaries({"method": word_variants(), "service": word_variants()})
triton_objects = st.fixed_dictionaries({
    "model": word_variants(), "tags": st.lists(word_variants(), max_size=3),
    "inputs": st.lists(st.fixed_dictionaries({}, optional={"name": st.sampled_from(["INPUT0", "input0", "x"])}),
                       max_size=3)})
records = st.fixed_dictionaries(
    {"event_type": st.sampled_from(["http", "grpc", "triton", "anomaly", "flow", "s3"])},
    optional={"http": http_objects, "grpc": grpc_objects, "triton": triton_objects,
              "anomaly": st.fixed_dictionaries({"layer": st.sampled_from(["http2", "tcp"])})})


@pytest.mark.parametrize("gram_min_rules", [1, dispatch.GRAM_MIN_RULES])
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=records)
def test_candidates_include_every_matching_rule(catalog, monkeypatch, gram_min_rules, record):
    monkeypatch.setattr(dispatch, "GRAM_MIN_RULES", gram_min_rules)
    rules = build_rules(catalog)
    dispatcher = Dispatcher(rules)
    layers = set(record_layers(record, known_event_types(catalog)))
    expected = [r.sid for r in rules if layers & set(r.events) and r.match(record)]
    got = [r.sid for r in dispatcher.candidates(record) if r.match(record)]
    assert got == expected


def test_index_choices(catalog):
    rules = build_rules(catalog)
    choices = {rule.sid: choose_index(rules)[i] for i, rule in enumerate(rules)}
    assert (choices[1].kind, choices[1].field, choices[1].keys) == ("eq", "grpc.method", ("modelinfer",))
    assert choices[3] is None  # cased: no hint
    assert choices[5].kind == "gram" and choices[5].field == "http.url" and len(choices[5].keys) == 2
    assert choices[6] is None  # "x" is shorter than a trigram
    assert choices[7] is not None  # the rarer of http_method POST and the /infer trigrams
    assert choices[9] is None  # `a or b` requires neither
    assert choices[10] is None  # a list of maps gives no hint
    assert (choices[11].kind, choices[11].keys) == ("eq", (500, 503))
    assert choices[12] is None  # `not s` requires nothing
    assert rules[17].hints[0].values == ("/models/",)  # literal runs of the regex
    assert rules[18].hints[0].values == ("etc/pa",)  # under |i, s ends a run (it also matches U+017F)
    assert rules[19].hints[0].values == ("/index", "../")  # one literal per alternative regex
    assert [choices[sid].kind for sid in (18, 19, 20)] == ["gram"] * 3
    assert choices[21] is None  # no literal run every match needs
    assert Dispatcher(rules).indexed == sum(c is not None for c in choices.values())


def test_candidates_are_narrowed_and_in_sid_order(catalog, monkeypatch):
    monkeypatch.setattr(dispatch, "GRAM_MIN_RULES", 1)
    rules = build_rules(catalog)
    dispatcher = Dispatcher(rules)
    record = {"event_type": "grpc", "grpc": {"method": "ModelInfer"}, "http": {"url": "/inference/ModelInfer"}}
    sids = [r.sid for r in dispatcher.candidates(record)]
    assert sids == sorted(sids)
    assert 1 in sids and 2 not in sids and 5 not in sids
    assert set(sids) >= {3, 6, 9, 10, 12}  # unindexed rules of the record's layers
    assert 13 not in sids  # indexed on a header value the record does not have
    assert not set(sids) & {14, 15, 16, 17}  # triton and anomaly rules


def test_few_trigram_rules_scan_a_value_the_second_time(catalog):
    rules = build_rules(catalog)
    record = {"event_type": "http", "http": {"url": "/nothing/here"}}
    dispatcher = Dispatcher(rules)
    sids = {r.sid for r in dispatcher.candidates(record)}
    assert {5, 8, 18, 19, 20} <= sids  # few rules on http.url and a new value: all of them
    assert 1 not in sids  # equality-indexed rules are still skipped
    again = {r.sid for r in dispatcher.candidates(record)}
    assert not again & {5, 8, 18, 19, 20}  # the value came back: scanned, and none can match


def test_trigram_results_are_memoized(catalog, monkeypatch):
    monkeypatch.setattr(dispatch, "GRAM_MIN_RULES", 1)
    monkeypatch.setattr(dispatch, "MEMO_SIZE", 2)
    dispatcher = Dispatcher(build_rules(catalog))
    for url in ("/a/../b", "/a/../b", "/x", "/y"):
        assert 5 in {r.sid for r in dispatcher.candidates({"event_type": "http", "http": {"url": "/a/../b"}})}
        dispatcher.candidates({"event_type": "http", "http": {"url": url}})
    (plan,) = dispatcher._plans.values()
    memo = next(index.memo for index in plan.grams if "/y" in index.memo)
    assert len(memo) <= 2  # bounded: cleared when full


def test_long_values_skip_the_trigram_lookup(catalog, monkeypatch):
    monkeypatch.setattr(dispatch, "GRAM_MIN_RULES", 1)
    rules = build_rules(catalog)
    dispatcher = Dispatcher(rules)
    long_url = "/a" * (LONG_VALUE // 2 + 1) + "../"
    sids = [r.sid for r in dispatcher.candidates({"event_type": "http", "http": {"url": long_url}}) if r.match(
        {"event_type": "http", "http": {"url": long_url}})]
    assert 5 in sids


@pytest.mark.parametrize("event_type", sorted(STANDALONE_EVENT_TYPES))
def test_standalone_records_only_reach_their_own_rules(event_type):
    with isolated_catalogue() as catalog:
        rules = build_rules(catalog)
    record = {"event_type": event_type, "http": {"url": "/../"}, "grpc": {"method": "ModelInfer"},
              "anomaly": {"layer": "http2"}}
    sids = {r.sid for r in Dispatcher(rules).candidates(record)}
    assert sids == ({17} if event_type == "anomaly" else set())
