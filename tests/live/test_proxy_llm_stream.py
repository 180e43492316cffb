"""Streamed LLM answers through `inspector proxy` (http.client, a real SSE server): they
pass chunk by chunk, are parsed whole when they end, and a block rule on their content alerts;
request bodies a block rule cannot read whole follow the uninspectable policy."""

from __future__ import annotations

import gzip
import http.client
import json
import ssl
import time
import zlib
from http.server import ThreadingHTTPServer

import pytest
from live_servers import QuietHandler, serving
from live_sidecar import Sidecar, write_rule

SID_PROMPT = 9400001
SID_ANSWER = 9400002
WORDS = ["The", " capital", " of", " France", " is", " Paris", "."]
DELAY = 0.3


class _Handler(QuietHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        if not body.get("stream"):
            data = json.dumps({"id": "c1", "object": "chat.completion", "created": 1, "model": body.get("model"),
                               "choices": [{"index": 0, "finish_reason": "stop",
                                            "message": {"role": "assistant", "content": "".join(WORDS)}}]}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        events = [{"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": body.get("model"),
                   "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]} for word in WORDS]
        if body.get("corrupt_gzip"):  # gzip whose first event decodes and whose rest does not
            self.send_header("content-encoding", "gzip")
            self.end_headers()
            packer = zlib.compressobj(wbits=31)
            self._chunk(packer.compress(f"data: {json.dumps(events[0])}\n\n".encode())
                        + packer.flush(zlib.Z_SYNC_FLUSH))
            time.sleep(DELAY)
            self._chunk(b"\xff" * 64)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            return
        self.end_headers()
        for event in events:
            self._chunk(f"data: {json.dumps(event)}\n\n".encode())
            time.sleep(DELAY)
        self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # the sidecar cutting a blocked transfer: expected
        pass


@pytest.fixture(scope="module")
def llm_upstream():
    with serving(_Handler, server_class=_Server) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="module")
def sidecar(llm_upstream, certs, tmp_path_factory):
    rules = tmp_path_factory.mktemp("llm-rules")
    write_rule(rules, SID_PROMPT, "Prompt asks for secrets", "llm", {"llm.prompt|contains": "exfiltrate-secrets"},
               action="block")
    write_rule(rules, SID_ANSWER, "Long answer", "llm", {"llm.response_length|gt": 10},
               action="block")
    with Sidecar(tmp_path_factory.mktemp("llm"), llm_upstream, rules, cert=certs.server_cert,
                 key=certs.server_key) as proxy:
        yield proxy


def _connection(sidecar, certs) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cafile=str(certs.ca))
    return http.client.HTTPSConnection("127.0.0.1", sidecar.port, context=context, timeout=20)


def test_event_stream_passes_chunk_by_chunk(sidecar, certs):
    """Time to first chunk through the sidecar is the upstream's, not the whole generation
    (before: every chunk arrived together after ~2.1 s). The answer's block rule can only
    alert: it went out as it came."""
    connection = _connection(sidecar, certs)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "capital?"}], "stream": True})
    started = time.monotonic()
    connection.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
    response = connection.getresponse()
    arrivals, text = [], []
    while True:
        line = response.fp.readline()
        if not line or b"[DONE]" in line:
            break
        if line.startswith(b"data:"):
            arrivals.append(time.monotonic() - started)
            text.append(json.loads(line[5:])["choices"][0]["delta"]["content"])
    connection.close()
    print(f"chunks at {[round(t, 2) for t in arrivals]}")
    assert "".join(text) == "".join(WORDS)
    assert arrivals[0] < 1.0 and arrivals[-1] - arrivals[0] > (len(WORDS) - 2) * DELAY
    records = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] == "llm"
                                               and r["llm"].get("stream")])
    assert records[-1]["llm"]["stream_chunks"] == len(WORDS)
    alert = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] == "alert"
                                             and r["alert"]["signature_id"] == SID_ANSWER])[-1]
    assert alert["alert"]["action"] == "allowed"
    assert sidecar.metric("inspector_streams_total", kind="event_stream") >= 1


def test_what_an_answer_shows_as_it_streams_is_written(sidecar, certs):
    """A gzip event stream whose bytes stop decoding after the first event: it passes as sent,
    and the anomaly the parsers found in the middle of it is written when it ends."""
    connection = _connection(sidecar, certs)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "capital?"}], "stream": True,
                       "corrupt_gzip": True})
    connection.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
    response = connection.getresponse()
    assert response.getheader("content-encoding") == "gzip"
    sent = response.read()
    connection.close()
    assert sent.endswith(b"\xff" * 64)
    found = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] == "anomaly"
                                             and r["anomaly"]["event"] == "content_decode_error"])
    assert found[-1]["anomaly"]["layer"] == "http"
    assert "gzip body does not decode after" in found[-1]["anomaly"]["message"]


def test_whole_answer_is_still_blocked(sidecar, certs):
    """The same rule on an answer that is not streamed: held, inspected, replaced."""
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "capital?"}]}).encode()
    assert _post(sidecar, certs, body, {}) == 403


def _post(sidecar, certs, body: bytes, headers: dict[str, str]) -> int:
    connection = _connection(sidecar, certs)
    try:
        connection.request("POST", "/v1/chat/completions", body, {"content-type": "application/json", **headers})
        return connection.getresponse().status
    except (ConnectionError, http.client.HTTPException):
        return 0  # cut while it streamed
    finally:
        connection.close()


def test_padding_past_the_kept_bytes_does_not_evade_a_block_rule(sidecar, certs):
    """2 MiB of JSON whitespace before the messages: the llm layer cannot read the request
    whole, which falls under the uninspectable policy (block by default)."""
    body = ('{"model": "m",' + " " * (2 << 20) + '"messages": [{"role": "user", "content": "exfiltrate-secrets"}]}'
            ).encode()
    before = sidecar.metric("inspector_uninspectable_total", action="block")
    assert _post(sidecar, certs, gzip.compress(body), {"content-encoding": "gzip"}) == 403
    assert _post(sidecar, certs, body, {}) in (0, 403)  # over the threshold: streamed, then cut
    assert sidecar.metric("inspector_uninspectable_total", action="block") == before + 2
    anomalies = [r["anomaly"]["message"] for r in sidecar.records() if r["event_type"] == "anomaly"
                 and r["anomaly"]["event"] == "llm_request_truncated"]
    assert any("decoded bytes kept (of" in message for message in anomalies)


def test_a_lone_surrogate_escape_neither_evades_a_block_rule_nor_breaks_the_log(sidecar, certs):
    """`"\\ud800"` is valid JSON for a character no UTF-8 writer takes: the request is still
    blocked, and its record is written with the escape (a line any EVE reader parses)."""
    body = b'{"model": "m\\ud800", "messages": [{"role": "user", "content": "\\udc80 exfiltrate-secrets"}]}'
    assert _post(sidecar, certs, body, {}) == 403
    found = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] == "llm"
                                             and r["llm"].get("model") == "m\ud800"])
    assert found[-1]["llm"]["user_prompt"].endswith("\udc80 exfiltrate-secrets")
    assert not [r for r in sidecar.records() if r["event_type"] == "anomaly"
                and r["anomaly"]["event"] in ("parser_error", "internal_error")]
