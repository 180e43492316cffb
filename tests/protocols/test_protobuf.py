"""The schema-less protobuf wire decoder and its encoder.

google.protobuf is not installed in the venv, so known encodings come from the protobuf
encoding guide (https://protobuf.dev/programming-guides/encoding/), computed by hand there.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.limits import Limits
from inspector.protocols.protobuf import (
    WIRE_FIXED32,
    WIRE_FIXED64,
    WIRE_LEN,
    WIRE_VARINT,
    ProtobufError,
    ProtoField,
    decode_fields,
    encode_field,
    encode_message,
    encode_varint,
    iter_fields,
    read_varint,
    safe_decode,
    try_decode_message,
)

# --- known encodings ------------------------------------------------------------------------------

VARINTS = [
    (0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (150, b"\x96\x01"), (300, b"\xac\x02"),
    (2**63, b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01"), (2**64 - 1, b"\xff" * 9 + b"\x01"),
]


@pytest.mark.parametrize(("value", "encoded"), VARINTS)
def test_varint_known_encodings(value: int, encoded: bytes):
    assert encode_varint(value) == encoded
    assert read_varint(encoded, 0) == (value, len(encoded))
    assert read_varint(b"\xaa" + encoded + b"\x01", 1) == (value, len(encoded) + 1)


def test_negative_int64_is_ten_bytes():
    assert encode_varint(-1) == b"\xff" * 9 + b"\x01"
    assert read_varint(encode_varint(-2), 0) == (2**64 - 2, 10)


def test_spec_examples():
    """Test1.a = 150; Test2.b = "testing"; Test3.c = Test1{a: 150}; packed Test5.f = [3, 270, 86942]."""
    assert encode_field(1, 150) == bytes.fromhex("089601")
    assert decode_fields(bytes.fromhex("089601")) == [(1, WIRE_VARINT, 150)]
    assert encode_field(2, "testing") == bytes.fromhex("120774657374696e67")
    assert decode_fields(bytes.fromhex("120774657374696e67")) == [(2, WIRE_LEN, b"testing")]
    assert encode_field(3, [encode_field(1, 150)]) == bytes.fromhex("1a03089601")
    assert decode_fields(bytes.fromhex("1a03089601")) == [(3, WIRE_LEN, bytes.fromhex("089601"))]
    ((number, wire_type, packed),) = decode_fields(bytes.fromhex("2206038e029ea705"))
    assert (number, wire_type) == (4, WIRE_LEN)
    values, pos = [], 0
    while pos < len(packed):
        value, pos = read_varint(packed, pos)
        values.append(value)
    assert values == [3, 270, 86942]


def test_fixed_width_fields():
    """double 1.0 is fixed64 0x3ff0000000000000; fixed32 is 4 little-endian bytes."""
    assert decode_fields(bytes.fromhex("09000000000000f03f")) == [(1, WIRE_FIXED64, 0x3FF0000000000000)]
    assert encode_field(1, 0x3FF0000000000000, WIRE_FIXED64) == bytes.fromhex("09000000000000f03f")
    assert encode_field(5, 0xDEADBEEF, WIRE_FIXED32) == bytes.fromhex("2defbeadde")
    assert decode_fields(bytes.fromhex("2defbeadde")) == [(5, WIRE_FIXED32, 0xDEADBEEF)]


def test_large_field_numbers_and_order():
    message = encode_message([(536870911, 1), (16, b""), (2, "x"), (2, "y")])
    assert decode_fields(message) == [(536870911, WIRE_VARINT, 1), (16, WIRE_LEN, b""),
                                      (2, WIRE_LEN, b"x"), (2, WIRE_LEN, b"y")]
    assert list(iter_fields(message)) == decode_fields(message)


# --- malformed input ------------------------------------------------------------------------------

MALFORMED = [
    (b"\x08\x96", "truncated varint"),
    (b"\x08", "truncated varint"),
    (b"\x12\x07abc", "length 7 runs past the end"),
    (b"\x12", "truncated varint"),
    (b"\x08" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
    (b"\x08" + b"\xff" * 9 + b"\x7f", "overflows 64 bits"),
    (b"\x0e\x00", "bad wire type 6"),
    (b"\x0f\x00", "bad wire type 7"),
    (b"\x0b\x0c", "groups"),
    (b"\x0c", "groups"),
    (b"\x00\x01", "field number 0"),
    (b"\x2d\x01\x02", "truncated fixed32"),
    (b"\x09\x01\x02\x03", "truncated fixed64"),
    (b"\xf8\xff\xff\xff\x7f\x00", "out of range"),
]


@pytest.mark.parametrize(("data", "reason"), MALFORMED)
def test_malformed_raises_protobuf_error_only(data: bytes, reason: str):
    with pytest.raises(ProtobufError, match=reason):
        decode_fields(data)
    fields, error = safe_decode(data)
    assert fields is None and error is not None and reason in error
    assert try_decode_message(data) is None


def test_protobuf_error_is_a_value_error():
    assert issubclass(ProtobufError, ValueError)


def test_max_fields():
    message = encode_field(1, 1) * 11
    assert len(decode_fields(message, max_fields=11)) == 11
    with pytest.raises(ProtobufError, match="more than 10 fields"):
        decode_fields(message, max_fields=10)


def test_encoder_rejects_what_it_cannot_encode():
    with pytest.raises(ValueError, match="out of range"):
        encode_field(0, 1)
    with pytest.raises(ValueError, match="64 bits"):
        encode_varint(2**64)
    with pytest.raises(ValueError, match="wire type"):
        encode_field(1, b"x", WIRE_FIXED32)


# --- schema-less interpretation -------------------------------------------------------------------


def triton_like_request() -> bytes:
    """Shaped like Triton's ModelInferRequest: model_name, model_version, one input tensor."""
    shape = encode_varint(1) + encode_varint(3) + encode_varint(224) * 2  # packed repeated int64
    tensor = encode_message([(1, "INPUT0"), (2, "FP32")]) + encode_field(3, shape)
    return encode_message([(1, "resnet50"), (2, "1")]) + encode_field(5, tensor)


def test_try_decode_interprets_nested_text_and_bytes():
    assert try_decode_message(triton_like_request()) == [
        ProtoField(1, WIRE_LEN, "resnet50"),
        ProtoField(2, WIRE_LEN, "1"),
        ProtoField(5, WIRE_LEN, [
            ProtoField(1, WIRE_LEN, "INPUT0"),
            ProtoField(2, WIRE_LEN, "FP32"),
            ProtoField(3, WIRE_LEN, b"\x01\x03\xe0\x01\xe0\x01"),  # packed varints: not a message, not text
        ]),
    ]


def test_try_decode_prefers_printable_text_and_keeps_binary():
    # "hello" would also parse as a message (field 13 varint 0x65, ...): printable text wins.
    assert try_decode_message(encode_field(1, "hello")) == [ProtoField(1, WIRE_LEN, "hello")]
    assert try_decode_message(encode_field(1, "línea\nzwei")) == [ProtoField(1, WIRE_LEN, "línea\nzwei")]
    assert try_decode_message(encode_field(1, b"\xff\xfe\x00")) == [ProtoField(1, WIRE_LEN, b"\xff\xfe\x00")]
    assert try_decode_message(encode_field(1, b"")) == [ProtoField(1, WIRE_LEN, "")]
    assert try_decode_message(b"") == []


def test_try_decode_depth_limit():
    layers = [encode_field(1, 7)]
    for _ in range(20):
        layers.append(encode_field(1, layers[-1]))
    node: object = try_decode_message(layers[-1], limits=Limits(max_protobuf_depth=4))
    depth = 0
    while isinstance(node, list):
        node = node[0].value
        depth += 1
    assert depth == 5  # the top message plus 4 nested levels
    assert node == layers[-1 - depth].decode()  # below that: left as text (it is valid UTF-8)


def test_try_decode_field_budget_spans_the_tree():
    """Nested fields count against one budget: when it runs out, fields stay uninterpreted."""
    message = encode_field(1, encode_field(1, 1) * 50) * 3
    roomy = try_decode_message(message, limits=Limits(max_protobuf_fields=200))
    assert roomy is not None and [len(f.value) for f in roomy] == [50, 50, 50]
    tight = try_decode_message(message, limits=Limits(max_protobuf_fields=100))
    assert tight is not None
    assert [isinstance(f.value, list) for f in tight] == [True, False, False]
    assert tight[1].value == (encode_field(1, 1) * 50).decode()
    assert try_decode_message(encode_field(1, 1) * 11, limits=Limits(max_protobuf_fields=10)) is None


# --- properties -----------------------------------------------------------------------------------

field_values = st.one_of(
    st.integers(min_value=0, max_value=2**64 - 1),
    st.binary(max_size=40),
)


@settings(max_examples=300)
@given(st.lists(st.tuples(st.integers(min_value=1, max_value=2**29 - 1), field_values), max_size=20))
def test_round_trip(fields: list[tuple[int, int | bytes]]):
    decoded = decode_fields(encode_message(fields))
    assert [(number, value) for number, _, value in decoded] == fields
    expected_wire_types = [WIRE_VARINT if isinstance(v, int) else WIRE_LEN for _, v in fields]
    assert [wire for _, wire, _ in decoded] == expected_wire_types


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_safe_decode_and_try_decode_never_raise(data: bytes):
    fields, error = safe_decode(data)
    assert (fields is None) != (error is None)
    try_decode_message(data, limits=Limits(max_protobuf_depth=4, max_protobuf_fields=200))
