"""TLS session secrets from NSS key logs, for offline decryption.

The NSS key log format is what SSLKEYLOGFILE (browsers, curl, OpenSSL, Go, Python's ssl) and
MITMPROXY_SSLKEYLOGFILE write, and what a pcapng Decryption Secrets Block of type 0x544c534b
('TLSK') carries. One line per secret, `LABEL <client_random hex> <secret hex>`, `#` comments:

    CLIENT_RANDOM <cr> <master secret>                    TLS 1.2 and earlier (48 bytes)
    CLIENT_HANDSHAKE_TRAFFIC_SECRET <cr> <secret>         TLS 1.3, one per direction and epoch
    SERVER_HANDSHAKE_TRAFFIC_SECRET / CLIENT_TRAFFIC_SECRET_0 / SERVER_TRAFFIC_SECRET_0
    CLIENT_EARLY_TRAFFIC_SECRET                           TLS 1.3 0-RTT data

Secrets are indexed by the ClientHello's random, which the TLS session reads from the wire.
Other labels (EXPORTER_SECRET, RSA premaster lines, ECH, and the secrets after a KeyUpdate,
which the session derives itself: OpenSSL 3's CLIENT_TRAFFIC_SECRET_N / SERVER_TRAFFIC_SECRET_N,
and _1, _2 ...) are counted and not kept. Malformed lines are counted, never fatal;
:func:`describe_unusable` says what a file that gave no secret at all looks like. A key log is
capped (`Limits.tls_max_keylog_bytes`: the `--keylog` files together, and each capture's
blocks): what lies beyond the cap is not read, and the count says so.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass, field
from pathlib import Path

from inspector.capture.reader import DecryptionSecret
from inspector.limits import Limits

#: pcapng Decryption Secrets Block type of an NSS key log ('TLSK').
TLS_KEYLOG_SECRETS = 0x544C534B

MASTER_SECRET_LABEL = "CLIENT_RANDOM"
TRAFFIC_SECRET_LABELS = frozenset({
    "CLIENT_EARLY_TRAFFIC_SECRET",
    "CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
    "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0",
})
#: Labels that are valid but not used for decryption here.
UNUSED_LABELS = frozenset({
    "EXPORTER_SECRET", "EARLY_EXPORTER_SECRET", "RSA", "EARLY_EXPORTER_MASTER_SECRET", "ECH_SECRET", "ECH_CONFIG",
})
#: TLS 1.3 traffic secrets after a KeyUpdate (OpenSSL 3 logs them with a literal `N`; other
#: writers number them): valid, not needed (the session derives each next secret itself).
_UPDATED_SECRET_LABEL = re.compile(r"(?:CLIENT|SERVER)_TRAFFIC_SECRET_(?:N|[1-9][0-9]{0,9})")


@dataclass(slots=True)
class SessionKeys:
    """The secrets logged for one client random."""

    source: str  # "keylog" (a --keylog file) or "pcapng" (the capture's Decryption Secrets Blocks)
    master_secret: bytes | None = None
    traffic_secrets: dict[str, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class KeyLogStats:
    lines: int = 0  # secret lines kept
    unused: int = 0  # valid lines of labels not used for decryption
    malformed: int = 0
    truncated_bytes: int = 0  # bytes not read: beyond the cap


class KeyLog:
    """Secrets by client random, from key log files and Decryption Secrets Blocks."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._entries: dict[bytes, SessionKeys] = {}
        self._bytes = 0
        self.stats = KeyLogStats()

    def __len__(self) -> int:
        return len(self._entries)

    def load(self, path: str | Path) -> None:
        """Read a key log file (OSError when it cannot be read)."""
        room = max(self._limits.tls_max_keylog_bytes - self._bytes, 0)
        rest = 0
        with open(path, "rb") as fh:
            data = fh.read(room + 1)
            while chunk := fh.read(1 << 20):  # beyond the cap: counted, not kept
                rest += len(chunk)
        self.add(data, "keylog")
        self.stats.truncated_bytes += rest

    def add(self, text: bytes, source: str) -> None:
        """Parse key log lines (a file's content or a Decryption Secrets Block's)."""
        room = max(self._limits.tls_max_keylog_bytes - self._bytes, 0)
        if len(text) > room:  # whole lines up to the cap
            kept = text[:room]
            kept = kept[:kept.rfind(b"\n") + 1]
            self.stats.truncated_bytes += len(text) - len(kept)
            text = kept
        self._bytes += len(text)
        for raw in text.splitlines():
            line = raw.strip()
            if line and not line.startswith(b"#"):
                self._line(line, source)

    def _line(self, line: bytes, source: str) -> None:
        parts = line.split()
        stats = self.stats
        if len(parts) != 3:
            stats.malformed += 1
            return
        label = parts[0].decode("ascii", "replace")
        if label in UNUSED_LABELS or _UPDATED_SECRET_LABEL.fullmatch(label):
            stats.unused += 1
            return
        try:
            client_random = binascii.unhexlify(parts[1])
            secret = binascii.unhexlify(parts[2])
        except (binascii.Error, ValueError):
            stats.malformed += 1
            return
        if len(client_random) != 32:
            stats.malformed += 1
            return
        if label == MASTER_SECRET_LABEL and len(secret) == 48:
            self._keys(client_random, source).master_secret = secret
        elif label in TRAFFIC_SECRET_LABELS and len(secret) in (32, 48):
            self._keys(client_random, source).traffic_secrets[label] = secret
        else:
            stats.malformed += 1
            return
        stats.lines += 1

    def _keys(self, client_random: bytes, source: str) -> SessionKeys:
        keys = self._entries.get(client_random)
        if keys is None:
            keys = self._entries[client_random] = SessionKeys(source=source)
        return keys

    def lookup(self, client_random: bytes) -> SessionKeys | None:
        return self._entries.get(client_random)


class CaptureKeys:
    """What one capture's TLS sessions look keys up in: the run's key log (`--keylog`), then the
    capture's own Decryption Secrets Blocks, parsed as the reader meets them (`secrets` is the
    reader's list, which grows while the capture is read)."""

    def __init__(self, keylog: KeyLog | None, secrets: list[DecryptionSecret], limits: Limits) -> None:
        self._keylog = keylog
        self._secrets = secrets
        self._seen = 0
        self.embedded = KeyLog(limits)

    def _refresh(self) -> None:
        secrets = self._secrets
        while self._seen < len(secrets):
            block = secrets[self._seen]
            self._seen += 1
            if block.secrets_type == TLS_KEYLOG_SECRETS:
                self.embedded.add(block.data, "pcapng")

    @property
    def available(self) -> bool:
        """Whether any key material was given (a --keylog, even one without a usable line, or a
        capture's secrets): wrong or missing keys are then worth reporting."""
        self._refresh()
        return self._keylog is not None or bool(self.embedded)

    def lookup(self, client_random: bytes) -> SessionKeys | None:
        self._refresh()
        keys = self._keylog.lookup(client_random) if self._keylog is not None else None
        if keys is None:
            keys = self.embedded.lookup(client_random)
        return keys


def describe_unusable(head: bytes) -> str:
    """What a key log file that gave no secret looks like, from its first bytes (for a warning)."""
    if not head.strip():
        return "the file is empty"
    sample = head[:512]
    half = max(len(sample) // 2, 1)
    if sample.startswith((b"\xff\xfe", b"\xfe\xff")) or max(sample[0::2].count(0), sample[1::2].count(0)) > 0.9 * half:
        return "it looks like UTF-16 text (as Windows PowerShell writes it): convert it to ASCII or UTF-8"
    if sum(1 for byte in sample if byte < 9 or 13 < byte < 32 or byte > 126) > len(sample) // 10:
        return "it looks like binary data, not a text key log"
    if b"-----BEGIN" in head:
        return ("it looks like a PEM file (a private key or certificate): decryption needs an NSS key log "
                "(SSLKEYLOGFILE), not the server's key")
    return "no line has the NSS key log form `LABEL <client random hex> <secret hex>` with a label used here"
