"""The `triton` layer: NVIDIA Triton / KServe v2 inference calls, over REST and over gRPC.

One record per call, `{"event_type": "triton", "http": {...}, "triton": {...}}` for REST and
with `"grpc": {...}` too for gRPC. `triton.api` names what the call does in one word for both
transports (:data:`APIS`), `triton.operation` the precise operation (the gRPC method name, or
its REST equivalent), and the rest of the object holds what rules need to express the known
attacks on these servers:

* tensor bombs: each input's declared element count and byte size against the bytes actually
  sent (`triton.inputs`, `triton.input_elements`, `triton.input_bytes_declared/_sent`);
* CVE-2024-0087 / CVE-2024-0100: `triton.log_settings.log_file`, `triton.trace_settings.trace_file`;
* CVE-2024-0088: `triton.shm.offset` / `byte_size` (exact integers, up to 2^64 - 1 and beyond);
* model loads carrying files: `triton.repository.file_overrides` (names and sizes, never content);
* management calls and per-model extraction rates: `triton.api`, `triton.model`.

Modules: triton_rest (routes, JSON and binary-extension bodies), triton_grpc (protobuf by
field number, no generated code), triton_tensors (declared vs sent accounting), triton_common
(caps, settings and repository summaries). Field reference: docs/protocols/triton.md.
"""

from __future__ import annotations

from typing import Any

from inspector import fields
from inspector.protocols.triton_common import MAX_LIST, MAX_NAME, MAX_TEXT, AnomalyOnce
from inspector.protocols.triton_grpc import SERVICE, grpc_call
from inspector.protocols.triton_rest import match_route, rest_call
from inspector.protocols.triton_tensors import TensorInput, input_totals

LAYER = "triton"

#: Every value `triton.api` takes.
APIS = (
    "health", "metadata", "infer", "generate", "config", "stats",
    "repository_index", "model_load", "model_unload", "log_settings", "trace_settings",
    "shm_status", "shm_register", "shm_unregister",
    "cuda_shm_status", "cuda_shm_register", "cuda_shm_unregister",
    "other",  # a GRPCInferenceService method this version does not know
)

#: Keys of the triton object, in record order (each is declared below).
_KEYS = (
    "api", "operation", "transport", "model", "version", "id", "stream", "parameters", "parameter_names",
    "binary_header_length", "input_count", "inputs", "input_elements", "input_bytes_declared",
    "input_bytes_sent", "outputs", "text_input_length", "log_settings", "trace_settings", "setting_names",
    "repository", "shm", "stream_messages", "stream_responses", "stream_models", "error", "response",
)


def build(ctx: Any) -> dict[str, Any] | None:
    """The layer interface of inspector.apps: the `triton` object, or None when not Triton."""
    exchange = ctx.exchange
    grpc = ctx.record.get("grpc")
    if grpc is not None:
        if grpc.get("service") != SERVICE:
            return None
        report = AnomalyOnce(ctx.anomaly)
        obj, inputs, unseen = grpc_call(exchange, grpc, report)
    else:
        request = exchange.request
        if request is None or not request.path.startswith("/v2"):
            return None
        route = match_route(request.path)
        if route is None:
            return None
        report = AnomalyOnce(ctx.anomaly)
        obj, inputs = rest_call(exchange, route, report)
        unseen = 0
    if obj["api"] == "infer" and (inputs or "input_count" in obj):
        # A request the capture cut short (a gap, a lost tail) is not a size lie: no anomaly.
        request = exchange.request
        _add_inputs(obj, inputs, unseen, report, complete=request is None or request.complete)
    return {key: obj[key] for key in _KEYS if key in obj and obj[key] != {}}


def _add_inputs(obj: dict[str, Any], inputs: list[TensorInput], unseen: int, report: AnomalyOnce,
                complete: bool = True) -> None:
    obj["inputs"] = [tensor.as_record() for tensor in inputs]
    obj.update(input_totals(inputs, unseen))
    for tensor in inputs if complete else ():
        if tensor.mismatched():
            sent = f"{tensor.bytes_sent} bytes"
            if tensor.elements_sent is not None:
                sent = f"{tensor.elements_sent} elements, {sent}"
            report("triton_tensor_size_mismatch",
                   f"input {tensor.name!r} ({tensor.datatype} {tensor.shape}) declares {tensor.elements} elements, "
                   f"{tensor.bytes_declared} bytes; the request carries {sent}")
            break


def _inputs_fields() -> list[tuple[str, str, str]]:
    return [
        ("triton.inputs", "list[object]", f"Input tensors of an inference request (first {MAX_LIST}; "
         "ModelStreamInfer: of every kept request message)."),
        ("triton.inputs.name", "list[string]", "Input tensor name."),
        ("triton.inputs.datatype", "list[string]", "Input datatype as sent: FP32, INT64, BYTES, ..."),
        ("triton.inputs.shape", "list[integer]", "Input shape as declared (dimensions of every input)."),
        ("triton.inputs.source", "list[string]",
         "Where the tensor's data was: json, binary (REST binary extension), raw (raw_input_contents), "
         "contents (typed gRPC contents), shared_memory, none."),
        ("triton.inputs.elements", "list[integer]",
         "Elements the shape declares (product of dimensions, saturating at 2^64-1; null if a dimension "
         "is negative)."),
        ("triton.inputs.bytes_declared", "list[integer]",
         "Bytes the declaration implies: element size x elements; BYTES: the sum its length prefixes claim."),
        ("triton.inputs.bytes_sent", "list[integer]", "Tensor bytes actually carried by the request."),
        ("triton.inputs.shm_region", "list[string]", "shared_memory_region input parameter."),
        ("triton.inputs.shm_offset", "list[integer]",
         "shared_memory_offset input parameter, as an unsigned 64-bit value (a negative int64 reads >= 2^63)."),
        ("triton.inputs.shm_byte_size", "list[integer]", "shared_memory_byte_size input parameter (unsigned)."),
    ]


fields.declare(LAYER, [
    ("triton.api", "string", "What the call does: " + ", ".join(APIS) + "."),
    ("triton.operation", "string",
     "The precise operation, named after the gRPC method (ServerLive, ModelInfer, ModelStreamInfer, "
     "RepositoryModelLoad, LogSettings, SystemSharedMemoryRegister, ...; REST only: Generate, GenerateStream)."),
    ("triton.transport", "string", "rest or grpc."),
    ("triton.model", "string", f"Model name (URL-decoded; ModelStreamInfer: of the first request). "
     f"At most {MAX_NAME} characters."),
    ("triton.version", "string", "Model version, when the call names one."),
    ("triton.id", "string", "Request id of an inference request."),
    ("triton.stream", "boolean", "True for ModelStreamInfer and generate_stream."),
    ("triton.parameters", "object", "Request parameters, key -> value (first 32; strings cut)."),
    ("triton.parameter_names", "list[string]",
     "Names of the request parameters (inference; repository load/unload except file: overrides)."),
    ("triton.binary_header_length", "integer",
     "Inference-Header-Content-Length of a binary-extension REST infer request (its JSON header size)."),
    ("triton.input_count", "integer", "Number of input tensors the request(s) listed."),
    *_inputs_fields(),
    ("triton.input_elements", "integer", "Largest element count any input declares."),
    ("triton.input_bytes_declared", "integer", "Sum of the inputs' declared byte sizes (where known)."),
    ("triton.input_bytes_sent", "integer",
     "Tensor bytes the request carried in total (gRPC messages past the kept prefix count in full)."),
    ("triton.outputs", "list[string]", "Names of the outputs the request asks for."),
    ("triton.text_input_length", "integer", "Characters of text_input in a generate request."),
    ("triton.log_settings", "object", "Log settings the request changes (absent for a read)."),
    ("triton.log_settings.log_file", "string", "New log file path (CVE-2024-0087); null: reset."),
    ("triton.log_settings.log_info", "boolean", "log_info as sent."),
    ("triton.log_settings.log_warnings", "boolean", "log_warnings as sent."),
    ("triton.log_settings.log_errors", "boolean", "log_errors as sent."),
    ("triton.log_settings.log_verbose_level", "integer", "log_verbose_level as sent."),
    ("triton.log_settings.log_format", "string", "log_format as sent (default, ISO8601)."),
    ("triton.trace_settings", "object", "Trace settings the request changes, global or for triton.model."),
    ("triton.trace_settings.trace_file", "string", "New trace file path (CVE-2024-0100); null: cleared."),
    ("triton.trace_settings.trace_level", "list[string]", "trace_level values (OFF, TIMESTAMPS, TENSORS)."),
    ("triton.trace_settings.trace_rate", "string", "trace_rate as sent."),
    ("triton.trace_settings.trace_count", "string", "trace_count as sent."),
    ("triton.trace_settings.log_frequency", "string", "log_frequency as sent."),
    ("triton.trace_settings.trace_mode", "string", "trace_mode as sent (triton, opentelemetry)."),
    ("triton.trace_settings.trace_config", "list[string]", "trace_config values as sent."),
    ("triton.setting_names", "list[string]", "Every setting name a log/trace settings request sends."),
    ("triton.repository", "object", "Model repository request (index, load, unload)."),
    ("triton.repository.name", "string", "Repository name, when the request names one."),
    ("triton.repository.file_overrides", "list[string]",
     f"Paths of the file: overrides of a model load, without the prefix (e.g. 1/model.py; first {MAX_LIST})."),
    ("triton.repository.file_override_count", "integer", "Number of file: overrides."),
    ("triton.repository.file_override_bytes", "integer", "Total decoded size of the file: overrides."),
    ("triton.repository.config", "object", "The config parameter of a model load."),
    ("triton.repository.config.bytes", "integer", "Size of the config JSON text."),
    ("triton.repository.config.backend", "string", "backend named by the config (python, onnxruntime, ...)."),
    ("triton.repository.config.platform", "string", "platform named by the config."),
    ("triton.repository.unload_dependents", "boolean", "unload_dependents of a model unload."),
    ("triton.repository.ready", "boolean", "ready flag of a repository index request."),
    ("triton.shm", "object", "Shared-memory region request (register, unregister, status)."),
    ("triton.shm.name", "string", "Region name."),
    ("triton.shm.key", "string", f"System shared-memory key (at most {MAX_TEXT} characters)."),
    ("triton.shm.offset", "integer",
     "Offset into the shared-memory object, exact and unsigned (CVE-2024-0088: >= 2^63 or > byte_size)."),
    ("triton.shm.byte_size", "integer", "Region size in bytes, exact and unsigned."),
    ("triton.shm.device_id", "integer", "CUDA device of a CUDA region."),
    ("triton.shm.raw_handle_bytes", "integer", "Size of a CUDA IPC handle (its content is not logged)."),
    ("triton.stream_messages", "integer", "Request messages on a ModelStreamInfer stream."),
    ("triton.stream_responses", "integer", "Response messages on a ModelStreamInfer stream, or SSE events of "
     "generate_stream."),
    ("triton.stream_models", "list[string]", "Distinct models the kept ModelStreamInfer requests name."),
    ("triton.error", "string", f"Error the server returned (REST error JSON, grpc-message, stream "
     f"error_message; at most {MAX_TEXT} characters)."),
    ("triton.response", "object", "What the response says."),
    ("triton.response.outputs", "list[object]", "Output tensors of an inference response {name, datatype, shape}."),
    ("triton.response.outputs.name", "list[string]", "Output tensor name."),
    ("triton.response.outputs.datatype", "list[string]", "Output datatype."),
    ("triton.response.outputs.shape", "list[integer]", "Output shape."),
    ("triton.response.live", "boolean", "ServerLive answer."),
    ("triton.response.ready", "boolean", "ServerReady / ModelReady answer."),
    ("triton.response.stream_errors", "integer", "ModelStreamInfer responses carrying an error_message."),
])
