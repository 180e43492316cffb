"""Detection selections compiled to small predicates over records (Sigma value semantics).

A selection is a map (AND across its fields) or a list of maps (OR of the maps). A field's value
is a scalar or a list (OR across the values; `|all` makes it AND). Modifiers after `|` change
the comparison:

======================  ======================================================================
operator (at most one)  contains startswith endswith re cidr exists gt gte lt lte neq
                        (none: equality)
value transforms        base64 (match the base64 of the value), base64offset (with contains:
                        the three base64 alignments, as Sigma)
flags                   all (every value must match), cased (case-sensitive strings),
                        i m s (regex flags, only with re)
======================  ======================================================================

Strings compare case-insensitively unless `cased` (constants are lower-cased here, at load);
`re` is case-sensitive unless `|i`, as in Sigma. A list-valued field, or a path through a list
of objects, matches when any element matches. A missing field never matches, except `null`
(which matches a missing or null field) and `exists: false`. Numeric comparisons and numeric
equality only see numbers: booleans are not numbers, "200" is not 200. An empty list (from a
variable set to []) matches nothing; with `neq` every present value differs from it.

Everything is checked here, with the line it came from: unknown fields (against the field
catalogue and the rule's event types), modifiers, combinations, value types, regexes, CIDRs,
variables. Compilation does not stop at the first error. A bad value a site variable gave is
reported at the config line defining it (VariableLine). An entry of a map field
(`triton.parameters.max_tokens`, see resolve_field) is typed by the rule's values. The closures themselves are built by
inspector.rules.predicates; the index hints of each test by inspector.rules.hints.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from inspector.fields import FieldSpec
from inspector.rules.access import make_getter, split_field
from inspector.rules.errors import RuleError
from inspector.rules.hints import IndexHint, regex_hints, value_hints
from inspector.rules.layers import field_allowed
from inspector.rules.predicates import (
    ElementTest,
    IpRange,
    Predicate,
    all_of,
    any_of,
    any_test,
    base64_variants,
    bound_test,
    field_predicate,
    never,
    outside_ranges,
    present,
    range_tests,
    regex_tests,
    scalar_eq_tests,
    string_test,
)
from inspector.rules.yamlsource import line_of

OPERATORS = frozenset({"contains", "startswith", "endswith", "re", "cidr", "exists",
                       "gt", "gte", "lt", "lte", "neq"})
TRANSFORMS = frozenset({"base64", "base64offset"})
FLAGS = frozenset({"all", "cased"})
REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}
MODIFIERS = OPERATORS | TRANSFORMS | FLAGS | frozenset(REGEX_FLAGS)

STRING_TYPES = frozenset({"string", "ip", "timestamp"})
CIDR_APPLIES = "cidr applies to IP addresses (fields of type ip: src_ip, dest_ip)"
#: The type of an entry of a map field (resolve_field): any scalar, typed per rule by its values.
MAP_ENTRY = "map-entry"
NUMBER_TYPES = frozenset({"integer", "number"})
_STRING_OPS = frozenset({"contains", "startswith", "endswith", "re"})
_NUMERIC_OPS = frozenset({"gt", "gte", "lt", "lte"})
#: Relative cost, to evaluate cheap tests of a selection first.
_COST = {"exists": 0, "eq": 1, "neq": 1, "gt": 2, "gte": 2, "lt": 2, "lte": 2, "startswith": 2,
         "endswith": 2, "contains": 3, "cidr": 4, "re": 5}

VARIABLE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(slots=True)
class CompileContext:
    """What compiling a selection needs to know, and where its errors go."""

    file: str
    catalogue: Mapping[str, FieldSpec]
    variables: Mapping[str, Any]
    #: Event types whose fields may be used (rule events and their parents); None: any field.
    closure: frozenset[str] | None
    events_label: str = ""
    #: Fields whose plain values mean `|cidr` (suppression entries: `src_ip: 10.0.0.0/8`).
    implicit_cidr: frozenset[str] = frozenset()
    #: Where each variable is defined: NAME -> (config file, line of the name, line of each item).
    variable_sources: Mapping[str, tuple[str, int, tuple[int, ...]]] = field(default_factory=dict)
    errors: list[RuleError] = field(default_factory=list)
    #: Every field name the compiled selections read (a rule's `fields`).
    fields_read: set[str] = field(default_factory=set)

    def error(self, line: int, message: str) -> None:
        """A problem at `line` of this file; about a value a variable gave (a VariableLine), it is
        reported where the variable is defined, naming the variable and the rule line using it."""
        if isinstance(line, VariableLine):
            if line.source_file:
                self.errors.append(RuleError(line.source_file, line.source_line,
                                             f"${line.variable}: {message} (used at {self.file}:{int(line)})"))
            else:
                self.errors.append(RuleError(self.file, int(line), f"{message} (from ${line.variable})"))
            return
        self.errors.append(RuleError(self.file, line, message))


class VariableLine(int):
    """The rule line of a value that came from a site variable (`$ADMIN_NETS`), carrying where the
    variable is defined: an error about the value then points at the config file and line that
    hold it (a bad CIDR in the site config is the config's problem, not the rule's)."""

    variable: str
    source_file: str
    source_line: int

    def __new__(cls, line: int, variable: str, source_file: str = "", source_line: int = 0) -> VariableLine:
        self = super().__new__(cls, line)
        self.variable = variable
        self.source_file = source_file
        self.source_line = source_line
        return self


@dataclass(frozen=True, slots=True)
class _Item:
    predicate: Predicate
    cost: int
    hints: tuple[IndexHint, ...] = ()


# --------------------------------------------------------------------------- selections


def compile_selection(name: str, value: Any, line: int, ctx: CompileContext) -> tuple[
        Predicate | None, tuple[IndexHint, ...]]:
    """A selection (map or list of maps) -> predicate and the hints every match satisfies."""
    if isinstance(value, dict):
        return compile_map(value, ctx, line)
    if isinstance(value, list):
        if not value:
            ctx.error(line, f"selection {name!r} is an empty list")
            return None, ()
        if not all(isinstance(v, dict) for v in value):
            ctx.error(line, f"selection {name!r}: a list must hold maps of field: value "
                            "(keyword lists without a field are not supported)")
            return None, ()
        predicates = []
        for index, item in enumerate(value):
            predicate, _ = compile_map(item, ctx, line_of(value, index, line))
            predicates.append(predicate)
        if any(p is None for p in predicates):
            return None, ()
        return any_of(tuple(predicates)), ()  # type: ignore[arg-type]
    ctx.error(line, f"selection {name!r} must be a map of field: value, or a list of such maps")
    return None, ()


def compile_map(mapping: dict, ctx: CompileContext,
                line: int) -> tuple[Predicate | None, tuple[IndexHint, ...]]:
    """AND of the map's field items, cheapest first."""
    if not mapping:
        ctx.error(line, "empty selection map")
        return None, ()
    items: list[_Item] = []
    failed = False
    for key, raw in mapping.items():
        key_line = line_of(mapping, key, line)
        if not isinstance(key, str):
            ctx.error(key_line, f"field names are strings, not {key!r}")
            failed = True
            continue
        item = compile_item(key, raw, key_line, ctx)
        if item is None:
            failed = True
        else:
            items.append(item)
    if failed:
        return None, ()
    items.sort(key=lambda i: i.cost)
    hints = tuple(h for i in items for h in i.hints)
    return all_of(tuple(i.predicate for i in items)), hints


# --------------------------------------------------------------------------- one field


def compile_item(key: str, raw: Any, line: int, ctx: CompileContext) -> _Item | None:
    """`field|mod|mod: value(s)` -> a predicate over records, or None after reporting errors."""
    name, *modifiers = key.split("|")
    spec = _field_spec(name, line, ctx)
    mods = _check_modifiers(name, modifiers, line, ctx)
    if spec is None or mods is None:
        return None
    if name in ctx.implicit_cidr and not (mods & OPERATORS):
        mods = mods | {"cidr"}
    operator = next(iter(mods & OPERATORS), "eq")
    values = _expand_values(raw, line, ctx)
    element_type = spec.type[5:-1] if spec.is_list else spec.type
    if element_type == MAP_ENTRY:
        element_type = _map_entry_type(name, operator, mods, values, line, ctx)
        if element_type is None:
            return None
    if not _check_type(name, element_type, operator, line, ctx) or values is None:
        return None
    if operator == "exists":
        return _exists_item(name, values, line, ctx)
    if any(v is None for v, _ in values) and (operator != "eq" or "all" in mods):
        ctx.error(line, f"{key}: null is only allowed as a plain equality value")
        return None
    on_missing = any(v is None for v, _ in values)
    values = [(v, ln) for v, ln in values if v is not None]
    tests = _element_tests(name, element_type, operator, mods, values, ctx)
    if tests is None:
        return None
    getter = make_getter(split_field(name))
    if "all" in mods:
        predicates = tuple(field_predicate(getter, t, False) for t in tests)
        predicate = all_of(predicates) if predicates else present(getter)
    elif len(tests) == 1:
        predicate = field_predicate(getter, tests[0], on_missing)
    elif not tests:
        predicate = field_predicate(getter, never, on_missing)
    else:
        predicate = field_predicate(getter, any_test(tuple(tests)), on_missing)
    hints = () if on_missing else _hints(name, element_type, operator, mods, values)
    return _Item(predicate, _COST[operator], hints)


def map_fields(catalogue: Mapping[str, FieldSpec]) -> frozenset[str]:
    """The catalogue's maps: object fields declared without sub-fields (`triton.parameters`, a
    request's parameters, key -> value). A rule names an entry as `<map>.<key>`."""
    objects = {name for name, spec in catalogue.items() if spec.type == "object"}
    parents = {name.rpartition(".")[0] for name in catalogue}
    return frozenset(objects - parents)


def resolve_field(name: str, catalogue: Mapping[str, FieldSpec]) -> tuple[FieldSpec | None, str]:
    """The spec of a rule's field name, and why not when it has none. A catalogue field, or an
    entry of a map field (`triton.parameters.max_tokens`): a scalar of any type (MAP_ENTRY), on
    the map's event types. A key holding a dot cannot be named."""
    spec = catalogue.get(name)
    if spec is not None:
        return spec, ""
    parent, _, key = name.rpartition(".")
    maps = map_fields(catalogue) if parent else frozenset()
    if parent in maps and key:
        parent_spec = catalogue[parent]
        return FieldSpec(name, MAP_ENTRY, f"Entry {key!r} of {parent}.", parent_spec.events), ""
    inside = next((m for m in maps if name.startswith(m + ".")), None)
    if inside is not None:
        return None, f"{inside} is a map of key -> value: name one key ({inside}.<key>), not a path below it"
    close = difflib.get_close_matches(name, list(catalogue), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return None, f"unknown field {name!r}{hint}; `inspector fields` lists them"


def _field_spec(name: str, line: int, ctx: CompileContext) -> FieldSpec | None:
    spec, problem = resolve_field(name, ctx.catalogue)
    if spec is None:
        ctx.error(line, problem)
        return None
    ctx.fields_read.add(name)
    if ctx.closure is not None and not field_allowed(spec, ctx.closure):
        ctx.error(line, f"field {name!r} is not carried by {ctx.events_label} records "
                        f"(it is on: {', '.join(spec.events)})")
        return None
    return spec


def _check_modifiers(name: str, modifiers: list[str], line: int,
                     ctx: CompileContext) -> frozenset[str] | None:
    ok = True
    if not name:
        ctx.error(line, "missing field name before '|'")
        ok = False
    for modifier in modifiers:
        if modifier not in MODIFIERS:
            close = difflib.get_close_matches(modifier, sorted(MODIFIERS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            ctx.error(line, f"{name}: unknown modifier {modifier!r}{hint}")
            ok = False
    if len(set(modifiers)) != len(modifiers):
        ctx.error(line, f"{name}: a modifier is repeated")
        ok = False
    mods = frozenset(modifiers)
    operators = sorted(mods & OPERATORS)
    if len(operators) > 1:
        ctx.error(line, f"{name}: modifiers {' and '.join(operators)} cannot be combined")
        ok = False
    if not ok:
        return None
    operator = operators[0] if operators else "eq"
    problem = _combination_problem(operator, mods)
    if problem:
        ctx.error(line, f"{name}: {problem}")
        return None
    return mods


def _combination_problem(operator: str, mods: frozenset[str]) -> str | None:
    extra = mods - {operator}
    if operator == "exists" and extra:
        return f"exists takes no other modifier (got {', '.join(sorted(extra))})"
    regex_flags = mods & set(REGEX_FLAGS)
    if regex_flags and operator != "re":
        return f"modifier {', '.join(sorted(regex_flags))} only applies to re"
    if "cased" in mods and operator not in ("eq", "neq", "contains", "startswith", "endswith"):
        hint = " (use re|i for case-insensitive regexes; re is case-sensitive)" if operator == "re" else ""
        return f"cased does not apply to {operator}{hint}"
    transforms = mods & TRANSFORMS
    if len(transforms) > 1:
        return "base64 and base64offset cannot be combined"
    if "base64offset" in mods and operator != "contains":
        return "base64offset needs contains"
    if "base64" in mods and operator not in ("eq", "contains", "startswith", "endswith"):
        return f"base64 does not apply to {operator}"
    if operator == "neq" and "all" in mods:
        return "neq already requires the value to differ from every listed value; drop all"
    return None


def _map_entry_type(name: str, operator: str, mods: frozenset[str], values: list[tuple[Any, int]] | None,
                    line: int, ctx: CompileContext) -> str | None:
    """The type a map entry is compared as: by its operator (string tests, numeric bounds), else by
    the rule's values (all strings, all numbers or all booleans). The record's value must then be
    of that type to match, as for any field."""
    if operator in _STRING_OPS or mods & (TRANSFORMS | {"cased"}):
        return "string"
    if operator in _NUMERIC_OPS:
        return "number"
    if operator == "cidr":
        ctx.error(line, f"field {name!r} is a map entry: {CIDR_APPLIES}")
        return None
    if operator == "exists" or values is None:
        return "string"  # exists checks presence only; None: the values' problem is reported already
    kinds = {"boolean" if isinstance(v, bool) else "number" if _is_number(v) else "string"
             for v, _ in values if v is not None}
    if len(kinds) > 1:
        ctx.error(line, f"{name}: a map entry's values must be all strings, all numbers or all booleans "
                        f"(got {', '.join(sorted(kinds))}); use one selection per kind")
        return None
    return kinds.pop() if kinds else "string"


def _check_type(name: str, element_type: str, operator: str, line: int, ctx: CompileContext) -> bool:
    problem = None
    if element_type == "object" and operator != "exists":
        problem = "is an object: only exists applies"
    elif operator in _STRING_OPS and element_type not in STRING_TYPES:
        problem = f"is {element_type}: {operator} applies to strings"
    elif operator in _NUMERIC_OPS and element_type not in NUMBER_TYPES:
        problem = f"is {element_type}: {operator} applies to numbers"
    elif operator == "cidr" and element_type != "ip":
        problem = f"is {element_type}: {CIDR_APPLIES}"
    if problem:
        ctx.error(line, f"field {name!r} {problem}")
        return False
    return True


def _expand_values(raw: Any, line: int, ctx: CompileContext) -> list[tuple[Any, int]] | None:
    """The value(s) as (value, line), variables expanded; None after reporting an error."""
    if isinstance(raw, dict):
        ctx.error(line, "a field's value must be a scalar or a list of scalars, not a map")
        return None
    if isinstance(raw, list):
        if not raw:
            ctx.error(line, "empty list of values")
            return None
        entries = [(item, line_of(raw, i, line)) for i, item in enumerate(raw)]
    else:
        entries = [(raw, line)]
    values: list[tuple[Any, int]] = []
    ok = True
    for item, item_line in entries:
        if isinstance(item, dict | list):
            ctx.error(item_line, "list values must be scalars")
            ok = False
            continue
        if isinstance(item, str) and (var := VARIABLE.fullmatch(item)):
            if var.group(1) not in ctx.variables:
                close = difflib.get_close_matches(var.group(1), list(ctx.variables), n=1)
                hint = f" (did you mean ${close[0]}?)" if close else ""
                ctx.error(item_line, f"unknown variable {item}{hint}; define it under vars: in the config")
                ok = False
                continue
            name = var.group(1)
            resolved = ctx.variables[name]
            items = list(resolved) if isinstance(resolved, list) else [resolved]
            source_file, source_line, item_lines = ctx.variable_sources.get(name, ("", 0, ()))
            values.extend((v, VariableLine(item_line, name, source_file,
                                           item_lines[i] if i < len(item_lines) else source_line))
                          for i, v in enumerate(items))
        else:
            values.append((item, item_line))
    return values if ok else None


def _exists_item(name: str, values: list[tuple[Any, int]], line: int, ctx: CompileContext) -> _Item | None:
    if len(values) != 1 or not isinstance(values[0][0], bool):
        ctx.error(line, f"{name}|exists takes true or false")
        return None
    getter = make_getter(split_field(name))
    if values[0][0]:
        return _Item(present(getter), _COST["exists"])
    has_value = present(getter)
    return _Item(lambda record: not has_value(record), _COST["exists"])


# --------------------------------------------------------------------------- value tests


def _element_tests(name: str, element_type: str, operator: str, mods: frozenset[str],
                   values: list[tuple[Any, int]], ctx: CompileContext) -> list[ElementTest] | None:
    """One test per value group: OR of them (or AND with `all`). None after reporting errors."""
    every = "all" in mods
    if operator in _NUMERIC_OPS:
        numbers = _numbers(name, operator, values, ctx)
        if numbers is None:
            return None
        return [bound_test(operator, numbers, every)] if numbers else []
    if operator == "cidr":
        ranges = _ranges(name, values, ctx, networks=True)
        return None if ranges is None else range_tests(ranges, every)
    if operator == "re":
        patterns = _patterns(name, mods, values, ctx)
        return None if patterns is None else regex_tests(patterns, every)
    if element_type == "ip":
        ranges = _ranges(name, values, ctx, networks=False)
        if ranges is None:
            return None
        return [outside_ranges(ranges)] if operator == "neq" else range_tests(ranges, every)
    if not _check_values_type(name, element_type, values, ctx):
        return None
    constants = [v for v, _ in values]
    if element_type not in STRING_TYPES:
        return scalar_eq_tests(element_type == "boolean", constants, every, negate=operator == "neq")
    cased = "cased" in mods or bool(mods & TRANSFORMS)
    if mods & TRANSFORMS:
        groups = [base64_variants(v, offsets="base64offset" in mods) for v in constants]
    else:
        groups = [(v,) if cased else (v.lower(),) for v in constants]
    if every:
        return [string_test(operator, g, cased) for g in groups]
    flat = tuple(c for g in groups for c in g)
    return [string_test(operator, flat, cased)] if flat or operator == "neq" else []


def _check_values_type(name: str, element_type: str, values: list[tuple[Any, int]],
                       ctx: CompileContext) -> bool:
    ok = True
    for value, line in values:
        if element_type in STRING_TYPES:
            good, wanted = isinstance(value, str), "a string"
        elif element_type in NUMBER_TYPES:
            good, wanted = _is_number(value), "a number"
        elif element_type == "boolean":
            good, wanted = isinstance(value, bool), "true or false"
        else:
            good, wanted = False, f"nothing ({element_type} fields only take exists)"
        if not good:
            ctx.error(line, f"{name} is {element_type}: value {value!r} should be {wanted}")
            ok = False
    return ok


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def _numbers(name: str, operator: str, values: list[tuple[Any, int]], ctx: CompileContext) -> list | None:
    bad = [(value, line) for value, line in values if not _is_number(value)]
    for value, line in bad:
        ctx.error(line, f"{name}|{operator} needs a number, got {value!r}")
    return None if bad else [v for v, _ in values]


def _patterns(name: str, mods: frozenset[str], values: list[tuple[Any, int]],
              ctx: CompileContext) -> list[re.Pattern[str]] | None:
    flags = 0
    for flag in mods & set(REGEX_FLAGS):
        flags |= REGEX_FLAGS[flag]
    patterns = []
    for value, line in values:
        if not isinstance(value, str):
            ctx.error(line, f"{name}|re needs a string pattern, got {value!r}")
            continue
        try:
            patterns.append(re.compile(value, flags))
        except (re.error, OverflowError, RecursionError) as exc:
            ctx.error(line, f"{name}|re: bad regular expression {value!r}: {exc}")
    return patterns if len(patterns) == len(values) else None


def _ranges(name: str, values: list[tuple[Any, int]], ctx: CompileContext, *,
            networks: bool) -> list[IpRange] | None:
    """CIDRs (or, for IP equality, single addresses: compared as addresses, not spellings)."""
    ranges: list[IpRange] = []
    for value, line in values:
        try:
            if not isinstance(value, str):
                raise ValueError("not a string")
            if networks:
                network = ipaddress.ip_network(value.strip(), strict=False)
                ranges.append((network.version, int(network.network_address), int(network.broadcast_address)))
            else:
                address = ipaddress.ip_address(value.strip())
                ranges.append((address.version, int(address), int(address)))
        except ValueError as exc:
            if networks:
                ctx.error(line, f"{name}|cidr: bad CIDR {value!r}: {exc}")
            else:
                hint = f"; for networks use {name}|cidr" if isinstance(value, str) and "/" in value else ""
                ctx.error(line, f"{name}: {value!r} is not an IP address{hint}")
    return ranges if len(ranges) == len(values) else None


def _hints(name: str, element_type: str, operator: str, mods: frozenset[str],
           values: list[tuple[Any, int]]) -> tuple[IndexHint, ...]:
    """Necessary conditions of one field test, for the engine's index."""
    constants = [v for v, _ in values]
    if not constants or mods & TRANSFORMS:
        return ()
    every = "all" in mods
    if operator == "re":
        flags = 0
        for flag in mods & set(REGEX_FLAGS):
            flags |= REGEX_FLAGS[flag]
        return regex_hints(name, [re.compile(c, flags) for c in constants], every=every)
    if "cased" in mods or element_type == "ip":
        return ()  # case-sensitive, or compared as addresses: the index compares lower-cased text
    if element_type in STRING_TYPES and operator in ("eq", "contains", "startswith", "endswith"):
        return value_hints(name, operator, constants, every=every)
    if element_type in NUMBER_TYPES and operator == "eq":
        return value_hints(name, operator, constants, every=every)
    return ()
