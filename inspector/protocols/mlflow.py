"""The `mlflow` layer: the MLflow tracking server's REST API, artifact proxy and artifact downloads.

Claimed by the routed path (:func:`inspector.protocols.webapi.routing_path`: percent-decoded,
repeated slashes merged, as Werkzeug and Starlette route it), under any prefix (`mlflow server
--static-prefix /mlflow`, a reverse proxy's base path; kept in `mlflow.prefix`):

    /api/{v}/mlflow/{endpoint}               REST API (v: 2.0, 3.0), also /api/2.0/preview/mlflow/
    /ajax-api/{v}/mlflow/{endpoint}          the same API as the web UI calls it (`mlflow.ajax`: true)
    /api/{v}/mlflow-artifacts/artifacts[/{path}]   artifact proxy: endpoint "mlflow-artifacts/artifacts",
                                             `mlflow.path` the artifact path (also mpu/{create,complete,abort})
    /get-artifact?path=&run_uuid=            artifact download
    /model-versions/get-artifact?path=&name=&version=

When the path as sent, read literally, is not that route, the routed path is kept in
`mlflow.routed_path`; a path that
percent-encodes an unreserved character raises the anomaly `mlflow_path_obfuscated`.

`mlflow.endpoint` is the API path after the prefix, e.g. `registered-models/create`,
`model-versions/create`, `experiments/create`, `runs/create`, `artifacts/list`. Names and ids
come from the JSON body or the query string (GET endpoints): `name`, `version`, `source`,
`artifact_location`, `run_id` (`run_uuid`), `experiment_id`, `path`.

The MLflow path-traversal chain (CVE-2023-1177, -2780, -6909, -6977, CVE-2024-1594, -1483) plants
a `source` or `artifact_location` such as `//proc/self/root`, `file:///etc/`,
`http:///?/../../` or `http:///#/../../` and then downloads through `get-artifact`. The values are
kept raw (only URL user-info passwords and secret query values redacted), up to
:data:`VALUE_CHARS` characters, so rules match them with `|contains: '..'`, `|startswith: '//'`,
`|re:`. Error answers give `error_code` and `error`; `artifact_uri` is read from answers that
carry one (runs/create, get-download-uri).
"""

from __future__ import annotations

import re
from typing import Any

from inspector.fields import declare
from inspector.protocols import webapi
from inspector.protocols.webapi import prune, redact_inner_url, scalar_text, text

LAYER = "mlflow"

VALUE_CHARS = 2048
NAME_CHARS = 512
ERROR_CHARS = 1024

_API = re.compile(r"(.*?)/(ajax-)?api/(\d+\.\d+)/(?:preview/)?(mlflow|mlflow-artifacts)/(.*)")
_DOWNLOADS = re.compile(r"(.*?)/(model-versions/get-artifact|get-artifact)")
#: Body/query keys copied as they are, capped: (record key, source keys).
_VALUES = (
    ("name", ("name",)),
    ("version", ("version",)),
    ("run_id", ("run_id", "run_uuid")),
    ("experiment_id", ("experiment_id",)),
    ("key", ("key",)),
    ("new_name", ("new_name",)),
    ("stage", ("stage",)),
)
_URLS = ("source", "artifact_location", "run_link")


_Route = tuple[str, str | None, bool, str | None, str]


def _route(path: str, _unquote: Any = None) -> _Route | None:
    """(endpoint, artifact path, ajax, api version, static prefix) of a routed MLflow path, or None.

    Werkzeug decodes the whole path before routing: nothing is left to decode in a segment."""
    download = _DOWNLOADS.fullmatch(path)
    if download is not None:
        return download.group(2), None, False, None, download.group(1)
    if "api/" not in path:
        return None
    match = _API.fullmatch(path)
    if match is None:
        return None
    prefix, ajax, version, family, rest = match.groups()
    if family == "mlflow":
        return rest.strip("/")[:NAME_CHARS], None, bool(ajax), version, prefix
    head, _, artifact = rest.partition("/")
    if head == "artifacts":
        return "mlflow-artifacts/artifacts", artifact[:VALUE_CHARS] or None, bool(ajax), version, prefix
    if head == "mpu":  # multipart upload: mpu/{create,complete,abort}/<path>
        action, _, artifact = artifact.partition("/")
        return f"mlflow-artifacts/mpu/{action}"[:NAME_CHARS], artifact[:VALUE_CHARS] or None, bool(ajax), \
            version, prefix
    return f"mlflow-artifacts/{rest.strip('/')}"[:NAME_CHARS], None, bool(ajax), version, prefix


def _copy_values(source: dict[str, Any], obj: dict[str, Any]) -> None:
    for key, names in _VALUES:
        if obj.get(key) is None:
            obj[key] = scalar_text(webapi.first(source, names), NAME_CHARS)
    for key in _URLS:
        value = source.get(key)
        if isinstance(value, str) and obj.get(key) is None:
            obj[key] = redact_inner_url(value[:VALUE_CHARS])
    path = source.get("path")
    if isinstance(path, str) and obj.get("path") is None:
        obj["path"] = path[:VALUE_CHARS]


def _answer(ctx: Any, obj: dict[str, Any]) -> None:
    response = ctx.exchange.response
    if response is None or not response.body or not webapi.looks_like_json(response):
        return
    if obj["endpoint"] in ("get-artifact", "model-versions/get-artifact", "mlflow-artifacts/artifacts") \
            and response.status < 400:
        return  # the artifact itself, not an API answer
    value = webapi.read_json(response, ctx.anomaly, "mlflow_response", required=False)
    if not isinstance(value, dict):
        return
    obj["error_code"] = text(value.get("error_code"), NAME_CHARS)
    obj["error"] = text(value.get("message"), ERROR_CHARS) if response.status >= 400 else None
    uri = value.get("artifact_uri")
    run = value.get("run")
    if uri is None and isinstance(run, dict) and isinstance(run.get("info"), dict):
        uri = run["info"].get("artifact_uri")
        if obj.get("run_id") is None:
            obj["run_id"] = text(run["info"].get("run_id"), NAME_CHARS)
    if isinstance(uri, str):
        obj["artifact_uri"] = redact_inner_url(uri[:VALUE_CHARS])
    experiment_id = value.get("experiment_id")
    if obj.get("experiment_id") is None:
        obj["experiment_id"] = scalar_text(experiment_id, NAME_CHARS)


def _same_route(as_sent: _Route, routed: _Route) -> bool:
    """Whether the path as sent, read literally, names the route the server takes (endpoint and prefix)."""
    return as_sent[0] == routed[0] and as_sent[4] == routed[4]


def build(ctx: Any) -> dict[str, Any] | None:
    """The `mlflow` object of an exchange, or None when it is not an MLflow call."""
    request = ctx.exchange.request
    if request is None or "s3" in ctx.record:  # an S3 call whatever its path (bucket `models`, ...)
        return None
    route, routed, hidden = webapi.route_request(ctx, _route, merge_slashes=True, same=_same_route)
    if route is None:
        return None
    endpoint, artifact_path, ajax, version, prefix = route
    obj: dict[str, Any] = {"endpoint": endpoint, "ajax": ajax, "api_version": version, "path": artifact_path,
                           "prefix": prefix[:NAME_CHARS] or None}
    webapi.note_routing(ctx, LAYER, obj, routed, hidden)
    params = webapi.query_params(request.path)
    if params:
        _copy_values(params, obj)
    if request.method in ("POST", "PATCH", "PUT", "DELETE") and endpoint != "mlflow-artifacts/artifacts":
        body = webapi.read_json(request, ctx.anomaly, "mlflow_request", required=False)
        if isinstance(body, dict):
            _copy_values(body, obj)
    _answer(ctx, obj)
    return prune(obj)


declare(LAYER, [
    ("mlflow.endpoint", "string", "API path after the prefix: registered-models/create, model-versions/create, "
     "experiments/create, runs/create, artifacts/list, get-artifact, model-versions/get-artifact, "
     "mlflow-artifacts/artifacts, ..."),
    ("mlflow.prefix", "string", "Path before the API (`mlflow server --static-prefix`, a proxy's base path), "
     "when there is one: /mlflow."),
    ("mlflow.routed_path", "string", "The path the server routes (percent-decoded, repeated slashes merged), "
     "present only when the path as sent (http.url), read literally, is not this route."),
    ("mlflow.ajax", "boolean", "Called under /ajax-api/ (the web UI's prefix)."),
    ("mlflow.api_version", "string", "API version in the path: 2.0, 3.0."),
    ("mlflow.name", "string", "Registered model / experiment name."),
    ("mlflow.version", "string", "Model version."),
    ("mlflow.run_id", "string", "Run id (run_id or run_uuid; from runs/create answers too)."),
    ("mlflow.experiment_id", "string", "Experiment id."),
    ("mlflow.key", "string", "Metric/param/tag key."),
    ("mlflow.new_name", "string", "New name of a rename."),
    ("mlflow.stage", "string", "Stage of a transition-stage call."),
    ("mlflow.source", "string", f"model-versions/create `source`, raw (first {VALUE_CHARS} characters): "
     "`file:`, `//` or `..` mark the traversal CVEs."),
    ("mlflow.artifact_location", "string", "experiments/create `artifact_location`, raw."),
    ("mlflow.run_link", "string", "model-versions/create `run_link`."),
    ("mlflow.path", "string", "Artifact path: the `path` query/body value or the mlflow-artifacts path, "
     "percent-decoded."),
    ("mlflow.artifact_uri", "string", "artifact_uri in the answer (runs/create, get-download-uri)."),
    ("mlflow.error_code", "string", "error_code of an error answer (RESOURCE_DOES_NOT_EXIST, "
     "INVALID_PARAMETER_VALUE, ...)."),
    ("mlflow.error", "string", f"message of an error answer (first {ERROR_CHARS} characters)."),
])
