"""Reading a field out of a record by its dotted name, compiled once per field.

A getter returns None when the field is missing (or null), the value itself otherwise. A path
that goes through a list of objects (`triton.inputs.shape`) yields the list of every element's
value, flattened one level when those values are lists themselves (so `shape` [1, 3] and [2]
give [1, 3, 2]); a leaf holding a list is returned as is. Callers treat a list as "any element".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Getter = Callable[[dict], Any]


def split_field(name: str) -> tuple[str, ...]:
    return tuple(name.split("."))


def make_getter(path: tuple[str, ...]) -> Getter:
    """A function reading `path` from a record (a dict of JSON values)."""
    if len(path) == 1:
        (key,) = path

        def get1(record: dict) -> Any:
            return record.get(key)

        return get1
    if len(path) == 2:
        first, second = path
        rest = (second,)

        def get2(record: dict) -> Any:
            value = record.get(first)
            if isinstance(value, dict):
                return value.get(second)
            if isinstance(value, list):
                return _through_list(value, rest)
            return None

        return get2

    def get_n(record: dict) -> Any:
        value: Any = record
        for depth, key in enumerate(path):
            if isinstance(value, dict):
                value = value.get(key)
                if value is None:
                    return None
            elif isinstance(value, list):
                return _through_list(value, path[depth:])
            else:
                return None
        return value

    return get_n


def _through_list(items: list, path: tuple[str, ...]) -> list | None:
    found: list = []
    _collect(items, path, found)
    return found or None


def _collect(value: Any, path: tuple[str, ...], out: list) -> None:
    if isinstance(value, list):
        for element in value:
            _collect(element, path, out)
        return
    if not path:
        if value is not None:
            out.append(value)
        return
    if isinstance(value, dict):
        inner = value.get(path[0])
        if inner is not None:
            _collect(inner, path[1:], out)
