"""Index hints: values a rule's match requires, so the engine can skip rules a record cannot match.

A hint says "any match of this rule has `field` matching (`kind`) one of `values`": equality to
a value (`grpc.method: ModelInfer`), or containing a literal (`contains`, `startswith`,
`endswith`, and literal runs every match of a regex must contain). Hints come from the selections
a rule's condition requires; inspector.rules.dispatch picks one per rule to file it under.

A hint must be a *necessary* condition, exactly as the matcher computes it: strings are compared
lower-cased (str.lower, like the matcher), so only case-insensitive tests give string hints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: Regex literal runs shorter than this are not worth indexing (dispatch files by trigram).
MIN_LITERAL = 3


@dataclass(frozen=True, slots=True)
class IndexHint:
    """A necessary condition of a selection: `field` must match (`kind`) one of `values`.

    Values are normalized as the engine's index sees them: strings lower-cased, numbers as is.
    """

    field: str
    kind: str  # "eq" | "contains" | "startswith" | "endswith"
    values: tuple[Any, ...]


def value_hints(name: str, operator: str, constants: list[Any], *, every: bool) -> tuple[IndexHint, ...]:
    """Hints of a case-insensitive string test, or of numeric equality (`operator` "eq")."""
    if not constants:
        return ()
    if isinstance(constants[0], str):
        lowered = tuple(dict.fromkeys(c.lower() for c in constants))
        if every:  # every value is required: each is a hint of its own
            return tuple(IndexHint(name, operator, (value,)) for value in lowered)
        return (IndexHint(name, operator, lowered),)
    chosen = constants[:1] if every else constants
    return (IndexHint(name, "eq", tuple(dict.fromkeys(chosen))),)


def regex_hints(name: str, patterns: list[re.Pattern[str]], *, every: bool) -> tuple[IndexHint, ...]:
    """Literal runs every match must contain, as `contains` hints.

    Only ASCII runs of 3+ characters from the pattern's required parts (its top-level sequence,
    groups in it, repeats of at least one). Where the pattern ignores case the letters i and s
    end a run: they also match U+0131 and U+017F, whose lower-case forms differ.
    """
    runs_per_pattern = [required_runs(p.pattern, bool(p.flags & re.IGNORECASE)) for p in patterns]
    if every or len(patterns) == 1:
        return tuple(IndexHint(name, "contains", (run,)) for runs in runs_per_pattern for run in runs)
    if not patterns or not all(runs_per_pattern):
        return ()
    longest = (max(runs, key=len) for runs in runs_per_pattern)
    return (IndexHint(name, "contains", tuple(dict.fromkeys(longest))),)


def required_runs(pattern: str, ignore_case: bool) -> list[str]:
    """Lower-cased literal runs a match of `pattern` must contain, longest first."""
    if _sre_parse is None:
        return []
    try:
        tree = _sre_parse(pattern, re.IGNORECASE if ignore_case else 0)
    except Exception:  # the pattern compiled; a parser quirk only costs the hint
        return []
    runs: list[str] = []
    _collect_runs(list(tree), ignore_case, runs)
    return sorted({r for r in runs if len(r) >= MIN_LITERAL}, key=lambda r: (-len(r), r))


def _collect_runs(items: list, ignore_case: bool, runs: list[str]) -> None:
    current: list[str] = []
    for op, arg in items:
        char = chr(arg).lower() if op is _LITERAL and arg < 128 else None
        if char is not None and not (ignore_case and char in "is"):
            current.append(char)
            continue
        runs.append("".join(current))
        current = []
        if op is _SUBPATTERN:  # (group, add_flags, del_flags, pattern)
            _collect_runs(list(arg[-1]), ignore_case or bool(arg[1] & re.IGNORECASE), runs)
        elif op in _REPEATS and arg[0] >= 1:
            _collect_runs(list(arg[2]), ignore_case, runs)
    runs.append("".join(current))


try:  # the stdlib regex parser (private, stable in practice); without it regexes get no hints
    from re import _constants as _sre_constants
    from re import _parser as _sre_parser

    _sre_parse: Any = _sre_parser.parse
    _LITERAL, _SUBPATTERN = _sre_constants.LITERAL, _sre_constants.SUBPATTERN
    _REPEATS = tuple(getattr(_sre_constants, n) for n in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT")
                     if hasattr(_sre_constants, n))
except ImportError:  # pragma: no cover - other Python implementations
    _sre_parse, _LITERAL, _SUBPATTERN, _REPEATS = None, None, None, ()
