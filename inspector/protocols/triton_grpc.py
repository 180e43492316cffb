"""The gRPC half of the `triton` layer: `inference.GRPCInferenceService` messages, by field number.

The gRPC layer has already framed the request and response bodies (`exchange.observations`
holds a GrpcFramer per direction, payloads decompressed and kept up to
`Limits.grpc_keep_message_bytes`). Here each kept message is decoded with the field numbers of
Triton's `grpc_service.proto`, read without generated modules (see inspector.protocols.protobuf).

A kept payload can end inside a field when the message was longer than the keep cap (a large
`raw_input_contents`): `triton_wire.read_fields` then returns the partial last field with the length
its header declared, so names, shapes and parameters (which come first on the wire) are still
read, and a tensor's size is known even when its bytes are not kept. A payload that ends early
when it was *not* cut by us is malformed: `triton_protobuf_invalid`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from inspector.http import HttpExchange
from inspector.limits import DEFAULT_LIMITS, Limits
from inspector.protocols.grpc import OBSERVATION_REQUEST, OBSERVATION_RESPONSE, GrpcFramer, GrpcMessage
from inspector.protocols.protobuf import WIRE_FIXED64, WIRE_LEN, WIRE_VARINT, ProtobufError, read_varint
from inspector.protocols.triton_common import (
    FILE_OVERRIDE_PREFIX,
    MAX_LIST,
    MAX_STREAM_MODELS,
    MAX_TEXT,
    AnomalyOnce,
    RepositoryRequest,
    log_settings_object,
    parameters_object,
    pb_text,
    trace_settings_object,
)
from inspector.protocols.triton_tensors import (
    BYTES,
    DATATYPE_SIZES,
    MAX_DIMS,
    TensorInput,
    unsigned64,
)
from inspector.protocols.triton_wire import (
    Field,
    Fields,
    first,
    map_entries,
    read_fields,
    signed64,
    text_of,
    varint_of,
)

SERVICE = "inference.GRPCInferenceService"

#: gRPC method -> triton.api.
METHOD_APIS: dict[str, str] = {
    "ServerLive": "health", "ServerReady": "health", "ModelReady": "health",
    "ServerMetadata": "metadata", "ModelMetadata": "metadata",
    "ModelInfer": "infer", "ModelStreamInfer": "infer",
    "ModelConfig": "config", "ModelStatistics": "stats",
    "RepositoryIndex": "repository_index", "RepositoryModelLoad": "model_load",
    "RepositoryModelUnload": "model_unload",
    "SystemSharedMemoryStatus": "shm_status", "SystemSharedMemoryRegister": "shm_register",
    "SystemSharedMemoryUnregister": "shm_unregister",
    "CudaSharedMemoryStatus": "cuda_shm_status", "CudaSharedMemoryRegister": "cuda_shm_register",
    "CudaSharedMemoryUnregister": "cuda_shm_unregister",
    "TraceSetting": "trace_settings", "LogSettings": "log_settings",
}

#: Methods whose request is `{name = 1, version = 2}`.
_NAME_VERSION_METHODS = frozenset({"ModelReady", "ModelMetadata", "ModelConfig", "ModelStatistics"})

_HIGH_BYTES = bytes(range(0x80, 0x100))
_DOUBLE = struct.Struct("<d")


def _infer_parameter(value: list[Field]) -> Any:
    """InferParameter {bool 1, int64 2, string 3, double 4, uint64 5} as a Python value."""
    for sub in value:
        if sub.number == 1 and sub.wire_type == WIRE_VARINT:
            return bool(sub.value)
        if sub.number == 2 and sub.wire_type == WIRE_VARINT:
            return signed64(sub.value)  # type: ignore[arg-type]
        if sub.number == 3 and sub.wire_type == WIRE_LEN:
            return pb_text(sub.value, MAX_TEXT)  # type: ignore[arg-type]
        if sub.number == 4 and sub.wire_type == WIRE_FIXED64:
            (number,) = _DOUBLE.unpack(sub.value.to_bytes(8, "little"))  # type: ignore[union-attr]
            return number if number == number and abs(number) != float("inf") else None
        if sub.number == 5 and sub.wire_type == WIRE_VARINT:
            return sub.value
    return None


def _decode(message: GrpcMessage, what: str, report: AnomalyOnce, limits: Limits) -> Fields | None:
    if not message.inspectable:
        return None
    parsed = read_fields(message.payload, partial_ok=message.payload_truncated,
                         max_fields=limits.max_protobuf_fields)
    if parsed.error:
        report("triton_protobuf_invalid", f"{what}: {parsed.error}")
    return parsed


# --- ModelInferRequest -----------------------------------------------------------------------


@dataclass(slots=True)
class InferRequest:
    """What one ModelInferRequest carries."""

    model: str | None = None
    version: str | None = None
    id: str | None = None
    parameters: list[tuple[str, Any]] = field(default_factory=list)
    inputs: list[TensorInput] = field(default_factory=list)
    input_count: int = 0
    outputs: list[str] = field(default_factory=list)
    #: Tensor bytes sent past the kept prefix that no input could be given.
    unseen_bytes: int = 0


def _shape(f: Field, shape: list[int], report: AnomalyOnce) -> None:
    if f.wire_type == WIRE_VARINT:
        shape.append(signed64(f.value))  # type: ignore[arg-type]
        return
    data: bytes = f.value  # type: ignore[assignment]
    if data and max(data) < 0x80:  # every dimension a one-byte varint (0..127): the bytes are the values
        room = MAX_DIMS + 1 - len(shape)  # one past the cap, as the loop below reads: the excess is reported
        if room > 0:
            shape.extend(data[:room])
        return
    pos = 0
    try:
        while pos < len(data) and len(shape) <= MAX_DIMS:
            value, pos = read_varint(data, pos)
            shape.append(signed64(value))
    except ProtobufError as exc:
        report("triton_protobuf_invalid", f"input shape: {exc}")


def _packed_count(f: Field, width: int) -> int:
    """Elements in a repeated numeric field (packed or not); `width` 0 for varints."""
    if f.wire_type != WIRE_LEN:
        return 1
    data: bytes = f.value  # type: ignore[assignment]
    if width:
        return len(data) // width
    return len(data.translate(None, _HIGH_BYTES))  # one final byte (< 0x80) per varint


#: InferTensorContents field -> element width on the wire (0: varint; -1: bytes element).
_CONTENTS_WIDTH = {1: 0, 2: 0, 3: 0, 4: 0, 5: 0, 6: 4, 7: 8, 8: -1}


def _contents(f: Field, tensor: TensorInput) -> None:
    """Count the elements of an InferTensorContents and the bytes they amount to."""
    tensor.source = "contents"
    if f.partial:
        return  # cut by the keep cap: its size is among the unseen bytes
    parsed = read_fields(f.value)  # type: ignore[arg-type]
    elements = 0
    byte_total = 0
    for sub in parsed.fields:
        width = _CONTENTS_WIDTH.get(sub.number)
        if width is None:
            continue
        if width < 0:
            if sub.wire_type == WIRE_LEN:  # another wire type is an unknown field to protobuf, as to us
                elements += 1
                byte_total += 4 + len(sub.value)  # type: ignore[arg-type]
        else:
            elements += _packed_count(sub, width)
    tensor.elements_sent = elements
    if tensor.datatype == BYTES:
        tensor.bytes_sent = byte_total
        tensor.bytes_declared = byte_total
    else:
        size = DATATYPE_SIZES.get(tensor.datatype or "")
        tensor.bytes_sent = elements * size if size is not None else None


def _input_tensor(f: Field, report: AnomalyOnce) -> tuple[TensorInput, Field | None]:
    parsed = read_fields(f.value, partial_ok=f.partial)  # type: ignore[arg-type]
    if parsed.error:
        report("triton_protobuf_invalid", f"input tensor: {parsed.error}")
    tensor = TensorInput(name=None, datatype=None, shape=[])
    contents = None
    shape: list[int] = []
    for sub in parsed.fields:
        if sub.number == 1 and sub.wire_type == WIRE_LEN:
            tensor.name = pb_text(sub.value)  # type: ignore[arg-type]
        elif sub.number == 2 and sub.wire_type == WIRE_LEN:
            tensor.datatype = pb_text(sub.value, 32)  # type: ignore[arg-type]
        elif sub.number == 3 and sub.wire_type in (WIRE_LEN, WIRE_VARINT):
            _shape(sub, shape, report)
        elif sub.number == 4 and sub.wire_type == WIRE_LEN:
            for key, value in map_entries([sub], report, "input parameter"):
                _shm_parameter(tensor, key, _infer_parameter(value))
        elif sub.number == 5 and sub.wire_type == WIRE_LEN:
            contents = sub
    if len(shape) > MAX_DIMS:
        report("triton_shape_invalid", f"input {tensor.name!r}: more than {MAX_DIMS} dimensions")
        shape = shape[:MAX_DIMS]
    if any(d < 0 for d in shape):
        report("triton_shape_invalid", f"input {tensor.name!r}: negative dimension in {shape}")
    tensor.shape = shape
    tensor.declare()
    return tensor, contents


def _shm_parameter(tensor: TensorInput, key: str, value: Any) -> None:
    if key == "shared_memory_region" and isinstance(value, str):
        tensor.shm_region = value
    elif key == "shared_memory_offset" and isinstance(value, int) and not isinstance(value, bool):
        tensor.shm_offset = unsigned64(value)
    elif key == "shared_memory_byte_size" and isinstance(value, int) and not isinstance(value, bool):
        tensor.shm_byte_size = unsigned64(value)


def infer_request(message: GrpcMessage, report: AnomalyOnce, limits: Limits) -> InferRequest | None:
    """Decode a ModelInferRequest; None when its payload cannot be inspected (compressed)."""
    parsed = _decode(message, "ModelInferRequest", report, limits)
    if parsed is None:
        return None
    request = InferRequest()
    raw: list[Field] = []
    pending: list[tuple[TensorInput, Field | None]] = []
    for f in parsed.fields:
        number, wire_type = f.number, f.wire_type
        if wire_type != WIRE_LEN:
            continue
        if number == 1:
            request.model = pb_text(f.value)  # type: ignore[arg-type]
        elif number == 2:
            request.version = pb_text(f.value, 64)  # type: ignore[arg-type]
        elif number == 3:
            request.id = pb_text(f.value)  # type: ignore[arg-type]
        elif number == 4:
            for key, value in map_entries([f], report, "request parameter"):
                request.parameters.append((key, _infer_parameter(value)))
        elif number == 5:
            request.input_count += 1
            if len(pending) < MAX_LIST:
                pending.append(_input_tensor(f, report))
        elif number == 6:
            output = read_fields(f.value, partial_ok=f.partial)  # type: ignore[arg-type]
            name = text_of(output.fields, 1)
            if name is not None and len(request.outputs) < MAX_LIST:
                request.outputs.append(name)
        elif number == 7:
            raw.append(f)
    cut = message.payload_truncated and not message.compressed
    if cut and raw and raw[-1].partial:
        raw[-1] = _within_message(raw[-1], message.length - (parsed.end - raw[-1].length), report)
    whole = parsed.error is None and not message.payload_truncated and request.input_count == len(pending)
    _assign_data(request, pending, raw, report, complete=whole)
    if cut:
        request.unseen_bytes = max(0, message.length - parsed.end)
    return request


def _within_message(entry: Field, room: int, report: AnomalyOnce) -> Field:
    """A cut raw_input_contents entry, its declared length capped by what the gRPC message holds."""
    if entry.length <= room:
        return entry
    report("triton_protobuf_invalid", f"raw_input_contents declares {entry.length} bytes, the message has "
                                      f"{max(room, 0)} left")
    return entry._replace(length=max(room, len(entry.value)))  # type: ignore[arg-type]


def _assign_data(request: InferRequest, pending: list[tuple[TensorInput, Field | None]],
                 raw: list[Field], report: AnomalyOnce, *, complete: bool) -> None:
    """Give each input its data the way Triton does: shared memory, else contents, else the next
    raw_input_contents entry. Counts are only compared when the whole message was decoded."""
    index = 0
    missing = 0
    for tensor, contents in pending:
        if tensor.shm_region is not None:
            tensor.source = "shared_memory"
        elif contents is not None:
            _contents(contents, tensor)
        elif index < len(raw):
            entry = raw[index]
            index += 1
            tensor.source = "raw"
            tensor.take_data(entry.value, entry.length)  # type: ignore[arg-type]
        else:
            missing += 1
        request.inputs.append(tensor)
    cut_short = not complete or (bool(raw) and raw[-1].partial)
    if (missing and not cut_short) or (index < len(raw) and complete):
        report("triton_raw_input_count_mismatch",
               f"{len(raw)} raw_input_contents for {request.input_count} inputs "
               f"({missing} without data, {len(raw) - index} unused)")


# --- the request side of every method ---------------------------------------------------------


@dataclass(slots=True)
class GrpcCall:
    """The triton object of one gRPC call, assembled from its messages."""

    obj: dict[str, Any]
    inputs: list[TensorInput] = field(default_factory=list)
    unseen_bytes: int = 0


def _merge_infer(call: GrpcCall, request: InferRequest, models: list[str]) -> None:
    obj = call.obj
    if request.model is not None and request.model not in models and len(models) < MAX_STREAM_MODELS:
        models.append(request.model)
    if "model" not in obj and request.model is not None:
        obj["model"] = request.model
        if request.version:
            obj["version"] = request.version
    if "id" not in obj and request.id:
        obj["id"] = request.id
    if request.parameters and "parameters" not in obj:
        obj["parameters"], obj["parameter_names"] = parameters_object(request.parameters)
    room = MAX_LIST - len(call.inputs)
    call.inputs.extend(request.inputs[:max(room, 0)])
    obj["input_count"] = obj.get("input_count", 0) + request.input_count
    outputs = obj.setdefault("outputs", [])
    outputs.extend(request.outputs[:max(MAX_LIST - len(outputs), 0)])
    call.unseen_bytes += request.unseen_bytes


def request_side(method: str, messages: list[GrpcMessage], call: GrpcCall, report: AnomalyOnce,
                 limits: Limits) -> None:
    """Fill `call.obj` from the request messages of `method`."""
    obj = call.obj
    if method in ("ModelInfer", "ModelStreamInfer"):
        models: list[str] = []
        for message in messages:
            request = infer_request(message, report, limits)
            if request is not None:
                _merge_infer(call, request, models)
        if method == "ModelStreamInfer":
            obj["stream_models"] = models
        return
    if not messages:
        return
    parsed = _decode(messages[0], f"{method} request", report, limits)
    if parsed is None:
        return
    fields = parsed.fields
    if method in _NAME_VERSION_METHODS:
        _name_version(obj, fields)
    elif method in ("RepositoryModelLoad", "RepositoryModelUnload", "RepositoryIndex"):
        _repository(method, obj, fields, report)
    elif method == "LogSettings":
        items = [(key, _log_value(value)) for key, value in _settings(fields, report, "log setting")]
        if items:
            obj["log_settings"], obj["setting_names"] = log_settings_object(items)
    elif method == "TraceSetting":
        model = text_of(fields, 2)
        if model:
            obj["model"] = model
        items = [(key, _trace_value(value)) for key, value in _settings(fields, report, "trace setting")]
        if items:
            obj["trace_settings"], obj["setting_names"] = trace_settings_object(items)
    elif method.startswith(("SystemSharedMemory", "CudaSharedMemory")):
        _shared_memory(method, obj, fields)


def _name_version(obj: dict[str, Any], fields: list[Field]) -> None:
    name = text_of(fields, 1)
    version = text_of(fields, 2, 64)
    if name:
        obj["model"] = name
    if version:
        obj["version"] = version


def _settings(fields: list[Field], report: AnomalyOnce, what: str) -> list[tuple[str, list[Field]]]:
    entries = [f for f in fields if f.number == 1 and f.wire_type == WIRE_LEN]
    return map_entries(entries, report, what)


def _log_value(value: list[Field]) -> Any:
    """LogSettingsRequest.SettingValue {bool 1, uint32 2, string 3}; None when empty (a reset)."""
    for sub in value:
        if sub.number == 1 and sub.wire_type == WIRE_VARINT:
            return bool(sub.value)
        if sub.number == 2 and sub.wire_type == WIRE_VARINT:
            return sub.value
        if sub.number == 3 and sub.wire_type == WIRE_LEN:
            return pb_text(sub.value, MAX_TEXT)  # type: ignore[arg-type]
    return None


def _trace_value(value: list[Field]) -> list[str] | None:
    """TraceSettingRequest.SettingValue {repeated string value = 1}; None when empty."""
    values = [pb_text(sub.value, MAX_TEXT) for sub in value  # type: ignore[arg-type]
              if sub.number == 1 and sub.wire_type == WIRE_LEN]
    return values or None


def _repository(method: str, obj: dict[str, Any], fields: list[Field], report: AnomalyOnce) -> None:
    repository = RepositoryRequest()
    repository.name = text_of(fields, 1)
    if method == "RepositoryIndex":
        ready = varint_of(fields, 2)
        repository.ready = bool(ready) if ready is not None else False
        obj["repository"] = repository.as_record()
        return
    model = text_of(fields, 2)
    if model:
        obj["model"] = model
    entries = [f for f in fields if f.number == 3 and f.wire_type == WIRE_LEN]
    names: list[tuple[str, Any]] = []
    for key, value in map_entries(entries, report, "repository parameter"):
        _repository_parameter(repository, names, key, value)
    if names:
        obj["parameters"], obj["parameter_names"] = parameters_object(names)
    obj["repository"] = repository.as_record()


def _repository_parameter(repository: RepositoryRequest, names: list[tuple[str, Any]], key: str,
                          value: list[Field]) -> None:
    """ModelRepositoryParameter {bool 1, int64 2, string 3, bytes 4}."""
    for sub in value:
        if sub.number == 4 and sub.wire_type == WIRE_LEN:
            if key.startswith(FILE_OVERRIDE_PREFIX):
                repository.add_file(key, sub.length)
            else:
                names.append((key, f"<{sub.length} bytes>"))
            return
        if sub.number == 3 and sub.wire_type == WIRE_LEN:
            if key == "config":
                text = None if sub.partial else sub.value.decode("utf-8", "replace")  # type: ignore[union-attr]
                repository.add_config(text, sub.length)
                names.append((key, f"<{sub.length} bytes>"))
            elif key.startswith(FILE_OVERRIDE_PREFIX):
                repository.add_file(key, sub.length)
            else:
                names.append((key, pb_text(sub.value, MAX_TEXT)))  # type: ignore[arg-type]
            return
        if sub.number == 1 and sub.wire_type == WIRE_VARINT:
            if key == "unload_dependents":
                repository.unload_dependents = bool(sub.value)
            names.append((key, bool(sub.value)))
            return
        if sub.number == 2 and sub.wire_type == WIRE_VARINT:
            names.append((key, signed64(sub.value)))  # type: ignore[arg-type]
            return
    names.append((key, None))


def _shared_memory(method: str, obj: dict[str, Any], fields: list[Field]) -> None:
    shm: dict[str, Any] = {}
    name = text_of(fields, 1)
    if name is not None:
        shm["name"] = name
    if method == "SystemSharedMemoryRegister":
        key = text_of(fields, 2, MAX_TEXT)
        shm["key"] = key
        shm["offset"] = varint_of(fields, 3) or 0
        shm["byte_size"] = varint_of(fields, 4) or 0
    elif method == "CudaSharedMemoryRegister":
        handle = first(fields, 2, WIRE_LEN)
        shm["raw_handle_bytes"] = handle.length if handle is not None else 0
        shm["device_id"] = signed64(varint_of(fields, 3) or 0)
        shm["byte_size"] = varint_of(fields, 4) or 0
    if shm:
        obj["shm"] = shm


# --- responses -------------------------------------------------------------------------------


def _output_tensors(fields: list[Field], outputs: list[dict[str, Any]], report: AnomalyOnce) -> None:
    """InferOutputTensor {name 1, datatype 2, shape 3} of a ModelInferResponse (field 5)."""
    for f in fields:
        if f.number != 5 or f.wire_type != WIRE_LEN or len(outputs) >= MAX_LIST:
            continue
        parsed = read_fields(f.value, partial_ok=f.partial)  # type: ignore[arg-type]
        shape: list[int] = []
        for sub in parsed.fields:
            if sub.number == 3 and sub.wire_type in (WIRE_LEN, WIRE_VARINT):
                _shape(sub, shape, report)
        outputs.append({"name": text_of(parsed.fields, 1), "datatype": text_of(parsed.fields, 2, 32),
                        "shape": shape[:MAX_DIMS]})


def response_side(method: str, messages: list[GrpcMessage], count: int, call: GrpcCall,
                  report: AnomalyOnce, limits: Limits) -> dict[str, Any]:
    """The `triton.response` object; also sets `triton.error` from a stream's error messages."""
    response: dict[str, Any] = {}
    if method == "ModelStreamInfer":
        outputs: list[dict[str, Any]] = []
        errors = 0
        for message in messages:
            parsed = _decode(message, "ModelStreamInferResponse", report, limits)
            if parsed is None:
                continue
            error = text_of(parsed.fields, 1, MAX_TEXT)
            if error:
                errors += 1
                call.obj.setdefault("error", error)
            inner = first(parsed.fields, 2, WIRE_LEN)
            if inner is not None:
                nested = read_fields(inner.value, partial_ok=inner.partial)  # type: ignore[arg-type]
                _output_tensors(nested.fields, outputs, report)
        response["outputs"] = outputs
        response["stream_errors"] = errors
        call.obj["stream_responses"] = count
        return response
    if not messages:
        return response
    parsed = _decode(messages[0], f"{method} response", report, limits)
    if parsed is None:
        return response
    if method == "ModelInfer":
        outputs = []
        _output_tensors(parsed.fields, outputs, report)
        response["outputs"] = outputs
    elif method == "ServerLive":
        response["live"] = bool(varint_of(parsed.fields, 1))
    elif method in ("ServerReady", "ModelReady"):
        response["ready"] = bool(varint_of(parsed.fields, 1))
    return response


def grpc_call(exchange: HttpExchange, grpc: dict[str, Any], report: AnomalyOnce,
              limits: Limits = DEFAULT_LIMITS) -> tuple[dict[str, Any], list[TensorInput], int]:
    """`(triton object, inputs, unseen tensor bytes)` of a Triton gRPC exchange."""
    method = grpc.get("method") or ""
    call = GrpcCall({"api": METHOD_APIS.get(method, "other"), "operation": method, "transport": "grpc",
                     "stream": method == "ModelStreamInfer"})
    request_framer = exchange.observations.get(OBSERVATION_REQUEST)
    response_framer = exchange.observations.get(OBSERVATION_RESPONSE)
    if isinstance(request_framer, GrpcFramer):
        if method == "ModelStreamInfer":
            call.obj["stream_messages"] = request_framer.message_count
        request_side(method, request_framer.messages, call, report, limits)
    response: dict[str, Any] = {}
    if isinstance(response_framer, GrpcFramer):
        response = response_side(method, response_framer.messages, response_framer.message_count,
                                 call, report, limits)
    status = grpc.get("status")
    if status not in (None, 0) and "error" not in call.obj:
        call.obj["error"] = grpc.get("message") or grpc.get("status_name") or str(status)
    if response:
        call.obj["response"] = response
    return call.obj, call.inputs, call.unseen_bytes


__all__ = ["METHOD_APIS", "SERVICE", "grpc_call", "infer_request"]
