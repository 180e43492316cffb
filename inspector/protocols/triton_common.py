"""What the REST and gRPC halves of the `triton` layer share: record caps, text cutting, anomaly
de-duplication, and the summaries of management requests (log and trace settings, repository
load parameters, model configs) that both transports carry in different encodings.

Every string a peer controls is cut (MAX_NAME for names and ids, MAX_TEXT for paths, keys and
messages) and every list is capped (MAX_LIST), so a record stays small whatever the request.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from typing import Any

from inspector import jsonio

#: Model, tensor, parameter and setting names, request ids: characters kept.
MAX_NAME = 256
#: File paths, shared-memory keys, error messages: characters kept.
MAX_TEXT = 1024
#: Inputs, outputs, file overrides, names listed per record.
MAX_LIST = 64
#: Request parameters kept in `triton.parameters`.
MAX_PARAMETERS = 32
#: Values of a list-valued setting (trace_level) kept.
MAX_SETTING_VALUES = 16
#: Distinct models listed for a ModelStreamInfer stream.
MAX_STREAM_MODELS = 16

#: The logging extension's settings and the type each has in a well-formed request.
LOG_SETTING_KEYS = ("log_file", "log_info", "log_warnings", "log_errors", "log_verbose_level", "log_format")
#: Trace settings that hold a list of strings; the others are single strings.
TRACE_LIST_KEYS = ("trace_level", "trace_config")
TRACE_STRING_KEYS = ("trace_file", "trace_rate", "trace_count", "log_frequency", "trace_mode")
TRACE_SETTING_KEYS = TRACE_STRING_KEYS + TRACE_LIST_KEYS

FILE_OVERRIDE_PREFIX = "file:"

_B64_DELETE = str.maketrans("", "", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")

Reporter = Callable[[str, str], None]


def cut(text: str, limit: int = MAX_NAME) -> str:
    return text if len(text) <= limit else text[:limit]


def pb_text(value: bytes, limit: int = MAX_NAME) -> str:
    """A protobuf string field as text (invalid UTF-8 replaced), cut to `limit`."""
    if len(value) <= limit:  # the usual short name: no slicing, no second cut
        return value.decode("utf-8", "replace")
    text = value[:limit * 4].decode("utf-8", "replace")
    return text if len(text) <= limit else text[:limit]


def scalar(value: Any, limit: int = MAX_TEXT) -> Any:
    """A JSON value as a record keeps it: scalars as they are (strings cut, non-finite floats as
    text), containers as compact JSON text."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # NaN / Infinity are not JSON
    if isinstance(value, str):
        return cut(value, limit)
    return cut(json.dumps(value, separators=(",", ":"), default=str)[:limit * 2], limit)


class AnomalyOnce:
    """Forwards each anomaly event to `report` once per record (a record can hit one many times)."""

    __slots__ = ("_report", "_seen")

    def __init__(self, report: Reporter) -> None:
        self._report = report
        self._seen: set[str] = set()

    def __call__(self, event: str, message: str) -> None:
        if event in self._seen:
            return
        self._seen.add(event)
        self._report(event, cut(message, MAX_TEXT))


# --- parameters ------------------------------------------------------------------------------


def parameters_object(items: Iterable[tuple[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """`(parameters, names)`: at most MAX_PARAMETERS values kept, every name listed (capped)."""
    kept: dict[str, Any] = {}
    names: list[str] = []
    for key, value in items:
        key = cut(key)
        if len(names) < MAX_LIST:
            names.append(key)
        if len(kept) < MAX_PARAMETERS:
            kept[key] = scalar(value, MAX_NAME)
    return kept, names


# --- log and trace settings ------------------------------------------------------------------


def log_settings_object(items: Iterable[tuple[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """`(log_settings, setting_names)` from the settings a request sends, values as sent."""
    settings: dict[str, Any] = {}
    names: list[str] = []
    for key, value in items:
        if len(names) < MAX_LIST:
            names.append(cut(key))
        if key in LOG_SETTING_KEYS:
            settings[key] = scalar(value)
    return settings, names


def trace_settings_object(items: Iterable[tuple[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """`(trace_settings, setting_names)`: trace_level / trace_config as lists of strings, the other
    settings as one string (several values joined by commas); null when the request clears one."""
    settings: dict[str, Any] = {}
    names: list[str] = []
    for key, value in items:
        if len(names) < MAX_LIST:
            names.append(cut(key))
        if key not in TRACE_SETTING_KEYS:
            continue
        values = _strings(value)
        if values is None:
            settings[key] = None
        elif key in TRACE_LIST_KEYS:
            settings[key] = values[:MAX_SETTING_VALUES]
        else:
            settings[key] = cut(",".join(values[:MAX_SETTING_VALUES]), MAX_TEXT)
    return settings, names


def _strings(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, list):
        if not value:
            return None
        return [cut(v if isinstance(v, str) else json.dumps(v, default=str), MAX_TEXT)
                for v in value[:MAX_SETTING_VALUES]]
    if isinstance(value, str):
        return [cut(value, MAX_TEXT)]
    return [cut(json.dumps(value, default=str), MAX_TEXT)]


# --- model repository ------------------------------------------------------------------------


class RepositoryRequest:
    """Accumulates what a repository load/unload/index request carries, for `triton.repository`."""

    __slots__ = ("config_backend", "config_bytes", "config_platform", "file_override_bytes",
                 "file_override_count", "file_overrides", "name", "ready", "unload_dependents")

    def __init__(self) -> None:
        self.name: str | None = None
        self.file_overrides: list[str] = []
        self.file_override_count = 0
        self.file_override_bytes = 0
        self.config_bytes: int | None = None
        self.config_backend: str | None = None
        self.config_platform: str | None = None
        self.unload_dependents: bool | None = None
        self.ready: bool | None = None

    def add_file(self, key: str, size: int) -> None:
        """A `file:<path>` override of `size` bytes (its content is never kept)."""
        self.file_override_count += 1
        self.file_override_bytes += size
        if len(self.file_overrides) < MAX_LIST:
            self.file_overrides.append(cut(key[len(FILE_OVERRIDE_PREFIX):], MAX_TEXT))

    def add_config(self, text: str | None, size: int) -> None:
        """The `config` parameter: its size, and backend/platform when its JSON is readable."""
        self.config_bytes = size
        if text is None:
            return
        try:
            config = jsonio.loads(text)
        except (ValueError, RecursionError):
            return
        if isinstance(config, dict):
            backend, platform = config.get("backend"), config.get("platform")
            if isinstance(backend, str):
                self.config_backend = cut(backend)
            if isinstance(platform, str):
                self.config_platform = cut(platform)

    def as_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {}
        if self.name:
            record["name"] = self.name
        if self.file_override_count:
            record["file_overrides"] = self.file_overrides
            record["file_override_count"] = self.file_override_count
            record["file_override_bytes"] = self.file_override_bytes
        if self.config_bytes is not None:
            config: dict[str, Any] = {"bytes": self.config_bytes}
            if self.config_backend is not None:
                config["backend"] = self.config_backend
            if self.config_platform is not None:
                config["platform"] = self.config_platform
            record["config"] = config
        if self.unload_dependents is not None:
            record["unload_dependents"] = self.unload_dependents
        if self.ready is not None:
            record["ready"] = self.ready
        return record


def base64_decoded_size(text: str) -> int | None:
    """Bytes a base64 string decodes to (padding and line breaks allowed); None when it is not base64."""
    if not text.isascii():
        return None
    compact = text.replace("\n", "").replace("\r", "")
    if len(compact) % 4:
        return None
    padding = len(compact) - len(compact.rstrip("="))
    if padding > 2:
        return None
    body = compact[:len(compact) - padding]
    if body.translate(_B64_DELETE):
        return None
    return len(compact) // 4 * 3 - padding
