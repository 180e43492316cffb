"""Larger reads (inspector/live/readsize.py) through mitmproxy's own connection loop
(`ConnectionHandler.handle_connection`) over a real loopback socket: every byte arrives once and
in order, and the events are as large as the size asked, or mitmproxy's 65535 without it.
glibc's malloc thresholds (malloctune.py) in a fresh interpreter. The sidecar reports both."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest
from mitmproxy import options
from mitmproxy.proxy import events, mode_specs, server

from inspector.live import malloctune, readsize

PAYLOAD = bytes(range(251)) * (3 * 1024 * 1024 // 251)  # not a multiple of any read size


class Recorder(server.LiveConnectionHandler):
    """mitmproxy's live handler with its events recorded instead of handed to the layers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(reader, writer, options.Options(), mode_specs.ProxyMode.parse("reverse:http://127.0.0.1:9"))
        self.received: list[bytes] = []
        self.closed = asyncio.Event()

    async def handle_hook(self, hook) -> None:  # no addons here
        return None

    async def server_event(self, event: events.Event) -> None:
        if isinstance(event, events.DataReceived):
            self.received.append(event.data)
        elif isinstance(event, events.ConnectionClosed):
            self.closed.set()


async def receive_through_mitmproxy(size: int) -> list[bytes]:
    """PAYLOAD sent over loopback and read by mitmproxy's handle_connection with reads of `size`."""
    readsize.set_read_size(size)

    async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(PAYLOAD)
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(send, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        handler = Recorder(reader, writer)
        await asyncio.sleep(0.2)  # the first 128 KiB wait in the reader's buffer, as under load
        task = asyncio.create_task(handler.handle_connection(handler.client))
        await asyncio.wait_for(handler.closed.wait(), 30)
        task.cancel()  # the loop keeps a half-closed connection open for writing until cancelled
        with pytest.raises(asyncio.CancelledError):
            await task
        writer.close()
        return handler.received
    finally:
        listener.close()
        readsize.set_read_size(readsize.MITMPROXY_READ_SIZE)


def test_larger_reads_give_larger_events_and_every_byte_once():
    received = asyncio.run(receive_through_mitmproxy(256 * 1024))
    assert b"".join(received) == PAYLOAD
    assert max(map(len, received)) > readsize.MITMPROXY_READ_SIZE
    assert max(map(len, received)) <= 256 * 1024
    assert len(received) < len(PAYLOAD) // readsize.MITMPROXY_READ_SIZE


def test_mitmproxys_own_size_reads_as_mitmproxy_does():
    received = asyncio.run(receive_through_mitmproxy(readsize.MITMPROXY_READ_SIZE))
    assert b"".join(received) == PAYLOAD
    assert max(map(len, received)) == readsize.MITMPROXY_READ_SIZE
    assert len(received) >= len(PAYLOAD) // readsize.MITMPROXY_READ_SIZE


def test_a_bounded_read_asks_for_the_size_and_an_unbounded_one_is_passed_on():
    async def reads() -> tuple[bytes, bytes]:
        readers = [asyncio.StreamReader(), asyncio.StreamReader()]
        for reader in readers:
            reader.feed_data(b"x" * 300_000)
            reader.feed_eof()
        bounded, unbounded = (readsize.SizedReads(reader, 256 * 1024) for reader in readers)
        return await bounded.read(10), await unbounded.read(-1)

    bounded, unbounded = asyncio.run(reads())
    assert len(bounded) == 256 * 1024
    assert len(unbounded) == 300_000


@pytest.mark.parametrize("size", [0, 65534, (16 << 20) + 1])
def test_read_size_out_of_bounds_is_refused(size):
    with pytest.raises(ValueError, match="inspector_read_size"):
        readsize.parse_read_size(size)


def test_malloc_tuning_serves_sub_mib_buffers_from_the_heap():
    """In a fresh interpreter glibc maps blocks of 128 KiB or more on their own; tuned, blocks
    under 1 MiB come from the heap (mallinfo2's hblkhd: bytes in mapped blocks). Off glibc the
    tuning does nothing and says so."""
    if malloctune.glibc_version() is None:
        assert (malloctune.tune_malloc(), malloctune.restore_malloc()) == (False, False)
        return
    script = textwrap.dedent("""
        import ctypes, sys
        from inspector.live import malloctune

        class MallInfo2(ctypes.Structure):
            _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = MallInfo2
        if sys.argv[1] == "tuned":
            assert malloctune.tune_malloc()
        before = libc.mallinfo2().hblkhd
        blocks = [bytearray(n) for n in (200_000, 500_000, 900_000)]
        print(libc.mallinfo2().hblkhd - before)
    """)
    mapped = {mode: int(subprocess.run([sys.executable, "-c", script, mode], check=True, capture_output=True,
                                       text=True).stdout) for mode in ("plain", "tuned")}
    assert mapped["plain"] >= 1_600_000
    assert mapped["tuned"] == 0
