"""A large answer through `inspector proxy` (http.client over TLS, a real HTTP/1.1 upstream that
sends its first 256 KiB, pauses, then sends the rest): its first MiB is held back until inspected
when a block rule could act on it, and forwarded as it comes when nothing can block (no block
rules, `--uninspectable alert`); either way the transaction is evaluated whole when the body
ends. Under a block rule on a model's pickles, a safetensors model pulled from an S3-like store
is released once its first bytes rule a pickle out, and a pickle is held (inspector.live.settle).
Past the inspected first MiB, an answer with a Content-Length goes on through mitmproxy without
a call per chunk (handed back), and its record still has the whole length; a chunked one is
counted to its end; one cut short after the hand-back fails and its record claims no length it
did not see."""

from __future__ import annotations

import http.client
import pickle
import ssl
import time

import pytest
from live_servers import QuietHandler, safetensors_model, serving
from live_sidecar import Sidecar, write_rule

FIRST = 256 << 10
SIZE = 2 << 20  # over the stream threshold (1 MiB): the body streams
PAUSE = 1.5
BODY = bytes(range(256)) * (SIZE // 256)
SID_ALERT = 9500001
SID_BLOCK = 9500002
SID_MODEL = 9500003
CHUNKED_PATH = "/weights/chunked"
SHORT_PATH = "/weights/short"  # declares SIZE + 1 MiB, sends SIZE, closes
MODEL_PATH = "/models/m1/model.safetensors"
PICKLE_PATH = "/models/m1/model.pkl"
MODEL = safetensors_model(SIZE)
BENIGN_PICKLE = pickle.dumps(bytes(SIZE), protocol=4)  # no global: allowed once its first MiB is scanned
OBJECTS = {MODEL_PATH: MODEL, PICKLE_PATH: BENIGN_PICKLE}


class _Handler(QuietHandler):
    def do_GET(self) -> None:
        if self.path == CHUNKED_PATH:
            self._chunked()
            return
        if self.path == SHORT_PATH:
            self.send_response(200)
            self.send_header("content-length", str(SIZE + (1 << 20)))
            self.end_headers()
            self.wfile.write(BODY)
            self.wfile.flush()
            self.close_connection = True
            return
        body = OBJECTS.get(self.path, BODY)
        self.send_response(200)
        self.send_header("content-type", "application/octet-stream")
        self.send_header("content-length", str(len(body)))
        if body is not BODY:  # what S3 stores answer with: the s3 layer recognises the exchange
            self.send_header("x-amz-request-id", "4442587FB7D0A2F9")
            self.send_header("x-amz-id-2", "vlR7PnpV2Ce81l0PRw6jlUpck7Jo5ZsQjryTjKlc5aLWGVHPZLj5NeC6qMa0emYBDXOo6Q=")
        self.end_headers()
        self.wfile.write(body[:FIRST])
        self.wfile.flush()
        time.sleep(PAUSE)
        self.wfile.write(body[FIRST:])
        self.wfile.flush()


    def _chunked(self) -> None:
        self.protocol_version = "HTTP/1.1"
        self.send_response(200)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for start in range(0, SIZE, 64 << 10):
            chunk = BODY[start:start + (64 << 10)]
            self.wfile.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


@pytest.fixture(scope="module")
def upstream():
    with serving(_Handler) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}"


def _sidecar(tmp_path_factory, upstream, certs, *, can_block: bool) -> Sidecar:
    rules = tmp_path_factory.mktemp("rules")
    write_rule(rules, SID_ALERT, "Large download", "http", {"http.url|contains": "/weights"})
    args = []
    if can_block:
        write_rule(rules, SID_BLOCK, "Huge answer", "http", {"http.length|gt": 10 ** 12}, action="block")
    else:
        args = ["--uninspectable", "alert"]
    return Sidecar(tmp_path_factory.mktemp("sidecar"), upstream, rules, cert=certs.server_cert,
                   key=certs.server_key, args=args)


def _download(sidecar: Sidecar, certs, path: str = "/models/m1/weights") -> tuple[float, bytes]:
    """Seconds until the client had the upstream's first 256 KiB, and the whole body."""
    context = ssl.create_default_context(cafile=str(certs.ca))
    connection = http.client.HTTPSConnection("127.0.0.1", sidecar.port, context=context, timeout=30)
    try:
        started = time.monotonic()
        connection.request("GET", path)
        response = connection.getresponse()
        first = response.read(FIRST)
        first_at = time.monotonic() - started
        return first_at, first + response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("can_block", [True, False], ids=["block-rules", "nothing-can-block"])
def test_a_large_answer_is_held_only_when_a_block_could_follow(tmp_path_factory, upstream, certs, can_block):
    with _sidecar(tmp_path_factory, upstream, certs, can_block=can_block) as sidecar:
        first_at, body = _download(sidecar, certs)
        assert body == BODY
        if can_block:  # held until its first MiB was in: the upstream sent that only after the pause
            assert first_at >= PAUSE * 0.9, first_at
        else:  # forwarded as it came, during the upstream's pause
            assert first_at < PAUSE * 0.67, first_at
        record = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] == "http"])[-1]
        assert record["http"]["length"] == SIZE and record["http"]["response_complete"] is True
        alert = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] == "alert"])[-1]
        assert alert["alert"]["signature_id"] == SID_ALERT and alert["alert"]["action"] == "allowed"
        assert sidecar.metric("inspector_streams_total", kind="response_body") == 1
        assert sidecar.metric("inspector_streams_handed_back_total") == 1  # past its first MiB


@pytest.mark.parametrize("can_block", [True, False], ids=["block-rules", "nothing-can-block"])
def test_an_answer_of_unenforced_length_is_counted_to_its_end(tmp_path_factory, upstream, certs, can_block):
    """A chunked answer has no length mitmproxy holds the upstream to: never handed back."""
    with _sidecar(tmp_path_factory, upstream, certs, can_block=can_block) as sidecar:
        _, body = _download(sidecar, certs, CHUNKED_PATH)
        assert body == BODY
        record = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] == "http"])[-1]
        assert record["http"]["length"] == SIZE and record["http"]["response_complete"] is True
        assert sidecar.metric("inspector_streams_handed_back_total") == 0


def test_an_answer_cut_short_after_the_hand_back_fails_and_claims_no_length(tmp_path_factory, upstream, certs):
    with _sidecar(tmp_path_factory, upstream, certs, can_block=True) as sidecar:
        with pytest.raises(http.client.IncompleteRead):
            _download(sidecar, certs, SHORT_PATH)
        record = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] == "http"])[-1]
        assert record["http"]["url"] == SHORT_PATH
        assert record["http"].get("length") != SIZE + (1 << 20)  # the declared length was never reached
        assert record["http"].get("response_complete") is not True
        assert sidecar.metric("inspector_streams_handed_back_total") == 1


@pytest.mark.parametrize(("rule", "path", "held"), [
    ("pickle-rule", MODEL_PATH, False), ("pickle-rule", PICKLE_PATH, True), ("body-length-rule", MODEL_PATH, True)],
    ids=["pickle-rule-safetensors", "pickle-rule-pickle", "body-length-rule-safetensors"])
def test_a_model_pull_is_held_until_its_first_bytes_settle_the_block_rules(tmp_path_factory, upstream, certs, rule,
                                                                          path, held):
    """A block rule on a model's pickles: a safetensors file's first bytes rule a pickle out, and
    the rest of the first MiB is not waited for; a pickle is held until its first MiB is scanned.
    A block rule that reads the body's length keeps the whole hold whatever the body."""
    rules = tmp_path_factory.mktemp("rules")
    if rule == "pickle-rule":
        write_rule(rules, SID_MODEL, "Dangerous pickle pulled", "s3", {"s3.model.pickle.dangerous|exists": True},
                   action="block")
    else:
        write_rule(rules, SID_MODEL, "Huge answer", "http", {"http.length|gt": 10 ** 12}, action="block")
    expected = OBJECTS[path]
    with Sidecar(tmp_path_factory.mktemp("sidecar"), upstream, rules, cert=certs.server_cert,
                 key=certs.server_key) as sidecar:
        first_at, body = _download(sidecar, certs, path)
        assert body == expected
        if held:
            assert first_at >= PAUSE * 0.9, first_at
            assert sidecar.metric("inspector_body_holds_total", ended_by="prefix") == 1
        else:
            assert first_at < PAUSE * 0.67, first_at
            assert sidecar.metric("inspector_body_holds_total", ended_by="settled") == 1
        record = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] == "s3"])[-1]
        assert record["http"]["length"] == len(expected) and record["http"]["response_complete"] is True
        assert record["s3"]["model"]["format"] == ("safetensors" if path == MODEL_PATH else "pickle")
