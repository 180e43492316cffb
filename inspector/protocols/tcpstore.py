"""The `tcpstore` raw-TCP protocol: PyTorch c10d TCPStore queries and their replies.

Wire (../shared/reference/nccl-tcpstore-wire.md §4, checked against torch 2.13 captures): the
client sends `u8 QueryType` and its arguments, strings and byte vectors as `u64 len` + bytes,
scalars raw, little-endian; no message length, no request id. The server answers some queries,
in order, so the session knows each query's reply shape and pairs replies with the queries
still waiting for one (WAIT and BARRIER answer late; SET, APPEND, MULTI_SET, QUEUE_PUSH and
VALIDATE never answer; a WAIT that timed out is answered by its CANCEL_WAIT instead).

Two numberings exist. Torch >= 2.2 opens every connection with VALIDATE (`00` + u32
0x3C85F7CE, the "new" numbering, PR #107607); older clients start straight with a query (the
"old" numbering: 0 = SET ... 7 = WATCH_KEY). Without VALIDATE, the session walks the first
queries under both numberings and keeps the one they parse under (the old one when both do);
a new-numbering connection without VALIDATE is reported (`missing_validate`).

One record (`event_type: tcpstore`) per query, with its reply when seen, in query order. Values
are described, not logged: size, kind (empty, int, text, pickle, base64_pickle, nccl_id,
binary), the globals a pickle imports (listed from its opcodes, never unpickled), and for a
128-byte value shaped like an ncclUniqueId its root address, bootstrap magic and layout. Keys
keep the "/" prefix TCPStore adds (`key_unprefixed` drops it).

Caps (Limits attributes when the lead adds them, else these defaults): key 8 KiB, value
8 MiB, 131072 keys per query (the libuv backend's own limits); a length beyond a cap is an
anomaly and the direction is given up. 64 KiB of each value are kept for its description.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any

from inspector import fields
from inspector.http import TO_CLIENT, TO_SERVER, SessionAnomaly
from inspector.limits import Limits
from inspector.protocols.bytereader import BEGIN_1, WAIT, Begin, ParseError, Skip, StreamReader
from inspector.protocols.nccl import decode_unique_id
from inspector.protocols.picklescan_lite import MAX_GLOBALS, looks_like_pickle, may_start_pickle, scan_pickle
from inspector.rawtcp import SWAPPED, Transaction

APP_PROTO = "tcpstore"
LAYER = "tcpstore"

VALIDATE_MAGIC = 0x3C85F7CE
VALIDATE_PREFIX = b"\x00" + struct.pack("<I", VALIDATE_MAGIC)

#: The libuv server's own limits (the default backend since torch 2.4); the legacy server has
#: none: longer keys and values are reported (once per connection for each), counted and skipped.
LIBUV_MAX_KEY_BYTES = 8 * 1024
LIBUV_MAX_VALUE_BYTES = 8 * 1024 * 1024
#: Parsing caps (Limits' defaults): past them a length is not believed and the direction is lost.
MAX_KEY_BYTES = 1024 * 1024
MAX_VALUE_BYTES = 1024 * 1024 * 1024
MAX_KEYS = 128 * 1024
VALUE_KEEP_BYTES = 64 * 1024
#: Record caps: characters of a key or text value, keys listed, queries waiting for a reply.
RECORD_KEY_CHARS = 512
RECORD_TEXT_CHARS = 128
RECORD_KEYS = 32
MAX_PENDING_QUERIES = 1024
#: Client bytes held while the numbering is undecided; server bytes held without a query.
MAX_UNDECIDED_BYTES = 4096
MAX_UNPAIRED_REPLY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class QuerySpec:
    """A query: its name, its arguments in wire order, the shape of its reply (None: no reply)."""

    name: str
    args: tuple[str, ...]
    reply: str | None


_COMMON = {
    8: QuerySpec("DELETE_KEY", ("key",), "i64"),
    9: QuerySpec("APPEND", ("key", "value"), None),
    10: QuerySpec("MULTI_GET", ("keys",), "values"),
    11: QuerySpec("MULTI_SET", ("pairs",), None),
    12: QuerySpec("CANCEL_WAIT", (), "cancel"),
}
#: store/TCPStoreBackend.hpp (torch >= 2.2): VALIDATE first, WATCH_KEY gone, 13-18 added later.
NEW_QUERIES = {
    0: QuerySpec("VALIDATE", ("u32",), None),
    1: QuerySpec("SET", ("key", "value"), None),
    2: QuerySpec("COMPARE_SET", ("key", "expected", "value"), "vec"),
    3: QuerySpec("GET", ("key",), "vec"),
    4: QuerySpec("ADD", ("key", "i64"), "i64"),
    5: QuerySpec("CHECK", ("keys",), "check"),
    6: QuerySpec("WAIT", ("keys",), "wait"),
    7: QuerySpec("GETNUMKEYS", (), "i64"),
    **_COMMON,
    13: QuerySpec("PING", ("u32",), "echo"),
    14: QuerySpec("QUEUE_PUSH", ("key", "value"), None),
    15: QuerySpec("QUEUE_POP", ("key",), "pop"),
    16: QuerySpec("QUEUE_LEN", ("key",), "i64"),
    17: QuerySpec("LIST_KEYS", (), "keylist"),
    18: QuerySpec("BARRIER", ("key", "i64"), "u8"),
}
#: TCPStore.cpp before PR #107607.
OLD_QUERIES = {
    0: QuerySpec("SET", ("key", "value"), None),
    1: QuerySpec("COMPARE_SET", ("key", "expected", "value"), "vec"),
    2: QuerySpec("GET", ("key",), "vec"),
    3: QuerySpec("ADD", ("key", "i64"), "i64"),
    4: QuerySpec("CHECK", ("keys",), "check"),
    5: QuerySpec("WAIT", ("keys",), "wait"),
    6: QuerySpec("GETNUMKEYS", (), "i64"),
    7: QuerySpec("WATCH_KEY", ("key",), "watch"),
    **_COMMON,
}
NUMBERINGS = {"new": NEW_QUERIES, "old": OLD_QUERIES}

CHECK_STATUS = {0: "READY", 1: "NOT_READY"}
WAIT_STATUS = {0: "STOP_WAITING", 1: "WAIT_CANCELED"}
WATCH_EVENTS = {0: "KEY_UPDATED", 1: "KEY_CREATED", 2: "KEY_DELETED", 3: "KEY_CALLBACK_REGISTERED",
                4: "KEY_APPENDED"}
#: When values of several kinds travel together, the record describes the most telling one.
KIND_PRIORITY = ("pickle", "base64_pickle", "nccl_id", "binary", "text", "int", "empty")

_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
_U32 = struct.Struct("<I")
_PRINTABLE_KEY = re.compile(rb"[\x20-\x7e]*")
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_INTEGER = re.compile(rb"-?[0-9]{1,20}")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/=]+")
_NOT_BASE64_DATA = re.compile(rb"[^A-Za-z0-9+/]+")
#: Base64 data characters decoded first to tell whether a value can be base64 of a pickle.
HEAD_BASE64_CHARS = 16


# -- values --------------------------------------------------------------------------------------


def describe_value(prefix: bytes, size: int) -> dict[str, Any]:
    """Size and kind of a value of `size` bytes whose first bytes are `prefix`, and what they show."""
    out: dict[str, Any] = {"value_size": size}
    complete = len(prefix) >= size
    if size == 0:
        out["value_kind"] = "empty"
        return out
    nccl_id = decode_unique_id(prefix) if size == 128 and complete else None
    if nccl_id is not None:
        out["value_kind"] = "nccl_id"
        out["nccl_id"] = nccl_id
        return out
    if looks_like_pickle(prefix, complete):
        out["value_kind"] = "pickle"
        _pickle_fields(out, prefix)
        return out
    decoded = _base64_pickle(prefix, complete)
    if decoded is not None:
        out["value_kind"] = "base64_pickle"
        _pickle_fields(out, decoded)
        return out
    if complete and _INTEGER.fullmatch(prefix):
        out["value_kind"] = "int"
        out["value_text"] = prefix.decode("ascii")
        return out
    text = _as_text(prefix, complete)
    if text is not None:
        out["value_kind"] = "text"
        out["value_text"] = text[:RECORD_TEXT_CHARS]
        return out
    out["value_kind"] = "binary"
    return out


def _pickle_fields(out: dict[str, Any], data: bytes) -> None:
    findings = scan_pickle(data)
    out["pickle_globals"] = findings.globals
    out["pickle_dangerous"] = findings.dangerous
    out["pickle_scan_complete"] = findings.complete


def _base64_pickle(prefix: bytes, complete: bool) -> bytes | None:
    """The decoded bytes when `prefix` is base64 of a pickle (torch.rendezvous.* state), read as
    torch reads it: `base64.b64decode` without validation, which drops every byte outside the
    alphabet (newlines of `encodebytes`, spaces, anything an author slips in)."""
    if len(prefix) < 8 or not _may_be_base64_pickle(prefix, complete):
        return None
    usable = _NOT_BASE64.sub(b"", prefix)
    if len(usable) < 8:
        return None
    if not complete:
        usable = usable[:len(usable) // 4 * 4]
    try:
        decoded = base64.b64decode(usable)
    except (binascii.Error, ValueError):
        return None
    return decoded if looks_like_pickle(decoded, complete) else None


def _may_be_base64_pickle(prefix: bytes, complete: bool) -> bool:
    """False when `prefix` cannot decode to a pickle, from its first HEAD_BASE64_CHARS data
    characters alone (most values, read in a few hundred bytes instead of all of them).

    The decoder emits bytes as it reads characters and ignores "=" except where padding ends
    the data early, so a full decode that succeeds starts with the decode of these characters
    ("=" dropped, 12 bytes) for as many bytes as it has; looks_like_pickle decides on the first
    10 bytes, except for protocol 0/1, whose first byte must still be one of the starts."""
    end = HEAD_BASE64_CHARS * 4
    while True:
        head = _NOT_BASE64_DATA.sub(b"", prefix[:end])
        if len(head) >= HEAD_BASE64_CHARS:
            break
        if end >= len(prefix):
            return True  # too few data characters to tell: the full decode decides
        end *= 4
    start = base64.b64decode(head[:HEAD_BASE64_CHARS])
    return may_start_pickle(start, complete)


def _as_text(prefix: bytes, complete: bool) -> str | None:
    if _CONTROL.search(prefix):
        return None
    try:
        return prefix.decode("utf-8")
    except UnicodeDecodeError as error:
        if not complete and error.start >= len(prefix) - 3:  # a character cut by the kept prefix
            return prefix[:error.start].decode("utf-8")
        return None


def _merge_values(described: list[dict[str, Any]]) -> dict[str, Any]:
    """Several values (MULTI_SET, MULTI_GET): total size, the most telling value's details, and
    the pickle findings of all of them (a harmless pickle first must not hide a second one)."""
    if not described:
        return {"value_size": 0, "value_kind": "empty"}
    best = min(described, key=lambda d: KIND_PRIORITY.index(d["value_kind"]))
    merged = dict(best)
    merged["value_size"] = sum(d["value_size"] for d in described)
    pickles = [d for d in described if "pickle_globals" in d]
    if len(pickles) > 1:
        for name in ("pickle_globals", "pickle_dangerous"):
            union = list(dict.fromkeys(item for d in pickles for item in d[name]))
            merged[name] = union[:MAX_GLOBALS]
        merged["pickle_scan_complete"] = all(d["pickle_scan_complete"] for d in pickles)
    return merged


def key_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")[:RECORD_KEY_CHARS]


def _key_fields(key: str) -> dict[str, Any]:
    out: dict[str, Any] = {"key": key}
    if key.startswith("/"):
        out["key_unprefixed"] = key[1:]
    return out


# -- numbering and detection ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Walk:
    """Queries parsed from a connection's first bytes under one numbering."""

    complete: int
    bad: bool
    convincing: bool  # a key TCPStore would send: "init/" or "/..." in printable ASCII


def walk_queries(data: bytes, table: dict[int, QuerySpec], max_queries: int = 8) -> Walk:
    """Parse whole queries from the start of `data` without keeping anything (detection)."""
    size = len(data)
    pos = 0
    complete = 0
    convincing = False
    while pos < size and complete < max_queries:
        spec = table.get(data[pos])
        if spec is None:
            return Walk(complete, True, convincing)
        at = pos + 1
        for arg in spec.args:
            if arg in ("u32", "i64"):
                width = 4 if arg == "u32" else 8
                if at + width > size:
                    return Walk(complete, False, convincing)
                at += width
                continue
            count = 1
            if arg in ("keys", "pairs"):
                if at + 8 > size:
                    return Walk(complete, False, convincing)
                count = _U64.unpack_from(data, at)[0]
                at += 8
                if count > MAX_KEYS:
                    return Walk(complete, True, convincing)
            for _ in range(count):
                for part in (("key", "value") if arg == "pairs" else ("value",) if arg == "expected" else (arg,)):
                    if part == "keys":
                        part = "key"
                    if at + 8 > size:
                        return Walk(complete, False, convincing)
                    length = _U64.unpack_from(data, at)[0]
                    at += 8
                    if length > (MAX_KEY_BYTES if part == "key" else MAX_VALUE_BYTES):
                        return Walk(complete, True, convincing)
                    if part == "key":
                        key = data[at:at + length]
                        if not _PRINTABLE_KEY.fullmatch(key):
                            return Walk(complete, True, convincing)
                        if len(key) < length:
                            return Walk(complete, False, convincing)
                        convincing = convincing or key == b"init/" or key.startswith(b"/")
                    at += length
                    if at > size:
                        return Walk(complete, False, convincing)
        pos = at
        complete += 1
    return Walk(complete, False, convincing)


def guess_numbering(data: bytes, final: bool = False) -> tuple[str, bool] | None:
    """(numbering, validated) for a connection starting with `data`; None: not yet decidable."""
    if data.startswith(VALIDATE_PREFIX):
        return "new", True
    if not final and VALIDATE_PREFIX.startswith(data):
        return None
    old = walk_queries(data, OLD_QUERIES)
    new = walk_queries(data, NEW_QUERIES)
    if old.bad and new.bad:
        return "old", False
    if old.bad:
        return ("new", False) if new.complete or final else None
    if new.bad:
        return ("old", False) if old.complete or final else None
    if old.complete and old.complete >= new.complete:
        return "old", False
    if final or len(data) >= MAX_UNDECIDED_BYTES:
        return ("old", False) if old.complete >= new.complete else ("new", False)
    return None


def _side(data: bytes) -> bool | None:
    """Does a direction open like a TCPStore client? None: cannot tell yet."""
    if data.startswith(VALIDATE_PREFIX):
        return True
    if VALIDATE_PREFIX.startswith(data):
        return None
    walks = (walk_queries(data, OLD_QUERIES), walk_queries(data, NEW_QUERIES))
    if any(w.convincing and not w.bad for w in walks):  # a whole TCPStore key (the value may follow)
        return True
    if all(w.bad for w in walks):
        return False
    return None if len(data) < MAX_UNDECIDED_BYTES else False


def detect(client: bytes, server: bytes) -> bool | str | None:
    """True when the client side opens like a TCPStore client ("swapped": the server side does)."""
    forward = _side(client) if client else None
    if forward:
        return True
    backward = _side(server) if server else None
    if backward:
        return SWAPPED
    if forward is False and (not server or backward is False):
        return False
    return None


# -- the session ---------------------------------------------------------------------------------


class _Query:
    __slots__ = ("data", "done", "key_count", "spec", "ts")

    def __init__(self, spec: QuerySpec, data: dict[str, Any], ts: float, key_count: int) -> None:
        self.spec = spec
        self.data = data
        self.ts = ts
        self.key_count = key_count
        self.done = False


class Session:
    """One TCPStore connection: queries from the client, replies from the server, paired in order."""

    def __init__(self, limits: Limits) -> None:
        self._max_key = limits.tcpstore_max_key_bytes
        self._max_value = limits.tcpstore_max_value_bytes
        self._max_keys = limits.tcpstore_max_keys
        self._keep = limits.tcpstore_value_keep_bytes
        self._numbering: str | None = None
        self._validated = False
        self._held = bytearray()
        self._held_server: list[bytes] = []
        self._readers: list[StreamReader | None] = [None, None]
        self._order: deque[_Query] = deque()  # every query not yet emitted, in query order
        self._awaiting: deque[_Query] = deque()  # the queries whose reply has not come yet
        self._replies_lost = False
        self._watching = False
        self._queries_seen = 0
        self._eof = [False, False]
        self._events: list = []
        self._ts = 0.0
        self._start_seen = True
        self._current: tuple[dict[str, Any], float] | None = None  # the query being read, and its time
        self._over_libuv: set[str] = set()  # "key", "value": over_libuv_limit already reported

    def picked_up_midstream(self) -> None:
        """The capture holds no handshake of this connection: whether it opened with VALIDATE is
        unknown (no `missing_validate`, no `validated` field)."""
        self._start_seen = False

    # -- interface ---------------------------------------------------------------------------

    def receive_data(self, direction: int, data: bytes, ts: float) -> list:
        self._ts = ts
        events: list = []
        self._events = events
        if not data:
            return events
        if self._numbering is None:
            if direction == TO_CLIENT:
                if sum(map(len, self._held_server)) < MAX_UNPAIRED_REPLY_BYTES:
                    self._held_server.append(bytes(data))
                return events
            self._held += data
            self._decide(final=False)
            return events
        self._feed(direction, data)
        return events

    def receive_gap(self, direction: int, length: int, ts: float) -> list:
        self._ts = ts
        events: list = []
        self._events = events
        reader = self._readers[direction]
        if self._numbering is None and direction == TO_SERVER:
            self._decide(final=True)
            reader = self._readers[direction]
        if reader is not None and not reader.finished:
            self._anomaly("stream_gap", f"{length} bytes missing from the capture; direction no longer parsed",
                          direction)
            if direction == TO_SERVER:  # the query being read, if any (a server gap leaves it whole)
                self._cut_query()
            self._lose(direction)
        return events

    def receive_eof(self, direction: int, ts: float) -> list:
        self._ts = ts
        events: list = []
        self._events = events
        if self._eof[direction]:
            return events
        self._eof[direction] = True
        if self._numbering is None and self._held:
            self._decide(final=True)
        reader = self._readers[direction]
        if reader is not None and not reader.finished:
            if reader.waiting and reader.buffered:
                self._anomaly("reply_without_query", f"{reader.buffered} reply bytes with no query waiting",
                              direction)
            elif not reader.idle and not reader.waiting:
                what = "query" if direction == TO_SERVER else "reply"
                self._anomaly(f"truncated_{what}", f"the connection ended inside a {what}", direction)
                if direction == TO_SERVER:
                    self._cut_query()
            reader.stop()
        if direction == TO_CLIENT or all(self._eof):
            self._lose_replies()
        self._flush()
        return events

    # -- plumbing ----------------------------------------------------------------------------

    def _decide(self, final: bool) -> None:
        held = bytes(self._held)
        decision = guess_numbering(held, final=final or len(held) >= MAX_UNDECIDED_BYTES)
        if decision is None:
            return
        self._numbering, validated = decision
        if self._numbering == "new" and not validated and not held.startswith(b"\x00") and self._start_seen:
            self._anomaly("missing_validate", "new-numbering queries without VALIDATE first (torch >= 2.2 "
                          "clients always validate)", TO_SERVER)
        self._held = bytearray()
        self._readers[TO_SERVER] = StreamReader(self._queries(NUMBERINGS[self._numbering]))
        self._readers[TO_CLIENT] = StreamReader(self._replies())
        self._feed(TO_SERVER, held)
        held_server, self._held_server = self._held_server, []
        for chunk in held_server:
            self._feed(TO_CLIENT, chunk)

    def _feed(self, direction: int, data: bytes) -> None:
        reader = self._readers[direction]
        if reader is None or reader.finished:
            return
        reader.feed(data)
        self._check(direction)
        if direction == TO_SERVER:
            server = self._readers[TO_CLIENT]
            if server is not None and server.waiting:
                server.resume()
                self._check(TO_CLIENT)
        else:
            if reader.waiting and reader.buffered > MAX_UNPAIRED_REPLY_BYTES:
                self._anomaly("reply_without_query", f"{reader.buffered} reply bytes with no query waiting",
                              TO_CLIENT)
                self._lose(TO_CLIENT)
        self._flush()

    def _check(self, direction: int) -> None:
        reader = self._readers[direction]
        if reader is not None and reader.error is not None:
            error, reader.error = reader.error, None
            self._anomaly(error.event, error.message, direction)
            if direction == TO_SERVER:
                self._cut_query()
            self._lose(direction)

    def _cut_query(self) -> None:
        """The query being read when the connection ended or the capture lost bytes: recorded
        with what was read of it (name, key, declared value size), `truncated: true`."""
        if self._current is None:
            return
        data, ts = self._current
        self._current = None
        data["truncated"] = True
        query = _Query(QuerySpec(data["query"], (), None), data, ts, 0)
        query.done = True
        self._order.append(query)
        self._flush()

    def _lose(self, direction: int) -> None:
        """Stop parsing a direction. Without queries, replies cannot be paired either."""
        for side in ((TO_SERVER, TO_CLIENT) if direction == TO_SERVER else (TO_CLIENT,)):
            reader = self._readers[side]
            if reader is not None and not reader.finished:
                reader.stop()
        self._lose_replies()
        self._flush()

    def _lose_replies(self) -> None:
        self._replies_lost = True
        while self._awaiting:
            query = self._awaiting.popleft()
            query.data["reply_missing"] = True
            query.done = True

    def _flush(self) -> None:
        order = self._order
        while order and order[0].done:
            query = order.popleft()
            self._events.append(Transaction(event_type=LAYER, data=query.data, ts=query.ts))

    def _anomaly(self, event: str, message: str, direction: int | None = None) -> None:
        self._events.append(SessionAnomaly(layer=LAYER, event=event, message=message, ts=self._ts,
                                           direction=direction))

    def _enqueue(self, query: _Query) -> None:
        if query.spec.reply is None or self._replies_lost:
            query.done = True
        else:
            if len(self._awaiting) >= MAX_PENDING_QUERIES:
                self._anomaly("too_many_pending_queries", f"more than {MAX_PENDING_QUERIES} queries without a "
                              "reply; replies no longer paired", TO_CLIENT)
                self._lose(TO_CLIENT)
                query.done = True
            else:
                self._awaiting.append(query)
        self._order.append(query)
        self._flush()

    # -- reading pieces (generators) ---------------------------------------------------------

    def _length(self, what: str, direction: int, begin: bool = False):
        length = _U64.unpack((yield Begin(8) if begin else 8))[0]
        is_key = what == "key"
        cap = self._max_key if is_key else self._max_value
        if length > cap:
            event = "key_too_long" if is_key else "value_too_large"
            raise ParseError(event, f"{what} length {length} (cap {cap})")
        libuv = LIBUV_MAX_KEY_BYTES if is_key else LIBUV_MAX_VALUE_BYTES
        if length > libuv and what not in self._over_libuv:  # once per connection (a MULTI_SET can hold thousands)
            self._over_libuv.add(what)
            self._anomaly(f"{what}_over_libuv_limit", f"{what} of {length} bytes: the libuv server refuses more "
                          f"than {libuv}, the legacy server takes it (skipped, not kept)", direction)
        return length

    def _string(self, what: str, direction: int, begin: bool = False, keep: int | None = None,
                size_to: tuple[dict[str, Any], str] | None = None):
        """(length, kept prefix) of a `u64 len` + bytes argument (`begin`: it starts a reply). `keep`:
        bytes kept (default: a key's, or the value keep size); `size_to` (record, field): where the
        length goes as soon as it is read, before the bytes."""
        length = yield from self._length(what, direction, begin)
        if size_to is not None:
            size_to[0][size_to[1]] = length
        if not length:
            return 0, b""
        if keep is None:
            keep = LIBUV_MAX_KEY_BYTES if what == "key" else self._keep
        prefix = yield Skip(length, keep)
        return length, prefix

    def _count(self):
        count = _U64.unpack((yield 8))[0]
        if count > self._max_keys:
            raise ParseError("too_many_keys", f"{count} keys (cap {self._max_keys})")
        return count

    # -- client side ---------------------------------------------------------------------------

    def _queries(self, table: dict[int, QuerySpec]):
        numbering = self._numbering
        while True:
            code = (yield BEGIN_1)[0]
            ts = self._ts
            spec = table.get(code)
            if spec is None:
                raise ParseError("unknown_query", f"query type {code} is not in the {numbering} numbering")
            data: dict[str, Any] = {"query": spec.name, "query_code": code, "numbering": numbering}
            if self._start_seen:
                data["validated"] = self._validated
            self._current = (data, ts)
            key_count = 0
            for arg in spec.args:
                if arg == "u32":
                    value = _U32.unpack((yield 4))[0]
                    if spec.name == "VALIDATE":
                        data["validate_magic"] = f"{value:08x}"
                        if value == VALIDATE_MAGIC:
                            if self._queries_seen == 0:  # the connection's first query, seen or not
                                self._start_seen = True
                            self._validated = self._validated or self._queries_seen == 0
                            data["validated"] = self._validated
                        else:
                            self._anomaly("validate_magic_mismatch", f"VALIDATE magic {value:#010x}", TO_SERVER)
                    else:
                        data["pid"] = value
                elif arg == "i64":
                    value = _I64.unpack((yield 8))[0]
                    data["world_size" if spec.name == "BARRIER" else "add_amount"] = value
                elif arg == "key":
                    _, raw = yield from self._string("key", TO_SERVER)
                    data.update(_key_fields(key_text(raw)))
                elif arg == "expected":  # sizes known before the bytes: a query cut short still says them
                    yield from self._string("value", TO_SERVER, keep=0, size_to=(data, "expected_size"))
                elif arg == "value":
                    size, prefix = yield from self._string("value", TO_SERVER, size_to=(data, "value_size"))
                    data.update(describe_value(prefix, size))
                else:  # keys, pairs
                    key_count = yield from self._count()
                    keys: list[str] = []
                    values: list[dict[str, Any]] = []
                    for _ in range(key_count):
                        _, raw = yield from self._string("key", TO_SERVER)
                        if len(keys) < RECORD_KEYS:
                            keys.append(key_text(raw))
                        if arg == "pairs":
                            size, prefix = yield from self._string("value", TO_SERVER)
                            values.append(describe_value(prefix, size))
                    if keys:
                        data.update(_key_fields(keys[0]))
                    data["keys"] = keys
                    data["key_count"] = key_count
                    if arg == "pairs":
                        data.update(_merge_values(values))
            self._queries_seen += 1
            self._current = None
            if spec.name == "WATCH_KEY":
                self._watching = True
            self._enqueue(_Query(spec, data, ts, key_count))

    # -- server side ---------------------------------------------------------------------------

    def _replies(self):
        awaiting = self._awaiting
        while True:
            while not awaiting and not self._watching:
                yield WAIT
            if self._watching:
                yield from self._watch_message()
                continue
            query = awaiting[0]
            shape = query.spec.reply
            reply: dict[str, Any] = {}
            if shape == "vec":
                size, prefix = yield from self._string("value", TO_CLIENT, begin=True)
                reply = describe_value(prefix, size)
            elif shape == "i64":
                reply = {"number": _I64.unpack((yield BEGIN_1) + (yield 7))[0]}
            elif shape == "echo":
                reply = {"pid": _U32.unpack((yield BEGIN_1) + (yield 3))[0]}
            elif shape == "values":
                described = []
                for index in range(query.key_count):
                    size, prefix = yield from self._string("value", TO_CLIENT, begin=index == 0)
                    described.append(describe_value(prefix, size))
                reply = _merge_values(described)
                reply["value_count"] = query.key_count
            elif shape == "pop":
                count = _I64.unpack((yield BEGIN_1) + (yield 7))[0]
                reply = {"number": count}
                if count > 0:
                    size, prefix = yield from self._string("value", TO_CLIENT)
                    reply.update(describe_value(prefix, size))
            elif shape == "keylist":
                count = _I64.unpack((yield BEGIN_1) + (yield 7))[0]
                if not 0 <= count <= self._max_keys:
                    raise ParseError("too_many_keys", f"LIST_KEYS reply with {count} keys (cap {self._max_keys})")
                keys = []
                for _ in range(count):
                    _, raw = yield from self._string("key", TO_CLIENT)
                    if len(keys) < RECORD_KEYS:
                        keys.append(key_text(raw))
                reply = {"key_count": count, "keys": keys}
            else:  # one status byte: check, wait, cancel, u8 (BARRIER)
                code = (yield BEGIN_1)[0]
                if shape == "wait" and code == 1 and len(awaiting) > 1 and awaiting[1].spec.name == "CANCEL_WAIT":
                    awaiting.popleft()
                    query.data["canceled"] = True
                    query.done = True
                    query = awaiting[0]
                    shape = "cancel"
                reply = {"code": code}
                status = (CHECK_STATUS if shape == "check" else WAIT_STATUS if shape in ("wait", "cancel")
                          else None)
                if status is not None and code in status:
                    reply["status"] = status[code]
            awaiting.popleft()
            query.data["reply"] = reply
            query.done = True

    def _watch_message(self):
        """Old numbering, a socket that sent WATCH_KEY: registrations and key-change notifications."""
        code = (yield BEGIN_1)[0]
        awaiting = self._awaiting
        if code == 3 and awaiting and awaiting[0].spec.name == "WATCH_KEY":
            query = awaiting.popleft()
            query.data["reply"] = {"code": code, "status": WATCH_EVENTS[code]}
            query.done = True
            return
        if code not in WATCH_EVENTS or code == 3:
            raise ParseError("unexpected_reply", f"watch socket message type {code}")
        ts = self._ts
        _, raw = yield from self._string("key", TO_CLIENT)
        yield from self._string("value", TO_CLIENT)
        size, prefix = yield from self._string("value", TO_CLIENT)
        data: dict[str, Any] = {"numbering": self._numbering, "watch_event": WATCH_EVENTS[code],
                                **_key_fields(key_text(raw)), **describe_value(prefix, size)}
        if self._start_seen:
            data["validated"] = self._validated
        notification = _Query(QuerySpec("WATCH_EVENT", (), None), data, ts, 0)
        notification.done = True
        self._order.append(notification)


def _declare() -> None:
    def value_fields(prefix: str, what: str) -> list[tuple[str, str, str]]:
        return [
            (f"{prefix}.value_size", "integer", f"Size of the {what} in bytes (several values: their total)."),
            (f"{prefix}.value_kind", "string", f"What the {what} looks like: empty, int, text, pickle, "
             "base64_pickle, nccl_id or binary (several values: the most telling)."),
            (f"{prefix}.value_text", "string", f"int / text {what}s: the first {RECORD_TEXT_CHARS} characters."),
            (f"{prefix}.nccl_id.root_addr", "string", f"{what.capitalize()} shaped like a 128-byte ncclUniqueId: "
             "the root's bootstrap address (ip:port) embedded in it."),
            (f"{prefix}.nccl_id.magic", "string", "ncclUniqueId bytes 0-7 in hex: the bootstrap magic the "
             "communicator's NCCL connections open with (nccl.magic)."),
            (f"{prefix}.nccl_id.layout", "string", "ncclUniqueId layout: <=2.15, 2.16-2.22 (bytes 40-127 not "
             "zeroed), 2.23+ (zeroed) or 2.29+ (nRanks set)."),
            (f"{prefix}.nccl_id.nranks", "integer", "ncclUniqueId 2.29+: the nRanks field (grow)."),
            (f"{prefix}.pickle_globals", "list[string]", f"Pickle or base64 pickle {what}s: the module.name "
             "globals it imports, listed from its opcodes (never unpickled), at most 32."),
            (f"{prefix}.pickle_dangerous", "list[string]", "Those pickle globals that run code or reach the "
             "system when unpickled (os, subprocess, builtins.eval ...), over every global the walk met (at "
             "most 32 listed)."),
            (f"{prefix}.pickle_scan_complete", "boolean", f"The pickle's opcodes were walked to its STOP. false: "
             f"the {what} is longer than the {VALUE_KEEP_BYTES // 1024} KiB kept, or its opcodes stop making "
             "sense: globals past that point are unknown (several values: false if any)."),
        ]

    fields.declare(LAYER, [
        ("tcpstore.query", "string", "Query name: VALIDATE, SET, COMPARE_SET, GET, ADD, CHECK, WAIT, GETNUMKEYS, "
         "WATCH_KEY (old), DELETE_KEY, APPEND, MULTI_GET, MULTI_SET, CANCEL_WAIT, PING, QUEUE_PUSH, QUEUE_POP, "
         "QUEUE_LEN, LIST_KEYS, BARRIER."),
        ("tcpstore.query_code", "integer", "The query type byte as sent."),
        ("tcpstore.numbering", "string", "new (torch >= 2.2, VALIDATE = 0) or old (0 = SET)."),
        ("tcpstore.validated", "boolean", "The connection's first query was VALIDATE with magic 0x3C85F7CE "
         "(absent when the capture holds no handshake of the connection: its first query is unknown)."),
        ("tcpstore.validate_magic", "string", "VALIDATE: the u32 magic sent, hex (3c85f7ce when right)."),
        ("tcpstore.pid", "integer", "PING: the client's process id."),
        ("tcpstore.key", "string", f"The key as sent, \"/\" prefix included (multi-key queries: the first), "
         f"at most {RECORD_KEY_CHARS} characters."),
        ("tcpstore.key_unprefixed", "string", "The key without TCPStore's leading \"/\" (the key the "
         "application used)."),
        ("tcpstore.keys", "list[string]", f"CHECK, WAIT, MULTI_GET, MULTI_SET: the keys (first {RECORD_KEYS})."),
        ("tcpstore.key_count", "integer", "CHECK, WAIT, MULTI_GET, MULTI_SET: number of keys."),
        ("tcpstore.expected_size", "integer", "COMPARE_SET: size of the expected value."),
        ("tcpstore.add_amount", "integer", "ADD: the i64 added."),
        ("tcpstore.world_size", "integer", "BARRIER: the i64 count of participants."),
        *value_fields("tcpstore", "value written"),
        ("tcpstore.canceled", "boolean", "WAIT: the wait timed out and was cancelled (CANCEL_WAIT) before any "
         "reply."),
        ("tcpstore.truncated", "boolean", "This query was not read to its end (the connection ended, the capture "
         "lost bytes, or a length past the parsing caps): the fields read before (query, key, declared "
         "value_size) are filled, the rest is unknown."),
        ("tcpstore.reply_missing", "boolean", "A reply was expected but the connection ended (or its reply "
         "direction was lost) first."),
        ("tcpstore.reply.number", "integer", "ADD, GETNUMKEYS, DELETE_KEY, QUEUE_LEN: the i64 reply; "
         "QUEUE_POP: values popped (0 or 1)."),
        ("tcpstore.reply.code", "integer", "CHECK, WAIT, CANCEL_WAIT, BARRIER, WATCH_KEY: the status byte."),
        ("tcpstore.reply.status", "string", "Name of the status byte: READY / NOT_READY (CHECK), STOP_WAITING / "
         "WAIT_CANCELED (WAIT, CANCEL_WAIT), KEY_CALLBACK_REGISTERED (WATCH_KEY)."),
        ("tcpstore.reply.pid", "integer", "PING: the pid echoed."),
        ("tcpstore.reply.keys", "list[string]", f"LIST_KEYS: the keys (first {RECORD_KEYS})."),
        ("tcpstore.reply.key_count", "integer", "LIST_KEYS: number of keys."),
        ("tcpstore.reply.value_count", "integer", "MULTI_GET: number of values returned."),
        *value_fields("tcpstore.reply", "value returned"),
        ("tcpstore.watch_event", "string", "Old numbering, watch sockets: KEY_UPDATED, KEY_CREATED, KEY_DELETED or "
         "KEY_APPENDED notification (key and new value described)."),
    ])


_declare()
