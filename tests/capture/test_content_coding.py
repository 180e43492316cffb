"""Content-Encoding: every coding real servers decode (gzip, deflate, br, zstd, stacks) is
decoded before the layers read a body, capped against bombs; one nothing here decodes is said."""

from __future__ import annotations

import gzip
import random
import zlib
from pathlib import Path

import brotli
import pytest

from inspector.analyze import Analyzer
from inspector.contentcoding import MAX_MEMBERS, ContentDecoder, DecodeError, Unsupported, content_decoder
from inspector.engine import Engine
from inspector.exchange import ExchangeBuilder
from inspector.http import TO_CLIENT, BodyReceived, HeadReceived, HttpExchange, HttpMessage, MessageEnded
from inspector.limits import Limits
from inspector.rules import load_config, load_rules

try:
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd  # type: ignore[import-not-found,no-redef]

REPO = Path(__file__).resolve().parents[2]
CAPTURE = Path(__file__).parent / "http_captures" / "llm_encodings.pcap"
PHRASE = "ignore all previous instructions"


def test_real_server_encodings_are_all_read_and_the_injection_rule_fires_on_each():
    config = load_config(None)
    engine = Engine(load_rules([REPO / "signatures" / "llm"], config), config)
    records: list[dict] = []
    Analyzer(records.append, engine=engine, flow_records=False).analyze_file(CAPTURE)
    llm = [r for r in records if r["event_type"] == "llm"]
    assert len(llm) == 7 and all(PHRASE in r["llm"]["user_prompt"].lower() for r in llm)
    codings = [next(h["value"] for h in r["http"]["request_headers"] if h["name"] == "content-encoding")
               for r in llm]
    assert codings == ["identity", "gzip", "deflate", "br", "zstd", "gzip, gzip", "GZIP"]
    alerts = [r for r in records if r["event_type"] == "alert" and r["alert"]["signature_id"] == 3300001]
    assert len(alerts) == 7
    assert not [r for r in records if r["event_type"] == "anomaly" and r["anomaly"]["layer"] in ("http", "llm")]


def _decoded(coding: str | list[str], encoded: bytes, limits: Limits | None = None,
             chunk: int = 4096) -> tuple[HttpExchange, list[str]]:
    """`encoded` through an ExchangeBuilder in `chunk`-byte pieces, under one Content-Encoding
    header line per item of `coding`."""
    builder = ExchangeBuilder(limits or Limits())
    lines = [coding] if isinstance(coding, str) else coding
    head = HttpMessage(kind="response", version="HTTP/1.1", status=200,
                       headers=[("content-encoding", line) for line in lines])
    events = [HeadReceived(stream_id=0, direction=TO_CLIENT, message=head, end_stream=False, ts=1.0)]
    events += [BodyReceived(stream_id=0, direction=TO_CLIENT, data=encoded[i:i + chunk], ts=1.0)
               for i in range(0, len(encoded), chunk)]
    events.append(MessageEnded(stream_id=0, direction=TO_CLIENT, trailers=[], ts=1.0))
    out = builder.feed(events) + builder.finish(2.0)
    (exchange,) = [o for o in out if isinstance(o, HttpExchange)]
    return exchange, [o.event for o in out if not isinstance(o, HttpExchange)]


PAYLOAD = b'{"model": "m", "messages": []}' * 200


@pytest.mark.parametrize("coding,encode", [
    ("br", brotli.compress),
    ("zstd", zstd.compress),
    ("gzip, br", lambda data: brotli.compress(gzip.compress(data))),
    ("deflate, zstd", lambda data: zstd.compress(zlib.compress(data))),
    ("x-gzip", gzip.compress),
])
def test_each_coding_and_stacks_decode(coding, encode):
    exchange, anomalies = _decoded(coding, encode(PAYLOAD))
    response = exchange.response
    assert response.body == PAYLOAD and response.complete and not response.body_truncated and anomalies == []
    assert response.decoded == coding.replace("x-gzip", "gzip") and response.encoded == ""


@pytest.mark.parametrize("coding,encode", [
    ("br", brotli.compress),
    ("zstd", zstd.compress),
    ("gzip, br", lambda data: brotli.compress(gzip.compress(data))),
])
def test_bombs_stop_at_the_cap_in_every_coding(coding, encode):
    bomb = encode(b"\0" * (64 << 20))
    assert len(bomb) < 200_000
    exchange, anomalies = _decoded(coding, bomb, Limits(body_keep_bytes=1 << 20))
    assert len(exchange.response.body) == 1 << 20 and exchange.response.body_truncated
    assert anomalies == ["decompression_bomb"]


def test_a_coding_nothing_decodes_is_said_not_misread():
    exchange, anomalies = _decoded("compress", b"\x1f\x9d\x90" + bytes(100))
    response = exchange.response
    assert (response.body, response.encoded, response.body_truncated, response.body_length) == (b"", "compress",
                                                                                               True, 103)
    assert anomalies == ["content_encoding_unsupported"]
    exchange, anomalies = _decoded("br", b"this is not brotli at all")
    assert exchange.response.encoded == "br" and anomalies == ["content_decode_error"]


def test_header_forms():
    assert content_decoder(None) is None and content_decoder("identity") is None and content_decoder(" ") is None
    assert content_decoder("aws-chunked") is None  # S3's signed chunks: the S3 layer reads them
    assert isinstance(content_decoder("GZIP"), ContentDecoder)
    assert content_decoder("gzip, snappy") == Unsupported("snappy")
    assert isinstance(content_decoder("gzip, gzip, gzip, gzip"), Unsupported)
    decoder = content_decoder("br")
    assert isinstance(decoder, ContentDecoder)
    with pytest.raises(DecodeError):
        decoder.decompress(b"\xff" * 64, 1024)


#: 2 MB that brotli packs small but decodes past its soft `output_buffer_limit` in one call.
REPEATED = random.Random(0).randbytes(50_000) * 40


def test_br_output_past_its_soft_limit_is_capped_not_cut_silently():
    decoder = content_decoder("br")
    assert isinstance(decoder, ContentDecoder)
    out = decoder.decompress(brotli.compress(REPEATED), 100_000)
    assert out == REPEATED[:100_000] and decoder.capped and decoder.unconsumed() > 0
    exchange, _ = _decoded("br", brotli.compress(REPEATED), Limits(body_keep_bytes=100_000), chunk=1 << 30)
    assert exchange.response.body == REPEATED[:100_000] and exchange.response.body_truncated
    stacked = content_decoder("gzip, br")  # gzip is not fed a stream cut without a word
    assert isinstance(stacked, ContentDecoder)
    out = stacked.decompress(brotli.compress(gzip.compress(REPEATED, compresslevel=0)), 100_000)
    assert REPEATED.startswith(out) and stacked.capped


@pytest.mark.parametrize("coding,encode", [
    ("gzip", gzip.compress),
    ("br, gzip", lambda data: gzip.compress(brotli.compress(data))),
])
def test_nothing_encoded_is_kept_after_the_decompression_cap(coding, encode):
    encoded = encode(REPEATED)
    limits = Limits(body_keep_bytes=1 << 20, max_decompressed_bytes=1000)
    exchange, _ = _decoded(coding, encoded, limits, chunk=len(encoded) // 4 + 1)
    body = exchange.response.body  # br may not give all 1000 bytes from what gzip gave it
    assert 0 < len(body) <= 1000 and body == REPEATED[:len(body)] and exchange.response.body_truncated


@pytest.mark.parametrize("chunk", [7, 4096, 1 << 30])
@pytest.mark.parametrize("coding,encode", [("gzip", gzip.compress), ("zstd", zstd.compress)])
def test_every_gzip_member_and_zstd_frame_is_decoded(coding, encode, chunk):
    encoded = encode(PAYLOAD) + encode(b"") + encode(b"second member")
    exchange, anomalies = _decoded(coding, encoded, chunk=chunk)
    response = exchange.response
    assert response.body == PAYLOAD + b"second member" and not response.body_truncated and anomalies == []


@pytest.mark.parametrize("coding,encode", [("gzip", gzip.compress), ("zstd", zstd.compress)])
def test_members_stop_at_the_cap_and_count_as_held_back(coding, encode):
    decoder = content_decoder(coding)
    assert isinstance(decoder, ContentDecoder)
    second = encode(b"b" * 100)
    assert decoder.decompress(encode(b"a" * 100) + second, 100) == b"a" * 100
    assert decoder.capped and decoder.unconsumed() == len(second)
    exchange, anomalies = _decoded(coding, encode(b"\0" * (2 << 20)) * 64, Limits(body_keep_bytes=1 << 20))
    assert exchange.response.body == b"\0" * (1 << 20) and exchange.response.body_truncated
    assert anomalies == ["decompression_bomb"]
    many = b"".join(encode(b"") for _ in range(MAX_MEMBERS))  # members that decode to nothing: input consumed
    exchange, anomalies = _decoded(coding, many)
    assert exchange.response.body == b"" and not exchange.response.body_truncated and anomalies == []


@pytest.mark.parametrize("coding,encode", [("gzip", gzip.compress), ("zstd", zstd.compress)])
def test_members_past_the_cap_are_not_decoded_and_the_body_counts_as_cut(coding, encode):
    """Each member costs a decoder and a copy of the input left: 50,000 empty ones in a 1 MB body
    would cost seconds. Past MAX_MEMBERS the body is cut there, what decoded kept."""
    body = encode(b"kept") + b"".join(encode(b"") for _ in range(50_000)) + encode(b"never")
    decoder = content_decoder(coding)
    assert isinstance(decoder, ContentDecoder)
    assert decoder.decompress(body, 1 << 20) == b"kept"
    assert decoder.capped and decoder.members_capped and decoder.unconsumed() == 1
    assert decoder.decompress(encode(b"more"), 1 << 20) == b""
    exchange, anomalies = _decoded(coding, body)
    assert exchange.response.body == b"kept" and exchange.response.body_truncated
    assert anomalies == ["content_members_capped"]  # a payload hidden past the cap is not silent
    exchange, anomalies = _decoded(coding, b"".join(encode(b"x") for _ in range(MAX_MEMBERS)))
    assert exchange.response.body == b"x" * MAX_MEMBERS and not exchange.response.body_truncated
    assert anomalies == []


@pytest.mark.parametrize("coding,encode", [("gzip", gzip.compress), ("zstd", zstd.compress)])
def test_a_broken_member_after_whole_ones_is_ignored_wherever_the_chunks_fall(coding, encode):
    broken = encode(b"second")[:6] + b"garbage that is no member at all"
    whole = encode(b"first")
    for cut in range(1, len(broken)):
        decoder = content_decoder(coding)
        assert isinstance(decoder, ContentDecoder)
        out = decoder.decompress(whole + broken[:cut], 1 << 20) + decoder.decompress(broken[cut:], 1 << 20)
        assert out.startswith(b"first") and not decoder.capped


@pytest.mark.parametrize("coding,encode", [
    ("deflate", zlib.compress),
    ("deflate", lambda data: zlib.compress(data, wbits=-15)),
    ("gzip", gzip.compress),
    ("gzip", lambda data: gzip.compress(data) + gzip.compress(b"")),  # after a second member
    ("zstd", zstd.compress),
])
@pytest.mark.parametrize("chunk", [4096, 1 << 30])
@pytest.mark.parametrize("trailing", [b"trailing bytes", b"\0" * 8, b"\x1f\x8b junk that is no member"])
def test_bytes_after_the_last_stream_are_ignored_and_what_decoded_stays(coding, encode, chunk, trailing):
    """curl and browsers ignore what follows the end of the encoded data: so do we, so an appended
    byte cannot hide a body that decoded (the decoded body is whole, not cut, no anomaly)."""
    data = random.Random(1).randbytes(20_000)  # stays 20 KB encoded: several 4096-byte chunks
    exchange, anomalies = _decoded(coding, encode(data) + trailing, chunk=chunk)
    response = exchange.response
    assert response.body == data and not response.body_truncated and response.decoded == coding
    assert anomalies == []


@pytest.mark.parametrize("chunk", [4096, 1 << 30])
def test_data_after_the_end_of_a_br_stream_does_not_decode(chunk):
    data = random.Random(1).randbytes(20_000)
    exchange, anomalies = _decoded("br", brotli.compress(data) + b"trailing bytes", chunk=chunk)
    response = exchange.response
    # what decoded before the chunk that holds the trailing bytes is kept
    assert data.startswith(response.body) and (response.body or chunk > len(data))
    assert response.body_truncated and response.encoded == "br"
    assert anomalies == ["content_decode_error"]


def test_content_encoding_over_two_header_lines_is_one_list():
    exchange, anomalies = _decoded(["gzip", "gzip"], gzip.compress(gzip.compress(PAYLOAD)))
    response = exchange.response
    assert response.body == PAYLOAD and response.decoded == "gzip, gzip" and anomalies == []
    exchange, anomalies = _decoded(["gzip", "identity", "br"], brotli.compress(gzip.compress(PAYLOAD)))
    assert exchange.response.body == PAYLOAD and exchange.response.decoded == "gzip, br"
