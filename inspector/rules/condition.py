"""Sigma detection conditions: parse once, check against the selections, compile to closures.

Grammar, with Sigma's precedence (loosest first: or < and < not < x of < parentheses)::

    condition  := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | primary
    primary    := "(" or_expr ")" | quantifier "of" target | NAME
    quantifier := "1" | "all"
    target     := "them" | PATTERN          PATTERN: a selection name with * wildcards

Keywords are lower-case. `them` means every selection whose name does not start with `_`
(Sigma's convention for helper selections). A pattern or a name that matches no selection is
an error, so a typo never turns into a condition that is silently always false.

The compiled condition is a tree of small closures over the selections' matchers; `and` / `or`
short-circuit left to right.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from inspector.rules.errors import ConditionError

T = TypeVar("T")
Predicate = Callable[[T], bool]

KEYWORDS = frozenset({"and", "or", "not", "of", "them", "all"})
_TOKEN = re.compile(r"\s+|(?P<paren>[()])|(?P<word>[A-Za-z0-9_*]+)")
MAX_CONDITION_LENGTH = 4096
MAX_DEPTH = 100


@dataclass(frozen=True, slots=True)
class Ref:
    name: str
    position: int


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Quantified:
    """`1 of target` (every_one=False) or `all of target`; `pattern` None means `them`."""

    every_one: bool
    pattern: str | None
    position: int


Node = Ref | Not | And | Or | Quantified


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    """Tokens as (kind, text, position); kinds: ( ) keyword number pattern name end."""
    tokens: list[tuple[str, str, int]] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise ConditionError(f"unexpected character {text[position]!r}", position)
        if match.group("paren"):
            tokens.append((match.group("paren"), match.group("paren"), position))
        elif word := match.group("word"):
            tokens.append((_classify(word, position), word, position))
        position = match.end()
    tokens.append(("end", "", len(text)))
    return tokens


def _classify(word: str, position: int) -> str:
    if word in KEYWORDS:
        return "keyword"
    if word.lower() in KEYWORDS:
        raise ConditionError(f"keywords are lower-case: write {word.lower()!r}, not {word!r}", position)
    if word.isascii() and word.isdigit():
        return "number"
    if "*" in word:
        return "pattern"
    return "name"


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.index = 0
        self.depth = 0

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.index]

    def take(self) -> tuple[str, str, int]:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def at_keyword(self, word: str) -> bool:
        kind, text, _ = self.peek()
        return kind == "keyword" and text == word

    def parse(self) -> Node:
        if self.peek()[0] == "end":
            raise ConditionError("empty condition", 0)
        node = self.or_expr()
        kind, text, position = self.peek()
        if kind != "end":
            raise ConditionError(f"unexpected {text!r}: expected 'and', 'or' or the end", position)
        return node

    def or_expr(self) -> Node:
        operands = [self.and_expr()]
        while self.at_keyword("or"):
            self.take()
            operands.append(self.and_expr())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def and_expr(self) -> Node:
        operands = [self.not_expr()]
        while self.at_keyword("and"):
            self.take()
            operands.append(self.not_expr())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def not_expr(self) -> Node:
        if self.at_keyword("not"):
            _, _, position = self.take()
            self._enter(position)
            operand = self.not_expr()
            self.depth -= 1
            return Not(operand)
        return self.primary()

    def _enter(self, position: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ConditionError(f"condition nested deeper than {MAX_DEPTH}", position)

    def primary(self) -> Node:
        kind, text, position = self.take()
        if kind == "(":
            self._enter(position)
            node = self.or_expr()
            self.depth -= 1
            closing, closing_text, closing_position = self.take()
            if closing != ")":
                found = "the end" if closing == "end" else repr(closing_text)
                raise ConditionError(f"missing ')' for '(' at character {position + 1}, found {found}",
                                     closing_position)
            return node
        if kind == "number" or (kind == "keyword" and text == "all"):
            return self.quantified(text, position)
        if kind == "name":
            return Ref(text, position)
        if kind == "pattern":
            raise ConditionError(f"wildcard {text!r} needs '1 of' or 'all of' before it", position)
        if kind == "end":
            raise ConditionError("condition ends where a selection was expected", position)
        raise ConditionError(f"unexpected {text!r}: expected a selection name", position)

    def quantified(self, quantifier: str, position: int) -> Node:
        if quantifier not in ("1", "all"):
            raise ConditionError(f"'{quantifier} of' is not supported: use '1 of' or 'all of'", position)
        if not self.at_keyword("of"):
            _, text, where = self.peek()
            raise ConditionError(f"expected 'of' after {quantifier!r}, found {text or 'the end'!r}", where)
        self.take()
        kind, text, target_position = self.take()
        if kind == "keyword" and text == "them":
            return Quantified(quantifier == "all", None, position)
        if kind in ("name", "pattern"):
            return Quantified(quantifier == "all", text, position)
        found = text or "the end"
        raise ConditionError(f"expected 'them' or a selection pattern after 'of', found {found!r}",
                             target_position)


def parse_condition(text: str) -> Node:
    """Parse a condition string; raises ConditionError (and nothing else) when it is malformed."""
    if not isinstance(text, str):
        raise ConditionError("the condition must be a string")
    if len(text) > MAX_CONDITION_LENGTH:
        raise ConditionError(f"condition longer than {MAX_CONDITION_LENGTH} characters")
    return _Parser(text).parse()


def _pattern_names(node: Quantified, names: list[str]) -> list[str]:
    if node.pattern is None:
        matched = [n for n in names if not n.startswith("_")]
        if not matched:
            raise ConditionError("'of them' but no selection (names starting with '_' are left out)",
                                 node.position)
        return matched
    regex = re.compile("".join(".*" if c == "*" else re.escape(c) for c in node.pattern) + r"\Z")
    matched = [n for n in names if regex.match(n)]
    if not matched:
        raise ConditionError(f"{node.pattern!r} matches no selection", node.position)
    return matched


def _expand(node: Node, names: list[str]) -> Node:
    """Replace quantifiers by the And/Or of the names they match; check every name exists."""
    if isinstance(node, Ref):
        if node.name not in names:
            known = ", ".join(names) or "none"
            raise ConditionError(f"unknown selection {node.name!r} (selections: {known})", node.position)
        return node
    if isinstance(node, Not):
        return Not(_expand(node.operand, names))
    if isinstance(node, And):
        return And(tuple(_expand(o, names) for o in node.operands))
    if isinstance(node, Or):
        return Or(tuple(_expand(o, names) for o in node.operands))
    refs = tuple(Ref(n, node.position) for n in _pattern_names(node, names))
    if len(refs) == 1:
        return refs[0]
    return And(refs) if node.every_one else Or(refs)


def resolve(node: Node, names: list[str]) -> Node:
    """The condition with quantifiers expanded over `names`; ConditionError on unknown names."""
    return _expand(node, list(names))


def referenced_names(node: Node) -> set[str]:
    """Selection names a resolved condition uses."""
    if isinstance(node, Ref):
        return {node.name}
    if isinstance(node, Not):
        return referenced_names(node.operand)
    if isinstance(node, And | Or):
        return set().union(*(referenced_names(o) for o in node.operands))
    raise TypeError("resolve() the condition first")


def required_names(node: Node) -> set[str]:
    """Selections that must match for a resolved condition to be true (used to index rules)."""
    if isinstance(node, Ref):
        return {node.name}
    if isinstance(node, And):
        return set().union(*(required_names(o) for o in node.operands))
    if isinstance(node, Or):
        return set.intersection(*(required_names(o) for o in node.operands))
    return set()


def compile_condition(node: Node, selections: Mapping[str, Predicate]) -> Predicate:
    """Compile a resolved condition into one predicate over whatever the selections take."""
    if isinstance(node, Ref):
        return selections[node.name]
    if isinstance(node, Not):
        return _not(compile_condition(node.operand, selections))
    if isinstance(node, And):
        return _all(tuple(compile_condition(o, selections) for o in node.operands))
    if isinstance(node, Or):
        return _any(tuple(compile_condition(o, selections) for o in node.operands))
    raise TypeError("resolve() the condition first")


def _not(inner: Predicate) -> Predicate:
    def negated(value: object) -> bool:
        return not inner(value)

    return negated


def _all(predicates: tuple[Predicate, ...]) -> Predicate:
    if len(predicates) == 2:
        first, second = predicates

        def both(value: object) -> bool:
            return first(value) and second(value)

        return both

    def every(value: object) -> bool:
        for predicate in predicates:  # noqa: SIM110 - a loop beats any()/all() over a generator here
            if not predicate(value):
                return False
        return True

    return every


def _any(predicates: tuple[Predicate, ...]) -> Predicate:
    if len(predicates) == 2:
        first, second = predicates

        def either(value: object) -> bool:
            return first(value) or second(value)

        return either

    def some(value: object) -> bool:
        for predicate in predicates:  # noqa: SIM110 - a loop beats any()/all() over a generator here
            if predicate(value):
                return True
        return False

    return some
