"""The `jupyter` layer: the Jupyter Server REST API, kernel WebSockets and terminals.

Claimed by path, under any base URL (`/user/{name}/` on JupyterHub):

    GET|POST        api/kernels                      kernel_list, kernel_create {name, path}
    GET|DELETE      api/kernels/{id}                 kernel_info, kernel_delete
    POST            api/kernels/{id}/{interrupt,restart}
    GET             api/kernels/{id}/channels        kernel_channels (WebSocket: execute_request goes here)
    GET|POST        api/sessions                     session_list, session_create {path, type, kernel: {name}}
    GET|PATCH|DELETE api/sessions/{id}
    GET|POST        api/terminals                    terminal_list, terminal_create
    GET|DELETE      api/terminals/{name}
    GET             terminals/websocket/{name}       terminal_websocket (a shell)
    GET             terminals/{name}                 terminal_page (what scanners fingerprint)
    any             api/contents[/{path}]            contents_get, contents_save (PUT), contents_create
                                                     (POST), contents_rename (PATCH), contents_delete
    any             api/contents/{path}/checkpoints[/{id}]   contents_checkpoints (id word characters or -,
                                                     last: `work/checkpoints/model.pt` is a file)
    POST            api/contents/{path}/trust        contents_trust
    GET             api/kernelspecs[/{name}]         kernelspecs

`jupyter.token_in_url` says a `token` query parameter was sent (its value is redacted from
`http.url` by inspector.redact and never copied here); `jupyter.credentials_present` says any
credential was: that token, an Authorization header, or a Jupyter/JupyterHub login cookie. A
kernel created without either on a reachable server is the classic exposed-notebook takeover.
Routes are matched as Tornado matches them, on the path as sent; when that fails, on the
routed path (:func:`inspector.protocols.webapi.routing_path`: percent-decoded, repeated slashes
merged), kept in `jupyter.routed_path`, so an encoded route is still recorded (Tornado answers
it 404). An encoded unreserved character raises the anomaly `jupyter_path_obfuscated`.
The WebSocket frames after the 101 (the code sent to a kernel) are not parsed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from inspector.fields import declare
from inspector.protocols import webapi
from inspector.protocols.webapi import prune, text

LAYER = "jupyter"

NAME_CHARS = 256
PATH_CHARS = 1024

_ROUTE = re.compile(
    r".*?/(?:api/(kernels|sessions|terminals|contents|kernelspecs)(?:/(.*))?|terminals/(?:(websocket)/)?([^/]+))"
)
#: Jupyter Server's checkpoint routes: {path}/checkpoints and {path}/checkpoints/{id}, id `[\w-]+` and last.
_CHECKPOINT = re.compile(r"(?:(.*)/)?checkpoints(?:/([\w-]+))?")
_KERNEL_ACTIONS = {"channels": "kernel_channels", "interrupt": "kernel_interrupt", "restart": "kernel_restart"}
_COLLECTION = {
    ("kernels", "GET"): "kernel_list", ("kernels", "POST"): "kernel_create",
    ("sessions", "GET"): "session_list", ("sessions", "POST"): "session_create",
    ("terminals", "GET"): "terminal_list", ("terminals", "POST"): "terminal_create",
}
_ITEM = {
    ("kernels", "GET"): "kernel_info", ("kernels", "DELETE"): "kernel_delete",
    ("sessions", "GET"): "session_info", ("sessions", "PATCH"): "session_update",
    ("sessions", "DELETE"): "session_delete",
    ("terminals", "GET"): "terminal_info", ("terminals", "DELETE"): "terminal_delete",
}
_CONTENTS = {"GET": "contents_get", "PUT": "contents_save", "POST": "contents_create", "PATCH": "contents_rename",
             "DELETE": "contents_delete"}
_LOGIN_COOKIES = ("username-", "jupyterhub-")


def _contents(method: str, rest: str, unquote: Callable[[str], str]) -> tuple[str, dict[str, Any]]:
    """A contents route as Jupyter Server's handlers take it (checkpoints, trust, then any path)."""
    match = _CHECKPOINT.fullmatch(rest)
    if match is not None:
        fields = {"path": unquote(match.group(1) or "")[:PATH_CHARS]}
        if match.group(2) is not None:
            fields["checkpoint_id"] = unquote(match.group(2))[:NAME_CHARS]
        return "contents_checkpoints", fields
    if rest.endswith("/trust") or rest == "trust":
        return "contents_trust", {"path": unquote(rest[:-len("trust")].rstrip("/"))[:PATH_CHARS]}
    return _CONTENTS.get(method, "contents_other"), {"path": unquote(rest)[:PATH_CHARS]}


def _route(method: str, path: str, unquote: Callable[[str], str]) -> tuple[str, dict[str, Any]] | None:
    if "api/" not in path and "terminals/" not in path:  # most paths: no need for the pattern
        return None
    match = _ROUTE.fullmatch(path)
    if match is None:
        return None
    resource, rest, websocket, terminal = match.groups()
    if resource is None:
        name = unquote(terminal)[:NAME_CHARS]
        return ("terminal_websocket" if websocket else "terminal_page"), {"terminal_name": name}
    rest = (rest or "").strip("/")
    if resource == "contents":
        return _contents(method, rest, unquote)
    if resource == "kernelspecs":
        return "kernelspecs", ({"kernel_name": unquote(rest)[:NAME_CHARS]} if rest else {})
    if not rest:
        return _COLLECTION.get((resource, method), f"{resource}_other"), {}
    item, _, action = rest.partition("/")
    item = unquote(item)[:NAME_CHARS]
    key = {"kernels": "kernel_id", "sessions": "session_id", "terminals": "terminal_name"}[resource]
    if action:
        api = _KERNEL_ACTIONS.get(action, f"{resource}_other") if resource == "kernels" else f"{resource}_other"
        return api, {key: item}
    return _ITEM.get((resource, method), f"{resource}_other"), {key: item}


def _credentials(request: Any, token_in_url: bool) -> bool:
    if token_in_url or request.header("authorization") is not None:
        return True
    for name, value in request.headers:
        if name == "cookie" and any(c.strip().startswith(_LOGIN_COOKIES) for c in value.split(";")):
            return True
    return False


def _body(ctx: Any, api: str, obj: dict[str, Any]) -> None:
    body = webapi.read_json(ctx.exchange.request, ctx.anomaly, "jupyter_request", required=False)
    if not isinstance(body, dict):
        return
    if api == "kernel_create":
        obj["kernel_name"] = text(body.get("name"), NAME_CHARS)
    elif api in ("session_create", "session_update"):
        kernel = body.get("kernel")
        if isinstance(kernel, dict):
            obj["kernel_name"] = text(kernel.get("name"), NAME_CHARS)
            obj["kernel_id"] = obj.get("kernel_id") or text(kernel.get("id"), NAME_CHARS)
        obj["path"] = text(body.get("path"), PATH_CHARS)
        obj["content_type"] = text(body.get("type"), NAME_CHARS)
    elif api in ("contents_save", "contents_create"):
        obj["content_type"] = text(body.get("type"), NAME_CHARS)
        obj["content_format"] = text(body.get("format"), NAME_CHARS)
        content = body.get("content")
        if isinstance(content, str):
            obj["content_length"] = len(content)
    elif api == "contents_rename":
        obj["new_path"] = text(body.get("path"), PATH_CHARS)


def _answer(ctx: Any, api: str, obj: dict[str, Any]) -> None:
    response = ctx.exchange.response
    if response is None or not response.body or api not in ("kernel_create", "session_create", "terminal_create"):
        return
    value = webapi.read_json(response, ctx.anomaly, "jupyter_response", required=False)
    if not isinstance(value, dict):
        return
    if api == "kernel_create":
        obj["kernel_id"] = text(value.get("id"), NAME_CHARS)
        obj["kernel_name"] = obj.get("kernel_name") or text(value.get("name"), NAME_CHARS)
    elif api == "session_create":
        obj["session_id"] = text(value.get("id"), NAME_CHARS)
        kernel = value.get("kernel")
        if isinstance(kernel, dict):
            obj["kernel_id"] = text(kernel.get("id"), NAME_CHARS)
    else:
        obj["terminal_name"] = text(value.get("name"), NAME_CHARS)


def build(ctx: Any) -> dict[str, Any] | None:
    """The `jupyter` object of an exchange, or None when it is not a Jupyter Server call."""
    request = ctx.exchange.request
    if request is None or "s3" in ctx.record:  # an S3 call whatever its path (bucket `models`, ...)
        return None
    # Tornado matches the path as sent and unquotes the captured names; the routed path (decoded,
    # slashes merged) is the fallback, so an encoded or doubled route is still seen (and 404s there).
    method = request.method
    route, routed, hidden = webapi.route_request(ctx, lambda path, unquote: _route(method, path, unquote),
                                                 merge_slashes=True)
    if route is None:
        return None
    api, fields = route
    token_in_url = "token" in webapi.query_params(request.path)
    obj: dict[str, Any] = {"api": api, **fields, "token_in_url": token_in_url,
                           "credentials_present": _credentials(request, token_in_url)}
    webapi.note_routing(ctx, LAYER, obj, routed, hidden)
    upgrade = (request.header("upgrade") or "").lower()
    if upgrade:
        obj["websocket"] = upgrade == "websocket"
    if request.body and request.method in ("POST", "PUT", "PATCH"):
        _body(ctx, api, obj)
    _answer(ctx, api, obj)
    return prune(obj)


declare(LAYER, [
    ("jupyter.api", "string", "Operation: kernel_list, kernel_create, kernel_info, kernel_delete, kernel_interrupt, "
     "kernel_restart, kernel_channels, session_*, terminal_list, terminal_create, terminal_info, terminal_delete, "
     "terminal_websocket, terminal_page, contents_get, contents_save, contents_create, contents_rename, "
     "contents_delete, contents_checkpoints, contents_trust, kernelspecs."),
    ("jupyter.checkpoint_id", "string", "Checkpoint id of api/contents/{path}/checkpoints/{id}."),
    ("jupyter.routed_path", "string", "The path percent-decoded with repeated slashes merged, present only when the "
     "path as sent (http.url) does not route."),
    ("jupyter.kernel_name", "string", "Kernel spec name (python3, ir, ...) of a kernel or session creation."),
    ("jupyter.kernel_id", "string", "Kernel id (path, session body or creation answer)."),
    ("jupyter.session_id", "string", "Session id."),
    ("jupyter.terminal_name", "string", "Terminal name (path or creation answer)."),
    ("jupyter.path", "string", f"Contents path (percent-decoded) or session path, first {PATH_CHARS} characters."),
    ("jupyter.new_path", "string", "Target path of a contents rename."),
    ("jupyter.content_type", "string", "Body `type`: notebook, file, directory."),
    ("jupyter.content_format", "string", "Body `format`: text, base64, json."),
    ("jupyter.content_length", "integer", "Characters of a saved file's `content`."),
    ("jupyter.token_in_url", "boolean", "A `token` query parameter was sent (value redacted from http.url)."),
    ("jupyter.credentials_present", "boolean", "A token (query), Authorization header or login cookie was sent."),
    ("jupyter.websocket", "boolean", "The request asks to upgrade to WebSocket."),
])
