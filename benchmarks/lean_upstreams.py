"""Upstreams that cost the shared cores as little as possible, for bench_processes.py: on a
2-core machine that also runs the load generator, the Python test servers (http.server, a
tritonclient-protobuf servicer) take 0.25-0.6 ms of CPU per request, a share of the cores the
sidecar's processes then cannot use. These answer every inference call with one prepared, real
answer (what the test servers answer for the benchmark's request), so the sidecar still
inspects a complete KServe or Triton exchange in both directions.

Where nginx is installed, it serves all three (`NginxUpstreams`: C, one worker process, the
prepared answers as static files, the gRPC one with `content-type: application/grpc` and a
`grpc-status: 0` trailer); else an asyncio HTTP/1.1 server (`LeanRestServer`, about 30 µs of
CPU per call here) and grpcio's asyncio server (`LeanGrpcServer`, about 210 µs).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np
from tritonclient.grpc import service_pb2

SHAPE = [1, 16]


def rest_answer() -> bytes:
    """The KServe v2 infer response to INPUT0 = 0..15, INPUT1 = 1 (sum and difference)."""
    a = np.arange(16, dtype=np.int32)
    b = np.ones(16, dtype=np.int32)
    body = json.dumps({"model_name": "simple", "model_version": "1", "outputs": [
        {"name": "OUTPUT0", "datatype": "INT32", "shape": SHAPE, "data": (a + b).tolist()},
        {"name": "OUTPUT1", "datatype": "INT32", "shape": SHAPE, "data": (a - b).tolist()}]}).encode()
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


class _Http11(asyncio.Protocol):
    """Keep-alive HTTP/1.1: each complete request (Content-Length bodies) gets the answer."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in bytes(self.buffer[:end]).split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    if not value.strip().isdigit():  # not a request this server can answer: hang up
                        assert self.transport is not None
                        self.transport.close()
                        return
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[:end + 4 + length]
            assert self.transport is not None
            self.transport.write(self.answer)


class LeanRestServer:
    """The REST upstream on 127.0.0.1, in a thread with its own event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        answer = rest_answer()
        server = self.loop.run_until_complete(
            self.loop.create_server(lambda: _Http11(answer), "127.0.0.1", 0))
        self.port = int(server.sockets[0].getsockname()[1])
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def grpc_answer() -> bytes:
    """The serialized ModelInferResponse to the benchmark's request."""
    a = np.arange(16, dtype=np.int32)
    b = np.ones(16, dtype=np.int32)
    response = service_pb2.ModelInferResponse(model_name="simple", model_version="1")
    for name in ("OUTPUT0", "OUTPUT1"):
        tensor = response.outputs.add()
        tensor.name, tensor.datatype = name, "INT32"
        tensor.shape.extend(SHAPE)
    response.raw_output_contents.append((a + b).tobytes())
    response.raw_output_contents.append((a - b).tobytes())
    return response.SerializeToString()


class LeanGrpcServer:
    """A gRPC server answering ModelInfer with `grpc_answer()` (bytes in, bytes out: no protobuf
    work per call), over TLS with `cert` and `key`, else cleartext (h2c, as Triton's port 8001).
    grpcio's asyncio server, in a thread with its own event loop: 210 µs of CPU per call here
    against 335 µs for the thread-pool server."""

    def __init__(self, cert: bytes | None = None, key: bytes | None = None) -> None:
        answer = grpc_answer()

        async def infer(request: bytes, context: object) -> bytes:
            return answer

        async def start() -> tuple[grpc.aio.Server, int]:
            server = grpc.aio.server()
            server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
                "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)})])
            if cert is not None and key is not None:
                port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
            else:
                port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            return server, port

        self.loop = asyncio.new_event_loop()
        self.server, self.port = self.loop.run_until_complete(start())
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(0), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


NGINX_CONF = """daemon off;
{user}worker_processes 1;
pid {root}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {root}/body;  # every temporary path in the run's own directory, so
  proxy_temp_path {root}/proxy;        # nginx starts as any user
  fastcgi_temp_path {root}/fastcgi;
  uwsgi_temp_path {root}/uwsgi;
  scgi_temp_path {root}/scgi;
  keepalive_requests 10000000;
  root {root}/htdocs;
  # a POST to a static file is refused with 405: answer it with the file instead
  error_page 405 =200 $uri;
  server {{  # KServe v2 REST, HTTP/1.1
    listen 127.0.0.1:{rest};
    location = /v2/models/simple/infer {{ default_type application/json; }}
  }}
  server {{  # Triton gRPC over TLS
    listen 127.0.0.1:{grpc} ssl http2;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location = /inference.GRPCInferenceService/ModelInfer {{
      default_type application/grpc;
      add_trailer grpc-status 0 always;
    }}
  }}
  server {{  # Triton gRPC in cleartext (h2c, prior knowledge, as Triton's port 8001)
    listen 127.0.0.1:{h2c} http2;
    location = /inference.GRPCInferenceService/ModelInfer {{
      default_type application/grpc;
      add_trailer grpc-status 0 always;
    }}
  }}
}}
"""


class NginxUpstreams:
    """The three upstreams in one nginx (C, one worker process), each call answered with the
    prepared answer as a static file: REST infer over HTTP/1.1 (`rest_answer()`'s JSON), and
    ModelInfer over TLS with the `cert` and `key` files and over h2c, every call getting the
    headers (`:status 200`, `content-type: application/grpc`), the one message and the trailers
    (`grpc-status: 0`) of a real unary answer. Request bodies are read and dropped."""

    def __init__(self, ports: tuple[int, int, int], cert: Path, key: Path) -> None:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed (apt-get install nginx)")
        self.rest, self.grpc, self.h2c = ports
        self.root = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        docs = self.root / "htdocs"
        (docs / "v2" / "models" / "simple").mkdir(parents=True)
        (docs / "v2" / "models" / "simple" / "infer").write_bytes(rest_answer().split(b"\r\n\r\n", 1)[1])
        (docs / "inference.GRPCInferenceService").mkdir()
        message = grpc_answer()  # framed as one uncompressed gRPC message
        (docs / "inference.GRPCInferenceService" / "ModelInfer").write_bytes(
            struct.pack(">BI", 0, len(message)) + message)
        for temporary in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.root / temporary).mkdir()
        (self.root / "nginx.conf").write_text(NGINX_CONF.format(
            root=self.root, rest=self.rest, grpc=self.grpc, h2c=self.h2c, cert=cert, key=key,
            user="user root;\n" if os.geteuid() == 0 else ""))  # as root, workers would drop to nobody
        log = self.root / "error.log"
        self.process = subprocess.Popen([binary, "-c", str(self.root / "nginx.conf"), "-e", str(log)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not all(_listening(port) for port in ports):
            if self.process.poll() is not None or time.monotonic() > deadline:
                why = log.read_text(errors="replace") if log.exists() else "no error log"
                self.stop()
                raise RuntimeError(f"nginx did not start: {why}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: finish open connections, then exit
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def nginx_binary() -> str | None:
    """nginx's path (Debian installs it in /usr/sbin, often not on a user's PATH), or None."""
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


def nginx_installed() -> bool:
    return nginx_binary() is not None


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0
