"""The `tls` record: ClientHello and ServerHello parsing, JA4 and JA3/JA3S fingerprints.

Both paths use this module. Offline, the TLS session (`inspector.capture.tls`) reassembles the
hello messages from the stream (split across TCP segments and across TLS records) and hands
their bodies here; live, the mitmproxy addon hands the ClientHello body its `tls_clienthello`
hook received. Each hello is parsed once into a frozen :class:`ClientHello` / :class:`ServerHello`;
:func:`tls_object` turns a pair into the record's `tls` object (one record per handshake).

Fingerprints (GREASE values, RFC 8701, are left out everywhere):

* **JA4** (FoxIO, `technical_details/JA4.md`, BSD-3-Clause): `t13d1516h2_8daaf6152771_e5627efa2ab1`:
  transport, highest offered version (supported_versions, else the hello's version), SNI or
  not, cipher and extension counts, first and last characters of the first ALPN value; then
  the truncated SHA-256 of the sorted cipher list, and of the sorted extension list (SNI and
  ALPN left out) followed by the signature algorithms in wire order. Only JA4 itself is
  computed: JA4S, JA4H, JA4X and the other JA4+ methods are under the FoxIO License 1.1.
* **JA3** (Salesforce, BSD-3-Clause): MD5 of `version,ciphers,extensions,groups,point_formats`,
  decimal values joined by `-`. **JA3S**: MD5 of `version,cipher,extensions` of the ServerHello.

Lists in the record (cipher suites, extensions, groups, signature algorithms) are 4-digit
lower-case hex strings in wire order, GREASE removed: the notation of JA4's raw output.
Version names are Suricata's (`TLSv1`, `TLS 1.2`, `TLS 1.3`, `SSLv3` ...).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from inspector import fields
from inspector.http import SessionAnomaly
from inspector.protocols.tls_suite_names import CIPHER_SUITE_NAMES
from inspector.rawtcp import Transaction

APP_PROTO = "tls"
LAYER = "tls"

HANDSHAKE_CLIENT_HELLO = 1
HANDSHAKE_SERVER_HELLO = 2

EXT_SERVER_NAME = 0x0000
EXT_SUPPORTED_GROUPS = 0x000A
EXT_EC_POINT_FORMATS = 0x000B
EXT_SIGNATURE_ALGORITHMS = 0x000D
EXT_ALPN = 0x0010
EXT_ENCRYPT_THEN_MAC = 0x0016
EXT_PRE_SHARED_KEY = 0x0029
EXT_EARLY_DATA = 0x002A
EXT_SUPPORTED_VERSIONS = 0x002B

TLS13 = 0x0304

COMPRESSION_NAMES = {1: "deflate", 64: "lzs"}

#: ServerHello.random of a HelloRetryRequest (RFC 8446 §4.1.3): SHA-256("HelloRetryRequest").
HELLO_RETRY_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")

VERSION_NAMES = {
    0x0002: "SSLv2", 0x0200: "SSLv2", 0x0300: "SSLv3", 0x0301: "TLSv1", 0x0302: "TLS 1.1",
    0x0303: "TLS 1.2", 0x0304: "TLS 1.3",
}

_JA4_VERSIONS = {
    0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3", 0x0002: "s2",
    0xFEFF: "d1", 0xFEFD: "d2", 0xFEFC: "d3",
}

#: Characters of a logged SNI or ALPN value, and ALPN values logged.
MAX_NAME_CHARS = 255
MAX_ALPN_VALUES = 16


def is_grease(value: int) -> bool:
    """RFC 8701 GREASE: 0x0a0a, 0x1a1a ... 0xfafa (both bytes equal, low nibble 0xa)."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


def version_name(version: int) -> str:
    """Suricata's name of a protocol version (`TLS 1.2`), or its hex code for others."""
    name = VERSION_NAMES.get(version)
    if name is not None:
        return name
    if version >> 8 == 0x7F:
        return f"TLS 1.3 draft-{version & 0xFF}"
    return f"0x{version:04x}"


def cipher_suite_name(code: int) -> str:
    return CIPHER_SUITE_NAMES.get(code, f"0x{code:04x}")


class HelloError(ValueError):
    """A hello message that does not parse; the text says where."""


# -- parsed hellos ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientHello:
    """A ClientHello body (the handshake message without its 4-byte header). Lists keep wire
    order and GREASE values; `truncated_extensions` is True when the extension block stopped
    short (what parsed before is kept, as a dissector would)."""

    legacy_version: int
    random: bytes
    session_id: bytes
    cipher_suites: tuple[int, ...]
    compression_methods: bytes
    extensions: tuple[int, ...]
    server_name: bytes | None
    alpn: tuple[bytes, ...]
    supported_groups: tuple[int, ...]
    ec_point_formats: tuple[int, ...]
    signature_algorithms: tuple[int, ...]
    supported_versions: tuple[int, ...]
    truncated_extensions: bool = False
    #: Sent in the SSL 2.0 record format old clients use to reach SSLv3/TLS servers (RFC 5246
    #: E.2): no TLS cipher list or extensions, so JA4 counts none (as FoxIO's ja4.py) and JA3
    #: is not computed (as tshark).
    sslv2_format: bool = False

    @property
    def max_version(self) -> int:
        """The highest version offered: supported_versions when sent, else the hello's version."""
        offered = [v for v in self.supported_versions if not is_grease(v)]
        if EXT_SUPPORTED_VERSIONS in self.extensions and offered:
            return max(offered)
        return self.legacy_version

    @property
    def offers_early_data(self) -> bool:
        return EXT_EARLY_DATA in self.extensions


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerHello:
    """A ServerHello (or HelloRetryRequest) body."""

    legacy_version: int
    random: bytes
    session_id: bytes
    cipher_suite: int
    compression_method: int
    extensions: tuple[int, ...]
    selected_version: int | None
    alpn: bytes | None
    truncated_extensions: bool = False

    @property
    def version(self) -> int:
        """The negotiated version: supported_versions' choice (TLS 1.3), else the hello's."""
        return self.selected_version if self.selected_version is not None else self.legacy_version

    @property
    def is_hello_retry(self) -> bool:
        return self.random == HELLO_RETRY_RANDOM

    @property
    def encrypt_then_mac(self) -> bool:
        return EXT_ENCRYPT_THEN_MAC in self.extensions

    @property
    def accepts_psk(self) -> bool:
        return EXT_PRE_SHARED_KEY in self.extensions


class _Reader:
    """Bounds-checked reads over one message body; HelloError names the field that ran short."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise HelloError(f"{what}: needs {n} bytes, {len(self.data) - self.pos} left")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "big")

    def vector(self, length_bytes: int, what: str) -> bytes:
        return self.take(int.from_bytes(self.take(length_bytes, f"{what} length"), "big"), what)

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def _u16_list(data: bytes) -> tuple[int, ...]:
    return tuple(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data) - 1, 2))


def _extension_blocks(reader: _Reader) -> tuple[list[tuple[int, bytes]], bool]:
    """(type, data) of each extension, and whether the block stopped short (then what parsed
    before the break is kept, with the cut extension listed without data)."""
    if reader.left < 2:
        return [], reader.left == 1
    declared = reader.u16("extensions length")
    block = reader.take(min(declared, reader.left), "extensions")
    truncated = declared > len(block)
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos + 4 <= len(block):
        ext_type = int.from_bytes(block[pos:pos + 2], "big")
        length = int.from_bytes(block[pos + 2:pos + 4], "big")
        if pos + 4 + length > len(block):
            out.append((ext_type, b""))
            return out, True
        out.append((ext_type, block[pos + 4:pos + 4 + length]))
        pos += 4 + length
    return out, truncated or pos != len(block)


def _server_name(data: bytes) -> bytes | None:
    reader = _Reader(data)
    try:
        names = _Reader(reader.vector(2, "server name list"))
        while names.left:
            name_type = names.u8("name type")
            name = names.vector(2, "host name")
            if name_type == 0:
                return name
    except HelloError:
        return None
    return None


def _alpn_values(data: bytes) -> tuple[bytes, ...]:
    reader = _Reader(data)
    values: list[bytes] = []
    try:
        listed = _Reader(reader.vector(2, "alpn list"))
        while listed.left:
            values.append(listed.vector(1, "alpn value"))
    except HelloError:
        pass
    return tuple(values)


def _vector_u16(data: bytes, length_bytes: int) -> tuple[int, ...]:
    if len(data) < length_bytes:
        return ()
    length = int.from_bytes(data[:length_bytes], "big")
    return _u16_list(data[length_bytes:length_bytes + length])


def parse_client_hello(body: bytes) -> ClientHello:
    """A ClientHello from its body; HelloError when the fixed part does not parse."""
    reader = _Reader(body)
    legacy_version = reader.u16("client version")
    random = reader.take(32, "random")
    session_id = reader.vector(1, "session id")
    suites = reader.vector(2, "cipher suites")
    compression = reader.vector(1, "compression methods")
    blocks, truncated = _extension_blocks(reader)
    values: dict[int, bytes] = {}
    for ext_type, data in blocks:
        values.setdefault(ext_type, data)
    point_formats = values.get(EXT_EC_POINT_FORMATS, b"")
    return ClientHello(
        legacy_version=legacy_version,
        random=random,
        session_id=session_id,
        cipher_suites=_u16_list(suites),
        compression_methods=compression,
        extensions=tuple(ext_type for ext_type, _ in blocks),
        server_name=_server_name(values[EXT_SERVER_NAME]) if EXT_SERVER_NAME in values else None,
        alpn=_alpn_values(values[EXT_ALPN]) if EXT_ALPN in values else (),
        supported_groups=_vector_u16(values.get(EXT_SUPPORTED_GROUPS, b""), 2),
        ec_point_formats=tuple(point_formats[1:1 + point_formats[0]]) if point_formats else (),
        signature_algorithms=_vector_u16(values.get(EXT_SIGNATURE_ALGORITHMS, b""), 2),
        supported_versions=_vector_u16(values.get(EXT_SUPPORTED_VERSIONS, b""), 1),
        truncated_extensions=truncated,
    )


def parse_sslv2_client_hello(message: bytes) -> ClientHello:
    """A ClientHello in the SSL 2.0 record format (the message after the 2-byte record header:
    type 1, version, cipher spec / session id / challenge lengths, then the three fields)."""
    reader = _Reader(message)
    if reader.u8("message type") != HANDSHAKE_CLIENT_HELLO:
        raise HelloError("SSL 2.0 record is not a CLIENT-HELLO")
    version = reader.u16("client version")
    spec_length, session_length, challenge_length = (reader.u16("cipher specs length"),
                                                     reader.u16("session id length"),
                                                     reader.u16("challenge length"))
    reader.take(spec_length, "cipher specs")
    session_id = reader.take(session_length, "session id")
    challenge = reader.take(challenge_length, "challenge")
    if not 16 <= challenge_length <= 32:
        raise HelloError(f"SSL 2.0 challenge of {challenge_length} bytes")
    return ClientHello(legacy_version=version, random=challenge.rjust(32, b"\x00"), session_id=session_id,
                       cipher_suites=(), compression_methods=b"", extensions=(), server_name=None, alpn=(),
                       supported_groups=(), ec_point_formats=(), signature_algorithms=(), supported_versions=(),
                       sslv2_format=True)


def parse_server_hello(body: bytes) -> ServerHello:
    """A ServerHello (or HelloRetryRequest) from its body; HelloError when it does not parse."""
    reader = _Reader(body)
    legacy_version = reader.u16("server version")
    random = reader.take(32, "random")
    if legacy_version >> 8 == 0x7F:  # TLS 1.3 drafts up to -21: no session id, no compression
        session_id, cipher_suite, compression = b"", reader.u16("cipher suite"), 0
    else:
        session_id = reader.vector(1, "session id")
        cipher_suite = reader.u16("cipher suite")
        compression = reader.u8("compression method")
    blocks, truncated = _extension_blocks(reader)
    values = dict(reversed(blocks))
    selected = values.get(EXT_SUPPORTED_VERSIONS)
    alpn = _alpn_values(values[EXT_ALPN]) if EXT_ALPN in values else ()
    return ServerHello(
        legacy_version=legacy_version,
        random=random,
        session_id=session_id,
        cipher_suite=cipher_suite,
        compression_method=compression,
        extensions=tuple(ext_type for ext_type, _ in blocks),
        selected_version=int.from_bytes(selected, "big") if selected is not None and len(selected) == 2 else None,
        alpn=alpn[0] if alpn else None,
        truncated_extensions=truncated,
    )


# -- fingerprints ----------------------------------------------------------------------------


def _hex4(values: tuple[int, ...] | list[int]) -> list[str]:
    return [f"{v:04x}" for v in values if not is_grease(v)]


def _truncated_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _alphanumeric(byte: int) -> bool:
    return 0x30 <= byte <= 0x39 or 0x41 <= byte <= 0x5A or 0x61 <= byte <= 0x7A


def _ja4_alpn(hello: ClientHello) -> str:
    """First and last characters of the first ALPN value. A first byte above 0x7f gives "99",
    as FoxIO's Python and Rust implementations and their test vector do (the prose of JA4.md
    asks for the hex fallback below, which other non-alphanumeric values get)."""
    if not hello.alpn or not hello.alpn[0]:
        return "00"
    value = hello.alpn[0]
    first, last = value[0], value[-1]
    if first > 0x7F:
        return "99"
    if _alphanumeric(first) and _alphanumeric(last):
        return chr(first) + chr(last)
    text = value.hex()
    return text[0] + text[-1]


def ja4(hello: ClientHello, transport: str = "t") -> str:
    """JA4 of a ClientHello (`transport`: t for TCP, q for QUIC, d for DTLS)."""
    ciphers = _hex4(hello.cipher_suites)
    extensions = _hex4(hello.extensions)
    version = _JA4_VERSIONS.get(hello.max_version, "00")
    # "d" when a host name is there: an empty server_name extension counts as none (FoxIO's ja4.py).
    sni = "d" if hello.server_name else "i"
    part_a = f"{transport}{version}{sni}{min(len(ciphers), 99):02d}{min(len(extensions), 99):02d}{_ja4_alpn(hello)}"
    part_b = _truncated_sha256(",".join(sorted(ciphers))) if ciphers else "000000000000"
    hashed_extensions = sorted(e for e in extensions if e not in ("0000", "0010"))
    if hashed_extensions:
        text = ",".join(hashed_extensions)
        algorithms = _hex4(hello.signature_algorithms)
        if algorithms:
            text += "_" + ",".join(algorithms)
        part_c = _truncated_sha256(text)
    else:
        part_c = "000000000000"
    return f"{part_a}_{part_b}_{part_c}"


def _decimal(values: tuple[int, ...] | list[int]) -> str:
    return "-".join(str(v) for v in values if not is_grease(v))


def ja3_string(hello: ClientHello) -> str:
    return ",".join((str(hello.legacy_version), _decimal(hello.cipher_suites), _decimal(hello.extensions),
                     _decimal(hello.supported_groups), "-".join(str(v) for v in hello.ec_point_formats)))


def ja3s_string(hello: ServerHello) -> str:
    return ",".join((str(hello.legacy_version), str(hello.cipher_suite), _decimal(hello.extensions)))


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


# -- the record object -----------------------------------------------------------------------


def _text(value: bytes) -> str:
    return value[:MAX_NAME_CHARS].decode("latin-1")


def client_fields(hello: ClientHello, transport: str = "t") -> dict[str, Any]:
    """The ClientHello's part of a `tls` object."""
    obj: dict[str, Any] = {}
    if hello.server_name is not None:
        obj["sni"] = _text(hello.server_name)
    obj["client_version"] = version_name(hello.max_version)
    if hello.alpn:
        obj["alpn"] = [_text(v) for v in hello.alpn[:MAX_ALPN_VALUES]]
    obj["cipher_suites"] = _hex4(hello.cipher_suites)
    obj["extensions"] = _hex4(hello.extensions)
    if hello.supported_groups:
        obj["supported_groups"] = _hex4(hello.supported_groups)
    if hello.signature_algorithms:
        obj["signature_algorithms"] = _hex4(hello.signature_algorithms)
    if hello.supported_versions:
        obj["supported_versions"] = [version_name(v) for v in hello.supported_versions if not is_grease(v)]
    obj["ja4"] = ja4(hello, transport)
    if hello.sslv2_format:
        obj["sslv2_hello"] = True
    else:
        text = ja3_string(hello)
        obj["ja3"] = {"hash": _md5(text), "string": text}
    return obj


def server_fields(hello: ServerHello, client: ClientHello | None = None) -> dict[str, Any]:
    """The ServerHello's part of a `tls` object."""
    obj: dict[str, Any] = {"version": version_name(hello.version),
                           "cipher_suite": f"{hello.cipher_suite:04x}",
                           "cipher_suite_name": cipher_suite_name(hello.cipher_suite)}
    if hello.alpn is not None:
        obj["alpn_selected"] = _text(hello.alpn)
    if hello.compression_method:
        obj["compression"] = COMPRESSION_NAMES.get(hello.compression_method, str(hello.compression_method))
    if hello.is_hello_retry:
        obj["hello_retry"] = True
    elif client is not None:
        if hello.version == TLS13:
            obj["resumed"] = hello.accepts_psk
        else:
            obj["resumed"] = bool(client.session_id) and hello.session_id == client.session_id
    text = ja3s_string(hello)
    obj["ja3s"] = {"hash": _md5(text), "string": text}
    return obj


def tls_object(client: ClientHello | None, server: ServerHello | None, transport: str = "t") -> dict[str, Any]:
    """The `tls` object of one handshake: the client's hello, the server's answer, or both."""
    obj: dict[str, Any] = {}
    if client is not None:
        obj.update(client_fields(client, transport))
    if server is not None:
        obj.update(server_fields(server, client))
    return obj


def clienthello_events(body: bytes, ts: float) -> list[Transaction | SessionAnomaly]:
    """The live path: one `tls` Transaction for a ClientHello body (mitmproxy's
    `ClientHello.raw_bytes(wrap_in_record=False)`), or the anomaly saying why it did not parse."""
    try:
        hello = parse_client_hello(body)
    except HelloError as exc:
        return [SessionAnomaly(layer=LAYER, event="malformed_client_hello", message=str(exc), ts=ts)]
    events: list[Transaction | SessionAnomaly] = [Transaction(event_type=LAYER, data=tls_object(hello, None), ts=ts)]
    if hello.truncated_extensions:
        events.append(SessionAnomaly(layer=LAYER, event="malformed_extensions",
                                     message="the ClientHello's extension block stops short", ts=ts))
    return events


fields.declare(LAYER, [
    ("tls.version", "string", "Negotiated version from the ServerHello: SSLv3, TLSv1, TLS 1.1, TLS 1.2, TLS 1.3 "
     "(absent when no ServerHello was seen; see tls.client_version)."),
    ("tls.client_version", "string", "Highest version the client offered (supported_versions, else the hello's)."),
    ("tls.sni", "string", "Server Name Indication the client sent."),
    ("tls.alpn", "list[string]", "ALPN protocols the client offered, in order (h2, http/1.1 ...)."),
    ("tls.alpn_selected", "string", "ALPN protocol the server chose, when its ServerHello says (up to TLS 1.2; "
     "TLS 1.3 sends it encrypted)."),
    ("tls.cipher_suites", "list[string]", "Cipher suites offered, 4-digit hex in wire order, GREASE removed."),
    ("tls.extensions", "list[string]", "ClientHello extension types, 4-digit hex in wire order, GREASE removed."),
    ("tls.supported_groups", "list[string]", "Key-exchange groups offered (0x001d x25519, 0x11ec X25519MLKEM768 ...)."),
    ("tls.signature_algorithms", "list[string]", "Signature algorithms offered, 4-digit hex in wire order."),
    ("tls.supported_versions", "list[string]", "Versions listed in the client's supported_versions extension."),
    ("tls.cipher_suite", "string", "Cipher suite the server chose, 4-digit hex (1301)."),
    ("tls.cipher_suite_name", "string", "IANA name of the chosen suite (TLS_AES_128_GCM_SHA256), or its hex code."),
    ("tls.compression", "string", "TLS compression the server chose (deflate): CRIME-prone, absent when none."),
    ("tls.hello_retry", "boolean", "The server answered with a HelloRetryRequest (a second handshake record "
     "follows for the client's second hello)."),
    ("tls.resumed", "boolean", "The server resumed a session (TLS 1.3: accepted a PSK; earlier: echoed the "
     "session id)."),
    ("tls.sslv2_hello", "boolean", "The ClientHello came in the SSL 2.0 record format (old clients and "
     "scanners): no cipher list or extensions are parsed from it, and no JA3."),
    ("tls.ja4", "string", "JA4 client fingerprint (FoxIO, BSD-3-Clause), e.g. t13d1516h2_8daaf6152771_e5627efa2ab1."),
    ("tls.ja3.hash", "string", "JA3 client fingerprint: MD5 of tls.ja3.string."),
    ("tls.ja3.string", "string", "JA3 string: version,ciphers,extensions,groups,point formats (decimal)."),
    ("tls.ja3s.hash", "string", "JA3S server fingerprint: MD5 of tls.ja3s.string."),
    ("tls.ja3s.string", "string", "JA3S string: version,cipher,extensions (decimal)."),
])

fields.declare(fields.ALL_EVENTS, [
    ("decrypted.protocol", "string", "Set on records parsed from decrypted traffic: the layer that was "
     "decrypted (tls)."),
    ("decrypted.version", "string", "Decrypted records: the TLS version of the connection."),
    ("decrypted.cipher_suite", "string", "Decrypted records: the connection's cipher suite (IANA name)."),
    ("decrypted.sni", "string", "Decrypted records: the SNI of the connection's ClientHello."),
    ("decrypted.ja4", "string", "Decrypted records: the JA4 of the connection's ClientHello."),
    ("decrypted.keys", "string", "Decrypted records: where the secrets came from: keylog (--keylog) or "
     "pcapng (the capture's Decryption Secrets Blocks)."),
    # Tunnels (the stream router's): what TLS most often rides in when it is not on its own flow.
    ("tunnel.protocol", "string", "Set on records of traffic carried in a tunnel: socks4, socks5 or "
     "http_connect."),
    ("tunnel.target", "string", "The host:port the tunnel was asked for (SOCKS request, CONNECT authority)."),
])
