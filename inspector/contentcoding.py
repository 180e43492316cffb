"""HTTP Content-Encoding decoders: streaming, capped, for every coding clients and servers send.

`content_decoder(header)` reads a Content-Encoding header and returns a :class:`ContentDecoder`
for its codings (gzip / x-gzip, deflate with or without its zlib header, br, zstd, and stacks of
them such as ``gzip, br``, removed last coding first, as RFC 9110 §8.4 orders them), or a
:class:`Unsupported` naming the coding it cannot remove. `identity` is no coding; a body framed
`aws-chunked` (S3's signed chunks) is left to the S3 layer. A gzip body of several members, or a
zstd body of several frames, is decoded whole up to MAX_MEMBERS of them (past them it counts as
capped); bytes after the last gzip member, zstd frame or deflate stream that start no other, or a
member that breaks after whole ones, are ignored, as decoders do, wherever the chunks of the body
fall (data after a br stream does not decode: brotli refuses it).

A decoder is fed the encoded bytes as they come and gives at most `limit` decoded bytes per
call: decompression bombs never cost more than the cap, at every stage of a stack. `capped`
tells that the output stopped at the cap with input (or br output) left, or at MAX_MEMBERS
(`members_capped`), and `unconsumed` how much of the input the outermost stage held back then
(for the expansion ratio). A stream that does not decode raises :class:`DecodeError`.
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
#: gzip members or zstd frames decoded in one body (concatenated files: a handful; each costs a
#: decoder and a copy of the input left, so thousands of empty ones would cost quadratic time);
#: past them the body counts as capped.
MAX_MEMBERS = 64
_ZLIB_WBITS = {"gzip": 47, "x-gzip": 47, "deflate": 15}  # 47: a gzip or a zlib header
_NAMES = {"x-gzip": "gzip"}
_GZIP_MAGIC = b"\x1f\x8b"


class DecodeError(Exception):
    """The body does not decode as its Content-Encoding says."""


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A Content-Encoding no decoder here removes: the body stays encoded."""

    coding: str


class _Zlib:
    """gzip (every member of a body of several, RFC 1952 §2.2, up to MAX_MEMBERS) or deflate (one
    stream). Bytes after the last stream that start no gzip member, or a member that breaks after
    whole ones, are ignored, as decoders do (curl, browsers): what decoded before them stays."""

    __slots__ = ("coding", "decoder", "ended", "members", "out", "raw_tried", "stopped")

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self.decoder = zlib.decompressobj(_ZLIB_WBITS[coding])
        self.out = 0
        self.raw_tried = False
        self.members = 1  # streams started
        self.ended = False  # the body's streams are over: what follows is ignored
        self.stopped = False  # MAX_MEMBERS reached with input left: capped there

    def decompress(self, data: bytes, limit: int) -> bytes:
        limit = max(limit, 1)
        if self.ended:
            return b""
        decoded = [self._inflate(data, limit)]  # after the end of a stream, zlib keeps `data` as unused
        size = len(decoded[0])
        # Each turn starts a member on what the last one left, so it consumes input (a member's
        # header at least) even when it decodes nothing; the cap ends it, the rest held back.
        while self.decoder.eof and self.decoder.unused_data and size < limit and not self.ended:
            rest = self.decoder.unused_data
            if self.coding == "deflate" or not _GZIP_MAGIC.startswith(rest[:2]):
                self.ended = True
                break
            if self.members >= MAX_MEMBERS:
                self.ended = self.stopped = True
                break
            self.members += 1
            self.decoder = zlib.decompressobj(_ZLIB_WBITS[self.coding])
            decoded.append(self._inflate(rest, limit - size))
            size += len(decoded[-1])
        return b"".join(decoded)

    def _inflate(self, data: bytes, limit: int) -> bytes:
        try:
            decoded = self.decoder.decompress(data, limit)
        except zlib.error as exc:
            if self.coding == "deflate" and not self.raw_tried and self.out == 0:
                # "deflate" is often sent raw (no zlib header): try once more as raw deflate.
                self.raw_tried = True
                self.decoder = zlib.decompressobj(-15)
                return self._inflate(data, limit)
            if self.members > 1:  # a broken member after whole ones: ignored as trailing bytes
                self.ended = True
                return b""
            raise DecodeError(str(exc)) from None
        self.out += len(decoded)
        return decoded

    def unconsumed(self) -> int:
        if self.ended:
            return int(self.stopped)
        # The ended stream's unused data is input held back too (the members the cap stopped).
        return len(self.decoder.unconsumed_tail) + len(self.decoder.unused_data)


class _Brotli:
    __slots__ = ("decoder", "overran")
    stopped = False  # one stream: never stopped by MAX_MEMBERS

    def __init__(self) -> None:
        self.decoder = brotli.Decompressor()
        self.overran = False  # brotli gave more than the cap: the stage stopped there

    def decompress(self, data: bytes, limit: int) -> bytes:
        limit = max(limit, 1)
        try:
            if self.overran or not self.decoder.can_accept_more_data():
                return b""  # the cap stopped it before: what it holds stays there
            decoded = self.decoder.process(data, output_buffer_limit=limit)
        except brotli.error as exc:  # data after the end of the stream too
            raise DecodeError(str(exc)) from None
        if len(decoded) > limit:
            # `output_buffer_limit` is a soft cap (it can give twice as much): the stream is cut at
            # the cap and the stage counts as capped, as if brotli held the rest.
            self.overran = True
            decoded = decoded[:limit]
        return decoded

    def unconsumed(self) -> int:
        return 1 if self.overran or not self.decoder.can_accept_more_data() else 0


class _Zstd:
    """zstd, every frame of a body of several (RFC 8878 §3.1, up to MAX_MEMBERS); bytes after the
    last frame that start no frame, or a frame that breaks after whole ones, are ignored, as for
    gzip."""

    __slots__ = ("decoder", "ended", "members", "stopped")

    def __init__(self) -> None:
        self.decoder = ZstdDecompressor()
        self.members = 1
        self.ended = False
        self.stopped = False

    def decompress(self, data: bytes, limit: int) -> bytes:
        limit = max(limit, 1)
        if self.ended:
            return b""
        decoded: list[bytes] = []
        size = 0
        if not self.decoder.eof:  # a decompressor at the end of its frame takes no input
            decoded.append(self._decompress(data, limit))
            size = len(decoded[0])
            data = b""
        # As for gzip members: each turn consumes a frame header at least, the cap ends it.
        while self.decoder.eof and size < limit and not self.ended:
            rest = self.decoder.unused_data + data
            data = b""
            if not rest:
                break
            if self.members >= MAX_MEMBERS:
                self.ended = self.stopped = True
                break
            self.members += 1
            self.decoder = ZstdDecompressor()
            decoded.append(self._decompress(rest, limit - size))
            size += len(decoded[-1])
        return b"".join(decoded)

    def _decompress(self, data: bytes, limit: int) -> bytes:
        try:
            return self.decoder.decompress(data, limit)
        except ZstdError as exc:
            if self.members > 1:  # no frame, or a broken one, after whole frames: trailing bytes
                self.ended = True
                return b""
            raise DecodeError(str(exc)) from None

    def unconsumed(self) -> int:
        if self.ended:
            return int(self.stopped)
        if self.decoder.eof:
            return len(self.decoder.unused_data)  # the frames the cap stopped
        return 0 if self.decoder.needs_input else 1


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

    @property
    def members_capped(self) -> bool:
        """MAX_MEMBERS gzip members or zstd frames decoded with more left, in some stage."""
        return any(stage.stopped for stage in self._stages)

    def unconsumed(self) -> int:
        """Input bytes the outermost stage holds back because the cap stopped it (gzip and deflate
        tell exactly, zstd between frames too; otherwise br and zstd say 1 when they hold any)."""
        return self._stages[0].unconsumed()


def content_decoder(header: str | None) -> ContentDecoder | Unsupported | None:
    """The decoder for a Content-Encoding header value; None when it names no coding."""
    if not header:
        return None
    codings = [c.strip().lower() for c in header.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings or "aws-chunked" in codings:  # S3's chunk signing framing: the S3 layer reads it
        return None
    for coding in codings:
        if coding not in _ZLIB_WBITS and coding not in ("br", "zstd"):
            return Unsupported(coding)
    if len(codings) > MAX_CODINGS:
        return Unsupported(", ".join(codings))
    return ContentDecoder(codings)
