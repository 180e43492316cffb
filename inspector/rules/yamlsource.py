"""Line-aware YAML for rule and config files.

PyYAML's composer keeps a mark (line, column) on every node; the usual constructors throw it
away. We compose the node tree and build plain Python values from it ourselves, so that every
mapping remembers the line of each key and every list the line of each item: validation errors
then point at the exact line. Scalars are resolved by PyYAML's SafeConstructor (ints, floats,
bools, null), so values mean what they mean in any YAML tool, with one exception: a plain scalar
YAML would read as a date or timestamp (`2026-01-02`, `2026-02-30`) is kept as the text written.
Rules compare it with strings of the log (a URL, a model name) and check the `date:` key's
format themselves, so a value that is not a real date is not a load failure of the YAML, and a
real one is not rewritten (`2026-01-02T10:00:00Z` stays as written, not `...+00:00`). A scalar
that does not construct (a bad base64 `!!binary`, ...) is an error at its line.

Strictness on top of YAML: duplicate keys in one mapping are errors (YAML loaders usually keep
the last one silently), a file must hold exactly one document, and alias expansion is capped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from inspector.rules.errors import RuleError

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"

#: Values built from one file, aliases counted each time they are expanded ("billion laughs").
MAX_NODES = 100_000


class YMap(dict):
    """A mapping that remembers its own line and the line of each key."""

    __slots__ = ("key_lines", "line")

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[Any, int] = {}

    def line_of(self, key: Any) -> int:
        return self.key_lines.get(key, self.line)


class YList(list):
    """A list that remembers its own line and the line of each item."""

    __slots__ = ("item_lines", "line")

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.item_lines: list[int] = []

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if 0 <= index < len(self.item_lines) else self.line


def line_of(container: Any, key: Any, default: int) -> int:
    """The line of `container[key]` when the container knows it, else `default`."""
    if isinstance(container, YMap | YList):
        return container.line_of(key)
    return default


def load_yaml_text(text: str, file: str) -> tuple[Any, list[RuleError]]:
    """Parse one YAML document into located values; `(None, errors)` when it does not parse."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        return None, [RuleError(file, line, f"YAML syntax error: {problem or exc}")]
    except yaml.YAMLError as exc:
        return None, [RuleError(file, 0, f"YAML error: {exc}")]
    if node is None:
        return None, [RuleError(file, 0, "empty file")]
    builder = _Builder(file)
    value = builder.build(node)
    return value, builder.errors


def load_yaml_file(path: str | Path) -> tuple[Any, list[RuleError]]:
    """Read and parse one YAML file; I/O and decoding problems are errors, never exceptions."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return None, [RuleError(file, 0, f"not UTF-8 text: {exc.reason} at byte {exc.start}")]
    except OSError as exc:
        return None, [RuleError(file, 0, f"cannot read: {exc.strerror or exc}")]
    return load_yaml_text(text, file)


class _Builder:
    """Turns a composed node tree into YMap / YList / scalars, collecting errors."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.errors: list[RuleError] = []
        self._constructor = yaml.constructor.SafeConstructor()
        self._nodes = 0
        self._stack: set[int] = set()

    def _error(self, node: Node, message: str) -> None:
        self.errors.append(RuleError(self.file, node.start_mark.line + 1, message))

    def build(self, node: Node) -> Any:
        self._nodes += 1
        if self._nodes > MAX_NODES:
            if self._nodes == MAX_NODES + 1:
                self._error(node, f"document too large (more than {MAX_NODES} values after aliases)")
            return None
        if isinstance(node, ScalarNode):
            return self._scalar(node)
        if id(node) in self._stack:
            self._error(node, "recursive alias")
            return None
        self._stack.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node)
            if isinstance(node, SequenceNode):
                return self._sequence(node)
        finally:
            self._stack.discard(id(node))
        self._error(node, f"unsupported YAML node {type(node).__name__}")
        return None

    def _scalar(self, node: ScalarNode) -> Any:
        if node.tag == _TIMESTAMP_TAG:  # the text as written (see the module docstring)
            return node.value
        try:
            value = self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self._error(node, f"bad value: {getattr(exc, 'problem', None) or exc}")
            return None
        except (ValueError, TypeError, OverflowError) as exc:  # constructors raise these too
            self._error(node, f"bad value {node.value!r}: {exc}")
            return None
        if isinstance(value, bytes):
            self._error(node, "binary values are not supported")
            return None
        return value

    def _mapping(self, node: MappingNode) -> YMap:
        result = YMap(node.start_mark.line + 1)
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self._error(key_node, "mapping keys must be plain scalars")
                continue
            key = self._scalar(key_node)
            if key is None and key_node.value not in ("null", "~", ""):
                continue
            if not isinstance(key, str | int | float | bool | None):
                self._error(key_node, f"unsupported key {key!r}")
                continue
            line = key_node.start_mark.line + 1
            if key in result:
                self._error(key_node, f"duplicate key {key!r} (first at line {result.key_lines[key]})")
                continue
            result[key] = self.build(value_node)
            result.key_lines[key] = line
        return result

    def _sequence(self, node: SequenceNode) -> YList:
        result = YList(node.start_mark.line + 1)
        for item in node.value:
            result.append(self.build(item))
            result.item_lines.append(item.start_mark.line + 1)
        return result
