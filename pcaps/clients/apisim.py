"""Loopback capture kit for the HTTP API captures: tcpdump around a run, and a tiny HTTP/1.1 server.

The `make_*.py` scripts beside this file start protocol-shaped servers (they answer like the real
products closely enough for the real clients, they are not the products) on 127.0.0.1, capture
the loopback traffic with tcpdump while a client talks to them, and write `<name>.pcap` here.

* :func:`tcpdump` runs `tcpdump -i lo -U --immediate-mode -B 16384 -w FILE 'tcp port N or ...'`
  (a 16 MiB buffer: the default 2 MiB lost a packet now and then), waits until it listens, and
  stops it with SIGINT (SIGTERM if that is ignored) when the block ends.
* :class:`ApiHandler` is a `BaseHTTPRequestHandler` speaking HTTP/1.1 keep-alive whose subclasses
  list routes as `(method, regex, handler name)`; :func:`serve` runs one on a free port in a
  background thread.

Nothing here talks to a non-loopback address.
"""

from __future__ import annotations

import json
import re
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parent


class CaptureUnavailable(RuntimeError):
    """tcpdump is missing or cannot capture here (not root, no loopback capture)."""


def capture_problem() -> str | None:
    """Why a loopback capture cannot run here, or None when it can."""
    if shutil.which("tcpdump") is None:
        return "tcpdump is not installed"
    probe = subprocess.run(["tcpdump", "-D"], capture_output=True, text=True, timeout=10)
    if probe.returncode != 0 or "lo" not in probe.stdout:
        return f"tcpdump cannot list the loopback interface: {probe.stderr.strip()[:200]}"
    return None


@contextmanager
def tcpdump(path: Path, ports: Iterable[int], *, timeout: float = 10.0) -> Iterator[None]:
    """Capture loopback TCP traffic on `ports` into `path` for the duration of the block."""
    expression = " or ".join(f"tcp port {port}" for port in ports)
    command = ["tcpdump", "-i", "lo", "-n", "-U", "--immediate-mode", "-B", "16384", "-s", "0",
               "-w", str(path), expression]
    proc = subprocess.Popen(command,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen = b""
    while b"listening on" not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            proc.kill()
            proc.wait()
            raise CaptureUnavailable(f"tcpdump did not start: {seen.decode(errors='replace').strip()[:300]}")
        ready, _, _ = select.select([proc.stderr], [], [], left)
        if ready:
            chunk = proc.stderr.read1(4096)  # type: ignore[attr-defined]
            if not chunk:
                continue
            seen += chunk
    try:
        yield
    finally:
        time.sleep(0.3)  # let the last packets reach the capture
        for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):  # SIGINT is ignored in some job shells
            proc.send_signal(stop)
            try:
                proc.wait(3)
                break
            except subprocess.TimeoutExpired:
                continue
        proc.stderr.close()


class ApiHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler dispatching on `routes`: `(method, path regex, method name)`.

    The regex is matched against the path without the query; the handler method receives the
    match. Unknown routes answer 404 with a JSON body.
    """

    protocol_version = "HTTP/1.1"
    server_version = "apisim/1"
    sys_version = ""
    routes: ClassVar[list[tuple[str, str, str]]] = []
    _compiled: ClassVar[list[tuple[str, re.Pattern[str], str]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._compiled = [(method, re.compile(pattern), name) for method, pattern, name in cls.routes]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- request -------------------------------------------------------------------------------

    @property
    def route_path(self) -> str:
        return self.path.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.path.partition("?")[2]

    def read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def json_body(self) -> Any:
        body = self.read_body()
        self.body = body
        try:
            return json.loads(body) if body else {}
        except ValueError:
            return None

    def _dispatch(self) -> None:
        path = self.route_path
        for method, pattern, name in self._compiled:
            if method != self.command:
                continue
            match = pattern.fullmatch(path)
            if match is not None:
                getattr(self, name)(match)
                return
        self.read_body()
        self.send_json(404, {"error": f"no route for {self.command} {path}"})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _dispatch

    # -- response ------------------------------------------------------------------------------

    def send_bytes(self, status: int, body: bytes, content_type: str | None,
                   headers: Iterable[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, obj: Any, content_type: str = "application/json",
                  headers: Iterable[tuple[str, str]] = ()) -> None:
        self.send_bytes(status, json.dumps(obj).encode(), content_type, headers)

    def send_chunked(self, status: int, content_type: str, parts: Iterable[bytes],
                     headers: Iterable[tuple[str, str]] = ()) -> None:
        """A chunked response, one chunk per part, flushed as it goes (a stream)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for part in parts:
            if part:
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


@contextmanager
def serve(handler: type[ApiHandler], port: int = 0) -> Iterator[int]:
    """Run `handler` on 127.0.0.1 in a background thread; yields the port.

    `port` asks for the product's usual port (some layers claim a bare path only there); when it
    is taken, a free port is used instead.
    """
    try:
        server = ThreadingHTTPServer((HOST, port), handler)
    except OSError:
        server = ThreadingHTTPServer((HOST, 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
