"""Ollama traffic (port 11434) and the OCI registry it pulls from.

`pull` posts what `ollama pull` sends; the answer is the JSON-lines progress stream. A registry
manifest (`registry_manifest`) lists layer digests: Probllama (CVE-2024-37032) hides a path in
one of them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from inspector.lab.traffic_http import json_request, ndjson_response, request_bytes, response_bytes

HOST = "ollama:11434"
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def pull(name: str, *, insecure: bool = False, host: str = HOST) -> bytes:
    body: dict[str, Any] = {"model": name, "stream": True}
    if insecure:
        body["insecure"] = True
    return json_request("POST", "/api/pull", host, body, [("User-Agent", "ollama/0.1.33 (amd64 linux) Go/go1.22.1")])


def pull_progress(layer_digest: str, *, error: str = "") -> bytes:
    lines: list[dict[str, Any]] = [{"status": "pulling manifest"}]
    if error:
        lines.append({"error": error})
    else:
        lines += [{"status": f"pulling {layer_digest[7:19]}", "digest": layer_digest, "total": 1024,
                   "completed": 1024},
                  {"status": "verifying sha256 digest"}, {"status": "writing manifest"}, {"status": "success"}]
    return ndjson_response(lines)


def registry_manifest_request(repository: str, tag: str, registry: str) -> bytes:
    return request_bytes("GET", f"/v2/{repository}/manifests/{tag}", registry,
                         [("User-Agent", "ollama/0.1.33 (amd64 linux) Go/go1.22.1"), ("Accept", MANIFEST_TYPE)])


def registry_manifest(layer_digests: list[str], config_digest: str) -> bytes:
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config_digest,
                           "size": 64},
                "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": d, "size": 1024}
                           for d in layer_digests]}
    return response_bytes(200, json.dumps(manifest).encode(), MANIFEST_TYPE)


def registry_blob_request(repository: str, blob_digest: str, registry: str) -> bytes:
    return request_bytes("GET", f"/v2/{repository}/blobs/{blob_digest}", registry,
                         [("User-Agent", "ollama/0.1.33 (amd64 linux) Go/go1.22.1")])


def registry_blob(data: bytes) -> bytes:
    return response_bytes(200, data, "application/octet-stream")


def generate(model: str, prompt: str, *, host: str = HOST, **options: Any) -> bytes:
    """POST /api/generate (non-streaming), with Ollama options such as `template` or `system`."""
    return json_request("POST", "/api/generate", host, {"model": model, "prompt": prompt, "stream": False, **options})


def generate_answer(model: str, text: str) -> bytes:
    return response_bytes(200, json.dumps({"model": model, "created_at": "2026-01-01T00:00:00Z", "response": text,
                                           "done": True, "done_reason": "stop", "prompt_eval_count": 12,
                                           "eval_count": len(text.split())}).encode(), "application/json")
