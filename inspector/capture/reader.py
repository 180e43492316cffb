"""Read pcap and pcapng files (optionally gzip-compressed) into :class:`Frame` records.

The format is detected from the magic bytes, never from the file name. Records are parsed from
large buffered chunks with ``struct.unpack_from``; the only object made per packet is the Frame.

Damage in the file (a truncated record, an absurd length, a pcapng block whose trailer disagrees
with its header, a packet for an interface that was never described, a gzip stream cut short)
ends the iteration cleanly: every record before the damage has been yielded, and
:attr:`CaptureReader.error` describes what was wrong and where. Iteration never raises on file
contents; :func:`open_capture` raises :class:`CaptureFormatError` when the input is not a capture.

pcap:   https://datatracker.ietf.org/doc/draft-ietf-opsawg-pcap/
pcapng: https://datatracker.ietf.org/doc/draft-ietf-opsawg-pcapng/
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from inspector.capture.packet import Frame
from inspector.limits import DEFAULT_LIMITS, Limits

__all__ = ["CaptureDamage", "CaptureFormatError", "CaptureReader", "DecryptionSecret", "open_capture"]

CHUNK_BYTES = 1024 * 1024  # read size
MAX_BLOCK_BYTES = 16 * 1024 * 1024  # a larger pcapng non-packet block (names, secrets, ...) is damage
PACKET_BLOCK_OVERHEAD = 64 * 1024  # header + options allowed around a packet's bytes in one pcapng block

GZIP_MAGIC = b"\x1f\x8b"
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM_LE = b"\x4d\x3c\x2b\x1a"  # 0x1A2B3C4D as written by a little-endian machine
PCAPNG_BOM_BE = b"\x1a\x2b\x3c\x4d"

# pcap magic (as read in the file's own byte order) -> (divisor of the fraction, record header bytes)
_PCAP_MAGICS = {
    0xA1B2C3D4: (1_000_000, 16),  # microseconds
    0xA1B23C4D: (1_000_000_000, 16),  # nanoseconds
    0xA1B2CD34: (1_000_000, 24),  # Kuznetzov's "modified" libpcap: 8 more bytes per record
}
_LENGTHS_SWAPPED = 1
_LENGTHS_MAYBE_SWAPPED = 2
_LINKTYPE_MASK = 0x03FFFFFF  # the upper bits of the pcap link-type field carry FCS information

# pcapng block types
_BT_IDB = 0x00000001
_BT_PB = 0x00000002  # obsolete Packet Block
_BT_SPB = 0x00000003
_BT_EPB = 0x00000006
_BT_DSB = 0x0000000A
_BT_ISB = 0x00000005
_OPT_ISB_IFDROP = 5  # packets the interface dropped (lack of resources)
_OPT_ISB_OSDROP = 7  # packets the operating system dropped
_PACKET_BLOCKS = frozenset((_BT_EPB, _BT_SPB, _BT_PB))
_OPT_IF_TSRESOL = 9
_OPT_IF_TSOFFSET = 14


class CaptureFormatError(ValueError):
    """The input is not a pcap, pcapng or gzip-compressed capture (raised by open_capture)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class CaptureDamage:
    """Why reading stopped before the end of the file."""

    message: str  # what was wrong, with the byte offset and record number
    offset: int  # byte offset of the damaged record (in the decompressed stream for gzip)
    record: int  # 1-based number the next packet would have had

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, kw_only=True, slots=True)
class DecryptionSecret:
    """A pcapng Decryption Secrets Block, kept for TLS decryption."""

    secrets_type: int  # 0x544c534b 'TLSK' is an NSS key log, 0x57474b4c 'WGKL' WireGuard keys, ...
    data: bytes


class _Damage(Exception):
    """Internal: raised inside the record loops, turned into CaptureDamage at the iteration's edge."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


class _CountingSource:
    """The underlying file, with a count of the bytes taken from it and bytes pushed back in front."""

    def __init__(self, fileobj: BinaryIO, prefix: bytes) -> None:
        self._fileobj = fileobj
        self._prefix = prefix
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            data, self._prefix = self._prefix, b""
            if size is None or size < 0:
                data += self._fileobj.read()
            elif len(data) > size:
                data, self._prefix = data[:size], data[size:]
        else:
            data = self._fileobj.read(size)
        self.count += len(data)
        return data


class _GzipStream:
    """Decompressed reads that hand over every byte decoded before an error, then raise it."""

    def __init__(self, source: _CountingSource) -> None:
        self._gzip = gzip.GzipFile(fileobj=source, mode="rb")  # type: ignore[arg-type]
        self._error: Exception | None = None

    def read(self, size: int) -> bytes:
        if self._error is not None:
            raise self._error
        parts = []
        have = 0
        try:
            while have < size:
                data = self._gzip.read1(size - have)
                if not data:
                    break
                parts.append(data)
                have += len(data)
        except (OSError, EOFError, zlib.error) as exc:
            if not parts:
                raise
            self._error = exc
        return b"".join(parts)

    def close(self) -> None:
        self._gzip.close()


def open_capture(path: str | Path, *, limits: Limits = DEFAULT_LIMITS) -> CaptureReader:
    """Open a capture file; raises CaptureFormatError when it is not one (and OSError as open does)."""
    fileobj = open(path, "rb")  # noqa: SIM115 - owned by the reader, closed by reader.close()
    try:
        return CaptureReader(fileobj, str(path), limits=limits, owns_file=True)
    except BaseException:
        fileobj.close()
        raise


class CaptureReader:
    """Iterate the frames of one capture. Build with :func:`open_capture` or :meth:`from_fileobj`.

    Attributes: ``format`` ("pcap" or "pcapng"), ``compressed`` (gzip), ``linktypes`` (link types
    declared so far: the pcap header's, or every pcapng interface's), ``packets`` (frames yielded),
    ``bytes_read`` (bytes taken from the underlying file, compressed bytes for gzip, updated per
    chunk), ``secrets`` (pcapng Decryption Secrets Blocks met so far), ``dropped`` (packets the
    capturing host says it dropped: pcapng Interface Statistics Blocks) and ``error`` (a
    :class:`CaptureDamage` once reading stopped early, else None).
    """

    def __init__(self, fileobj: BinaryIO, name: str, *, limits: Limits = DEFAULT_LIMITS,
                 owns_file: bool = False) -> None:
        self.name = name
        self.limits = limits
        self.format = ""
        self.compressed = False
        self.linktypes: set[int] = set()
        self.packets = 0
        self.bytes_read = 0
        self.secrets: list[DecryptionSecret] = []
        #: Drops per (section, interface) from the latest Interface Statistics Block (its counters
        #: run from the start of the capture: the last one of an interface holds them all).
        self._drops: dict[tuple[int, int], int] = {}
        self.error: CaptureDamage | None = None
        #: Optional, set before iterating (the reading worker of a flow-sharded run): an object whose
        #: `route(frame)` takes each frame of a pcap (Frame's fields as a plain tuple) instead of
        #: it being yielded, with no generator step per frame. pcapng frames are yielded.
        self.routing: Any = None
        #: Wire bytes and capture time of every frame read, set when the iteration ends.
        self.wire_bytes = 0
        self.last_ts = 0.0
        self._fileobj = fileobj
        self._owns_file = owns_file
        self._source = _CountingSource(fileobj, b"")
        self._stream: _CountingSource | _GzipStream = self._source
        self._consumed = 0  # stream offset of the first byte of the current buffer
        self._buf = b""
        self._frames: Iterator[Frame] = self._open()

    @property
    def dropped(self) -> int:
        """Packets the capture itself says were dropped before they could be written (pcapng
        `isb_ifdrop` and `isb_osdrop` of each interface's last statistics block; pcap has none)."""
        return sum(self._drops.values())

    @classmethod
    def from_fileobj(cls, fileobj: BinaryIO, name: str, *, limits: Limits = DEFAULT_LIMITS) -> CaptureReader:
        """Read from an open binary file object (not closed by the reader)."""
        return cls(fileobj, name, limits=limits)

    def __iter__(self) -> Iterator[Frame]:
        return self._frames

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if isinstance(self._stream, _GzipStream):
            self._stream.close()
        if self._owns_file:
            self._fileobj.close()

    # -- format detection -------------------------------------------------------------------

    def _open(self) -> Iterator[Frame]:
        """Detect the format, check the file header, and return the (not yet started) record loop."""
        try:
            head = self._source.read(4)
            if head[:2] == GZIP_MAGIC:
                self.compressed = True
                self._source = _CountingSource(self._fileobj, head)
                self._stream = _GzipStream(self._source)
                head = self._stream.read(4)
        except (OSError, EOFError, zlib.error) as exc:
            raise CaptureFormatError(f"{self.name}: unreadable or damaged gzip stream: {exc}") from exc
        self._buf = head
        if len(head) == 4:
            if head == b"\n\r\r\n":
                self.format = "pcapng"
                self._check_section_header()
                return self._pcapng_frames()
            for order in "<>":
                magic = struct.unpack(order + "I", head)[0]
                if magic in _PCAP_MAGICS:
                    self.format = "pcap"
                    return self._pcap_frames(order, *_PCAP_MAGICS[magic])
        if head[:2] == GZIP_MAGIC and self.compressed:
            raise CaptureFormatError(f"{self.name}: gzip inside gzip is not read")
        shown = head.hex() or "nothing"
        raise CaptureFormatError(f"{self.name}: not a pcap, pcapng or gzip capture (starts with {shown})")

    def _check_section_header(self) -> None:
        try:
            self._buf = self._fill(self._buf, 0, 12)
        except _Damage as damage:
            raise CaptureFormatError(f"{self.name}: {damage.message}") from None
        if len(self._buf) < 12:
            raise CaptureFormatError(f"{self.name}: pcapng section header cut short ({len(self._buf)} bytes)")
        bom = self._buf[8:12]
        if bom not in (PCAPNG_BOM_LE, PCAPNG_BOM_BE):
            raise CaptureFormatError(f"{self.name}: pcapng section header has no byte-order mark")
        blen = struct.unpack_from("<I" if bom == PCAPNG_BOM_LE else ">I", self._buf, 4)[0]
        if blen < 28 or blen & 3 or blen > MAX_BLOCK_BYTES:
            raise CaptureFormatError(f"{self.name}: pcapng section header with bad length {blen}")

    def _record_damage(self, damage: _Damage) -> None:
        record = self.packets + 1
        self.error = CaptureDamage(message=f"{damage.message} at byte {damage.offset} (record {record})",
                                   offset=damage.offset, record=record)

    # -- buffering --------------------------------------------------------------------------

    def _fill(self, buf: bytes, off: int, need: int) -> bytes:
        """Return a buffer starting at ``buf[off]`` holding at least ``need`` bytes unless at EOF.

        With nothing left over, a whole chunk becomes the buffer (no copy). A record straddling two
        chunks gets a small buffer of its own: just its bytes, so the next refill is copy-free again.
        """
        self._consumed += off
        rest = buf[off:]
        have = len(rest)
        read = self._stream.read
        parts = [rest]
        try:
            while have < need:
                data = read(max(CHUNK_BYTES, need) if not have else need - have)
                if not data:
                    break
                parts.append(data)
                have += len(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise _Damage(f"unreadable input ({exc})", self._consumed + have) from exc
        finally:
            self.bytes_read = self._source.count
        if len(parts) == 2 and not rest:
            return parts[1]
        return b"".join(parts)

    # -- pcap -------------------------------------------------------------------------------

    def _pcap_frames(self, order: str, divisor: int, record_bytes: int) -> Iterator[Frame]:
        """Check the 24-byte file header now; return the record loop."""
        try:
            buf = self._fill(self._buf, 0, 24)
        except _Damage as damage:
            raise CaptureFormatError(f"{self.name}: {damage.message}") from None
        if len(buf) < 24:
            raise CaptureFormatError(f"{self.name}: pcap file header cut short ({len(buf)} of 24 bytes)")
        version_major, version_minor = struct.unpack_from(order + "HH", buf, 4)
        linktype = struct.unpack_from(order + "I", buf, 20)[0] & _LINKTYPE_MASK
        self.linktypes.add(linktype)
        self._buf = b""
        # Files older than version 2.3 store the record's lengths the other way round; 2.3 files
        # may be either way (libpcap swaps them when the captured length is the larger one).
        version = (version_major, version_minor)
        swap = _LENGTHS_SWAPPED if version < (2, 3) else _LENGTHS_MAYBE_SWAPPED if version == (2, 3) else 0
        return self._pcap_records(buf, order, divisor, record_bytes, linktype, swap)

    def _pcap_records(self, buf: bytes, order: str, divisor: int, record_bytes: int,
                      linktype: int, swap: int) -> Iterator[Frame]:
        unpack_record = struct.Struct(order + "IIII").unpack_from
        max_caplen = self.limits.max_packet_bytes
        new_frame = tuple.__new__
        routing = self.routing
        route = routing.route if routing is not None else None
        off = 24
        end = len(buf)
        number = 0
        wire_bytes = 0
        ts = 0.0
        try:
            while True:
                if end - off < record_bytes:
                    buf = self._fill(buf, off, record_bytes)
                    off, end = 0, len(buf)
                    if end < record_bytes:
                        if end:
                            raise _Damage(f"record header cut short ({end} of {record_bytes} bytes)",
                                          self._consumed)
                        return
                sec, frac, caplen, wire_len = unpack_record(buf, off)
                if swap and (swap == _LENGTHS_SWAPPED or caplen > wire_len):
                    caplen, wire_len = wire_len, caplen
                if caplen > max_caplen:
                    raise _Damage(f"record claims a {caplen}-byte packet (limit {max_caplen})",
                                  self._consumed + off)
                start = off + record_bytes
                stop = start + caplen
                if stop > end:
                    buf = self._fill(buf, off, stop - off)
                    end = len(buf)
                    start -= off
                    stop -= off
                    off = 0
                    if stop > end:
                        raise _Damage(f"record cut short ({end - start} of {caplen} bytes)", self._consumed)
                if wire_len < caplen:
                    wire_len = caplen
                number += 1
                self.packets = number
                wire_bytes += wire_len
                ts = sec + frac / divisor
                if route is None:
                    yield new_frame(Frame, (ts, linktype, buf[start:stop], wire_len, number))
                    off = stop
                    continue
                route((ts, linktype, buf[start:stop], wire_len, number))
                off = stop
        except _Damage as damage:
            self._record_damage(damage)
        finally:
            self.wire_bytes, self.last_ts = wire_bytes, ts

    # -- pcapng -----------------------------------------------------------------------------

    def _pcapng_frames(self) -> Iterator[Frame]:
        """Walk pcapng blocks; a section header sets the byte order and starts a new interface list."""
        max_caplen = self.limits.max_packet_bytes
        max_packet_block = max_caplen + PACKET_BLOCK_OVERHEAD
        new_frame = tuple.__new__
        interfaces: list[tuple[int, int, int, int]] = []  # (linktype, tick divisor, tsoffset, snaplen)
        buf = self._buf
        self._buf = b""
        off = 0
        end = len(buf)
        number = 0
        wire_bytes = 0
        last_ts = 0.0
        section = 0
        order = "<"
        # Rebuilt for the byte order of every section header; the file starts with one, whose
        # block type is the same in either order.
        unpack_block = struct.Struct("<II").unpack_from
        unpack_u32 = struct.Struct("<I").unpack_from
        unpack_epb = struct.Struct("<IIIII").unpack_from
        unpack_pb = struct.Struct("<HHIIII").unpack_from
        try:
            while True:
                if end - off < 12:
                    buf = self._fill(buf, off, 12)
                    off, end = 0, len(buf)
                    if end < 12:
                        if end:
                            raise _Damage(f"block header cut short ({end} of 12 bytes)", self._consumed)
                        return
                btype, blen = unpack_block(buf, off)
                if btype == PCAPNG_SHB:  # a palindrome: its byte-order mark gives the section's order
                    bom = buf[off + 8:off + 12]
                    if bom == PCAPNG_BOM_LE:
                        order = "<"
                    elif bom == PCAPNG_BOM_BE:
                        order = ">"
                    else:
                        raise _Damage(f"section header with a bad byte-order mark {bom.hex()}",
                                      self._consumed + off)
                    unpack_block = struct.Struct(order + "II").unpack_from
                    unpack_u32 = struct.Struct(order + "I").unpack_from
                    unpack_epb = struct.Struct(order + "IIIII").unpack_from
                    unpack_pb = struct.Struct(order + "HHIIII").unpack_from
                    interfaces = []
                    section += 1
                    blen = unpack_u32(buf, off + 4)[0]
                is_packet = btype in _PACKET_BLOCKS
                if blen < 12 or blen & 3 or blen > (max_packet_block if is_packet else MAX_BLOCK_BYTES):
                    raise _Damage(f"block of type {btype:#x} with bad length {blen}", self._consumed + off)
                if end - off < blen:
                    buf = self._fill(buf, off, blen)
                    off, end = 0, len(buf)
                    if end < blen:
                        raise _Damage(f"block of type {btype:#x} cut short ({end} of {blen} bytes)",
                                      self._consumed)
                stop = off + blen
                trailer = unpack_u32(buf, stop - 4)[0]
                if trailer != blen:
                    raise _Damage(f"block of type {btype:#x}: trailing length {trailer} differs from {blen}",
                                  self._consumed + off)
                if btype == _BT_EPB:
                    if blen < 32:
                        raise _Damage(f"enhanced packet block too short ({blen} bytes)", self._consumed + off)
                    iface, ts_high, ts_low, caplen, wire_len = unpack_epb(buf, off + 8)
                    if caplen > blen - 32 or caplen > max_caplen:
                        raise _Damage(f"enhanced packet block: {caplen}-byte packet in a {blen}-byte block",
                                      self._consumed + off)
                    if iface >= len(interfaces):
                        raise _Damage(f"packet for undescribed interface {iface}", self._consumed + off)
                    linktype, units, tsoffset, _ = interfaces[iface]
                    ticks = (ts_high << 32) | ts_low
                    if ticks < 9007199254740992:  # 2**53: exact as a float, so divide as dpkt does
                        last_ts = tsoffset + ticks / units
                    else:
                        seconds, rest = divmod(ticks, units)
                        last_ts = tsoffset + seconds + rest / units
                    if wire_len < caplen:
                        wire_len = caplen
                    number += 1
                    self.packets = number
                    wire_bytes += wire_len
                    yield new_frame(Frame, (last_ts, linktype, buf[off + 28:off + 28 + caplen], wire_len, number))
                elif btype == _BT_IDB:
                    if blen < 20:
                        raise _Damage(f"interface description block too short ({blen} bytes)",
                                      self._consumed + off)
                    interfaces.append(self._interface(buf, off, blen, order))
                elif btype == _BT_SPB:
                    if not interfaces:
                        raise _Damage("simple packet block before any interface", self._consumed + off)
                    if blen < 16:
                        raise _Damage(f"simple packet block too short ({blen} bytes)", self._consumed + off)
                    linktype, _, _, snaplen = interfaces[0]
                    wire_len = unpack_u32(buf, off + 8)[0]
                    caplen = min(wire_len, blen - 16, snaplen or max_caplen, max_caplen)
                    number += 1
                    self.packets = number
                    wire_bytes += wire_len
                    # a simple packet block has no timestamp: it keeps the previous packet's
                    yield new_frame(Frame, (last_ts, linktype, buf[off + 12:off + 12 + caplen], wire_len,
                                            number))
                elif btype == _BT_PB:
                    if blen < 32:
                        raise _Damage(f"packet block too short ({blen} bytes)", self._consumed + off)
                    iface, _, ts_high, ts_low, caplen, wire_len = unpack_pb(buf, off + 8)
                    if caplen > blen - 32 or caplen > max_caplen:
                        raise _Damage(f"packet block: {caplen}-byte packet in a {blen}-byte block",
                                      self._consumed + off)
                    if iface >= len(interfaces):
                        raise _Damage(f"packet for undescribed interface {iface}", self._consumed + off)
                    linktype, units, tsoffset, _ = interfaces[iface]
                    seconds, rest = divmod((ts_high << 32) | ts_low, units)
                    last_ts = tsoffset + seconds + rest / units
                    number += 1
                    self.packets = number
                    wire_bytes += max(wire_len, caplen)
                    yield new_frame(Frame, (last_ts, linktype, buf[off + 28:off + 28 + caplen],
                                            max(wire_len, caplen), number))
                elif btype == _BT_DSB:
                    if blen < 20:
                        raise _Damage(f"decryption secrets block too short ({blen} bytes)",
                                      self._consumed + off)
                    secrets_type, secrets_len = unpack_block(buf, off + 8)
                    if secrets_len > blen - 20:
                        raise _Damage(f"decryption secrets block: {secrets_len} bytes of secrets in a "
                                      f"{blen}-byte block", self._consumed + off)
                    self.secrets.append(DecryptionSecret(secrets_type=secrets_type,
                                                         data=buf[off + 16:off + 16 + secrets_len]))
                elif btype == _BT_ISB:
                    if blen < 24:
                        raise _Damage(f"interface statistics block too short ({blen} bytes)",
                                      self._consumed + off)
                    drops = self._statistics_drops(buf, off, blen, order)
                    if drops is not None:
                        self._drops[(section, unpack_u32(buf, off + 8)[0])] = drops
                elif btype == PCAPNG_SHB and blen < 28:
                    raise _Damage(f"section header block too short ({blen} bytes)", self._consumed + off)
                off = stop
        except _Damage as damage:
            self._record_damage(damage)
        finally:
            self.wire_bytes, self.last_ts = wire_bytes, last_ts

    @staticmethod
    def _options(buf: bytes, pos: int, stop: int, order: str) -> Iterator[tuple[int, bytes]]:
        """A pcapng block's options from `pos` to `stop` (its trailer): (code, value), the value
        cut at `stop` when its length claims more; they end at opt_endofopt or at `stop`."""
        while pos + 4 <= stop:
            code, length = struct.unpack_from(order + "HH", buf, pos)
            if code == 0:  # opt_endofopt
                return
            yield code, buf[pos + 4:min(pos + 4 + length, stop)]
            pos += 4 + ((length + 3) & ~3)

    @classmethod
    def _statistics_drops(cls, buf: bytes, off: int, blen: int, order: str) -> int | None:
        """The drop counters of an Interface Statistics Block added up; None when it has none."""
        drops = None
        for code, value in cls._options(buf, off + 20, off + blen - 4, order):
            if code in (_OPT_ISB_IFDROP, _OPT_ISB_OSDROP) and len(value) == 8:
                drops = (drops or 0) + struct.unpack(order + "Q", value)[0]
        return drops

    def _interface(self, buf: bytes, off: int, blen: int, order: str) -> tuple[int, int, int, int]:
        """Decode an Interface Description Block: (linktype, tick divisor, tsoffset, snaplen)."""
        linktype, _, snaplen = struct.unpack_from(order + "HHI", buf, off + 8)
        units = 1_000_000
        tsoffset = 0
        for code, value in self._options(buf, off + 16, off + blen - 4, order):
            if code == _OPT_IF_TSRESOL and len(value) >= 1:
                exponent = value[0] & 0x7F
                if exponent <= 64:  # beyond that no clock exists; keep microseconds
                    units = (2 if value[0] & 0x80 else 10) ** exponent
            elif code == _OPT_IF_TSOFFSET and len(value) >= 8:
                tsoffset = struct.unpack_from(order + "q", value)[0]
        self.linktypes.add(linktype)
        return linktype, units, tsoffset, snaplen
