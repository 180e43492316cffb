"""The commands' terminal output: rich's Console, Table and markup escaping, imported when something
is first printed.

Importing rich costs about 0.1 s, a fifth of a command's start-up on a 2-core machine: a run that
has nothing to say (`inspector analyze -q` on captures that read whole) never imports it, and a
run that prints its summary imports it after the analysis, not before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import rich.console
    import rich.table


class Console:
    """A `rich.console.Console` with these options, made at the first print."""

    __slots__ = ("_options", "_rich")

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._rich: rich.console.Console | None = None

    @property
    def rich(self) -> rich.console.Console:
        """The rich Console itself (for what takes one, such as a progress display)."""
        if self._rich is None:
            from rich.console import Console as RichConsole

            self._rich = RichConsole(**self._options)
        return self._rich

    @property
    def is_terminal(self) -> bool:
        return self.rich.is_terminal

    def print(self, *objects: Any, **options: Any) -> None:
        self.rich.print(*objects, **options)


def escape(text: str) -> str:
    """`text` with what rich would read as markup escaped (`rich.markup.escape`)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def new_table(*headers: Any, **options: Any) -> rich.table.Table:
    """A `rich.table.Table(*headers, **options)`."""
    from rich.table import Table

    return Table(*headers, **options)
