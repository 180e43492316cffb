"""The offline TLS session: record layer, hellos, and decryption when the keys are known.

A sans-IO session over both directions of a TLS connection (direction TO_SERVER is the side
that sent the ClientHello). It frames records, reassembles handshake messages across records
and TCP segments, and reports:

* one `tls` :class:`~inspector.rawtcp.Transaction` per handshake, the ClientHello and the
  ServerHello together (a HelloRetryRequest ends one handshake record, the client's second hello
  starts the next); a hello without its answer is reported when the connection ends;
* :class:`DecryptedData` - application data that authenticated under keys from the key log, in
  stream order per direction, for the stream router to parse as HTTP/1, HTTP/2 ...;
* :class:`DecryptedGap` - application bytes that could not be decrypted (no keys, wrong keys, a
  capture gap), so the parser behind knows a piece of its stream is missing;
* anomalies (`layer: tls`): malformed records and hellos, `keys_missing` (key material was
  given, none for this handshake, or none for one side's application data), `decryption_failed`
  (records that did not authenticate: wrong keys), `unsupported_cipher_suite`, `stream_gap`,
  `renegotiation` (records under the renegotiated keys are counted, not tried), and
  `handshake_missing` (a session made for a stream recognised from its records alone).

Decryption (keys from :class:`~inspector.capture.tls_keylog.CaptureKeys`): TLS 1.3 with its
epochs per direction (0-RTT early data when CLIENT_EARLY_TRAFFIC_SECRET is logged, handshake,
application) and KeyUpdate; a record that fails under the current epoch's keys is tried under
the later ones (a handshake secret missing from the log, a Finished the capture lost). TLS
1.0-1.2 from the master secret, after each side's ChangeCipherSpec, with TLS compression
(DEFLATE) undone. Early data without its secret is counted, not decrypted.
Only records that authenticate are passed on, so a wrong key never makes garbage look like HTTP.

Caps (`Limits`): a record longer than `tls_max_record_bytes` ends parsing of that direction;
hello messages are kept up to `tls_max_handshake_bytes` (other handshake messages are skipped
without being kept); client records that arrive before the ServerHello are held up to
`tls_max_pending_bytes`.
"""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

from inspector.capture.tls_crypto import (
    SUITES,
    TLS10,
    TLS13,
    RecordProtection,
    SuiteSpec,
    Tls13Protection,
    tls12_protections,
)
from inspector.capture.tls_keylog import CaptureKeys, SessionKeys
from inspector.http import TO_CLIENT, TO_SERVER, SessionAnomaly
from inspector.limits import Limits
from inspector.protocols.tls import (
    HANDSHAKE_CLIENT_HELLO,
    HANDSHAKE_SERVER_HELLO,
    LAYER,
    ClientHello,
    HelloError,
    ServerHello,
    cipher_suite_name,
    ja4,
    parse_client_hello,
    parse_server_hello,
    parse_sslv2_client_hello,
    tls_object,
    version_name,
)
from inspector.rawtcp import Transaction

CHANGE_CIPHER_SPEC = 20
ALERT = 21
HANDSHAKE = 22
APPLICATION_DATA = 23
HEARTBEAT = 24
CONTENT_TYPES = frozenset({CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA, HEARTBEAT})

HANDSHAKE_END_OF_EARLY_DATA = 5
HANDSHAKE_FINISHED = 20
HANDSHAKE_KEY_UPDATE = 24

COMPRESSION_DEFLATE = 1
#: Largest plaintext of a record (RFC 5246 §6.2.1), the cap on a compressed record's inflation.
MAX_PLAINTEXT = 16 * 1024

_SIDE_NAMES = ("client", "server")


@dataclass(frozen=True, slots=True, kw_only=True)
class DecryptedData:
    """Plaintext application data of one record that authenticated."""

    direction: int
    data: bytes
    ts: float


@dataclass(frozen=True, slots=True, kw_only=True)
class DecryptedGap:
    """Application bytes (ciphertext length) whose plaintext is missing."""

    direction: int
    length: int
    ts: float


class HandshakeReader:
    """Handshake messages out of one direction's handshake bytes, whatever records and segments
    they arrived in. Bodies of the `keep` types are returned (up to `cap` bytes; a longer one is
    returned as None and counted in `oversized`); other messages are skipped, their type still
    reported so the caller sees message boundaries (Finished, KeyUpdate)."""

    __slots__ = ("_body", "_cap", "_header", "_keep", "_need", "_type", "oversized")

    def __init__(self, keep: frozenset[int], cap: int) -> None:
        self._keep = keep
        self._cap = cap
        self._header = bytearray()
        self._type = -1
        self._need = 0
        self._body: bytearray | None = None
        self.oversized = 0

    @property
    def in_message(self) -> bool:
        return self._type >= 0 or bool(self._header)

    def feed(self, data: bytes) -> list[tuple[int, bytes | None]]:
        out: list[tuple[int, bytes | None]] = []
        pos, end = 0, len(data)
        while pos < end:
            if self._type < 0:
                take = min(4 - len(self._header), end - pos)
                self._header += data[pos:pos + take]
                pos += take
                if len(self._header) < 4:
                    break
                self._type = self._header[0]
                self._need = int.from_bytes(self._header[1:4], "big")
                self._header.clear()
                keep = self._type in self._keep
                if keep and self._need > self._cap:
                    self.oversized += 1
                    keep = False
                self._body = bytearray() if keep else None
            take = min(self._need, end - pos)
            if self._body is not None:
                self._body += data[pos:pos + take]
            pos += take
            self._need -= take
            if self._need == 0:
                out.append((self._type, bytes(self._body) if self._body is not None else None))
                self._type = -1
                self._body = None
        return out


class _Side:
    """One direction: record framing, its handshake messages, its keys."""

    __slots__ = ("after_renegotiation", "application", "buf", "closed", "decrypted", "early_data", "encrypted",
                 "epoch_keys", "failed", "handshake", "inflater", "inner_handshake", "keys", "not_decrypted", "opened",
                 "pending", "pending_bytes", "records", "renegotiated", "seq", "stopped")

    def __init__(self, limits: Limits) -> None:
        self.buf = bytearray()
        self.stopped = False  # framing lost (malformed record, gap): nothing more is parsed
        self.closed = False
        keep = frozenset({HANDSHAKE_CLIENT_HELLO, HANDSHAKE_SERVER_HELLO})
        self.handshake = HandshakeReader(keep, limits.tls_max_handshake_bytes)
        self.inner_handshake = HandshakeReader(frozenset(), 0)
        self.encrypted = False  # TLS <= 1.2: after this side's ChangeCipherSpec
        self.keys: RecordProtection | None = None  # current epoch's protection
        self.epoch_keys: list[RecordProtection | None] = []  # TLS 1.3: later epochs, in order
        self.seq = 0
        self.opened = False  # a record authenticated under the current keys
        self.pending: list[tuple[bytes, bytes, float]] = []
        self.pending_bytes = 0
        self.records = 0
        self.decrypted = 0
        self.application = 0  # decrypted records of application data
        self.failed = 0  # did not authenticate
        self.not_decrypted = 0  # no keys, unsupported suite, held too long
        self.renegotiated = False  # TLS <= 1.2: this side switched to a renegotiated session's keys
        self.after_renegotiation = 0  # records under those keys (not derived): not decrypted
        self.early_data = 0
        self.inflater: Any = None  # TLS compression (DEFLATE): this direction's zlib stream


class TlsSession:
    """One TLS connection (the stream router's session for `app_proto: tls`)."""

    def __init__(self, limits: Limits, keys: CaptureKeys | None = None, *, handshake_seen: bool = True) -> None:
        """`handshake_seen=False`: a stream recognised from its record layer alone (the capture
        missed its handshake): its records are framed and counted, none can be decrypted."""
        self._limits = limits
        self._keys = keys
        self._sides = (_Side(limits), _Side(limits))
        self._out: list[Any] = []
        self._client_hello: ClientHello | None = None
        self._client_ts = 0.0
        self._hello_pending = False  # a ClientHello not yet reported
        self._server_hello: ServerHello | None = None
        self.version: int | None = None
        self.suite: SuiteSpec | None = None
        self.session_keys: SessionKeys | None = None
        self._keys_state = ""  # "", ready, missing, unsupported, incomplete
        self._overhead = 0  # ciphertext bytes a record adds to its plaintext (about, for CBC)
        self._reported: set[str] = set()
        self._finished = False
        self._info: dict[str, Any] | None = None  # decryption_info, made once per handshake
        self._renegotiating = False  # TLS <= 1.2: a handshake message came after the handshake
        self.counters: Counter = Counter()
        self._handshake_seen = handshake_seen
        if not handshake_seen:
            self._keys_state = "no_handshake"
            self.counters["tls_flows_without_handshake"] += 1
            for side in self._sides:
                side.encrypted = True  # every record, whatever its type, is protected under unknown keys

    # -- session interface -------------------------------------------------------------------

    def receive_data(self, direction: int, data: bytes, ts: float) -> list:
        side = self._sides[direction]
        if side.stopped or not data:
            return self._drain()
        if (not self._handshake_seen and "handshake_missing" not in self._reported and self._keys is not None
                and self._keys.available):  # reported: `available` (new secrets blocks) not asked again
            self._anomaly_once("handshake_missing", "the capture does not have this connection's TLS handshake "
                               "(its records were recognised without it): nothing can be decrypted", ts)
        side.buf += data
        self._frame(direction, side, ts)
        return self._drain()

    def receive_gap(self, direction: int, length: int, ts: float) -> list:
        side = self._sides[direction]
        if not side.stopped:
            side.stopped = True
            side.buf.clear()
            self._anomaly("stream_gap", f"{length} bytes of the {_SIDE_NAMES[direction]}'s TLS stream are missing "
                          "from the capture: its records are not parsed further", ts)
        if side.opened:
            self._out.append(DecryptedGap(direction=direction, length=length, ts=ts))
        return self._drain()

    def receive_eof(self, direction: int, ts: float) -> list:
        side = self._sides[direction]
        side.closed = True
        if all(s.closed for s in self._sides) and not self._finished:
            self._finish(ts)
        return self._drain()

    # -- what the router stamps on decrypted transactions --------------------------------------

    def decryption_info(self) -> dict[str, Any]:
        """The `decrypted` object of records parsed from this connection's plaintext."""
        if self._info is None:
            self._info = self._describe()
        return dict(self._info)

    def _describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"protocol": "tls"}
        if self.version is not None:
            info["version"] = version_name(self.version)
        server = self._server_hello
        if server is not None:
            info["cipher_suite"] = cipher_suite_name(server.cipher_suite)
        client = self._client_hello
        if client is not None:
            if client.server_name is not None:
                info["sni"] = client.server_name[:255].decode("latin-1")
            info["ja4"] = ja4(client)
        if self.session_keys is not None:
            info["keys"] = self.session_keys.source
        return info

    # -- records -----------------------------------------------------------------------------

    def _drain(self) -> list:
        out, self._out = self._out, []
        return out

    def _frame(self, direction: int, side: _Side, ts: float) -> None:
        buf = side.buf
        if not side.records and direction == TO_SERVER and buf[0] & 0x80 and not self._sslv2_hello(side, ts):
            return
        limit = self._limits.tls_max_record_bytes
        pos, end = 0, len(buf)
        while end - pos >= 5:
            content_type = buf[pos]
            length = (buf[pos + 3] << 8) | buf[pos + 4]
            if content_type not in CONTENT_TYPES or buf[pos + 1] != 3 or buf[pos + 2] > 4:
                self._stop(side, "invalid_record", f"{_SIDE_NAMES[direction]} record header "
                           f"{bytes(buf[pos:pos + 5]).hex()} is not TLS: records are not parsed further", ts)
                return
            if length > limit:
                self._stop(side, "record_too_long", f"{_SIDE_NAMES[direction]} record of {length} bytes "
                           f"(cap {limit}): records are not parsed further", ts)
                return
            if end - pos - 5 < length:
                break
            header = bytes(buf[pos:pos + 5])
            fragment = bytes(buf[pos + 5:pos + 5 + length])
            pos += 5 + length
            self._record(direction, side, header, fragment, ts)
            if side.stopped:
                return
        del buf[:pos]

    def _sslv2_hello(self, side: _Side, ts: float) -> bool:
        """The client's first record in the SSL 2.0 format (a ClientHello); False until whole."""
        buf = side.buf
        if len(buf) < 2:
            return False
        length = ((buf[0] & 0x7F) << 8) | buf[1]
        if len(buf) < 2 + length:
            return False
        message = bytes(buf[2:2 + length])
        del buf[:2 + length]
        side.records += 1
        try:
            hello = parse_sslv2_client_hello(message)
        except HelloError as exc:
            self._stop(side, "malformed_client_hello", f"SSL 2.0 format: {exc}", ts)
            return False
        self._client_hello, self._client_ts, self._hello_pending = hello, ts, True
        return True

    def _stop(self, side: _Side, event: str, message: str, ts: float) -> None:
        side.stopped = True
        side.buf.clear()
        self._anomaly(event, message, ts)

    def _record(self, direction: int, side: _Side, header: bytes, fragment: bytes, ts: float) -> None:
        side.records += 1
        content_type = header[0]
        tls13 = self.version == TLS13 or (self.version is None and self._offers_tls13())
        if content_type == CHANGE_CIPHER_SPEC:
            if not tls13:  # TLS 1.3 sends it only for middleboxes: it changes nothing
                if side.encrypted and self._renegotiating:  # to the renegotiated session's keys
                    side.renegotiated, side.keys = True, None
                side.encrypted = True
                side.seq = 0
            return
        if side.encrypted or content_type == APPLICATION_DATA:
            self._encrypted(direction, side, header, fragment, ts)
            return
        if content_type == HANDSHAKE:
            for message_type, body in side.handshake.feed(fragment):
                self._handshake(direction, message_type, body, ts)
            if side.handshake.oversized and "handshake_too_long" not in self._reported:
                self._anomaly_once("handshake_too_long", f"a hello message longer than "
                                   f"{self._limits.tls_max_handshake_bytes} bytes was not parsed", ts)
        elif content_type == HEARTBEAT:
            self._anomaly_once("heartbeat", f"{_SIDE_NAMES[direction]} sent a heartbeat record "
                               f"({len(fragment)} bytes) before encryption", ts)

    def _offers_tls13(self) -> bool:
        hello = self._client_hello
        return hello is not None and hello.max_version == TLS13

    # -- handshake -----------------------------------------------------------------------------

    def _handshake(self, direction: int, message_type: int, body: bytes | None, ts: float) -> None:
        if body is None:
            return
        if message_type == HANDSHAKE_CLIENT_HELLO and direction == TO_SERVER:
            self._report_hello(ts)  # a previous hello that got no answer
            try:
                hello = parse_client_hello(body)
            except HelloError as exc:
                self._anomaly("malformed_client_hello", str(exc), ts)
                return
            if hello.truncated_extensions:
                self._anomaly("malformed_extensions", "the ClientHello's extension block stops short", ts)
            self._client_hello, self._client_ts, self._hello_pending = hello, ts, True
            self._server_hello = None
        elif message_type == HANDSHAKE_SERVER_HELLO and direction == TO_CLIENT:
            try:
                hello = parse_server_hello(body)
            except HelloError as exc:
                self._anomaly("malformed_server_hello", str(exc), ts)
                return
            self._server_hello = hello
            self.version = hello.version
            self._emit_handshake(hello, ts)
            if not hello.is_hello_retry:
                self._setup_keys(ts)

    def _emit_handshake(self, server: ServerHello, ts: float) -> None:
        client = self._client_hello if self._hello_pending else None
        self._hello_pending = False
        self.counters["tls_handshakes"] += 1
        self._out.append(Transaction(event_type=LAYER, data=tls_object(client, server),
                                     ts=self._client_ts if client is not None else ts))

    def _report_hello(self, ts: float) -> None:
        if self._hello_pending:
            self._hello_pending = False
            self.counters["tls_handshakes"] += 1
            self.counters["tls_handshakes_unanswered"] += 1
            self._out.append(Transaction(event_type=LAYER, data=tls_object(self._client_hello, None),
                                         ts=self._client_ts))

    # -- keys ----------------------------------------------------------------------------------

    def _setup_keys(self, ts: float) -> None:
        self._info = None
        client, server = self._client_hello, self._server_hello
        assert server is not None
        self._keys_state = "missing"
        for side in self._sides:
            side.keys, side.epoch_keys, side.seq, side.opened = None, [], 0, False
        if client is None:
            self._keys_state = "incomplete"
            return
        keys = self._keys.lookup(client.random) if self._keys is not None else None
        spec = SUITES.get(server.cipher_suite)
        version = server.version
        if keys is None:
            self.counters["tls_handshakes_without_keys"] += 1
            if self._keys is not None and self._keys.available:
                self._anomaly("keys_missing", f"no key log entry for client random {client.random.hex()}: "
                              "the session is not decrypted", ts)
            return
        self.session_keys = keys
        if spec is None or version < TLS10 or spec.tls13 != (version == TLS13):
            self._keys_state = "unsupported"
            self.counters["tls_handshakes_unsupported"] += 1
            self._anomaly("unsupported_cipher_suite", f"{cipher_suite_name(server.cipher_suite)} with "
                          f"{version_name(version)} is not decrypted", ts)
            return
        self.suite = spec
        if version == TLS13:
            self._overhead = spec.tag_length + 1
        elif spec.mac is None:
            self._overhead = spec.tag_length + (0 if spec.cipher == "chacha20-poly1305" else 8)
        else:
            self._overhead = (0 if spec.cipher == "rc4" else 16) + _hash_size_of(spec.mac)
        if version == TLS13:
            secrets = keys.traffic_secrets
            for side, prefix in zip(self._sides, ("CLIENT", "SERVER")):
                epochs = [secrets.get(f"{prefix}_HANDSHAKE_TRAFFIC_SECRET"), secrets.get(f"{prefix}_TRAFFIC_SECRET_0")]
                if prefix == "CLIENT" and client.offers_early_data:
                    epochs.insert(0, secrets.get("CLIENT_EARLY_TRAFFIC_SECRET"))
                protections = [Tls13Protection(spec, s) if s is not None and len(s) == _hash_size(spec) else None
                               for s in epochs]
                side.keys, side.epoch_keys = protections[0], protections[1:]
            if not any(side.keys or any(side.epoch_keys) for side in self._sides):
                self.counters["tls_handshakes_without_keys"] += 1
                if self._keys.available:
                    self._anomaly("keys_missing", f"no TLS 1.3 traffic secrets for client random "
                                  f"{client.random.hex()}: the session is not decrypted", ts)
                return
            lacking = [(name, f"{prefix}_TRAFFIC_SECRET_0") for side, prefix, name
                       in zip(self._sides, ("CLIENT", "SERVER"), _SIDE_NAMES)
                       if not side.epoch_keys or side.epoch_keys[-1] is None]
            if lacking:  # one direction's application data cannot be read; the other's can
                labels, sides = " or ".join(label for _, label in lacking), " and ".join(n for n, _ in lacking)
                self._anomaly("keys_missing", f"the key log has no usable {labels} for client random "
                              f"{client.random.hex()}: the {sides}'s application data is not decrypted", ts)
        else:
            if keys.master_secret is None:
                self.counters["tls_handshakes_without_keys"] += 1
                self._anomaly("keys_missing", f"no CLIENT_RANDOM master secret for client random "
                              f"{client.random.hex()}: the session is not decrypted", ts)
                return
            to_server, to_client = tls12_protections(spec, version, keys.master_secret, client.random,
                                                     server.random, encrypt_then_mac=server.encrypt_then_mac)
            self._sides[TO_SERVER].keys, self._sides[TO_CLIENT].keys = to_server, to_client
        if server.compression_method == COMPRESSION_DEFLATE:
            for side in self._sides:
                side.inflater = zlib.decompressobj()
        elif server.compression_method:
            self._keys_state = "unsupported"
            self._anomaly("unsupported_compression", f"TLS compression method {server.compression_method} "
                          "is not undone: the session is not decrypted", ts)
            return
        self._keys_state = "ready"
        self.counters["tls_handshakes_with_keys"] += 1
        held = [(direction, item) for direction, side in enumerate(self._sides) for item in side.pending]
        for direction, (header, fragment, held_ts) in held:
            side = self._sides[direction]
            side.pending_bytes -= len(fragment)
            self._open(direction, side, header, fragment, held_ts)
        for side in self._sides:
            side.pending = []

    # -- encrypted records ---------------------------------------------------------------------

    def _encrypted(self, direction: int, side: _Side, header: bytes, fragment: bytes, ts: float) -> None:
        # No ServerHello yet (0-RTT data, or a capture that shows the client first): hold the record.
        if not self._keys_state and side.pending_bytes + len(fragment) <= self._limits.tls_max_pending_bytes:
            side.pending.append((header, fragment, ts))
            side.pending_bytes += len(fragment)
            return
        self._open(direction, side, header, fragment, ts)

    def _open(self, direction: int, side: _Side, header: bytes, fragment: bytes, ts: float) -> None:
        if side.renegotiated or self._keys_state != "ready" or (side.keys is None and not any(side.epoch_keys)):
            if side.renegotiated:  # under keys of a renegotiated session, which are not derived
                side.after_renegotiation += 1
            else:
                side.not_decrypted += 1
            if side.opened:
                self._gap(direction, fragment, ts)
            return
        if self.version == TLS13:
            opened = self._open13(direction, side, header, fragment, ts)
        else:
            opened = side.keys.open(header, fragment, side.seq) if side.keys is not None else None
            side.seq += 1
            if opened is None:
                side.failed += 1
                if header[0] == APPLICATION_DATA:
                    self._gap(direction, fragment, ts)
        if opened is None:
            return
        side.decrypted += 1
        side.opened = True
        content_type, plain = opened
        if side.inflater is not None:
            plain = self._inflate(direction, side, plain, ts)
            if plain is None:
                return
        if content_type == APPLICATION_DATA:
            side.application += 1
            if plain:
                self._out.append(DecryptedData(direction=direction, data=plain, ts=ts))
        elif content_type == HANDSHAKE and self.version == TLS13:
            for message_type, _ in side.inner_handshake.feed(plain):
                if message_type in (HANDSHAKE_FINISHED, HANDSHAKE_END_OF_EARLY_DATA) and side.epoch_keys:
                    self._next_epoch(side)
                elif message_type == HANDSHAKE_KEY_UPDATE and isinstance(side.keys, Tls13Protection):
                    side.keys, side.seq = side.keys.updated(), 0
                    self.counters["tls_key_updates"] += 1
        elif content_type == HANDSHAKE and side.decrypted > 1:
            self._renegotiating = True
            self._anomaly_once("renegotiation", f"the {_SIDE_NAMES[direction]} sent a handshake message after "
                               "the handshake (renegotiation): records after it are not decrypted", ts)

    def _open13(self, direction: int, side: _Side, header: bytes, fragment: bytes,
                ts: float) -> tuple[int, bytes] | None:
        """Open a TLS 1.3 record with the current epoch's keys, falling forward to a later epoch
        when they fail (a missing handshake secret, a Finished the capture lost)."""
        if side.keys is not None:
            opened = side.keys.open(header, fragment, side.seq)
            if opened is not None:
                side.seq += 1
                return opened
        for n, later in enumerate(side.epoch_keys):
            opened = later.open(header, fragment, 0) if later is not None else None
            if opened is not None:
                side.keys, side.epoch_keys, side.seq = later, side.epoch_keys[n + 1:], 1
                return opened
        if direction == TO_SERVER and not side.opened and self._client_hello is not None \
                and self._client_hello.offers_early_data:
            side.early_data += 1  # 0-RTT data without its early traffic secret: not decrypted
            self._gap(direction, fragment, ts)  # the client's stream starts with bytes we do not have
            return None
        side.seq += 1
        if side.keys is None:  # this epoch's secret is not in the key log: not a wrong key
            side.not_decrypted += 1
        else:
            side.failed += 1
        if not side.epoch_keys:  # application epoch: application bytes are missing
            self._gap(direction, fragment, ts)
        return None

    def _gap(self, direction: int, fragment: bytes, ts: float) -> None:
        """A record whose plaintext is missing: its likely plaintext length goes to the parser."""
        self._out.append(DecryptedGap(direction=direction, length=max(len(fragment) - self._overhead, 1), ts=ts))

    def _inflate(self, direction: int, side: _Side, compressed: bytes, ts: float) -> bytes | None:
        """A record's plaintext under TLS compression (RFC 3749); None when the stream breaks."""
        limit = MAX_PLAINTEXT
        try:
            plain = side.inflater.decompress(compressed, limit + 1)
        except zlib.error as exc:
            plain, error = None, f"does not inflate ({exc})"
        else:
            error = f"inflates past {limit} bytes" if len(plain) > limit or side.inflater.unconsumed_tail else ""
        if not error:
            return plain
        side.inflater = None
        side.keys, side.epoch_keys = None, []  # nothing after it can be read
        self._anomaly("decompression_failed", f"a compressed {_SIDE_NAMES[direction]} record {error}: "
                      "the direction is not decrypted further", ts)
        return None

    @staticmethod
    def _next_epoch(side: _Side) -> None:
        side.keys, side.epoch_keys, side.seq = side.epoch_keys[0], side.epoch_keys[1:], 0

    # -- end -----------------------------------------------------------------------------------

    def _finish(self, ts: float) -> None:
        self._finished = True
        self._report_hello(ts)
        counters = self.counters
        failed_sides = []
        for direction, side in enumerate(self._sides):
            if side.pending:
                side.not_decrypted += len(side.pending)
                side.pending = []
            for name, value in (("tls_records", side.records), ("tls_records_decrypted", side.decrypted),
                                ("tls_records_application", side.application), ("tls_records_failed", side.failed),
                                ("tls_records_not_decrypted", side.not_decrypted),
                                ("tls_records_after_renegotiation", side.after_renegotiation),
                                ("tls_records_early_data", side.early_data)):
                if value:
                    counters[name] += value
            if side.failed:
                failed_sides.append(f"{_SIDE_NAMES[direction]}: {side.failed} of "
                                    f"{side.failed + side.decrypted} encrypted records")
        if self._keys_state == "ready" and any(side.decrypted for side in self._sides):
            counters["tls_handshakes_decrypted"] += 1
            if any(side.failed or side.not_decrypted for side in self._sides):
                counters["tls_handshakes_decrypted_in_part"] += 1
        if failed_sides:
            client = self._client_hello
            of = f" for client random {client.random.hex()}" if client is not None else ""
            self._anomaly("decryption_failed", f"records did not authenticate under the logged keys{of} "
                          f"(wrong or stale key log?): {'; '.join(failed_sides)}", ts)

    # -- anomalies -----------------------------------------------------------------------------

    def _anomaly(self, event: str, message: str, ts: float) -> None:
        self._out.append(SessionAnomaly(layer=LAYER, event=event, message=message, ts=ts))

    def _anomaly_once(self, event: str, message: str, ts: float) -> None:
        if event not in self._reported:
            self._reported.add(event)
            self._anomaly(event, message, ts)


def _hash_size(spec: SuiteSpec) -> int:
    return 48 if spec.hash == "sha384" else 32


def _hash_size_of(name: str) -> int:
    return {"md5": 16, "sha1": 20, "sha256": 32, "sha384": 48}.get(name, 32)
