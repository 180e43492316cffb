"""The `ray` layer: the Ray dashboard's HTTP API (port 8265) and the job agent's.

Claimed by path, as sent or else as routed (:func:`inspector.protocols.webapi.routing_path`:
percent-decoded except `%2F`, as aiohttp routes; kept in `ray.routed_path` when the path as sent does
not route; an encoded unreserved character raises the anomaly `ray_path_obfuscated`). Routes from ray
`python/ray/dashboard/modules/job/job_head.py`, the reporter and state modules:

    POST   /api/jobs/                        job_submit      {entrypoint, submission_id, runtime_env, metadata, ...}
    GET    /api/jobs/                        job_list
    GET    /api/jobs/{id}                    job_info        (response: status)
    DELETE /api/jobs/{id}                    job_delete
    POST   /api/jobs/{id}/stop               job_stop
    GET    /api/jobs/{id}/logs[/tail]        job_logs, job_logs_tail (WebSocket)
    ...    /api/job_agent/jobs/...           the same, on a node's job agent (`ray.job_agent`: true)
    GET|PUT /api/packages/{protocol}/{name}  package_check, package_upload (working_dir uploads)
    GET|PUT|DELETE /api/serve/applications/  serve_status, serve_deploy (import paths), serve_delete
    GET    /worker/cpu_profile, /worker/traceback, /worker/gpu_profile, /memory_profile,
           /task/traceback, /task/cpu_profile          profiling; query values kept raw
    GET    /api/v0/{resource}[/...]          state_{resource} (logs: `filename` kept raw)
    GET    /api/version                      version, only when the answer names `ray_version`
                                             (Ollama has the same path)
    other  /api/{cluster_status, actors/kill, ray_config, gcs_healthz, component_activities,
           prometheus_health, grafana_health, data/..., train/..., snapshot, launch_profiling}

The job entrypoint is a shell command line run on the cluster (ShadowRay, CVE-2023-48022): it is
kept up to :data:`ENTRYPOINT_CHARS` characters with its full length beside it. Of `runtime_env`
only keys and names are kept: pip/conda package specs, `working_dir` and `py_modules` URIs
(user-info passwords and secret query values redacted), env var *names* (never their values).
The profiling parameters of CVE-2023-6019 (`format`, `pid`, `duration`, `native`, ...) are copied
raw (percent-decoded) so rules can match the backticks and `$(` of an injected command.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from inspector.fields import declare
from inspector.protocols import webapi
from inspector.protocols.webapi import integer, keys_list, prune, redact_inner_url, text, text_list

LAYER = "ray"

ENTRYPOINT_CHARS = 4096
LIST_ITEMS = 64
NAME_CHARS = 256
VALUE_CHARS = 1024

_JOBS = re.compile(r"/api/(job_agent/)?jobs(?:/([^/]*))?(?:/(stop|logs|logs/tail))?/?")
_PACKAGES = re.compile(r"/api/packages/([^/]+)/([^/]+)")
_STATE = re.compile(r"/api/v0/([a-z_]+)(?:/.*)?")
_PROFILING = {
    "/worker/cpu_profile": "cpu_profile",
    "/worker/traceback": "traceback",
    "/worker/gpu_profile": "gpu_profile",
    "/memory_profile": "memory_profile",
    "/worker/memory_profile": "memory_profile",
    "/task/traceback": "task_traceback",
    "/task/cpu_profile": "task_cpu_profile",
}
_PROFILE_PARAMS = ("pid", "ip", "node_id", "duration", "format", "native", "task_id", "attempt_number")
_OTHER_API = ("cluster_status", "actors", "ray_config", "gcs_healthz", "component_activities",
              "prometheus_health", "grafana_health", "data", "train", "snapshot", "launch_profiling",
              "local_raylet_healthz")
_JOB_APIS = {
    ("POST", ""): "job_submit", ("GET", ""): "job_list",
    ("GET", "id"): "job_info", ("DELETE", "id"): "job_delete",
    ("POST", "stop"): "job_stop", ("GET", "logs"): "job_logs", ("GET", "logs/tail"): "job_logs_tail",
}
_SERVE_APIS = {"GET": "serve_status", "PUT": "serve_deploy", "DELETE": "serve_delete"}
#: Endpoints whose JSON answer is read (ids, status, version).
_READ_ANSWER = frozenset({"job_submit", "job_info", "job_stop", "version"})


def _route(method: str, path: str, unquote: Callable[[str], str]) -> tuple[str, dict[str, Any]] | None:
    """(api, fields from the path) of a Ray dashboard request, or None; `unquote` decodes a path segment."""
    if path.startswith("/api/"):
        match = _JOBS.fullmatch(path)
        if match is not None:
            agent, job_id, action = match.groups()
            key = action or ("id" if job_id else "")
            api = _JOB_APIS.get((method, key), f"job_{method.lower()}")
            fields: dict[str, Any] = {"job_agent": bool(agent)}
            if job_id:
                fields["job_id"] = unquote(job_id)[:NAME_CHARS]
            return api, fields
        match = _PACKAGES.fullmatch(path)
        if match is not None:
            uri = f"{unquote(match.group(1))}://{unquote(match.group(2))}"
            return ("package_upload" if method == "PUT" else "package_check"), {"package_uri": uri[:VALUE_CHARS]}
        if path.rstrip("/") == "/api/serve/applications":
            return _SERVE_APIS.get(method, "serve_applications"), {}
        match = _STATE.fullmatch(path)
        if match is not None:
            return f"state_{match.group(1)}", {}
        if path == "/api/version":
            return "version", {}
        head = path[5:].split("/", 1)[0]
        if head in _OTHER_API:
            return path[5:].strip("/").replace("/", "_")[:NAME_CHARS], {}
        return None
    api = _PROFILING.get(path)
    return (api, {}) if api is not None else None


def _runtime_env(env: Any, obj: dict[str, Any]) -> None:
    if not isinstance(env, dict):
        return
    obj["runtime_env_keys"] = keys_list(env, LIST_ITEMS, NAME_CHARS)
    pip = env.get("pip")
    if isinstance(pip, dict):
        pip = pip.get("packages")
    packages = text_list(pip, LIST_ITEMS, NAME_CHARS) if isinstance(pip, list) else None
    if isinstance(pip, str):  # a requirements file path
        packages = [pip[:NAME_CHARS]]
    obj["pip"] = [redact_inner_url(p) for p in packages] if packages is not None else None
    conda = env.get("conda")
    if isinstance(conda, str):
        obj["conda"] = [conda[:NAME_CHARS]]
    elif isinstance(conda, dict):
        deps = conda.get("dependencies")
        names = []
        for dep in deps if isinstance(deps, list) else []:
            if isinstance(dep, str):
                names.append(dep[:NAME_CHARS])
            elif isinstance(dep, dict) and isinstance(dep.get("pip"), list):
                names.extend(f"pip:{p[:NAME_CHARS]}" for p in dep["pip"] if isinstance(p, str))
        obj["conda"] = [redact_inner_url(n) for n in names[:LIST_ITEMS]]
    working_dir = env.get("working_dir")
    if isinstance(working_dir, str):
        obj["working_dir"] = redact_inner_url(working_dir[:VALUE_CHARS])
    modules = text_list(env.get("py_modules"), LIST_ITEMS, VALUE_CHARS)
    if modules is not None:
        obj["py_modules"] = [redact_inner_url(m) for m in modules]
    obj["env_var_names"] = keys_list(env.get("env_vars"), LIST_ITEMS, NAME_CHARS)
    image = env.get("image_uri", env.get("container"))
    if isinstance(image, dict):
        image = image.get("image")
    obj["image_uri"] = text(image, VALUE_CHARS)


def _submit(body: dict[str, Any], obj: dict[str, Any]) -> None:
    entrypoint = body.get("entrypoint")
    if isinstance(entrypoint, str):
        obj["entrypoint"] = entrypoint[:ENTRYPOINT_CHARS]
        obj["entrypoint_length"] = len(entrypoint)
    obj["submission_id"] = text(body.get("submission_id"), NAME_CHARS)
    if obj.get("job_id") is None:
        obj["job_id"] = text(body.get("job_id"), NAME_CHARS)
    obj["metadata_keys"] = keys_list(body.get("metadata"), LIST_ITEMS, NAME_CHARS)
    _runtime_env(body.get("runtime_env"), obj)
    gpus = body.get("entrypoint_num_gpus")
    obj["entrypoint_num_gpus"] = gpus if isinstance(gpus, int | float) and not isinstance(gpus, bool) else None


def _serve_deploy(body: dict[str, Any], obj: dict[str, Any]) -> None:
    applications = body.get("applications")
    if not isinstance(applications, list):
        return
    names, imports = [], []
    merged_env: dict[str, Any] = {}
    for app in applications[:LIST_ITEMS]:
        if not isinstance(app, dict):
            continue
        if isinstance(app.get("name"), str):
            names.append(app["name"][:NAME_CHARS])
        if isinstance(app.get("import_path"), str):
            imports.append(app["import_path"][:VALUE_CHARS])
        if isinstance(app.get("runtime_env"), dict):
            merged_env.update(app["runtime_env"])
    obj["applications"] = names
    obj["import_paths"] = imports
    if merged_env:
        _runtime_env(merged_env, obj)


def build(ctx: Any) -> dict[str, Any] | None:
    """The `ray` object of an exchange, or None when it is not a Ray dashboard / job agent call."""
    request = ctx.exchange.request
    if request is None or "s3" in ctx.record:  # an S3 call whatever its path (bucket `models`, ...)
        return None
    method = request.method
    route, routed, hidden = webapi.route_request(ctx, lambda path, unquote: _route(method, path, unquote),
                                                 decode_slash=False)
    if route is None:
        return None
    api, obj = route
    response = ctx.exchange.response
    answer = None
    deferred = webapi.DeferredReport()
    if api in _READ_ANSWER and response is not None and response.body and webapi.looks_like_json(response):
        answer = webapi.read_json(response, deferred, "ray_response", required=False)
    if api == "version" and not (isinstance(answer, dict) and "ray_version" in answer):
        return None  # Ollama's /api/version, or an answer that does not say
    deferred.flush(ctx.anomaly)
    obj = {"api": api, **obj}
    webapi.note_routing(ctx, LAYER, obj, routed, hidden)
    if api in ("cpu_profile", "traceback", "gpu_profile", "memory_profile", "task_traceback",
               "task_cpu_profile") or api == "state_logs":
        params = webapi.query_params(request.path)
        for key in (*_PROFILE_PARAMS, "filename", "node_ip", "actor_id", "submission_id"):
            if key in params:
                obj[key] = params[key][:VALUE_CHARS]
    if api in ("job_submit", "serve_deploy"):
        body = webapi.json_object(webapi.read_json(request, ctx.anomaly, "ray_request"), ctx.anomaly, "ray_request")
        if body is not None:
            (_submit if api == "job_submit" else _serve_deploy)(body, obj)
    if isinstance(answer, dict):
        if obj.get("submission_id") is None:
            obj["submission_id"] = text(answer.get("submission_id"), NAME_CHARS)
        if api == "job_submit" or obj.get("job_id") is None:
            obj["job_id"] = text(answer.get("job_id"), NAME_CHARS) or obj.get("job_id")
        obj["job_status"] = text(answer.get("status"), NAME_CHARS) if api == "job_info" else None
        if api == "version":
            obj["ray_version"] = text(answer.get("ray_version"), NAME_CHARS)
    if response is not None and response.status >= 400 and response.body:
        obj["error"] = response.body[:VALUE_CHARS].decode("utf-8", "replace")
    if "pid" in obj and integer(obj["pid"]) is None:
        obj["pid_not_numeric"] = True
    return prune(obj)


declare(LAYER, [
    ("ray.routed_path", "string", "The path percent-decoded (not %2F), present only when the "
     "path as sent (http.url) does not route."),
    ("ray.api", "string", "Endpoint: job_submit, job_list, job_info, job_stop, job_delete, job_logs, "
     "job_logs_tail, package_check, package_upload, serve_status, serve_deploy, serve_delete, cpu_profile, "
     "traceback, gpu_profile, memory_profile, task_traceback, task_cpu_profile, state_<resource>, version, "
     "cluster_status, ..."),
    ("ray.job_agent", "boolean", "The call went to a node's job agent (/api/job_agent/jobs/)."),
    ("ray.job_id", "string", "Job or submission id from the path, the body or the answer."),
    ("ray.submission_id", "string", "submission_id of a job submission (request, else answer)."),
    ("ray.entrypoint", "string", f"Shell command line of a submitted job (first {ENTRYPOINT_CHARS} characters)."),
    ("ray.entrypoint_length", "integer", "Full length of the entrypoint in characters."),
    ("ray.entrypoint_num_gpus", "number", "GPUs reserved for the entrypoint."),
    ("ray.metadata_keys", "list[string]", "Keys of the job's metadata."),
    ("ray.runtime_env_keys", "list[string]", "Keys of runtime_env (pip, conda, working_dir, env_vars, ...)."),
    ("ray.pip", "list[string]", "pip requirement specs of runtime_env (URLs redacted)."),
    ("ray.conda", "list[string]", "conda environment name, or its dependency specs."),
    ("ray.working_dir", "string", "runtime_env working_dir URI (gcs://, s3://, https://, local path)."),
    ("ray.py_modules", "list[string]", "runtime_env py_modules URIs."),
    ("ray.env_var_names", "list[string]", "Names of runtime_env env_vars (values are never logged)."),
    ("ray.image_uri", "string", "Container image of runtime_env (image_uri / container.image)."),
    ("ray.package_uri", "string", "Runtime-env package checked or uploaded: protocol://name."),
    ("ray.applications", "list[string]", "Serve applications deployed (serve_deploy)."),
    ("ray.import_paths", "list[string]", "import_path of each deployed Serve application: code that will run."),
    ("ray.job_status", "string", "Job status in a job_info answer (PENDING, RUNNING, SUCCEEDED, ...)."),
    ("ray.ray_version", "string", "Ray version from /api/version."),
    ("ray.pid", "string", "Profiling query `pid`, raw (CVE-2023-6019 injects through these)."),
    ("ray.pid_not_numeric", "boolean", "The `pid` query value is not an integer."),
    ("ray.ip", "string", "Profiling query `ip`, raw."),
    ("ray.node_id", "string", "Query `node_id`, raw."),
    ("ray.duration", "string", "Profiling query `duration`, raw."),
    ("ray.format", "string", "Profiling query `format`, raw (a shell fragment in CVE-2023-6019)."),
    ("ray.native", "string", "Profiling query `native`, raw."),
    ("ray.task_id", "string", "Query `task_id`, raw."),
    ("ray.attempt_number", "string", "Query `attempt_number`, raw."),
    ("ray.filename", "string", "State API log query `filename`, raw (path traversal)."),
    ("ray.node_ip", "string", "State API log query `node_ip`, raw."),
    ("ray.actor_id", "string", "Query `actor_id`, raw."),
    ("ray.error", "string", f"Body of an error answer (status >= 400), first {VALUE_CHARS} characters."),
])
