"""The `ollama` layer: Ollama's API (port 11434) and the registry fetches an Ollama server makes.

Claimed by path, as sent or else as routed (:func:`inspector.protocols.webapi.routing_path`:
percent-decoded, `%2F` too, as Go routes; kept in `ollama.routed_path` when the path as sent does
not route; an encoded unreserved character raises the anomaly `ollama_path_obfuscated`):

    POST   /api/pull, /api/push    {model | name, insecure, stream}       pull, push
    POST   /api/create             {model | name, from, files, modelfile, quantize, ...}
    DELETE /api/delete             {model | name}
    POST   /api/copy               {source, destination}
    POST   /api/show               {model | name}
    HEAD|POST /api/blobs/{digest}                                         blob_check, blob_upload
    POST   /api/generate, /api/chat, /api/embed, /api/embeddings          (the llm layer reads the prompt)
    GET    /api/tags, /api/ps, /api/version                               tags, ps, version

and, on the registry side (the request an Ollama server sends when it pulls or pushes, User-Agent
`ollama/...`; or any answer whose manifest has `application/vnd.ollama.` layers):

    GET|HEAD /v2/{name}/manifests/{tag}   registry_manifest: the manifest's digests
    GET|HEAD /v2/{name}/blobs/{digest}    registry_blob

`ollama.registry` is the host part of the model name when it has one (`host/namespace/model:tag`:
as Ollama parses names, only a three-part name names a host; `a.b/model` is a namespace), else
the default `registry.ollama.ai`; for a registry-side request it is the Host (with its port) the
server talked to.

Model blobs are inspected like S3 and hub downloads (inspector.protocols.modelfile): the first
bytes of a registry blob answer (GET, 2xx) and of a blob upload (`POST /api/blobs/{digest}`, what
`ollama create` sends) give `ollama.model`: format by magic (GGUF, and its chat template: the
Jinja of CVE-2024-34359 travels in GGUF metadata), pickles scanned without unpickling. A registry
that redirects blob GETs to a CDN serves the bytes from another host and path: those answers are
not seen as Ollama's.

Probllama (CVE-2024-37032) pulls from an attacker's registry (`insecure: true`) whose manifest has
layer digests that are paths: `ollama.manifest_digests` lists the digests of a manifest seen in an
answer (config and layers), and `ollama.invalid_digests` those that fail the check Ollama added
in its fix (`^sha256[:-][0-9a-fA-F]{64}$`). Pull/push progress lines (JSON lines) give the
digests the server reports and its final status or error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from inspector.fields import declare
from inspector.http import HttpMessage
from inspector.protocols import webapi
from inspector.protocols.modelfile import inspect_model, model_fields
from inspector.protocols.webapi import boolean, prune, text

LAYER = "ollama"

DEFAULT_REGISTRY = "registry.ollama.ai"
NAME_CHARS = 256
DIGEST_CHARS = 256
MODELFILE_CHARS = 4096
ERROR_CHARS = 1024
LIST_ITEMS = 64

#: The digest check of Ollama's fix for CVE-2024-37032 (server/images.go / model name checks).
VALID_DIGEST = re.compile(r"sha256[:-][0-9a-fA-F]{64}")

_API = {
    ("POST", "/api/pull"): "pull", ("POST", "/api/push"): "push", ("POST", "/api/create"): "create",
    ("DELETE", "/api/delete"): "delete", ("POST", "/api/copy"): "copy", ("POST", "/api/show"): "show",
    ("POST", "/api/generate"): "generate", ("POST", "/api/chat"): "chat", ("POST", "/api/embed"): "embed",
    ("POST", "/api/embeddings"): "embed", ("GET", "/api/tags"): "tags", ("GET", "/api/ps"): "ps",
    ("GET", "/api/version"): "version",
}
_BLOBS = "/api/blobs/"
_REGISTRY = re.compile(r"/v2/(.+)/(manifests|blobs)/([^/]+)")
_MANIFEST_MEDIA = "application/vnd.ollama."
_NAMED = frozenset({"pull", "push", "create", "delete", "show", "generate", "chat", "embed"})


def split_model_name(name: str) -> tuple[str, str | None]:
    """(registry host, tag) of an Ollama model name `[scheme://][host/][namespace/]model[:tag]`."""
    rest = name.split("://", 1)[-1]
    parts = rest.split("/")
    host = DEFAULT_REGISTRY
    if len(parts) >= 3:
        host = parts[0].lower() or DEFAULT_REGISTRY
    last = parts[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else None
    return host[:NAME_CHARS], tag[:NAME_CHARS] if tag else None


def _digests(values: list[str]) -> tuple[list[str], list[str]]:
    kept = [d[:DIGEST_CHARS] for d in values[:LIST_ITEMS]]
    return kept, [d for d in kept if VALID_DIGEST.fullmatch(d) is None]


def _manifest(value: Any, obj: dict[str, Any]) -> bool:
    """Digests of an OCI/Docker manifest answer; True when it is an Ollama model's manifest."""
    if not isinstance(value, dict):
        return False
    found: list[str] = []
    ollama_media = False
    config = value.get("config")
    entries = [config] if isinstance(config, dict) else []
    layers = value.get("layers")
    entries += layers if isinstance(layers, list) else []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        digest = entry.get("digest")
        found.append(digest if isinstance(digest, str) else repr(digest))
        media = entry.get("mediaType")
        ollama_media = ollama_media or (isinstance(media, str) and media.startswith(_MANIFEST_MEDIA))
    if found:
        obj["manifest_digests"], obj["invalid_digests"] = _digests(found)
        obj["layer_count"] = len(layers) if isinstance(layers, list) else 0
    return ollama_media


def _progress(ctx: Any, obj: dict[str, Any]) -> None:
    """Pull/push/create answers: JSON lines (or one JSON object) of progress."""
    response = ctx.exchange.response
    if response is None or not response.body:
        return
    if webapi.is_ndjson(response):
        lines, bad = webapi.ndjson_values(response.body)
        if bad and not (bad == 1 and (response.body_truncated or not response.complete)):
            ctx.anomaly("ollama_ndjson_invalid_line", f"{bad} progress lines are not JSON")
    else:
        value = webapi.read_json(response, ctx.anomaly, "ollama_response", required=False)
        lines = [value] if isinstance(value, dict) else []
    digests: list[str] = []
    for line in lines:
        if not isinstance(line, dict):
            continue
        digest = line.get("digest")
        if isinstance(digest, str) and digest not in digests:
            digests.append(digest)
        if isinstance(line.get("status"), str):
            obj["status"] = line["status"][:NAME_CHARS]
        if line.get("error") is not None:
            obj["error"] = str(line["error"])[:ERROR_CHARS]
    if digests:
        obj["digests"], invalid = _digests(digests)
        if invalid:
            obj["invalid_digests"] = invalid


def _request(ctx: Any, api: str, obj: dict[str, Any]) -> None:
    request = ctx.exchange.request
    body = webapi.json_object(webapi.read_json(request, ctx.anomaly, "ollama_request"), ctx.anomaly,
                              "ollama_request")
    if body is None:
        return
    name = body.get("model", body.get("name"))
    if api in _NAMED and isinstance(name, str):
        obj["name"] = name[:NAME_CHARS]
        if api in ("pull", "push", "create"):
            obj["registry"], obj["tag"] = split_model_name(name)
    if api in ("pull", "push"):
        obj["insecure"] = boolean(body.get("insecure"))
    if api in ("pull", "push", "create"):
        stream = body.get("stream")
        obj["stream"] = stream if isinstance(stream, bool) else True
    if api == "copy":
        obj["source"] = text(body.get("source"), NAME_CHARS)
        obj["destination"] = text(body.get("destination"), NAME_CHARS)
    elif api == "create":
        obj["from"] = text(body.get("from"), NAME_CHARS)
        obj["modelfile"] = text(body.get("modelfile"), MODELFILE_CHARS)
        obj["quantize"] = text(body.get("quantize"), NAME_CHARS)
        files = body.get("files")
        if isinstance(files, dict):
            obj["files"] = [str(f)[:NAME_CHARS] for f in list(files)[:LIST_ITEMS]]
            values = [v for v in files.values() if isinstance(v, str)]
            adapters = body.get("adapters")
            if isinstance(adapters, dict):
                values += [v for v in adapters.values() if isinstance(v, str)]
            if values:
                obj["digests"], invalid = _digests(values)
                if invalid:
                    obj["invalid_digests"] = invalid


def _registry(ctx: Any, match: re.Match[str], unquote: Callable[[str], str]) -> dict[str, Any] | None:
    request = ctx.exchange.request
    user_agent = request.header("user-agent") or ""
    kind = match.group(2)
    obj: dict[str, Any] = {
        "api": "registry_manifest" if kind == "manifests" else "registry_blob",
        "name": unquote(match.group(1))[:NAME_CHARS],
        "registry": request.authority.rsplit("@", 1)[-1].lower()[:NAME_CHARS] or None,
    }
    reference = unquote(match.group(3))[:DIGEST_CHARS]
    if kind == "manifests":
        obj["tag"] = reference
    else:
        obj["digest"] = reference
    claimed = user_agent.startswith("ollama/")
    response = ctx.exchange.response
    deferred = webapi.DeferredReport()
    if kind == "manifests" and response is not None and response.body and response.status < 300:
        value = webapi.read_json(response, deferred, "ollama_manifest", required=False)
        claimed = _manifest(value, obj) or claimed
    if not claimed:
        return None  # another client's registry traffic (docker, containerd, ...)
    deferred.flush(ctx.anomaly)
    if kind == "blobs" and request.method == "GET" and response is not None and 200 <= response.status < 300:
        _model(ctx, obj, response, seen=response.status == 200)
    return prune(obj)


def _model(ctx: Any, obj: dict[str, Any], message: HttpMessage, *, seen: bool = True) -> None:
    """`ollama.model` from the first bytes of a blob (an answer, or an upload's body)."""
    complete = message.complete and not message.body_truncated
    model = inspect_model(message.body, name=None, body_complete=complete, body_seen=seen)
    if model is not None:
        for event, detail in model.anomalies:
            ctx.anomaly(event, detail)
        obj["model"] = model.record()


def build(ctx: Any) -> dict[str, Any] | None:
    """The `ollama` object of an exchange, or None when it is not an Ollama call."""
    request = ctx.exchange.request
    if request is None or "s3" in ctx.record:  # an S3 call whatever its path (bucket `models`, ...)
        return None
    obj, routed, hidden = webapi.route_request(ctx, lambda path, unquote: _claim(ctx, request, path, unquote))
    if obj is not None:
        webapi.note_routing(ctx, LAYER, obj, routed, hidden)
    return obj


def _claim(ctx: Any, request: Any, path: str, unquote: Callable[[str], str]) -> dict[str, Any] | None:
    """The `ollama` object of a request routed on `path` (`unquote` decodes its segments), or None."""
    if path.startswith("/v2/"):
        if "/manifests/" not in path and "/blobs/" not in path:
            return None  # Triton/KServe v2, not a registry
        match = _REGISTRY.fullmatch(path)
        return _registry(ctx, match, unquote) if match is not None and request.method in ("GET", "HEAD") else None
    if path.startswith(_BLOBS):
        digest = unquote(path[len(_BLOBS):])[:DIGEST_CHARS]
        api = {"HEAD": "blob_check", "POST": "blob_upload"}.get(request.method)
        if api is None or not digest or "/" in path[len(_BLOBS):]:
            return None
        obj = {"api": api, "digest": digest}
        if VALID_DIGEST.fullmatch(digest) is None:
            obj["invalid_digests"] = [digest]
        if api == "blob_upload" and request.body:
            _model(ctx, obj, request)
        return obj
    api = _API.get((request.method, path))
    if api is None:
        return None
    if api == "version" and "ray" in ctx.record:  # Ray's dashboard has the same path
        return None
    obj = {"api": api}
    if request.body:
        _request(ctx, api, obj)
    if api in ("pull", "push", "create", "delete", "copy"):
        _progress(ctx, obj)
    return prune(obj)


declare(LAYER, [
    ("ollama.api", "string", "Operation: pull, push, create, delete, copy, show, blob_check, blob_upload, "
     "generate, chat, embed, tags, ps, version, registry_manifest, registry_blob."),
    ("ollama.routed_path", "string", "The path percent-decoded, present only when "
     "the path as sent (http.url) does not route."),
    ("ollama.name", "string", "Model name (body `model` or `name`; registry requests: the repository)."),
    ("ollama.registry", "string", f"Registry host of the model name ({DEFAULT_REGISTRY} when it names none); "
     "registry requests: the Host (and port) contacted."),
    ("ollama.tag", "string", "Tag of the model name, or the manifest reference of a registry request."),
    ("ollama.insecure", "boolean", "pull/push with insecure: true (plain HTTP, unverified TLS)."),
    ("ollama.stream", "boolean", "Progress streamed (Ollama streams unless `stream` is false)."),
    ("ollama.source", "string", "copy: source model."),
    ("ollama.destination", "string", "copy: destination model."),
    ("ollama.from", "string", "create: base model or path (`from`)."),
    ("ollama.modelfile", "string", f"create: Modelfile text (older API), first {MODELFILE_CHARS} characters."),
    ("ollama.quantize", "string", "create: quantization requested."),
    ("ollama.files", "list[string]", "create: file names of `files`."),
    ("ollama.digest", "string", "Blob digest in the path (/api/blobs/{digest}, registry blobs)."),
    ("ollama.digests", "list[string]", f"Digests in create `files`/`adapters` or in pull/push progress lines "
     f"(first {LIST_ITEMS})."),
    ("ollama.manifest_digests", "list[string]", "Config and layer digests of a registry manifest answer."),
    ("ollama.invalid_digests", "list[string]", "Digests (any of the above, or the blob path's) failing "
     "^sha256[:-][0-9a-fA-F]{64}$: path traversal (CVE-2024-37032)."),
    ("ollama.layer_count", "integer", "Layers in a registry manifest answer."),
    ("ollama.status", "string", "Last progress status of pull/push/create (success, ...)."),
    ("ollama.error", "string", f"Error of the answer or its progress lines, first {ERROR_CHARS} characters."),
    *model_fields("ollama.model"),
])
