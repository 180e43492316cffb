"""The `triton` layer on exchanges built by hand: routes, malformed variants, field numbers, caps.

gRPC payloads are serialized by the real protobuf runtime (tritonclient's generated
`service_pb2`), framed by the real gRPC framer; REST bodies are the JSON tritonclient sends.
Only the malformed variants no real client produces are written byte by byte.
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2

from inspector import fields
from inspector.analyze import Analyzer
from inspector.apps import transaction_record
from inspector.http import HttpExchange, HttpMessage
from inspector.limits import DEFAULT_LIMITS, Limits
from inspector.protocols import triton
from inspector.protocols.grpc import GrpcFramer
from inspector.protocols.triton_common import base64_decoded_size
from inspector.protocols.triton_grpc import METHOD_APIS, SERVICE
from inspector.protocols.triton_rest import match_route
from inspector.protocols.triton_tensors import (
    SATURATED,
    element_count,
    json_data_stats,
    unsigned64,
    walk_bytes_elements,
)
from inspector.protocols.triton_wire import read_fields

CLIENTS = Path(__file__).resolve().parents[2] / "pcaps" / "clients"

# --- building exchanges ------------------------------------------------------------------------


def message(kind: str, *, path: str = "/", method: str = "POST", headers: list | None = None, body: bytes = b"",
            status: int = 200, truncated: bool = False, body_length: int | None = None, version: str = "HTTP/1.1",
            trailers: list | None = None) -> HttpMessage:
    return HttpMessage(kind=kind, version=version, headers=headers or [], method=method if kind == "request" else "",
                       path=path if kind == "request" else "", status=status if kind == "response" else 0,
                       body=body, body_length=len(body) if body_length is None else body_length,
                       body_truncated=truncated, trailers=trailers or [], complete=True)


def run(exchange: HttpExchange) -> tuple[dict, list[str]]:
    record, anomalies = transaction_record(None, exchange)
    json.dumps(record, allow_nan=False)  # always strict JSON
    return record, [event for layer, event, _ in anomalies if layer == "triton"]


def rest(path: str, body: bytes | dict | list | None = None, *, method: str = "POST", headers: list | None = None,
         response: HttpMessage | None = None, truncated: bool = False,
         body_length: int | None = None) -> tuple[dict | None, list[str]]:
    if isinstance(body, dict | list):
        body = json.dumps(body).encode()
    request = message("request", path=path, method=method, headers=headers, body=body or b"", truncated=truncated,
                      body_length=body_length)
    record, anomalies = run(HttpExchange(request=request, response=response, stream_id=0))
    return record.get("triton"), anomalies


def frame(payload: bytes, flag: int = 0) -> bytes:
    return bytes([flag]) + len(payload).to_bytes(4, "big") + payload


def framer(payloads: list[bytes], limits: Limits = DEFAULT_LIMITS, encoding: str | None = None,
           chunk: int | None = None) -> GrpcFramer:
    observer = GrpcFramer(limits, encoding=encoding)
    data = b"".join(frame(p, 1 if encoding else 0) for p in payloads)
    step = chunk or max(len(data), 1)
    for at in range(0, len(data), step):
        observer.feed(data[at:at + step], 1.0)
    observer.end(2.0)
    return observer


def grpc(method: str, requests: list[bytes], responses: list[bytes] | None = None, *, status: int = 0,
         grpc_message: str | None = None, limits: Limits = DEFAULT_LIMITS, chunk: int | None = None,
         encoding: str | None = None, service: str = SERVICE) -> tuple[dict | None, list[str]]:
    headers = [("content-type", "application/grpc")]
    if encoding:
        headers.append(("grpc-encoding", encoding))
    request = message("request", path=f"/{service}/{method}", headers=headers, version="HTTP/2")
    trailers = [("grpc-status", str(status))] + ([("grpc-message", grpc_message)] if grpc_message else [])
    response = message("response", headers=[("content-type", "application/grpc")], version="HTTP/2",
                       trailers=trailers)
    exchange = HttpExchange(request=request, response=response, stream_id=1)
    exchange.observations["grpc.request"] = framer(requests, limits, encoding, chunk)
    exchange.observations["grpc.response"] = framer(responses or [], limits)
    record, anomalies = run(exchange)
    return record.get("triton"), anomalies


def infer_request(*inputs: tuple[str, str, list[int], bytes | None], model: str = "m", **kwargs) -> bytes:
    request = service_pb2.ModelInferRequest(model_name=model, **kwargs)
    for name, datatype, shape, raw in inputs:
        tensor = request.inputs.add(name=name, datatype=datatype)
        tensor.shape.extend(shape)
        if raw is not None:
            request.raw_input_contents.append(raw)
    return request.SerializeToString()


# --- field numbers: checked against the generated descriptors ----------------------------------

#: (message, field, number) the decoder relies on.
FIELD_NUMBERS = [
    ("ModelInferRequest", "model_name", 1), ("ModelInferRequest", "model_version", 2),
    ("ModelInferRequest", "id", 3), ("ModelInferRequest", "parameters", 4), ("ModelInferRequest", "inputs", 5),
    ("ModelInferRequest", "outputs", 6), ("ModelInferRequest", "raw_input_contents", 7),
    ("ModelInferRequest.InferInputTensor", "name", 1), ("ModelInferRequest.InferInputTensor", "datatype", 2),
    ("ModelInferRequest.InferInputTensor", "shape", 3), ("ModelInferRequest.InferInputTensor", "parameters", 4),
    ("ModelInferRequest.InferInputTensor", "contents", 5),
    ("ModelInferRequest.InferRequestedOutputTensor", "name", 1),
    ("InferParameter", "bool_param", 1), ("InferParameter", "int64_param", 2),
    ("InferParameter", "string_param", 3), ("InferParameter", "double_param", 4),
    ("InferParameter", "uint64_param", 5),
    ("InferTensorContents", "bool_contents", 1), ("InferTensorContents", "int_contents", 2),
    ("InferTensorContents", "int64_contents", 3), ("InferTensorContents", "uint_contents", 4),
    ("InferTensorContents", "uint64_contents", 5), ("InferTensorContents", "fp32_contents", 6),
    ("InferTensorContents", "fp64_contents", 7), ("InferTensorContents", "bytes_contents", 8),
    ("ModelInferResponse", "outputs", 5), ("ModelInferResponse.InferOutputTensor", "name", 1),
    ("ModelInferResponse.InferOutputTensor", "datatype", 2), ("ModelInferResponse.InferOutputTensor", "shape", 3),
    ("ModelStreamInferResponse", "error_message", 1), ("ModelStreamInferResponse", "infer_response", 2),
    ("ModelReadyRequest", "name", 1), ("ModelReadyRequest", "version", 2),
    ("ServerLiveResponse", "live", 1), ("ServerReadyResponse", "ready", 1), ("ModelReadyResponse", "ready", 1),
    ("RepositoryIndexRequest", "repository_name", 1), ("RepositoryIndexRequest", "ready", 2),
    ("RepositoryModelLoadRequest", "repository_name", 1), ("RepositoryModelLoadRequest", "model_name", 2),
    ("RepositoryModelLoadRequest", "parameters", 3),
    ("ModelRepositoryParameter", "bool_param", 1), ("ModelRepositoryParameter", "int64_param", 2),
    ("ModelRepositoryParameter", "string_param", 3), ("ModelRepositoryParameter", "bytes_param", 4),
    ("LogSettingsRequest", "settings", 1), ("LogSettingsRequest.SettingValue", "bool_param", 1),
    ("LogSettingsRequest.SettingValue", "uint32_param", 2), ("LogSettingsRequest.SettingValue", "string_param", 3),
    ("TraceSettingRequest", "settings", 1), ("TraceSettingRequest", "model_name", 2),
    ("TraceSettingRequest.SettingValue", "value", 1),
    ("SystemSharedMemoryRegisterRequest", "name", 1), ("SystemSharedMemoryRegisterRequest", "key", 2),
    ("SystemSharedMemoryRegisterRequest", "offset", 3), ("SystemSharedMemoryRegisterRequest", "byte_size", 4),
    ("CudaSharedMemoryRegisterRequest", "name", 1), ("CudaSharedMemoryRegisterRequest", "raw_handle", 2),
    ("CudaSharedMemoryRegisterRequest", "device_id", 3), ("CudaSharedMemoryRegisterRequest", "byte_size", 4),
]


@pytest.mark.parametrize(("message_name", "field_name", "number"), FIELD_NUMBERS,
                         ids=[f"{m}.{f}" for m, f, _ in FIELD_NUMBERS])
def test_field_numbers_match_the_generated_descriptors(message_name, field_name, number):
    descriptor = service_pb2.DESCRIPTOR.message_types_by_name[message_name.split(".")[0]]
    for nested in message_name.split(".")[1:]:
        descriptor = descriptor.nested_types_by_name[nested]
    assert descriptor.fields_by_name[field_name].number == number


def test_every_service_method_has_an_api():
    service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == SERVICE
    assert sorted(METHOD_APIS) == sorted(m.name for m in service.methods)
    assert set(METHOD_APIS.values()) <= set(triton.APIS)


# --- routes --------------------------------------------------------------------------------------

ROUTES = [
    ("/v2/health/live", "health", "ServerLive", None, None),
    ("/v2/health/ready", "health", "ServerReady", None, None),
    ("/v2", "metadata", "ServerMetadata", None, None),
    ("/v2/", "metadata", "ServerMetadata", None, None),
    ("/v2/models/resnet", "metadata", "ModelMetadata", "resnet", None),
    ("/v2/models/resnet/versions/3", "metadata", "ModelMetadata", "resnet", "3"),
    ("/v2/models/resnet/ready", "health", "ModelReady", "resnet", None),
    ("/v2/models/resnet/versions/3/ready", "health", "ModelReady", "resnet", "3"),
    ("/v2/models/resnet/infer", "infer", "ModelInfer", "resnet", None),
    ("/v2/models/res%20net/versions/2/infer?x=1", "infer", "ModelInfer", "res net", "2"),
    ("/v2/models/llm/generate", "generate", "Generate", "llm", None),
    ("/v2/models/llm/generate_stream", "generate", "GenerateStream", "llm", None),
    ("/v2/models/resnet/config", "config", "ModelConfig", "resnet", None),
    ("/v2/models/stats", "stats", "ModelStatistics", None, None),
    ("/v2/models/resnet/versions/1/stats", "stats", "ModelStatistics", "resnet", "1"),
    ("/v2/models/resnet/trace/setting", "trace_settings", "TraceSetting", "resnet", None),
    ("/v2/models/resnet/trace", "trace_settings", "TraceSetting", "resnet", None),
    ("/v2/trace/setting", "trace_settings", "TraceSetting", None, None),
    ("/v2/logging", "log_settings", "LogSettings", None, None),
    ("/v2/repository/index", "repository_index", "RepositoryIndex", None, None),
    ("/v2/repository/models/m/load", "model_load", "RepositoryModelLoad", "m", None),
    ("/v2/repository/models/m/unload", "model_unload", "RepositoryModelUnload", "m", None),
    ("/v2/systemsharedmemory/status", "shm_status", "SystemSharedMemoryStatus", None, None),
    ("/v2/systemsharedmemory/region/r/status", "shm_status", "SystemSharedMemoryStatus", None, None),
    ("/v2/systemsharedmemory/region/r/register", "shm_register", "SystemSharedMemoryRegister", None, None),
    ("/v2/systemsharedmemory/unregister", "shm_unregister", "SystemSharedMemoryUnregister", None, None),
    ("/v2/cudasharedmemory/region/r/register", "cuda_shm_register", "CudaSharedMemoryRegister", None, None),
    ("/v2/cudasharedmemory/region/r/unregister", "cuda_shm_unregister", "CudaSharedMemoryUnregister", None, None),
    ("/v2/cudasharedmemory/status", "cuda_shm_status", "CudaSharedMemoryStatus", None, None),
    ("/v2/%6Cogging", "log_settings", "LogSettings", None, None),  # percent-encoded path
]


@pytest.mark.parametrize(("path", "api", "operation", "model", "version"), ROUTES, ids=[r[0] for r in ROUTES])
def test_routes(path, api, operation, model, version):
    route = match_route(path)
    assert (route.api, route.operation, route.model, route.version) == (api, operation, model, version)


def test_route_names_repository_and_region():
    route = match_route("/v2/repository/r1/models/m/load")
    assert (route.repository, route.model) == ("r1", "m")
    assert match_route("/v2/systemsharedmemory/region/my%2Fregion/register").region == "my/region"


@pytest.mark.parametrize("path", ["/v2/embed", "/v2/models/m/unknown", "/v2/health", "/v1/models/m:predict",
                                  "/v20/logging", "/v2/systemsharedmemory/register"])
def test_unknown_paths_are_not_claimed(path):
    assert match_route(path) is None
    obj, anomalies = rest(path, b"{}")
    assert obj is None and anomalies == []


def test_other_grpc_services_are_not_claimed():
    obj, anomalies = grpc("ModelInfer", [infer_request()], service="other.Service")
    assert obj is None and anomalies == []


# --- REST inference ------------------------------------------------------------------------------


def test_rest_json_tensor_bomb():
    """A shape of 10^12 elements with one value sent: both numbers are in the record."""
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1000000, 1000000], "data": [1.0]}]}
    obj, anomalies = rest("/v2/models/m/infer", body)
    assert obj["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [1000000, 1000000], "source": "json",
                              "elements": 10**12, "bytes_declared": 4 * 10**12, "bytes_sent": 4}]
    assert (obj["input_elements"], obj["input_bytes_declared"], obj["input_bytes_sent"]) == (10**12, 4 * 10**12, 4)
    assert anomalies == ["triton_tensor_size_mismatch"]


def test_rest_json_nested_and_bytes_data():
    body = {"id": 7, "inputs": [
        {"name": "a", "datatype": "INT64", "shape": [2, 2], "data": [[1, 2], [3, 4]]},
        {"name": "s", "datatype": "BYTES", "shape": [2], "data": ["hé", "x"]},
    ], "outputs": [{"name": "o", "parameters": {"binary_data": True}}], "parameters": {"priority": 1}}
    obj, anomalies = rest("/v2/models/m/infer", body)
    assert anomalies == []
    assert obj["id"] == "7" and obj["outputs"] == ["o"] and obj["parameters"] == {"priority": 1}
    a, s = obj["inputs"]
    assert (a["elements"], a["bytes_declared"], a["bytes_sent"]) == (4, 32, 32)
    assert (s["elements"], s["bytes_declared"], s["bytes_sent"]) == (2, 4 + 3 + 4 + 1, 12)


def binary_body(header: dict, tensors: bytes) -> tuple[bytes, list]:
    text = json.dumps(header).encode()
    return text + tensors, [("inference-header-content-length", str(len(text)))]


def test_rest_binary_bytes_tensor_with_a_lying_length_prefix():
    """One BYTES element whose length prefix claims 4 GiB: bytes_declared says so."""
    tensor = struct.pack("<I", 0xFFFFFFFF) + b"abc"
    header = {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [1],
                          "parameters": {"binary_data_size": len(tensor)}}]}
    body, headers = binary_body(header, tensor)
    obj, anomalies = rest("/v2/models/m/infer", body, headers=headers)
    assert obj["inputs"][0] == {"name": "s", "datatype": "BYTES", "shape": [1], "source": "binary", "elements": 1,
                                "bytes_declared": 4 + 0xFFFFFFFF, "bytes_sent": 7}
    assert anomalies == ["triton_tensor_size_mismatch"]


@pytest.mark.parametrize("value", ["abc", "-1", "99999", "1e3", " "])
def test_rest_binary_header_length_invalid(value):
    header = {"inputs": [{"name": "x", "datatype": "UINT8", "shape": [4], "parameters": {"binary_data_size": 4}}]}
    body, _ = binary_body(header, b"\x00" * 4)
    obj, anomalies = rest("/v2/models/m/infer", body, headers=[("inference-header-content-length", value)])
    assert anomalies[0] == "triton_binary_header_invalid"
    assert obj["api"] == "infer" and "binary_header_length" not in obj


def test_rest_binary_sizes_that_do_not_add_up():
    header = {"inputs": [{"name": "a", "datatype": "UINT8", "shape": [8], "parameters": {"binary_data_size": 8}},
                         {"name": "b", "datatype": "UINT8", "shape": [8], "parameters": {"binary_data_size": 8}}]}
    body, headers = binary_body(header, b"\x01" * 10)
    obj, anomalies = rest("/v2/models/m/infer", body, headers=headers)
    assert [t["bytes_sent"] for t in obj["inputs"]] == [8, 2]
    assert obj["input_bytes_sent"] == 10 and obj["input_bytes_declared"] == 16
    assert anomalies == ["triton_binary_size_mismatch", "triton_tensor_size_mismatch"]


def test_rest_binary_body_past_the_keep_cap_still_reads_the_header():
    """Only a prefix of a 5 MiB body is kept; the JSON header and the full size are still known."""
    size = 5 * 1024 * 1024
    header = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, size // 4],
                          "parameters": {"binary_data_size": size}}]}
    body, headers = binary_body(header, bytes(1000))
    total = len(body) - 1000 + size
    obj, anomalies = rest("/v2/models/m/infer", body, headers=headers, truncated=True, body_length=total)
    assert anomalies == []
    assert obj["inputs"][0]["bytes_sent"] == size and obj["inputs"][0]["bytes_declared"] == size


@pytest.mark.parametrize(("body", "event"), [
    (b'{"inputs": [', "triton_json_invalid"),
    (b"\xff\xfe not json", "triton_json_invalid"),
    (b"[" * 100000 + b"]" * 100000, "triton_json_invalid"),  # nesting past the JSON parser's recursion
    (b'"just a string"', "triton_request_invalid"),
    (b'{"inputs": 5}', "triton_request_invalid"),
    (b'{"inputs": [5]}', "triton_request_invalid"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": "1,2"}]}', "triton_shape_invalid"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]}', "triton_shape_invalid"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [' + b"1," * 40 + b'1]}]}', "triton_shape_invalid"),
])
def test_rest_malformed_infer_bodies(body, event):
    obj, anomalies = rest("/v2/models/m/infer", body)
    assert obj["api"] == "infer" and obj["model"] == "m"
    assert event in anomalies


def test_rest_body_that_stopped_early_is_not_inspected_rather_than_invalid():
    """A capture gap or a connection cut mid-body leaves JSON that does not parse: that is what
    the capture lost, not a malformed request; a binary header longer than the bytes seen too."""
    request = message("request", path="/v2/models/m/infer", body=b'{"inputs": [{"name": "x", "da')
    request.complete = False
    record, anomalies = run(HttpExchange(request=request, response=None, stream_id=0))
    assert anomalies == ["triton_body_not_inspected"] and "inputs" not in record["triton"]

    header = {"inputs": [{"name": "x", "datatype": "UINT8", "shape": [4], "parameters": {"binary_data_size": 4}}]}
    body, headers = binary_body(header, b"\x00" * 4)
    request = message("request", path="/v2/models/m/infer", body=body[:20], headers=headers)
    request.complete = False
    record, anomalies = run(HttpExchange(request=request, response=None, stream_id=0))
    assert anomalies == ["triton_body_not_inspected"] and record["triton"]["api"] == "infer"


def test_rest_infer_body_past_the_keep_cap_is_reported():
    obj, anomalies = rest("/v2/models/m/infer", b'{"inputs": [', truncated=True, body_length=2 * 1024 * 1024)
    assert anomalies == ["triton_body_not_inspected"] and "inputs" not in obj


def test_rest_non_finite_numbers_stay_out_of_the_record():
    obj, _ = rest("/v2/models/m/infer", b'{"parameters": {"t": NaN, "u": -Infinity}, "inputs": []}')
    assert obj["parameters"] == {"t": "nan", "u": "-inf"}


def test_rest_shared_memory_input_offsets_are_unsigned():
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [4], "parameters": {
        "shared_memory_region": "r", "shared_memory_offset": -32, "shared_memory_byte_size": 16}}]}
    obj, anomalies = rest("/v2/models/m/infer", body)
    assert obj["inputs"][0]["shm_offset"] == 2**64 - 32 and obj["inputs"][0]["source"] == "shared_memory"
    assert anomalies == []


def test_rest_infer_response_error_and_binary_outputs():
    text = json.dumps({"outputs": [{"name": "o", "datatype": "FP32", "shape": [2],
                                    "parameters": {"binary_data_size": 8}}]}).encode()
    response = message("response", body=text + bytes(8),
                       headers=[("inference-header-content-length", str(len(text)))])
    obj, _ = rest("/v2/models/m/infer", {"inputs": []}, response=response)
    assert obj["response"] == {"outputs": [{"name": "o", "datatype": "FP32", "shape": [2]}]}
    error = message("response", status=400, body=b'{"error": "unexpected shape for input \'x\'"}')
    obj, _ = rest("/v2/models/m/infer", {"inputs": []}, response=error)
    assert obj["error"] == "unexpected shape for input 'x'" and "outputs" not in obj.get("response", {})


def test_rest_health_answers():
    assert rest("/v2/health/live", method="GET", response=message("response", status=200))[0]["response"] == \
        {"live": True}
    assert rest("/v2/models/m/ready", method="GET", response=message("response", status=400))[0]["response"] == \
        {"ready": False}


# --- REST management -----------------------------------------------------------------------------


def test_rest_log_settings_every_key():
    body = {"log_file": "/root/.bashrc", "log_info": True, "log_warnings": False, "log_errors": True,
            "log_verbose_level": 3, "log_format": "ISO8601", "other": 1}
    obj, anomalies = rest("/v2/logging", body)
    assert obj["log_settings"] == {k: v for k, v in body.items() if k != "other"}
    assert obj["setting_names"] == list(body)
    assert anomalies == []


def test_rest_log_settings_reset_and_read():
    assert rest("/v2/logging", {"log_file": None})[0]["log_settings"] == {"log_file": None}
    read, _ = rest("/v2/logging", method="GET")
    assert "log_settings" not in read and read["api"] == "log_settings"


def test_rest_trace_settings_every_key():
    body = {"trace_file": "/etc/cron.d/x", "trace_level": "TENSORS", "trace_rate": 5, "trace_count": "-1",
            "log_frequency": "0", "trace_mode": "opentelemetry", "trace_config": ["rate,10", "url,http://x"]}
    obj, _ = rest("/v2/models/m/trace/setting", body)
    assert obj["model"] == "m"
    assert obj["trace_settings"] == {"trace_file": "/etc/cron.d/x", "trace_level": ["TENSORS"], "trace_rate": "5",
                                     "trace_count": "-1", "log_frequency": "0", "trace_mode": "opentelemetry",
                                     "trace_config": ["rate,10", "url,http://x"]}


@pytest.mark.parametrize("body", [b"[1, 2]", b"nope"])
def test_rest_settings_bodies_that_are_not_objects(body):
    obj, anomalies = rest("/v2/logging", body)
    assert "log_settings" not in obj and anomalies in (["triton_request_invalid"], ["triton_json_invalid"])


def test_rest_model_load_file_overrides():
    files = {"file:1/model.py": base64.b64encode(b"import os\n" * 3).decode(),
             "file:1/data.bin": base64.b64encode(bytes(10)).decode()}
    config = json.dumps({"backend": "python", "platform": "x"})
    obj, anomalies = rest("/v2/repository/r/models/evil/load", {"parameters": {"config": config, **files}})
    assert anomalies == []
    assert obj["model"] == "evil"
    assert obj["repository"] == {"name": "r", "file_overrides": ["1/model.py", "1/data.bin"],
                                 "file_override_count": 2, "file_override_bytes": 40,
                                 "config": {"bytes": len(config), "backend": "python", "platform": "x"}}


def test_rest_model_load_bad_base64_and_bad_config():
    obj, anomalies = rest("/v2/repository/models/m/load",
                          {"parameters": {"file:1/model.onnx": "not base64!", "config": "{not json"}})
    assert anomalies == ["triton_base64_invalid"]
    assert obj["repository"]["file_overrides"] == ["1/model.onnx"]
    assert obj["repository"]["config"] == {"bytes": 9}


def test_rest_model_load_past_the_keep_cap_lists_overrides_from_the_prefix():
    encoded = base64.b64encode(bytes(3000)).decode()
    body = json.dumps({"parameters": {"config": "{}", "file:1/model.py": encoded[:40],
                                      "file:1/model.plan": encoded}}).encode()[:2000]
    obj, anomalies = rest("/v2/repository/models/m/load", body, truncated=True, body_length=5000)
    assert anomalies == ["triton_body_not_inspected"]
    repository = obj["repository"]
    assert repository["file_overrides"] == ["1/model.py", "1/model.plan"]
    assert repository["file_override_bytes"] == 30 + (2000 - body.index(b"1/model.plan") - 16) * 3 // 4


def test_rest_repository_index_and_unload():
    assert rest("/v2/repository/index", {"ready": True})[0]["repository"] == {"ready": True}
    unload, _ = rest("/v2/repository/models/m/unload", {"parameters": {"unload_dependents": True}})
    assert unload["repository"] == {"unload_dependents": True}


def test_rest_shared_memory_register_exact_big_offsets():
    obj, anomalies = rest("/v2/systemsharedmemory/region/r/register",
                          b'{"key": "/k", "offset": 36893488147419103232, "byte_size": 18446744073709551615}')
    assert obj["shm"] == {"name": "r", "key": "/k", "offset": 2**65, "byte_size": 2**64 - 1}
    assert anomalies == []
    obj, anomalies = rest("/v2/systemsharedmemory/region/r/register", {"key": "/k", "offset": "12", "byte_size": 8})
    assert obj["shm"]["offset"] is None and anomalies == ["triton_request_invalid"]


def test_rest_cuda_register_logs_only_the_handle_size():
    handle = base64.b64encode(b"\x01" * 64).decode()
    obj, _ = rest("/v2/cudasharedmemory/region/c/register",
                  {"raw_handle": {"b64": handle}, "device_id": 1, "byte_size": 4096})
    assert obj["shm"] == {"name": "c", "raw_handle_bytes": 64, "device_id": 1, "byte_size": 4096}
    assert handle not in json.dumps(obj)


def test_rest_generate_and_stream_events():
    response = message("response", body=b'data: {"text_output":"a"}\n\ndata: {"text_output":"b"}\n\n')
    obj, _ = rest("/v2/models/llm/generate_stream", {"text_input": "hello", "parameters": {"stream": True}},
                  response=response)
    assert (obj["stream"], obj["text_input_length"], obj["stream_responses"]) == (True, 5, 2)
    assert obj["parameter_names"] == ["stream"]


# --- gRPC ----------------------------------------------------------------------------------------


def test_grpc_infer_with_parameters_and_shared_memory():
    request = service_pb2.ModelInferRequest(model_name="m", model_version="2", id="r")
    request.parameters["sequence_id"].int64_param = -5
    request.parameters["priority"].uint64_param = 2**64 - 1
    request.parameters["flag"].bool_param = True
    request.parameters["ratio"].double_param = 0.25
    tensor = request.inputs.add(name="x", datatype="FP32")
    tensor.shape.extend([2, 2])
    tensor.parameters["shared_memory_region"].string_param = "r0"
    tensor.parameters["shared_memory_offset"].int64_param = -32
    tensor.parameters["shared_memory_byte_size"].int64_param = 16
    request.outputs.add(name="out")
    obj, anomalies = grpc("ModelInfer", [request.SerializeToString()])
    assert anomalies == []
    assert (obj["model"], obj["version"], obj["id"], obj["outputs"]) == ("m", "2", "r", ["out"])
    assert obj["parameters"] == {"sequence_id": -5, "priority": 2**64 - 1, "flag": True, "ratio": 0.25}
    assert obj["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [2, 2], "source": "shared_memory",
                              "elements": 4, "bytes_declared": 16, "bytes_sent": None, "shm_region": "r0",
                              "shm_offset": 2**64 - 32, "shm_byte_size": 16}]


def test_grpc_typed_contents_of_every_kind():
    request = service_pb2.ModelInferRequest(model_name="m")
    for name, datatype, field_name, values in [
        ("b", "BOOL", "bool_contents", [True, False, True]), ("i", "INT32", "int_contents", [-1, 2**31 - 1]),
        ("l", "INT64", "int64_contents", [-(2**63), 5]), ("u", "UINT32", "uint_contents", [7]),
        ("q", "UINT64", "uint64_contents", [2**64 - 1]), ("f", "FP32", "fp32_contents", [1.5, 2.5]),
        ("d", "FP64", "fp64_contents", [0.1]), ("s", "BYTES", "bytes_contents", [b"ab", b""]),
    ]:
        tensor = request.inputs.add(name=name, datatype=datatype)
        tensor.shape.append(len(values))
        getattr(tensor.contents, field_name).extend(values)
    obj, anomalies = grpc("ModelInfer", [request.SerializeToString()])
    assert anomalies == []
    assert [(t["name"], t["elements"], t["bytes_declared"], t["bytes_sent"]) for t in obj["inputs"]] == [
        ("b", 3, 3, 3), ("i", 2, 8, 8), ("l", 2, 16, 16), ("u", 1, 4, 4), ("q", 1, 8, 8), ("f", 2, 8, 8),
        ("d", 1, 8, 8), ("s", 2, 10, 10)]


def test_grpc_bytes_contents_with_the_wrong_wire_type_are_not_elements():
    """bytes_contents (field 8) sent as a varint: protobuf keeps it as an unknown field, so do we
    (found by the fuzzer: it raised a TypeError out of the parser)."""
    contents = b"\x40\x05" + b"\x42\x02ab"  # field 8 as a varint, then one real bytes element
    tensor = b"\x0a\x01s" + b"\x12\x05BYTES" + b"\x1a\x01\x01" + b"\x2a" + bytes([len(contents)]) + contents
    payload = b"\x0a\x01m" + b"\x2a" + bytes([len(tensor)]) + tensor
    obj, anomalies = grpc("ModelInfer", [payload])
    assert anomalies == []
    inputs = [(t["name"], t["source"], t["elements"], t["bytes_sent"]) for t in obj["inputs"]]
    assert inputs == [("s", "contents", 1, 6)]


def test_grpc_contents_with_fewer_elements_than_declared():
    request = service_pb2.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype="INT32")
    tensor.shape.extend([1000, 1000])
    tensor.contents.int_contents.extend([1, 2])
    obj, anomalies = grpc("ModelInfer", [request.SerializeToString()])
    assert (obj["input_elements"], obj["input_bytes_declared"], obj["input_bytes_sent"]) == (10**6, 4 * 10**6, 8)
    assert anomalies == ["triton_tensor_size_mismatch"]


def test_grpc_huge_shapes_saturate():
    payload = infer_request(("x", "FP64", [2**62, 2**62, 2**62], b""))
    obj, _ = grpc("ModelInfer", [payload])
    assert obj["inputs"][0]["elements"] == SATURATED and obj["inputs"][0]["bytes_declared"] == SATURATED


def test_grpc_negative_dimension():
    obj, anomalies = grpc("ModelInfer", [infer_request(("x", "FP32", [-1, 4], bytes(16)))])
    assert obj["inputs"][0]["shape"] == [-1, 4] and obj["inputs"][0]["elements"] is None
    assert anomalies == ["triton_shape_invalid"]


def test_grpc_raw_contents_count_mismatch():
    request = service_pb2.ModelInferRequest(model_name="m")
    request.inputs.add(name="a", datatype="UINT8", shape=[1])
    request.raw_input_contents.extend([b"\x01", b"\x02"])
    obj, anomalies = grpc("ModelInfer", [request.SerializeToString()])
    assert anomalies == ["triton_raw_input_count_mismatch"]
    assert obj["inputs"][0]["bytes_sent"] == 1


def test_grpc_truncated_protobuf_is_an_anomaly_with_what_could_be_read():
    payload = infer_request(("x", "FP32", [4], bytes(16)))
    obj, anomalies = grpc("ModelInfer", [payload[:-5]])
    assert anomalies == ["triton_protobuf_invalid"]
    assert obj["model"] == "m" and obj["inputs"][0]["shape"] == [4] and obj["inputs"][0]["source"] == "none"


@pytest.mark.parametrize("payload", [b"\x08", b"\x0f\x01", b"\x00\x01", b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
                                     b"\x2a\x03\x1a\x01", b"\x3b\x00"])
def test_grpc_malformed_payloads(payload):
    obj, anomalies = grpc("ModelInfer", [payload])
    assert obj["api"] == "infer" and "triton_protobuf_invalid" in anomalies


def test_grpc_message_past_the_keep_cap():
    """Kept prefix of 200 bytes: the first raw tensor's size comes from its length, the rest counts as unseen."""
    payload = infer_request(("a", "UINT8", [1000], b"\x01" * 1000), ("b", "UINT8", [1000], b"\x02" * 1000))
    obj, anomalies = grpc("ModelInfer", [payload], limits=Limits(grpc_keep_message_bytes=200))
    assert anomalies == []
    a, b = obj["inputs"]
    assert (a["source"], a["bytes_sent"]) == ("raw", 1000)
    assert (b["source"], b["bytes_sent"]) == ("none", None)
    raw_b = 1 + 2 + 1000  # tag, length varint, bytes of the second raw_input_contents
    assert obj["input_bytes_sent"] == 1000 + raw_b


def test_grpc_fed_byte_by_byte_gives_the_same_record():
    payload = infer_request(("x", "BYTES", [2], struct.pack("<I", 2) + b"hi" + struct.pack("<I", 0)), id="q")
    whole, _ = grpc("ModelInfer", [payload])
    split, _ = grpc("ModelInfer", [payload], chunk=1)
    assert split == whole and whole["inputs"][0]["bytes_declared"] == 10


def test_grpc_gzip_and_uninspectable_encodings():
    import gzip
    payload = infer_request(("x", "UINT8", [3], b"abc"))
    obj, anomalies = grpc("ModelInfer", [gzip.compress(payload)], encoding="gzip")
    assert obj["inputs"][0]["bytes_sent"] == 3 and anomalies == []
    obj, anomalies = grpc("ModelInfer", [payload], encoding="snappy")
    assert "inputs" not in obj and anomalies == []  # the grpc layer reports grpc_unsupported_encoding


def test_grpc_stream_errors_and_models():
    requests = [infer_request(("x", "UINT8", [1], b"\x00"), model=m, id=str(i)) for i, m in enumerate("aab")]
    good = service_pb2.ModelStreamInferResponse()
    good.infer_response.outputs.add(name="y", datatype="UINT8", shape=[1])
    bad = service_pb2.ModelStreamInferResponse(error_message="boom")
    obj, _ = grpc("ModelStreamInfer", requests, [good.SerializeToString(), bad.SerializeToString()])
    assert (obj["stream"], obj["stream_messages"], obj["stream_responses"]) == (True, 3, 2)
    assert (obj["model"], obj["id"], obj["stream_models"], obj["input_count"]) == ("a", "0", ["a", "b"], 3)
    assert obj["error"] == "boom"
    assert obj["response"] == {"outputs": [{"name": "y", "datatype": "UINT8", "shape": [1]}], "stream_errors": 1}


def test_grpc_log_settings_reset_and_types():
    request = service_pb2.LogSettingsRequest()
    request.settings["log_file"].string_param = "/root/.bashrc"
    request.settings["log_verbose_level"].uint32_param = 4
    request.settings["log_errors"].bool_param = False
    request.settings["log_format"]  # present without a value: a reset
    obj, _ = grpc("LogSettings", [request.SerializeToString()])
    assert obj["log_settings"] == {"log_file": "/root/.bashrc", "log_verbose_level": 4, "log_errors": False,
                                   "log_format": None}


def test_grpc_trace_setting_clear_and_lists():
    request = service_pb2.TraceSettingRequest(model_name="m")
    request.settings["trace_file"]
    request.settings["trace_level"].value.extend(["TIMESTAMPS", "TENSORS"])
    obj, _ = grpc("TraceSetting", [request.SerializeToString()])
    assert obj["model"] == "m"
    assert obj["trace_settings"] == {"trace_file": None, "trace_level": ["TIMESTAMPS", "TENSORS"]}


def test_grpc_model_load_overrides_as_bytes_and_strings():
    request = service_pb2.RepositoryModelLoadRequest(repository_name="repo", model_name="m")
    request.parameters["config"].string_param = '{"platform": "onnxruntime_onnx"}'
    request.parameters["file:1/model.onnx"].bytes_param = bytes(4096)
    request.parameters["file:1/extra.txt"].string_param = "abc"
    request.parameters["poll"].bool_param = True
    obj, _ = grpc("RepositoryModelLoad", [request.SerializeToString()])
    repository = obj["repository"]
    assert repository["name"] == "repo" and sorted(repository["file_overrides"]) == ["1/extra.txt", "1/model.onnx"]
    assert repository["file_override_bytes"] == 4099 and repository["config"]["platform"] == "onnxruntime_onnx"
    assert sorted(obj["parameter_names"]) == ["config", "poll"]


def test_grpc_model_load_past_the_keep_cap_keeps_override_sizes():
    request = service_pb2.RepositoryModelLoadRequest(model_name="m")
    request.parameters["file:1/model.plan"].bytes_param = bytes(500_000)
    obj, anomalies = grpc("RepositoryModelLoad", [request.SerializeToString()])
    assert anomalies == [] and obj["repository"]["file_override_bytes"] == 500_000


def test_grpc_cuda_register_and_index():
    request = service_pb2.CudaSharedMemoryRegisterRequest(name="c", raw_handle=bytes(64), device_id=2,
                                                          byte_size=2**40)
    obj, _ = grpc("CudaSharedMemoryRegister", [request.SerializeToString()])
    assert obj["shm"] == {"name": "c", "raw_handle_bytes": 64, "device_id": 2, "byte_size": 2**40}
    index = service_pb2.RepositoryIndexRequest(repository_name="r", ready=True)
    obj, _ = grpc("RepositoryIndex", [index.SerializeToString()])
    assert obj["repository"] == {"name": "r", "ready": True}


def test_grpc_unknown_method_and_error_status():
    obj, _ = grpc("NewMethod", [b""], status=12, grpc_message="not implemented")
    assert (obj["api"], obj["operation"], obj["error"]) == ("other", "NewMethod", "not implemented")


# --- the small pieces -------------------------------------------------------------------------------


def test_read_fields_partial_and_strict():
    payload = infer_request(("x", "UINT8", [4], b"abcd"))
    for cut in range(len(payload)):
        assert read_fields(payload[:cut], partial_ok=True).error is None
    inner_cut = read_fields(payload[:-2], partial_ok=True)
    assert inner_cut.fields[-1].partial and inner_cut.fields[-1].length == 4 and inner_cut.end == len(payload)
    assert read_fields(payload[:-2]).error.startswith("field 7: length 4 runs past the end")


def test_tensor_helpers():
    assert element_count([]) == 1 and element_count([3, 0, 2**70]) == 0 and element_count([2, -1]) is None
    assert element_count([2**40, 2**40]) == SATURATED
    assert unsigned64(-1) == 2**64 - 1 and unsigned64(5) == 5 and unsigned64(-(2**64)) == -(2**64)
    walk = walk_bytes_elements(struct.pack("<I", 1) + b"a" + struct.pack("<I", 9) + b"xy")
    assert (walk.elements, walk.declared, walk.complete) == (2, 18, False)
    assert json_data_stats([[1, 2], [3]], "INT8") == (3, 3)
    assert json_data_stats(5, "FP32") == (1, 4) and json_data_stats(["ab"], "BYTES") == (1, 6)
    deep: list = [1]
    for _ in range(40):
        deep = [deep]
    assert json_data_stats(deep, "FP32") is None
    assert base64_decoded_size("YWJj") == 3 and base64_decoded_size("YQ==") == 1
    assert base64_decoded_size("YQ=") is None and base64_decoded_size("é===") is None


# --- never raises --------------------------------------------------------------------------------

REST_PATHS = [path for path, *_ in ROUTES]
GRPC_METHODS = [*sorted(METHOD_APIS), "Bogus"]
json_values = st.recursive(st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
                           | st.floats(allow_nan=False) | st.text(max_size=20),
                           lambda children: st.lists(children, max_size=5)
                           | st.dictionaries(st.sampled_from(["inputs", "name", "shape", "datatype", "data",
                                                              "parameters", "binary_data_size", "log_file",
                                                              "trace_level", "offset", "key", "byte_size",
                                                              "file:1/m.py", "config", "raw_handle", "b64",
                                                              "shared_memory_region", "shared_memory_offset",
                                                              "outputs", "id", "text_input", "error"]),
                                             children, max_size=6), max_leaves=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(REST_PATHS),
       body=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()),
       header=st.none() | st.integers(min_value=-5, max_value=400).map(str) | st.text(max_size=5),
       truncated=st.booleans(), response=st.binary(max_size=100), status=st.sampled_from([200, 400, 500]))
def test_rest_build_never_raises(path, body, header, truncated, response, status):
    headers = [("inference-header-content-length", header)] if header is not None else []
    reply = message("response", status=status, body=response,
                    headers=[("inference-header-content-length", str(len(response) // 2))])
    obj, _ = rest(path, body, headers=headers, truncated=truncated, response=reply)
    assert obj is not None and obj["api"] in triton.APIS


VALID = [infer_request(("x", "BYTES", [2], struct.pack("<I", 1) + b"a" + struct.pack("<I", 1) + b"b"), id="z"),
         service_pb2.LogSettingsRequest(settings={"log_file": {"string_param": "/x"}}).SerializeToString(),
         service_pb2.SystemSharedMemoryRegisterRequest(name="r", key="/k", offset=5, byte_size=9).SerializeToString()]


@settings(max_examples=400, deadline=None)
@given(method=st.sampled_from(GRPC_METHODS), payloads=st.lists(st.binary(max_size=200), max_size=3),
       responses=st.lists(st.binary(max_size=100), max_size=2))
def test_grpc_build_never_raises(method, payloads, responses):
    obj, _ = grpc(method, payloads, responses)
    assert obj["api"] in triton.APIS


@settings(max_examples=300, deadline=None)
@given(method=st.sampled_from(GRPC_METHODS), base=st.sampled_from(VALID), data=st.data())
def test_grpc_build_never_raises_on_mutated_messages(method, base, data):
    mutated = bytearray(base)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        mutated[data.draw(st.integers(min_value=0, max_value=len(mutated) - 1))] = data.draw(st.integers(0, 255))
    obj, _ = grpc(method, [bytes(mutated)], [bytes(mutated)])
    assert obj["operation"] == method


# --- declared fields and produced keys --------------------------------------------------------------


def produced_paths(value, prefix: str, declared: dict, out: set[str]) -> None:
    """Dotted paths of `value` (through lists), stopping at declared objects without declared children."""
    if isinstance(value, list):
        for item in value:
            produced_paths(item, prefix, declared, out)
        return
    out.add(prefix)
    if not isinstance(value, dict):
        return
    spec = declared.get(prefix)
    has_children = any(name.startswith(prefix + ".") for name in declared)
    if spec is not None and spec.type == "object" and not has_children:
        return
    for key, item in value.items():
        produced_paths(item, f"{prefix}.{key}", declared, out)


def sample_objects() -> list[dict]:
    """Records from the captures plus the unit cases above that reach the rarer fields."""
    objects = []
    for name in ("triton_grpc.pcap", "triton_rest.pcap"):
        records: list[dict] = []
        Analyzer(records.append).analyze_file(CLIENTS / name)
        objects.extend(r["triton"] for r in records if "triton" in r)
    objects.append(rest("/v2/logging", {"log_file": "/x", "log_info": True, "log_warnings": True,
                                        "log_errors": True, "log_verbose_level": 1, "log_format": "default"})[0])
    objects.append(rest("/v2/trace/setting", {"trace_count": "1", "log_frequency": "1", "trace_mode": "triton",
                                              "trace_config": ["a"]})[0])
    config = json.dumps({"platform": "p"})
    objects.append(rest("/v2/repository/r/models/m/versions/1/load", {"parameters": {"config": config}})[0])
    objects.append(rest("/v2/repository/r/models/m/load", {"parameters": {"config": config}})[0])
    objects.append(rest("/v2/models/m/versions/4/infer",
                        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]})[0])
    return objects


def test_declared_fields_and_produced_keys_agree():
    declared = {name: spec for name, spec in fields.catalogue().items() if name.startswith("triton.")}
    produced: set[str] = set()
    for obj in sample_objects():
        produced_paths(obj, "triton", declared, produced)
    produced.discard("triton")
    assert produced - set(declared) == set(), "produced but not declared"
    assert set(declared) - produced == set(), "declared but never produced by the tests"
    assert all(spec.events == ("triton",) for spec in declared.values())


def test_grpc_cut_raw_tensor_cannot_claim_more_than_the_message_holds():
    """A raw_input_contents length of 4 GiB inside a 300-byte message cut by the keep cap."""
    header = infer_request(("x", "UINT8", [2**32], None))
    payload = header + b"\x3a" + bytes([0x80, 0x80, 0x80, 0x80, 0x10]) + bytes(300)  # field 7, length 2^32
    obj, anomalies = grpc("ModelInfer", [payload], limits=Limits(grpc_keep_message_bytes=len(payload) - 100))
    assert anomalies == ["triton_protobuf_invalid", "triton_tensor_size_mismatch"]
    assert obj["inputs"][0]["bytes_sent"] == 300 and obj["inputs"][0]["bytes_declared"] == 2**32
