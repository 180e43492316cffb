"""TLS handshakes for lab captures: a client's ClientHello as a given TLS stack writes it, the
server's ServerHello, then opaque application data, so the capture carries the `tls` record
(SNI, ALPN, JA4, JA3) the inspector reads from a real connection.

A :class:`TlsStack` is what fingerprints a client: its cipher suites, extensions, groups,
signature algorithms and ALPN, in its order. Two stacks with different lists have different
JA4s; the same stack to another host name keeps its JA4 (only the presence of a name counts).
The hellos are built from the RFC 8446 layouts (record, handshake header, extensions); nothing
past the ServerHello is real TLS (the application data is random bytes in TLS records).
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

from inspector.capture.tls import APPLICATION_DATA, HANDSHAKE
from inspector.lab.craft import CLIENT, SERVER, Capture, TcpConversation
from inspector.protocols.tls import HANDSHAKE_CLIENT_HELLO, HANDSHAKE_SERVER_HELLO


def _u16s(values: tuple[int, ...]) -> bytes:
    return b"".join(struct.pack("!H", v) for v in values)


def _extension(kind: int, data: bytes = b"") -> bytes:
    return struct.pack("!HH", kind, len(data)) + data


def _record(content_type: int, body: bytes, version: int = 0x0303) -> bytes:
    return struct.pack("!BHH", content_type, version, len(body)) + body


def _handshake(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + len(body).to_bytes(3, "big") + body


@dataclass(frozen=True)
class TlsStack:
    """A client TLS stack's ClientHello choices (what JA4 and JA3 are computed from)."""

    name: str
    ciphers: tuple[int, ...]
    groups: tuple[int, ...]
    signature_algorithms: tuple[int, ...]
    alpn: tuple[bytes, ...]
    versions: tuple[int, ...] = (0x0304, 0x0303)
    session_ticket: bool = True

    def client_hello(self, host: str, rng: random.Random) -> bytes:
        """The ClientHello record to `host` (SNI), with a fresh random and key share."""
        name = host.encode()
        entry = b"\x00" + struct.pack("!H", len(name)) + name
        alpn = b"".join(bytes([len(p)]) + p for p in self.alpn)
        key_share = struct.pack("!HH", 0x001D, 32) + rng.randbytes(32)
        extensions = [
            _extension(0x0000, struct.pack("!H", len(entry)) + entry),  # server_name
            _extension(0x000B, b"\x01\x00"),  # ec_point_formats
            _extension(0x000A, struct.pack("!H", 2 * len(self.groups)) + _u16s(self.groups)),
            _extension(0x000D, struct.pack("!H", 2 * len(self.signature_algorithms))
                       + _u16s(self.signature_algorithms)),
        ]
        if self.alpn:
            extensions.append(_extension(0x0010, struct.pack("!H", len(alpn)) + alpn))
        if self.session_ticket:
            extensions.append(_extension(0x0023))
        extensions += [
            _extension(0x002B, bytes([2 * len(self.versions)]) + _u16s(self.versions)),  # supported_versions
            _extension(0x0033, struct.pack("!H", len(key_share)) + key_share),  # key_share
            _extension(0x002D, b"\x01\x01"),  # psk_key_exchange_modes
        ]
        block = b"".join(extensions)
        session_id = rng.randbytes(32)
        body = (struct.pack("!H", 0x0303) + rng.randbytes(32) + bytes([len(session_id)]) + session_id
                + struct.pack("!H", 2 * len(self.ciphers)) + _u16s(self.ciphers) + b"\x01\x00"
                + struct.pack("!H", len(block)) + block)
        return _record(HANDSHAKE, _handshake(HANDSHAKE_CLIENT_HELLO, body), version=0x0301)


def server_hello(rng: random.Random, cipher: int = 0x1301) -> bytes:
    """A TLS 1.3 ServerHello record (supported_versions and key_share chosen)."""
    extensions = (_extension(0x002B, struct.pack("!H", 0x0304))
                  + _extension(0x0033, struct.pack("!HH", 0x001D, 32) + rng.randbytes(32)))
    session_id = rng.randbytes(32)
    body = (struct.pack("!H", 0x0303) + rng.randbytes(32) + bytes([len(session_id)]) + session_id
            + struct.pack("!HB", cipher, 0) + struct.pack("!H", len(extensions)) + extensions)
    return _record(HANDSHAKE, _handshake(HANDSHAKE_SERVER_HELLO, body))


#: gRPC C-core (grpcio, tritonclient.grpc) over BoringSSL: TLS 1.3 and 1.2 AEAD suites, h2 only.
GRPC_CORE = TlsStack(
    name="grpc-core",
    ciphers=(0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8),
    groups=(0x001D, 0x0017, 0x0018),
    signature_algorithms=(0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601),
    alpn=(b"h2",),
)
#: curl with OpenSSL 3: more suites (CBC and the TLS 1.2 ECDHE/DHE ones), h2 and http/1.1.
CURL_OPENSSL = TlsStack(
    name="curl-openssl",
    ciphers=(0x1302, 0x1303, 0x1301, 0xC02C, 0xC030, 0x009F, 0xCCA9, 0xCCA8, 0xCCAA, 0xC02B, 0xC02F, 0x009E,
             0xC024, 0xC028, 0x006B, 0xC023, 0xC027, 0x0067, 0xC00A, 0xC014, 0x0039, 0xC009, 0xC013, 0x0033,
             0x009D, 0x009C, 0x003D, 0x003C, 0x0035, 0x002F),
    groups=(0x001D, 0x0017, 0x001E, 0x0019, 0x0018, 0x0100, 0x0101),
    signature_algorithms=(0x0403, 0x0503, 0x0603, 0x0807, 0x0808, 0x0809, 0x080A, 0x080B, 0x0804, 0x0805, 0x0806,
                          0x0401, 0x0501, 0x0601),
    alpn=(b"h2", b"http/1.1"),
)


def tls_connection(cap: Capture, rng: random.Random, client: str, server: str, port: int, start: float,
                   stack: TlsStack, host: str, *, exchanges: int = 1) -> None:
    """One TLS connection: handshake, then `exchanges` request/response pairs of opaque
    application data, then a close."""
    conversation = TcpConversation(cap, (client, rng.randrange(40000, 60000)), (server, port), start,
                                   rng).handshake()
    conversation.send(CLIENT, stack.client_hello(host, rng), think=0.0003)
    conversation.send(SERVER, server_hello(rng) + _record(APPLICATION_DATA, rng.randbytes(1200)), think=0.0005)
    conversation.send(CLIENT, _record(APPLICATION_DATA, rng.randbytes(80)), think=0.0003)
    for _ in range(exchanges):
        conversation.send(CLIENT, _record(APPLICATION_DATA, rng.randbytes(rng.randrange(200, 400))), think=0.0005)
        conversation.send(SERVER, _record(APPLICATION_DATA, rng.randbytes(rng.randrange(150, 300))), think=0.002)
    conversation.close(CLIENT)
