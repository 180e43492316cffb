"""Errors of the rule language: one located problem, a whole set that failed, a bad condition."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RuleError:
    """One problem in a rule or config file. `line` is 1-based; 0 means the whole file."""

    file: str
    line: int
    message: str

    @property
    def where(self) -> str:
        """`file:line`, or the file alone when the problem is the whole file's."""
        return f"{self.file}:{self.line}" if self.line else self.file

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class RuleLoadError(Exception):
    """A rule set (or config) did not load; `errors` lists every problem found, in file order."""

    def __init__(self, errors: Sequence[RuleError]) -> None:
        self.errors: tuple[RuleError, ...] = tuple(errors)
        count = len(self.errors)
        head = "\n".join(str(e) for e in self.errors[:20])
        more = f"\n... and {count - 20} more" if count > 20 else ""
        super().__init__(f"{count} error{'s' if count != 1 else ''} in rules:\n{head}{more}")


class ConditionError(ValueError):
    """A detection condition that does not parse, or names a selection that does not exist."""

    def __init__(self, message: str, position: int | None = None) -> None:
        self.position = position
        where = f" (at character {position + 1})" if position is not None else ""
        super().__init__(f"{message}{where}")
