"""The addon's mitmproxy options: declarations with their help, and pure parsers for their values.

Every option is named `inspector_*` and set like any mitmproxy option
(`mitmdump -s addons/inspector_addon.py --set inspector_rules=signatures/ ...`). Parsers are
plain functions raising ValueError with the reason; the addon turns that into mitmproxy's
OptionsError, which rejects the whole update (at startup: mitmdump exits with the message).
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

DEFAULT_METRICS = "127.0.0.1:9464"
DEFAULT_READ_SIZE = 256 * 1024  # inspector/live/readsize.py
DEFAULT_STREAM_METHODS = ("/inference.GRPCInferenceService/ModelStreamInfer",)


class OptionSpec(NamedTuple):
    name: str
    typespec: Any
    default: Any
    help: str
    choices: Sequence[str] | None = None


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("inspector_rules", Sequence[str], [],
               "Rule files or directories (repeatable). Empty: the shipped signatures/ (or "
               "$INSPECTOR_SIGNATURES). A set that fails validation is refused whole: at startup the proxy "
               "does not start, on reload (SIGHUP) the running rules stay."),
    OptionSpec("inspector_config", str | None, None,
               "Site config with rule variables, suppressions and engine bounds, laid over the shipped "
               "default config. Reloaded with the rules on SIGHUP."),
    OptionSpec("inspector_policy", str | None, None,
               "Segmentation policy file (docs/policy.md): every record gets src_zone and dest_zone (the "
               "upstream's zone), and a flow the policy does not allow gives a policy record (alerted by "
               "signatures/policy/). Reloaded with the rules on SIGHUP."),
    OptionSpec("inspector_eve", str, "eve.json",
               "Where EVE JSON records go: a file (appended to, reopened on SIGHUP for log rotation) or - for "
               "stdout. Alerts are written and flushed before a block response leaves."),
    OptionSpec("inspector_log_transactions", bool, True,
               "Write every transaction and anomaly record, not only alerts."),
    OptionSpec("inspector_metrics", str, DEFAULT_METRICS,
               "HOST:PORT of the Prometheus exporter (/metrics) and health endpoint (/healthz). Loopback by "
               "default: expose it deliberately. 'off' disables it."),
    OptionSpec("inspector_redis", str | None, None,
               "redis:// or rediss:// URL of a Redis shared by the sidecar replicas: rate-rule windows are "
               "counted there, atomically, so limits hold across replicas. Unset: in-process windows."),
    OptionSpec("inspector_redis_timeout", float, 0.05,
               "Seconds a Redis call may take before it counts as failed. On failure rate windows fall back "
               "to in-process counting for inspector_redis_retry seconds, with a metric and a log line."),
    OptionSpec("inspector_redis_retry", float, 5.0,
               "Seconds to stay on in-process rate windows after a Redis failure before trying Redis again."),
    OptionSpec("inspector_fail", str, "open",
               "What an internal error of the inspector does to the traffic it was inspecting: 'open' lets "
               "it pass, 'closed' blocks it. Either way it is counted (inspector_fail_open_total, "
               "inspector_fail_closed_total) and logged.", ("open", "closed")),
    OptionSpec("inspector_uninspectable", str, "block",
               "What happens to a body or gRPC message that cannot be inspected (a compression we cannot "
               "undo): 'block' it, 'alert' (log it and let it pass) or 'allow' it (counted only).",
               ("block", "alert", "allow")),
    OptionSpec("inspector_block_message", str, "blocked by inspector: {signature} (sid {sid})",
               "Text of block responses ({signature}: the rule's title, {sid}: its sid). It reaches the "
               "client: grpc-message, KServe's error, S3's Message."),
    OptionSpec("inspector_stream_threshold", str, "1m",
               "Bodies larger than this (k, m, g suffixes) stream (bodies of unknown length once they outgrow it) "
               "through with bounded memory; their first part is held back and inspected before anything "
               "is forwarded. Smaller bodies are inspected whole before they go on."),
    OptionSpec("inspector_stream_methods", Sequence[str], list(DEFAULT_STREAM_METHODS),
               "gRPC methods (patterns on the :path, * wildcards) inspected message by message while they "
               "stream, in both directions: bidirectional streams hang if buffered."),
    OptionSpec("inspector_h2c_upstreams", Sequence[str], [],
               "Cleartext upstreams (HOST:PORT, or * for all) spoken to in HTTP/2 with prior knowledge (h2c), "
               "as Triton's gRPC port expects. Needs connection_strategy=lazy."),
    OptionSpec("inspector_egress", bool, False,
               "Forward proxy (egress control, docs/egress.md): every request gets an `egress` decision from "
               "the config's egress allowlists, and each CONNECT is an `egress` record the rules can block "
               "before the tunnel opens. Set by `inspector proxy --mode forward`."),
    OptionSpec("inspector_baseline", str | None, None,
               "Anomaly detection (docs/anomaly.md): a baseline file from `inspector baseline learn`, or "
               "'online' to learn from the traffic (nothing reported during the warm-up). Deviations become "
               "anomaly records (anomaly.kind, anomaly.score) that rules alert on. Kept across reloads."),
    OptionSpec("inspector_reload_interval", float, 0.0,
               "Seconds between checks of the rule files, site config and policy for changes (0: off, reload "
               "on SIGHUP only). A change reloads them as SIGHUP does (a set that fails validation is refused "
               "and the running rules stay); a mounted Kubernetes ConfigMap's updates are seen this way."),
    OptionSpec("inspector_baseline_save", str | None, None,
               "Where the anomaly baseline, with what it learned from the traffic, is written (0600, replaced "
               "atomically) at shutdown and on SIGHUP, once past its warm-up; start the next run with "
               "inspector_baseline set to it to go on from there instead of warming up again."),
    OptionSpec("inspector_client_ca", str | None, None,
               "PEM file of the CA(s) client certificates must chain to: clients without a valid certificate "
               "fail the TLS handshake (mTLS), and every record of a connection carries its certificate's "
               "subject as principal.*."),
    OptionSpec("inspector_fast_dispatch", bool, True,
               "Dispatch mitmproxy's hooks without visiting the addons that do not handle them (same order, "
               "same error handling; inspector/live/hookdispatch.py). mitmproxy's own dispatch costs about "
               "0.5 ms of CPU per request with its default addons. Off: mitmproxy's dispatch."),
    OptionSpec("inspector_read_size", int, DEFAULT_READ_SIZE,
               "Bytes mitmproxy asks of a TCP connection per read (mitmproxy's own: 65535; up to 16 MiB). Each "
               "read is one event through mitmproxy's layers, so larger reads make a large body cheaper: about "
               "half the CPU of a 64 MiB model pull at 256 KiB (inspector/live/readsize.py). Applies to "
               "connections opened after a change."),
    OptionSpec("inspector_malloc_tuning", bool, True,
               "Serve the proxy's buffers under 1 MiB from glibc's heap instead of fresh mmap pages, keeping up "
               "to 16 MiB of freed heap for reuse (inspector/live/malloctune.py): without it, reads of a large "
               "body can each cost page faults. Off: glibc's starting thresholds. No effect off glibc."),
    OptionSpec("inspector_gc_freeze", bool, True,
               "Once the proxy runs (and after each rule reload), keep the objects it loaded out of the garbage "
               "collector's full collections (gc.freeze; inspector/live/gcfreeze.py): a full collection then "
               "walks what requests left, not the whole proxy, and pauses requests for a few ms instead of "
               "tens. Off: the collector walks everything."),
)


def parse_block_message(template: str) -> str:
    """`inspector_block_message`: text with `{signature}` and `{sid}` placeholders (`{{` and `}}`
    for braces). Another placeholder, or a brace left open, is refused: the client would get
    the template itself."""
    import string

    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"inspector_block_message: {exc} (write {{{{ and }}}} for braces)") from None
    unknown = sorted({name for name in fields if name not in ("signature", "sid")})
    if unknown:
        raise ValueError(f"inspector_block_message: unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)}"
                         " (only {signature} and {sid})")
    return template


def parse_size(text: str) -> int:
    """`1m`, `512k`, `2g`, `1048576` -> bytes."""
    value = text.strip().lower()
    units = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
    multiplier = 1
    if value[-1:] in units:
        multiplier = units[value[-1]]
        value = value[:-1]
    elif value.endswith("b"):
        value = value[:-1]
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{text!r} is not a size like 512k, 1m, 2g") from None
    if number < 0:
        raise ValueError(f"size {text!r} is negative")
    return int(number * multiplier)


def parse_hostport(text: str, *, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """`HOST:PORT`, `[v6]:PORT` or `PORT` -> (host, port)."""
    value = text.strip()
    host, port_text = default_host, value
    if value.startswith("["):
        end = value.find("]")
        if end == -1 or value[end + 1:end + 2] != ":":
            raise ValueError(f"{text!r} is not [IPv6]:PORT")
        host, port_text = value[1:end], value[end + 2:]
    elif ":" in value:
        host, _, port_text = value.rpartition(":")
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number 0-65535")
    return host or default_host, int(port_text)


def parse_metrics(text: str) -> tuple[str, int] | None:
    """The exporter's address, or None when disabled."""
    if text.strip().lower() in ("", "off", "none", "false", "no"):
        return None
    return parse_hostport(text)


def parse_stream_methods(patterns: Sequence[str]) -> tuple[str, ...]:
    """gRPC :path patterns; a pattern without a leading / gets one."""
    methods = []
    for pattern in patterns:
        pattern = pattern.strip()
        if not pattern:
            continue
        if not pattern.startswith(("/", "*")):
            pattern = "/" + pattern
        if pattern.count("/") < 2 and not pattern.endswith("*"):
            raise ValueError(f"{pattern!r} is not a gRPC method path like /package.Service/Method")
        methods.append(pattern)
    return tuple(methods)


def matches_method(path: str, patterns: tuple[str, ...]) -> bool:
    return _method_matcher(patterns)(path) is not None


@functools.lru_cache(maxsize=8)
def _method_matcher(patterns: tuple[str, ...]) -> Callable[[str], re.Match | None]:
    """The patterns as one compiled regex (fnmatch syntax, case-sensitive)."""
    if not patterns:
        return lambda path: None
    return re.compile("|".join(f"(?:{fnmatch.translate(pattern)})" for pattern in patterns)).match


def parse_h2c_upstreams(values: Sequence[str]) -> frozenset[str]:
    """`HOST:PORT` entries (normalized lower-case) or `*`."""
    out = set()
    for value in values:
        value = value.strip().lower()
        if not value:
            continue
        if value == "*":
            out.add("*")
            continue
        host, port = parse_hostport(value, default_host="")
        if not host:
            raise ValueError(f"{value!r}: h2c upstreams are HOST:PORT")
        out.add(f"{host}:{port}")
    return frozenset(out)


def parse_redis_url(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    value = value.strip()
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"{value!r} is not a redis://, rediss:// or unix:// URL")
    return value


def parse_positive(value: float, name: str) -> float:
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return float(value)
