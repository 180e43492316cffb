"""aws-chunked de-framing (inspector.protocols.awschunked): whole, byte by byte, every split point.

The unsigned-trailer body is the one botocore's AwsChunkedWrapper writes (the same class boto3
uses for uploads over https); signed-chunk bodies follow the layout of AWS's "Signature
Calculations for the Authorization Header: Transferring Payload in Multiple Chunks" example.
"""

from __future__ import annotations

import io

import pytest
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.limits import Limits
from inspector.protocols.awschunked import AwsChunkedDecoder, decode_aws_chunked

OBJECT = bytes(range(256)) * 300  # 76,800 bytes


def botocore_body(data: bytes, chunk_size: int) -> bytes:
    wrapper = AwsChunkedWrapper(io.BytesIO(data), checksum_cls=Crc32Checksum,
                                checksum_name="x-amz-checksum-crc32", chunk_size=chunk_size)
    return wrapper.read()


CHUNK_SIGNATURE = b"ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"
FINAL_SIGNATURE = b"b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"
TRAILER_SIGNATURE = b"63bddb248ad2590c92712055f51b8e78ab024eead08276b24f010b0efd74843f"


def signed_body(data: bytes, chunk_size: int, trailer: bool = False) -> bytes:
    out = bytearray()
    for start in range(0, len(data), chunk_size):
        chunk = data[start:start + chunk_size]
        out += b"%x;chunk-signature=%s\r\n" % (len(chunk), CHUNK_SIGNATURE)
        out += chunk + b"\r\n"
    out += b"0;chunk-signature=%s\r\n" % FINAL_SIGNATURE
    if trailer:
        out += b"x-amz-checksum-crc32c:sOO8/Q==\r\nx-amz-trailer-signature:%s\r\n" % TRAILER_SIGNATURE
    out += b"\r\n"
    return bytes(out)


def run(chunks: list[bytes], declared: int | None = None, limits: Limits | None = None) -> AwsChunkedDecoder:
    decoder = AwsChunkedDecoder(limits or Limits(), declared_length=declared)
    for chunk in chunks:
        decoder.feed(chunk, 1.0)
    decoder.end(2.0)
    return decoder


def events(decoder: AwsChunkedDecoder) -> list[str]:
    return [a.event for a in decoder.anomalies]


def test_botocore_unsigned_trailer_body():
    body = botocore_body(OBJECT, 32 * 1024)
    decoder = run([body], declared=len(OBJECT))
    assert bytes(decoder.decoded) == OBJECT and decoder.decoded_length == len(OBJECT)
    assert (decoder.chunk_count, decoder.signed, decoder.complete) == (3, False, True)
    assert decoder.trailer_names == ["x-amz-checksum-crc32"] and decoder.anomalies == []
    assert not decoder.truncated


@pytest.mark.parametrize("trailer", [False, True])
def test_signed_chunks_are_stripped(trailer):
    body = signed_body(OBJECT, 65536, trailer)
    decoder = run([body], declared=len(OBJECT))
    assert bytes(decoder.decoded) == OBJECT and (decoder.chunk_count, decoder.signed) == (2, True)
    assert decoder.trailer_names == (["x-amz-checksum-crc32c", "x-amz-trailer-signature"] if trailer else [])
    assert decoder.anomalies == []


def test_every_split_point_and_byte_by_byte():
    data = b"hello, model" * 5
    body = signed_body(data, 16, trailer=True)
    for cut in range(len(body) + 1):
        decoder = run([body[:cut], body[cut:]], declared=len(data))
        assert (bytes(decoder.decoded), decoder.complete, decoder.anomalies) == (data, True, []), cut
    decoder = run([body[i:i + 1] for i in range(len(body))], declared=len(data))
    assert bytes(decoder.decoded) == data and decoder.chunk_count == 4 and decoder.anomalies == []


def test_bare_lf_line_ends_are_tolerated():
    decoder = run([b"5\nhello\n0\n\n"], declared=5)
    assert bytes(decoder.decoded) == b"hello" and decoder.complete and decoder.anomalies == []


def test_only_a_prefix_is_kept_but_every_byte_counted():
    decoder = run([botocore_body(OBJECT, 8192)], declared=len(OBJECT), limits=Limits(body_keep_bytes=1000))
    assert len(decoder.decoded) == 1000 and decoder.decoded_length == len(OBJECT) and decoder.truncated


def test_declared_length_that_lies():
    decoder = run([botocore_body(b"x" * 100, 64)], declared=5000)
    assert events(decoder) == ["s3_aws_chunked_length_mismatch"]
    assert "5000" in decoder.anomalies[0].message and decoder.anomalies[0].layer == "s3"


def test_chunk_size_that_lies_runs_past_the_body():
    decoder = run([b"ffff\r\n" + b"a" * 100])
    assert events(decoder) == ["s3_aws_chunked_truncated"] and decoder.decoded_length == 100


@pytest.mark.parametrize(("body", "event"), [
    (b"zz;chunk-signature=00\r\nabc", "s3_aws_chunked_bad_size"),
    (b"\r\nabc", "s3_aws_chunked_bad_size"),
    (b"fffffffffffff\r\n", "s3_aws_chunked_bad_size"),
    (b"3\r\nabcXY4\r\n", "s3_aws_chunked_bad_framing"),
    (b"3\r\nabc\r\n0\r\nnot a trailer\r\n\r\n", "s3_aws_chunked_bad_framing"),
    (b"3\r\nabc\r\n0\r\n\r\nextra", "s3_aws_chunked_trailing_data"),
    (b"3" * 5000, "s3_aws_chunked_bad_framing"),
    (b"3\r\nabc\r\n", "s3_aws_chunked_truncated"),
])
def test_malformed_framing_is_an_anomaly(body, event):
    assert events(run([body])) == [event]


def test_decode_of_a_prefix_skips_end_checks():
    body = botocore_body(OBJECT, 4096)
    decoder = decode_aws_chunked(body[:5000], declared_length=len(OBJECT), body_complete=False)
    # "1000\r\n" + 4096 bytes + "\r\n" + "1000\r\n" + the rest of the prefix
    assert decoder.anomalies == [] and decoder.decoded_length == 4096 + (5000 - 6 - 4096 - 2 - 6)
    assert decoder.truncated


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=12), st.none() | st.integers(0, 2**40))
def test_never_raises_on_random_bytes(chunks, declared):
    decoder = run(chunks, declared=declared)
    assert decoder.decoded_length >= len(decoder.decoded)
    assert len({a.event for a in decoder.anomalies}) == len(decoder.anomalies)
