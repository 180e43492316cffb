"""HTTP/1.1 and HTTP/2 (gRPC) sessions for lab traffic: the transport half of the traffic library.

The per-protocol modules (`traffic_triton`, `traffic_s3`, `traffic_llm`, ...) make request and
answer bytes; this module carries them: an :class:`HttpSession` is one HTTP/1.1 client
connection (a real TCP conversation from `inspector.lab.craft`), a :class:`GrpcSession` one h2c
connection whose frames the `h2` library writes (`inspector.lab.h2wire`). Messages are built
the way an ordinary client library sends them: a Host header, Content-Length for a body,
`json.dumps` for JSON.

    session = HttpSession(cap, rng, client="10.1.2.3", server="10.20.0.5", port=8000)
    session.exchange(json_request("POST", "/v2/logging", "triton:8000", {"log_file": "/tmp/x"}),
                     json_response({"log_file": "/tmp/x"}))
    session.close()
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from typing import Any

from inspector.lab.craft import CLIENT, SERVER, Capture, TcpConversation
from inspector.lab.h2wire import GrpcCall, H2Wire

EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z: lab traffic starts here unless told otherwise

Headers = Iterable[tuple[str, str]]

REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 206: "Partial Content",
           400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           409: "Conflict", 500: "Internal Server Error"}


def request_bytes(method: str, target: str, host: str, headers: Headers = (), body: bytes = b"") -> bytes:
    """An HTTP/1.1 request: request line, Host, the given headers, Content-Length when a body."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def response_bytes(status: int = 200, body: bytes = b"", content_type: str | None = None,
                   headers: Headers = ()) -> bytes:
    """An HTTP/1.1 answer with Content-Length (and Content-Type when given)."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def json_body(obj: Any) -> bytes:
    """JSON as Python's json module (and most client libraries) writes it."""
    return json.dumps(obj).encode()


def json_request(method: str, target: str, host: str, obj: Any, headers: Headers = ()) -> bytes:
    return request_bytes(method, target, host, [("Content-Type", "application/json"), *headers], json_body(obj))


def json_response(obj: Any, status: int = 200, headers: Headers = ()) -> bytes:
    return response_bytes(status, json_body(obj), "application/json", headers)


def ndjson_response(objects: Iterable[Any], status: int = 200) -> bytes:
    """A JSON-lines answer (Ollama's streamed progress), sent whole."""
    body = b"".join(json_body(o) + b"\n" for o in objects)
    return response_bytes(status, body, "application/x-ndjson")


class HttpSession:
    """One HTTP/1.1 client connection: handshake on creation, exchanges in order, then close."""

    def __init__(self, cap: Capture, rng: random.Random, client: str, server: str, port: int, *,
                 start: float = EPOCH, client_port: int | None = None, think: float = 0.002) -> None:
        sport = client_port if client_port is not None else rng.randrange(32768, 60999)
        self.conversation = TcpConversation(cap, (client, sport), (server, port), start, rng).handshake()
        self.think = think

    def exchange(self, request: bytes, response: bytes) -> None:
        """The request, then (after the server's think time) its answer."""
        self.conversation.send(CLIENT, request)
        self.conversation.send(SERVER, response, think=self.think)

    def wait(self, seconds: float) -> None:
        self.conversation.wait(seconds)

    @property
    def now(self) -> float:
        return self.conversation.now

    def close(self) -> None:
        self.conversation.close()


class GrpcSession:
    """One h2c connection carrying gRPC calls one after another (streams 1, 3, 5, ...)."""

    def __init__(self, cap: Capture, rng: random.Random, client: str, server: str, port: int, *,
                 start: float = EPOCH, client_port: int | None = None) -> None:
        sport = client_port if client_port is not None else rng.randrange(32768, 60999)
        self.conversation = TcpConversation(cap, (client, sport), (server, port), start, rng).handshake()
        self.wire = H2Wire()
        self._sent = 0
        self._next_stream = 1
        self.flush()

    def flush(self) -> None:
        """Send what `wire` holds that the conversation has not carried yet (after driving h2 directly)."""
        for side, data in self.wire.chunks[self._sent:]:
            self.conversation.send(side, data)
        self._sent = len(self.wire.chunks)

    def next_stream(self) -> int:
        stream_id = self._next_stream
        self._next_stream += 2
        return stream_id

    def call(self, call: GrpcCall) -> None:
        """One unary or streaming call: its requests, then its responses and status."""
        self.wire.grpc(self.next_stream(), call)
        self.flush()

    def raw(self, request_headers: list[tuple[bytes, bytes]], body: bytes,
            response_headers: list[tuple[bytes, bytes]], response_body: bytes = b"",
            trailers: list[tuple[bytes, bytes]] | None = None) -> None:
        """A call with headers and DATA exactly as given (e.g. messages no gRPC library would send)."""
        stream_id = self.next_stream()
        self.wire.request(stream_id, request_headers, body)
        self.wire.respond(stream_id, response_headers, response_body, trailers=trailers)
        self.flush()

    def wait(self, seconds: float) -> None:
        self.conversation.wait(seconds)

    def close(self) -> None:
        self.conversation.close()
