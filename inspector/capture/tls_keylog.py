"""TLS session secrets from NSS key logs, for offline decryption.

The NSS key log format is what SSLKEYLOGFILE (browsers, curl, OpenSSL, Go, Python's ssl) and
MITMPROXY_SSLKEYLOGFILE write, and what a pcapng Decryption Secrets Block of type 0x544c534b
('TLSK') carries. One line per secret, `LABEL <client_random hex> <secret hex>`, `#` comments:

    CLIENT_RANDOM <cr> <master secret>                    TLS 1.2 and earlier (48 bytes)
    CLIENT_HANDSHAKE_TRAFFIC_SECRET <cr> <secret>         TLS 1.3, one per direction and epoch
    SERVER_HANDSHAKE_TRAFFIC_SECRET / CLIENT_TRAFFIC_SECRET_0 / SERVER_TRAFFIC_SECRET_0
    CLIENT_EARLY_TRAFFIC_SECRET                           TLS 1.3 0-RTT data

Secrets are indexed by the ClientHello's random, which the TLS session reads from the wire.
Other labels (EXPORTER_SECRET, RSA premaster lines, ECH) are counted and not kept. Malformed
lines are counted, never fatal. A key log is capped (`Limits.tls_max_keylog_bytes`: the
`--keylog` files together, and each capture's blocks): what lies beyond the cap is not read,
and the count says so.
"""

from __future__ import annotations

import binascii
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
        if label in UNUSED_LABELS:
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
        """Whether any key material was given: wrong or missing keys are then worth reporting."""
        self._refresh()
        return bool(self.embedded) or bool(self._keylog)

    def lookup(self, client_random: bytes) -> SessionKeys | None:
        self._refresh()
        keys = self._keylog.lookup(client_random) if self._keylog is not None else None
        if keys is None:
            keys = self.embedded.lookup(client_random)
        return keys
