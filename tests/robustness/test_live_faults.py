"""Faults around the real sidecar (`inspector proxy`, real mitmproxy): the upstream refuses,
resets mid-response or is slow; Redis is frozen; the EVE output is a full disk or cannot be
opened; our own code raises inside a parser or a rule. Each test shows the sidecar keeps
serving per its fail-open / fail-closed setting, counts the event, and writes every alert it can.

Redis killed outright and a broken rule file on reload are tested in tests/live/test_proxy_redis.py
and tests/live/test_reload.py.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from live_sidecar import Sidecar, free_port, wait_for, write_rule
from test_redis_rate import RedisServer

FAULT_ADDON = Path(__file__).resolve().parent / "fault_addon.py"
SID_ALERT, SID_BLOCK, SID_RATE = 9700001, 9700002, 9700003


def request(sidecar: Sidecar, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", sidecar.port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Authorization": "Bearer secret-token-123"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # quiet
        return

    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(2.0)
        if self.path.startswith("/reset"):
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.close()  # RST in the middle of the body
            self.close_connection = True
            return
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    directory = tmp_path / "rules"
    directory.mkdir()
    write_rule(directory, SID_ALERT, "Model ready probe", "http", {"http.url|contains": "/ready"})
    write_rule(directory, SID_BLOCK, "Admin path", "http", {"http.url|startswith": "/admin"}, action="block")
    return directory


def test_upstream_refused_reset_and_slow(upstream, rules, tmp_path):
    closed = free_port()
    with Sidecar(tmp_path, f"http://127.0.0.1:{upstream}", rules, name="main") as sidecar, \
            Sidecar(tmp_path, f"http://127.0.0.1:{closed}", rules, name="refused") as refused:
        # refused: the client gets a 502, the error is counted, the alert is written
        assert request(refused, "/v2/models/m/ready")[0] == 502
        wait_for(lambda: refused.metric("inspector_upstream_errors_total") == 1)
        wait_for(lambda: len(refused.alerts(SID_ALERT)) == 1)
        assert request(refused, "/admin/x")[0] == 403  # blocks never needed the upstream

        # reset mid-body (the response is held for inspection): the client gets a 502; the
        # transaction is recorded with it and its alert written; the upstream error is counted
        assert request(sidecar, "/reset/ready")[0] == 502
        wait_for(lambda: len(sidecar.alerts(SID_ALERT)) == 1)
        wait_for(lambda: [r for r in sidecar.records() if r["event_type"] == "http"
                          and r["http"]["url"] == "/reset/ready"])
        wait_for(lambda: sidecar.metric("inspector_upstream_errors_total") == 1)

        # a client that gives up before the answer is not an upstream error
        gone = socket.create_connection(("127.0.0.1", sidecar.port))
        gone.sendall(b"GET /slow/gone HTTP/1.1\r\nHost: upstream\r\n\r\n")
        time.sleep(0.2)
        gone.close()
        wait_for(lambda: [r for r in sidecar.records() if r["event_type"] == "http"
                          and r["http"]["url"] == "/slow/gone"])
        assert sidecar.metric("inspector_upstream_errors_total") == 1

        # slow: a 2 s answer holds nobody else up
        slow: list[int] = []
        thread = threading.Thread(target=lambda: slow.append(request(sidecar, "/slow/ready")[0]))
        thread.start()
        time.sleep(0.3)
        started = time.monotonic()
        assert request(sidecar, "/fast")[0] == 200
        assert time.monotonic() - started < 1.0
        assert sidecar.health()["status"] == "ok"
        thread.join(10)
        assert slow == [200]
        wait_for(lambda: len(sidecar.alerts(SID_ALERT)) == 2)
        assert sidecar.metric("inspector_fail_open_total") == 0 and sidecar.health()["internal_errors"] == 0


def test_redis_frozen_is_a_timeout_not_a_stall(upstream, rules, tmp_path):
    write_rule(rules, SID_RATE, "Probe burst", "http", {"http.url|startswith": "/burst"}, action="block",
               rate={"by": ["src_ip"], "count": 3, "window": "60s"})
    redis = RedisServer(tmp_path).start()
    try:
        with Sidecar(tmp_path, f"http://127.0.0.1:{upstream}", rules, args=["--redis", redis.url]) as sidecar:
            assert [request(sidecar, "/burst")[0] for _ in range(3)] == [200, 200, 403]
            assert sidecar.health()["ratelimit_backend"] == "redis"
            os.kill(redis.process.pid, signal.SIGSTOP)  # accepts connections, never answers: "slow"
            try:
                started = time.monotonic()
                statuses = [request(sidecar, "/burst")[0] for _ in range(4)]
                assert time.monotonic() - started < 2.0  # one 50 ms timeout, then in-process windows
                assert statuses == [200, 200, 403, 403]  # counted afresh in-process, still enforced
                assert sidecar.metric("inspector_ratelimit_backend_errors_total") >= 1
                assert sidecar.health()["ratelimit_backend"] == "memory-fallback"
                wait_for(lambda: len(sidecar.alerts(SID_RATE)) == 2)
            finally:
                os.kill(redis.process.pid, signal.SIGCONT)
    finally:
        redis.stop()


@pytest.mark.parametrize("mode", ["--fail-open", "--fail-closed"])
def test_eve_on_a_full_disk_keeps_serving_and_counts(upstream, rules, tmp_path, mode):
    sidecar = Sidecar(tmp_path, f"http://127.0.0.1:{upstream}", rules, args=[mode])
    sidecar.replace_argument("--eve", "/dev/full")  # sidecar.eve stays a file that never fills
    with sidecar:
        assert request(sidecar, "/v2/models/m/ready")[0] == 200  # an alert it cannot write
        assert request(sidecar, "/admin/x")[0] == 403  # blocking goes on
        wait_for(lambda: sidecar.metric("inspector_eve_write_errors_total") >= 1)
        assert sidecar.health()["eve"] == "failing" and sidecar.health()["eve_backlog"] >= 4
        assert sidecar.metric("inspector_alerts_total", sid=str(SID_ALERT), action="allowed") == 1
        assert sidecar.metric("inspector_fail_open_total") == 0 == sidecar.metric("inspector_fail_closed_total")
        assert "EVE output /dev/full failing" in sidecar.log_text()


def test_eve_unwritable_then_back_loses_no_alert(upstream, rules, tmp_path):
    with Sidecar(tmp_path, f"http://127.0.0.1:{upstream}", rules) as sidecar:
        assert request(sidecar, "/v2/models/a/ready")[0] == 200
        wait_for(lambda: len(sidecar.alerts(SID_ALERT)) == 1)
        rotated = sidecar.eve.with_suffix(".1")
        sidecar.eve.rename(rotated)
        sidecar.eve.mkdir()  # the new file cannot be opened: a directory sits at the path
        sidecar.signal(signal.SIGHUP)
        wait_for(lambda: sidecar.metric("inspector_eve_write_errors_total") >= 1)
        assert request(sidecar, "/v2/models/b/ready")[0] == 200
        assert request(sidecar, "/admin/y")[0] == 403
        wait_for(lambda: sidecar.health().get("eve_backlog", 0) >= 4)
        sidecar.eve.rmdir()  # writable again: the next flush writes what waited
        assert request(sidecar, "/v2/models/c/ready")[0] == 200
        wait_for(lambda: len(sidecar.alerts(SID_ALERT)) == 2)
        wait_for(lambda: sidecar.metric("inspector_eve_backlog_records") == 0)  # the periodic flush, 0.5 s
        assert "eve" not in sidecar.health()
        urls = [r["http"]["url"] for r in sidecar.alerts()]
        assert urls == ["/v2/models/b/ready", "/admin/y", "/v2/models/c/ready"]
        assert [r["http"]["url"] for r in Sidecar.records(_Rotated(rotated)) if r["event_type"] == "alert"] == [
            "/v2/models/a/ready"]


class _Rotated:
    def __init__(self, eve: Path) -> None:
        self.eve = eve


@pytest.mark.parametrize(("mode", "status", "counter"), [("--fail-open", 200, "inspector_fail_open_total"),
                                                          ("--fail-closed", 403, "inspector_fail_closed_total")])
def test_exception_in_a_parser_or_a_rule(upstream, rules, tmp_path, mode, status, counter):
    args = [mode, "--set", f"scripts={FAULT_ADDON}"]
    with Sidecar(tmp_path, f"http://127.0.0.1:{upstream}", rules, args=args) as sidecar:
        seen = 0.0
        for where in ("parser", "rule"):  # a rule fault may count twice: request and response phase
            code, body = request(sidecar, f"/fault/{where}/ready")
            assert code == status, body
            if status == 403:
                assert body == b"blocked by inspector: internal error\n"
            seen = wait_for(lambda seen=seen: sidecar.metric(counter) > seen and sidecar.metric(counter))
        assert sidecar.health()["internal_errors"] == seen
        assert "InjectedFault" in sidecar.log_text()
        # still serving, still detecting
        assert request(sidecar, "/v2/models/m/ready")[0] == 200
        assert request(sidecar, "/admin/x")[0] == 403
        wait_for(lambda: len(sidecar.alerts(SID_ALERT)) == 1 and len(sidecar.alerts(SID_BLOCK)) == 1)
