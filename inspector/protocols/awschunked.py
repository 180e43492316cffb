"""`aws-chunked` bodies (S3 streaming uploads): strip the chunk framing, count the object bytes.

An S3 client that streams an upload (SigV4 `x-amz-content-sha256: STREAMING-...`, header
`Content-Encoding: aws-chunked`) wraps the object in its own chunk framing, inside whatever HTTP
transfer coding carries it (https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming.html):

    <hex size>[;chunk-signature=<64 hex>]\\r\\n  <size bytes>  \\r\\n   ... repeated ...
    0[;chunk-signature=<64 hex>]\\r\\n
    [<trailer name>:<value>\\r\\n ...]                   (x-amz-checksum-crc32, x-amz-trailer-signature)
    \\r\\n

`x-amz-decoded-content-length` declares the object size. :class:`AwsChunkedDecoder` is a sans-IO
body observer (`feed()` then `end()`): it counts every data byte and chunk over the whole body,
keeps a prefix of the object bytes (for model-format detection), and never keeps a chunk signature
or trailer value. Malformed framing and lying sizes become anomalies (layer `s3`).
"""

from __future__ import annotations

from inspector.http import SessionAnomaly
from inspector.limits import DEFAULT_LIMITS, Limits

#: Larger than any single S3 upload (5 GiB object, 5 GiB part): a chunk claiming more is a lie.
MAX_CHUNK_SIZE = 5 * 1024 * 1024 * 1024
#: Trailer names listed per body.
MAX_TRAILER_NAMES = 8

_SIZE_LINE, _DATA, _DATA_END, _TRAILERS, _DONE = range(5)
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


class AwsChunkedDecoder:
    """Chunk-fed decoder of one aws-chunked body.

    After :meth:`end`: `decoded` holds the first `keep_bytes` object bytes, `decoded_length` the
    object bytes seen, `chunk_count` the data chunks, `signed` whether chunks carried signatures,
    `trailer_names` the trailers sent, `complete` whether the final chunk and its trailer section
    arrived, and `anomalies` what was malformed (each event once). Parsing stops at the first
    framing error; the counts then cover the bytes before it.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS, *, declared_length: int | None = None,
                 keep_bytes: int | None = None) -> None:
        self.limits = limits
        self.declared_length = declared_length
        self.keep_bytes = limits.body_keep_bytes if keep_bytes is None else keep_bytes
        self.decoded = bytearray()
        self.decoded_length = 0
        self.chunk_count = 0
        self.signed = False
        self.trailer_names: list[str] = []
        self.complete = False
        self.stopped = False
        self.ended = False
        self.anomalies: list[SessionAnomaly] = []
        self._seen: set[str] = set()
        self._state = _SIZE_LINE
        self._line = bytearray()
        self._remaining = 0

    @property
    def truncated(self) -> bool:
        """True when `decoded` holds fewer bytes than the object (cap, framing error or cut body)."""
        return len(self.decoded) < self.decoded_length or not self.complete

    # --- body observer interface --------------------------------------------------------------

    def feed(self, data: bytes, ts: float) -> None:
        if self.stopped or self.ended or not data:
            return
        pos = 0
        end = len(data)
        while pos < end and not self.stopped:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, end - pos)
                room = self.keep_bytes - len(self.decoded)
                if room > 0:
                    self.decoded += data[pos:pos + min(take, room)]
                self.decoded_length += take
                self._remaining -= take
                pos += take
                if self._remaining == 0:
                    self._state = _DATA_END
            elif state == _DATA_END:
                pos = self._data_end(data, pos, ts)
            elif state == _DONE:
                self._anomaly("s3_aws_chunked_trailing_data",
                              f"{end - pos} bytes after the end of the aws-chunked body", ts)
                self.stopped = True
            else:
                newline = data.find(b"\n", pos)
                stop = end if newline < 0 else newline + 1
                self._line += data[pos:stop]
                pos = stop
                if len(self._line) > self.limits.max_chunk_line:
                    self._anomaly("s3_aws_chunked_bad_framing",
                                  f"aws-chunked line longer than {self.limits.max_chunk_line} bytes", ts)
                    self.stopped = True
                elif newline >= 0:
                    line = bytes(self._line).rstrip(b"\r\n")
                    self._line.clear()
                    if state == _SIZE_LINE:
                        self._size_line(line, ts)
                    else:
                        self._trailer_line(line, ts)

    def gap(self, length: int, ts: float) -> None:
        """Bytes the capture missed: the chunk framing is lost with them. What was decoded so far
        stands (`complete` stays False); the body's end is not an anomaly then."""
        self.stopped = True

    def end(self, ts: float) -> None:
        if self.ended:
            return
        self.ended = True
        if self.stopped:
            return
        if self._state == _DATA:
            self._anomaly("s3_aws_chunked_truncated",
                          f"body ended {self._remaining} bytes short of a declared chunk", ts)
        elif self._state != _DONE:
            self._anomaly("s3_aws_chunked_truncated", "body ended before the final aws-chunked chunk", ts)
        else:
            self._check_declared(ts)

    # --- framing ------------------------------------------------------------------------------

    def _size_line(self, line: bytes, ts: float) -> None:
        size_text, sep, extension = line.partition(b";")
        size_text = size_text.strip()
        if not size_text or len(size_text) > 16 or not _HEX_DIGITS.issuperset(size_text):
            self._anomaly("s3_aws_chunked_bad_size",
                          f"aws-chunked size line is not hexadecimal: {line[:40]!r}", ts)
            self.stopped = True
            return
        size = int(size_text, 16)
        if sep and extension.strip().lower().startswith(b"chunk-signature="):
            self.signed = True
        if size > MAX_CHUNK_SIZE:
            self._anomaly("s3_aws_chunked_bad_size", f"aws-chunked chunk declares {size} bytes", ts)
            self.stopped = True
            return
        if size == 0:
            self._state = _TRAILERS
            return
        self.chunk_count += 1
        self._remaining = size
        self._state = _DATA

    def _data_end(self, data: bytes, pos: int, ts: float) -> int:
        """Expect CRLF after a chunk's data (a bare LF is tolerated); return the next position."""
        line = self._line
        end = len(data)
        while pos < end and len(line) < 2:
            byte = data[pos]
            pos += 1
            if not line and byte == 0x0A:
                self._state = _SIZE_LINE
                return pos
            line.append(byte)
        if len(line) < 2:
            return pos
        if line == b"\r\n":
            line.clear()
            self._state = _SIZE_LINE
            return pos
        self._anomaly("s3_aws_chunked_bad_framing",
                      f"aws-chunked chunk data not followed by CRLF (chunk {self.chunk_count})", ts)
        self.stopped = True
        return end

    def _trailer_line(self, line: bytes, ts: float) -> None:
        if not line:
            self._state = _DONE
            self.complete = True
            return
        name, sep, _ = line.partition(b":")
        if not sep:
            self._anomaly("s3_aws_chunked_bad_framing", f"aws-chunked trailer without a colon: {line[:40]!r}", ts)
            self.stopped = True
            return
        text = name.strip().lower().decode("latin-1")[:64]
        if len(self.trailer_names) < MAX_TRAILER_NAMES and text not in self.trailer_names:
            self.trailer_names.append(text)

    def _check_declared(self, ts: float) -> None:
        declared = self.declared_length
        if declared is not None and declared != self.decoded_length:
            self._anomaly("s3_aws_chunked_length_mismatch",
                          f"x-amz-decoded-content-length is {declared}, the chunks carry "
                          f"{self.decoded_length} bytes", ts)

    def _anomaly(self, event: str, message: str, ts: float) -> None:
        if event in self._seen:
            return
        self._seen.add(event)
        self.anomalies.append(SessionAnomaly(layer="s3", event=event, message=message, ts=ts))


def decode_aws_chunked(body: bytes, *, declared_length: int | None, body_complete: bool,
                       limits: Limits = DEFAULT_LIMITS) -> AwsChunkedDecoder:
    """Decode a whole (possibly truncated) aws-chunked body prefix at once.

    For exchanges no observer watched (built by hand, or a live path without observers). When
    the body prefix is not the complete body, the end-of-body checks are skipped.
    """
    decoder = AwsChunkedDecoder(limits, declared_length=declared_length)
    decoder.feed(body, 0.0)
    if body_complete:
        decoder.end(0.0)
    else:
        decoder.ended = True
    return decoder
