"""Real upstreams for the live tests: a Triton-protocol gRPC server (grpcio with tritonclient's
generated servicer: in the test process only, never in the proxy), a KServe v2 REST server, and
moto's S3 server in its own process.

The model is Triton's "simple" example: INPUT0 and INPUT1, INT32 [1, 16]; OUTPUT0 = sum,
OUTPUT1 = difference. RepositoryModelLoad and friends answer empty successes, so a test sees
whether the sidecar let a call through.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
from live_sidecar import free_port, wait_for
from tritonclient.grpc import service_pb2, service_pb2_grpc

MODEL = "simple"
SHAPE = [1, 16]


def _tensors(request: service_pb2.ModelInferRequest) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for index, tensor in enumerate(request.inputs):
        if request.raw_input_contents:
            data = np.frombuffer(request.raw_input_contents[index], dtype=np.int32)
        else:
            data = np.array(tensor.contents.int_contents, dtype=np.int32)
        arrays.append(data.reshape(list(tensor.shape)))
    return arrays[0], arrays[1]


def infer_response(request: service_pb2.ModelInferRequest) -> service_pb2.ModelInferResponse:
    a, b = _tensors(request)
    response = service_pb2.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
    for name, value in (("OUTPUT0", a + b), ("OUTPUT1", a - b)):
        output = response.outputs.add()
        output.name, output.datatype = name, "INT32"
        output.shape.extend(list(value.shape))
        response.raw_output_contents.append(value.astype(np.int32).tobytes())
    return response


class TritonServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def _seen(self, name: str) -> None:
        with self.lock:
            self.calls.append(name)

    def ServerLive(self, request, context):
        self._seen("ServerLive")
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        self._seen("ServerReady")
        return service_pb2.ServerReadyResponse(ready=True)

    def ModelReady(self, request, context):
        self._seen("ModelReady")
        return service_pb2.ModelReadyResponse(ready=request.name == MODEL)

    def ServerMetadata(self, request, context):
        self._seen("ServerMetadata")
        return service_pb2.ServerMetadataResponse(name="fake-triton", version="2.0", extensions=["binary_tensor_data"])

    def ModelMetadata(self, request, context):
        self._seen("ModelMetadata")
        response = service_pb2.ModelMetadataResponse(name=request.name, versions=["1"], platform="python")
        for name in ("INPUT0", "INPUT1"):
            response.inputs.add(name=name, datatype="INT32", shape=SHAPE)
        for name in ("OUTPUT0", "OUTPUT1"):
            response.outputs.add(name=name, datatype="INT32", shape=SHAPE)
        return response

    def ModelInfer(self, request, context):
        self._seen("ModelInfer")
        return infer_response(request)

    def ModelStreamInfer(self, request_iterator, context):
        self._seen("ModelStreamInfer")
        for request in request_iterator:
            self._seen("ModelStreamInfer.message")
            yield service_pb2.ModelStreamInferResponse(infer_response=infer_response(request))

    def RepositoryModelLoad(self, request, context):
        self._seen("RepositoryModelLoad")
        return service_pb2.RepositoryModelLoadResponse()

    def RepositoryModelUnload(self, request, context):
        self._seen("RepositoryModelUnload")
        return service_pb2.RepositoryModelUnloadResponse()


def start_grpc(port: int = 0, *, cert: bytes | None = None, key: bytes | None = None) -> tuple[grpc.Server, int,
                                                                                             TritonServicer]:
    """A Triton-protocol gRPC server on 127.0.0.1: cleartext (h2c) or TLS."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         options=[("grpc.max_receive_message_length", 256 * 1024 * 1024)],
                         compression=None)
    servicer = TritonServicer()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    if cert is not None and key is not None:
        credentials = grpc.ssl_server_credentials([(key, cert)])
        port = server.add_secure_port(f"127.0.0.1:{port}", credentials)
    else:
        port = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, port, servicer


# --- KServe v2 REST ---------------------------------------------------------------------------------


def _json_tensor(tensor: dict, raw: bytes | None) -> np.ndarray:
    if raw is not None:
        return np.frombuffer(raw, dtype=np.int32).reshape(tensor["shape"])
    return np.array(tensor["data"], dtype=np.int32).reshape(tensor["shape"])


class _RestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per response and no Nagle: head and body in separate small segments would wait
    # for the peer's delayed ACK (40 ms a response).
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    server: RestServer

    def log_message(self, format, *args):  # quiet
        return

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {"Content-Type": "application/json"}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self):
        self.server.calls.append(("GET", self.path))
        if self.path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL}/ready"):
            self._reply(200, b"")
        elif self.path == f"/v2/models/{MODEL}":
            meta = {"name": MODEL, "versions": ["1"], "platform": "python",
                    "inputs": [{"name": n, "datatype": "INT32", "shape": SHAPE} for n in ("INPUT0", "INPUT1")],
                    "outputs": [{"name": n, "datatype": "INT32", "shape": SHAPE} for n in ("OUTPUT0", "OUTPUT1")]}
            self._reply(200, json.dumps(meta).encode())
        else:
            self._reply(404, json.dumps({"error": f"unknown path {self.path}"}).encode())

    def do_POST(self):
        body = self._body()
        self.server.calls.append(("POST", self.path))
        if self.path.startswith("/v2/repository/models/"):
            self._reply(200, b"{}")
            return
        if self.path != f"/v2/models/{MODEL}/infer":
            self._reply(404, json.dumps({"error": f"unknown path {self.path}"}).encode())
            return
        header_length = self.headers.get("Inference-Header-Content-Length")
        json_part = body[:int(header_length)] if header_length else body
        request = json.loads(json_part)
        offset = int(header_length) if header_length else 0
        tensors = []
        for tensor in request["inputs"]:
            size = (tensor.get("parameters") or {}).get("binary_data_size")
            raw = None
            if size is not None:
                raw = body[offset:offset + size]
                offset += size
            tensors.append(_json_tensor(tensor, raw))
        a, b = tensors
        wanted = {o["name"]: (o.get("parameters") or {}).get("binary_data", False)
                  for o in request.get("outputs", [])} or {"OUTPUT0": False, "OUTPUT1": False}
        outputs, raws = [], []
        for name, value in (("OUTPUT0", a + b), ("OUTPUT1", a - b)):
            if name not in wanted:
                continue
            entry = {"name": name, "datatype": "INT32", "shape": list(value.shape)}
            if wanted[name]:
                raw = value.astype(np.int32).tobytes()
                entry["parameters"] = {"binary_data_size": len(raw)}
                raws.append(raw)
            else:
                entry["data"] = value.flatten().tolist()
            outputs.append(entry)
        payload = json.dumps({"model_name": MODEL, "model_version": "1", "outputs": outputs}).encode()
        if raws:
            self._reply(200, payload + b"".join(raws), {"Content-Type": "application/octet-stream",
                                                         "Inference-Header-Content-Length": str(len(payload))})
        else:
            self._reply(200, payload)


class RestServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _RestHandler)
        self.calls: list[tuple[str, str]] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class QuietHandler(BaseHTTPRequestHandler):
    """A test upstream's request handler: HTTP/1.1 keep-alive, no access log on stderr."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1",
            server_class: type[ThreadingHTTPServer] = ThreadingHTTPServer) -> Iterator[ThreadingHTTPServer]:
    """An HTTP server for `handler` on a free port of `host`, answering from a thread of its own
    until the block ends."""
    server = server_class((host, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def safetensors_model(size: int, tensors: int = 16) -> bytes:
    """A safetensors file of a little under `size` bytes: `tensors` F16 tensors of zeros that tile
    the data exactly, so the model-file checks find its header valid."""
    per = (size - 64 * tensors - 64) // tensors // 2 * 2
    header = {f"layers.{i}.weight": {"dtype": "F16", "shape": [per // 2], "data_offsets": [i * per, (i + 1) * per]}
              for i in range(tensors)}
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + bytes(tensors * per)


def grpc_frame(payload: bytes, compressed: bool = False) -> bytes:
    return struct.pack(">BI", int(compressed), len(payload)) + payload


class MotoServer:
    """moto's server (S3, IAM, ...) in its own process on loopback, answering once started; `env`
    is added to its environment (INITIAL_NO_AUTH_ACTION_COUNT: calls before it checks SigV4)."""

    def __init__(self, env: dict[str, str] | None = None, timeout: float = 30.0) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                        env=dict(os.environ, **(env or {})), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        try:
            wait_for(self._answers, timeout=timeout)
        except BaseException:
            self.stop()
            raise

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(15)

