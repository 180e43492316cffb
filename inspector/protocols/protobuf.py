"""A small schema-less protobuf wire-format decoder (and an encoder for tests and the lab).

Protocol parsers that know their field numbers (Triton's `ModelInferRequest`, ...) read a message
with :func:`decode_fields` and pick the fields they need; generic views use
:func:`try_decode_message`, which guesses what each length-delimited field holds. We decode the
wire format ourselves instead of importing generated protobuf modules: no schema is needed, and
the live sidecar stays clear of the protobuf runtime (see ARCHITECTURE.md).

Wire format (https://protobuf.dev/programming-guides/encoding/): a message is a sequence of
records `tag value`, where `tag = field_number << 3 | wire_type` is a varint and the wire type
says how the value is laid out:

    0 VARINT   base-128 varint, at most 10 bytes
    1 I64      8 bytes little-endian (fixed64, sfixed64, double)
    2 LEN      varint length, then that many bytes (string, bytes, message, packed repeated)
    3/4        SGROUP/EGROUP: deprecated groups, rejected here
    5 I32      4 bytes little-endian (fixed32, sfixed32, float)

Everything read from peer data raises only :class:`ProtobufError`; :func:`safe_decode` returns
the error as text instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from inspector.limits import DEFAULT_LIMITS, Limits

WIRE_VARINT = 0
WIRE_FIXED64 = 1
WIRE_LEN = 2
WIRE_START_GROUP = 3
WIRE_END_GROUP = 4
WIRE_FIXED32 = 5

MAX_VARINT_BYTES = 10
MAX_FIELD_NUMBER = (1 << 29) - 1
_UINT64_MASK = (1 << 64) - 1

#: Printable text: a length-delimited field made only of these characters reads as a string.
_CONTROL_CHARS = frozenset(chr(c) for c in range(32) if chr(c) not in "\t\r\n") | {"\x7f"}

FieldValue = int | bytes
ProtoValue = int | str | bytes | list["ProtoField"]


class ProtobufError(ValueError):
    """The bytes are not a well-formed protobuf message; the text says why."""


class ProtoField(NamedTuple):
    """One field as :func:`try_decode_message` interprets it.

    `value` is an int (varint, fixed32, fixed64, unsigned), a `str` (printable UTF-8), a nested
    `list[ProtoField]` (a length-delimited field that parses as a message) or `bytes`.
    """

    number: int
    wire_type: int
    value: ProtoValue


def read_varint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """Decode the varint at `buf[pos:]`; return `(value, position after it)`."""
    byte = buf[pos] if pos < len(buf) else -1
    if 0 <= byte < 0x80:  # one-byte fast path: most tags and small lengths
        return byte, pos + 1
    result = 0
    shift = 0
    end = len(buf)
    start = pos
    while True:
        if pos >= end:
            raise ProtobufError(f"truncated varint at offset {start}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if pos - start >= MAX_VARINT_BYTES:
            raise ProtobufError(f"varint longer than {MAX_VARINT_BYTES} bytes at offset {start}")
    if result > _UINT64_MASK:
        raise ProtobufError(f"varint overflows 64 bits at offset {start}")
    return result, pos


def iter_fields(data: bytes | bytearray | memoryview, max_fields: int = DEFAULT_LIMITS.max_protobuf_fields,
                ) -> Iterator[tuple[int, int, FieldValue]]:
    """Yield `(field_number, wire_type, value)` for each field of one message, in wire order.

    `value` is an int for varint, fixed32 and fixed64 (unsigned), bytes for length-delimited.
    Raises :class:`ProtobufError` on malformed input or after `max_fields` fields.
    """
    end = len(data)
    pos = 0
    count = 0
    while pos < end:
        if count >= max_fields:
            raise ProtobufError(f"more than {max_fields} fields")
        tag_at = pos
        tag, pos = read_varint(data, pos)
        number = tag >> 3
        wire_type = tag & 7
        if number == 0:
            raise ProtobufError(f"field number 0 at offset {tag_at}")
        if number > MAX_FIELD_NUMBER:
            raise ProtobufError(f"field number {number} out of range at offset {tag_at}")
        value: FieldValue
        if wire_type == WIRE_VARINT:
            value, pos = read_varint(data, pos)
        elif wire_type == WIRE_LEN:
            length, pos = read_varint(data, pos)
            if length > end - pos:
                raise ProtobufError(f"field {number}: length {length} runs past the end "
                                    f"({end - pos} bytes left) at offset {tag_at}")
            value = bytes(data[pos:pos + length])
            pos += length
        elif wire_type == WIRE_FIXED32:
            if end - pos < 4:
                raise ProtobufError(f"field {number}: truncated fixed32 at offset {tag_at}")
            value = int.from_bytes(data[pos:pos + 4], "little")
            pos += 4
        elif wire_type == WIRE_FIXED64:
            if end - pos < 8:
                raise ProtobufError(f"field {number}: truncated fixed64 at offset {tag_at}")
            value = int.from_bytes(data[pos:pos + 8], "little")
            pos += 8
        elif wire_type in (WIRE_START_GROUP, WIRE_END_GROUP):
            raise ProtobufError(f"field {number}: groups (wire type {wire_type}) are not supported")
        else:
            raise ProtobufError(f"field {number}: bad wire type {wire_type} at offset {tag_at}")
        count += 1
        yield number, wire_type, value


def decode_fields(data: bytes | bytearray | memoryview,
                  max_fields: int = DEFAULT_LIMITS.max_protobuf_fields) -> list[tuple[int, int, FieldValue]]:
    """All fields of one message as `(field_number, wire_type, value)`; see :func:`iter_fields`."""
    return list(iter_fields(data, max_fields))


def safe_decode(data: bytes | bytearray | memoryview,
                max_fields: int = DEFAULT_LIMITS.max_protobuf_fields,
                ) -> tuple[list[tuple[int, int, FieldValue]] | None, str | None]:
    """:func:`decode_fields` that never raises: `(fields, None)` or `(None, reason)`."""
    try:
        return decode_fields(data, max_fields), None
    except ProtobufError as exc:
        return None, str(exc)


class _Budget:
    """Fields left to decode across a whole nested message tree."""

    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left


def try_decode_message(data: bytes | bytearray | memoryview, depth: int = 0, *,
                       limits: Limits = DEFAULT_LIMITS) -> list[ProtoField] | None:
    """Decode `data` as a message of unknown schema, or return None when it is not one.

    Length-delimited fields are interpreted, in this order, as printable UTF-8 text (`str`), a
    nested message (`list[ProtoField]`, while `depth` stays below `limits.max_protobuf_depth`),
    any other UTF-8 text, and finally raw `bytes`. Printable text comes first because short text
    often parses as a message too ("hello" is a valid message); an empty field is "". At most
    `limits.max_protobuf_fields` fields are decoded across the whole tree.
    """
    budget = _Budget(limits.max_protobuf_fields)
    return _decode_tree(data, depth, limits.max_protobuf_depth, budget)


def _decode_tree(data: bytes | bytearray | memoryview, depth: int, max_depth: int,
                 budget: _Budget) -> list[ProtoField] | None:
    if depth > max_depth:
        return None
    fields: list[ProtoField] = []
    try:
        for number, wire_type, value in iter_fields(data, budget.left):
            if budget.left <= 0:  # nested fields used the budget up
                return None
            budget.left -= 1
            if wire_type == WIRE_LEN:
                assert isinstance(value, bytes)
                fields.append(ProtoField(number, wire_type, _interpret(value, depth, max_depth, budget)))
            else:
                fields.append(ProtoField(number, wire_type, value))
    except ProtobufError:
        return None
    return fields


def _interpret(value: bytes, depth: int, max_depth: int, budget: _Budget) -> ProtoValue:
    if not value:
        return ""
    text: str | None
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and _CONTROL_CHARS.isdisjoint(text):
        return text
    if depth + 1 <= max_depth and budget.left > 0:
        saved = budget.left
        nested = _decode_tree(value, depth + 1, max_depth, budget)
        if nested is not None:
            return nested
        budget.left = saved
    return text if text is not None else value


# --- encoder (tests, lab traffic) -------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """Base-128 varint; negative numbers as 64-bit two's complement (10 bytes), like int64."""
    if value < 0:
        value &= _UINT64_MASK
    if value > _UINT64_MASK:
        raise ValueError(f"varint value {value} does not fit in 64 bits")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_tag(number: int, wire_type: int) -> bytes:
    if not 1 <= number <= MAX_FIELD_NUMBER:
        raise ValueError(f"field number {number} out of range")
    return encode_varint(number << 3 | wire_type)


def encode_field(number: int, value: int | bytes | str | list[bytes], wire_type: int | None = None) -> bytes:
    """Encode one field. ints are varints unless `wire_type` is WIRE_FIXED32/WIRE_FIXED64;
    bytes and str (UTF-8) are length-delimited. A list of pre-encoded fields is a nested message.
    """
    if isinstance(value, list):
        value = b"".join(value)
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bytes | bytearray):
        if wire_type not in (None, WIRE_LEN):
            raise ValueError(f"bytes need wire type {WIRE_LEN}, not {wire_type}")
        return encode_tag(number, WIRE_LEN) + encode_varint(len(value)) + bytes(value)
    if isinstance(value, bool):
        value = int(value)
    if wire_type in (None, WIRE_VARINT):
        return encode_tag(number, WIRE_VARINT) + encode_varint(value)
    if wire_type == WIRE_FIXED32:
        return encode_tag(number, WIRE_FIXED32) + (value & 0xFFFFFFFF).to_bytes(4, "little")
    if wire_type == WIRE_FIXED64:
        return encode_tag(number, WIRE_FIXED64) + (value & _UINT64_MASK).to_bytes(8, "little")
    raise ValueError(f"cannot encode an int with wire type {wire_type}")


def encode_message(fields: list[tuple[int, int | bytes | str]]) -> bytes:
    """Encode `(number, value)` pairs in order with :func:`encode_field`'s default wire types."""
    return b"".join(encode_field(number, value) for number, value in fields)
