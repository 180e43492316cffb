"""Content-Encoding: every coding real servers decode (gzip, deflate, br, zstd, stacks) is
decoded before the layers read a body, capped against bombs; one nothing here decodes is said."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import brotli
import pytest

from inspector.analyze import Analyzer
from inspector.contentcoding import ContentDecoder, DecodeError, Unsupported, content_decoder
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


def _decoded(coding: str, encoded: bytes, limits: Limits | None = None) -> tuple[HttpExchange, list[str]]:
    builder = ExchangeBuilder(limits or Limits())
    head = HttpMessage(kind="response", version="HTTP/1.1", status=200, headers=[("content-encoding", coding)])
    events = [HeadReceived(stream_id=0, direction=TO_CLIENT, message=head, end_stream=False, ts=1.0)]
    events += [BodyReceived(stream_id=0, direction=TO_CLIENT, data=encoded[i:i + 4096], ts=1.0)
               for i in range(0, len(encoded), 4096)]
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
