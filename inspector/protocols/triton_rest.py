"""The REST half of the `triton` layer: KServe v2 / Triton HTTP endpoints under `/v2`.

Routes (https://github.com/kserve/kserve/blob/master/docs/predict-api/v2/required_api.md and
Triton's protocol extensions) map a path to a `triton.api` and an `operation` named like the
gRPC method that does the same thing, so one rule can cover both transports. A `/v2` path that
matches no route is not claimed (other servers use `/v2` too).

Inference requests are JSON, or JSON followed by raw tensors when the binary tensor extension is
used: `Inference-Header-Content-Length` gives the JSON header's size and each input's
`parameters.binary_data_size` its slice of what follows, in input order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from inspector import jsonio
from inspector.http import HttpExchange, HttpMessage
from inspector.protocols.triton_common import (
    FILE_OVERRIDE_PREFIX,
    MAX_LIST,
    MAX_NAME,
    MAX_TEXT,
    AnomalyOnce,
    Reporter,
    RepositoryRequest,
    base64_decoded_size,
    cut,
    log_settings_object,
    parameters_object,
    trace_settings_object,
)
from inspector.protocols.triton_infer_json import DataCount, infer_json
from inspector.protocols.triton_tensors import BYTES, MAX_DIMS, TensorInput, json_data_stats, unsigned64


@dataclass(frozen=True, slots=True)
class Route:
    """What the path of a REST call says."""

    api: str
    operation: str
    model: str | None = None
    version: str | None = None
    region: str | None = None
    repository: str | None = None


_M = r"/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?"
_SHM = r"/v2/(?P<kind>system|cuda)sharedmemory"

#: (path regex, api, operation), first match wins. The `kind` group picks system or CUDA shm.
_ROUTES: tuple[tuple[re.Pattern[str], str, str], ...] = tuple((re.compile(p), a, o) for p, a, o in (
    (r"/v2/health/live", "health", "ServerLive"),
    (r"/v2/health/ready", "health", "ServerReady"),
    (r"/v2/?", "metadata", "ServerMetadata"),
    (r"/v2/models/stats", "stats", "ModelStatistics"),
    (_M + r"/ready", "health", "ModelReady"),
    (_M + r"/infer", "infer", "ModelInfer"),
    (_M + r"/generate", "generate", "Generate"),
    (_M + r"/generate_stream", "generate", "GenerateStream"),
    (_M + r"/config", "config", "ModelConfig"),
    (_M + r"/stats", "stats", "ModelStatistics"),
    (_M + r"/trace(?:/setting)?", "trace_settings", "TraceSetting"),
    (_M, "metadata", "ModelMetadata"),
    (r"/v2/trace(?:/setting)?", "trace_settings", "TraceSetting"),
    (r"/v2/logging", "log_settings", "LogSettings"),
    (r"/v2/repository(?:/(?P<repository>[^/]+))?/index", "repository_index", "RepositoryIndex"),
    (r"/v2/repository(?:/(?P<repository>[^/]+))?/models/(?P<model>[^/]+)/load", "model_load",
     "RepositoryModelLoad"),
    (r"/v2/repository(?:/(?P<repository>[^/]+))?/models/(?P<model>[^/]+)/unload", "model_unload",
     "RepositoryModelUnload"),
    (_SHM + r"(?:/region/(?P<region>[^/]+))?/status", "shm_status", "SharedMemoryStatus"),
    (_SHM + r"/region/(?P<region>[^/]+)/register", "shm_register", "SharedMemoryRegister"),
    (_SHM + r"(?:/region/(?P<region>[^/]+))?/unregister", "shm_unregister", "SharedMemoryUnregister"),
))

_SHM_OPERATIONS = {"system": "SystemSharedMemory", "cuda": "CudaSharedMemory"}

#: A `"file:..."` key and the start of its base64 value, for bodies cut by the keep cap.
_FILE_KEY = re.compile(rb'"(file:(?:[^"\\]|\\.){0,1024})"\s*:\s*"([A-Za-z0-9+/=\\n]*)')
_CONFIG_KEY = re.compile(rb'"config"\s*:\s*"')


def match_route(path: str) -> Route | None:
    """The route of a request target (query ignored), or None when it is no KServe v2 path."""
    target = path.split("?", 1)[0].split("#", 1)[0]
    route = _match(target)
    if route is None and "%" in target:
        route = _match(unquote(target, errors="replace"))
    return route


def _match(target: str) -> Route | None:
    for pattern, api, operation in _ROUTES:
        found = pattern.fullmatch(target)
        if found is None:
            continue
        groups = found.groupdict()
        kind = groups.get("kind")
        if kind is not None:
            operation = _SHM_OPERATIONS[kind] + operation.removeprefix("SharedMemory")
            if kind == "cuda":
                api = "cuda_" + api
        return Route(api=api, operation=operation, model=_segment(groups.get("model")),
                     version=_segment(groups.get("version"), 64), region=_segment(groups.get("region")),
                     repository=_segment(groups.get("repository")))
    return None


def _segment(value: str | None, limit: int = MAX_NAME) -> str | None:
    return cut(unquote(value, errors="replace"), limit) if value is not None else None


# --- bodies ----------------------------------------------------------------------------------

_NO_JSON = object()

#: A JSON response body longer than this is not parsed (its outputs stay unlisted): responses
#: carry no attack, and parsing 1 MB of JSON numbers costs about 18 ms. Binary responses are
#: always read (only their JSON header is parsed).
RESPONSE_JSON_MAX = 64 * 1024


def _json(data: bytes, report: Reporter, what: str, *, complete: bool = True, infer: bool = False) -> Any:
    """`data` as JSON; `_NO_JSON` when it does not parse: invalid, or (`complete` False: the
    message stopped early, a capture gap or a connection cut mid-body) not inspected. `infer`:
    an infer request, whose inputs' data come counted (`DataCount`) when they can be."""
    try:
        return infer_json(data) if infer else jsonio.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        if not complete:
            report("triton_body_not_inspected", f"{what}: the body stopped after {len(data)} bytes (message cut "
                                                f"short) and does not parse as JSON")
        else:
            report("triton_json_invalid", f"{what}: {type(exc).__name__}: {exc}")
        return _NO_JSON


def _body_json(message: HttpMessage, report: Reporter, what: str, *, infer: bool = False) -> Any:
    """The body as JSON; `_NO_JSON` when there is none, it was cut by the keep cap, or it is bad."""
    if not message.body:
        return _NO_JSON
    if message.body_truncated:
        report("triton_body_not_inspected", f"{what}: body of {message.body_length} bytes is longer than "
                                            f"the {len(message.body)} bytes kept")
        return _NO_JSON
    return _json(message.body, report, what, complete=message.complete, infer=infer)


def _body_size(message: HttpMessage) -> int:
    """The (content-decoded) body's full size when known, else the bytes kept."""
    if not message.body_truncated or message.decoded:
        return len(message.body)
    return message.body_length


def _binary_split(message: HttpMessage, report: Reporter, what: str, *,
                  infer: bool = False) -> tuple[Any, int, int] | None:
    """`(json header, binary start, binary size)` for a binary-extension body; None when the
    body has no Inference-Header-Content-Length."""
    value = message.header("inference-header-content-length")
    if value is None:
        return None
    total = _body_size(message)
    text = value.strip()
    well_formed = text.isascii() and text.isdigit() and len(text) <= 18
    if well_formed and int(text) > total and not message.complete:  # the body stopped early
        report("triton_body_not_inspected", f"{what}: JSON header of {int(text)} bytes, the body stopped after "
                                            f"{total} bytes (message cut short)")
        return _NO_JSON, int(text), 0
    if not well_formed or int(text) > total:
        report("triton_binary_header_invalid", f"{what}: Inference-Header-Content-Length {cut(value, 64)!r} "
                                               f"for a {total}-byte body")
        return None
    length = int(text)
    if length > len(message.body):
        report("triton_body_not_inspected", f"{what}: JSON header of {length} bytes is longer than the "
                                            f"{len(message.body)} bytes kept")
        return _NO_JSON, length, total - length
    return (_json(message.body[:length], report, what, complete=message.complete, infer=infer), length,
            total - length)


# --- inference -------------------------------------------------------------------------------


def _shape(value: Any, name: str | None, report: AnomalyOnce) -> list[int] | None:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        report("triton_shape_invalid", f"input {name!r}: shape is not a list of integers")
        return None
    if len(value) > MAX_DIMS:
        report("triton_shape_invalid", f"input {name!r}: more than {MAX_DIMS} dimensions")
        value = value[:MAX_DIMS]
    if any(d < 0 for d in value):
        report("triton_shape_invalid", f"input {name!r}: negative dimension in {value}")
    return value


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _input(item: Any, report: AnomalyOnce) -> tuple[TensorInput, dict[str, Any], Any]:
    if not isinstance(item, dict):
        report("triton_request_invalid", "an input is not a JSON object")
        return TensorInput(name=None, datatype=None, shape=None), {}, None
    name = item.get("name")
    name = cut(name) if isinstance(name, str) else None
    datatype = item.get("datatype")
    datatype = cut(datatype, 32) if isinstance(datatype, str) else None
    tensor = TensorInput(name=name, datatype=datatype, shape=_shape(item.get("shape"), name, report))
    tensor.declare()
    parameters = item.get("parameters")
    parameters = parameters if isinstance(parameters, dict) else {}
    region = parameters.get("shared_memory_region")
    if isinstance(region, str):
        tensor.shm_region = cut(region)
        offset, size = _int(parameters.get("shared_memory_offset")), _int(parameters.get("shared_memory_byte_size"))
        tensor.shm_offset = unsigned64(offset) if offset is not None else None
        tensor.shm_byte_size = unsigned64(size) if size is not None else None
    return tensor, parameters, item.get("data", _NO_JSON)


def _infer_request(message: HttpMessage, obj: dict[str, Any], report: AnomalyOnce) -> list[TensorInput]:
    binary = _binary_split(message, report, "infer request", infer=True)
    if binary is None:
        header, binary_start, binary_size = _body_json(message, report, "infer request", infer=True), 0, 0
    else:
        header, binary_start, binary_size = binary
        obj["binary_header_length"] = binary_start
    if header is _NO_JSON:
        return []
    if not isinstance(header, dict):
        report("triton_request_invalid", "infer request is not a JSON object")
        return []
    _request_common(header, obj)
    inputs_raw = header.get("inputs")
    if not isinstance(inputs_raw, list):
        report("triton_request_invalid", "infer request has no inputs list")
        inputs_raw = []
    obj["input_count"] = len(inputs_raw)
    inputs: list[TensorInput] = []
    position = binary_start
    used = 0
    for item in inputs_raw[:MAX_LIST]:
        tensor, parameters, data = _input(item, report)
        size = _int(parameters.get("binary_data_size"))
        if tensor.shm_region is not None:
            tensor.source = "shared_memory"
        elif size is not None:
            tensor.source = "binary"
            if size < 0:
                report("triton_request_invalid", f"input {tensor.name!r}: binary_data_size {size}")
                size = 0
            sent = max(0, min(size, binary_size - used))
            tensor.take_data(message.body[position:position + sent], sent)
            position += sent
            used += size
        elif data is not _NO_JSON:
            tensor.source = "json"
            stats = data.stats if data.__class__ is DataCount else json_data_stats(data, tensor.datatype or "")
            if stats is not None:
                tensor.elements_sent, tensor.bytes_sent = stats
                if tensor.datatype == BYTES:
                    tensor.bytes_declared = tensor.bytes_sent
        inputs.append(tensor)
    if (binary is not None and header is not _NO_JSON and used != binary_size and len(inputs_raw) <= MAX_LIST
            and message.complete):  # a body the capture cut short is not a size lie
        report("triton_binary_size_mismatch", f"inputs claim {used} binary bytes, {binary_size} follow the "
                                              f"JSON header")
    outputs = header.get("outputs")
    names = []
    if isinstance(outputs, list):
        for output in outputs[:MAX_LIST]:
            name = output.get("name") if isinstance(output, dict) else None
            if isinstance(name, str):
                names.append(cut(name))
    obj["outputs"] = names
    return inputs


def _request_common(body: dict[str, Any], obj: dict[str, Any]) -> None:
    request_id = body.get("id")
    if isinstance(request_id, str | int) and not isinstance(request_id, bool) and request_id != "":
        obj["id"] = cut(str(request_id))
    parameters = body.get("parameters")
    if isinstance(parameters, dict) and parameters:
        obj["parameters"], obj["parameter_names"] = parameters_object(parameters.items())


def _generate_request(message: HttpMessage, obj: dict[str, Any], report: AnomalyOnce) -> None:
    body = _body_json(message, report, "generate request")
    if not isinstance(body, dict):
        if body is not _NO_JSON:
            report("triton_request_invalid", "generate request is not a JSON object")
        return
    _request_common(body, obj)
    text = body.get("text_input")
    if isinstance(text, str):
        obj["text_input_length"] = len(text)


# --- management ------------------------------------------------------------------------------


def _settings_request(message: HttpMessage, obj: dict[str, Any], api: str, report: AnomalyOnce) -> None:
    body = _body_json(message, report, f"{api} request")
    if body is _NO_JSON:
        return
    if not isinstance(body, dict):
        report("triton_request_invalid", f"{api} request is not a JSON object")
        return
    if not body:
        return
    if api == "log_settings":
        obj["log_settings"], obj["setting_names"] = log_settings_object(body.items())
    else:
        obj["trace_settings"], obj["setting_names"] = trace_settings_object(body.items())


def _repository_request(message: HttpMessage, route: Route, obj: dict[str, Any], report: AnomalyOnce) -> None:
    repository = RepositoryRequest()
    repository.name = route.repository
    names: list[tuple[str, Any]] = []
    if message.body_truncated and route.api == "model_load":
        _scan_cut_load_body(message, repository, names, report)
    else:
        body = _body_json(message, report, f"{route.api} request")
        if isinstance(body, dict):
            if route.api == "repository_index":
                ready = body.get("ready")
                repository.ready = ready if isinstance(ready, bool) else None
            parameters = body.get("parameters")
            if isinstance(parameters, dict):
                for key, value in parameters.items():
                    _load_parameter(repository, names, key, value, report)
        elif body is not _NO_JSON:
            report("triton_request_invalid", f"{route.api} request is not a JSON object")
    if route.api == "repository_index" and repository.ready is None:
        repository.ready = False
    if names:
        obj["parameters"], obj["parameter_names"] = parameters_object(names)
    obj["repository"] = repository.as_record()


def _load_parameter(repository: RepositoryRequest, names: list[tuple[str, Any]], key: str, value: Any,
                    report: AnomalyOnce) -> None:
    if key.startswith(FILE_OVERRIDE_PREFIX):
        size = base64_decoded_size(value) if isinstance(value, str) else None
        if size is None:
            report("triton_base64_invalid", f"file override {cut(key)!r} is not base64 text")
            size = len(value) * 3 // 4 if isinstance(value, str) else 0
        repository.add_file(key, size)
        return
    if key == "config" and isinstance(value, str):
        repository.add_config(value, len(value.encode("utf-8", "surrogatepass")))
        names.append((key, f"<{repository.config_bytes} bytes>"))
        return
    if key == "unload_dependents" and isinstance(value, bool):
        repository.unload_dependents = value
    names.append((key, value))


def _scan_cut_load_body(message: HttpMessage, repository: RepositoryRequest, names: list[tuple[str, Any]],
                        report: AnomalyOnce) -> None:
    """A load body longer than the keep cap: list the file overrides and config seen in the prefix."""
    report("triton_body_not_inspected", f"model_load request: body of {message.body_length} bytes is longer "
                                        f"than the {len(message.body)} bytes kept; overrides listed from the prefix")
    for found in _FILE_KEY.finditer(message.body):
        key = found.group(1).decode("utf-8", "replace")
        encoded = len(found.group(2)) - found.group(2).count(b"\\n") * 2
        repository.add_file(key, encoded * 3 // 4)
    if _CONFIG_KEY.search(message.body):
        repository.add_config(None, 0)
        names.append(("config", None))


def _shm_request(message: HttpMessage, route: Route, obj: dict[str, Any], report: AnomalyOnce) -> None:
    shm: dict[str, Any] = {}
    if route.region is not None:
        shm["name"] = route.region
    if route.api in ("shm_register", "cuda_shm_register"):
        body = _body_json(message, report, f"{route.api} request")
        if isinstance(body, dict):
            if route.api == "shm_register":
                key = body.get("key")
                shm["key"] = cut(key, MAX_TEXT) if isinstance(key, str) else None
                shm["offset"] = _register_number(body, "offset", report)
            else:
                handle = body.get("raw_handle")
                b64 = handle.get("b64") if isinstance(handle, dict) else None
                shm["raw_handle_bytes"] = base64_decoded_size(b64) if isinstance(b64, str) else None
                shm["device_id"] = _register_number(body, "device_id", report, unsigned=False)
            shm["byte_size"] = _register_number(body, "byte_size", report)
        elif body is not _NO_JSON:
            report("triton_request_invalid", f"{route.api} request is not a JSON object")
    if shm:
        obj["shm"] = shm


def _register_number(body: dict[str, Any], key: str, report: AnomalyOnce, *, unsigned: bool = True) -> int | None:
    value = body.get(key)
    if value is None:
        return 0 if key == "offset" else None
    number = _int(value)
    if number is None:
        report("triton_request_invalid", f"shared-memory {key} is not an integer: {cut(str(value), 64)!r}")
        return None
    return unsigned64(number) if unsigned else number


# --- responses -------------------------------------------------------------------------------


def _response(route: Route, response: HttpMessage, obj: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if route.operation == "ServerLive":
        result["live"] = response.status == 200
    elif route.api == "health":
        result["ready"] = response.status == 200
    if route.operation == "GenerateStream" and response.status == 200:
        body = response.body
        obj["stream_responses"] = body.count(b"\ndata:") + body.startswith(b"data:")
        return result
    if not response.body or (response.status < 400 and route.api != "infer"):
        return result
    has_binary_header = response.header("inference-header-content-length") is not None
    if len(response.body) > RESPONSE_JSON_MAX and not has_binary_header:
        return result
    quiet = _Silent()  # a server's odd response is not the client's anomaly
    if route.api == "infer" and response.status < 400:
        binary = _binary_split(response, quiet, "infer response")
        if binary is not None and binary[1] > RESPONSE_JSON_MAX:
            return result
        body = _body_json(response, quiet, "infer response") if binary is None else binary[0]
    elif response.body_truncated:
        return result
    else:
        body = _json(response.body, quiet, "response")
    if not isinstance(body, dict):
        return result
    error = body.get("error")
    if isinstance(error, str):
        obj["error"] = cut(error, MAX_TEXT)
    outputs = body.get("outputs")
    if route.api == "infer" and isinstance(outputs, list):
        result["outputs"] = [_output(o) for o in outputs[:MAX_LIST] if isinstance(o, dict)]
    return result


def _output(output: dict[str, Any]) -> dict[str, Any]:
    name, datatype, shape = output.get("name"), output.get("datatype"), output.get("shape")
    return {"name": cut(name) if isinstance(name, str) else None,
            "datatype": cut(datatype, 32) if isinstance(datatype, str) else None,
            "shape": [d for d in shape[:MAX_DIMS] if isinstance(d, int) and not isinstance(d, bool)]
            if isinstance(shape, list) else []}


class _Silent:
    """An anomaly sink for bodies we only glance at (error JSON of any response)."""

    def __call__(self, event: str, message: str) -> None:
        return None


# --- the call --------------------------------------------------------------------------------


def rest_call(exchange: HttpExchange, route: Route, report: AnomalyOnce) -> tuple[dict[str, Any], list[TensorInput]]:
    """`(triton object, inputs)` of a KServe v2 REST exchange whose path matched `route`."""
    obj: dict[str, Any] = {"api": route.api, "operation": route.operation, "transport": "rest",
                           "stream": route.operation == "GenerateStream"}
    if route.model is not None:
        obj["model"] = route.model
    if route.version is not None:
        obj["version"] = route.version
    inputs: list[TensorInput] = []
    request = exchange.request
    if request is not None and request.method not in ("GET", "HEAD"):
        api = route.api
        if api == "infer":
            inputs = _infer_request(request, obj, report)
        elif api == "generate":
            _generate_request(request, obj, report)
        elif api in ("log_settings", "trace_settings"):
            _settings_request(request, obj, api, report)
        elif api in ("model_load", "model_unload", "repository_index"):
            _repository_request(request, route, obj, report)
        elif api.endswith(("shm_register", "shm_unregister", "shm_status")):
            _shm_request(request, route, obj, report)
    elif route.api.endswith(("shm_unregister", "shm_status")) and route.region is not None:
        obj["shm"] = {"name": route.region}
    response = exchange.response
    if response is not None:
        result = _response(route, response, obj)
        if result:
            obj["response"] = result
    return obj, inputs
