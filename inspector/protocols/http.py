"""The EVE `http` object of a transaction, from the normalized exchange (both paths).

Suricata's names where Suricata has them (`hostname`, `url`, `http_method`, `protocol`,
`status`, `http_user_agent`, `http_content_type`, `length`, `http_refer`), plus what ML
rules need (request content type and length, HTTP/2 stream id, headers with secrets redacted).
"""

from __future__ import annotations

from typing import Any

from inspector.fields import declare
from inspector.http import Headers, HttpExchange, HttpMessage
from inspector.redact import redact_header, redact_url

#: Header lists in records are capped: rules need the headers, logs need to stay small.
MAX_LOGGED_HEADERS = 64
MAX_LOGGED_VALUE = 1024


def _split_host(authority: str) -> tuple[str, int | None]:
    host = authority.rsplit("@", 1)[-1]
    if host.startswith("["):  # [v6]:port
        end = host.find("]")
        port_text = host[end + 2:] if end != -1 and host[end + 1:end + 2] == ":" else ""
        host = host[1:end] if end != -1 else host
    else:
        host, _, port_text = host.partition(":")
    port = int(port_text) if port_text.isascii() and port_text.isdigit() and len(port_text) <= 5 else None
    return host.lower(), port


def logged_headers(headers: Headers) -> tuple[list[dict[str, str]], bool]:
    """Headers as `[{"name", "value"}]`, secrets redacted, capped in count and length; and
    whether the caps left something out (what rules then cannot see)."""
    out = []
    cut = len(headers) > MAX_LOGGED_HEADERS
    for name, value in headers[:MAX_LOGGED_HEADERS]:
        if len(value) > MAX_LOGGED_VALUE:
            cut = True
        value = redact_header(name, value)
        if len(value) > MAX_LOGGED_VALUE:
            value = value[:MAX_LOGGED_VALUE]
        out.append({"name": name, "value": value})
    return out, cut


def _add_fields(obj: dict[str, Any], side: str, message: HttpMessage) -> None:
    """`<side>_headers` (and `_headers_cut`), `_trailers`, `_content_encoding_left` of a message."""
    obj[f"{side}_headers"], cut = logged_headers(message.headers)
    if cut:
        obj[f"{side}_headers_cut"] = True
    if message.trailers:
        obj[f"{side}_trailers"] = logged_headers(message.trailers)[0]
    if message.encoded:
        obj[f"{side}_content_encoding_left"] = message.encoded


def http_object(exchange: HttpExchange) -> dict[str, Any]:
    request, response = exchange.request, exchange.response
    obj: dict[str, Any] = {}
    if request is not None:
        host, port = _split_host(request.authority)
        if host:
            obj["hostname"] = host
        if port is not None:
            obj["http_port"] = port
        obj["url"] = redact_url(request.path)
        obj["http_method"] = request.method
        obj["protocol"] = request.version
        user_agent = request.header("user-agent")
        if user_agent is not None:
            obj["http_user_agent"] = user_agent[:MAX_LOGGED_VALUE]
        referer = request.header("referer")
        if referer is not None:
            obj["http_refer"] = redact_url(referer[:MAX_LOGGED_VALUE])
        if request.content_type:
            obj["request_content_type"] = request.content_type[:MAX_LOGGED_VALUE]
        obj["request_length"] = request.body_length
        obj["request_complete"] = request.complete
        _add_fields(obj, "request", request)
    if response is not None:
        obj["status"] = response.status
        if "protocol" not in obj:
            obj["protocol"] = response.version
        if response.content_type:
            obj["http_content_type"] = response.content_type[:MAX_LOGGED_VALUE]
        location = response.header("location")
        if location is not None:
            obj["redirect"] = redact_url(location[:MAX_LOGGED_VALUE])
        obj["length"] = response.body_length
        obj["response_complete"] = response.complete
        _add_fields(obj, "response", response)
    if exchange.interim:
        obj["interim_status"] = [m.status for m in exchange.interim]
    # An h2c upgrade's request went as HTTP/1.1 and was answered on HTTP/2 stream 1: it has a stream id.
    if any(m is not None and m.version == "HTTP/2" for m in (request, response)):
        http2: dict[str, Any] = {"stream_id": exchange.stream_id}
        if exchange.reset_code is not None:
            http2["reset_code"] = exchange.reset_code
        obj["http2"] = http2
    return obj


declare("http", [
    ("http.hostname", "string", "Host (HTTP/1 Host header or HTTP/2 :authority), lower-case, no port."),
    ("http.http_port", "integer", "Port named in the Host/:authority, when present."),
    ("http.url", "string", "Request target as sent (path and query; secret query values redacted)."),
    ("http.http_method", "string", "Request method."),
    ("http.protocol", "string", "HTTP/1.0, HTTP/1.1 or HTTP/2."),
    ("http.status", "integer", "Final response status code."),
    ("http.http_user_agent", "string", "User-Agent request header."),
    ("http.http_refer", "string", "Referer request header."),
    ("http.http_content_type", "string", "Response Content-Type."),
    ("http.request_content_type", "string", "Request Content-Type."),
    ("http.redirect", "string", "Response Location header."),
    ("http.length", "integer", "Response body bytes (after transfer decoding)."),
    ("http.request_length", "integer", "Request body bytes (after transfer decoding)."),
    ("http.request_complete", "boolean", "False when the request was cut short in the capture."),
    ("http.response_complete", "boolean", "False when the response was cut short in the capture."),
    ("http.request_headers", "list[object]", "Request headers as {name, value}, secrets redacted."),
    ("http.request_headers.name", "list[string]", "Request header names (lower-case)."),
    ("http.request_headers.value", "list[string]", "Request header values, secrets redacted."),
    ("http.response_headers", "list[object]", "Response headers as {name, value}, secrets redacted."),
    ("http.response_headers.name", "list[string]", "Response header names (lower-case)."),
    ("http.response_headers.value", "list[string]", "Response header values, secrets redacted."),
    ("http.request_headers_cut", "boolean", f"True when the request had more than {MAX_LOGGED_HEADERS} headers "
     f"or a value longer than {MAX_LOGGED_VALUE} characters: request_headers lists the first {MAX_LOGGED_HEADERS}, "
     f"values cut at {MAX_LOGGED_VALUE}, and rules do not see the rest."),
    ("http.response_headers_cut", "boolean", "The same for the response headers."),
    ("http.request_trailers", "list[object]", "Request trailer fields (chunked or HTTP/2) as {name, value}, "
     "secrets redacted, capped as headers are."),
    ("http.request_trailers.name", "list[string]", "Request trailer names (lower-case)."),
    ("http.request_trailers.value", "list[string]", "Request trailer values, secrets redacted."),
    ("http.response_trailers", "list[object]", "Response trailer fields as {name, value} (gRPC's grpc-status "
     "among them), secrets redacted, capped as headers are."),
    ("http.response_trailers.name", "list[string]", "Response trailer names (lower-case)."),
    ("http.response_trailers.value", "list[string]", "Response trailer values, secrets redacted."),
    ("http.request_content_encoding_left", "string", "Content-Encoding still on the request body: one no "
     "decoder here removes, or a stream that did not decode; the layers above did not read the body."),
    ("http.response_content_encoding_left", "string", "The same for the response body."),
    ("http.interim_status", "list[integer]", "1xx responses before the final one (100, 101, 103)."),
    ("http.http2.stream_id", "integer", "HTTP/2 stream id."),
    ("http.http2.reset_code", "integer", "RST_STREAM error code when the stream was reset."),
])
