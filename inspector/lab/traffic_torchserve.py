"""TorchServe management traffic (port 8081): model and workflow registration, scaling.

Registration takes the archive location in the `url` query parameter, as `curl -X POST
"http://host:8081/models?url=..."` and the management API docs do; ShellTorch
(CVE-2023-43654) points it at an attacker's server.
"""

from __future__ import annotations

from urllib.parse import urlencode

from inspector.lab.traffic_http import json_response, request_bytes

HOST = "torchserve:8081"


def register_model(url: str, *, host: str = HOST, **params: str) -> bytes:
    return request_bytes("POST", "/models?" + urlencode({"url": url, **params}), host, [("User-Agent", "curl/8.5.0")])


def register_workflow(url: str, *, host: str = HOST, **params: str) -> bytes:
    return request_bytes("POST", "/workflows?" + urlencode({"url": url, **params}), host,
                         [("User-Agent", "curl/8.5.0")])


def scale_workers(model: str, min_worker: int, *, host: str = HOST) -> bytes:
    return request_bytes("PUT", f"/models/{model}?" + urlencode({"min_worker": min_worker, "synchronous": "false"}),
                         host, [("User-Agent", "curl/8.5.0")])


def status_answer(text: str, status: int = 200) -> bytes:
    return json_response({"status": text}, status)
