"""Make the Triton captures: tritonclient (gRPC and HTTP) against small local servers, on loopback.

    .venv/bin/python pcaps/clients/make_triton.py [OUT_DIR]     (root, tcpdump; default: pcaps/clients)

writes `triton_grpc.pcap` and `triton_rest.pcap`. The servers are stand-ins for Triton that
implement just enough of the KServe v2 / Triton API for the real clients to complete every call:
a grpcio server built on tritonclient's generated `GRPCInferenceService` servicer, and a
`http.server` REST server. Both bind 127.0.0.1 on a free port; tcpdump captures each on `lo`.

What the captures hold (in order) is listed by :data:`GRPC_CALLS` and :data:`REST_CALLS`; the
tests in tests/protocols/test_triton_captures.py assert the records field by field. Anything
that tritonclient refuses to send (a shape that lies about its data, a shared-memory offset
beyond 2^63 through REST ...) is sent with the generated stub or with urllib instead, both
real client libraries.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

HERE = Path(__file__).resolve().parent

#: The model config pushed with file overrides (a Python-backend model: the risky kind).
LOAD_CONFIG = json.dumps({"name": "custom", "backend": "python", "max_batch_size": 0,
                          "input": [{"name": "IN", "data_type": "TYPE_FP32", "dims": [4]}],
                          "output": [{"name": "OUT", "data_type": "TYPE_FP32", "dims": [4]}]})
LOAD_FILES = {"file:1/model.py": b"import triton_python_backend_utils as pb_utils\n" * 8,
              "file:1/weights.bin": bytes(range(256)) * 4}
#: CVE-2024-0088 shape: an offset just below 2^64 (about -32 as an int64).
EVIL_OFFSET = 18446744073709551584
LARGE_ELEMENTS = 76800  # FP32 elements: 300 KiB, past the 256 KiB a gRPC message keeps


# --- the gRPC server --------------------------------------------------------------------------


def _echo_outputs(request: Any) -> service_pb2.ModelInferResponse:
    """One output per input, same datatype and shape; raw contents echoed unless large."""
    response = service_pb2.ModelInferResponse(model_name=request.model_name, model_version=request.model_version,
                                              id=request.id)
    for index, tensor in enumerate(request.inputs):
        output = response.outputs.add(name=f"OUTPUT{index}", datatype=tensor.datatype)
        output.shape.extend(tensor.shape)
        raw = request.raw_input_contents[index] if index < len(request.raw_input_contents) else b""
        response.raw_output_contents.append(raw if len(raw) <= 4096 else raw[:16])
    return response


class TritonServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """A stand-in Triton: answers every method the clients call, errors where Triton would.
    (Method names are the service's.)"""

    def __init__(self) -> None:
        self.log_settings: dict[str, Any] = {"log_file": "", "log_info": True, "log_verbose_level": 0}

    def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=True)

    def ModelReady(self, request, context):
        return service_pb2.ModelReadyResponse(ready=request.name != "missing")

    def ServerMetadata(self, request, context):
        return service_pb2.ServerMetadataResponse(name="triton", version="2.50.0",
                                                  extensions=["logging", "trace", "model_repository"])

    def ModelMetadata(self, request, context):
        if request.name == "missing":
            context.abort(grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{request.name}' is not found")
        return service_pb2.ModelMetadataResponse(name=request.name, versions=["1"], platform="python")

    def ModelConfig(self, request, context):
        return service_pb2.ModelConfigResponse()

    def ModelStatistics(self, request, context):
        return service_pb2.ModelStatisticsResponse()

    def ModelInfer(self, request, context):
        if request.model_name == "bomb":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "unexpected total byte size for input 'x'")
        return _echo_outputs(request)

    def ModelStreamInfer(self, request_iterator, context):
        for request in request_iterator:
            if request.model_name == "broken":
                yield service_pb2.ModelStreamInferResponse(error_message="model 'broken' is not ready")
            else:
                yield service_pb2.ModelStreamInferResponse(infer_response=_echo_outputs(request))

    def RepositoryIndex(self, request, context):
        response = service_pb2.RepositoryIndexResponse()
        response.models.add(name="simple", version="1", state="READY")
        return response

    def RepositoryModelLoad(self, request, context):
        return service_pb2.RepositoryModelLoadResponse()

    def RepositoryModelUnload(self, request, context):
        return service_pb2.RepositoryModelUnloadResponse()

    def LogSettings(self, request, context):
        response = service_pb2.LogSettingsResponse()
        for key, value in request.settings.items():
            kind = value.WhichOneof("parameter_choice")
            self.log_settings[key] = getattr(value, kind) if kind else None
        for key, value in self.log_settings.items():
            if isinstance(value, bool):
                response.settings[key].bool_param = value
            elif isinstance(value, int):
                response.settings[key].uint32_param = value
            elif isinstance(value, str):
                response.settings[key].string_param = value
        return response

    def TraceSetting(self, request, context):
        response = service_pb2.TraceSettingResponse()
        for key, value in request.settings.items():
            response.settings[key].value.extend(value.value)
        return response

    def SystemSharedMemoryStatus(self, request, context):
        return service_pb2.SystemSharedMemoryStatusResponse()

    def SystemSharedMemoryRegister(self, request, context):
        if request.offset >= 1 << 63:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "failed to register shared memory region")
        return service_pb2.SystemSharedMemoryRegisterResponse()

    def SystemSharedMemoryUnregister(self, request, context):
        return service_pb2.SystemSharedMemoryUnregisterResponse()

    def CudaSharedMemoryRegister(self, request, context):
        context.abort(grpc.StatusCode.UNAVAILABLE, "CUDA shared memory is not supported")


# --- the REST server --------------------------------------------------------------------------


_SIZES = {"INT32": 4, "FP32": 4, "INT64": 8, "UINT8": 1}


class RestHandler(BaseHTTPRequestHandler):
    """KServe v2 REST, enough for tritonclient.http: JSON or binary infer, management calls."""

    protocol_version = "HTTP/1.1"
    server_version = "triton-standin"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if not headers else "application/octet-stream")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return gzip.decompress(body) if self.headers.get("Content-Encoding") == "gzip" else body

    def do_GET(self) -> None:
        path = self.path
        if path in ("/v2/health/live", "/v2/health/ready", "/v2/models/simple/ready"):
            self._send(200, b"")
        elif path == "/v2":
            self._send(200, {"name": "triton", "version": "2.50.0", "extensions": ["logging", "trace"]})
        elif path == "/v2/models/simple":
            self._send(200, {"name": "simple", "versions": ["1"], "platform": "python"})
        elif path == "/v2/models/simple/config":
            self._send(200, {"name": "simple", "backend": "python"})
        elif path == "/v2/models/simple/stats":
            self._send(200, {"model_stats": []})
        elif path == "/v2/logging":
            self._send(200, {"log_file": "", "log_info": True, "log_verbose_level": 0})
        elif path == "/v2/systemsharedmemory/status":
            self._send(200, [])
        else:
            self._send(404, {"error": f"unknown path {path}"})

    def do_POST(self) -> None:
        path, body = self.path, self._body()
        if path.endswith("/infer"):
            self._infer(body)
        elif path.endswith("/generate"):
            self._send(200, {"model_name": "llm", "text_output": "four"})
        elif path.endswith("/generate_stream"):
            events = b"".join(b"data: " + json.dumps({"text_output": w}).encode() + b"\n\n" for w in ("fo", "ur"))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(events)))
            self.end_headers()
            self.wfile.write(events)
        elif path == "/v2/repository/index":
            self._send(200, [{"name": "simple", "version": "1", "state": "READY"}])
        elif "/repository/models/" in path:
            self._send(200, b"")
        elif path in ("/v2/logging", "/v2/trace/setting") or path.endswith("/trace/setting"):
            self._send(200, json.loads(body or b"{}"))
        elif "/systemsharedmemory/" in path:
            request = json.loads(body) if body else {}
            if request.get("offset", 0) >= 1 << 63:
                self._send(400, {"error": "failed to register shared memory region"})
            else:
                self._send(200, b"")
        elif "/cudasharedmemory/" in path:
            self._send(400, {"error": "CUDA shared memory is not supported"})
        else:
            self._send(404, {"error": f"unknown path {path}"})

    def _infer(self, body: bytes) -> None:
        header_length = self.headers.get("Inference-Header-Content-Length")
        split = int(header_length) if header_length else len(body)
        request = json.loads(body[:split])
        binary = body[split:]
        outputs = []
        raw = []
        offset = 0
        for index, tensor in enumerate(request["inputs"]):
            size = tensor.get("parameters", {}).get("binary_data_size")
            data = tensor.get("data")
            output = {"name": f"OUTPUT{index}", "datatype": tensor["datatype"], "shape": tensor["shape"]}
            if size is not None:
                raw.append(binary[offset:offset + size])
                offset += size
                output["parameters"] = {"binary_data_size": size}
            else:
                output["data"] = data
            outputs.append(output)
        response = {"model_name": self.path.split("/")[3], "outputs": outputs}
        if "id" in request:
            response["id"] = request["id"]
        if raw:
            text = json.dumps(response).encode()
            self._send(200, text + b"".join(raw), {"Inference-Header-Content-Length": str(len(text))})
        else:
            self._send(200, response)


# --- capture ----------------------------------------------------------------------------------


@contextlib.contextmanager
def tcpdump(port: int, path: Path) -> Iterator[None]:
    """Capture `tcp port <port>` on loopback into `path` while the block runs."""
    # --immediate-mode: without it packets still in the capture buffer at SIGINT are lost
    command = ["tcpdump", "-i", "lo", "-Z", "root", "--immediate-mode", "-U", "-s", "0", "-w", str(path),
               f"tcp port {port}"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        if b"listening on" not in line:
            raise RuntimeError(f"tcpdump did not start: {line.decode(errors='replace').strip()}")
        yield
        time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the client sessions ----------------------------------------------------------------------


def _ints(n: int, start: int = 0) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.int32).reshape(1, n)


def _grpc_inputs() -> list[grpcclient.InferInput]:
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(_ints(16))
    inputs[1].set_data_from_numpy(_ints(16, 100))
    return inputs


def _expect_error(call: Any, *args: Any, **kwargs: Any) -> str:
    try:
        call(*args, **kwargs)
    except InferenceServerException as exc:
        return str(exc)
    raise AssertionError(f"{call.__name__} should have failed")


#: One line per gRPC call, in capture order: (operation, model or None, what it shows).
GRPC_CALLS = (
    ("ServerLive", None, "health"), ("ServerReady", None, "health"), ("ModelReady", "simple", "health"),
    ("ServerMetadata", None, "metadata"), ("ModelMetadata", "simple", "metadata"),
    ("ModelMetadata", "missing", "NOT_FOUND error"), ("ModelConfig", "simple", "config"),
    ("ModelStatistics", "simple", "stats"),
    ("ModelInfer", "simple", "two INT32 [1,16] raw inputs, two requested outputs, id grpc-1"),
    ("ModelInfer", "simple_string", "BYTES [2] input"),
    ("ModelInfer", "simple", "gzip-compressed messages, id grpc-gzip"),
    ("ModelInfer", "large", "FP32 [1,76800]: 300 KiB, past the gRPC keep cap"),
    ("ModelInfer", "simple", "INPUT0 from shared memory region0, INPUT1 raw"),
    ("ModelInfer", "bomb", "stub: shape [65536,65536] FP32 with 16 bytes sent; INVALID_ARGUMENT"),
    ("ModelInfer", "simple_contents", "stub: typed contents, INT32 [1,4] and FP32 [2]"),
    ("ModelStreamInfer", "simple", "3 requests (s1, s2, broken model s3); 2 responses + 1 error_message"),
    ("RepositoryIndex", None, "repository index"),
    ("RepositoryModelLoad", "custom", "python-backend config + file:1/model.py + file:1/weights.bin"),
    ("RepositoryModelUnload", "custom", "unload_dependents"),
    ("LogSettings", None, "log_file /tmp/triton.log, log_verbose_level 1, log_info true"),
    ("LogSettings", None, "read"),
    ("TraceSetting", "simple", "trace_file /tmp/trace.json, trace_level TIMESTAMPS, trace_rate 1"),
    ("SystemSharedMemoryRegister", None, "region0 key /input_shm offset 0 byte_size 64"),
    ("SystemSharedMemoryRegister", None, "evil offset 18446744073709551584; INVALID_ARGUMENT"),
    ("SystemSharedMemoryStatus", None, "status"),
    ("SystemSharedMemoryUnregister", None, "region0"),
    ("CudaSharedMemoryRegister", None, "cuda0 device 0 1024 bytes; UNAVAILABLE"),
)


def grpc_session(port: int) -> None:
    """The tritonclient.grpc calls of GRPC_CALLS, one after the other."""
    url = f"127.0.0.1:{port}"
    client = grpcclient.InferenceServerClient(url=url)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("simple")
    client.get_server_metadata()
    client.get_model_metadata("simple")
    _expect_error(client.get_model_metadata, "missing")
    client.get_model_config("simple")
    client.get_inference_statistics("simple")
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT1")]
    client.infer("simple", _grpc_inputs(), outputs=outputs, request_id="grpc-1")
    strings = grpcclient.InferInput("INPUT0", [2], "BYTES")
    strings.set_data_from_numpy(np.array([b"hello", b"triton"], dtype=np.object_))
    client.infer("simple_string", [strings])
    client.infer("simple", _grpc_inputs(), request_id="grpc-gzip", compression_algorithm="gzip")
    large = grpcclient.InferInput("INPUT0", [1, LARGE_ELEMENTS], "FP32")
    large.set_data_from_numpy(np.ones((1, LARGE_ELEMENTS), dtype=np.float32))
    client.infer("large", [large])
    shm_inputs = _grpc_inputs()
    shm_inputs[0].set_shared_memory("region0", 64)
    client.infer("simple", shm_inputs)
    with grpc.insecure_channel(url) as channel:  # what tritonclient validates away: a lying shape
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        bomb = service_pb2.ModelInferRequest(model_name="bomb", id="bomb-1")
        tensor = bomb.inputs.add(name="x", datatype="FP32")
        tensor.shape.extend([65536, 65536])
        bomb.raw_input_contents.append(bytes(16))
        with contextlib.suppress(grpc.RpcError):
            stub.ModelInfer(bomb)
        typed = service_pb2.ModelInferRequest(model_name="simple_contents")
        ints = typed.inputs.add(name="INTS", datatype="INT32")
        ints.shape.extend([1, 4])
        ints.contents.int_contents.extend([1, -2, 300, 4])
        floats = typed.inputs.add(name="FLOATS", datatype="FP32")
        floats.shape.append(2)
        floats.contents.fp32_contents.extend([0.5, 1.5])
        stub.ModelInfer(typed)
    _stream(client)
    client.get_model_repository_index()
    client.load_model("custom", config=LOAD_CONFIG, files=LOAD_FILES)
    client.unload_model("custom", unload_dependents=True)
    client.update_log_settings({"log_file": "/tmp/triton.log", "log_verbose_level": 1, "log_info": True})
    client.get_log_settings()
    client.update_trace_settings("simple", {"trace_file": "/tmp/trace.json", "trace_level": ["TIMESTAMPS"],
                                            "trace_rate": "1"})
    client.register_system_shared_memory("region0", "/input_shm", 64)
    _expect_error(client.register_system_shared_memory, "evil", "/evil", 64, offset=EVIL_OFFSET)
    client.get_system_shared_memory_status()
    client.unregister_system_shared_memory("region0")
    _expect_error(client.register_cuda_shared_memory, "cuda0", base64.b64encode(bytes(64)), 0, 1024)
    client.close()


def _stream(client: grpcclient.InferenceServerClient) -> None:
    results: list[Any] = []
    done = threading.Event()

    def callback(result: Any, error: Any) -> None:
        results.append(error or result)
        if len(results) == 3:
            done.set()

    client.start_stream(callback=callback)
    client.async_stream_infer("simple", _grpc_inputs(), request_id="s1")
    client.async_stream_infer("simple", _grpc_inputs(), request_id="s2")
    client.async_stream_infer("broken", _grpc_inputs(), request_id="s3")
    done.wait(10)
    client.stop_stream()


#: One line per REST call, in capture order: (operation, model or None, what it shows).
REST_CALLS = (
    ("ServerLive", None, "health"), ("ServerReady", None, "health"), ("ModelReady", "simple", "health"),
    ("ServerMetadata", None, "metadata"), ("ModelMetadata", "simple", "metadata"),
    ("ModelConfig", "simple", "config"), ("ModelStatistics", "simple", "stats"),
    ("ModelInfer", "simple", "JSON: two INT32 [1,16] inputs as data, id rest-json"),
    ("ModelInfer", "simple", "binary extension: two INT32 [1,16] inputs, binary outputs, id rest-bin"),
    ("ModelInfer", "simple_string", "binary extension: BYTES [2]"),
    ("ModelInfer", "simple", "binary extension, gzip Content-Encoding, id rest-gzip"),
    ("ModelInfer", "simple", "INPUT0 from shared memory region0 (offset 16), INPUT1 as JSON data"),
    ("RepositoryIndex", None, "repository index"),
    ("RepositoryModelLoad", "custom", "python-backend config + 2 file overrides (base64 JSON)"),
    ("RepositoryModelUnload", "custom", "unload_dependents false"),
    ("LogSettings", None, "log_file /tmp/triton.log, log_verbose_level 2"),
    ("LogSettings", None, "read (GET)"),
    ("TraceSetting", "simple", "model trace: trace_file /tmp/trace.json, trace_level [TIMESTAMPS, TENSORS]"),
    ("TraceSetting", None, "global trace: trace_rate 10"),
    ("SystemSharedMemoryRegister", None, "region0 key /input_shm offset 0 byte_size 64"),
    ("SystemSharedMemoryRegister", None, "evil offset 18446744073709551584 (urllib); 400"),
    ("SystemSharedMemoryStatus", None, "status"),
    ("SystemSharedMemoryUnregister", None, "region0"),
    ("CudaSharedMemoryRegister", None, "cuda0 device 0 1024 bytes; 400"),
    ("Generate", "llm", "text_input 'What is 2+2?' (urllib)"),
    ("GenerateStream", "llm", "SSE, 2 events (urllib)"),
)


def rest_session(port: int) -> None:
    """The tritonclient.http (and urllib) calls of REST_CALLS, one after the other."""
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{port}")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("simple")
    client.get_server_metadata()
    client.get_model_metadata("simple")
    client.get_model_config("simple")
    client.get_inference_statistics("simple")
    for binary, request_id in ((False, "rest-json"), (True, "rest-bin")):
        inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_data_from_numpy(_ints(16), binary_data=binary)
        inputs[1].set_data_from_numpy(_ints(16, 100), binary_data=binary)
        outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary),
                   httpclient.InferRequestedOutput("OUTPUT1", binary_data=binary)]
        client.infer("simple", inputs, outputs=outputs, request_id=request_id)
    strings = httpclient.InferInput("INPUT0", [2], "BYTES")
    strings.set_data_from_numpy(np.array([b"hello", b"triton"], dtype=np.object_), binary_data=True)
    client.infer("simple_string", [strings])
    inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(_ints(16), binary_data=True)
    client.infer("simple", inputs, request_id="rest-gzip", request_compression_algorithm="gzip")
    shm_inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
    shm_inputs[0].set_shared_memory("region0", 64, offset=16)
    shm_inputs[1].set_data_from_numpy(_ints(16), binary_data=False)
    client.infer("simple", shm_inputs, outputs=[httpclient.InferRequestedOutput("OUTPUT1", binary_data=False)])
    client.get_model_repository_index()
    client.load_model("custom", config=LOAD_CONFIG, files=LOAD_FILES)
    client.unload_model("custom")
    client.update_log_settings({"log_file": "/tmp/triton.log", "log_verbose_level": 2})
    client.get_log_settings()
    client.update_trace_settings("simple", {"trace_file": "/tmp/trace.json", "trace_level": ["TIMESTAMPS", "TENSORS"]})
    client.update_trace_settings(settings={"trace_rate": "10"})
    client.register_system_shared_memory("region0", "/input_shm", 64)
    base = f"http://127.0.0.1:{port}"
    _post(base + "/v2/systemsharedmemory/region/evil/register",  # rapidjson refuses ints past 2^63
          b'{"key":"/evil","offset":%d,"byte_size":64}' % EVIL_OFFSET)
    client.get_system_shared_memory_status()
    client.unregister_system_shared_memory("region0")
    _expect_error(client.register_cuda_shared_memory, "cuda0", base64.b64encode(bytes(64)).decode(), 0, 1024)
    client.close()
    _post(base + "/v2/models/llm/generate", json.dumps({"text_input": "What is 2+2?",
                                                        "parameters": {"max_tokens": 8}}).encode())
    _post(base + "/v2/models/llm/generate_stream", json.dumps({"text_input": "What is 2+2?"}).encode())


def _post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code


# --- main -------------------------------------------------------------------------------------


def make_grpc(out: Path) -> Path:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(TritonServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    path = out / "triton_grpc.pcap"
    try:
        with tcpdump(port, path):
            grpc_session(port)
    finally:
        server.stop(grace=None)
    return path


def make_rest(out: Path) -> Path:
    server = ThreadingHTTPServer(("127.0.0.1", 0), RestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    path = out / "triton_rest.pcap"
    try:
        with tcpdump(server.server_address[1], path):
            rest_session(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
    return path


def main(out: Path = HERE) -> list[Path]:
    if os.geteuid() != 0:
        raise SystemExit("capturing on lo needs root (tcpdump)")
    out.mkdir(parents=True, exist_ok=True)
    return [make_grpc(out), make_rest(out)]


if __name__ == "__main__":
    for written in main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(f"{written} ({written.stat().st_size} bytes)")
