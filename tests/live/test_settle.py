"""Ending a held answer's hold once its first bytes settle the block rules (inspector.live.settle),
without a proxy: the fields a rule reads, which rule sets allow it, and a held S3 download
through the real inspection (rules loaded from files, the S3 layer, the model-file detection)."""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import pytest
from live_servers import safetensors_model
from live_sidecar import write_rule

from inspector.engine import Engine
from inspector.fields import catalogue
from inspector.http import TO_CLIENT, HttpMessage
from inspector.limits import Limits
from inspector.live import settle
from inspector.live.bodystream import HeldBodyStream
from inspector.live.flowinfo import flow_info
from inspector.live.inspection import Connection, Decision, LiveInspector, LiveSettings
from inspector.live.messages import StreamedMessage, merge, request_exchange, response_exchange
from inspector.live.metrics import Metrics
from inspector.rules import load_config, load_rules

SIGNATURES = Path(__file__).resolve().parents[2] / "signatures"
SID_PICKLE = 9700001
HOLD = 256 << 10


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("true",))


def _block_rules(directory: Path, selection: dict, event: str = "s3") -> list:
    write_rule(directory, SID_PICKLE, "Held-answer rule", event, selection, action="block")
    return [r for r in load_rules([directory]).rules if r.action == "block"]


def _level(rules: list, suppressions=()) -> int | None:
    return settle.settle_level(rules, settle.model_layers(catalogue()), suppressions)


def test_the_shipped_block_rules_settle_once_no_pickle_can_follow():
    rules = [r for r in load_rules([SIGNATURES]).rules if r.action == "block"]
    assert {r.sid for r in rules} >= {2200001, 4800001, 4800002}
    assert _level(rules) == settle.PICKLE


@pytest.mark.parametrize(("selection", "event", "level"), [
    ({"http.url|contains": "/admin"}, "http", settle.HEAD),
    ({"s3.model.pickle.dangerous|exists": True}, "s3", settle.PICKLE),
    ({"modelhub.model.format": "pickle", "modelhub.repo|startswith": "x/"}, "modelhub", settle.MODEL),
    ({"http.length|gt": 10}, "http", None),  # grows with every byte of the body
    ({"s3.error_code": "AccessDenied"}, "s3", None),  # read from an answer's body
    ({"llm.model": "gpt-x"}, "llm", None),  # a layer's `model` that is not a model file
    ({"anomaly.event": "model_safetensors_header_invalid"}, "anomaly", None),  # the rest may raise one
])
def test_how_long_block_rules_keep_an_answer_held(tmp_path, selection, event, level):
    assert _level(_block_rules(tmp_path, selection, event)) == level


@pytest.mark.parametrize(("suppress", "level"), [
    ({"sid": SID_PICKLE, "src_ip": "10.0.0.0/8"}, settle.PICKLE),
    ({"sid": SID_PICKLE, "s3.model.format": "safetensors"}, settle.MODEL),
    ({"sid": SID_PICKLE, "http.length|lt": 1000}, None),  # a suppression can lift a block: it counts too
    ({"sid": 1, "http.length|lt": 1000}, settle.PICKLE),  # of no block rule
])
def test_a_site_suppression_of_a_block_rule_counts_as_the_rule(tmp_path, suppress, level):
    rules = tmp_path / "rules"
    rules.mkdir()
    write_rule(rules, SID_PICKLE, "Held-answer rule", "s3", {"s3.model.pickle.dangerous|exists": True},
               action="block")
    config = tmp_path / "site.yaml"
    config.write_text(json.dumps({"suppress": [suppress]}))
    ruleset = load_rules([rules], load_config(config))
    block = [r for r in ruleset.rules if r.action == "block"]
    assert _level(block, ruleset.config.suppressions.entries) == level


def test_a_block_rule_no_answer_can_meet_is_left_out(tmp_path):
    """A TCPStore rule reads what a TCPStore message carries: it never sees an HTTP answer."""
    write_rule(tmp_path, SID_PICKLE, "Pickle over TCPStore", "tcpstore", {"tcpstore.pickle_dangerous|exists": True},
               action="block")
    write_rule(tmp_path, SID_PICKLE + 1, "Admin path", "http", {"http.url|contains": "/admin"}, action="block")
    rules = list(load_rules([tmp_path]).rules)
    layers = settle.model_layers(catalogue())
    assert settle.settle_level(rules, layers) is None  # counted, its field is not an answer's head
    answer_layers = frozenset({"http", "egress", "s3", "modelhub"})
    assert settle.settle_level(rules, layers, answer_layers=answer_layers) == settle.HEAD
    live = LiveInspector(Engine(load_rules([tmp_path]), blocking=True), lambda record: None, lambda: None, Metrics(),
                         LiveSettings())
    stream, out, inspected = _download(live, DATASET, 1024)  # the sidecar leaves it out too
    assert stream.ended_by == "settled" and inspected == [1024] and out == DATASET


def test_a_rule_not_built_by_the_loader_keeps_the_full_hold(tmp_path):
    (rule,) = _block_rules(tmp_path, {"http.url|contains": "/admin"}, "http")
    import dataclasses

    assert _level([dataclasses.replace(rule, fields=None)]) is None


@pytest.mark.parametrize(("headers", "settles"), [
    ([], True), ([("content-encoding", "identity")], True), ([("content-encoding", "gzip")], False),
    ([("content-encoding", "identity, br")], False),
    ([("content-type", "application/grpc"), ("grpc-encoding", "gzip")], False),  # a message may not decompress
    ([("content-type", "application/grpc-web+proto")], False),
])
def test_a_coded_or_grpc_answer_keeps_the_full_hold(headers, settles):
    head = HttpMessage(kind="response", version="HTTP/2", status=200, headers=headers)
    assert settle.answer_can_settle(head) is settles


def _inspector(tmp_path: Path, selection: dict, event: str = "s3") -> LiveInspector:
    write_rule(tmp_path, SID_PICKLE, "Held-answer rule", event, selection, action="block")
    engine = Engine(load_rules([tmp_path]), blocking=True)
    return LiveInspector(engine, lambda record: None, lambda: None, Metrics(), LiveSettings())


def _download(live: LiveInspector, body: bytes, chunk: int) -> tuple[HeldBodyStream, bytes, list[int]]:
    """A GET of s3://models/m/model.safetensors whose answer streams through a HeldBodyStream
    the way the addon sets it up; what the client got, and the held lengths inspected."""
    request = HttpMessage(kind="request", version="HTTP/1.1", method="GET", scheme="http",
                          authority="127.0.0.1:9000", path="/models/m/model.safetensors",
                          headers=[("host", "127.0.0.1:9000"), ("x-amz-content-sha256", "UNSIGNED-PAYLOAD")])
    head = HttpMessage(kind="response", version="HTTP/1.1", status=200,
                       headers=[("content-length", str(len(body))), ("x-amz-request-id", "1"), ("x-amz-id-2", "2")])
    conn = Connection(info=flow_info(("127.0.0.1", 40000), ("127.0.0.1", 8080), 1.0))
    tx = live.begin(conn, request, 1.0)
    tx.request_side, _ = request_exchange(live.settings.limits, request, b"", [], 1.0)
    inspected: list[int] = []

    def inspect(data: bytes, complete: bool) -> Decision:
        inspected.append(len(data))
        response_side, anomalies = response_exchange(live.settings.limits, head, data, [], time.time(),
                                                     complete=complete)
        return live.inspect(tx, merge(tx.request_side, response_side), anomalies, "response", block_only=True,
                            partial=not complete)

    stream = HeldBodyStream(StreamedMessage(Limits(), TO_CLIENT, head), inspect, lambda reason: None,
                            lambda exc: False, time.time, hold_bytes=HOLD, settled_at=live.answer_settled_at(head))
    out = bytearray()
    for at in range(0, len(body), chunk):
        sent = stream(body[at:at + chunk])
        out += sent if isinstance(sent, bytes) else b"".join(sent)
    sent = stream(b"")
    out += b"".join(sent) if isinstance(sent, list) else sent
    return stream, bytes(out), inspected


DATASET = b"PAR1" + bytes(range(256)) * (4 * HOLD // 256)  # no model format: nothing to scan in it
BENIGN_PICKLE = pickle.dumps(bytes(4 * HOLD), protocol=4)
PICKLE_RULE = {"s3.model.pickle.dangerous|exists": True}
FORMAT_RULE = {"s3.model.format": "pickle"}


@pytest.mark.parametrize("chunk", [7, 1024, 65536])
@pytest.mark.parametrize(("rule", "body", "settled_from"), [
    (PICKLE_RULE, safetensors_model(4 * HOLD), 300),  # past the protocol-0 pickle pattern's reach
    (PICKLE_RULE, DATASET, 300),
    (FORMAT_RULE, safetensors_model(4 * HOLD), 2056),  # its header read, and the HDF5 offsets
    ({"http.url|contains": "/admin"}, DATASET, 1),  # the body cannot matter: the first chunk
], ids=["pickle-rule-safetensors", "pickle-rule-dataset", "format-rule-safetensors", "head-rule-dataset"])
def test_an_answer_is_released_once_its_first_bytes_settle_the_block_rules(tmp_path, chunk, rule, body,
                                                                           settled_from):
    live = _inspector(tmp_path, rule)
    stream, out, inspected = _download(live, body, chunk)
    assert out == body and stream.decision is not None and stream.decision.action == "allow"
    assert stream.ended_by == "settled" and inspected == [-(-settled_from // chunk) * chunk]  # the chunk that got there


def test_the_settled_record_describes_the_model(tmp_path):
    live = _inspector(tmp_path, FORMAT_RULE)
    stream, _, _ = _download(live, safetensors_model(4 * HOLD), 1024)
    assert stream.decision.record["s3"]["model"]["format"] == "safetensors"
    assert stream.decision.record["s3"]["model"]["safetensors"]["header_valid"] is True


@pytest.mark.parametrize(("rule", "body", "blocked"), [
    (PICKLE_RULE, pickle.dumps([_Exploit(), bytes(4 * HOLD)], protocol=4), True),
    (PICKLE_RULE, BENIGN_PICKLE, False),  # a pickle's next opcodes could import anything
    (FORMAT_RULE, DATASET, False),  # only a safetensors header settles a rule on the format
    ({"http.length|gt": 10 ** 12}, safetensors_model(4 * HOLD), False),  # a field of the body
], ids=["pickle-rule-exploit", "pickle-rule-benign-pickle", "format-rule-dataset", "length-rule-safetensors"])
def test_other_answers_keep_the_full_hold(tmp_path, rule, body, blocked):
    live = _inspector(tmp_path, rule, "http" if "http.length|gt" in rule else "s3")
    stream, out, inspected = _download(live, body, 1024)
    assert stream.ended_by == "prefix" and inspected == [HOLD]
    assert stream.blocked is blocked and out == (b"" if blocked else body)
