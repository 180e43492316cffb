"""Live replay: a scenario's application traffic sent to a sidecar or a server with the real client libraries.

`inspector lab replay SCENARIO --target URL [--rate R]` runs the scenario's `replay` function
with a :class:`Replay`, which hands out clients for the target and paces and records every call:

    target scheme        transport   clients
    http://, https://    http        tritonclient.http, boto3 (S3), openai, urllib (http.client) for
                                     the JSON APIs (Feast, Ray, TorchServe, MLflow, Ollama)
    grpc://, grpcs://    grpc        tritonclient.grpc, the generated GRPCInferenceService stub, and
                                     raw h2 frames for messages no gRPC library sends
    tcp://               tcp         a socket carrying TCPStore or NCCL bytes

A scenario sends what its capture carries (the same payloads, from the same traffic library),
over every transport it supports that the target speaks. Each call is an attempt: its outcome
(answer, error, a sidecar's block) is recorded, and the replay goes on.

Safety: the target must resolve to loopback addresses only (127.0.0.0/8, ::1); anything else is
refused unless `allow_remote` is set (`--allow-remote`), so a lab never sends attack traffic to a
host by mistake. Replays never run a payload: the attack strings are data sent to a server.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

TRANSPORTS = {"http": ("http", False), "https": ("http", True), "grpc": ("grpc", False), "h2c": ("grpc", False),
              "grpcs": ("grpc", True), "tcp": ("tcp", False)}


class ReplayError(ValueError):
    """A target that cannot or must not be replayed to (bad URL, not loopback, wrong transport)."""


@dataclass(frozen=True, kw_only=True)
class Target:
    url: str
    scheme: str
    host: str
    port: int
    transport: str
    tls: bool

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.authority}"


def parse_target(url: str) -> Target:
    parts = urlsplit(url)
    if parts.scheme not in TRANSPORTS:
        raise ReplayError(f"unsupported target scheme {parts.scheme!r} in {url!r} (use {', '.join(TRANSPORTS)})")
    if not parts.hostname:
        raise ReplayError(f"no host in target {url!r}")
    transport, tls = TRANSPORTS[parts.scheme]
    try:
        port = parts.port
    except ValueError as exc:
        raise ReplayError(f"bad port in target {url!r}") from exc
    if port is None:
        if transport == "tcp":
            raise ReplayError(f"a tcp:// target needs a port: {url!r}")
        port = 443 if tls else 80
    return Target(url=url, scheme=parts.scheme, host=parts.hostname, port=port, transport=transport, tls=tls)


def check_loopback(target: Target, allow_remote: bool = False) -> None:
    """Refuse a target that resolves to any non-loopback address (unless `allow_remote`)."""
    if allow_remote:
        return
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ReplayError(f"cannot resolve {target.host!r}: {exc}") from exc
    addresses = {info[4][0] for info in infos}
    remote = sorted(a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback)
    if remote or not addresses:
        raise ReplayError(f"refusing to replay attack traffic to {target.host} ({', '.join(remote) or 'no address'}): "
                          "not a loopback address; pass --allow-remote for a lab host you control")


@dataclass(frozen=True, kw_only=True)
class ReplayResult:
    what: str
    step: str | None
    ok: bool
    detail: str
    seconds: float


@dataclass
class Replay:
    """Clients for one target, pacing (at most `rate` calls per second) and the record of every attempt."""

    target: Target
    rate: float = 20.0
    ca: str | None = None
    timeout: float = 10.0
    results: list[ReplayResult] = field(default_factory=list)
    _last: float = 0.0
    _closers: list[Callable[[], Any]] = field(default_factory=list)

    @property
    def transport(self) -> str:
        return self.target.transport

    def pace(self) -> None:
        if self.rate <= 0:
            return
        wait = self._last + 1.0 / self.rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last = time.monotonic()

    def attempt(self, what: str, call: Callable[[], Any], *, step: str | None = None) -> Any:
        """Pace, make the call, record its outcome; errors are outcomes, not failures of the replay."""
        self.pace()
        began = time.monotonic()
        try:
            value = call()
        except Exception as exc:
            self.results.append(ReplayResult(what=what, step=step, ok=False, detail=_error_text(exc),
                                             seconds=time.monotonic() - began))
            return None
        detail = f"HTTP {value}" if isinstance(value, int) else "ok"
        self.results.append(ReplayResult(what=what, step=step, ok=True, detail=detail,
                                         seconds=time.monotonic() - began))
        return value

    def close(self) -> None:
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception:
                pass
        self._closers.clear()

    # -- clients -------------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca)

    def triton(self) -> Any:
        """tritonclient's InferenceServerClient for the target (grpc or http module by transport)."""
        return self._triton_grpc if self.transport == "grpc" else self._triton_http

    @cached_property
    def _triton_http(self) -> Any:
        from tritonclient import http as triton_http

        options: dict[str, Any] = {}
        if self.target.tls:
            context = self._ssl_context()
            options = {"ssl": True, "ssl_context_factory": lambda: context}
        client = triton_http.InferenceServerClient(self.target.authority, connection_timeout=self.timeout,
                                                   network_timeout=self.timeout, **options)
        self._closers.append(client.close)
        return client

    @cached_property
    def _triton_grpc(self) -> Any:
        from tritonclient import grpc as triton_grpc

        options: dict[str, Any] = {}
        if self.target.tls:
            options = {"ssl": True, "root_certificates": self.ca}
        client = triton_grpc.InferenceServerClient(self.target.authority, **options)
        self._closers.append(client.close)
        return client

    def triton_stub(self) -> Any:
        """The generated GRPCInferenceService stub on a channel to the target (messages sent as built)."""
        import grpc
        from tritonclient.grpc import service_pb2_grpc

        if self.target.tls:
            roots = Path(self.ca).read_bytes() if self.ca else None
            channel = grpc.secure_channel(self.target.authority, grpc.ssl_channel_credentials(roots))
        else:
            channel = grpc.insecure_channel(self.target.authority)
        self._closers.append(channel.close)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        return _TimeoutStub(stub, self.timeout)

    def s3(self, access_key: str | None, secret_key: str = "lab-secret-key-not-a-real-one/0000000000") -> Any:
        """A boto3 S3 client for the target (path-style; unsigned when `access_key` is None)."""
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config

        config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                        connect_timeout=self.timeout, read_timeout=self.timeout,
                        **({"signature_version": UNSIGNED} if access_key is None else {}))
        return boto3.client("s3", endpoint_url=self.target.base_url, region_name="us-east-1",
                            aws_access_key_id=access_key or "anonymous", aws_secret_access_key=secret_key,
                            verify=(self.ca or True) if self.target.tls else False, config=config)

    def openai(self) -> Any:
        """The openai client with the target as its base URL (`/v1`)."""
        import openai

        http_client = openai.DefaultHttpxClient(verify=self._ssl_context()) if self.target.tls else None
        return openai.OpenAI(base_url=f"{self.target.base_url}/v1", api_key="sk-lab-0000", max_retries=0,
                             timeout=self.timeout, http_client=http_client)

    def send_http(self, request: bytes) -> int:
        """Send an HTTP/1.1 request written by the traffic library (its method, path, headers and body;
        Host and Content-Length as http.client sets them) and read the whole answer; the status."""
        head, _, body = request.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() not in ("host", "content-length"):
                headers[name] = value.strip()
        connection = self._http_connection()
        try:
            connection.request(method, path, body=body or None, headers=headers)
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            self.__dict__.pop("_connection", None)
            connection.close()
            raise
        if response.will_close:
            self.__dict__.pop("_connection", None)
            connection.close()
        return response.status

    def _http_connection(self) -> http.client.HTTPConnection:
        connection = self.__dict__.get("_connection")
        if connection is None:
            if self.target.tls:
                connection = http.client.HTTPSConnection(self.target.host, self.target.port, timeout=self.timeout,
                                                         context=self._ssl_context())
            else:
                connection = http.client.HTTPConnection(self.target.host, self.target.port, timeout=self.timeout)
            self.__dict__["_connection"] = connection
            self._closers.append(lambda: self.__dict__.get("_connection") and self.__dict__["_connection"].close())
        return connection

    def tcp_send(self, chunks: list[bytes], *, read_replies: bool = True, pause: float = 0.05) -> int:
        """One TCP connection sending `chunks` in order (reading what comes back after each when
        `read_replies`); returns the bytes received."""
        received = 0
        with socket.create_connection((self.target.host, self.target.port), timeout=self.timeout) as sock:
            if self.target.tls:
                sock = self._ssl_context().wrap_socket(sock, server_hostname=self.target.host)
            for chunk in chunks:
                sock.sendall(chunk)
                if read_replies:
                    sock.settimeout(pause)
                    try:
                        data = sock.recv(65536)
                        received += len(data)
                    except TimeoutError:
                        pass
                    sock.settimeout(self.timeout)
                else:
                    time.sleep(pause)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(pause * 4)
            try:
                while data := sock.recv(65536):
                    received += len(data)
            except (TimeoutError, ConnectionResetError):
                pass
        return received

    def h2_call(self, headers: list[tuple[bytes, bytes]], body: bytes) -> str:
        """One HTTP/2 request with exactly these headers and DATA (the h2 library on a socket); the
        answer's grpc-status (or HTTP status / reset) as text."""
        from h2.config import H2Configuration
        from h2.connection import H2Connection
        from h2.events import DataReceived, ResponseReceived, StreamEnded, StreamReset, TrailersReceived

        conn = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        with socket.create_connection((self.target.host, self.target.port), timeout=self.timeout) as raw:
            sock = raw
            if self.target.tls:
                context = self._ssl_context()
                context.set_alpn_protocols(["h2"])
                sock = context.wrap_socket(raw, server_hostname=self.target.host)
            conn.initiate_connection()
            stream_id = conn.get_next_available_stream_id()
            conn.send_headers(stream_id, headers, end_stream=False)
            conn.send_data(stream_id, body, end_stream=True)
            sock.sendall(conn.data_to_send())
            outcome: dict[str, str] = {}
            while "done" not in outcome:
                data = sock.recv(65536)
                if not data:
                    outcome.setdefault("status", "connection closed")
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, ResponseReceived | TrailersReceived):
                        for name, value in event.headers:
                            if name in (b":status", b"grpc-status", b"grpc-message"):
                                outcome[name.decode().lstrip(":")] = value.decode("latin-1")
                    elif isinstance(event, DataReceived):
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    if isinstance(event, StreamEnded | StreamReset) and event.stream_id == stream_id:
                        outcome["done"] = "reset" if isinstance(event, StreamReset) else "ended"
                pending = conn.data_to_send()
                if pending:
                    sock.sendall(pending)
            conn.close_connection()
            try:
                sock.sendall(conn.data_to_send())
            except OSError:
                pass
        if "grpc-status" in outcome:
            return f"grpc-status {outcome['grpc-status']} {outcome.get('grpc-message', '')}".strip()
        return f"HTTP {outcome.get('status', '?')} ({outcome.get('done', 'no end')})"


class _TimeoutStub:
    """A GRPCInferenceService stub whose calls carry the replay's timeout."""

    def __init__(self, stub: Any, timeout: float) -> None:
        self._stub = stub
        self._timeout = timeout

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._stub, name)
        return lambda request, **kw: method(request, timeout=self._timeout, **kw)


def _error_text(exc: BaseException) -> str:
    """A one-line account of a failed call (gRPC status, HTTP status, S3 error code, or the exception)."""
    code = getattr(exc, "code", None)
    if callable(code):  # grpc.RpcError
        try:
            return f"{code().name}: {exc.details()}"[:300]  # type: ignore[attr-defined]
        except Exception:
            pass
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:  # botocore ClientError
        error = response["Error"]
        return f"{error.get('Code')}: {error.get('Message')}"[:300]
    status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if callable(status):
        status = status()
    return (f"{status}: {text}" if status else f"{type(exc).__name__}: {text}")[:300]


def run_replay(scenario: Any, target: Target, *, rate: float = 20.0, ca: str | None = None,
               timeout: float = 10.0) -> Replay:
    """Replay `scenario` (inspector.lab.scenarios.base.Scenario) to `target`; the Replay with its results."""
    if target.transport not in scenario.transports:
        raise ReplayError(f"scenario {scenario.name} replays over {', '.join(scenario.transports)}, "
                          f"not {target.transport} ({target.url})")
    replay = Replay(target=target, rate=rate, ca=ca, timeout=timeout)
    try:
        scenario.replay(replay)
    finally:
        replay.close()
    return replay
