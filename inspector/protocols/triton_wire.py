"""Tolerant protobuf reading for the `triton` layer: fields by number from a message or from a
prefix of one, map entries, and typed accessors.

A gRPC message longer than the framer's keep cap arrives here cut short. :func:`read_fields`
with `partial_ok` then returns the last, cut, length-delimited field with the length its header
declared (so a 300 KiB tensor is still known to be 300 KiB), and running out of bytes inside a
tag or varint ends the message quietly. Without `partial_ok` the same cases are malformed input:
the decoder stops and says why. It never raises.
"""

from __future__ import annotations

from typing import NamedTuple

from inspector.limits import DEFAULT_LIMITS
from inspector.protocols.protobuf import WIRE_FIXED32, WIRE_FIXED64, WIRE_LEN, WIRE_VARINT, ProtobufError, read_varint
from inspector.protocols.triton_common import MAX_NAME, Reporter, pb_text

_TWO_63 = 1 << 63
_TWO_64 = 1 << 64


class Field(NamedTuple):
    """One field. `length` is a LEN field's declared length (`len(value)` unless it was cut)."""

    number: int
    wire_type: int
    value: int | bytes
    length: int = 0

    @property
    def partial(self) -> bool:
        return self.wire_type == WIRE_LEN and len(self.value) < self.length  # type: ignore[arg-type]


class Fields(NamedTuple):
    """The fields of one message, in wire order, and how decoding ended."""

    fields: list[Field]
    #: Why decoding stopped early (malformed input), or None.
    error: str | None
    #: Where the next field would start: past the end of the data when the last field was cut.
    end: int


def read_fields(data: bytes, *, partial_ok: bool = False,
                max_fields: int = DEFAULT_LIMITS.max_protobuf_fields) -> Fields:
    """Decode one message's fields; never raises.

    With `partial_ok` (the data is a prefix of the message), running out of bytes is not an
    error: a LEN field cut short is returned with what there is and its declared length.
    """
    # Hot path of every Triton gRPC record: one-byte tags and lengths are read inline and fields
    # are built as plain tuples of the Field type (no per-field Python call).
    fields: list[Field] = []
    append = fields.append
    new = tuple.__new__
    end = len(data)
    pos = 0
    try:
        while pos < end:
            if len(fields) >= max_fields:
                return Fields(fields, f"more than {max_fields} fields", pos)
            tag = data[pos]
            if tag < 0x80:
                pos += 1
            else:
                tag, pos = read_varint(data, pos)
            number, wire_type = tag >> 3, tag & 7
            if number == 0:
                return Fields(fields, "field number 0", pos)
            if wire_type == WIRE_LEN:
                length = data[pos] if pos < end else 0x80
                if length < 0x80:
                    pos += 1
                else:
                    length, pos = read_varint(data, pos)
                if length > end - pos:
                    if partial_ok:
                        append(new(Field, (number, wire_type, data[pos:], length)))
                        return Fields(fields, None, pos + length)
                    return Fields(fields, f"field {number}: length {length} runs past the end "
                                          f"({end - pos} bytes left)", pos)
                append(new(Field, (number, wire_type, data[pos:pos + length], length)))
                pos += length
            elif wire_type == WIRE_VARINT:
                value, pos = read_varint(data, pos)
                append(new(Field, (number, wire_type, value, 0)))
            elif wire_type in (WIRE_FIXED32, WIRE_FIXED64):
                size = 4 if wire_type == WIRE_FIXED32 else 8
                if end - pos < size:
                    return Fields(fields, None if partial_ok else f"field {number}: truncated fixed value", end)
                append(new(Field, (number, wire_type, int.from_bytes(data[pos:pos + size], "little"), 0)))
                pos += size
            else:
                return Fields(fields, f"field {number}: unsupported wire type {wire_type}", pos)
    except ProtobufError as exc:
        if partial_ok and str(exc).startswith("truncated"):
            return Fields(fields, None, end)
        return Fields(fields, str(exc), pos)
    return Fields(fields, None, pos)


def signed64(value: int) -> int:
    """A varint read as unsigned, reinterpreted as the int64 it encodes."""
    return value - _TWO_64 if value >= _TWO_63 else value


def map_entries(entries: list[Field], report: Reporter, what: str) -> list[tuple[str, list[Field]]]:
    """`map<string, Message>` entries as `(key, value fields)`, in wire order."""
    items = []
    for entry in entries:
        parsed = read_fields(entry.value, partial_ok=entry.partial)  # type: ignore[arg-type]
        if parsed.error:
            report("triton_protobuf_invalid", f"{what} entry: {parsed.error}")
        key = ""
        value: list[Field] = []
        for sub in parsed.fields:
            if sub.number == 1 and sub.wire_type == WIRE_LEN:
                key = pb_text(sub.value)  # type: ignore[arg-type]
            elif sub.number == 2 and sub.wire_type == WIRE_LEN:
                nested = read_fields(sub.value, partial_ok=sub.partial)  # type: ignore[arg-type]
                if nested.error:
                    report("triton_protobuf_invalid", f"{what} value: {nested.error}")
                value = nested.fields
        items.append((key, value))
    return items


def first(fields: list[Field], number: int, wire_type: int) -> Field | None:
    """The first field `number` of that wire type (a scalar sent twice: proto3 keeps the last;
    Triton's fields of interest are sent once by every client)."""
    for f in fields:
        if f.number == number and f.wire_type == wire_type:
            return f
    return None


def text_of(fields: list[Field], number: int, limit: int = MAX_NAME) -> str | None:
    f = first(fields, number, WIRE_LEN)
    return pb_text(f.value, limit) if f is not None else None  # type: ignore[arg-type]


def varint_of(fields: list[Field], number: int) -> int | None:
    f = first(fields, number, WIRE_VARINT)
    return f.value if f is not None else None  # type: ignore[return-value]
