"""Block responses each client understands, built from the record that was blocked.

* a `grpc` object (or a gRPC content type): HTTP 200 trailers-only, `grpc-status: 7` and
  `grpc-message`; the client raises PERMISSION_DENIED with the message (tritonclient:
  InferenceServerException);
* an `s3` object: HTTP 403 with S3's XML `<Error><Code>AccessDenied</Code>...`; botocore raises
  ClientError AccessDenied with the message;
* an `llm` object: HTTP 403 with an OpenAI-style `{"error": {"message", "type", "code"}}`; the
  openai client raises PermissionDeniedError;
* another ML API layer, or a KServe v1/v2 URL: HTTP 403 with KServe's `{"error": msg}`;
  tritonclient.http raises InferenceServerException(msg);
* anything else: HTTP 403 with the message as text/plain.

Inside a Triton `ModelStreamInfer` stream a blocked message is answered by a
`ModelStreamInferResponse{error_message}` injected into the response stream (encoded with our
own protobuf encoder: generated protobuf modules never enter the proxy process, see
ARCHITECTURE.md).

The message comes from a template (`inspector_block_message`) with `{signature}` and `{sid}`.
Pure functions: no mitmproxy here; the addon turns a :class:`BlockResponse` into its Response.
"""

from __future__ import annotations

import json
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from inspector.protocols.protobuf import encode_field

DEFAULT_MESSAGE = "blocked by inspector: {signature} (sid {sid})"
GRPC_PERMISSION_DENIED = 7
GRPC_INTERNAL = 13

#: Layers whose APIs answer errors as KServe does: `{"error": "..."}`.
JSON_ERROR_LAYERS = ("triton", "torchserve", "mlflow", "ray", "ollama", "feast", "jupyter")
#: URL prefixes of KServe v1/v2 REST (tritonclient.http, KServe clients) before a parser claims them.
KSERVE_PREFIXES = ("/v2/", "/v2?", "/v1/models")

#: gRPC streaming methods whose response message has a string `error_message` field, by path:
#: a blocked request message is answered in-stream with that field set.
STREAM_ERROR_FIELDS: dict[str, int] = {
    "/inference.GRPCInferenceService/ModelStreamInfer": 1,  # ModelStreamInferResponse.error_message
}


@dataclass(frozen=True, slots=True)
class BlockResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    kind: str = "plain"  # grpc, s3, openai, kserve, plain


def block_message(template: str, signature: str, sid: int | None) -> str:
    """The text sent to the client. An unknown placeholder in the template leaves it literal."""
    try:
        return template.format(signature=signature, sid=sid if sid is not None else "-")
    except (KeyError, IndexError, ValueError):
        return template


def grpc_percent_encode(message: str) -> str:
    """grpc-message encoding: UTF-8, bytes outside 0x20-0x7E and '%' percent-encoded."""
    out = []
    for byte in message.encode("utf-8"):
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(chr(byte))
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def grpc_block(message: str, status: int = GRPC_PERMISSION_DENIED) -> BlockResponse:
    """A trailers-only gRPC response: one HEADERS frame carrying the status."""
    return BlockResponse(200, [("content-type", "application/grpc"), ("grpc-status", str(status)),
                               ("grpc-message", grpc_percent_encode(message))], b"", "grpc")


def s3_block(message: str, resource: str, method: str) -> BlockResponse:
    request_id = uuid.uuid4().hex[:16].upper()
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>AccessDenied</Code><Message>{escape(message)}</Message>"
            f"<Resource>{escape(resource)}</Resource><RequestId>{request_id}</RequestId></Error>")
    headers = [("content-type", "application/xml"), ("x-amz-request-id", request_id)]
    return BlockResponse(403, headers, b"" if method == "HEAD" else body.encode("utf-8"), "s3")


def json_block(payload: Any, kind: str, method: str) -> BlockResponse:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return BlockResponse(403, [("content-type", "application/json")], b"" if method == "HEAD" else body, kind)


def plain_block(message: str, method: str) -> BlockResponse:
    body = (message + "\n").encode("utf-8")
    return BlockResponse(403, [("content-type", "text/plain; charset=utf-8")],
                         b"" if method == "HEAD" else body, "plain")


def is_grpc_content_type(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower().startswith("application/grpc")


def block_response(record: dict[str, Any] | None, message: str, *, method: str, path: str,
                   content_type: str, grpc_status: int = GRPC_PERMISSION_DENIED) -> BlockResponse:
    """The block response for a request, chosen from the layers of its record."""
    record = record or {}
    if "grpc" in record or is_grpc_content_type(content_type):
        return grpc_block(message, grpc_status)
    if "s3" in record:
        return s3_block(message, path.split("?", 1)[0], method)
    if "llm" in record:
        return json_block({"error": {"message": message, "type": "permission_denied", "param": None,
                                     "code": "blocked_by_policy"}}, "openai", method)
    if any(layer in record for layer in JSON_ERROR_LAYERS) or path.startswith(KSERVE_PREFIXES):
        return json_block({"error": message}, "kserve", method)
    return plain_block(message, method)


def grpc_frame(payload: bytes) -> bytes:
    """One uncompressed length-prefixed gRPC message."""
    return struct.pack(">BI", 0, len(payload)) + payload


def stream_error_message(path: str, message: str) -> bytes | None:
    """The framed in-stream error message for a streaming method, or None when the method has
    no known error field."""
    number = STREAM_ERROR_FIELDS.get(path)
    if number is None:
        return None
    return grpc_frame(encode_field(number, message))
