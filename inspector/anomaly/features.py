"""What the baseline looks at in a record: who, to whom, what, how big, which shapes.

Pure functions over EVE records (dicts), the same offline and live:

* client: `src_ip`; server: `dest_ip:dest_port`;
* subject: the model or endpoint a request is about, prefixed by its protocol
  (`triton:resnet`, `llm:gpt-4o`, `s3:models-prod`, `grpc:pkg.Svc/Method`, `http:GET /v1/{id}`);
* payload: request body bytes (`http.request_length`, a gRPC request's bytes), or what a Triton
  request's inputs declare when that is more (a tensor bomb declares gigabytes and sends bytes);
* shape patterns: `name|datatype|*,4` per Triton input, the first (batch) dimension free;
* JA4 of `tls` records; protocol (`event_type`) per zone pair when a policy sets zones.
"""

from __future__ import annotations

import re
from typing import Any

#: Characters kept of a subject or a value (model names, paths, shapes).
MAX_VALUE_CHARS = 200
#: URL path segments kept in an HTTP subject.
MAX_PATH_SEGMENTS = 4
#: Triton inputs looked at per request.
MAX_INPUTS = 32

_ID_SEGMENT = re.compile(r"^(?:\d+|[0-9a-fA-F]{8,}|[0-9a-fA-F-]{32,36}|sha256[:-][0-9a-fA-F]+)$")
#: Record keys naming the thing a protocol's request is about, first present wins.
_SUBJECT_KEYS = ("model", "model_name", "name", "bucket", "repo", "api", "operation")
#: Record types with no request to count (handshakes, per-connection records).
NOT_REQUESTS = frozenset({"tls", "nccl", "tcpstore", "egress"})


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value[:MAX_VALUE_CHARS]
    return None


def client_of(record: dict[str, Any]) -> str | None:
    return _text(record.get("src_ip"))


def server_of(record: dict[str, Any]) -> str | None:
    ip, port = record.get("dest_ip"), record.get("dest_port")
    if not isinstance(ip, str):
        return None
    return f"{ip}:{port}" if isinstance(port, int) else ip


def http_path_subject(method: str, url: str) -> str:
    """`GET /v1/models/{id}`: the path without its query, id-like segments folded, 4 segments."""
    path = url.split("?", 1)[0].split("#", 1)[0]
    if "://" in path:  # absolute-form (proxies): drop scheme and authority
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    segments = [("{id}" if _ID_SEGMENT.match(s) else s) for s in path.split("/")[1:MAX_PATH_SEGMENTS + 1]]
    return f"{method} /{'/'.join(segments)}"[:MAX_VALUE_CHARS]


def subject_of(record: dict[str, Any]) -> str | None:
    """The model or endpoint a request is about, `<protocol>:<name>`; None when not a request."""
    event_type = record.get("event_type")
    if not isinstance(event_type, str) or event_type in NOT_REQUESTS:
        return None
    obj = record.get(event_type)
    if event_type == "grpc" and isinstance(obj, dict):
        service, method = _text(obj.get("service")), _text(obj.get("method"))
        if service or method:
            return f"grpc:{service}/{method}"[:MAX_VALUE_CHARS]
    elif event_type != "http" and isinstance(obj, dict):
        for key in _SUBJECT_KEYS:
            name = _text(obj.get(key))
            if name is not None:
                return f"{event_type}:{name}"[:MAX_VALUE_CHARS]
    http = record.get("http")
    if isinstance(http, dict):
        method, url = http.get("http_method"), http.get("url")
        if isinstance(method, str) and isinstance(url, str):
            return f"{event_type}:{http_path_subject(method, url)}"[:MAX_VALUE_CHARS]
    return event_type


def payload_of(record: dict[str, Any]) -> int | None:
    """Request bytes (or what a Triton request declares, when more); None without a request body
    size."""
    size: int | None = None
    http = record.get("http")
    if isinstance(http, dict) and isinstance(http.get("request_length"), int):
        size = http["request_length"]
    grpc = record.get("grpc")
    if isinstance(grpc, dict) and isinstance(grpc.get("request"), dict):
        sent = grpc["request"].get("bytes")
        if isinstance(sent, int):
            size = max(size or 0, sent)
    triton = record.get("triton")
    if isinstance(triton, dict) and isinstance(triton.get("inputs"), list):
        declared = sum(i.get("bytes_declared") or 0 for i in triton["inputs"][:MAX_INPUTS]
                       if isinstance(i, dict) and isinstance(i.get("bytes_declared") or 0, int))
        if declared:
            size = max(size or 0, declared)
    return size


def shape_patterns(record: dict[str, Any]) -> list[str]:
    """`name|datatype|*,d1,d2` for each Triton input (the batch dimension free), sorted."""
    triton = record.get("triton")
    if not isinstance(triton, dict) or not isinstance(triton.get("inputs"), list):
        return []
    patterns = set()
    for item in triton["inputs"][:MAX_INPUTS]:
        if not isinstance(item, dict):
            continue
        shape = item.get("shape")
        dims = ["*", *(str(d) for d in shape[1:])] if isinstance(shape, list) and shape else []
        patterns.add(f"{item.get('name')}|{item.get('datatype')}|{','.join(dims)}"[:MAX_VALUE_CHARS])
    return sorted(patterns)


def ja4_of(record: dict[str, Any]) -> str | None:
    tls = record.get("tls")
    if record.get("event_type") != "tls" or not isinstance(tls, dict):
        return None
    return _text(tls.get("ja4"))


def zone_pair_of(record: dict[str, Any]) -> str | None:
    src, dest = record.get("src_zone"), record.get("dest_zone")
    if isinstance(src, str) and isinstance(dest, str):
        return f"{src}->{dest}"
    return None
