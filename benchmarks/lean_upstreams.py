"""Upstreams that cost the shared cores as little as possible, for bench_processes.py: on a
2-core machine that also runs the load generator, the Python test servers (http.server, a
tritonclient-protobuf servicer) take 0.25-0.6 ms of CPU per request, a share of the cores the
sidecar's processes then cannot use. These answer every inference call with one prepared, real
answer (what the test servers answer for the benchmark's request), so the sidecar still
inspects a complete KServe or Triton exchange in both directions.
"""

from __future__ import annotations

import asyncio
import json
import threading

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
