"""Passive HTTP/2 session parser: both directions of one connection in, `inspector.http` events out.

We watch a connection from the outside, so this is not an HTTP/2 endpoint (h2's connection object
enforces endpoint state and wants to send data): we parse frames ourselves (RFC 9113 section 4)
and decode header blocks with one `inspector.capture.hpack.HpackDecoder` per direction.

Theory of operation
-------------------
Each direction has a frame reader. Its mode is one of

    PREFACE  client direction only: the 24-byte `PRI * HTTP/2.0...` magic comes first
    FRAMES   waiting for a 9-byte frame header (and, for buffered frame types, the payload)
    DATA     streaming a DATA payload out as `BodyReceived` chunks, then skipping its padding
    SKIP     discarding the payload of a frame we ignore or cannot use
    DEAD     gave up (gap, EOF, malformed beyond repair); further bytes are ignored

DATA payloads are never buffered, so a large body streams through; every other frame is buffered
whole, bounded by `Limits.max_header_bytes` (header blocks) or `Limits.max_frame_bytes`.

A capture gap (bytes the capture missed) inside a DATA payload or a skipped frame is stepped
over: the frame header gave its length, so the next frame is found, and DATA does not touch HPACK
state. The stream's body gets a `BodyGap` (its message ends incomplete). A gap anywhere else
(frame headers, header blocks) leaves framing and HPACK state unknown: that direction goes DEAD.
Most bytes of an inference connection are DATA, so a segment lost in a long-lived gRPC
connection usually costs one call, not the rest of the connection.

Each stream keeps one message state per direction (IDLE -> OPEN -> CLOSED). The first HEADERS
block in a direction is the head (`HeadReceived`; 1xx responses are heads that leave the state
IDLE), a later one carries trailers (`MessageEnded.trailers`). A response HEADERS with END_STREAM
and `grpc-status` is gRPC's trailers-only form: its fields are both head and trailers. A stream
is forgotten once both directions are CLOSED (or dead).

HPACK is stateful: a header block we cannot decode (error, oversized, interleaved CONTINUATION)
leaves the decoder out of step with the peer's encoder, so after it that direction's header blocks
are dropped while framing, DATA and stream ends go on. Header blocks are decoded even on streams
we ignore, to keep the table in step. The decoder's table limit for direction X is what the
*receiver* of X advertised in SETTINGS_HEADER_TABLE_SIZE (we take the largest value seen, since
a passive observer cannot order SETTINGS against header blocks of the other direction), capped
by `Limits.max_hpack_table_size` (never below the protocol default of 4096).

RST_STREAM ends a stream's open messages incomplete; frames already in flight on a recently reset
stream are ignored quietly, as RFC 9113 section 5.4.2 expects of a peer.

The three entry points never raise: malformed input becomes a `SessionAnomaly` (layer "http2"),
and a bug of ours becomes `internal_error` and stops the direction it happened in. Each anomaly
name is reported a few times per connection at most; `anomaly_counts` has the totals.
"""

from __future__ import annotations

import struct

from inspector.capture.hpack import HpackDecoder, HpackError, HpackHeaderListTooLarge
from inspector.http import (
    TO_CLIENT,
    TO_SERVER,
    BodyGap,
    BodyReceived,
    Headers,
    HeadReceived,
    HttpMessage,
    MessageEnded,
    SessionAnomaly,
    SessionEvent,
    StreamReset,
)
from inspector.limits import DEFAULT_LIMITS, Limits

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
LAYER = "http2"

# Frame types (RFC 9113 section 6).
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# Flags.
FLAG_END_STREAM = 0x01
FLAG_ACK = 0x01
FLAG_END_HEADERS = 0x04
FLAG_PADDED = 0x08
FLAG_PRIORITY = 0x20

SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_MAX_FRAME_SIZE = 0x5
DEFAULT_HEADER_TABLE_SIZE = 4096
DEFAULT_MAX_FRAME_SIZE = 16384

#: RFC 9113 section 7.
ERROR_CODES = {
    0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR", 0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT", 0x5: "STREAM_CLOSED", 0x6: "FRAME_SIZE_ERROR", 0x7: "REFUSED_STREAM",
    0x8: "CANCEL", 0x9: "COMPRESSION_ERROR", 0xA: "CONNECT_ERROR", 0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY", 0xD: "HTTP_1_1_REQUIRED",
}

_FRAME_HEADER = struct.Struct(">BHBBI")  # length (24 bits as 8 + 16), type, flags, R + stream id
_FRAME_HEADER_LEN = 9
_U32 = struct.Struct(">I")
_GOAWAY_HEAD = struct.Struct(">II")
_SETTING = struct.Struct(">HI")

#: Frame types whose payload must be on stream 0, and those that must not be.
_CONNECTION_FRAMES = frozenset({SETTINGS, PING, GOAWAY})
_STREAM_FRAMES = frozenset({DATA, HEADERS, PRIORITY, RST_STREAM, PUSH_PROMISE, CONTINUATION})
_HEADER_BLOCK_FRAMES = frozenset({HEADERS, PUSH_PROMISE, CONTINUATION})
#: Exact payload lengths of fixed-size frames.
_FIXED_LENGTHS = {PRIORITY: 5, RST_STREAM: 4, PING: 8, WINDOW_UPDATE: 4}

# Reader modes.
_PREFACE, _FRAMES, _DATA, _SKIP, _DEAD = range(5)
# Message state of one direction of a stream.
IDLE, OPEN, CLOSED = 0, 1, 2

#: Each anomaly is reported this many times per session at most; `anomaly_counts` counts them all.
MAX_REPORTS_PER_ANOMALY = 8
#: ... and these, which a misbehaving peer repeats on every frame or stream, only once.
_ONCE = frozenset({"data_without_headers", "frame_on_closed_stream", "stream_id_reused",
                   "frame_exceeds_max_size"})
#: Streams recently reset, remembered so that frames already in flight are ignored quietly.
_RESET_MEMORY = 1024

#: Table-neutral header blocks each decoder remembers (gRPC repeats them: see HpackDecoder).
_BLOCK_CACHE = 128


class _Stream:
    __slots__ = ("state", "stream_id")

    def __init__(self, stream_id: int, to_server: int = IDLE, to_client: int = IDLE) -> None:
        self.stream_id = stream_id
        self.state = [to_server, to_client]  # indexed by direction


class _HeaderBlock:
    """A header block being reassembled from HEADERS/PUSH_PROMISE + CONTINUATION frames."""

    __slots__ = ("end_stream", "fragments", "frames", "kind", "promised_id", "size", "stream_id")

    def __init__(self, kind: int, stream_id: int, end_stream: bool, fragment: bytes,
                 promised_id: int = 0) -> None:
        self.kind = kind
        self.stream_id = stream_id
        self.end_stream = end_stream
        self.promised_id = promised_id
        self.fragments = [fragment]
        self.size = len(fragment)
        self.frames = 1


class _Direction:
    """Frame reader and HPACK decoder state of one direction."""

    __slots__ = ("advertised_table_size", "block", "buf", "data_end_stream", "data_left", "data_stream",
                 "decoder", "direction", "first_frame", "headers_ok", "max_frame_size", "mode", "pad_left",
                 "skip_block_id", "skip_left")

    def __init__(self, direction: int, mode: int, limits: Limits) -> None:
        self.direction = direction
        self.mode = mode
        self.buf = bytearray()
        self.first_frame = True
        self.decoder = HpackDecoder(DEFAULT_HEADER_TABLE_SIZE, limits.max_header_list_size,
                                    cache_blocks=_BLOCK_CACHE)
        self.advertised_table_size = DEFAULT_HEADER_TABLE_SIZE
        self.max_frame_size = DEFAULT_MAX_FRAME_SIZE  # largest the receiver of this direction allowed
        self.headers_ok = True
        self.block: _HeaderBlock | None = None
        self.skip_block_id = 0  # CONTINUATION frames of a dropped block on this stream are skipped
        self.skip_left = 0
        self.data_stream: _Stream | None = None
        self.data_left = 0
        self.pad_left = 0
        self.data_end_stream = False


class Http2Session:
    """Observer of one HTTP/2 connection; see the module docstring.

    `upgraded=True`: the connection switched from HTTP/1.1 (`Upgrade: h2c`); stream 1 is the
    request already seen by the HTTP/1 parser, so only its response is expected here.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS, upgraded: bool = False) -> None:
        self.limits = limits
        self.upgraded = upgraded
        self._dirs = (_Direction(TO_SERVER, _PREFACE, limits), _Direction(TO_CLIENT, _FRAMES, limits))
        self._streams: dict[int, _Stream] = {}
        self._reset: dict[int, None] = {}  # recently reset stream ids, oldest first
        self._max_client_stream = 0
        self._events: list[SessionEvent] = []
        #: Frames read so far (both directions).
        self.frames_seen = 0
        #: Capture gaps stepped over inside DATA payloads (the connection parsed on).
        self.gaps_stepped_over = 0
        #: How many times each anomaly happened (including those reported only once).
        self.anomaly_counts: dict[str, int] = {}
        #: Streams closed as incomplete because too many were open at once.
        self.evicted_streams = 0
        self._handlers = {
            HEADERS: self._on_headers, PRIORITY: self._on_fixed, RST_STREAM: self._on_rst_stream,
            SETTINGS: self._on_settings, PUSH_PROMISE: self._on_push_promise, PING: self._on_fixed,
            GOAWAY: self._on_goaway, WINDOW_UPDATE: self._on_fixed, CONTINUATION: self._on_continuation,
        }
        if upgraded:
            self._streams[1] = _Stream(1, to_server=CLOSED)
            self._max_client_stream = 1

    @property
    def counters(self) -> dict[str, int]:
        """The run's stats this connection adds to (the stream router merges them)."""
        return {"http2_gaps_stepped_over": self.gaps_stepped_over} if self.gaps_stepped_over else {}

    # --- entry points ---------------------------------------------------------------------------

    def receive_data(self, direction: int, data: bytes, ts: float) -> list[SessionEvent]:
        """Bytes seen from `direction` (TO_SERVER or TO_CLIENT), in stream order."""
        events = self._events = []
        try:
            d = self._direction(direction, ts)
            if d is not None and d.mode != _DEAD and data:
                self._feed(d, data, ts)
        except Exception as exc:  # our bug: report it, stop that direction, never raise
            self._internal_error(direction, exc, ts)
        return events

    def receive_gap(self, direction: int, length: int, ts: float) -> list[SessionEvent]:
        """`length` bytes of `direction` are missing from the capture. Inside a DATA frame's
        payload (or a frame being skipped) they are stepped over: the frame's length says where
        the next frame starts, and HPACK state is untouched. Anywhere else that direction stops."""
        events = self._events = []
        try:
            d = self._direction(direction, ts)
            if d is not None and d.mode != _DEAD and length > 0 and not self._step_over(d, length, ts):
                self._anomaly("gap", f"{length} bytes missing from the capture; HTTP/2 cannot resync, "
                              "this direction is no longer parsed", ts, direction)
                self._kill(d, ts)
        except Exception as exc:
            self._internal_error(direction, exc, ts)
        return events

    def _step_over(self, d: _Direction, length: int, ts: float) -> bool:
        """Skip a gap that lies inside the current DATA payload (with its padding) or skipped
        frame; False when it reaches past it."""
        if d.buf:
            return False
        if d.mode == _SKIP and length <= d.skip_left:
            d.skip_left -= length
            if not d.skip_left:
                d.mode = _FRAMES
            return True
        if d.mode != _DATA or length > d.data_left + d.pad_left:
            return False
        in_data = min(length, d.data_left)
        stream = d.data_stream
        if in_data and stream is not None and stream.state[d.direction] == OPEN:
            self._events.append(BodyGap(stream_id=stream.stream_id, direction=d.direction, length=in_data, ts=ts))
        d.data_left -= in_data
        d.pad_left -= length - in_data
        self.gaps_stepped_over += 1
        if not d.data_left and not d.pad_left:
            d.mode = _FRAMES
            self._data_end(d, ts)
        return True

    def receive_eof(self, direction: int, ts: float) -> list[SessionEvent]:
        """`direction` ended (FIN/RST or end of capture): open messages end incomplete."""
        events = self._events = []
        try:
            d = self._direction(direction, ts)
            if d is not None and d.mode != _DEAD:
                if d.buf or d.mode in (_DATA, _SKIP) or d.block is not None:
                    self._anomaly("truncated_frame", "connection ended inside a frame or header block",
                                  ts, direction)
                if d.block is not None:
                    self._drop_block(d, ts)
                self._kill(d, ts)
        except Exception as exc:
            self._internal_error(direction, exc, ts)
        return events

    # --- frame reader ---------------------------------------------------------------------------

    def _direction(self, direction: int, ts: float) -> _Direction | None:
        if direction in (TO_SERVER, TO_CLIENT):
            return self._dirs[int(direction)]
        self._anomaly("bad_direction", f"direction {direction!r} is neither TO_SERVER nor TO_CLIENT", ts)
        return None

    def _feed(self, d: _Direction, data: bytes, ts: float) -> None:
        if d.buf:
            d.buf += data
            work: bytes | bytearray = d.buf
        else:
            work = data
        pos = 0
        end = len(work)
        while pos < end:
            mode = d.mode
            if mode == _FRAMES:
                consumed = self._frame(d, work, pos, end, ts)
                if not consumed:
                    break
                pos += consumed
            elif mode == _DATA:
                pos = self._data_payload(d, work, pos, end, ts)
            elif mode == _SKIP:
                take = min(d.skip_left, end - pos)
                pos += take
                d.skip_left -= take
                if not d.skip_left:
                    d.mode = _FRAMES
            elif mode == _PREFACE:
                pos = self._preface(d, work, pos, end, ts)
                if d.mode == _PREFACE:
                    break
            else:  # _DEAD
                break
        if d.mode == _DEAD:
            d.buf = bytearray()
        elif work is d.buf:
            if pos:
                del d.buf[:pos]
        elif pos < end:
            d.buf = bytearray(work[pos:])

    def _preface(self, d: _Direction, work: bytes | bytearray, pos: int, end: int, ts: float) -> int:
        """Match the client magic; return the position after it (unchanged while more is needed)."""
        n = min(end - pos, len(PREFACE))
        if work[pos:pos + n] == PREFACE[:n]:
            if n < len(PREFACE):
                return pos
            d.mode = _FRAMES
            return pos + len(PREFACE)
        # No magic: a capture that starts mid-connection still has frames; anything else gives up.
        self._anomaly("missing_preface", "client bytes do not start with the HTTP/2 preface", ts, d.direction)
        d.mode = _FRAMES
        return pos

    def _frame(self, d: _Direction, work: bytes | bytearray, pos: int, end: int, ts: float) -> int:
        """Handle the frame at `pos`; return bytes consumed (0 when more are needed)."""
        if end - pos < _FRAME_HEADER_LEN:
            return 0
        hi, lo, ftype, flags, stream_id = _FRAME_HEADER.unpack_from(work, pos)
        length = hi << 16 | lo
        stream_id &= 0x7FFFFFFF
        limits = self.limits
        if ftype == DATA:
            need = _FRAME_HEADER_LEN + (1 if flags & FLAG_PADDED and length else 0)
        elif ftype in self._handlers:
            cap = limits.max_header_bytes if ftype in _HEADER_BLOCK_FRAMES else limits.max_frame_bytes
            need = _FRAME_HEADER_LEN + length if length <= cap else _FRAME_HEADER_LEN
        else:
            need = _FRAME_HEADER_LEN
        if end - pos < need:
            return 0
        if d.first_frame and not self._check_first_frame(d, ftype, flags, length, stream_id, ts):
            return _FRAME_HEADER_LEN
        self.frames_seen += 1
        block = d.block
        if block is not None and (ftype != CONTINUATION or stream_id != block.stream_id):
            self._anomaly("continuation_expected", f"{_frame_name(ftype)} frame on stream {stream_id} "
                          f"interrupts the header block of stream {block.stream_id}", ts, d.direction,
                          block.stream_id)
            d.headers_ok = False
            self._drop_block(d, ts)
        body = pos + _FRAME_HEADER_LEN
        if length > d.max_frame_size:
            self._anomaly("frame_exceeds_max_size", f"{_frame_name(ftype)} frame of {length} bytes is over "
                          f"the peer's SETTINGS_MAX_FRAME_SIZE of {d.max_frame_size}", ts, d.direction,
                          stream_id)
        if length > limits.max_frame_bytes:
            self._anomaly("frame_too_large", f"{_frame_name(ftype)} frame of {length} bytes is over the "
                          f"limit of {limits.max_frame_bytes}; direction no longer parsed", ts, d.direction,
                          stream_id)
            self._kill(d, ts)
            return _FRAME_HEADER_LEN
        if ftype == DATA:
            return self._data_start(d, flags, stream_id, length, work, body, ts) - pos
        handler = self._handlers.get(ftype)
        if handler is None:  # unknown frame types are ignored (RFC 9113 section 4.1)
            self._skip(d, length)
            return _FRAME_HEADER_LEN
        if need == _FRAME_HEADER_LEN and length:  # a header block fragment over the cap
            self._header_block_too_large(d, ftype, flags, stream_id, length, ts)
            self._skip(d, length)
            return _FRAME_HEADER_LEN
        handler(d, ftype, flags, stream_id, bytes(work[body:body + length]), ts)
        return need

    def _check_first_frame(self, d: _Direction, ftype: int, flags: int, length: int, stream_id: int,
                           ts: float) -> bool:
        """The first frame of each direction must be SETTINGS; bytes that are no frame at all give up."""
        d.first_frame = False
        plausible = (ftype <= CONTINUATION and length <= DEFAULT_MAX_FRAME_SIZE
                     and not (ftype in _CONNECTION_FRAMES and stream_id)
                     and not (ftype in _STREAM_FRAMES and not stream_id))
        if not plausible:
            self._anomaly("not_http2", f"{_direction_name(d.direction)} bytes are not HTTP/2 frames; "
                          "connection no longer parsed", ts, d.direction)
            for other in self._dirs:
                self._kill(other, ts)
            return False
        if ftype != SETTINGS and self.anomaly_counts.get("missing_preface", 0) == 0:
            self._anomaly("missing_settings", f"first {_direction_name(d.direction)} frame is "
                          f"{_frame_name(ftype)}, not SETTINGS", ts, d.direction)
        return True

    def _skip(self, d: _Direction, length: int) -> None:
        if length:
            d.mode = _SKIP
            d.skip_left = length

    # --- DATA -----------------------------------------------------------------------------------

    def _data_start(self, d: _Direction, flags: int, stream_id: int, length: int,
                    work: bytes | bytearray, body: int, ts: float) -> int:
        """Start streaming a DATA payload; return the position after what was consumed."""
        pad = 0
        if flags & FLAG_PADDED:
            if not length:
                self._anomaly("bad_padding", "padded DATA frame without a pad length", ts,
                              d.direction, stream_id)
                return body
            pad = work[body]
            body += 1
            if pad > length - 1:
                self._anomaly("bad_padding", f"DATA padding {pad} exceeds the frame's {length} bytes",
                              ts, d.direction, stream_id)
                self._skip(d, length - 1)
                return body
        stream = self._open_stream_for_data(d, stream_id, ts)
        d.data_stream = stream
        d.data_left = length - (pad + 1 if flags & FLAG_PADDED else 0)
        d.pad_left = pad
        d.data_end_stream = bool(flags & FLAG_END_STREAM)
        if d.data_left or d.pad_left:
            d.mode = _DATA
        else:
            self._data_end(d, ts)
        return body

    def _open_stream_for_data(self, d: _Direction, stream_id: int, ts: float) -> _Stream | None:
        if stream_id == 0:
            self._anomaly("stream_id_zero", "DATA frame on stream 0", ts, d.direction, 0)
            return None
        stream = self._streams.get(stream_id)
        state = stream.state[d.direction] if stream is not None else IDLE
        if state == OPEN:
            return stream
        if stream is None and stream_id in self._reset:
            return None  # in flight when the stream was reset: normal
        if state == CLOSED or (stream is None and self._is_closed_stream(stream_id)):
            self._anomaly("frame_on_closed_stream", f"DATA on closed stream {stream_id}", ts,
                          d.direction, stream_id)
        elif d.headers_ok:  # without headers (HPACK lost) this is expected, not news
            self._anomaly("data_without_headers", f"DATA on stream {stream_id} before its HEADERS", ts,
                          d.direction, stream_id)
        return None

    def _data_payload(self, d: _Direction, work: bytes | bytearray, pos: int, end: int, ts: float) -> int:
        if d.data_left:
            take = min(d.data_left, end - pos)
            stream = d.data_stream
            if stream is not None and stream.state[d.direction] == OPEN:
                chunk = work[pos:pos + take]
                self._events.append(BodyReceived(stream_id=stream.stream_id, direction=d.direction,
                                                 data=chunk if type(chunk) is bytes else bytes(chunk), ts=ts))
            pos += take
            d.data_left -= take
            if d.data_left:
                return pos
        if d.pad_left:
            take = min(d.pad_left, end - pos)
            pos += take
            d.pad_left -= take
            if d.pad_left:
                return pos
        d.mode = _FRAMES
        self._data_end(d, ts)
        return pos

    def _data_end(self, d: _Direction, ts: float) -> None:
        stream = d.data_stream
        d.data_stream = None
        if d.data_end_stream and stream is not None and stream.state[d.direction] == OPEN:
            self._end_message(stream, d.direction, [], ts, complete=True)

    # --- header blocks --------------------------------------------------------------------------

    def _on_headers(self, d: _Direction, ftype: int, flags: int, stream_id: int, payload: bytes,
                    ts: float) -> None:
        start, end = self._unpad(d, ftype, flags, stream_id, payload, ts)
        d.block = _HeaderBlock(HEADERS, stream_id, bool(flags & FLAG_END_STREAM), b"")
        if start >= 0 and flags & FLAG_PRIORITY:
            start += 5
            if start > end:
                self._anomaly("frame_size_error", "HEADERS too short for its priority fields", ts,
                              d.direction, stream_id)
                start = -1
        if start < 0:
            self._give_up_headers(d, stream_id, flags, ts)
            return
        if stream_id == 0:
            self._anomaly("stream_id_zero", "HEADERS frame on stream 0", ts, d.direction, 0)
        d.block.fragments[0] = payload[start:end]
        d.block.size = end - start
        if flags & FLAG_END_HEADERS:
            self._complete_block(d, ts)

    def _on_push_promise(self, d: _Direction, ftype: int, flags: int, stream_id: int, payload: bytes,
                         ts: float) -> None:
        start, end = self._unpad(d, ftype, flags, stream_id, payload, ts)
        if start < 0 or end - start < 4:
            if start >= 0:
                self._anomaly("frame_size_error", "PUSH_PROMISE too short", ts, d.direction, stream_id)
            self._give_up_headers(d, stream_id, flags, ts)
            return
        promised = _U32.unpack_from(payload, start)[0] & 0x7FFFFFFF
        d.block = _HeaderBlock(PUSH_PROMISE, stream_id, False, payload[start + 4:end], promised)
        if flags & FLAG_END_HEADERS:
            self._complete_block(d, ts)

    def _on_continuation(self, d: _Direction, ftype: int, flags: int, stream_id: int, payload: bytes,
                         ts: float) -> None:
        block = d.block
        if block is None:
            if stream_id and stream_id == d.skip_block_id:  # rest of a block we already dropped
                if flags & FLAG_END_HEADERS:
                    d.skip_block_id = 0
                return
            self._anomaly("unexpected_continuation", f"CONTINUATION on stream {stream_id} without a "
                          "header block to continue", ts, d.direction, stream_id)
            return
        block.frames += 1
        block.size += len(payload)
        if block.frames > self.limits.max_continuation_frames:
            self._anomaly("continuation_flood", f"header block of stream {stream_id} spans more than "
                          f"{self.limits.max_continuation_frames} frames", ts, d.direction, stream_id)
            self._give_up_headers(d, stream_id, flags, ts)
            return
        if block.size > self.limits.max_header_bytes:
            self._anomaly("header_block_too_large", f"header block of stream {stream_id} exceeds "
                          f"{self.limits.max_header_bytes} bytes", ts, d.direction, stream_id)
            self._give_up_headers(d, stream_id, flags, ts)
            return
        block.fragments.append(payload)
        if flags & FLAG_END_HEADERS:
            self._complete_block(d, ts)

    def _header_block_too_large(self, d: _Direction, ftype: int, flags: int, stream_id: int,
                                length: int, ts: float) -> None:
        """A HEADERS/PUSH_PROMISE/CONTINUATION frame alone is over the header cap (not buffered)."""
        self._anomaly("header_block_too_large", f"{_frame_name(ftype)} frame of {length} bytes exceeds "
                      f"{self.limits.max_header_bytes} bytes", ts, d.direction, stream_id)
        if ftype == CONTINUATION and d.block is None:
            return  # a stray continuation: nothing lost
        if ftype == HEADERS:
            d.block = _HeaderBlock(HEADERS, stream_id, bool(flags & FLAG_END_STREAM), b"")
        self._give_up_headers(d, stream_id, flags, ts)

    def _give_up_headers(self, d: _Direction, stream_id: int, flags: int, ts: float) -> None:
        """Drop the block being reassembled; HPACK is out of step from now on."""
        d.headers_ok = False
        if not flags & FLAG_END_HEADERS:
            d.skip_block_id = stream_id  # its remaining CONTINUATION frames are skipped quietly
        self._drop_block(d, ts)

    def _drop_block(self, d: _Direction, ts: float) -> None:
        block = d.block
        d.block = None
        if block is not None and block.kind == HEADERS:
            self._lost_headers(d, block.stream_id, block.end_stream, ts)

    def _unpad(self, d: _Direction, ftype: int, flags: int, stream_id: int, payload: bytes,
               ts: float) -> tuple[int, int]:
        """Bounds of the payload without padding, or (-1, -1) when the padding is malformed."""
        if not flags & FLAG_PADDED:
            return 0, len(payload)
        if not payload or payload[0] > len(payload) - 1:
            self._anomaly("bad_padding", f"{_frame_name(ftype)} padding exceeds the frame", ts,
                          d.direction, stream_id)
            return -1, -1
        return 1, len(payload) - payload[0]

    def _complete_block(self, d: _Direction, ts: float) -> None:
        block = d.block
        assert block is not None
        d.block = None
        if not d.headers_ok:
            if block.kind == HEADERS:
                self._lost_headers(d, block.stream_id, block.end_stream, ts)
            return
        data = block.fragments[0] if len(block.fragments) == 1 else b"".join(block.fragments)
        fields = self._decode_block(d, block, data, ts)
        if fields is None:
            return
        if len(fields) > self.limits.max_headers:
            self._anomaly("too_many_headers", f"{len(fields)} header fields, over the limit of "
                          f"{self.limits.max_headers}; the rest are dropped", ts, d.direction,
                          block.stream_id)
            del fields[self.limits.max_headers:]
        if block.kind == PUSH_PROMISE:
            self._push_promise(d, block, fields, ts)
        elif block.stream_id:
            self._header_list(d, block.stream_id, block.end_stream, fields, ts)

    def _decode_block(self, d: _Direction, block: _HeaderBlock, data: bytes, ts: float) -> Headers | None:
        """HPACK-decode one header block (names lower-case, latin-1), or None after an anomaly."""
        try:
            return d.decoder.decode(data)
        except HpackHeaderListTooLarge as exc:
            self._hpack_failed(d, block, "header_list_too_large", f"{exc}", ts)
        except HpackError as exc:
            self._hpack_failed(d, block, "hpack_error", f"{type(exc).__name__}: {exc}", ts)
        return None

    def _hpack_failed(self, d: _Direction, block: _HeaderBlock, event: str, message: str, ts: float) -> None:
        d.headers_ok = False
        self._anomaly(event, f"{message}; header blocks from the {_direction_name(d.direction)} are no "
                      "longer decoded", ts, d.direction, block.stream_id)
        if block.kind == HEADERS:
            self._lost_headers(d, block.stream_id, block.end_stream, ts)

    def _lost_headers(self, d: _Direction, stream_id: int, end_stream: bool, ts: float) -> None:
        """A header block we could not read: an open message ends without its trailers."""
        if not stream_id:
            return
        stream = self._streams.get(stream_id)
        if stream is not None and stream.state[d.direction] == OPEN:
            self._end_message(stream, d.direction, [], ts, complete=False)
        elif stream is None and d.direction == TO_SERVER and stream_id > self._max_client_stream:
            self._max_client_stream = stream_id

    def _header_list(self, d: _Direction, stream_id: int, end_stream: bool, fields: Headers,
                     ts: float) -> None:
        direction = d.direction
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id in self._reset:
                return  # in flight when the stream was reset: normal
            if self._is_closed_stream(stream_id):
                kind = "stream_id_reused" if direction == TO_SERVER else "frame_on_closed_stream"
                self._anomaly(kind, f"HEADERS on stream {stream_id}, which is already closed", ts,
                              direction, stream_id)
                if direction == TO_CLIENT:
                    return
            stream = self._new_stream(stream_id, ts)
            if direction == TO_SERVER:
                if not stream_id & 1:
                    self._anomaly("bad_stream_id", f"client opened even stream {stream_id}", ts,
                                  direction, stream_id)
                self._max_client_stream = max(self._max_client_stream, stream_id)
        state = stream.state[direction]
        if state == CLOSED:
            self._anomaly("frame_on_closed_stream", f"HEADERS on stream {stream_id} after its end",
                          ts, direction, stream_id)
            return
        if state == OPEN:
            trailers = [(name, value) for name, value in fields if not name.startswith(":")]
            if not end_stream:
                self._anomaly("trailers_without_end_stream", f"second HEADERS on stream {stream_id} "
                              "without END_STREAM", ts, direction, stream_id)
            self._end_message(stream, direction, trailers, ts, complete=end_stream)
            return
        message = self._message(direction, stream_id, fields, ts)
        self._events.append(HeadReceived(stream_id=stream_id, direction=direction, message=message,
                                         end_stream=end_stream, ts=ts))
        if direction == TO_CLIENT and 100 <= message.status < 200 and not end_stream:
            return  # interim response: the final head is still to come
        if end_stream:
            trailers_only = direction == TO_CLIENT and message.header("grpc-status") is not None
            self._end_message(stream, direction, list(message.headers) if trailers_only else [], ts,
                              complete=True)
        else:
            stream.state[direction] = OPEN

    def _push_promise(self, d: _Direction, block: _HeaderBlock, fields: Headers, ts: float) -> None:
        promised = block.promised_id
        if d.direction != TO_CLIENT:
            self._anomaly("push_promise_from_client", "the client sent PUSH_PROMISE", ts, d.direction,
                          block.stream_id)
            return
        if not promised or promised & 1 or promised in self._streams:
            self._anomaly("bad_stream_id", f"PUSH_PROMISE promises stream {promised}", ts, d.direction,
                          block.stream_id)
            return
        stream = self._new_stream(promised, ts)
        message = self._message(TO_SERVER, promised, fields, ts)
        self._events.append(HeadReceived(stream_id=promised, direction=TO_SERVER, message=message,
                                         end_stream=True, ts=ts))
        self._end_message(stream, TO_SERVER, [], ts, complete=True)

    def _message(self, direction: int, stream_id: int, fields: Headers, ts: float) -> HttpMessage:
        """Build a request or response from a decoded header list (pseudo-headers taken out)."""
        regular: Headers = []
        pseudo: dict[str, str] = {}
        for name, value in fields:
            if name.startswith(":"):
                pseudo.setdefault(name, value)
            else:
                regular.append((name, value))
        if direction == TO_SERVER:
            message = HttpMessage(kind="request", version="HTTP/2", headers=regular, ts_start=ts,
                                  method=pseudo.get(":method", ""), scheme=pseudo.get(":scheme", ""),
                                  authority=pseudo.get(":authority", ""), path=pseudo.get(":path", ""))
            if not message.authority:
                message.authority = message.header("host") or ""
            if not message.method or (not message.path and message.method != "CONNECT"):
                self._anomaly("missing_pseudo_header", f"request on stream {stream_id} lacks :method "
                              "or :path", ts, direction, stream_id)
            return message
        message = HttpMessage(kind="response", version="HTTP/2", headers=regular, ts_start=ts)
        status = pseudo.get(":status", "")
        if len(status) == 3 and status.isascii() and status.isdigit():
            message.status = int(status)
        else:
            self._anomaly("bad_status", f"response on stream {stream_id} has :status {status!r}", ts,
                          direction, stream_id)
        return message

    # --- other frames ---------------------------------------------------------------------------

    def _on_fixed(self, d: _Direction, ftype: int, flags: int, stream_id: int, payload: bytes,
                  ts: float) -> None:
        """PRIORITY, PING, WINDOW_UPDATE: only their sizes are checked."""
        if len(payload) != _FIXED_LENGTHS[ftype]:
            self._anomaly("frame_size_error", f"{_frame_name(ftype)} frame of {len(payload)} bytes", ts,
                          d.direction, stream_id)

    def _on_rst_stream(self, d: _Direction, ftype: int, flags: int, stream_id: int, payload: bytes,
                       ts: float) -> None:
        if len(payload) != 4 or not stream_id:
            self._anomaly("frame_size_error" if stream_id else "stream_id_zero",
                          f"RST_STREAM of {len(payload)} bytes on stream {stream_id}", ts, d.direction,
                          stream_id)
            return
        code = _U32.unpack(payload)[0]
        self._events.append(StreamReset(stream_id=stream_id, direction=d.direction, error_code=code, ts=ts))
        self._reset[stream_id] = None
        if len(self._reset) > _RESET_MEMORY:
            del self._reset[next(iter(self._reset))]
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            self._close_stream(stream, ts)

    def _on_settings(self, d: _Direction, ftype: int, flags: int, stream_id: int, payload: bytes,
                     ts: float) -> None:
        if stream_id:
            self._anomaly("bad_stream_id", f"SETTINGS on stream {stream_id}", ts, d.direction, stream_id)
            return
        if (flags & FLAG_ACK and payload) or len(payload) % 6:
            self._anomaly("frame_size_error", f"SETTINGS frame of {len(payload)} bytes", ts, d.direction)
            return
        if flags & FLAG_ACK:
            return
        for setting, value in _SETTING.iter_unpack(payload):
            # What this side advertises binds what the *other* side sends.
            peer = self._dirs[1 - d.direction]
            if setting == SETTINGS_HEADER_TABLE_SIZE:
                peer.advertised_table_size = max(peer.advertised_table_size, value)
                cap = max(self.limits.max_hpack_table_size, DEFAULT_HEADER_TABLE_SIZE)
                peer.decoder.max_table_size = min(peer.advertised_table_size, cap)
            elif setting == SETTINGS_MAX_FRAME_SIZE:
                peer.max_frame_size = max(peer.max_frame_size, value)

    def _on_goaway(self, d: _Direction, ftype: int, flags: int, stream_id: int, payload: bytes,
                   ts: float) -> None:
        if len(payload) < 8 or stream_id:
            self._anomaly("frame_size_error", f"malformed GOAWAY ({len(payload)} bytes)", ts, d.direction)
            return
        last_stream, code = _GOAWAY_HEAD.unpack_from(payload)
        if code:
            debug = payload[8:8 + 128].decode("latin-1")
            self._anomaly("goaway_error", f"GOAWAY {ERROR_CODES.get(code, hex(code))} from the "
                          f"{_direction_name(d.direction)}, last stream {last_stream & 0x7FFFFFFF}"
                          + (f": {debug!r}" if debug else ""), ts, d.direction)

    # --- streams --------------------------------------------------------------------------------

    def _is_closed_stream(self, stream_id: int) -> bool:
        """A client stream id we saw opened and have already forgotten."""
        return bool(stream_id & 1) and stream_id <= self._max_client_stream

    def _new_stream(self, stream_id: int, ts: float) -> _Stream:
        streams = self._streams
        if len(streams) >= self.limits.max_streams_per_connection:
            oldest = streams.pop(next(iter(streams)))
            self.evicted_streams += 1
            self._anomaly("too_many_streams", f"more than {self.limits.max_streams_per_connection} open "
                          f"streams; stream {oldest.stream_id} closed as incomplete", ts, None,
                          oldest.stream_id)
            self._close_stream(oldest, ts)
        stream = streams[stream_id] = _Stream(stream_id)
        return stream

    def _close_stream(self, stream: _Stream, ts: float) -> None:
        """End whatever is still open on a stream that was reset or evicted."""
        for direction in (TO_SERVER, TO_CLIENT):
            if stream.state[direction] == OPEN:
                self._events.append(MessageEnded(stream_id=stream.stream_id, direction=direction,
                                                 trailers=[], ts=ts, complete=False))
            stream.state[direction] = CLOSED

    def _end_message(self, stream: _Stream, direction: int, trailers: Headers, ts: float, *,
                     complete: bool) -> None:
        self._events.append(MessageEnded(stream_id=stream.stream_id, direction=direction, trailers=trailers,
                                         ts=ts, complete=complete))
        stream.state[direction] = CLOSED
        other = stream.state[1 - direction]
        if other == CLOSED or self._dirs[1 - direction].mode == _DEAD:
            self._streams.pop(stream.stream_id, None)

    def _kill(self, d: _Direction, ts: float) -> None:
        """Stop parsing a direction: its open messages end incomplete."""
        if d.mode == _DEAD:
            return
        d.mode = _DEAD
        d.buf = bytearray()
        d.block = None
        d.data_stream = None
        direction = d.direction
        for stream in list(self._streams.values()):
            state = stream.state
            if state[direction] == OPEN:
                self._events.append(MessageEnded(stream_id=stream.stream_id, direction=direction,
                                                 trailers=[], ts=ts, complete=False))
            state[direction] = CLOSED
            if state[1 - direction] == CLOSED or self._dirs[1 - direction].mode == _DEAD:
                del self._streams[stream.stream_id]

    # --- anomalies ------------------------------------------------------------------------------

    def _anomaly(self, event: str, message: str, ts: float, direction: int | None = None,
                 stream_id: int | None = None) -> None:
        count = self.anomaly_counts.get(event, 0) + 1
        self.anomaly_counts[event] = count
        if count > MAX_REPORTS_PER_ANOMALY or (count > 1 and event in _ONCE):
            return
        self._events.append(SessionAnomaly(layer=LAYER, event=event, message=message, ts=ts,
                                           direction=direction, stream_id=stream_id))

    def _internal_error(self, direction: int, exc: Exception, ts: float) -> None:
        try:
            self._anomaly("internal_error", f"{type(exc).__name__}: {exc}", ts,
                          direction if direction in (TO_SERVER, TO_CLIENT) else None)
            if direction in (TO_SERVER, TO_CLIENT):
                self._kill(self._dirs[direction], ts)
        except Exception:  # pragma: no cover - nothing more we can do
            pass


def _frame_name(ftype: int) -> str:
    return _FRAME_NAMES.get(ftype, f"type-{ftype:#04x}")


def _direction_name(direction: int) -> str:
    return "client" if direction == TO_SERVER else "server"


_FRAME_NAMES = {DATA: "DATA", HEADERS: "HEADERS", PRIORITY: "PRIORITY", RST_STREAM: "RST_STREAM",
                SETTINGS: "SETTINGS", PUSH_PROMISE: "PUSH_PROMISE", PING: "PING", GOAWAY: "GOAWAY",
                WINDOW_UPDATE: "WINDOW_UPDATE", CONTINUATION: "CONTINUATION"}
