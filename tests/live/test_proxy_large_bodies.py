"""A large answer through `inspector proxy` (http.client over TLS, a real HTTP/1.1 upstream that
sends its first 256 KiB, pauses, then sends the rest): its first MiB is held back until inspected
when a block could follow, and forwarded as it comes when nothing can block (no block rules,
`--uninspectable alert`); either way the transaction is evaluated whole when the body ends."""

from __future__ import annotations

import http.client
import ssl
import time

import pytest
from live_servers import QuietHandler, serving
from live_sidecar import Sidecar, write_rule

FIRST = 256 << 10
SIZE = 2 << 20  # over the stream threshold (1 MiB): the body streams
PAUSE = 1.5
BODY = bytes(range(256)) * (SIZE // 256)
SID_ALERT = 9500001
SID_BLOCK = 9500002


class _Handler(QuietHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/octet-stream")
        self.send_header("content-length", str(SIZE))
        self.end_headers()
        self.wfile.write(BODY[:FIRST])
        self.wfile.flush()
        time.sleep(PAUSE)
        self.wfile.write(BODY[FIRST:])
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
        write_rule(rules, SID_BLOCK, "Admin path", "http", {"http.url|contains": "/admin"}, action="block")
    else:
        args = ["--uninspectable", "alert"]
    return Sidecar(tmp_path_factory.mktemp("sidecar"), upstream, rules, cert=certs.server_cert,
                   key=certs.server_key, args=args)


def _download(sidecar: Sidecar, certs) -> tuple[float, bytes]:
    """Seconds until the client had the upstream's first 256 KiB, and the whole body."""
    context = ssl.create_default_context(cafile=str(certs.ca))
    connection = http.client.HTTPSConnection("127.0.0.1", sidecar.port, context=context, timeout=30)
    try:
        started = time.monotonic()
        connection.request("GET", "/models/m1/weights")
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
