"""Which rules can match a record: dispatch by layer, then an index on required values.

Two filters keep the cost of a record nearly flat as the rule count grows:

1. **Layers.** Rules are bucketed by their event types. A record is only offered the rules of
   its layers (see inspector.rules.layers.record_layers); the merged candidate plan of each
   distinct layer combination is built once and cached.
2. **Index.** Each rule has *hints*: tests that any match must pass, taken from the selections
   its condition requires (`sel and not filter` requires `sel`). The dispatcher picks one hint
   per rule, the one whose values the fewest other rules share:

   * equality (`grpc.method: ModelInfer`, `http.status: 500`): the rule is filed under each
     value; a record's value looks up its rules in a dict.
   * `contains` / `startswith` / `endswith` (case-insensitive): the rule is filed under one
     3-character piece (trigram) of each literal, the rarest among the literals on that field.
     A value can only contain the literal if it contains that trigram, so a record looks up
     the trigrams of its value (values longer than 2 KiB skip the lookup: every rule filed on
     that field is a candidate). Results are memoized per distinct value (bounded); see
     _GramIndex for small rule groups.

   Rules without a usable hint are always candidates. The index only narrows: every candidate
   is still evaluated in full, so results are exactly those of evaluating every rule.

Candidates come back in sid order, so alerts are deterministic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from inspector.rules.access import Getter, make_getter, split_field
from inspector.rules.hints import IndexHint
from inspector.rules.layers import record_layers
from inspector.rules.model import Rule

GRAM = 3
LONG_VALUE = 2048
MEMO_SIZE = 4096
#: With fewer rules filed by trigram on a field, a value is only scanned the second time it is
#: seen: scanning a value's trigrams costs about as much as evaluating a handful of rules.
GRAM_MIN_RULES = 8


@dataclass(frozen=True, slots=True)
class IndexChoice:
    """How one rule is filed: under `keys` of `field`, by value ("eq") or by trigram ("gram")."""

    kind: str
    field: str
    keys: tuple[Any, ...]


class _GramIndex:
    """Rules filed by trigram on one field, with a bounded memo of recent values' results.

    Field values repeat a lot in real traffic (gRPC paths, user agents, host names), so the
    result of a value is remembered: the trigram scan runs once per distinct value, not once per
    record. When few rules are filed here, a value seen for the first time is not scanned at
    all: its candidates are all these rules (evaluating a handful of contains tests costs less
    than scanning a value that may never come back); it is scanned when it comes back. Memo and
    first-sight set are cleared when they reach MEMO_SIZE entries.
    """

    __slots__ = ("every", "few", "getter", "memo", "seen", "table")

    def __init__(self, getter: Getter, table: dict[str, tuple[int, ...]], every: tuple[int, ...]) -> None:
        self.getter = getter
        self.table = table
        self.every = every
        self.few = len(every) < GRAM_MIN_RULES
        self.memo: dict[str, tuple[int, ...]] = {}
        self.seen: set[str] = set()

    def hits(self, value: str) -> tuple[int, ...]:
        found = self.memo.get(value)
        if found is not None:
            return found
        if len(value) > LONG_VALUE:
            return self.every
        if self.few and value not in self.seen:
            if len(self.seen) >= MEMO_SIZE:
                self.seen.clear()
            self.seen.add(value)
            return self.every
        text = value.lower()
        lookup = self.table.get
        collected: list[int] = []
        for i in range(len(text) - GRAM + 1):
            rules = lookup(text[i:i + GRAM])
            if rules:
                collected.extend(rules)
        found = tuple(sorted(set(collected)))
        if len(self.memo) >= MEMO_SIZE:
            self.memo.clear()
        self.memo[value] = found
        return found


@dataclass(frozen=True, slots=True)
class _Plan:
    always: tuple[int, ...]
    always_rules: tuple[Rule, ...]
    eq: tuple[tuple[Getter, dict[Any, tuple[int, ...]]], ...]
    grams: tuple[_GramIndex, ...]


def _normalize(value: Any) -> Any:
    """A record value as index keys are stored: lower-cased strings, numbers; else None."""
    cls = value.__class__
    if cls is str:
        return value.lower()
    if cls is int or cls is float:
        return value
    return None


def _trigrams(literal: str) -> set[str]:
    return {literal[i:i + GRAM] for i in range(len(literal) - GRAM + 1)}


def choose_index(rules: Sequence[Rule]) -> list[IndexChoice | None]:
    """For each rule, the hint that narrows best (its keys shared by the fewest rules), or None."""
    eq_count: Counter[tuple[str, Any]] = Counter()
    gram_count: Counter[tuple[str, str]] = Counter()
    for rule in rules:
        for hint in rule.hints:
            if hint.kind == "eq":
                eq_count.update((hint.field, v) for v in hint.values)
            else:
                for literal in hint.values:
                    gram_count.update((hint.field, g) for g in _trigrams(literal))
    choices: list[IndexChoice | None] = []
    for rule in rules:
        best: tuple[int, IndexChoice] | None = None
        for hint in rule.hints:
            option = _option(hint, eq_count, gram_count)
            if option is not None and (best is None or option[0] < best[0]):
                best = option
        choices.append(best[1] if best else None)
    return choices


def _option(hint: IndexHint, eq_count: Counter, gram_count: Counter) -> tuple[int, IndexChoice] | None:
    if hint.kind == "eq":
        cost = sum(eq_count[(hint.field, v)] for v in hint.values)
        return cost, IndexChoice("eq", hint.field, hint.values)
    keys = []
    cost = 0
    for literal in hint.values:
        grams = _trigrams(literal)
        if not grams:
            return None  # a literal shorter than a trigram: anything may contain it
        rarest = min(sorted(grams), key=lambda g: gram_count[(hint.field, g)])
        keys.append(rarest)
        cost += gram_count[(hint.field, rarest)]
    return cost, IndexChoice("gram", hint.field, tuple(dict.fromkeys(keys)))


class Dispatcher:
    """Candidate rules for a record (see module docstring)."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        self.choices = choose_index(self.rules)
        buckets: dict[str, list[int]] = {}
        for position, rule in enumerate(self.rules):
            for event in rule.events:
                buckets.setdefault(event, []).append(position)
        self._buckets = buckets
        self._layer_names = tuple(sorted(buckets))
        self._plans: dict[tuple[str, ...], _Plan] = {}
        self._getters: dict[str, Getter] = {}

    @property
    def indexed(self) -> int:
        """How many rules are filed in an index (the others are always evaluated)."""
        return sum(c is not None for c in self.choices)

    def candidates(self, record: dict) -> Sequence[Rule]:
        layers = record_layers(record, self._layer_names)
        plan = self._plans.get(layers)
        if plan is None:
            plan = self._plans[layers] = self._plan(layers)
        if not plan.eq and not plan.grams:
            return plan.always_rules
        hits: list[int] = []
        for getter, table in plan.eq:
            value = getter(record)
            if value is None:
                continue
            if value.__class__ is list:
                for element in value:
                    found = table.get(_normalize(element))
                    if found:
                        hits.extend(found)
            else:
                found = table.get(_normalize(value))
                if found:
                    hits.extend(found)
        for index in plan.grams:
            value = index.getter(record)
            if value is None:
                continue
            if value.__class__ is list:
                for element in value:
                    if element.__class__ is str:
                        hits.extend(index.hits(element))
            elif value.__class__ is str:
                hits.extend(index.hits(value))
        if not hits:
            return plan.always_rules
        positions = sorted(set(hits).union(plan.always))
        rules = self.rules
        return [rules[p] for p in positions]

    def _getter(self, name: str) -> Getter:
        getter = self._getters.get(name)
        if getter is None:
            getter = self._getters[name] = make_getter(split_field(name))
        return getter

    def _plan(self, layers: tuple[str, ...]) -> _Plan:
        positions = sorted({p for layer in layers for p in self._buckets.get(layer, ())})
        always: list[int] = []
        eq_tables: dict[str, dict[Any, list[int]]] = {}
        gram_tables: dict[str, dict[str, list[int]]] = {}
        gram_rules: dict[str, list[int]] = {}
        for position in positions:
            choice = self.choices[position]
            if choice is None:
                always.append(position)
            elif choice.kind == "eq":
                table = eq_tables.setdefault(choice.field, {})
                for key in choice.keys:
                    table.setdefault(key, []).append(position)
            else:
                table = gram_tables.setdefault(choice.field, {})
                for key in choice.keys:
                    table.setdefault(key, []).append(position)
                gram_rules.setdefault(choice.field, []).append(position)
        return _Plan(
            always=tuple(always),
            always_rules=tuple(self.rules[p] for p in always),
            eq=tuple((self._getter(f), {k: tuple(v) for k, v in t.items()}) for f, t in eq_tables.items()),
            grams=tuple(_GramIndex(self._getter(f), {k: tuple(v) for k, v in t.items()}, tuple(gram_rules[f]))
                        for f, t in gram_tables.items()),
        )
