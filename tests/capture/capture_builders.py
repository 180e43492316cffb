"""Byte-exact pcap and pcapng writers for tests: every field is chosen by the test.

Written from the file format drafts (draft-ietf-opsawg-pcap, draft-ietf-opsawg-pcapng), not by
the reader under test, so a test can build headers the reader must reject as well as accept.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

PCAP_MICRO = 0xA1B2C3D4
PCAP_NANO = 0xA1B23C4D
PCAP_MODIFIED = 0xA1B2CD34


def pcap_header(*, order: str = "<", magic: int = PCAP_MICRO, version: tuple[int, int] = (2, 4),
                snaplen: int = 65535, linktype: int = 1) -> bytes:
    return struct.pack(order + "IHHiIII", magic, version[0], version[1], 0, 0, snaplen, linktype)


def pcap_record(sec: int, frac: int, data: bytes, *, order: str = "<", wire_len: int | None = None,
                caplen: int | None = None, modified: bool = False) -> bytes:
    caplen = len(data) if caplen is None else caplen
    wire_len = len(data) if wire_len is None else wire_len
    header = struct.pack(order + "IIII", sec, frac, caplen, wire_len)
    if modified:  # ifindex, protocol, packet type, padding
        header += struct.pack(order + "IHBx", 1, 0x0800, 0)
    return header + data


def pcap_file(records: Iterable[tuple[int, int, bytes]], **header: object) -> bytes:
    order = str(header.get("order", "<"))
    modified = header.get("magic") == PCAP_MODIFIED
    body = b"".join(pcap_record(sec, frac, data, order=order, modified=modified)
                    for sec, frac, data in records)
    return pcap_header(**header) + body  # type: ignore[arg-type]


# -- pcapng -----------------------------------------------------------------------------------

def option(code: int, value: bytes, order: str = "<") -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def end_of_options(order: str = "<") -> bytes:
    return struct.pack(order + "HH", 0, 0)


def block(block_type: int, body: bytes, order: str = "<", *, length: int | None = None,
          trailer: int | None = None) -> bytes:
    body += b"\0" * (-len(body) % 4)
    total = len(body) + 12
    return (struct.pack(order + "II", block_type, total if length is None else length) + body
            + struct.pack(order + "I", total if trailer is None else trailer))


def section_header(order: str = "<", options: bytes = b"") -> bytes:
    return block(0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1) + options, order)


def interface(linktype: int, order: str = "<", *, snaplen: int = 0, tsresol: int | None = None,
              tsoffset: int | None = None) -> bytes:
    options = b""
    if tsresol is not None:
        options += option(9, bytes([tsresol]), order)
    if tsoffset is not None:
        options += option(14, struct.pack(order + "q", tsoffset), order)
    if options:
        options += end_of_options(order)
    return block(1, struct.pack(order + "HHI", linktype, 0, snaplen) + options, order)


def enhanced_packet(iface: int, ticks: int, data: bytes, order: str = "<", *, wire_len: int | None = None,
                    caplen: int | None = None) -> bytes:
    caplen = len(data) if caplen is None else caplen
    wire_len = len(data) if wire_len is None else wire_len
    return block(6, struct.pack(order + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, caplen, wire_len)
                 + data, order)


def interface_statistics(iface: int, ticks: int, order: str = "<", *, ifdrop: int | None = None,
                         osdrop: int | None = None, ifrecv: int | None = None) -> bytes:
    """An Interface Statistics Block with the counters given (isb_ifrecv 4, isb_ifdrop 5, isb_osdrop 7)."""
    options = b""
    for code, value in ((4, ifrecv), (5, ifdrop), (7, osdrop)):
        if value is not None:
            options += option(code, struct.pack(order + "Q", value), order)
    if options:
        options += end_of_options(order)
    return block(5, struct.pack(order + "III", iface, ticks >> 32, ticks & 0xFFFFFFFF) + options, order)


def simple_packet(data: bytes, order: str = "<", *, wire_len: int | None = None) -> bytes:
    return block(3, struct.pack(order + "I", len(data) if wire_len is None else wire_len) + data, order)


def obsolete_packet(iface: int, ticks: int, data: bytes, order: str = "<") -> bytes:
    return block(2, struct.pack(order + "HHIIII", iface, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data),
                                len(data)) + data, order)


def decryption_secrets(secrets_type: int, data: bytes, order: str = "<") -> bytes:
    return block(0x0000000A, struct.pack(order + "II", secrets_type, len(data)) + data, order)
