"""The `torchserve` layer: TorchServe's management (8081) and inference (8080) APIs, REST and gRPC.

REST, claimed by path, as sent or else as Netty routes it (:func:`inspector.protocols.webapi.routing_path`:
percent-decoded, `%2F` too; kept in `torchserve.routed_path` when the path as sent does
not route; an encoded unreserved character raises the anomaly `torchserve_path_obfuscated`):

    POST   /models?url=&model_name=&initial_workers=&synchronous=&handler=&runtime=&batch_size=   register_model
    GET    /models                                   list_models
    GET    /models/{name}[/{version}]                describe_model
    PUT    /models/{name}[/{version}]?min_worker=&max_worker=&number_gpu=   scale_workers
    PUT    /models/{name}/{version}/set-default      set_default
    DELETE /models/{name}[/{version}]                unregister_model
    POST   /workflows?url=&workflow_name=            register_workflow
    GET    /workflows[/{name}], DELETE /workflows/{name}   list / describe / unregister_workflow
    POST   /predictions/{model}[/{version}]          predict
    POST   /explanations/{model}[/{version}]         explain
    POST   /wfpredict/{workflow}                     workflow_predict
    GET    /ping                                     ping
    GET    /api-description, OPTIONS /               api_description

Read-only calls on common paths (`GET /ping`, `/models`, `/workflows`) are claimed only when the
answer is shaped like TorchServe's (`{"status": ...}`, `{"models": [...]}`, `[{"modelName": ...}]`);
every call that changes the server is claimed by its path alone.

gRPC, claimed by path: `org.pytorch.serve.grpc.management.ManagementAPIsService/*` and
`org.pytorch.serve.grpc.inference.InferenceAPIsService/*`; the request message is decoded with the
field numbers of TorchServe's `management.proto` / `inference.proto` (RegisterModelRequest url=9,
model_name=5, initial_workers=3, synchronous=8, handler=2, runtime=7; ScaleWorkerRequest
max_worker=3, min_worker=4; the others model_name=1, model_version=2).

ShellTorch (CVE-2023-43654) registers a model or workflow archive from an attacker's URL:
`torchserve.url` holds it as sent (user-info passwords and secret query values redacted, e.g. a
presigned S3 URL's signature), with `url_scheme` and `url_host` split out for rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from inspector.fields import declare
from inspector.protocols import webapi
from inspector.protocols.grpc import OBSERVATION_REQUEST, GrpcFramer
from inspector.protocols.protobuf import WIRE_LEN, WIRE_VARINT, ProtobufError, iter_fields
from inspector.protocols.webapi import boolean, integer, prune, redact_inner_url, text, url_parts

LAYER = "torchserve"

NAME_CHARS = 256
URL_CHARS = 2048
MESSAGE_CHARS = 1024

_MODELS = re.compile(r"/models(?:/([^/]+)(?:/([^/]+))?)?(/set-default)?/?")
_WORKFLOWS = re.compile(r"/workflows(?:/([^/]+))?/?")
_INFERENCE = re.compile(r"/(predictions|explanations|wfpredict)/([^/]+)(?:/([^/]+))?/?")
_PREFIXES = ("/models", "/workflows", "/predictions/", "/explanations/", "/wfpredict/", "/api-description", "/ping")
_MANAGEMENT_SERVICE = "org.pytorch.serve.grpc.management.ManagementAPIsService"
_INFERENCE_SERVICE = "org.pytorch.serve.grpc.inference.InferenceAPIsService"
_GRPC_APIS = {
    "RegisterModel": "register_model", "UnregisterModel": "unregister_model", "ScaleWorker": "scale_workers",
    "SetDefault": "set_default", "ListModels": "list_models", "DescribeModel": "describe_model",
    "Ping": "ping", "Predictions": "predict", "StreamPredictions": "predict_stream",
    "StreamPredictions2": "predict_stream",
}
_MODEL_APIS = {"POST": "register_model", "GET": "describe_model", "PUT": "scale_workers",
               "DELETE": "unregister_model"}
_WORKFLOW_APIS = {"POST": "register_workflow", "GET": "describe_workflow", "DELETE": "unregister_workflow"}
_INFERENCE_APIS = {"predictions": "predict", "explanations": "explain", "wfpredict": "workflow_predict"}
#: Read-only calls on paths other APIs use too: claimed only when the answer is TorchServe's.
_ANSWER_DECIDES = frozenset({"ping", "list_models", "describe_model", "list_workflows", "describe_workflow"})
_QUERY_INTS = ("initial_workers", "batch_size", "max_batch_delay", "response_timeout", "min_worker",
               "max_worker", "number_gpu", "timeout")

#: gRPC request messages: field number -> (record key, kind). Kinds: str, int, bool, url.
_REGISTER_FIELDS = {1: ("batch_size", "int"), 2: ("handler", "str"), 3: ("initial_workers", "int"),
                    4: ("max_batch_delay", "int"), 5: ("model_name", "str"), 6: ("response_timeout", "int"),
                    7: ("runtime", "str"), 8: ("synchronous", "bool"), 9: ("url", "url")}
_SCALE_FIELDS = {1: ("model_name", "str"), 2: ("model_version", "str"), 3: ("max_worker", "int"),
                 4: ("min_worker", "int"), 5: ("number_gpu", "int"), 6: ("synchronous", "bool"),
                 7: ("timeout", "int")}
_NAME_FIELDS = {1: ("model_name", "str"), 2: ("model_version", "str")}


def _rest_route(method: str, path: str, unquote: Callable[[str], str]) -> tuple[str, dict[str, Any]] | None:
    if not path.startswith(_PREFIXES) and path != "/":
        return None
    match = _MODELS.fullmatch(path)
    if match is not None:
        name, version, set_default = match.groups()
        fields = prune({"model_name": unquote(name)[:NAME_CHARS] if name else None,
                        "model_version": unquote(version)[:NAME_CHARS] if version else None})
        if set_default:
            return ("set_default" if method == "PUT" else "models_other"), fields
        if name is None:
            return {"POST": "register_model", "GET": "list_models"}.get(method, "models_other"), fields
        if method == "POST":
            return "models_other", fields
        return _MODEL_APIS.get(method, "models_other"), fields
    match = _WORKFLOWS.fullmatch(path)
    if match is not None:
        name = match.group(1)
        fields = {"workflow_name": unquote(name)[:NAME_CHARS]} if name else {}
        if name is None:
            return {"POST": "register_workflow", "GET": "list_workflows"}.get(method, "workflows_other"), fields
        return _WORKFLOW_APIS.get(method, "workflows_other") if method != "POST" else "workflows_other", fields
    match = _INFERENCE.fullmatch(path)
    if match is not None and method == "POST":
        kind, name, version = match.groups()
        key = "workflow_name" if kind == "wfpredict" else "model_name"
        fields = {key: unquote(name)[:NAME_CHARS]}
        if version:
            fields["model_version"] = unquote(version)[:NAME_CHARS]
        return _INFERENCE_APIS[kind], fields
    if path == "/api-description" or (path == "/" and method == "OPTIONS"):
        return "api_description", {}
    if path == "/ping" and method == "GET":
        return "ping", {}
    return None


def _url_fields(url: str, obj: dict[str, Any]) -> None:
    obj["url"] = redact_inner_url(url[:URL_CHARS])
    scheme, host = url_parts(url)
    obj["url_scheme"] = scheme
    obj["url_host"] = host


def _query_fields(target: str, obj: dict[str, Any]) -> None:
    params = webapi.query_params(target)
    if not params:
        return
    if "url" in params:
        _url_fields(params["url"], obj)
    for key in ("model_name", "workflow_name", "handler", "runtime"):
        if key in params and obj.get(key) is None:
            obj[key] = params[key][:NAME_CHARS]
    for key in _QUERY_INTS:
        if key in params:
            obj[key] = integer(params[key])
    if "synchronous" in params:
        obj["synchronous"] = boolean(params["synchronous"])


def _answer(ctx: Any, obj: dict[str, Any], report: webapi.Report) -> bool:
    """Read the JSON answer's status/message; True when it is shaped like TorchServe's."""
    response = ctx.exchange.response
    if response is None or not response.body or not webapi.looks_like_json(response):
        return False
    value = webapi.read_json(response, report, "torchserve_response", required=False)
    if isinstance(value, list):  # describe: [{"modelName": ...}] / [{"workflowName": ...}]
        return bool(value) and isinstance(value[0], dict) and ("modelName" in value[0] or "workflowName" in value[0])
    if not isinstance(value, dict):
        return False
    message = value.get("message") if response.status >= 400 else value.get("status")
    obj["message"] = text(message, MESSAGE_CHARS)
    return any(key in value for key in ("status", "code", "models", "workflows"))


def _grpc(ctx: Any, method: str | None) -> dict[str, Any]:
    api = _GRPC_APIS.get(method or "", "other")
    obj: dict[str, Any] = {"api": api, "transport": "grpc"}
    framer = ctx.exchange.observations.get(OBSERVATION_REQUEST)
    if not isinstance(framer, GrpcFramer) or not framer.messages or not framer.messages[0].inspectable:
        return obj
    message = framer.messages[0]
    table = {"register_model": _REGISTER_FIELDS, "scale_workers": _SCALE_FIELDS}.get(api, _NAME_FIELDS)
    try:
        for number, wire, value in iter_fields(message.payload):
            spec = table.get(number)
            if spec is None:
                continue
            key, kind = spec
            if kind in ("str", "url") and wire == WIRE_LEN and isinstance(value, bytes):
                decoded = value.decode("utf-8", "replace")
                if kind == "url":
                    _url_fields(decoded, obj)
                else:
                    obj[key] = decoded[:NAME_CHARS]
            elif kind in ("int", "bool") and wire == WIRE_VARINT and isinstance(value, int):
                obj[key] = bool(value) if kind == "bool" else (value - (1 << 64) if value >= 1 << 63 else value)
    except ProtobufError as exc:
        if not message.payload_truncated:
            ctx.anomaly("torchserve_protobuf_error", f"{method} request does not decode: {exc}")
    return obj


def build(ctx: Any) -> dict[str, Any] | None:
    """The `torchserve` object of an exchange, or None when it is not a TorchServe call."""
    request = ctx.exchange.request
    if request is None or "s3" in ctx.record:  # an S3 call whatever its path (bucket `models`, ...)
        return None
    grpc = ctx.record.get("grpc")
    if isinstance(grpc, dict):
        if grpc.get("service") not in (_MANAGEMENT_SERVICE, _INFERENCE_SERVICE):
            return None
        return prune(_grpc(ctx, grpc.get("method")))
    method = request.method
    route, routed, hidden = webapi.route_request(ctx, lambda path, unquote: _rest_route(method, path, unquote))
    if route is None:
        return None
    api, fields = route
    obj: dict[str, Any] = {"api": api, "transport": "rest", **fields}
    if api in ("register_model", "register_workflow", "scale_workers", "unregister_model", "set_default",
               "describe_model"):
        _query_fields(request.path, obj)
    if api == "register_model" and "url" not in obj:  # some front ends post the parameters as JSON
        body = webapi.read_json(request, ctx.anomaly, "torchserve_request", required=False)
        if isinstance(body, dict) and isinstance(body.get("url"), str):
            _url_fields(body["url"], obj)
            obj["model_name"] = obj.get("model_name") or text(body.get("model_name"), NAME_CHARS)
    torchserve_answer = False
    deferred = webapi.DeferredReport()
    if api not in ("predict", "explain", "workflow_predict"):  # inference answers are the model's output
        torchserve_answer = _answer(ctx, obj, deferred)
    if api in _ANSWER_DECIDES and not torchserve_answer:  # read-only calls on common paths
        return None
    deferred.flush(ctx.anomaly)
    webapi.note_routing(ctx, LAYER, obj, routed, hidden)
    return prune(obj)


declare(LAYER, [
    ("torchserve.api", "string", "Operation: register_model, list_models, describe_model, scale_workers, "
     "set_default, unregister_model, register_workflow, list_workflows, describe_workflow, unregister_workflow, "
     "predict, predict_stream, explain, workflow_predict, ping, api_description, ..."),
    ("torchserve.transport", "string", "rest or grpc."),
    ("torchserve.routed_path", "string", "REST: the path percent-decoded, present only "
     "when the path as sent (http.url) does not route."),
    ("torchserve.model_name", "string", "Model name (path, query or gRPC request)."),
    ("torchserve.model_version", "string", "Model version."),
    ("torchserve.workflow_name", "string", "Workflow name."),
    ("torchserve.url", "string", "Model/workflow archive URL to register (ShellTorch), secrets redacted."),
    ("torchserve.url_scheme", "string", "Scheme of torchserve.url: http, https, file, s3, ... (lower-case)."),
    ("torchserve.url_host", "string", "Host of torchserve.url (lower-case), when it has one."),
    ("torchserve.handler", "string", "Handler override of a registration."),
    ("torchserve.runtime", "string", "Runtime override of a registration."),
    ("torchserve.initial_workers", "integer", "initial_workers of a registration."),
    ("torchserve.synchronous", "boolean", "synchronous flag."),
    ("torchserve.batch_size", "integer", "batch_size of a registration."),
    ("torchserve.max_batch_delay", "integer", "max_batch_delay of a registration."),
    ("torchserve.response_timeout", "integer", "response_timeout of a registration."),
    ("torchserve.min_worker", "integer", "min_worker of a scale call."),
    ("torchserve.max_worker", "integer", "max_worker of a scale call."),
    ("torchserve.number_gpu", "integer", "number_gpu of a scale call."),
    ("torchserve.timeout", "integer", "timeout of a scale/unregister call."),
    ("torchserve.message", "string", f"The answer's status text, or its error message (first {MESSAGE_CHARS} "
     "characters)."),
])
