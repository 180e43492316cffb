"""Site configuration for rules: variables, suppressions, engine bounds.

Rules stay generic and sites say what is normal for them, like Suricata's `vars`::

    vars:
      ADMIN_NETS: [10.0.0.0/8]          # a list variable expands into the rule's value list
      MAX_TENSOR_ELEMENTS: 100000000    # a scalar variable replaces the value
    suppress:
      - {sid: 3100001, src_ip: 10.20.0.0/16, reason: ...}
    engine:
      rate_max_keys: 100000

A rule refers to `$NAME` as a whole value or as a list element; an unknown name is a load
error. The shipped `inspector/data/default-config.yaml` defines and documents every variable the
shipped rules use; a site config is laid over it (its variables replace or add to the
defaults; `suppress` and `engine` come from the site file), so a site only writes what differs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from inspector import fields
from inspector.fields import FieldSpec
from inspector.rules.errors import RuleError, RuleLoadError
from inspector.rules.matchers import CompileContext
from inspector.rules.suppress import Suppressions, compile_suppressions
from inspector.rules.yamlsource import line_of, load_yaml_file, load_yaml_text

DEFAULT_RATE_MAX_KEYS = 100_000
DEFAULT_CONFIG_NAME = "default-config.yaml"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TOP_KEYS = ("vars", "suppress", "engine", "egress")
_ENGINE_KEYS = ("rate_max_keys",)


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Variables rules may use, suppressions, and engine bounds."""

    variables: Mapping[str, Any] = field(default_factory=dict)
    #: Where each variable is defined: NAME -> (file, line of the name, line of each list item),
    #: so a rule's error about a variable's value names the config line that holds it.
    variable_sources: Mapping[str, tuple[str, int, tuple[int, ...]]] = field(default_factory=dict)
    suppressions: Suppressions = field(default_factory=Suppressions)
    #: Rate-window keys kept (LRU) across all rate rules; the oldest is evicted and counted.
    rate_max_keys: int = DEFAULT_RATE_MAX_KEYS
    #: Files this config was read from, for messages.
    sources: tuple[str, ...] = ()
    #: The `egress:` section (allowlists of the forward proxy; inspector.egress reads it).
    egress: Any = None


def default_config_text() -> str:
    """The shipped default config, documented."""
    return resources.files("inspector").joinpath("data", DEFAULT_CONFIG_NAME).read_text(encoding="utf-8")


def load_config(path: str | Path | None = None, *, catalogue: Mapping[str, FieldSpec] | None = None,
                defaults: bool = True) -> Config:
    """The shipped defaults, with the site file at `path` laid over them.

    Raises RuleLoadError listing every problem (file and line) when either does not validate.
    """
    errors: list[RuleError] = []
    documents: list[tuple[str, Any]] = []
    if defaults:
        default_name = f"<inspector>/data/{DEFAULT_CONFIG_NAME}"
        doc, problems = load_yaml_text(default_config_text(), default_name)
        errors += problems
        documents.append((default_name, doc))
    if path is not None:
        doc, problems = load_yaml_file(path)
        errors += problems
        documents.append((str(path), doc))
    if errors:
        raise RuleLoadError(errors)
    if catalogue is None:
        catalogue = fields.catalogue()
    variables: dict[str, Any] = {}
    sources: dict[str, tuple[str, int, tuple[int, ...]]] = {}
    suppress_raw: tuple[str, Any, int] | None = None
    rate_max_keys = DEFAULT_RATE_MAX_KEYS
    egress: Any = None
    for file, doc in documents:
        if doc is None:
            continue
        if not isinstance(doc, dict):
            errors.append(RuleError(file, 0, "a config file is a map with vars:, suppress:, engine:, egress:"))
            continue
        for key in doc:
            if key not in _TOP_KEYS:
                errors.append(RuleError(file, line_of(doc, key, 0),
                                        f"unknown config key {key!r} (known: {', '.join(_TOP_KEYS)})"))
        variables.update(_variables(doc.get("vars"), file, line_of(doc, "vars", 0), errors, sources))
        if "suppress" in doc:
            suppress_raw = (file, doc["suppress"], line_of(doc, "suppress", 0))
        if "engine" in doc:
            rate_max_keys = _engine(doc["engine"], file, line_of(doc, "engine", 0), errors, rate_max_keys)
        if "egress" in doc:
            egress = doc["egress"]
            try:
                from inspector.egress.policy import EgressPolicy

                EgressPolicy.from_section(egress)
            except ValueError as exc:
                errors.append(RuleError(file, line_of(doc, "egress", 0), str(exc)))
    suppressions = Suppressions()
    if suppress_raw is not None:
        file, raw, line = suppress_raw
        ctx = CompileContext(file=file, catalogue=catalogue, variables=variables, closure=None,
                             variable_sources=sources)
        suppressions = compile_suppressions(raw, line, ctx)
        errors += ctx.errors
    if errors:
        raise RuleLoadError(errors)
    return Config(variables=variables, variable_sources=sources, suppressions=suppressions,
                  rate_max_keys=rate_max_keys, sources=tuple(file for file, _ in documents), egress=egress)


def _variables(raw: Any, file: str, line: int, errors: list[RuleError],
               sources: dict[str, tuple[str, int, tuple[int, ...]]]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        errors.append(RuleError(file, line, "vars: must be a map of NAME: value"))
        return {}
    result: dict[str, Any] = {}
    for name, value in raw.items():
        where = line_of(raw, name, line)
        if not isinstance(name, str) or not _NAME.match(name):
            errors.append(RuleError(file, where, f"bad variable name {name!r} (letters, digits, _)"))
            continue
        if isinstance(value, list):
            if not all(_is_scalar(v) for v in value):
                errors.append(RuleError(file, where, f"${name}: list items must be strings or numbers"))
                continue
            result[name] = list(value)
            sources[name] = (file, where, tuple(line_of(value, i, where) for i in range(len(value))))
        elif _is_scalar(value):
            result[name] = value
            sources[name] = (file, where, ())
        else:
            shown = "null (use [] for an empty list)" if value is None else type(value).__name__
            errors.append(RuleError(file, where, f"${name}: a variable is a scalar or a list, not {shown}"))
    return result


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _engine(raw: Any, file: str, line: int, errors: list[RuleError], current: int) -> int:
    if not isinstance(raw, dict):
        errors.append(RuleError(file, line, "engine: must be a map"))
        return current
    for key, value in raw.items():
        where = line_of(raw, key, line)
        if key not in _ENGINE_KEYS:
            known = ", ".join(_ENGINE_KEYS)
            errors.append(RuleError(file, where, f"unknown engine setting {key!r} (known: {known})"))
        elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
            errors.append(RuleError(file, where, f"{key} must be a positive integer, got {value!r}"))
        else:
            current = value
    return current
