"""Larger socket reads for mitmproxy's TCP connections: fewer events per byte of a large body.

mitmproxy's `ConnectionHandler.handle_connection` reads every connection with
`reader.read(65535)`, and each read becomes one `DataReceived` event that walks the whole layer
stack (TLS, the HTTP/1 or HTTP/2 layer, h11's receive buffer, the body stream, the write to the
other side). asyncio's transport already takes up to 256 KiB from the socket per `recv`, so a
64 MiB model pull arrives in about 260 receives but is handed to mitmproxy as about 1,030 events.
Reads of 256 KiB make it about 260 events: measured here, with glibc's malloc thresholds set
for buffers that size (malloctune.py), a 64 MiB GET through the sidecar took about half the CPU
(benchmarks/README.md, "Larger reads").

`set_read_size(n)` wraps the handler's read loop once per process: for the connection it is about
to read, an `asyncio.StreamReader` (any TCP connection, client or server side) is put behind
`SizedReads`, whose `read(65535)` asks the reader for up to `n` bytes. The loop itself, its
events and its error handling stay mitmproxy's; a read still returns only what the transport
has buffered (at most about 384 KiB with asyncio's default limits), so no connection holds more
than before. UDP and mitmproxy_rs streams (WireGuard, local and DNS modes) are left alone: a read
there is a datagram. `set_read_size(65535)` (mitmproxy's own size) wraps nothing new; a change
applies to connections opened after it.

Pinned to mitmproxy 12 (tests/live/test_readsize.py runs mitmproxy's handler loop over a loopback
socket and checks the events' sizes and bytes).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from mitmproxy.proxy import server

MITMPROXY_READ_SIZE = 65535  # what mitmproxy 12's handle_connection asks for
MAX_READ_SIZE = 16 << 20

_read_size = MITMPROXY_READ_SIZE


class SizedReads:
    """A StreamReader whose bounded reads ask for `size` bytes (an unbounded read is passed on)."""

    __slots__ = ("reader", "size")

    def __init__(self, reader: asyncio.StreamReader, size: int) -> None:
        self.reader = reader
        self.size = size

    def read(self, n: int = -1) -> Awaitable[bytes]:
        return self.reader.read(self.size if 0 < n < self.size else n)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reader, name)


def parse_read_size(size: int) -> int:
    """`inspector_read_size`, checked: mitmproxy's own 65535 up to 16 MiB (the default, 256 KiB, is
    what asyncio's selector transport takes from a socket per recv: options.DEFAULT_READ_SIZE)."""
    if not MITMPROXY_READ_SIZE <= size <= MAX_READ_SIZE:
        raise ValueError(f"inspector_read_size: {size} is not between {MITMPROXY_READ_SIZE} (mitmproxy's own) "
                         f"and {MAX_READ_SIZE}")
    return size


def read_size() -> int:
    """The size new TCP connections are read with."""
    return _read_size


def set_read_size(size: int) -> None:
    """Read TCP connections opened from now on `size` bytes at a time (see the module docstring)."""
    global _read_size
    _read_size = parse_read_size(size)
    if size != MITMPROXY_READ_SIZE:
        _install()


def _install() -> None:
    original: Callable[..., Awaitable[None]] = server.ConnectionHandler.handle_connection
    if getattr(original, "inspector_sized_reads", False):
        return

    @functools.wraps(original)
    async def handle_connection(self: server.ConnectionHandler, connection: Any) -> None:
        io = self.transports.get(connection)
        size = _read_size
        if io is not None and size != MITMPROXY_READ_SIZE and type(io.reader) is asyncio.StreamReader:
            io.reader = SizedReads(io.reader, size)  # type: ignore[assignment]
        await original(self, connection)

    handle_connection.inspector_sized_reads = True  # type: ignore[attr-defined]
    server.ConnectionHandler.handle_connection = handle_connection  # type: ignore[method-assign]
