"""Zip archives from a prefix: walk the local file headers, read chosen entries with caps.

A capture often holds only the first part of a model archive (the kept body prefix, a Range
request, a cut capture), and zip's central directory sits at the end. Torch checkpoints, `.npz`,
`.keras` and `.mar` files are zips whose interesting entries (`archive/data.pkl`, `config.json`)
come first, so this module walks the *local* headers from the start
(https://pkware.cachefly.net/webdocs/casestudies/APPNOTE.TXT section 4.3.7):

    "PK\\x03\\x04" version(2) flags(2) method(2) time(2) date(2) crc(4) csize(4) usize(4)
    name_len(2) extra_len(2) name extra data [data descriptor when flags bit 3]

Zip64 sizes come from the extra field 0x0001. Entries whose sizes are deferred to a data
descriptor are delimited by decompressing them (deflate) or by finding the descriptor (stored).
Nothing here raises on peer bytes; every length is checked against the bytes present, and
inflation is capped (zip bombs stop at the cap).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

LOCAL_HEADER = b"PK\x03\x04"
CENTRAL_HEADER = b"PK\x01\x02"
END_OF_CENTRAL = b"PK\x05\x06"
DATA_DESCRIPTOR = b"PK\x07\x08"
ZIP64_END = b"PK\x06\x06"

METHOD_STORED = 0
METHOD_DEFLATED = 8

_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_FLAG_DESCRIPTOR = 0x08
_FLAG_ENCRYPTED = 0x01
_ZIP64_MARK = 0xFFFFFFFF
_EXTRA = struct.Struct("<HH")
#: Bytes inflated to find the end of a deflated entry with deferred sizes before giving up.
_FIND_END_INFLATE_CAP = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class ZipEntry:
    """One local file header, and where its data lies in the prefix."""

    name: str
    method: int
    flags: int
    #: Sizes from the header (or zip64 extra); None when deferred to a data descriptor.
    compressed_size: int | None
    size: int | None
    data_offset: int
    #: End of the entry's compressed data in the prefix, None when it runs past the prefix.
    data_end: int | None

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & _FLAG_ENCRYPTED)


@dataclass(slots=True)
class ZipListing:
    """The entries found from the start of a prefix."""

    entries: list[ZipEntry] = field(default_factory=list)
    #: True when the walk reached the central directory (every entry was seen).
    complete: bool = False
    #: Why the walk stopped early on malformed bytes (None: it ran out of bytes or finished).
    error: str | None = None


def looks_like_zip(data: bytes) -> bool:
    return data[:4] in (LOCAL_HEADER, END_OF_CENTRAL)


def walk(data: bytes, *, max_entries: int = 4096) -> ZipListing:
    """List the local headers of a zip prefix, stopping at the central directory."""
    listing = ZipListing()
    pos = 0
    end = len(data)
    if data[:4] == END_OF_CENTRAL:
        listing.complete = True
        return listing
    while pos + 4 <= end:
        signature = data[pos:pos + 4]
        if signature in (CENTRAL_HEADER, END_OF_CENTRAL, ZIP64_END):
            listing.complete = True
            return listing
        if signature != LOCAL_HEADER:
            listing.error = f"no zip header at offset {pos} (found {signature!r})"
            return listing
        if len(listing.entries) >= max_entries:
            return listing
        if pos + _LOCAL.size > end:
            return listing
        (_, _, flags, method, _, _, _, csize, usize, name_len, extra_len) = _LOCAL.unpack_from(data, pos)
        name_at = pos + _LOCAL.size
        data_at = name_at + name_len + extra_len
        if data_at > end:
            return listing
        name = data[name_at:name_at + name_len].decode("utf-8", "replace")
        extra = data[name_at + name_len:data_at]
        deferred = bool(flags & _FLAG_DESCRIPTOR) and csize == 0
        if csize == _ZIP64_MARK or usize == _ZIP64_MARK:
            usize, csize = _zip64_sizes(extra, usize, csize)
        compressed: int | None = None if deferred else csize
        data_end, next_pos = _entry_end(data, data_at, compressed, method, flags)
        listing.entries.append(ZipEntry(name=name, method=method, flags=flags, compressed_size=compressed,
                                        size=None if deferred else usize, data_offset=data_at,
                                        data_end=data_end))
        if next_pos is None:
            return listing
        pos = next_pos
    return listing


def _zip64_sizes(extra: bytes, usize: int, csize: int) -> tuple[int, int]:
    """Sizes from the zip64 extended-information extra field (only the ones marked 0xFFFFFFFF)."""
    pos = 0
    while pos + _EXTRA.size <= len(extra):
        header_id, size = _EXTRA.unpack_from(extra, pos)
        body = extra[pos + 4:pos + 4 + size]
        pos += 4 + size
        if header_id != 0x0001:
            continue
        at = 0
        if usize == _ZIP64_MARK and at + 8 <= len(body):
            usize = int.from_bytes(body[at:at + 8], "little")
            at += 8
        if csize == _ZIP64_MARK and at + 8 <= len(body):
            csize = int.from_bytes(body[at:at + 8], "little")
        break
    return usize, csize


def _entry_end(data: bytes, data_at: int, compressed: int | None, method: int,
               flags: int) -> tuple[int | None, int | None]:
    """`(end of the entry's data, offset of the next header)`; None where the prefix ends first."""
    end = len(data)
    if compressed is not None:
        data_end = data_at + compressed
        if data_end > end:
            return None, None
        after = data_end
        if flags & _FLAG_DESCRIPTOR:
            after = _skip_descriptor(data, after)
        return data_end, after
    # Sizes deferred to a data descriptor after the data.
    if method == METHOD_DEFLATED:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            inflater.decompress(data[data_at:], _FIND_END_INFLATE_CAP)
        except zlib.error:
            return None, None
        if not inflater.eof:
            return None, None
        data_end = end - len(inflater.unused_data)
        return data_end, _skip_descriptor(data, data_end)
    found = data.find(DATA_DESCRIPTOR, data_at)
    if found < 0:
        return None, None
    return found, _skip_descriptor(data, found)


def _skip_descriptor(data: bytes, pos: int) -> int:
    """Step over a data descriptor (signature optional, 32- or 64-bit sizes) to the next header."""
    start = pos + 4 if data[pos:pos + 4] == DATA_DESCRIPTOR else pos
    for size in (12, 20):  # crc + 2x4 bytes, or crc + 2x8 bytes (zip64)
        after = start + size
        if data[after:after + 2] == b"PK" or after == len(data):
            return after
    return start + 12


def read_entry(data: bytes, entry: ZipEntry, cap: int) -> tuple[bytes, bool, str | None]:
    """Up to `cap` bytes of an entry's content: `(content, truncated, error)`.

    `truncated` is True when the content is longer than what is returned (cap reached or the
    prefix ends inside the entry). `error` names why nothing could be read (encrypted, unknown
    method, corrupt deflate data).
    """
    if entry.encrypted:
        return b"", True, "encrypted entry"
    stop = entry.data_end if entry.data_end is not None else len(data)
    raw = data[entry.data_offset:stop]
    runs_past = entry.data_end is None
    if entry.method == METHOD_STORED:
        return raw[:cap], runs_past or len(raw) > cap, None
    if entry.method != METHOD_DEFLATED:
        return b"", True, f"compression method {entry.method}"
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        content = inflater.decompress(raw, max(cap, 1))  # 0 would mean "no limit"
    except zlib.error as exc:
        return b"", True, f"corrupt deflate data: {exc}"
    truncated = bool(inflater.unconsumed_tail) or not inflater.eof
    return content, truncated, None
