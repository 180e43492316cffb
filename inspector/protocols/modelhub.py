"""The `modelhub` layer: model downloads from hubs and registries (Hugging Face, OCI registries).

Claimed by path, on any host (mirrors and self-hosted hubs speak the same API):

    GET|HEAD /<repo>/resolve/<revision>/<file>                 Hugging Face file (models)
    GET|HEAD /(datasets|spaces)/<repo>/resolve/<revision>/<file>   (datasets, spaces)
    GET      /api/(models|datasets|spaces)/<repo>[/revision/<revision>]   repo metadata
    GET|HEAD /v2/<name>/manifests/<reference>                  OCI / Docker registry manifest
    GET|HEAD /v2/<name>/blobs/<digest>                         OCI / Docker registry blob

A Hugging Face repo is `owner/name` (or a legacy single `name`); `resolve` answers the file, or
a redirect to the CDN (`modelhub.redirect`). The file's first bytes (the body prefix the exchange
keeps) go through inspector.protocols.modelfile like S3 downloads: format, and pickles scanned
without unpickling (`modelhub.model.pickle.dangerous`). Ollama's own registry traffic is the
`ollama` layer's (it runs first); this one takes other `/v2/` registries (`/v2/` paths without
`/manifests/` or `/blobs/` stay Triton's).

:func:`parse_hub_path` is used by the egress allowlist too (inspector.egress).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple
from urllib.parse import unquote

from inspector.fields import declare
from inspector.http import HttpMessage
from inspector.protocols.modelfile import inspect_model, model_fields

LAYER = "modelhub"
MAX_CHARS = 512

_HF_RESOLVE = re.compile(r"^/(?:(datasets|spaces|models)/)?([^/?#]+(?:/[^/?#]+)?)/resolve/([^/?#]+)/([^?#]+)")
_HF_API = re.compile(r"^/api/(models|datasets|spaces)/([^/?#]+(?:/[^/?#]+)?)(?:/revision/([^/?#]+))?/?(?:[?#]|$)")
_OCI = re.compile(r"^/v2/((?:[^/?#]+/)*?[^/?#]+)/(manifests|blobs)/([^/?#]+)")
_REPO_TYPES = {None: "model", "models": "model", "datasets": "dataset", "spaces": "space"}


class HubPath(NamedTuple):
    """What a model hub request path names."""

    hub: str  # huggingface or oci
    api: str  # resolve, repo_info, manifest, blob
    repo: str
    repo_type: str | None = None  # huggingface: model, dataset, space
    revision: str | None = None  # huggingface revision, OCI reference (tag or digest)
    file: str | None = None


def parse_hub_path(path: str) -> HubPath | None:
    """The hub request a path makes (query ignored), or None."""
    path = path.split("?", 1)[0]
    if path.startswith("/v2/"):
        match = _OCI.match(path)
        if match is None:
            return None
        api = "manifest" if match.group(2) == "manifests" else "blob"
        return HubPath("oci", api, unquote(match.group(1))[:MAX_CHARS], revision=unquote(match.group(3))[:MAX_CHARS])
    if path.startswith("/api/"):
        match = _HF_API.match(path)
        if match is None:
            return None
        return HubPath("huggingface", "repo_info", unquote(match.group(2))[:MAX_CHARS], _REPO_TYPES[match.group(1)],
                       unquote(match.group(3))[:MAX_CHARS] if match.group(3) else None)
    match = _HF_RESOLVE.match(path)
    if match is None:
        return None
    return HubPath("huggingface", "resolve", unquote(match.group(2))[:MAX_CHARS], _REPO_TYPES[match.group(1)],
                   unquote(match.group(3))[:MAX_CHARS], unquote(match.group(4))[:MAX_CHARS])


def build(ctx: Any) -> dict[str, Any] | None:
    exchange = ctx.exchange
    request: HttpMessage = exchange.request
    if request is None or request.method not in ("GET", "HEAD"):
        return None
    hub = parse_hub_path(path_of_target(request.path))
    if hub is None:
        return None
    obj: dict[str, Any] = {"hub": hub.hub, "api": hub.api, "repo": hub.repo}
    for name in ("repo_type", "revision", "file"):
        value = getattr(hub, name)
        if value is not None:
            obj[name] = value
    response = exchange.response
    if response is None:
        return obj
    obj["status"] = response.status
    location = response.header("location")
    if location and 300 <= response.status < 400:
        obj["redirect"] = location[:MAX_CHARS]
    commit = response.header("x-repo-commit")
    if commit:
        obj["commit"] = commit[:64]
    if hub.api in ("resolve", "blob") and request.method == "GET" and 200 <= response.status < 300:
        name = hub.file or hub.repo
        complete = response.complete and not response.body_truncated
        model = inspect_model(response.body, name=name, body_complete=complete, body_seen=response.status == 200)
        if model is not None:
            for event, message in model.anomalies:
                ctx.anomaly(event, message)
            obj["model"] = model.record()
    return obj


def path_of_target(target: str) -> str:
    """The path of a request target: as it is, or the path of an absolute-form target (a plain-HTTP
    proxy request, `http://host/path`)."""
    if not target.startswith("/") and "://" in target:
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        return rest[slash:] if slash >= 0 else "/"
    return target


declare(LAYER, [
    ("modelhub", "object", "A model hub or registry request: Hugging Face file resolve or repo info, OCI "
                           "manifest or blob (docs/egress.md)."),
    ("modelhub.hub", "string", "huggingface or oci."),
    ("modelhub.api", "string", "resolve (a file), repo_info, manifest or blob."),
    ("modelhub.repo", "string", "Repository: owner/name (Hugging Face), the image name (OCI)."),
    ("modelhub.repo_type", "string", "Hugging Face repo type: model, dataset or space."),
    ("modelhub.revision", "string", "Hugging Face revision (branch, tag, commit) or OCI reference (tag, digest)."),
    ("modelhub.file", "string", "File path inside a Hugging Face repo."),
    ("modelhub.status", "integer", "Response status."),
    ("modelhub.redirect", "string", "Location of a redirect (the CDN a file resolves to)."),
    ("modelhub.commit", "string", "X-Repo-Commit of a Hugging Face answer."),
    *model_fields("modelhub.model"),
])
