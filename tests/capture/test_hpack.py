"""HpackDecoder against RFC 7541's own examples (Appendix C), against blocks written by the real
`hpack.Encoder` (checked field for field and against `hpack.Decoder`), and against malformed and
random input, which must raise `HpackError` and nothing else."""

from __future__ import annotations

import hpack
import pytest
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import HeaderTable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inspector.capture.hpack import (
    EOS,
    HUFFMAN_CODE_LENGTHS,
    STATIC_TABLE,
    HpackDecoder,
    HpackError,
    HpackHeaderListTooLarge,
    HpackHuffmanError,
    HpackIndexError,
    HpackIntegerError,
    HpackTableSizeError,
    HpackTruncatedError,
    _code_tree,
    huffman_codes,
    huffman_decode,
)

Fields = list[tuple[str, str]]


def huffman_encode(data: bytes) -> bytes:
    """Encode with the code as the `hpack` package tabulates it (an independent copy of Appendix B),
    padded with the most significant bits of EOS (all ones)."""
    acc = bits = 0
    for octet in data:
        acc = acc << REQUEST_CODES_LENGTH[octet] | REQUEST_CODES[octet]
        bits += REQUEST_CODES_LENGTH[octet]
    pad = -bits % 8
    acc = acc << pad | (1 << pad) - 1
    return acc.to_bytes((bits + pad) // 8, "big")


def expected(headers: list) -> Fields:
    """What the decoder must return for what the encoder was given: lower-case latin-1 names."""
    return [(bytes(h[0]).decode("latin-1").lower(), bytes(h[1]).decode("latin-1")) for h in headers]


def reference(decoder: hpack.Decoder, block: bytes) -> Fields:
    """hpack.Decoder's answer, converted the way http2.py used to convert it."""
    return [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in decoder.decode(block, raw=True)]


# --- tables ---------------------------------------------------------------------------------------


def test_static_table_matches_hpack():
    theirs = tuple((n.decode(), v.decode()) for n, v in HeaderTable.STATIC_TABLE)
    assert theirs == STATIC_TABLE
    assert len(STATIC_TABLE) == 61


def test_canonical_huffman_codes_match_hpack():
    """The lengths alone define the code (it is canonical): every code equals hpack's table."""
    assert list(HUFFMAN_CODE_LENGTHS) == list(REQUEST_CODES_LENGTH)
    assert huffman_codes() == list(REQUEST_CODES)
    assert REQUEST_CODES[EOS] == 0x3FFFFFFF


def test_code_tree_is_complete():
    """256 internal nodes, none with a missing child: every bit string decodes to something, so
    the automaton needs no 'invalid code' state (only the one EOS leads to)."""
    nodes = _code_tree()
    assert len(nodes) == 256
    assert all(child != 0 for node in nodes for child in node)
    assert sorted(~child for node in nodes for child in node if child < 0) == list(range(257))


# --- Huffman --------------------------------------------------------------------------------------


def test_huffman_every_symbol_alone_and_all_together():
    for octet in range(256):
        assert huffman_decode(huffman_encode(bytes([octet]))) == bytes([octet])
    everything = bytes(range(256)) * 2
    assert huffman_decode(huffman_encode(everything)) == everything
    assert huffman_decode(b"") == b""


def test_huffman_rfc_strings():
    """Strings from RFC 7541 C.4.1 and C.6.1."""
    assert huffman_decode(bytes.fromhex("f1e3c2e5f23a6ba0ab90f4ff")) == b"www.example.com"
    assert huffman_decode(bytes.fromhex("aec3771a4b")) == b"private"
    assert huffman_decode(bytes.fromhex("9d29ad171863c78f0b97c8e9ae82ae43d3")) == b"https://www.example.com"


def test_huffman_seven_bits_of_padding_is_accepted():
    """Symbol 199 has a 25-bit code: four octets, seven of them padding."""
    assert REQUEST_CODES_LENGTH[199] == 25
    assert huffman_decode(huffman_encode(bytes([199]))) == bytes([199])


@pytest.mark.parametrize(("encoded", "problem"), [
    (b"\x1f\xff", "11 bits of padding"),  # 'a' (00011), then 3 + 8 one bits
    (b"\xff", "8 bits of padding"),  # nothing but padding, a whole octet of it
    (b"\x18", "not all-ones padding"),  # 'a', then 000
    (b"\x00", "not all-ones padding"),  # '0' (00000), then 000
    (b"\xff\xff\xff\xff", "EOS symbol"),  # EOS (30 ones) then 2 bits
    (b"\xff\xff\xff\xfc" + b"\x1f", "EOS symbol"),  # EOS, then more
])
def test_huffman_bad_padding_and_eos(encoded, problem):
    with pytest.raises(HpackHuffmanError, match=problem):
        huffman_decode(encoded)


@given(st.binary(max_size=300))
def test_huffman_round_trip(data):
    assert huffman_decode(huffman_encode(data)) == data


@given(st.binary(max_size=64))
def test_huffman_random_input_is_decoded_exactly_when_canonical(data):
    """Any octets: either an HpackHuffmanError, or a decoding whose encoding is those octets again
    (padding rules leave one valid encoding per string)."""
    try:
        decoded = huffman_decode(data)
    except HpackHuffmanError:
        return
    assert huffman_encode(decoded) == data


# --- RFC 7541 Appendix C --------------------------------------------------------------------------

REQUEST_1 = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")]
REQUEST_2 = [*REQUEST_1, ("cache-control", "no-cache")]
REQUEST_3 = [(":method", "GET"), (":scheme", "https"), (":path", "/index.html"),
             (":authority", "www.example.com"), ("custom-key", "custom-value")]
REQUEST_TABLES = [
    ([(":authority", "www.example.com")], 57),
    ([("cache-control", "no-cache"), (":authority", "www.example.com")], 110),
    ([("custom-key", "custom-value"), ("cache-control", "no-cache"), (":authority", "www.example.com")], 164),
]
C3_REQUESTS = [
    "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
    "8286 84be 5808 6e6f 2d63 6163 6865",
    "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
]
C4_REQUESTS_HUFFMAN = [
    "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
    "8286 84be 5886 a8eb 1064 9cbf",
    "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
]
DATE_1 = ("date", "Mon, 21 Oct 2013 20:13:21 GMT")
DATE_2 = ("date", "Mon, 21 Oct 2013 20:13:22 GMT")
LOCATION = ("location", "https://www.example.com")
COOKIE = ("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1")
RESPONSES = [
    [(":status", "302"), ("cache-control", "private"), DATE_1, LOCATION],
    [(":status", "307"), ("cache-control", "private"), DATE_1, LOCATION],
    [(":status", "200"), ("cache-control", "private"), DATE_2, LOCATION, ("content-encoding", "gzip"), COOKIE],
]
RESPONSE_TABLES = [
    ([LOCATION, DATE_1, ("cache-control", "private"), (":status", "302")], 222),
    ([(":status", "307"), LOCATION, DATE_1, ("cache-control", "private")], 222),  # 302 evicted
    ([COOKIE, ("content-encoding", "gzip"), DATE_2], 215),
]
C5_RESPONSES = [
    "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 "
    "3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
    "4803 3330 37c1 c0bf",
    "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970 "
    "7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 "
    "6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
]
C6_RESPONSES_HUFFMAN = [
    "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad "
    "1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
    "4883 640e ffc1 c0bf",
    "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 "
    "e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
]


@pytest.mark.parametrize(("block", "fields", "table"), [
    ("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
     [("custom-key", "custom-header")], [("custom-key", "custom-header")]),  # C.2.1
    ("040c 2f73 616d 706c 652f 7061 7468", [(":path", "/sample/path")], []),  # C.2.2
    ("1008 7061 7373 776f 7264 0673 6563 7265 74", [("password", "secret")], []),  # C.2.3
    ("82", [(":method", "GET")], []),  # C.2.4
])
def test_rfc_c2_field_representations(block, fields, table):
    decoder = HpackDecoder()
    assert decoder.decode(bytes.fromhex(block)) == fields
    assert decoder.dynamic_table == table
    assert decoder.table_used == (55 if table else 0)


@pytest.mark.parametrize("blocks", [C3_REQUESTS, C4_REQUESTS_HUFFMAN], ids=["C.3", "C.4-huffman"])
def test_rfc_requests(blocks):
    decoder = HpackDecoder()
    for block, fields, (table, used) in zip(blocks, [REQUEST_1, REQUEST_2, REQUEST_3], REQUEST_TABLES,
                                            strict=True):
        assert decoder.decode(bytes.fromhex(block)) == fields
        assert (decoder.dynamic_table, decoder.table_used) == (table, used)


@pytest.mark.parametrize("blocks", [C5_RESPONSES, C6_RESPONSES_HUFFMAN], ids=["C.5", "C.6-huffman"])
def test_rfc_responses_with_eviction(blocks):
    """SETTINGS_HEADER_TABLE_SIZE of 256: entries are evicted as the RFC shows."""
    decoder = HpackDecoder(max_table_size=256)
    for block, fields, (table, used) in zip(blocks, RESPONSES, RESPONSE_TABLES, strict=True):
        assert decoder.decode(bytes.fromhex(block)) == fields
        assert (decoder.dynamic_table, decoder.table_used) == (table, used)


# --- against the real encoder ---------------------------------------------------------------------

names = st.one_of(
    st.sampled_from([b":method", b":path", b":status", b"content-type", b"grpc-status", b"x-trace", b"cookie",
                     b"authorization", b"user-agent", b"Mixed-Case", b""]),
    st.binary(min_size=1, max_size=40),
)
values = st.one_of(st.sampled_from([b"", b"GET", b"200", b"application/grpc", b"0"]), st.binary(max_size=200))
header = st.tuples(names, values, st.booleans())  # (name, value, never indexed)
blocks_strategy = st.lists(
    st.tuples(st.lists(header, max_size=12), st.booleans(), st.none() | st.sampled_from([0, 64, 256, 1000, 4096])),
    min_size=1, max_size=12)


def encoded_blocks(encoder: hpack.Encoder, spec) -> list[tuple[bytes, list]]:
    """Blocks (with Huffman or not, after a table size change or not), each with its input."""
    out = []
    for headers, huffman, new_size in spec:
        if new_size is not None:
            encoder.header_table_size = new_size
        out.append((encoder.encode(headers, huffman=huffman), headers))
    return out


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(blocks_strategy, st.data())
def test_round_trip_against_hpack(spec, data):
    """Random header lists through hpack.Encoder: each block decodes to its input (names
    lower-cased), equal to hpack.Decoder's output, and the same with the block cache on. A block
    that left the table as it was may be seen again (a retransmitted frame, a repeated gRPC head):
    that is what the cache serves."""
    encoder = hpack.Encoder()
    ours = HpackDecoder(max_header_list_size=1 << 20)
    cached = HpackDecoder(max_header_list_size=1 << 20, cache_blocks=4)
    theirs = hpack.Decoder(max_header_list_size=1 << 20)
    for block, headers in encoded_blocks(encoder, spec):
        before = (ours.dynamic_table, ours.table_size)
        for _ in range(3):
            result = ours.decode(block)
            assert result == expected(headers) == reference(theirs, block) == cached.decode(block)
            assert ours.table_used == sum(len(n) + len(v) + 32 for n, v in ours.dynamic_table) <= ours.table_size
            assert (cached.dynamic_table, cached.table_used) == (ours.dynamic_table, ours.table_used)
            if (ours.dynamic_table, ours.table_size) != before or not data.draw(st.booleans()):
                break


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.lists(header, min_size=1, max_size=8), st.booleans()), min_size=1, max_size=20))
def test_dynamic_table_reuse_over_long_sequences(spec):
    """Headers repeat across blocks, so later blocks are mostly dynamic table indexes."""
    encoder = hpack.Encoder()
    decoder = HpackDecoder(max_header_list_size=1 << 20, cache_blocks=8)
    pool = [h for headers, _ in spec for h in headers]
    for round_ in range(3):
        for headers, huffman in spec:
            block_headers = headers + pool[round_::7]
            block = encoder.encode(block_headers, huffman=huffman)
            assert decoder.decode(block) == expected(block_headers)


def test_never_indexed_and_without_indexing_leave_the_table_alone():
    encoder = hpack.Encoder()
    block = encoder.encode([hpack.NeverIndexedHeaderTuple(b"Authorization", b"Bearer x"), (b"X-A", b"b")])
    decoder = HpackDecoder()
    assert block[0] & 0xF0 == 0x10  # never indexed, literal name
    assert decoder.decode(block) == [("authorization", "Bearer x"), ("x-a", "b")]
    assert decoder.dynamic_table == [("x-a", "b")]
    assert decoder.decode(bytes.fromhex("040c 2f73 616d 706c 652f 7061 7468")) == [(":path", "/sample/path")]
    assert decoder.dynamic_table == [("x-a", "b")]


def test_latin1_names_and_values_are_kept_octet_for_octet():
    encoder = hpack.Encoder()
    block = encoder.encode([(b"X-\xc9t\xe9", b"caf\xe9 \x00\xff")])
    decoder = HpackDecoder()
    assert decoder.decode(block) == [("x-\xe9t\xe9", "caf\xe9 \x00\xff")]
    assert decoder.table_used == len(b"X-\xc9t\xe9") + len(b"caf\xe9 \x00\xff") + 32


def test_size_updates_shrink_evict_and_grow_again():
    encoder = hpack.Encoder()
    decoder = HpackDecoder(max_table_size=8192)
    first = [(b"x-one", b"1" * 100), (b"x-two", b"2" * 100)]
    assert decoder.decode(encoder.encode(first)) == expected(first)
    assert len(decoder.dynamic_table) == 2
    encoder.header_table_size = 150  # one entry fits
    block = encoder.encode([(b"x-three", b"3")])
    assert block[0] & 0xE0 == 0x20  # opens with the size update
    assert decoder.decode(block) == [("x-three", "3")]
    assert decoder.table_size == 150
    assert [name for name, _ in decoder.dynamic_table] == ["x-three"]
    encoder.header_table_size = 0
    decoder.decode(encoder.encode([(b"x-four", b"4")]))
    assert (decoder.dynamic_table, decoder.table_used) == ([], 0)
    encoder.header_table_size = 8192
    big = [(f"x-{n}".encode(), b"v" * 900) for n in range(8)]
    assert decoder.decode(encoder.encode(big)) == expected(big)
    assert decoder.decode(encoder.encode(big)) == expected(big)  # all indexed now
    assert decoder.table_size == 8192 and len(decoder.dynamic_table) == 8


def test_entry_larger_than_the_table_empties_it():
    decoder = HpackDecoder(max_table_size=100)
    encoder = hpack.Encoder()
    encoder.header_table_size = 100
    assert decoder.decode(encoder.encode([(b"a", b"b")])) == [("a", "b")]
    assert decoder.dynamic_table == [("a", "b")]
    assert decoder.decode(encoder.encode([(b"big", b"x" * 80)])) == [("big", "x" * 80)]
    assert (decoder.dynamic_table, decoder.table_used) == ([], 0)
    with pytest.raises(HpackIndexError):
        decoder.decode(b"\xbe")  # index 62: nothing there any more


# --- the block cache ------------------------------------------------------------------------------


def test_cache_serves_repeated_table_neutral_blocks():
    """A block of a literal without indexing: decoded once, then served from the cache (the same
    field objects come back); without a cache every decoding builds new ones."""
    block = bytes.fromhex("040c 2f73 616d 706c 652f 7061 7468")  # RFC 7541 C.2.2
    cached, plain = HpackDecoder(cache_blocks=2), HpackDecoder()
    first, again = cached.decode(block), cached.decode(block)
    assert first == again == plain.decode(block) == [(":path", "/sample/path")]
    assert again[0] is first[0] and again is not first
    assert plain.decode(block)[0] is not plain.decode(block)[0]
    inserting = b"\x40\x01x\x011"  # changes the table: never cached
    assert cached.decode(inserting) == [("x", "1")]
    assert cached.decode(inserting) == [("x", "1")]
    assert cached.dynamic_table == [("x", "1"), ("x", "1")]


def test_cache_follows_table_changes():
    """A cached block of dynamic indexes decodes anew once the table changed under it."""
    decoder = HpackDecoder(cache_blocks=8)
    decoder.decode(b"\x40\x01x\x011")  # x: 1 inserted (index 62)
    repeated = b"\xbe"
    assert decoder.decode(repeated) == [("x", "1")]
    first = decoder.decode(repeated)
    first.append(("mutated", "by the caller"))
    assert decoder.decode(repeated) == [("x", "1")]
    decoder.decode(b"\x40\x01y\x012")  # y: 2 is now index 62
    assert decoder.decode(repeated) == [("y", "2")]
    decoder.decode(b"\x20")  # size update to 0 empties the table
    with pytest.raises(HpackIndexError):
        decoder.decode(repeated)


def test_cache_follows_limit_changes():
    decoder = HpackDecoder(cache_blocks=8)
    assert decoder.decode(b"\x82") == decoder.decode(b"\x82") == [(":method", "GET")]
    decoder.max_table_size = 100  # the encoder must now lower the table size in its next block
    with pytest.raises(HpackTableSizeError, match="did not lower it"):
        decoder.decode(b"\x82")
    assert decoder.decode(b"\x3f\x45\x82") == [(":method", "GET")]  # size update to 100, then GET
    assert decoder.decode(b"\x82") == [(":method", "GET")]
    decoder.max_header_list_size = 40  # ":method" + "GET" + 32 = 42
    with pytest.raises(HpackHeaderListTooLarge):
        decoder.decode(b"\x82")


# --- malformed blocks -----------------------------------------------------------------------------


@pytest.mark.parametrize(("block", "error", "message"), [
    (b"\x80", HpackIndexError, "index 0"),
    (b"\xbe", HpackIndexError, "index 62 is not in the table"),
    (b"\xff\x80\x80\x80\x01", HpackIndexError, "index 2097279"),
    (b"\x7e\x01a", HpackIndexError, "index 62"),  # literal whose name index is past the table
    (b"\x0f\x30\x01a", HpackIndexError, "index 63"),  # without indexing, name index 15 + 48
    (b"\xff" + b"\x80" * 5 + b"\x01", HpackIntegerError, "more than 5 continuation octets"),
    (b"\xff\xff\xff\xff\xff\x7f", HpackIntegerError, "over the limit"),
    (b"\xff", HpackTruncatedError, "ends inside"),
    (b"\xff\x80", HpackTruncatedError, "ends inside"),
    (b"\x40", HpackTruncatedError, "ends inside"),
    (b"\x40\x01a", HpackTruncatedError, "ends inside"),
    (b"\x40\x05ab", HpackTruncatedError, "string of 5 octets"),
    (b"\x40\x01a\x7f\x10abc", HpackTruncatedError, "string of 143 octets"),
    (b"\x40\x81\x00\x01a", HpackHuffmanError, "not all-ones padding"),
    (b"\x40\x01a\x82\x1f\xff", HpackHuffmanError, "11 bits of padding"),
    (b"\x40\x01a\x84\xff\xff\xff\xff", HpackHuffmanError, "EOS"),
    (b"\x3f\xe2\x1f", HpackTableSizeError, "update to 4097 is over the allowed 4096"),
    (b"\x82\x20", HpackTableSizeError, "after a header field"),
    (b"\x82" * 1000, HpackHeaderListTooLarge, "1000 fields and 42000 octets"),
])
def test_malformed_blocks(block, error, message):
    decoder = HpackDecoder(max_header_list_size=65536 // 2)
    with pytest.raises(error, match=message) as caught:
        decoder.decode(block)
    assert isinstance(caught.value, HpackError) and isinstance(caught.value, ValueError)


def test_size_updates_only_at_the_start_but_several_allowed():
    decoder = HpackDecoder()
    assert decoder.decode(b"\x20\x3f\xe1\x1f\x82") == [(":method", "GET")]  # 0, then 4096, then GET
    assert decoder.table_size == 4096


def test_header_list_size_counts_name_value_and_32():
    block = b"\x82\x84"  # ":method: GET" (42) + ":path: /" (38)
    assert HpackDecoder(max_header_list_size=80).decode(block) == [(":method", "GET"), (":path", "/")]
    with pytest.raises(HpackHeaderListTooLarge):
        HpackDecoder(max_header_list_size=79).decode(block)


def test_accepts_bytearray_and_memoryview():
    block = bytes.fromhex(C4_REQUESTS_HUFFMAN[0])
    assert HpackDecoder().decode(bytearray(block)) == HpackDecoder().decode(memoryview(block)) == REQUEST_1


def test_negative_limits_are_refused():
    with pytest.raises(ValueError):
        HpackDecoder(max_table_size=-1)
    with pytest.raises(ValueError):
        HpackDecoder().max_table_size = -1


# --- never raises anything else -------------------------------------------------------------------

PRIMED = [bytes.fromhex(block) for block in C6_RESPONSES_HUFFMAN]


def _decode_quietly(decoder: HpackDecoder, block: bytes) -> None:
    try:
        fields = decoder.decode(block)
    except HpackError:
        return
    assert all(type(n) is str and type(v) is str and n == n.lower() for n, v in fields)


@settings(max_examples=500)
@given(st.lists(st.binary(max_size=80), min_size=1, max_size=6), st.booleans(), st.booleans())
def test_random_blocks_raise_only_hpack_errors(blocks, primed, cache):
    """Random octets, on a fresh or a populated table, decoding on after errors."""
    decoder = HpackDecoder(max_table_size=256, max_header_list_size=2000, cache_blocks=4 if cache else 0)
    if primed:
        for block in PRIMED:
            decoder.decode(block)
    for block in blocks:
        _decode_quietly(decoder, block)
        _decode_quietly(decoder, block)
        assert decoder.table_used <= decoder.table_size


@settings(max_examples=300)
@given(st.data())
def test_mutated_real_blocks_raise_only_hpack_errors(data):
    headers = [(":method", "POST"), (":path", "/inference.GRPCInferenceService/ModelInfer"),
               ("content-type", "application/grpc"), ("x-trace", "t" * 50),
               hpack.NeverIndexedHeaderTuple("authorization", "Bearer abc")]
    block = hpack.Encoder().encode(headers, huffman=data.draw(st.booleans()))
    mutated = bytearray(block)
    for _ in range(data.draw(st.integers(1, 4))):
        mutated[data.draw(st.integers(0, len(mutated) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    decoder = HpackDecoder(max_header_list_size=500)
    _decode_quietly(decoder, bytes(mutated[:cut]))
    _decode_quietly(decoder, bytes(mutated))
