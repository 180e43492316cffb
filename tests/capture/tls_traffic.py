"""Real TLS connections for tests: OpenSSL (Python's ssl) on both ends, in memory, keys logged.

`MemoryTls` runs a client and a server `SSLObject` over memory BIOs and records every byte each
side puts on the wire, in order, as `(side, bytes)` chunks; the client context writes an NSS key
log (`SSLContext.keylog_filename`, OpenSSL's own keylog callback). `write_pcap` turns the chunks
into a capture through the lab's TCP crafting (handshake, MSS segments, ACKs, FIN), so a test
runs real TLS records through the whole offline pipeline.
"""

from __future__ import annotations

import random
import ssl
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from inspector.lab.craft import CLIENT, SERVER, Capture, TcpConversation
from inspector.live.certs import cert_pem, key_pem, make_ca, make_leaf

SERVER_NAME = "models.internal"


def server_files(directory: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server-key.pem) for SERVER_NAME, made with the sidecar's own code."""
    ca, ca_key = make_ca("tls test CA")
    leaf, leaf_key = make_leaf(ca, ca_key, [SERVER_NAME], client=False)
    paths = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    paths[0].write_bytes(cert_pem(ca))
    paths[1].write_bytes(cert_pem(leaf))
    paths[2].write_bytes(key_pem(leaf_key))
    return paths


def contexts(directory: Path, *, version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3, ciphers: str | None = None,
             alpn: list[str] | None = None, options: int = 0) -> tuple[ssl.SSLContext, ssl.SSLContext, Path]:
    """(client context, server context, key log path) pinned to one TLS version (and ciphers)."""
    ca, cert, key = server_files(directory)
    keylog = directory / "keylog.txt"
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(ca)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    for context in (client, server):
        with warnings.catch_warnings():  # TLS 1.0 and 1.1 are deprecated: tests still decrypt them
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = context.maximum_version = version
        if ciphers is not None:
            context.set_ciphers(ciphers)
        if alpn:
            context.set_alpn_protocols(alpn)
        context.options |= options
    client.keylog_filename = str(keylog)
    return client, server, keylog


class MemoryTls:
    """One TLS connection between two in-memory endpoints; `chunks` is its wire bytes in order."""

    def __init__(self, client: ssl.SSLContext, server: ssl.SSLContext, server_hostname: str = SERVER_NAME) -> None:
        self._bios = [(ssl.MemoryBIO(), ssl.MemoryBIO()), (ssl.MemoryBIO(), ssl.MemoryBIO())]  # (incoming, outgoing)
        self.ends = [client.wrap_bio(*self._bios[CLIENT], server_side=False, server_hostname=server_hostname),
                     server.wrap_bio(*self._bios[SERVER], server_side=True)]
        self.chunks: list[tuple[int, bytes]] = []
        self.received: list[bytes] = [b"", b""]  # plaintext each side read

    def _flush(self, side: int) -> bool:
        data = self._bios[side][1].read()
        if data:
            self.chunks.append((side, data))
            self._bios[1 - side][0].write(data)
        return bool(data)

    def _read(self, side: int) -> None:
        while True:
            try:
                data = self.ends[side].read(65536)
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                return
            if not data:
                return
            self.received[side] += data

    def handshake(self) -> MemoryTls:
        done = [False, False]
        for _ in range(20):
            for side in (CLIENT, SERVER):
                if not done[side]:
                    try:
                        self.ends[side].do_handshake()
                        done[side] = True
                    except ssl.SSLWantReadError:
                        pass
                self._flush(side)
            if all(done):
                break
        for side in (SERVER, CLIENT):  # session tickets and the like
            self._read(side)
            self._flush(side)
        return self

    def send(self, side: int, data: bytes) -> None:
        """`data` written by `side` (TLS records as OpenSSL cuts them), read by the peer."""
        self.ends[side].write(data)
        self._flush(side)
        self._read(1 - side)
        self._flush(1 - side)

    def close(self) -> None:
        for side in (CLIENT, SERVER):
            try:
                self.ends[side].unwrap()
            except (ssl.SSLWantReadError, ssl.SSLError):
                pass
            self._flush(side)


def write_pcap(path: Path, chunks: Iterable[tuple[int, bytes]], *, seed: int = 1, port: int = 8443,
               drop: tuple[int, int] | None = None) -> int:
    """A capture of one TCP connection carrying `chunks`; `drop=(chunk, segment)` loses a segment."""
    capture = Capture()
    rng = random.Random(seed)
    conversation = TcpConversation(capture, ("10.1.0.5", 40123), ("10.2.0.9", port), 1_700_000_000.0, rng)
    conversation.handshake()
    for n, (side, data) in enumerate(chunks):
        segment = drop[1] if drop is not None and drop[0] == n else None
        conversation.send(side, data, drop=segment)
    conversation.close()
    return capture.write(path)


def analyze_with_keylog(path: Path, keylog: Path | None = None) -> tuple[Any, list[dict]]:
    """A capture through the offline pipeline with a key log file (or none): the Analyzer (its
    stats) and the records it wrote."""
    from inspector.analyze import Analyzer
    from inspector.capture.tls_keylog import KeyLog
    from inspector.limits import DEFAULT_LIMITS

    log = None
    if keylog is not None:
        log = KeyLog(DEFAULT_LIMITS)
        log.load(keylog)
    records: list[dict] = []
    analyzer = Analyzer(records.append, keylog=log)
    analyzer.analyze_file(path)
    return analyzer, records
