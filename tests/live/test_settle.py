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
from inspector.protocols.modelfile import settled_at
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


def test_the_shipped_block_rules_settle_with_a_model_header():
    rules = [r for r in load_rules([SIGNATURES]).rules if r.action == "block"]
    assert {r.sid for r in rules} >= {2200001, 4800001, 4800002}
    assert settle.rules_settle_early(rules, settle.model_layers(catalogue()))


@pytest.mark.parametrize(("selection", "event", "settles"), [
    ({"s3.model.pickle.dangerous|exists": True}, "s3", True),
    ({"modelhub.model.format": "pickle", "modelhub.repo|startswith": "x/"}, "modelhub", True),
    ({"http.url|contains": "/admin"}, "http", True),
    ({"http.length|gt": 10}, "http", False),  # grows with every byte of the body
    ({"s3.error_code": "AccessDenied"}, "s3", False),  # read from an answer's body
    ({"llm.model": "gpt-x"}, "llm", False),  # a layer's `model` that is not a model file
    ({"anomaly.event": "model_safetensors_header_invalid"}, "anomaly", False),  # the rest may raise one
])
def test_which_block_rules_a_model_header_settles(tmp_path, selection, event, settles):
    rules = _block_rules(tmp_path, selection, event)
    assert settle.rules_settle_early(rules, settle.model_layers(catalogue())) is settles


@pytest.mark.parametrize(("suppress", "settles"), [
    ({"sid": SID_PICKLE, "src_ip": "10.0.0.0/8"}, True),
    ({"sid": SID_PICKLE, "s3.model.format": "safetensors"}, True),
    ({"sid": SID_PICKLE, "http.length|lt": 1000}, False),  # a suppression can lift a block: it counts too
    ({"sid": 1, "http.length|lt": 1000}, True),  # of no block rule
])
def test_a_site_suppression_of_a_block_rule_counts_as_the_rule(tmp_path, suppress, settles):
    rules = tmp_path / "rules"
    rules.mkdir()
    write_rule(rules, SID_PICKLE, "Held-answer rule", "s3", {"s3.model.pickle.dangerous|exists": True},
               action="block")
    config = tmp_path / "site.yaml"
    config.write_text(json.dumps({"suppress": [suppress]}))
    ruleset = load_rules([rules], load_config(config))
    block = [r for r in ruleset.rules if r.action == "block"]
    entries = ruleset.config.suppressions.entries
    assert settle.rules_settle_early(block, settle.model_layers(catalogue()), entries) is settles


def test_a_rule_not_built_by_the_loader_keeps_the_full_hold(tmp_path):
    (rule,) = _block_rules(tmp_path, {"http.url|contains": "/admin"}, "http")
    import dataclasses

    assert not settle.rules_settle_early([dataclasses.replace(rule, fields=None)], frozenset({"s3"}))


@pytest.mark.parametrize(("coding", "settles"), [(None, True), ("identity", True), ("gzip", False),
                                                  ("identity, br", False)])
def test_a_content_coded_answer_keeps_the_full_hold(coding, settles):
    assert settle.answer_can_settle(coding) is settles


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
                            lambda exc: False, time.time, hold_bytes=HOLD,
                            settled_at=settled_at if live.answer_settles_early(head) else None)
    out = bytearray()
    for at in range(0, len(body), chunk):
        sent = stream(body[at:at + chunk])
        out += sent if isinstance(sent, bytes) else b"".join(sent)
    sent = stream(b"")
    out += b"".join(sent) if isinstance(sent, list) else sent
    return stream, bytes(out), inspected


@pytest.mark.parametrize("chunk", [7, 1024, 65536])
def test_a_safetensors_download_is_released_once_its_header_is_in(tmp_path, chunk):
    live = _inspector(tmp_path, {"s3.model.pickle.dangerous|exists": True})
    body = safetensors_model(4 * HOLD)
    stream, out, inspected = _download(live, body, chunk)
    assert out == body and stream.decision is not None and stream.decision.action == "allow"
    assert stream.ended_by == "settled" and inspected == [-(-2056 // chunk) * chunk]  # the chunk that reached 2056
    assert stream.decision.record["s3"]["model"]["format"] == "safetensors"
    assert stream.decision.record["s3"]["model"]["safetensors"]["header_valid"] is True


def test_a_pickle_download_is_still_held_and_blocked(tmp_path):
    live = _inspector(tmp_path, {"s3.model.pickle.dangerous|exists": True})
    body = pickle.dumps([_Exploit(), bytes(4 * HOLD)], protocol=4)
    stream, out, inspected = _download(live, body, 1024)
    assert out == b"" and stream.blocked and stream.ended_by == "prefix" and inspected == [HOLD]


def test_a_rule_on_the_body_keeps_a_safetensors_download_held(tmp_path):
    live = _inspector(tmp_path, {"http.length|gt": 10 ** 12}, "http")
    body = safetensors_model(4 * HOLD)
    stream, out, inspected = _download(live, body, 1024)
    assert out == body and stream.ended_by == "prefix" and inspected == [HOLD]
