"""The small closures a detection compiles to: value tests, field access, AND / OR.

An *element test* takes one value from a record (a scalar, or one element of a list) and says
whether it matches; a *predicate* takes a whole record. Everything here is built once, at load:
constants are already lower-cased (unless case-sensitive), sets frozen, regexes compiled, CIDRs
turned into integer ranges. Tests check the value's class first: a number never matches a
string test, a boolean never matches a number (``True == 1`` in Python, not in rules).

Hot path: explicit loops below are faster than any()/all() over a generator.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import re
from collections.abc import Callable
from typing import Any

Predicate = Callable[[dict], bool]
ElementTest = Callable[[Any], bool]
#: (IP version, first address, last address) as integers.
IpRange = tuple[int, int, int]


# --------------------------------------------------------------------------- strings


def base64_variants(value: str, offsets: bool) -> tuple[str, ...]:
    """The base64 of `value`; with `offsets`, the three substrings any alignment shows (Sigma)."""
    raw = value.encode()
    if not offsets:
        return (base64.b64encode(raw).decode("ascii"),)
    starts, ends = (0, 2, 3), (None, -3, -2)
    return tuple(
        base64.b64encode(b" " * shift + raw)[starts[shift]:ends[(len(raw) + shift) % 3]].decode("ascii")
        for shift in range(3)
    )


def string_test(operator: str, constants: tuple[str, ...], cased: bool) -> ElementTest:
    """eq, neq, startswith, endswith or contains over constants (already lower-cased unless cased)."""
    if operator in ("eq", "neq"):
        wanted = frozenset(constants)
        if operator == "neq":
            if cased:
                return lambda x: x.__class__ is str and x not in wanted
            return lambda x: x.__class__ is str and x.lower() not in wanted
        if len(wanted) == 1:
            (only,) = wanted
            if cased:
                return lambda x: x == only and x.__class__ is str
            return lambda x: x.__class__ is str and x.lower() == only
        if cased:
            return lambda x: x.__class__ is str and x in wanted
        return lambda x: x.__class__ is str and x.lower() in wanted
    if operator == "startswith":
        if cased:
            return lambda x: x.__class__ is str and x.startswith(constants)
        return lambda x: x.__class__ is str and x.lower().startswith(constants)
    if operator == "endswith":
        if cased:
            return lambda x: x.__class__ is str and x.endswith(constants)
        return lambda x: x.__class__ is str and x.lower().endswith(constants)
    if len(constants) == 1:
        (needle,) = constants
        if cased:
            return lambda x: x.__class__ is str and needle in x
        return lambda x: x.__class__ is str and needle in x.lower()

    def contains_any(x: Any) -> bool:
        if x.__class__ is not str:
            return False
        haystack = x if cased else x.lower()
        for needle in constants:  # noqa: SIM110
            if needle in haystack:
                return True
        return False

    return contains_any


def regex_tests(patterns: list[re.Pattern[str]], every: bool) -> list[ElementTest]:
    """One test searching any of the patterns, or (every) one test per pattern."""
    searches = [p.search for p in patterns]
    if every:
        return [lambda x, s=s: x.__class__ is str and s(x) is not None for s in searches]
    if not searches:
        return []

    def search_any(x: Any) -> bool:
        if x.__class__ is not str:
            return False
        for search in searches:  # noqa: SIM110
            if search(x) is not None:
                return True
        return False

    return [search_any]


# --------------------------------------------------------------------------- numbers, booleans


def scalar_eq_tests(boolean: bool, values: list[Any], every: bool, negate: bool) -> list[ElementTest]:
    """Equality (or, negated, difference) on booleans or numbers, never across the two kinds."""
    groups = [(v,) for v in values] if every else [tuple(values)]
    tests: list[ElementTest] = []
    for group in groups:
        if not group and not negate:
            continue
        wanted = frozenset(group)
        if boolean:
            if negate:
                tests.append(lambda x, w=wanted: x.__class__ is bool and x not in w)
            else:
                tests.append(lambda x, w=wanted: x.__class__ is bool and x in w)
        elif negate:
            tests.append(lambda x, w=wanted: (x.__class__ is int or x.__class__ is float) and x not in w)
        else:
            tests.append(lambda x, w=wanted: (x.__class__ is int or x.__class__ is float) and x in w)
    return tests


def bound_test(operator: str, numbers: list[float], every: bool) -> ElementTest:
    """gt / gte / lt / lte against any (or every) bound: any(x > c) is x > min(c), and so on."""
    if operator in ("gt", "gte"):
        bound = max(numbers) if every else min(numbers)
    else:
        bound = min(numbers) if every else max(numbers)
    compare: ElementTest = {"gt": lambda x: x > bound, "gte": lambda x: x >= bound,
                            "lt": lambda x: x < bound, "lte": lambda x: x <= bound}[operator]
    return lambda x: (x.__class__ is int or x.__class__ is float) and compare(x)


# --------------------------------------------------------------------------- addresses


@functools.lru_cache(maxsize=65536)
def ip_number(text: str) -> tuple[int, int] | None:
    """(version, integer) of an address string, or None; cached (records repeat addresses)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return address.version, int(address)


def range_test(ranges: tuple[IpRange, ...]) -> ElementTest:
    """The value is an address inside one of the ranges."""
    def in_ranges(x: Any) -> bool:
        if x.__class__ is not str:
            return False
        parsed = ip_number(x)
        if parsed is None:
            return False
        version, number = parsed
        for range_version, low, high in ranges:  # noqa: SIM110
            if range_version == version and low <= number <= high:
                return True
        return False

    return in_ranges


def range_tests(ranges: list[IpRange], every: bool) -> list[ElementTest]:
    groups = [(r,) for r in ranges] if every else ([tuple(ranges)] if ranges else [])
    return [range_test(group) for group in groups]


def outside_ranges(ranges: list[IpRange]) -> ElementTest:
    """The value is an address, and in none of the ranges."""
    inside = range_test(tuple(ranges))
    return lambda x: x.__class__ is str and ip_number(x) is not None and not inside(x)


# --------------------------------------------------------------------------- records


def never(_: Any) -> bool:
    return False


def present(getter: Callable[[dict], Any]) -> Predicate:
    """The field holds at least one non-null value."""
    def is_present(record: dict) -> bool:
        value = getter(record)
        if value is None:
            return False
        if value.__class__ is list:
            return any(e is not None for e in value)
        return True

    return is_present


def field_predicate(getter: Callable[[dict], Any], test: ElementTest, on_missing: bool) -> Predicate:
    """Apply `test` to the field's value, or to any element of a list; `on_missing` when absent."""
    def match(record: dict) -> bool:
        value = getter(record)
        if value is None:
            return on_missing
        if value.__class__ is list:
            if not value:
                return on_missing
            for element in value:  # noqa: SIM110
                if element is not None and test(element):
                    return True
            return False
        return test(value)

    return match


def any_test(tests: tuple[ElementTest, ...]) -> ElementTest:
    def any_of_tests(x: Any) -> bool:
        for test in tests:  # noqa: SIM110
            if test(x):
                return True
        return False

    return any_of_tests


def all_of(predicates: tuple[Predicate, ...]) -> Predicate:
    if len(predicates) == 1:
        return predicates[0]
    if len(predicates) == 2:
        first, second = predicates
        return lambda record: first(record) and second(record)

    def every(record: dict) -> bool:
        for predicate in predicates:  # noqa: SIM110
            if not predicate(record):
                return False
        return True

    return every


def any_of(predicates: tuple[Predicate, ...]) -> Predicate:
    if len(predicates) == 1:
        return predicates[0]

    def some(record: dict) -> bool:
        for predicate in predicates:  # noqa: SIM110
            if predicate(record):
                return True
        return False

    return some
