"""HTTP Content-Encoding decoders: streaming, capped, for every coding clients and servers send.

`content_decoder(header)` reads a Content-Encoding header and returns a :class:`ContentDecoder`
for its codings (gzip / x-gzip, deflate with or without its zlib header, br, zstd, and stacks of
them such as ``gzip, br``, removed last coding first, as RFC 9110 §8.4 orders them), or a
:class:`Unsupported` naming the coding it cannot remove. `identity` is no coding; a body framed
`aws-chunked` (S3's signed chunks) is left to the S3 layer.

A decoder is fed the encoded bytes as they come and gives at most `limit` decoded bytes per
call: decompression bombs never cost more than the cap, at every stage of a stack. `capped`
tells that the output stopped at the cap with input left, and `unconsumed` how much of the input
the outermost stage held back then (for the expansion ratio). A stream that does not decode
raises :class:`DecodeError`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import brotli

try:  # Python 3.14's compression.zstd, or its backport (a mitmproxy dependency)
    from compression.zstd import ZstdDecompressor, ZstdError  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - which one is present depends on the Python
    from backports.zstd import ZstdDecompressor, ZstdError  # type: ignore[import-not-found,no-redef]

#: Codings stacked deeper than this are not decoded (no client sends more than two).
MAX_CODINGS = 3
_ZLIB_WBITS = {"gzip": 47, "x-gzip": 47, "deflate": 15}  # 47: a gzip or a zlib header
_NAMES = {"x-gzip": "gzip"}


class DecodeError(Exception):
    """The body does not decode as its Content-Encoding says."""


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A Content-Encoding no decoder here removes: the body stays encoded."""

    coding: str


class _Zlib:
    __slots__ = ("coding", "decoder", "out", "raw_tried")

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self.decoder = zlib.decompressobj(_ZLIB_WBITS[coding])
        self.out = 0
        self.raw_tried = False

    def decompress(self, data: bytes, limit: int) -> bytes:
        try:
            decoded = self.decoder.decompress(data, max(limit, 1))
        except zlib.error as exc:
            if self.coding == "deflate" and not self.raw_tried and self.out == 0:
                # "deflate" is often sent raw (no zlib header): try once more as raw deflate.
                self.raw_tried = True
                self.decoder = zlib.decompressobj(-15)
                return self.decompress(data, limit)
            raise DecodeError(str(exc)) from None
        self.out += len(decoded)
        return decoded

    def unconsumed(self) -> int:
        return len(self.decoder.unconsumed_tail)


class _Brotli:
    __slots__ = ("decoder",)

    def __init__(self) -> None:
        self.decoder = brotli.Decompressor()

    def decompress(self, data: bytes, limit: int) -> bytes:
        try:
            if not self.decoder.can_accept_more_data():
                return b""  # the cap stopped it before: what it holds stays there
            return self.decoder.process(data, output_buffer_limit=max(limit, 1))[:max(limit, 1)]
        except brotli.error as exc:
            raise DecodeError(str(exc)) from None

    def unconsumed(self) -> int:
        return 0 if self.decoder.can_accept_more_data() else 1


class _Zstd:
    __slots__ = ("decoder",)

    def __init__(self) -> None:
        self.decoder = ZstdDecompressor()

    def decompress(self, data: bytes, limit: int) -> bytes:
        try:
            if self.decoder.eof:
                return b""
            return self.decoder.decompress(data, max(limit, 1))
        except ZstdError as exc:
            raise DecodeError(str(exc)) from None

    def unconsumed(self) -> int:
        return 0 if self.decoder.needs_input or self.decoder.eof else 1


def _stage(coding: str) -> _Zlib | _Brotli | _Zstd:
    if coding in _ZLIB_WBITS:
        return _Zlib(coding)
    return _Brotli() if coding == "br" else _Zstd()


class ContentDecoder:
    """Removes the codings of one body, outermost first, each stage's output capped."""

    __slots__ = ("_stages", "capped", "name")

    def __init__(self, codings: list[str]) -> None:
        #: The codings removed, as a header would list them ("gzip", "gzip, br").
        self.name = ", ".join(_NAMES.get(c, c) for c in codings)
        self._stages = [_stage(c) for c in reversed(codings)]
        self.capped = False

    def decompress(self, data: bytes, limit: int) -> bytes:
        """At most `limit` decoded bytes from `data` (and what earlier input left)."""
        for stage in self._stages:
            data = stage.decompress(data, limit)
            if stage.unconsumed():
                self.capped = True
        return data

    def unconsumed(self) -> int:
        """Input bytes the outermost stage holds back because the cap stopped it (zlib only
        tells exactly; the others say 1 when they hold any)."""
        return self._stages[0].unconsumed()


def content_decoder(header: str | None) -> ContentDecoder | Unsupported | None:
    """The decoder for a Content-Encoding header value; None when it names no coding."""
    if not header:
        return None
    codings = [c.strip().lower() for c in (header or "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings or "aws-chunked" in codings:  # S3's chunk signing framing: the S3 layer reads it
        return None
    for coding in codings:
        if coding not in _ZLIB_WBITS and coding not in ("br", "zstd"):
            return Unsupported(coding)
    if len(codings) > MAX_CODINGS:
        return Unsupported(", ".join(codings))
    return ContentDecoder(codings)
