"""One rule document -> a validated, compiled Rule, or every problem with its line.

Checks the keys (unknown, missing, types), the metadata formats (UUID, tags, dates), the event
types, the detection (via inspector.rules.matchers and .condition) and the rate block. Nothing
stops at the first problem: a rule author sees all of them at once.
"""

from __future__ import annotations

import datetime
import difflib
import re
import uuid
from collections.abc import Mapping
from typing import Any

from inspector.fields import FieldSpec
from inspector.rules import condition as cond
from inspector.rules.access import make_getter, split_field
from inspector.rules.errors import ConditionError, RuleError
from inspector.rules.hints import IndexHint
from inspector.rules.layers import field_allowed, layer_closure
from inspector.rules.matchers import VARIABLE, CompileContext, VariableLine, compile_selection, resolve_field
from inspector.rules.model import ACTIONS, LEVELS, STATUSES, Rule
from inspector.rules.rate import MAX_COUNT, RateSpec, parse_window
from inspector.rules.yamlsource import line_of

REQUIRED_KEYS = ("title", "id", "sid", "status", "level", "event", "detection")
OPTIONAL_KEYS = ("rev", "description", "author", "date", "modified", "references", "tags",
                 "falsepositives", "category", "rate", "action")
KNOWN_KEYS = REQUIRED_KEYS + OPTIONAL_KEYS
MAX_SID = 2**32 - 1
_TAG = re.compile(r"[a-z0-9_-]+\.[a-z0-9._-]+\Z")
_DATE = re.compile(r"\d{4}[-/]\d{2}[-/]\d{2}\Z")
_SELECTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_RATE_KEYS = ("by", "count", "window")


def build_rule(doc: Any, file: str, *, catalogue: Mapping[str, FieldSpec], variables: Mapping[str, Any],
               known_events: frozenset[str],
               variable_sources: Mapping[str, tuple[str, int, tuple[int, ...]]] | None = None,
               ) -> tuple[Rule | None, list[RuleError]]:
    """Validate and compile one parsed rule document (`variable_sources`: Config.variable_sources,
    for errors about a variable's value)."""
    ctx = CompileContext(file=file, catalogue=catalogue, variables=variables, closure=None,
                         variable_sources=variable_sources or {})
    if not isinstance(doc, dict):
        ctx.error(getattr(doc, "line", 0), "a rule file holds one map (title:, id:, sid:, ...)")
        return None, ctx.errors
    top = getattr(doc, "line", 1)
    for key in doc:
        if key not in KNOWN_KEYS:
            close = difflib.get_close_matches(str(key), KNOWN_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            if key in ("logsource", "timeframe"):
                hint = " (inspector rules use event: instead of logsource:)" if key == "logsource" else \
                    " (use rate: for counting over time)"
            ctx.error(line_of(doc, key, top), f"unknown key {key!r}{hint}")
    for key in REQUIRED_KEYS:
        if key not in doc:
            ctx.error(top, f"missing required key {key!r}")

    def at(key: str) -> int:
        return line_of(doc, key, top)

    title = _text(doc, "title", at, ctx, required=True)
    rule_id = _uuid(doc, at, ctx)
    sid = _integer(doc, "sid", at, ctx, minimum=1, maximum=MAX_SID)
    rev = _integer(doc, "rev", at, ctx, minimum=1, maximum=MAX_SID, default=1)
    status = _choice(doc, "status", STATUSES, at, ctx)
    level = _choice(doc, "level", LEVELS, at, ctx)
    action = _choice(doc, "action", ACTIONS, at, ctx, default="alert")
    description = _text(doc, "description", at, ctx)
    author = _text(doc, "author", at, ctx)
    category = _text(doc, "category", at, ctx)
    date = _date(doc, "date", at, ctx)
    modified = _date(doc, "modified", at, ctx)
    references = _strings(doc, "references", at, ctx)
    falsepositives = _strings(doc, "falsepositives", at, ctx)
    tags = _strings(doc, "tags", at, ctx)
    for index, tag in enumerate(tags):
        if not _TAG.match(tag):
            ctx.error(line_of(doc["tags"], index, at("tags")), f"tag {tag!r} is not namespace.value "
                      "in lower case (e.g. atlas.aml.t0049, cve.2024-0087)")
    events = _events(doc, at, ctx, known_events)
    if events:
        ctx.closure = layer_closure(events)
        ctx.events_label = "/".join(events)
    match, hints, condition_text = _detection(doc.get("detection"), at("detection"), ctx)
    rate = _rate(doc["rate"], at("rate"), ctx) if "rate" in doc else None
    if ctx.errors or match is None:
        return None, ctx.errors
    assert title is not None and rule_id is not None and sid is not None and events
    rule = Rule(
        sid=sid, id=rule_id, rev=rev or 1, title=title, status=status or "", level=level or "",
        events=events, action=action or "alert", category=category or f"{'/'.join(events)} {level}",
        condition=condition_text, description=description or "", author=author or "", date=date,
        modified=modified, references=references, tags=tags, falsepositives=falsepositives, rate=rate,
        file=file, line=top, match=match, hints=hints,
        fields=frozenset(ctx.fields_read) | frozenset(rate.by if rate is not None else ()),
    )
    return rule, []


# --------------------------------------------------------------------------- metadata


def _text(doc: dict, key: str, at: Any, ctx: CompileContext, *, required: bool = False) -> str | None:
    if key not in doc:
        return None
    value = doc[key]
    if not isinstance(value, str) or (required and not value.strip()):
        ctx.error(at(key), f"{key} must be {'a non-empty' if required else 'a'} string")
        return None
    return value.strip() if required else value


def _uuid(doc: dict, at: Any, ctx: CompileContext) -> str | None:
    if "id" not in doc:
        return None
    value = doc["id"]
    try:
        if not isinstance(value, str):
            raise ValueError
        return str(uuid.UUID(value))
    except ValueError:
        ctx.error(at("id"), f"id must be a UUID (e.g. from `uuidgen`), got {value!r}")
        return None


def _integer(doc: dict, key: str, at: Any, ctx: CompileContext, *, minimum: int, maximum: int,
             default: int | None = None) -> int | None:
    if key not in doc:
        return default
    value = doc[key]
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        ctx.error(at(key), f"{key} must be an integer from {minimum} to {maximum}, got {value!r}")
        return None
    return value


def _choice(doc: dict, key: str, choices: tuple[str, ...], at: Any, ctx: CompileContext, *,
            default: str | None = None) -> str | None:
    if key not in doc:
        return default
    value = doc[key]
    if value not in choices:
        ctx.error(at(key), f"{key} must be one of {', '.join(choices)}; got {value!r}")
        return None
    return value


def _date(doc: dict, key: str, at: Any, ctx: CompileContext) -> str:
    if key not in doc:
        return ""
    value = doc[key]
    if not isinstance(value, str) or not _DATE.match(value):
        ctx.error(at(key), f"{key} must be a date YYYY-MM-DD, got {value!r}")
        return ""
    text = value.replace("/", "-")
    try:
        datetime.date.fromisoformat(text)
    except ValueError as exc:
        ctx.error(at(key), f"bad date {value!r} in {key}: {exc}")
        return ""
    return text


def _strings(doc: dict, key: str, at: Any, ctx: CompileContext) -> tuple[str, ...]:
    if key not in doc:
        return ()
    value = doc[key]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        ctx.error(at(key), f"{key} must be a list of strings")
        return ()
    return tuple(value)


def _events(doc: dict, at: Any, ctx: CompileContext, known: frozenset[str]) -> tuple[str, ...]:
    if "event" not in doc:
        return ()
    value = doc["event"]
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) for v in values):
        ctx.error(at("event"), "event must be an event type or a list of them")
        return ()
    unknown = [v for v in values if v not in known]
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        ctx.error(at("event"), f"unknown event type {name!r}{hint}; known: {', '.join(sorted(known))}")
    if len(set(values)) != len(values):
        ctx.error(at("event"), "event lists a type twice")
    return () if unknown else tuple(dict.fromkeys(values))


# --------------------------------------------------------------------------- detection


def _detection(raw: Any, line: int, ctx: CompileContext) -> tuple[Any, tuple[IndexHint, ...], str]:
    if raw is None:
        return None, (), ""
    if not isinstance(raw, dict):
        ctx.error(line, "detection must be a map of selections and a condition")
        return None, (), ""
    selections: dict[str, Any] = {}
    hints_by_name: dict[str, tuple[IndexHint, ...]] = {}
    failed = False
    for name, value in raw.items():
        if name == "condition":
            continue
        where = line_of(raw, name, line)
        if name == "timeframe":
            ctx.error(where, "timeframe is not supported: use a rate: block")
            failed = True
            continue
        if not isinstance(name, str) or not _SELECTION_NAME.match(name) or name in cond.KEYWORDS:
            ctx.error(where, f"bad selection name {name!r} (letters, digits, _; not a condition keyword)")
            failed = True
            continue
        predicate, hints = compile_selection(name, value, where, ctx)
        if predicate is None:
            failed = True
        selections[name] = predicate
        hints_by_name[name] = hints
    if "condition" not in raw:
        ctx.error(line, "detection has no condition")
        return None, (), ""
    text = raw["condition"]
    condition_line = line_of(raw, "condition", line)
    if not selections:
        ctx.error(line, "detection has no selection")
        return None, (), ""
    if isinstance(text, list):
        ctx.error(condition_line, "condition must be one string (join alternatives with 'or')")
        return None, (), ""
    try:
        tree = cond.resolve(cond.parse_condition(text), list(selections))
    except ConditionError as exc:
        ctx.error(condition_line, f"condition: {exc}")
        return None, (), ""
    unused = [n for n in selections if n not in cond.referenced_names(tree)]
    for name in unused:
        ctx.error(line_of(raw, name, line), f"selection {name!r} is not used by the condition")
    if failed or unused:
        return None, (), ""
    match = cond.compile_condition(tree, selections)
    required = cond.required_names(tree)
    hints = tuple(h for name in selections if name in required for h in hints_by_name[name])
    return match, hints, text


# --------------------------------------------------------------------------- rate


def _rate(raw: Any, line: int, ctx: CompileContext) -> RateSpec | None:
    if not isinstance(raw, dict):
        ctx.error(line, "rate must be a map with by:, count:, window:")
        return None
    for key in raw:
        if key not in _RATE_KEYS:
            ctx.error(line_of(raw, key, line), f"unknown rate key {key!r} (known: by, count, window)")
    for key in ("count", "window"):
        if key not in raw:
            ctx.error(line, f"rate needs {key}:")
    by = _rate_by(raw.get("by", []), line_of(raw, "by", line), ctx)
    count = _rate_count(raw["count"], line_of(raw, "count", line), ctx) if "count" in raw else None
    window = _rate_window(raw["window"], line_of(raw, "window", line), ctx) if "window" in raw else None
    if by is None or count is None or window is None:
        return None
    return RateSpec(by=by, count=count, window=window,
                    getters=tuple(make_getter(split_field(f)) for f in by))


def _rate_by(raw: Any, line: int, ctx: CompileContext) -> tuple[str, ...] | None:
    values = raw if isinstance(raw, list) else [raw]
    if not all(isinstance(v, str) for v in values):
        ctx.error(line, "rate by: must be a field name or a list of them")
        return None
    ok = True
    for index, name in enumerate(values):
        where = line_of(raw, index, line)
        spec, problem = resolve_field(name, ctx.catalogue)
        if spec is None:
            ctx.error(where, f"rate by: {problem}")
            ok = False
        elif ctx.closure is not None and not field_allowed(spec, ctx.closure):
            ctx.error(where, f"rate by: field {name!r} is not carried by {ctx.events_label} records")
            ok = False
        elif spec.type in ("object", "list[object]"):
            ctx.error(where, f"rate by: field {name!r} is an object; count by one of its values")
            ok = False
    if len(set(values)) != len(values):
        ctx.error(line, "rate by: lists a field twice")
        ok = False
    return tuple(values) if ok else None


def _resolve_variable(raw: Any, line: int, ctx: CompileContext) -> tuple[bool, Any, int]:
    """(found, value, line to report a bad value at): a variable's value is reported where the
    config defines it (a VariableLine), when the config says where that is."""
    if isinstance(raw, str) and (match := VARIABLE.fullmatch(raw)):
        name = match.group(1)
        if name not in ctx.variables:
            ctx.error(line, f"unknown variable {raw}; define it under vars: in the config")
            return False, None, line
        source = ctx.variable_sources.get(name)
        where = VariableLine(line, name, source[0], source[1]) if source else line
        return True, ctx.variables[name], where
    return True, raw, line


def _rate_count(raw: Any, line: int, ctx: CompileContext) -> int | None:
    ok, value, where = _resolve_variable(raw, line, ctx)
    if not ok:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_COUNT:
        via = f" ({raw} is {value!r})" if value is not raw else ""
        ctx.error(where, f"rate count must be an integer from 1 to {MAX_COUNT}, got {raw!r}{via}")
        return None
    return value


def _rate_window(raw: Any, line: int, ctx: CompileContext) -> float | None:
    ok, value, where = _resolve_variable(raw, line, ctx)
    if not ok:
        return None
    try:
        return parse_window(value)
    except ValueError as exc:
        via = f" ({raw} is {value!r})" if value is not raw else ""
        ctx.error(where, f"rate {exc}{via}")
        return None
