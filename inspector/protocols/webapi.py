"""What the JSON-over-HTTP API layers share: body decoding, query strings, capped values, streams.

The `llm`, `feast`, `ray`, `torchserve`, `mlflow`, `ollama` and `jupyter` layers all read JSON
bodies, query strings and (for LLM servers) server-sent events or newline-delimited JSON. The
helpers here never raise on peer input: a body that is not JSON is reported through the layer's
`report(event, message)` callback (normally `LayerContext.anomaly`) and read as None.

Scalars are read the way the lenient (pydantic "lax") servers behind these APIs read them, so a
value sent as a string cannot slip past a numeric rule: `"2"` is the integer 2, `"0.5"` the
number 0.5, `"true"`/`"yes"`/`"1"` are true. Values copied into records go through the
`text`/`text_list` caps, and URLs a peer sends inside a
body or a query (a model archive URL, an artifact location) through :func:`redact_inner_url`,
which hides user-info passwords and secret query values the way `http.url` is redacted.

Routing: every path-routed layer matches its routes through :func:`route_request` on
:func:`routing_path`, the path the server behind it routes on, not only on the path as sent (each
variant decoded at most once per exchange, and only for a path with `%` or, merged, `//`).
uvicorn/Starlette (Feast), Flask/Werkzeug (MLflow), Netty (TorchServe) and Go (Ollama)
percent-decode the path before routing, `%2F` too; aiohttp (Ray) decodes all but `%2F`; only
Werkzeug merges repeated slashes. So
`/%61pi/2.0/mlflow//experiments%2Fcreate` is `experiments/create` to MLflow and must be to the
inspector. Dot segments are kept, as those servers keep them (a `..` inside an artifact path
stays visible to the rules). When the
path as sent, matched literally, would not reach the route the server takes, the layer's record
carries `<layer>.routed_path` (a space sent as `%20` inside a name is not that), and an encoded
unreserved character (`%61` for `a`, `%2D` for `-`: no client needs to encode those)
raises the anomaly `<layer>_path_obfuscated` (`mlflow_path_obfuscated`, ...), both said once per
exchange (:func:`note_routing`: on an Ollama chat, by the `ollama` object, not again by `llm`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote, unquote_plus

from inspector import jsonio
from inspector.http import HttpMessage
from inspector.redact import redact_url

Report = Callable[[str, str], None]

#: Query parameters read per request; the rest are ignored.
MAX_QUERY_PARAMS = 64
#: Longest string any of these layers copies into a record unless it says otherwise.
DEFAULT_TEXT_CHARS = 1024
#: Longest list of names any of these layers copies into a record unless it says otherwise.
DEFAULT_LIST_ITEMS = 64

_JSON_OPENERS = frozenset(b"{[")
_WHITESPACE = b" \t\r\n"


def path_only(target: str) -> str:
    """The path of a request target, without query or fragment."""
    end = len(target)
    for sep in "?#":
        at = target.find(sep)
        if at != -1 and at < end:
            end = at
    return target[:end]


#: Longest path (characters, as sent) that is decoded for routing; longer ones are routed as sent.
MAX_ROUTING_PATH = 8192
_REPEATED_SLASHES = re.compile(r"//+")
_ENCODED_SLASH = re.compile(r"%2[Ff]")
_ENCODED_UNRESERVED = re.compile(r"%(?:[46][1-9A-Fa-f]|[57][0-9Aa]|3[0-9]|2[Dd]|2[Ee]|5[Ff]|7[Ee])")


def routing_path(target: str, *, merge_slashes: bool = False, decode_slash: bool = True) -> str:
    """The path a web framework routes `target` on: percent-decoded once, the query and fragment dropped.

    `merge_slashes`: repeated slashes become one (Werkzeug's `merge_slashes`, nginx in front).
    `decode_slash`: `%2F` is decoded too (uvicorn/Starlette, Werkzeug, Netty, Go); aiohttp keeps it.
    Dot segments are kept: these servers route them as sent.
    """
    path = path_only(target)
    if len(path) > MAX_ROUTING_PATH or not _routing_changes(path, merge_slashes):
        return path
    if "%" in path:
        if decode_slash:
            path = unquote(path, errors="replace")
        else:
            path = "%2F".join(unquote(part, errors="replace") for part in _ENCODED_SLASH.split(path))
    if merge_slashes and "//" in path:
        path = _REPEATED_SLASHES.sub("/", path)
    return path


def _routing_changes(path: str, merge_slashes: bool) -> bool:
    """Whether :func:`routing_path` can read `path` (without its query) as another path."""
    return "%" in path or (merge_slashes and "//" in path)


def as_is(value: str) -> str:
    """A path segment of a routing path, already decoded: kept as it is (see :func:`unquote_path`)."""
    return value


def path_obfuscation(target: str) -> str | None:
    """Why the path of `target` hides its route (an encoded unreserved character), or None."""
    if "%" not in target:
        return None
    found = _ENCODED_UNRESERVED.search(path_only(target)[:MAX_ROUTING_PATH])
    if found is None:
        return None
    return f"path percent-encodes the unreserved character {unquote(found.group(0))!r} ({found.group(0)}): " \
        "the route is hidden from exact-match filters"


def _routed(ctx: Any, raw: str, merge_slashes: bool, decode_slash: bool) -> str:
    """:func:`routing_path` of the request path `raw` (already without its query), once per exchange
    and variant (memo on the `LayerContext`: several layers route the same exchange); `raw` itself
    when there is nothing to decode or merge."""
    if not _routing_changes(raw, merge_slashes):
        return raw
    key = (merge_slashes, decode_slash)
    memo = ctx.routed_paths
    if memo is None:
        memo = ctx.routed_paths = {}
    routed = memo.get(key)
    if routed is None:
        routed = memo[key] = routing_path(raw, merge_slashes=merge_slashes, decode_slash=decode_slash)
    return routed


def route_request[R](ctx: Any, route: Callable[[str, Callable[[str], str]], R | None], *,
                     merge_slashes: bool = False, decode_slash: bool = True,
                     same: Callable[[R, R], bool] | None = None) -> tuple[R | None, str, bool]:
    """(route, path, hidden): the exchange's request routed as the server behind a layer routes it.

    `route(path, unquote)` is the layer's route of `path`, or None; `unquote` decodes a segment it
    takes from `path` (:func:`unquote_path` on the path as sent, :func:`as_is` on a routing path,
    already decoded). `merge_slashes`, `decode_slash`: the server's :func:`routing_path`.

    By default the path as sent is routed first (Tornado matches it and unquotes the captures; a
    path that routes as sent has nothing to decode for the others); when it does not route, its
    routing path, only if that differs. With `same`, the server routes only the routing path
    (Werkzeug): the path as sent is routed too, only when it differs, and `same(as_sent, routed)`
    says whether it reaches that route read literally.

    `path`: the path as sent when it routes so, else the routing path. `hidden`: the path as sent,
    read literally, does not reach the route (for :func:`note_routing`).
    """
    raw = path_only(ctx.exchange.request.path)
    if same is None:
        found = route(raw, unquote_path)
        if found is not None:
            return found, raw, False
        routed = _routed(ctx, raw, merge_slashes, decode_slash)
        if routed == raw:
            return None, raw, False
        found = route(routed, as_is)
        return found, routed, found is not None
    routed = _routed(ctx, raw, merge_slashes, decode_slash)
    found = route(routed, as_is)
    if found is None or routed == raw:
        return found, routed, False
    literal = route(raw, unquote_path)
    return found, routed, literal is None or not same(literal, found)


def note_routing(ctx: Any, layer: str, obj: dict[str, Any], routed: str, hidden: bool) -> None:
    """Say how the path as sent hid its route, once per exchange (the layer below already did:
    the `llm` object of an Ollama chat leaves it to the `ollama` object).

    `hidden`, `routed`: from :func:`route_request`; the record then keeps the routed path in
    `routed_path`. An encoded unreserved character raises the anomaly `<layer>_path_obfuscated`
    either way.
    """
    if ctx.routing_noted:
        return
    ctx.routing_noted = True
    if hidden:
        obj["routed_path"] = routed[:DEFAULT_TEXT_CHARS]
    reason = path_obfuscation(ctx.exchange.request.path)
    if reason is not None:
        ctx.anomaly(f"{layer}_path_obfuscated", reason)


def query_params(target: str) -> dict[str, str]:
    """Query parameters of a request target, percent-decoded; the first value of a repeated key wins."""
    _, sep, query = target.partition("?")
    if not sep or not query:
        return {}
    query = query.split("#", 1)[0]
    params: dict[str, str] = {}
    for part in query.split("&", MAX_QUERY_PARAMS)[:MAX_QUERY_PARAMS]:
        if not part:
            continue
        key, _, value = part.partition("=")
        key = unquote_plus(key, errors="replace")
        if key not in params:
            params[key] = unquote_plus(value, errors="replace")
    return params


def unquote_path(segment: str) -> str:
    """A path segment percent-decoded (not `+`), invalid UTF-8 replaced."""
    return unquote(segment, errors="replace")


def looks_like_json(message: HttpMessage) -> bool:
    """Whether the message declares a JSON body or its body starts like one."""
    if "json" in message.content_type.lower():
        return True
    body = message.body.lstrip(_WHITESPACE)
    return bool(body) and body[0] in _JSON_OPENERS


def read_json(message: HttpMessage | None, report: Report, prefix: str, *, required: bool = True) -> Any:
    """The JSON value of `message`'s body, or None (no body, not JSON, or cut short).

    `prefix` names the anomalies: `<prefix>_truncated` when the body was cut (by the keep cap or
    the capture) before it parsed, `<prefix>_invalid_json` when a whole body does not parse.
    With `required=False` a body that neither declares nor looks like JSON is silently None.
    """
    if message is None or not message.body:
        return None
    if not required and not looks_like_json(message):
        return None
    try:
        return jsonio.loads(message.body)
    except (ValueError, RecursionError) as exc:
        if message.body_truncated:
            report(f"{prefix}_truncated", (f"only the first {len(message.body)} decoded bytes kept (of "
                   f"{message.body_length} {message.decoded} bytes on the wire)" if message.decoded else
                   f"only {len(message.body)} of {message.body_length} body bytes kept") + ": not enough to parse JSON")
        elif not message.complete:
            report(f"{prefix}_truncated", f"body stopped after {len(message.body)} bytes (message cut short) "
                   f"and does not parse as JSON")
        else:
            report(f"{prefix}_invalid_json", f"body is not JSON: {str(exc)[:200]}")
        return None


class DeferredReport:
    """Holds a layer's anomalies until it knows the exchange is its own (claims decided by answers)."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def __call__(self, event: str, message: str) -> None:
        self.items.append((event, message))

    def flush(self, report: Report) -> None:
        for event, message in self.items:
            report(event, message)
        self.items.clear()


def json_object(value: Any, report: Report, prefix: str) -> dict[str, Any] | None:
    """`value` when it is a JSON object; otherwise None, reported as `<prefix>_not_object`."""
    if value is None or isinstance(value, dict):
        return value
    report(f"{prefix}_not_object", f"JSON body is a {type(value).__name__}, not an object")
    return None


# --- capped values ------------------------------------------------------------------------------


def text(value: Any, limit: int = DEFAULT_TEXT_CHARS) -> str | None:
    """`value` capped to `limit` characters when it is a string, else None."""
    if isinstance(value, str):
        return value[:limit]
    return None


def scalar_text(value: Any, limit: int = DEFAULT_TEXT_CHARS) -> str | None:
    """A string, or a number/boolean written as JSON would write it, capped; None otherwise."""
    if isinstance(value, str):
        return value[:limit]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)[:limit]
    return None


def text_list(values: Any, items: int = DEFAULT_LIST_ITEMS, limit: int = 256) -> list[str] | None:
    """The strings of a list (others skipped), at most `items` of `limit` characters; None if not a list."""
    if not isinstance(values, list):
        return None
    out = []
    for value in values:
        if isinstance(value, str):
            out.append(value[:limit])
            if len(out) >= items:
                break
    return out


def keys_list(mapping: Any, items: int = DEFAULT_LIST_ITEMS, limit: int = 256) -> list[str] | None:
    """The keys of a JSON object, capped; None when it is not an object."""
    if not isinstance(mapping, dict):
        return None
    return [str(key)[:limit] for key in list(mapping)[:items]]


def integer(value: Any) -> int | None:
    """An integer from a JSON integer or a decimal string (a query value); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, str):
        stripped = value.strip()
        digits = stripped[1:] if stripped[:1] in "+-" else stripped
        if digits.isascii() and digits.isdigit() and len(digits) <= 19:
            return int(stripped)
    return None


def number(value: Any) -> int | float | None:
    """A JSON number (not a boolean), or a decimal string of a finite one; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str) and 0 < len(value) <= 32:
        try:
            parsed = float(value)
        except ValueError:
            return None
        return parsed if math.isfinite(parsed) else None
    return None


def boolean(value: Any) -> bool | None:
    """A JSON boolean, or a query-string one ("true"/"false"/"1"/"0", any case); None otherwise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
    return None


def first(mapping: dict[str, Any], keys: Iterable[str]) -> Any:
    """The value of the first of `keys` present in `mapping`, or None."""
    for key in keys:
        if key in mapping:
            return mapping[key]
    return None


def prune(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` without its None values (records leave out what was not seen)."""
    return {key: value for key, value in obj.items() if value is not None}


# --- URLs inside bodies -------------------------------------------------------------------------


def redact_inner_url(url: str) -> str:
    """A URL from a body or query, with a user-info password and secret query values hidden."""
    scheme_end = url.find("://")
    if scheme_end != -1:
        rest_start = scheme_end + 3
        authority_end = len(url)
        for sep in "/?#":
            at = url.find(sep, rest_start)
            if at != -1 and at < authority_end:
                authority_end = at
        authority = url[rest_start:authority_end]
        userinfo, at_sign, host = authority.rpartition("@")
        if at_sign and ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            url = f"{url[:rest_start]}{user}:[redacted]@{host}{url[authority_end:]}"
    return redact_url(url)


def url_parts(url: str) -> tuple[str | None, str | None]:
    """(scheme, host) of a URL as sent (lower-case), None where absent. No IDNA, no validation."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        if ":" in url and "/" not in url.split(":", 1)[0]:
            return url.split(":", 1)[0].lower() or None, None
        return None, None
    authority = rest
    for end in "/?#":
        authority = authority.split(end, 1)[0]
    host = authority.rpartition("@")[2]
    if host.startswith("["):
        host = host[1:host.find("]")] if "]" in host else host[1:]
    else:
        host = host.split(":", 1)[0]
    return scheme.lower() or None, host.lower() or None


# --- streamed bodies ----------------------------------------------------------------------------


def sse_events(body: bytes) -> tuple[list[tuple[str, str]], int]:
    """Server-sent events in `body` as `(event name, data)`, and the number of lines read.

    Per the HTML living standard's event-stream rules: lines end in CRLF, LF or CR; `data:`
    lines accumulate (joined by newlines) until a blank line dispatches the event; `event:`
    names it ("" when unnamed); comments (`:`) and other fields are skipped. An event still
    open at the end of the body is dispatched too (the capture may stop mid-stream).
    """
    textual = body.decode("utf-8", "replace")
    if "\r" in textual:
        textual = textual.replace("\r\n", "\n").replace("\r", "\n")
    events: list[tuple[str, str]] = []
    if "\n\n" in textual and "event:" not in textual and ":" not in textual[:1]:
        # Fast path, the usual LLM stream: blocks of one `data:` line each, nothing else.
        blocks = textual.split("\n\n")
        if all(block.startswith("data:") and "\n" not in block for block in blocks if block):
            for block in blocks:
                if block:
                    value = block[5:]
                    events.append(("", value[1:] if value.startswith(" ") else value))
            return events, textual.count("\n") + 1
    name = ""
    data: list[str] = []
    lines = textual.split("\n")
    for line in lines:
        if not line:
            if data:
                events.append((name, "\n".join(data)))
            name, data = "", []
            continue
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
    if data:
        events.append((name, "\n".join(data)))
    return events, len(lines)


def ndjson_values(body: bytes) -> tuple[list[Any], int]:
    """The JSON values of a newline-delimited JSON body, and how many non-empty lines did not parse."""
    values = []
    bad = 0
    for line in body.split(b"\n"):
        if not line.strip():
            continue
        try:
            values.append(jsonio.loads(line))
        except (ValueError, RecursionError):
            bad += 1
    return values, bad


def is_event_stream(message: HttpMessage | None) -> bool:
    return message is not None and message.content_type.lower().startswith("text/event-stream")


def is_ndjson(message: HttpMessage | None) -> bool:
    if message is None:
        return False
    content_type = message.content_type.lower()
    return content_type.startswith(("application/x-ndjson", "application/ndjson", "application/jsonl"))
