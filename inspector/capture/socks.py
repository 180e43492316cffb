"""SOCKS 4, 4a and 5 handshakes (RFC 1928, RFC 1929, the SOCKS 4/4a protocol notes): detection
and the handshake bytes each direction sends before its tunnel starts.

The stream router uses them to find where a SOCKS tunnel's bytes begin, then parses those like
a flow of their own (TLS, HTTP ...). Detection is conservative: a client request alone is a few
bytes many protocols could start with, so the server's answer must confirm it. The target the
client asked for is kept; a SOCKS 5 username/password sub-negotiation is skipped, never kept.
Nothing here raises on peer input.
"""

from __future__ import annotations


def detect_socks(client: bytes, server: bytes) -> bool | None:
    """True when the client opens with a SOCKS 4/4a/5 request the server answers as SOCKS; None
    while the answer is not in; False otherwise (the server's answer is required: a greeting
    alone is a few bytes many protocols could start with)."""
    opening = _socks_opening(client)
    if opening is None or opening is False:
        return opening
    if len(server) < 2:
        return None
    if opening == 5:  # the method the server chose
        return server[0] == 5 and server[1] in (0, 1, 2, 0xFF)
    return server[0] == 0 and 0x5A <= server[1] <= 0x5D  # SOCKS 4: granted or refused


def _socks_opening(data: bytes) -> int | bool | None:
    """4 or 5 when `data` opens like a SOCKS request of that version, False when not, None when
    too short to say."""
    if not data:
        return None
    if data[0] == 5:
        if len(data) < 2:
            return None
        count = data[1]
        if not 1 <= count <= 10:
            return False
        methods = data[2:2 + count]
        if any(not (m <= 3 or 0x80 <= m <= 0xFE) for m in methods):
            return False
        if len(methods) < count:
            return None
        following = data[2 + count:3 + count]
        return 5 if not following or following[0] in (1, 5) else False
    if data[0] == 4:
        if len(data) < 9:
            return None
        if data[1] not in (1, 2) or data[2:4] == b"\x00\x00":
            return False
        end = data.find(b"\x00", 8)
        if end == -1:
            return None if len(data) < 8 + 256 else False
        return 4
    return False


class SocksHandshake:
    """One direction of a SOCKS handshake: consumed byte by byte until the tunnel starts.

    `feed` returns the bytes after the handshake (the tunnel's), or b"" while it lasts; `failed`
    names what was malformed. The client side learns the target (`target`)."""

    _CAP = 1024  # a SOCKS handshake fits in far less: more is not SOCKS

    def __init__(self, client: bool) -> None:
        self.client = client
        self.buf = b""
        self.done = False
        self.failed = ""
        self.version = 0
        self.target = ""
        self.refused = False

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return data
        if self.failed:
            return b""
        self.buf += data
        used = self._parse(self.buf)
        if used is None:
            if len(self.buf) > self._CAP:
                self.failed = "handshake longer than any SOCKS handshake"
            return b""
        if used < 0:
            return b""
        self.done = True
        rest, self.buf = self.buf[used:], b""
        return rest

    def _parse(self, buf: bytes) -> int | None:
        """Handshake length when `buf` holds all of it, None when more is needed, -1 on failure."""
        try:
            return self._client(buf) if self.client else self._server(buf)
        except IndexError:
            return None

    def _fail(self, what: str) -> int:
        self.failed = what
        return -1

    def _address(self, buf: bytes, pos: int) -> tuple[str, int] | None:
        kind = buf[pos]
        if kind == 1:
            host, end = ".".join(str(b) for b in buf[pos + 1:pos + 5]), pos + 5
        elif kind == 3:
            end = pos + 2 + buf[pos + 1]
            host = buf[pos + 2:end].decode("latin-1")
        elif kind == 4:
            raw, end = buf[pos + 1:pos + 17], pos + 17
            host = "[" + ":".join(raw[i:i + 2].hex() for i in range(0, 16, 2)) + "]"
        else:
            return None
        if len(buf) < end + 2:
            raise IndexError
        return f"{host}:{int.from_bytes(buf[end:end + 2], 'big')}", end + 2

    def _client(self, buf: bytes) -> int | None:
        self.version = buf[0]
        if buf[0] == 4:
            end = buf.index(0, 8) if 0 in buf[8:] else None
            if end is None:
                return None
            host = ".".join(str(b) for b in buf[4:8])
            if buf[4:7] == b"\x00\x00\x00" and buf[7]:  # SOCKS 4a: the name follows the user id
                name_end = buf.index(0, end + 1) if 0 in buf[end + 1:] else None
                if name_end is None:
                    return None
                host, end = buf[end + 1:name_end].decode("latin-1"), name_end
            self.target = f"{host}:{int.from_bytes(buf[2:4], 'big')}"
            return end + 1
        pos = 2 + buf[1]
        if buf[pos] == 1:  # username/password sub-negotiation (RFC 1929): skipped, never kept
            pos += 2 + buf[pos + 1]
            pos += 1 + buf[pos]
        if buf[pos] != 5 or buf[pos + 2] != 0:
            return self._fail("SOCKS 5 request expected")
        found = self._address(buf, pos + 3)
        if found is None:
            return self._fail("unknown SOCKS 5 address type")
        self.target, end = found
        return end

    def _server(self, buf: bytes) -> int | None:
        if buf[0] == 0:  # SOCKS 4 reply: 8 bytes, 0x5a granted
            if len(buf) < 8:
                return None
            self.refused = buf[1] != 0x5A
            return 8
        method = buf[1]
        pos = 2
        if method == 0xFF:
            self.refused = True
            return 2
        if method == 2:
            pos += 2  # the sub-negotiation's status
            if buf[pos - 1] != 0:
                self.refused = True
                return pos
        if buf[pos] != 5:
            return self._fail("SOCKS 5 reply expected")
        found = self._address(buf, pos + 3)
        if found is None:
            return self._fail("unknown SOCKS 5 address type")
        self.refused = buf[pos + 1] != 0
        return found[1]
