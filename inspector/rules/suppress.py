"""Suppressions: site entries that silence a rule's matches for some traffic (counted, not logged).

Like Suricata's `suppress gen_id 1, sig_id N, track by_src, ip 10.0.0.0/8`, as config entries::

    suppress:
      - sid: 3100001              # one sid or a list; required
        src_ip: 10.20.0.0/16      # src_ip / dest_ip take an address, a CIDR or a list (|cidr implied)
        reason: nightly model sync from the admin jump host
      - sid: [3100002, 3100003]
        triton.model: resnet50    # any catalogue field, with the rule value syntax and modifiers

Every field of an entry must match (AND), with the same semantics as a detection selection.
An entry with only `sid` silences the rule everywhere. A suppressed match does not count toward
the rule's rate window. A sid no rule of the loaded set has is a warning, not an error (a site
config serves several rule sets): inspector.rules.loader reports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inspector.rules.matchers import CompileContext, compile_map
from inspector.rules.yamlsource import YMap, line_of

Predicate = Callable[[dict], bool]

_ENTRY_KEYS = ("sid", "reason", "comment")
_IMPLICIT_CIDR = frozenset({"src_ip", "dest_ip"})


@dataclass(frozen=True, slots=True)
class SuppressEntry:
    sids: tuple[int, ...]
    #: None silences the sids everywhere.
    predicate: Predicate | None
    reason: str
    line: int
    #: The config file the entry is in.
    file: str = ""
    #: The fields its predicate reads.
    fields: frozenset[str] = frozenset()


class Suppressions:
    """Compiled suppress entries, looked up by sid."""

    __slots__ = ("_by_sid", "entries")

    def __init__(self, entries: tuple[SuppressEntry, ...] = ()) -> None:
        self.entries = entries
        by_sid: dict[int, list[Predicate | None]] = {}
        for entry in entries:
            for sid in entry.sids:
                by_sid.setdefault(sid, []).append(entry.predicate)
        self._by_sid = {sid: tuple(preds) for sid, preds in by_sid.items()}

    def __bool__(self) -> bool:
        return bool(self._by_sid)

    def __len__(self) -> int:
        return len(self.entries)

    def silences(self, sid: int, record: dict) -> bool:
        predicates = self._by_sid.get(sid)
        if predicates is None:
            return False
        return any(predicate is None or predicate(record) for predicate in predicates)


def compile_suppressions(raw: Any, line: int, ctx: CompileContext) -> Suppressions:
    """The `suppress:` list of a config; errors go to `ctx` (the result then holds what compiled)."""
    if raw is None:
        return Suppressions()
    if not isinstance(raw, list):
        ctx.error(line, "suppress: must be a list of entries")
        return Suppressions()
    entries = []
    for index, item in enumerate(raw):
        entry = _compile_entry(item, line_of(raw, index, line), ctx)
        if entry is not None:
            entries.append(entry)
    return Suppressions(tuple(entries))


def _compile_entry(item: Any, line: int, ctx: CompileContext) -> SuppressEntry | None:
    if not isinstance(item, dict):
        ctx.error(line, "a suppress entry is a map with sid: and the fields to match")
        return None
    sids = _sids(item.get("sid"), line_of(item, "sid", line), ctx) if "sid" in item else None
    if "sid" not in item:
        ctx.error(line, "suppress entry without sid")
    reason = item.get("reason", item.get("comment", ""))
    if not isinstance(reason, str):
        ctx.error(line_of(item, "reason" if "reason" in item else "comment", line), "reason must be a string")
        reason = ""
    fields = YMap(line)
    for key, value in item.items():
        if key not in _ENTRY_KEYS:
            fields[key] = value
            fields.key_lines[key] = line_of(item, key, line)
    predicate = None
    read: set[str] = set()
    if fields:
        saved, saved_read = ctx.implicit_cidr, ctx.fields_read
        ctx.implicit_cidr, ctx.fields_read = _IMPLICIT_CIDR, read
        try:
            predicate, _ = compile_map(fields, ctx, line)
        finally:
            ctx.implicit_cidr, ctx.fields_read = saved, saved_read | read
        if predicate is None:
            return None
    if sids is None:
        return None
    return SuppressEntry(sids, predicate, reason, line, ctx.file, frozenset(read))


def _sids(value: Any, line: int, ctx: CompileContext) -> tuple[int, ...] | None:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        ctx.error(line, f"sid must be a positive integer or a list of them, got {value!r}")
        return None
    return tuple(values)

