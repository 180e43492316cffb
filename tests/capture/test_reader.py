"""CaptureReader: format detection, pcap/pcapng/gzip records, damage handling, against real captures."""

from __future__ import annotations

import csv
import gzip
import io
import struct
from decimal import Decimal
from pathlib import Path

import dpkt
import pytest
from capture_builders import (
    PCAP_MODIFIED,
    PCAP_NANO,
    block,
    decryption_secrets,
    enhanced_packet,
    interface,
    interface_statistics,
    obsolete_packet,
    pcap_file,
    pcap_header,
    pcap_record,
    section_header,
    simple_packet,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inspector.capture.reader import (
    CaptureDamage,
    CaptureFormatError,
    CaptureReader,
    DecryptionSecret,
    open_capture,
)
from inspector.limits import Limits

# The one corpus file where dpkt's count is wrong: its second record claims 0x53fe6000 bytes
# (1.4 GB). dpkt reads whatever is left of the file as that record; libpcap and Wireshark refuse it.
DPKT_OVERCOUNTS = {"suricata-verify/bug-6875-01/fuzz.pcap": 1}

MISNAMED = {  # corpus README: the extension does not tell the format
    "ja4/http1.pcapng": "pcap",
    "ja4/ipv6.pcapng": "pcap",
    "pcap2har/http2-dump.pcap": "pcapng",
    "ndpi/protobuf.pcap": "pcapng",
    "ndpi/fuzz-2020-02-16-11740.pcap": "pcapng",
}

DSB_FILES = [
    "ja4/chrome-cloudflare-quic-with-secrets.pcapng",
    "ja4/http2-with-cookies.pcapng",
    "pcap2har/firefox-tls13-facebook-dsb.pcapng",
    "pcap2har/http2-dump.pcap",
    "lbirchler-tls-decryption/tls2/dsb-dump.pcapng",
    "lbirchler-tls-decryption/tls3/dsb-tls3.cryptohack.org.pcapng",
]

TLS_KEY_LOG = 0x544C534B  # "TLSK"


def inventory(corpus: Path) -> list[dict[str, str]]:
    with open(corpus / "INVENTORY.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def read_all(data: bytes, name: str = "test", **kwargs: object) -> tuple[CaptureReader, list]:
    reader = CaptureReader.from_fileobj(io.BytesIO(data), name, **kwargs)  # type: ignore[arg-type]
    return reader, list(reader)


def dpkt_records(data: bytes) -> list[tuple[object, bytes]]:
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return list(dpkt.pcap.UniversalReader(io.BytesIO(data)))


class NonSeekable:
    """A pipe-like file: read() only."""

    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._f.read(size)


# -- the corpus ---------------------------------------------------------------------------------

@pytest.mark.corpus
def test_every_corpus_capture_opens_with_dpkt_packet_count(corpus_dir: Path) -> None:
    """All 162 inventoried captures open; counts equal dpkt's except the one record dpkt misreads."""
    rows = inventory(corpus_dir)
    assert len(rows) == 162
    for row in rows:
        path = row["local_path"]
        with open_capture(corpus_dir / path) as reader:
            count = sum(1 for _ in reader)
        expected = DPKT_OVERCOUNTS.get(path, int(row["packets_dpkt"]))
        assert count == expected, path
        assert reader.packets == count, path
        assert reader.bytes_read == int(row["bytes"]), path
        assert reader.format in ("pcap", "pcapng"), path
        assert reader.compressed == row["file_type"].endswith("(gzip compressed)"), path
        if path in DPKT_OVERCOUNTS:
            assert reader.error is not None
        elif reader.error is not None:  # only the tail of ndpi's fuzzed nanosecond file is damaged
            assert path == "ndpi/fuzz-2021-10-13.pcap", (path, reader.error)


@pytest.mark.corpus
def test_corpus_frames_equal_dpkt_frames(corpus_dir: Path) -> None:
    """Timestamps and bytes match dpkt record by record (where dpkt is right)."""
    for row in inventory(corpus_dir):
        path = row["local_path"]
        if path in DPKT_OVERCOUNTS or path == "ndpi/fuzz-2021-10-13.pcap":
            continue
        if path == "zeek/pcapng-multi-interface.pcapng":
            continue  # dpkt applies interface 0's resolution to every interface (see the test below)
        data = (corpus_dir / path).read_bytes()
        expected = dpkt_records(data)
        with open_capture(corpus_dir / path) as reader:
            frames = list(reader)
        assert len(frames) == len(expected), path
        for frame, (ts, buf) in zip(frames, expected):
            assert frame.data == buf, (path, frame.number)
            # nanosecond pcapng: we divide the integer ticks exactly, dpkt divides a rounded float
            assert abs(frame.ts - float(ts)) <= 2.5e-7, (path, frame.number)
        assert [f.number for f in frames] == list(range(1, len(frames) + 1))


@pytest.mark.corpus
def test_format_comes_from_magic_not_name(corpus_dir: Path) -> None:
    for path, fmt in MISNAMED.items():
        with open_capture(corpus_dir / path) as reader:
            assert reader.format == fmt, path
            assert sum(1 for _ in reader) > 0


@pytest.mark.corpus
def test_nanosecond_pcap_timestamps(corpus_dir: Path) -> None:
    """tcpdump's nanosecond captures: seconds within a rounding of the exact Decimal dpkt gives."""
    for name in ("tcp-handshake-nano.pcap", "timestamp_invalid_nano.pcap"):
        data = (corpus_dir / "tcpdump" / name).read_bytes()
        exact = [ts for ts, _ in dpkt_records(data)]
        assert all(isinstance(ts, Decimal) for ts in exact)
        with open_capture(corpus_dir / "tcpdump" / name) as reader:
            frames = list(reader)
        assert [f.linktype for f in frames] == [113, 113, 113]
        for frame, ts in zip(frames, exact):
            assert abs(Decimal(frame.ts) - ts) < Decimal("2.5e-7")
    with open_capture(corpus_dir / "tcpdump/tcp-handshake-nano.pcap") as reader:
        assert [round(f.ts, 6) for f in reader] == [1418145369.924505, 1418145370.052027, 1418145370.052115]


@pytest.mark.corpus
def test_invalid_microsecond_fraction_is_kept(corpus_dir: Path) -> None:
    """A microsecond field of 2^31 is read as given (like dpkt), not treated as damage."""
    with open_capture(corpus_dir / "tcpdump/timestamp_invalid_micro.pcap") as reader:
        assert [f.ts for f in reader] == [1418145369.999999, 1418145371.0, 1418145370 + 2147483648 / 1e6]
        assert reader.error is None


@pytest.mark.corpus
def test_pcapng_interfaces_keep_their_own_resolution(corpus_dir: Path) -> None:
    """zeek's merged capture: interface 0 counts nanoseconds, interface 1 microseconds."""
    with open_capture(corpus_dir / "zeek/pcapng-multi-interface.pcapng") as reader:
        frames = list(reader)
    assert [round(f.ts, 6) for f in frames] == [
        1767663089.50033, 1767663089.514292, 1767663437.111897, 1767663437.12646, 1767663437.128303,
        1767663437.140942]
    assert [len(f.data) for f in frames] == [96, 214, 70, 166, 70, 182]


@pytest.mark.corpus
def test_decryption_secrets_blocks(corpus_dir: Path) -> None:
    for path in DSB_FILES:
        with open_capture(corpus_dir / path) as reader:
            assert reader.secrets == []  # collected as they are met
            list(reader)
        assert len(reader.secrets) == 1, path
        secret = reader.secrets[0]
        assert secret.secrets_type == TLS_KEY_LOG
        assert b"CLIENT_" in secret.data and secret.data.rstrip(b"\0").endswith(b"\n"), path
    with open_capture(corpus_dir / "ja4/tls-sni.pcapng") as reader:
        list(reader)
        assert reader.secrets == []


@pytest.mark.corpus
def test_gzip_captures(corpus_dir: Path) -> None:
    paths = [*sorted((corpus_dir / "scapy").glob("*.gz")),
             corpus_dir / "zeek/tls/tls-fragmented-handshake.pcap.gz"]
    assert len(paths) == 7
    for path in paths:
        raw = path.read_bytes()
        with open_capture(path) as reader:
            assert reader.compressed
            frames = list(reader)
        assert reader.error is None
        assert reader.bytes_read == len(raw)
        _, plain = read_all(gzip.decompress(raw))
        assert frames == plain and frames, path


@pytest.mark.corpus
def test_gzip_from_a_pipe(corpus_dir: Path) -> None:
    raw = (corpus_dir / "scapy/http_chunk.pcap.gz").read_bytes()
    reader = CaptureReader.from_fileobj(NonSeekable(raw), "pipe")  # type: ignore[arg-type]
    assert reader.compressed and reader.format == "pcap"
    assert sum(1 for _ in reader) == 66
    assert reader.bytes_read == len(raw)


@pytest.mark.corpus
def test_gzip_cut_short_is_damage(corpus_dir: Path) -> None:
    raw = (corpus_dir / "zeek/tls/tls-fragmented-handshake.pcap.gz").read_bytes()
    _, whole = read_all(raw)
    for cut in (len(raw) // 3, len(raw) // 2, len(raw) - 5):
        reader, frames = read_all(raw[:cut])
        assert isinstance(reader.error, CaptureDamage), cut
        assert "unreadable input" in reader.error.message
        assert 0 < len(frames) <= len(whole)
        assert len(frames) < len(whole) or cut > len(raw) - 8  # only the CRC and size trailer lost
        assert frames == whole[:len(frames)]
        assert reader.bytes_read == cut


@pytest.mark.corpus
def test_dpkt_overcount_is_damage(corpus_dir: Path) -> None:
    with open_capture(corpus_dir / "suricata-verify/bug-6875-01/fuzz.pcap") as reader:
        frames = list(reader)
    assert len(frames) == 1 and len(frames[0].data) == 188
    assert reader.error == CaptureDamage(
        message="record claims a 1409179648-byte packet (limit 262144) at byte 228 (record 2)",
        offset=228, record=2)


@pytest.mark.corpus
def test_old_version_swaps_lengths(corpus_dir: Path) -> None:
    """ndpi's fuzzed file is version 2.0: caplen and len are stored the other way round (as libpcap)."""
    with open_capture(corpus_dir / "ndpi/fuzz-2021-10-13.pcap") as reader:
        frames = list(reader)
    assert [(len(f.data), f.wire_len) for f in frames] == [(197, 524501)]
    assert reader.error is not None and reader.error.offset == 237


@pytest.mark.corpus
@pytest.mark.parametrize("path", ["zeek/http/get.pcap", "ja4/tls-sni.pcapng"])
def test_truncated_copies_yield_every_whole_record(corpus_dir: Path, tmp_path: Path, path: str) -> None:
    """Cut a real capture at many points: every record before the cut, then damage (or a clean end)."""
    raw = (corpus_dir / path).read_bytes()
    with open_capture(corpus_dir / path) as reader:
        whole = list(reader)
    boundaries = record_ends(raw)
    assert len(boundaries) >= len(whole)
    cuts = sorted({boundaries[0] + 1, boundaries[1] - 1, boundaries[2] + 7, len(raw) - 1, len(raw) // 2,
                   boundaries[len(boundaries) // 2], len(raw) * 3 // 4})
    for cut in cuts:
        target = tmp_path / f"cut-{cut}.cap"
        target.write_bytes(raw[:cut])
        with open_capture(target) as reader:
            frames = list(reader)
        complete = [end for end in boundaries if end <= cut]
        packets_before = count_packets_before(raw, cut)
        assert frames == whole[:packets_before], cut
        if cut in boundaries:
            assert reader.error is None, cut
        else:
            assert reader.error is not None, cut
            assert reader.error.offset == complete[-1], cut
            assert reader.error.record == packets_before + 1
            assert f"at byte {complete[-1]} (record {packets_before + 1})" in reader.error.message


def record_ends(raw: bytes) -> list[int]:
    """Byte offsets where a pcap record or a pcapng block ends (header included for pcap)."""
    ends = []
    if raw[:4] == b"\n\r\r\n":
        off = 0
        while off < len(raw):
            off += struct.unpack_from("<I", raw, off + 4)[0]
            ends.append(off)
        return ends
    off = 24
    ends.append(off)
    while off < len(raw):
        off += 16 + struct.unpack_from("<I", raw, off + 8)[0]
        ends.append(off)
    return ends


def count_packets_before(raw: bytes, cut: int) -> int:
    count = 0
    if raw[:4] == b"\n\r\r\n":
        off = 0
        while off + 8 <= len(raw):
            btype, length = struct.unpack_from("<II", raw, off)
            if off + length > cut:
                break
            count += btype in (2, 3, 6)
            off += length
        return count
    off = 24
    while off + 16 <= cut:
        off += 16 + struct.unpack_from("<I", raw, off + 8)[0]
        if off > cut:
            break
        count += 1
    return count


# -- pcap variants, written byte by byte ------------------------------------------------------

@pytest.mark.parametrize("order", ["<", ">"])
def test_pcap_both_byte_orders_micro_and_nano(order: str) -> None:
    records = [(1_700_000_000, 250_000, b"\x01" * 60), (1_700_000_001, 999_999, b"\x02" * 70)]
    reader, frames = read_all(pcap_file(records, order=order, linktype=113))
    assert reader.format == "pcap" and reader.linktypes == {113}
    assert [(f.ts, f.linktype, f.data, f.wire_len, f.number) for f in frames] == [
        (1_700_000_000.25, 113, b"\x01" * 60, 60, 1), (1_700_000_001.999999, 113, b"\x02" * 70, 70, 2)]
    nano = [(1_700_000_000, 123_456_789, b"\x03" * 40)]
    reader, frames = read_all(pcap_file(nano, order=order, magic=PCAP_NANO))
    assert frames[0].ts == 1_700_000_000 + 123_456_789 / 1e9
    assert abs(Decimal(frames[0].ts) - Decimal("1700000000.123456789")) < Decimal("2.5e-7")


@pytest.mark.parametrize("order", ["<", ">"])
def test_modified_pcap_has_longer_record_headers(order: str) -> None:
    data = pcap_file([(10, 1, b"abcd"), (11, 2, b"efghij")], order=order, magic=PCAP_MODIFIED)
    reader, frames = read_all(data)
    assert [f.data for f in frames] == [b"abcd", b"efghij"]
    assert reader.error is None


def test_linktype_field_upper_bits_are_fcs_information() -> None:
    reader, frames = read_all(pcap_file([(1, 0, b"x" * 20)], linktype=(1 << 28) | 1))
    assert reader.linktypes == {1} and frames[0].linktype == 1


def test_snapped_record_keeps_wire_length() -> None:
    data = pcap_header(snaplen=96) + pcap_record(1, 0, b"y" * 96, wire_len=1514)
    _, frames = read_all(data)
    assert (len(frames[0].data), frames[0].wire_len) == (96, 1514)


def test_version_2_3_swaps_lengths_only_when_captured_exceeds_wire() -> None:
    body = (struct.pack("<IIII", 1, 0, 1514, 100) + b"z" * 100  # stored swapped (len, caplen)
            + struct.pack("<IIII", 2, 0, 50, 60) + b"w" * 50)  # stored in order
    _, frames = read_all(pcap_header(version=(2, 3)) + body)
    assert [(len(f.data), f.wire_len) for f in frames] == [(100, 1514), (50, 60)]


def test_header_only_pcap_and_pcapng_are_empty_captures() -> None:
    reader, frames = read_all(pcap_header())
    assert frames == [] and reader.error is None and reader.packets == 0 and reader.bytes_read == 24
    reader, frames = read_all(section_header() + interface(1))
    assert frames == [] and reader.error is None and reader.linktypes == {1}


@pytest.mark.parametrize("data", [
    b"", b"GET / HTTP/1.1\r\n\r\n", b"\xd4\xc3\xb2", b"\xd4\xc3\xb2\xa1\x02\x00",  # too short for a header
    b"\n\r\r\n\x1c\x00\x00\x00XXXX" + b"\0" * 16,  # no byte-order mark
    b"\n\r\r\n\x1d\x00\x00\x00\x4d\x3c\x2b\x1a" + b"\0" * 17,  # length not a multiple of 4
    gzip.compress(b"just some text, not a capture", mtime=0),
    gzip.compress(gzip.compress(pcap_header(), mtime=0), mtime=0),
    b"\x1f\x8b\x08\x00garbage",
])
def test_not_a_capture(data: bytes) -> None:
    with pytest.raises(CaptureFormatError, match="not-a-capture"):
        CaptureReader.from_fileobj(io.BytesIO(data), "not-a-capture")


def test_open_capture_closes_the_file_on_format_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.pcap"
    path.write_bytes(b"hello world, this is text")
    with pytest.raises(CaptureFormatError, match="starts with 68656c6c"):
        open_capture(path)


def test_record_over_the_packet_limit_is_damage() -> None:
    data = pcap_file([(1, 0, b"a" * 100), (2, 0, b"b" * 101), (3, 0, b"c" * 10)])
    reader, frames = read_all(data, limits=Limits(max_packet_bytes=100))
    assert [len(f.data) for f in frames] == [100]
    assert reader.error == CaptureDamage(message="record claims a 101-byte packet (limit 100) at byte 140 "
                                         "(record 2)", offset=140, record=2)


def test_records_larger_than_a_read_chunk_and_straddling_chunks() -> None:
    big = bytes(range(256)) * 1000  # 256,000 bytes
    records = [(i, 0, big[: 200_000 + i]) for i in range(12)]  # 2.4 MB: several 1 MiB chunks
    reader, frames = read_all(pcap_file(records))
    assert [f.data for f in frames] == [r[2] for r in records]
    assert reader.error is None


def test_non_seekable_source() -> None:
    data = pcap_file([(1, 0, b"q" * 30)] * 3)
    reader = CaptureReader.from_fileobj(NonSeekable(data), "pipe")  # type: ignore[arg-type]
    assert [f.number for f in reader] == [1, 2, 3]
    assert reader.bytes_read == len(data)


# -- pcapng, written block by block -----------------------------------------------------------

ETH_FRAME = bytes(12) + b"\x08\x00" + b"E" * 46
SLL_FRAME = bytes(14) + b"\x08\x00" + b"E" * 40
RAW_FRAME = b"\x45" + bytes(39)


def test_pcapng_interfaces_with_different_link_types() -> None:
    data = (section_header() + interface(1) + interface(113) + interface(101)
            + enhanced_packet(0, 1_000_000, ETH_FRAME) + enhanced_packet(1, 2_000_000, SLL_FRAME)
            + enhanced_packet(2, 3_000_000, RAW_FRAME) + enhanced_packet(1, 4_000_000, SLL_FRAME))
    reader, frames = read_all(data)
    assert reader.format == "pcapng" and reader.linktypes == {1, 113, 101}
    assert [(f.linktype, f.data, f.ts) for f in frames] == [
        (1, ETH_FRAME, 1.0), (113, SLL_FRAME, 2.0), (101, RAW_FRAME, 3.0), (113, SLL_FRAME, 4.0)]
    assert reader.error is None


def test_pcapng_timestamp_resolution_and_offset() -> None:
    data = (section_header() + interface(1, tsresol=9) + interface(1, tsresol=0x80 | 20)
            + interface(1, tsresol=3, tsoffset=1_600_000_000) + interface(1, tsresol=0)
            + enhanced_packet(0, 1_700_000_000_123_456_789, b"a")
            + enhanced_packet(1, (5 << 20) + (1 << 19), b"b")  # 5.5 s in 2^-20 units
            + enhanced_packet(2, 2_500, b"c")  # 2.5 s in ms, plus the offset
            + enhanced_packet(3, 42, b"d"))  # whole seconds
    _, frames = read_all(data)
    assert abs(Decimal(frames[0].ts) - Decimal("1700000000.123456789")) < Decimal("2.5e-7")
    assert [f.ts for f in frames[1:]] == [5.5, 1_600_000_002.5, 42.0]


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_simple_and_obsolete_packet_blocks(order: str) -> None:
    data = (section_header(order) + interface(1, order, snaplen=64)
            + enhanced_packet(0, 7_000_000, b"first", order)
            + simple_packet(b"s" * 80, order, wire_len=80)  # snapped to the interface's 64 bytes
            + obsolete_packet(0, 9_000_000, b"old", order))
    reader, frames = read_all(data)
    assert [(f.data, f.wire_len, f.ts, f.number) for f in frames] == [
        (b"first", 5, 7.0, 1), (b"s" * 64, 80, 7.0, 2), (b"old", 3, 9.0, 3)]
    assert reader.error is None


def test_pcapng_sections_change_byte_order_and_interfaces() -> None:
    data = (section_header("<") + interface(1, "<") + enhanced_packet(0, 1_000_000, b"le", "<")
            + section_header(">") + interface(228, ">") + interface(229, ">")
            + enhanced_packet(1, 2_000_000, b"be6", ">") + enhanced_packet(0, 3_000_000, b"be4", ">"))
    reader, frames = read_all(data)
    assert [(f.linktype, f.data) for f in frames] == [(1, b"le"), (229, b"be6"), (228, b"be4")]
    assert reader.linktypes == {1, 228, 229}


def test_pcapng_unknown_blocks_skipped_and_secrets_kept() -> None:
    keylog = b"CLIENT_RANDOM 00 11\n"
    data = (section_header() + block(0x0BAD, b"custom data") + interface(1) + block(5, bytes(20))
            + decryption_secrets(TLS_KEY_LOG, keylog) + enhanced_packet(0, 0, b"p") + block(0x12345, b""))
    reader, frames = read_all(data)
    assert [f.data for f in frames] == [b"p"]
    assert reader.secrets == [DecryptionSecret(secrets_type=TLS_KEY_LOG, data=keylog)]
    assert reader.error is None


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_interface_statistics_give_the_drops(order: str) -> None:
    """dumpcap writes an Interface Statistics Block per interface at the end (and may write them
    along the way): its counters run from the start, so each interface's last one counts."""
    data = (section_header(order) + interface(1, order) + interface(1, order)
            + enhanced_packet(0, 0, b"p", order) + interface_statistics(0, 1, order, ifdrop=3, ifrecv=10)
            + interface_statistics(0, 2, order, ifdrop=5, osdrop=2, ifrecv=20)  # later: replaces the first
            + interface_statistics(1, 2, order, ifrecv=9)  # no drop counter: nothing said
            + section_header(order) + interface(1, order) + interface_statistics(0, 3, order, osdrop=4))
    reader, frames = read_all(data)
    assert [f.data for f in frames] == [b"p"] and reader.error is None
    assert reader.dropped == 5 + 2 + 4
    plain, _ = read_all(pcap_file([(1, 0, b"x")]))
    assert plain.dropped == 0


def test_a_short_interface_statistics_block_is_damage() -> None:
    reader, frames = read_all(section_header() + interface(1) + block(5, bytes(8)) + enhanced_packet(0, 0, b"p"))
    assert frames == [] and reader.error is not None and "statistics block too short" in str(reader.error)


def test_secrets_are_collected_while_iterating() -> None:
    data = (section_header() + interface(1) + enhanced_packet(0, 0, b"1")
            + decryption_secrets(TLS_KEY_LOG, b"A\n") + enhanced_packet(0, 0, b"2"))
    reader = CaptureReader.from_fileobj(io.BytesIO(data), "t")
    frames = iter(reader)
    next(frames)
    assert reader.secrets == []
    next(frames)
    assert [s.data for s in reader.secrets] == [b"A\n"]


GOOD = section_header() + interface(1) + enhanced_packet(0, 0, b"good")
AFTER = enhanced_packet(0, 0, b"after")


@pytest.mark.parametrize(("tail", "message"), [
    (block(6, bytes(24))[:-4] + b"\x20\x00\x00\x00", "trailing length 32 differs from 36"),
    (block(6, bytes(24), length=34), "bad length 34"),
    (block(6, bytes(24), length=8), "bad length 8"),
    (enhanced_packet(3, 0, b"x"), "packet for undescribed interface 3"),
    (enhanced_packet(0, 0, b"x" * 8, caplen=20), "20-byte packet in a 40-byte block"),
    (enhanced_packet(0, 0, b"x" * 8)[:30], "cut short (30 of 40 bytes)"),
    (b"\x06\x00\x00", "block header cut short (3 of 12 bytes)"),
    (section_header()[:8] + b"XXXX" + section_header()[12:], "bad byte-order mark"),
    (block(0x0A, struct.pack("<II", 1, 500) + b"k"), "500 bytes of secrets"),
    (block(1, b""), "interface description block too short"),
    (struct.pack("<II", 9, 64 * 1024 * 1024), "bad length 67108864"),
    (enhanced_packet(0, 0, b"x" * 300_000), "300000-byte packet"),
])
def test_pcapng_damage(tail: bytes, message: str) -> None:
    data = GOOD + tail
    if "cut short" not in message:
        data += AFTER
    reader, frames = read_all(data)
    assert [f.data for f in frames] == [b"good"]
    assert reader.error is not None
    assert message in reader.error.message
    assert reader.error.offset == len(GOOD)
    assert reader.error.message.endswith(f"at byte {len(GOOD)} (record 2)")


def test_simple_packet_block_without_interface_is_damage() -> None:
    reader, frames = read_all(section_header() + simple_packet(b"abc"))
    assert frames == [] and "before any interface" in str(reader.error)


# -- never raise ------------------------------------------------------------------------------

SEEDS = [
    pcap_file([(1, 2, ETH_FRAME), (3, 4, ETH_FRAME)]),
    pcap_file([(1, 2, ETH_FRAME)], order=">", magic=PCAP_NANO),
    pcap_file([(1, 2, ETH_FRAME)], magic=PCAP_MODIFIED),
    section_header() + interface(1, tsresol=9) + enhanced_packet(0, 5, ETH_FRAME) + simple_packet(ETH_FRAME)
    + decryption_secrets(1, b"k") + obsolete_packet(0, 1, ETH_FRAME),
    section_header(">") + interface(113, ">", tsoffset=5) + enhanced_packet(0, 5, SLL_FRAME, ">"),
]


def read_never_raises(data: bytes) -> None:
    try:
        reader = CaptureReader.from_fileobj(io.BytesIO(data), "fuzz", limits=Limits(max_packet_bytes=4096))
    except CaptureFormatError:
        return
    frames = list(reader)
    assert reader.packets == len(frames)
    assert [f.number for f in frames] == list(range(1, len(frames) + 1))
    assert reader.error is None or isinstance(reader.error, CaptureDamage)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(SEEDS), edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                                   max_size=8), cut=st.integers(0, 10_000))
def test_mutated_captures_never_raise(seed: bytes, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(seed)
    for position, value in edits:
        data[position % len(data)] = value
    read_never_raises(bytes(data[: max(cut, 4)]))
    read_never_raises(gzip.compress(bytes(data))[: max(cut, 4)])


@settings(max_examples=200, deadline=None)
@given(prefix=st.sampled_from([pcap_header(), pcap_header(order=">"), section_header()]),
       tail=st.binary(max_size=600))
def test_random_bytes_after_a_header_never_raise(prefix: bytes, tail: bytes) -> None:
    read_never_raises(prefix + tail)


@pytest.mark.corpus
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["zeek/tcp/missing-syn.pcap", "ja4/tls-non-ascii-alpn.pcapng",
                             "scapy/http_head.pcapng.gz",
                             "grpc-go-for-professionals/Server Streaming.pcapng"]),
       edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                      min_size=1, max_size=6))
def test_mutated_corpus_captures_never_raise(corpus_dir: Path, name: str,
                                             edits: list[tuple[float, int]]) -> None:
    data = bytearray((corpus_dir / name).read_bytes())
    for position, value in edits:
        data[int(position * len(data))] = value
    read_never_raises(bytes(data))
