"""Triton / KServe v2 traffic: REST requests (json) and gRPC messages (tritonclient's protobuf classes).

REST bodies follow the KServe v2 protocol and Triton's extensions (logging, trace, shared
memory, model repository); gRPC messages are `tritonclient.grpc.service_pb2` objects serialized
deterministically, so the bytes are the ones the real client library sends. Both sides of
every call are here: a session (`inspector.lab.traffic_http`) carries them.

    session.exchange(rest_logging({"log_file": "/root/.bashrc"}), json_response({}))
    grpc_session.call(grpc_log_settings({"log_file": "/root/.bashrc"}))
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from typing import Any

from tritonclient.grpc import service_pb2 as pb

from inspector.lab.h2wire import GrpcCall
from inspector.lab.traffic_http import json_request, json_response

SERVICE = "/inference.GRPCInferenceService/"
REST_HOST = "triton:8000"
GRPC_AUTHORITY = "triton:8001"

#: Bytes per element (BYTES has no fixed size).
ELEMENT_BYTES = {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2,
                 "UINT32": 4, "INT32": 4, "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8}


@dataclass(frozen=True, kw_only=True)
class Tensor:
    """An input tensor: its declaration, and the values actually sent (None: as many as declared)."""

    name: str
    shape: tuple[int, ...]
    datatype: str = "FP32"
    sent_elements: int | None = None
    #: (region, offset, byte_size): the data is read from a registered shared-memory region.
    shm: tuple[str, int, int] | None = None

    @property
    def declared_elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    @property
    def elements(self) -> int:
        return self.declared_elements if self.sent_elements is None else self.sent_elements

    def raw(self) -> bytes:
        """The sent values as raw contents: little-endian zeros of the element size (a real client
        sends the array's buffer); BYTES elements are a u32 length and one byte each."""
        if self.datatype == "BYTES":
            return (struct.pack("<I", 1) + b"x") * self.elements
        return bytes(ELEMENT_BYTES[self.datatype] * self.elements)

    def json_data(self) -> list[Any]:
        """The values as the REST JSON `data` list carries them (flattened)."""
        if self.datatype == "BOOL":
            return [True] * self.elements
        if self.datatype == "BYTES":
            return ["x"] * self.elements
        if self.datatype.startswith(("INT", "UINT")):
            return [1] * self.elements
        return [0.5] * self.elements


def _signed64(value: int) -> int:
    """An unsigned 64-bit value as the int64 protobuf/JSON field carries it."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _serialize(message: Any) -> bytes:
    return message.SerializeToString(deterministic=True)


# -- REST ---------------------------------------------------------------------------------------


def rest_infer(model: str, inputs: list[Tensor], *, request_id: str = "", host: str = REST_HOST) -> bytes:
    body: dict[str, Any] = {}
    if request_id:
        body["id"] = request_id
    body["inputs"] = [_rest_input(t) for t in inputs]
    return json_request("POST", f"/v2/models/{model}/infer", host, body)


def _rest_input(tensor: Tensor) -> dict[str, Any]:
    described: dict[str, Any] = {"name": tensor.name, "shape": list(tensor.shape), "datatype": tensor.datatype}
    if tensor.shm is None:
        described["data"] = tensor.json_data()
    else:
        region, offset, size = tensor.shm
        described["parameters"] = {"shared_memory_region": region, "shared_memory_offset": _signed64(offset),
                                   "shared_memory_byte_size": size}
    return described


def rest_infer_response(model: str, outputs: list[Tensor]) -> bytes:
    return json_response({"model_name": model, "model_version": "1",
                          "outputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape),
                                       "data": t.json_data()} for t in outputs]})


def rest_logging(settings: dict[str, Any] | None = None, *, host: str = REST_HOST) -> bytes:
    """POST /v2/logging with `settings` (GET: read the settings when None)."""
    if settings is None:
        return f"GET /v2/logging HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    return json_request("POST", "/v2/logging", host, settings)


LOG_SETTINGS_ANSWER = {"log_file": "", "log_info": True, "log_warnings": True, "log_errors": True,
                       "log_verbose_level": 0, "log_format": "default"}


def rest_trace_setting(settings: dict[str, Any], *, model: str = "", host: str = REST_HOST) -> bytes:
    path = f"/v2/models/{model}/trace/setting" if model else "/v2/trace/setting"
    return json_request("POST", path, host, settings)


TRACE_SETTINGS_ANSWER = {"trace_level": ["OFF"], "trace_rate": "1000", "trace_count": "-1",
                         "log_frequency": "0", "trace_file": ""}


def rest_shm_register(region: str, key: str, offset: int, byte_size: int, *, host: str = REST_HOST) -> bytes:
    return json_request("POST", f"/v2/systemsharedmemory/region/{region}/register", host,
                        {"key": key, "offset": offset, "byte_size": byte_size})


def rest_model_load(model: str, *, config: dict[str, Any] | None = None, files: dict[str, bytes] | None = None,
                    host: str = REST_HOST) -> bytes:
    """POST /v2/repository/models/{model}/load with a config and `file:<path>` overrides (base64)."""
    parameters: dict[str, Any] = {}
    if config is not None:
        parameters["config"] = json.dumps(config)
    for path, content in (files or {}).items():
        parameters[f"file:{path}"] = base64.b64encode(content).decode()
    body = {"parameters": parameters} if parameters else {}
    return json_request("POST", f"/v2/repository/models/{model}/load", host, body)


def rest_error(message: str, status: int = 400) -> bytes:
    return json_response({"error": message}, status)


# -- gRPC ---------------------------------------------------------------------------------------


def _call(method: str, request: Any, response: Any | None, *, status: int = 0, message: str = "") -> GrpcCall:
    responses = [] if response is None or status else [_serialize(response)]
    return GrpcCall(SERVICE + method, [_serialize(request)], responses, status=status, message=message,
                    authority=GRPC_AUTHORITY, trailers_only=bool(status))


def model_infer_request(model: str, inputs: list[Tensor], *, request_id: str = "") -> Any:
    request = pb.ModelInferRequest(model_name=model, id=request_id)
    for tensor in inputs:
        added = request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=list(tensor.shape))
        if tensor.shm is None:
            request.raw_input_contents.append(tensor.raw())
            continue
        region, offset, size = tensor.shm
        added.parameters["shared_memory_region"].string_param = region
        added.parameters["shared_memory_offset"].int64_param = _signed64(offset)
        added.parameters["shared_memory_byte_size"].int64_param = size
    return request


def model_infer_response(model: str, outputs: list[Tensor]) -> Any:
    response = pb.ModelInferResponse(model_name=model, model_version="1")
    for tensor in outputs:
        response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=list(tensor.shape))
        response.raw_output_contents.append(tensor.raw())
    return response


def grpc_infer(model: str, inputs: list[Tensor], outputs: list[Tensor] | None = None, *, request_id: str = "",
               error: str = "") -> GrpcCall:
    """ModelInfer; answered with `outputs`, or refused with INVALID_ARGUMENT when `error`."""
    answer = model_infer_response(model, outputs or [Tensor(name="OUTPUT0", shape=(1, 4))])
    return _call("ModelInfer", model_infer_request(model, inputs, request_id=request_id), answer,
                 status=3 if error else 0, message=error)


def grpc_log_settings(settings: dict[str, bool | int | str]) -> GrpcCall:
    request = pb.LogSettingsRequest()
    for key, value in settings.items():
        if isinstance(value, bool):
            request.settings[key].bool_param = value
        elif isinstance(value, int):
            request.settings[key].uint32_param = value
        else:
            request.settings[key].string_param = value
    return _call("LogSettings", request, pb.LogSettingsResponse())


def grpc_trace_setting(settings: dict[str, list[str]], *, model: str = "") -> GrpcCall:
    request = pb.TraceSettingRequest(model_name=model)
    for key, values in settings.items():
        request.settings[key].value.extend(values)
    return _call("TraceSetting", request, pb.TraceSettingResponse())


def grpc_shm_register(region: str, key: str, offset: int, byte_size: int, *, error: str = "") -> GrpcCall:
    request = pb.SystemSharedMemoryRegisterRequest(name=region, key=key, offset=offset, byte_size=byte_size)
    return _call("SystemSharedMemoryRegister", request, pb.SystemSharedMemoryRegisterResponse(),
                 status=13 if error else 0, message=error)


def grpc_model_load(model: str, *, config: dict[str, Any] | None = None,
                    files: dict[str, bytes] | None = None) -> GrpcCall:
    """RepositoryModelLoad; `file:` overrides travel as bytes_param (as tritonclient sends them)."""
    request = pb.RepositoryModelLoadRequest(model_name=model)
    if config is not None:
        request.parameters["config"].string_param = json.dumps(config)
    for path, content in (files or {}).items():
        request.parameters[f"file:{path}"].bytes_param = content
    return _call("RepositoryModelLoad", request, pb.RepositoryModelLoadResponse())


def grpc_model_ready(model: str) -> GrpcCall:
    return _call("ModelReady", pb.ModelReadyRequest(name=model), pb.ModelReadyResponse(ready=True))


def grpc_request_headers(method: str, *, encoding: str | None = None,
                         authority: str = GRPC_AUTHORITY) -> list[tuple[bytes, bytes]]:
    """The HEADERS of a gRPC call to `method` as grpc-python sends them, with `grpc-encoding` when given
    (for calls driven frame by frame: `GrpcSession.raw`)."""
    headers = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", (SERVICE + method).encode()),
               (b":authority", authority.encode()), (b"content-type", b"application/grpc"), (b"te", b"trailers")]
    if encoding:
        headers.append((b"grpc-encoding", encoding.encode()))
    return headers


GRPC_RESPONSE_HEADERS = [(b":status", b"200"), (b"content-type", b"application/grpc")]
GRPC_OK_TRAILERS = [(b"grpc-status", b"0")]


def snappy_literal(data: bytes) -> bytes:
    """`data` as a raw Snappy block of literals (a valid Snappy encoding, never smaller): the varint
    length, then literal elements of at most 65536 bytes."""
    out = bytearray()
    length = len(data)
    while True:  # preamble: uncompressed length, varint
        byte = length & 0x7F
        length >>= 7
        out.append(byte | (0x80 if length else 0))
        if not length:
            break
    for offset in range(0, len(data), 65536):
        chunk = data[offset:offset + 65536]
        n = len(chunk) - 1
        if n < 60:
            out.append(n << 2)
        elif n < 256:
            out += bytes([60 << 2, n])
        else:
            out += bytes([61 << 2]) + n.to_bytes(2, "little")
        out += chunk
    return bytes(out)
