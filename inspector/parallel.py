"""Offline analysis across processes: `inspector analyze --workers N`.

Flows are sharded: every packet of a flow, and all per-flow state (reassembly, sessions, policy
checks), lives in one worker. Worker 0 reads every capture once and feeds each other worker,
through its own pipe, the frames of its flows (FrameRouting, route_capture; a pcap's record loop
hands each frame over without a generator step, CaptureReader.routing), and analyzes its own
share in between. A flow is placed at its first frame (FlowPlacement, by the symmetric
:func:`flow_key` of its addresses and ports, read in place by :func:`frame_flow_key`; later
frames find their owner by one direction's raw address and port bytes, `_DIRECTION`): with the
next worker whose feed holds less than LOAD_BACKLOG_BYTES, else with worker 0 (Feeds.pick), so
the reading worker, which also walks every frame, takes what the others cannot keep up with and
no worker sits idle while another has a backlog; `placement="hash"` places by key alone (the
same split every run). Frames whose flow cannot be told from the raw bytes (fragments, IPv6
extension headers, ICMP and other transports, short or odd headers) go to every worker, through
a second decoder there, with the owner of the packet they make (worker 0 decodes them once more
to place it), and that owner keeps the packet; worker 0 alone counts and reports what that
decoder finds. Of the other workers' frames a worker is told only the time of those at which
its flow table looks for idle flows (every frame's time counts in every flow table, so where it
looks follows from the frame times alone and is worked out once, by the reader), so flows idle
out and linger-close at the same frames as in one process.

Workers run the rules, except that a rate rule cannot decide alone: its window may hold events
of flows in other workers. A worker therefore lets every rate-rule match through as a candidate
carrying its window key (the rule and the EVE line of the record it is about: most candidates
are dropped, so the alert is built and encoded by the parent, for those it keeps), and the
parent merges the workers' record streams back into the order one process writes them in, and
runs the rate windows there. The order key of a record is
(file, phase, frame, stage, sub-order, sequence):

    phase 0   the frames: at frame F, stage 0 is the flows that F's time expires (linger-closed
              ones by the frame that closed them, then idle ones by their last frame), stage 1
              the records F's packet makes, stage 2 the decode anomalies drained after F
              (every 256 frames, by the frame they were found in)
    phase 1   decode anomalies at the end of the capture (unfinished fragments)
    phase 2   the flows still open at the end, by their last frame
    phase 3   the capture's damage, if any

So the merged stream, and every rate verdict, equal a single process's; the EVE file holds the
same records in the same order. The rule engine's counters (the `stats` record's `detect`) are
merged the same way: matches and suppressions from the workers (each record is evaluated in one
worker), rate-window counters from the parent, which decides them. Before a worker waits (for
frames, or, the reading worker, for room in a feed) it sends what it has and a watermark (the
key no later record of its will come before), so the merge can go on with the other workers'
records: the reader may be waiting for them to make room in their pipes, and the waiting
worker's next record for the reader.

Several capture files (a rotated capture set) are split by file instead when that balances
(:func:`plan_files`): each file is its own run in one process too (flows do not continue across
files), so a worker that owns a whole file reads nothing twice and its records are already in the
single-process order. Each worker spools its records file by file to a temporary directory and
says when a file is done; the parent writes the files' records in file order as they complete
(rate windows still decided there), while the workers go on with their next files.

Where sharded runs and one process can differ: a flow table or rate table at its cap (each
flow-sharding worker has the whole cap for its share, so sharded runs evict later), and
`--baseline` anomaly detection, whose state spans flows (it runs in one process), and a frame
whose decoding raises (a bug the run contains and reports): its time is not counted by the flow
table of the worker that decoded it, as in one process, but is by the others'. Frames and
records cross processes pickled in batches; a worker's pipe holds at most `PIPE_BYTES` of frames
and the reading worker queues at most its share of `FEED_QUEUE_BYTES` more (FeedQueue: a message
goes straight into a pipe with room, and what a full pipe does not take a thread per worker
writes as it drains, so one worker's full pipe does not stop the others' frames), the parent
reads a flow-sharding worker's batches as they come and holds at most
`_Inbox.MAX_QUEUED_BATCHES` of them, so memory stays flat; a file's spool waits on disk only
until the files before it are written.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import multiprocessing
import os
import pickle
import re
import select
import signal
import struct
import tempfile
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, NamedTuple

try:
    import fcntl
    import termios
except ImportError:  # not on Windows
    fcntl = None  # type: ignore[assignment]
    termios = None  # type: ignore[assignment]

from inspector import jsonio
from inspector.analyze import Analyzer, FileResult, RunStats, prepare_first_use, record_meta
from inspector.capture.decode import (
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    PacketDecoder,
)
from inspector.capture.flows import EXPIRY_CHECK_INTERVAL, Flow, FlowTable
from inspector.capture.packet import IPPROTO_TCP, IPPROTO_UDP, Frame
from inspector.capture.reader import CaptureFormatError, open_capture
from inspector.engine import Engine
from inspector.limits import DEFAULT_LIMITS, Limits
from inspector.rules.rate import MemoryRateStore, RateResult
from inspector.sinks.eve import encode_record

#: Records per message from a worker to the parent.
BATCH_RECORDS = 512
#: Frames the reading worker of a flow-sharded run reads between two messages to each worker.
FEED_FRAMES = 1024
#: Frames after which a worker tells the parent how far it has come (its watermark), whatever
#: records it has: otherwise a worker whose flows make few records holds the merge, and so the
#: other workers' records, back until it has a batch of them, and they wait on full pipes.
WATERMARK_FRAMES = 8192
#: Bytes of messages the reading worker holds for the others beyond what their pipes hold,
#: split evenly between them (all for worker 1 with two workers, 16 MiB each with three): the
#: flows of a stretch of capture may all be one worker's, and reading on past them (instead of
#: waiting for that worker to make room) keeps the others, and the reader's own share, going.
#: A worker's queue always takes one message.
FEED_QUEUE_BYTES = 32 << 20
#: Seconds the parent waits for a worker's own failure once another found it gone (the reading
#: worker, by its feed; a fed worker, by the reader's failed write).
FAILURE_WAIT = 10.0
#: Splitting by file is chosen when no worker gets more than this times an even share of the bytes.
FILE_BALANCE = 1.25
SHARD_MODES = ("auto", "flows", "files")
#: How the reading worker places new flows: "load" with another worker whose feed holds less than
#: LOAD_BACKLOG_BYTES (in turn), else with itself; "hash" by flow key alone (the same every run).
PLACEMENTS = ("load", "hash")
#: Frames waiting for a worker (in its pipe and its feed queue) below which it takes new flows:
#: enough to keep it busy while the reading worker analyzes a batch of its own.
LOAD_BACKLOG_BYTES = 1 << 20
UNKNOWN = -1

_U16 = struct.Struct("!H").unpack_from
_U32_LE = struct.Struct("<I").unpack_from
_U32_BE = struct.Struct("!I").unpack_from
_I32 = struct.Struct("i").unpack_from
#: multiprocessing.Connection's framing of a message (`recv_bytes` reads it): its size, then it.
_MESSAGE_SIZE = struct.Struct("!i").pack
_MAX_MESSAGE_BYTES = 0x7FFFFFFF  # larger ones get another header there; a feed batch is far smaller
_IPV4 = struct.Struct("!BxHxxHxB2xII").unpack_from  # version/ihl, total length, fragment, proto, src, dst
_IPV6 = struct.Struct("!6xB1xQQQQ").unpack_from  # next header, src (2 halves), dst (2 halves)
_PORTS = struct.Struct("!HH").unpack_from
_TCP_OFFSET = struct.Struct("!12xB").unpack_from
_VLAN_ETHERTYPES = frozenset((0x8100, 0x88A8, 0x9100))
_NULL_FAMILIES = frozenset((2, 24, 28, 30))
# Link types whose network layer starts at a fixed offset (or after a 4-byte family word).
_FIXED_IP_OFFSET = {LINKTYPE_RAW: 0, LINKTYPE_IPV4: 0, LINKTYPE_IPV6: 0, LINKTYPE_LINUX_SLL: 16,
                    LINKTYPE_LINUX_SLL2: 20, LINKTYPE_NULL: 4, LINKTYPE_LOOP: 4}
_SLL_PROTOCOL = {LINKTYPE_LINUX_SLL: 14, LINKTYPE_LINUX_SLL2: 0}


def _direction_pattern(ip_offset: int, protocol_at: int | None) -> Callable[[bytes], re.Match[bytes] | None]:
    """A matcher of the frames of a link type whose network layer starts at `ip_offset` (its
    protocol, when the link layer names one, a 16-bit ethertype at `protocol_at`) and whose flow
    key :func:`frame_flow_key` reads from the addresses and ports at fixed offsets: a whole IPv4
    header of 20 bytes that is no fragment, or an IPv6 header with TCP or UDP next, then a whole
    TCP or UDP header. Group 1 (IPv4) or 2 (IPv6) is one direction's addresses and ports as the
    frame holds them, which decide the flow key. The conditions are frame_flow_key's, byte for
    byte (tests check the two agree), so a frame the pattern takes is one frame_flow_key gives a
    key, and the key is a function of the group."""
    def prefix(ethertype: int) -> bytes:
        if protocol_at is None:
            return rb".{%d}" % ip_offset
        return rb".{%d}%s.{%d}" % (protocol_at, re.escape(ethertype.to_bytes(2, "big")), ip_offset - protocol_at - 2)

    ipv4_prefix, ipv6_prefix = prefix(ETHERTYPE_IPV4), prefix(ETHERTYPE_IPV6)
    tcp_or_udp = rb"(?:\x06(?=.{%d}[\x50-\xff].{7})|\x11(?=.{%d}))"
    ipv4 = (rb"E.(?:[\x01-\xff].|\x00[\x1c-\xff])..[\x00\x40\x80\xc0]\x00." + tcp_or_udp % (22, 14 + 4)
            + rb"..(.{12})")
    ipv6 = rb"[\x60-\x6f].{5}" + tcp_or_udp % (1 + 32 + 12, 1 + 32 + 8) + rb".(.{36})"
    return re.compile(rb"(?s)" + ipv4_prefix + ipv4 + rb"|" + ipv6_prefix + ipv6).match


def _no_direction(data: bytes) -> None:
    return None


#: Per link type, the matcher of frames whose flow key is a function of one direction's raw
#: addresses and ports (the router's memo of owners by those bytes; other link types: none).
_DIRECTION = {
    LINKTYPE_ETHERNET: _direction_pattern(14, 12),
    **{linktype: _direction_pattern(offset, _SLL_PROTOCOL.get(linktype))
       for linktype, offset in _FIXED_IP_OFFSET.items() if linktype not in (LINKTYPE_NULL, LINKTYPE_LOOP)},
}


def flow_key(src: bytes, dst: bytes, sport: int, dport: int) -> int:
    """A flow's key, the same for both directions of it: the XOR of the two addresses and of the
    two ports, mixed by the interpreter's tuple hash (xxHash's rounds over the ints; ints and
    tuples of them hash the same in every process of a run, whatever PYTHONHASHSEED says, and a
    tuple's hash is never -1)."""
    if len(src) == 4:
        addresses = int.from_bytes(src, "big") ^ int.from_bytes(dst, "big")
    else:
        addresses = (int.from_bytes(src[:8], "big") ^ int.from_bytes(src[8:16], "big")
                     ^ int.from_bytes(dst[:8], "big") ^ int.from_bytes(dst[8:16], "big"))
    return hash((addresses, sport ^ dport))


def frame_flow_key(buf: bytes, start: int, stop: int, linktype: int) -> int | None:
    """The :func:`flow_key` of the frame `buf[start:stop]`, read in place; None when only a full
    decode can tell (anything but a plain, whole IPv4 or IPv6 TCP/UDP header). The router calls
    it for a direction it has not met, or a frame `_DIRECTION` does not take."""
    if linktype == LINKTYPE_ETHERNET:
        if stop - start < 34:
            return None
        ethertype = _U16(buf, start + 12)[0]
        off = start + 14
        while ethertype in _VLAN_ETHERTYPES and stop - off >= 24:
            ethertype = _U16(buf, off + 2)[0]
            off += 4
    else:
        fixed = _FIXED_IP_OFFSET.get(linktype)
        if fixed is None or stop - start < fixed + 20:
            return None
        off = start + fixed
        version = buf[off] >> 4
        ethertype = ETHERTYPE_IPV4 if version == 4 else ETHERTYPE_IPV6 if version == 6 else 0
        if linktype in _SLL_PROTOCOL and _U16(buf, start + _SLL_PROTOCOL[linktype])[0] != ethertype:
            return None
        if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP) and _U32_LE(buf, start)[0] not in _NULL_FAMILIES \
                and _U32_BE(buf, start)[0] not in _NULL_FAMILIES:
            return None
    if ethertype == ETHERTYPE_IPV4:
        if stop - off < 20:
            return None
        vihl, total, frag, proto, src, dst = _IPV4(buf, off)
        ihl = (vihl & 15) << 2
        if vihl >> 4 != 4 or ihl < 20 or frag & 0x3FFF or total < ihl + 8:
            return None
        addresses = src ^ dst
        transport = off + ihl
    elif ethertype == ETHERTYPE_IPV6:
        if stop - off < 40 or buf[off] >> 4 != 6:
            return None
        proto, src_high, src_low, dst_high, dst_low = _IPV6(buf, off)
        addresses = src_high ^ src_low ^ dst_high ^ dst_low
        transport = off + 40
    else:
        return None
    if proto == IPPROTO_TCP:
        if stop - transport < 20 or _TCP_OFFSET(buf, transport)[0] >> 4 < 5:
            return None
    elif proto != IPPROTO_UDP or stop - transport < 8:
        return None
    sport, dport = _PORTS(buf, transport)
    return hash((addresses, sport ^ dport))


class FlowPlacement:
    """Which worker owns each flow of a flow-sharded run, as the reading worker places them: a
    flow's first frame gives it to `pick(key)`'s worker and every later frame of it goes there.

    The owners are remembered by capture time in two generations: a flow seen at time T is
    remembered until at least T + `memory`. `memory` covers the flow table's idle timeout (and
    the closed-flow linger) plus the interval between its looks for idle flows, so a flow is only
    forgotten once the worker that had it has ended it: a later frame of the same addresses and
    ports is a new flow in one process too, and may go to any worker. More than `cap` new flows
    within a generation start the next one early (`early`), which could split a flow still open
    in a worker between two; `cap` is the flows the workers' tables hold together
    (`Limits.max_flows` each), past which sharded runs already end flows differently from one
    process (each table evicts by itself).

    Frames whose flow only a full decode tells (fragments, IPv6 extension headers, ...) are
    decoded here too (:meth:`decoded_owner`), by a decoder that sees exactly the frames the
    workers' own second decoders see, so it names the owner of the packet they will make."""

    def __init__(self, pick: Callable[[int], int], limits: Limits, workers: int) -> None:
        self._pick = pick
        self.memory = max(limits.flow_idle_timeout, limits.tcp_closed_linger) + 2 * EXPIRY_CHECK_INTERVAL
        self.cap = max(1, limits.max_flows * workers)
        #: The owners of the flows seen in this generation, by flow key.
        self.current: dict[int, int] = {}
        #: The same owners by one direction's raw addresses and ports (`_DIRECTION`), for this
        #: generation: a memo that spares most frames the unpack and the hash (looked up per frame).
        self.directions: dict[bytes, int] = {}
        self._previous: dict[int, int] = {}
        self._next_generation = float("-inf")
        self._decoder = PacketDecoder(limits)
        self.early = 0  # generations started early, at `cap` flows

    def place(self, key: int) -> int:
        """The owner of a flow not in the current generation: the previous one's, or a new one."""
        owner = self._previous.pop(key, None)
        if owner is None:
            owner = self._pick(key)
        current = self.current
        if len(current) >= self.cap:
            self.early += 1
            self._new_generation()
        current[key] = owner
        return owner

    def owner(self, key: int) -> int:
        """The owner of flow `key`: the one it has in this generation, else :meth:`place`'s."""
        owner = self.current.get(key)
        return self.place(key) if owner is None else owner

    def place_direction(self, direction: bytes, key: int) -> int:
        """The owner of flow `key`, remembered for `direction` (its raw addresses and ports one
        way). The memo holds at most two directions per flow the generation may hold: addresses
        and ports crafted to share one key would otherwise grow it without a new flow; past that
        it starts again empty (a memo: what it forgets is looked up by key)."""
        owner = self.owner(key)
        directions = self.directions
        if len(directions) >= 2 * self.cap:
            directions.clear()
        directions[direction] = owner
        return owner

    def clock(self, ts: float) -> None:
        """Capture time has reached `ts` (told once per expiry interval)."""
        if ts >= self._next_generation:
            self._new_generation()
            self._next_generation = ts + self.memory

    def _new_generation(self) -> None:
        self._previous = self.current.copy()
        self.current.clear()  # the same dicts: a router holds their `get`
        self.directions.clear()

    def decoded_owner(self, frame: tuple) -> int:
        """The owner of the packet a frame every worker decodes makes; UNKNOWN when it makes none
        (a fragment before the last, a frame that is not IP, one the decoder rejects)."""
        decoder = self._decoder
        try:
            packet = decoder.decode(tuple.__new__(Frame, frame))
        except Exception:  # the workers' decoders raise too; worker 0 reports it
            return UNKNOWN
        finally:
            decoder.drain_anomalies()  # the workers report them
        if packet is None:
            return UNKNOWN
        return self.owner(flow_key(packet.src, packet.dst, packet.sport, packet.dport))


def hash_placement(workers: int, limits: Limits = DEFAULT_LIMITS) -> FlowPlacement:
    """Flows placed by their key alone (`key % workers`): the same split in every run."""
    return FlowPlacement(lambda key: key % workers, limits, workers)


class CandidateAlert(NamedTuple):
    """A rate rule's candidate alert as a worker sends it: the parent, which decides the window,
    builds the alert (`Engine.alert_record`) from the EVE line of the record it is about, only
    when it keeps it. The line is the string object already in the batch for that record, so
    pickling it again costs a reference."""

    sid: int
    blocked: bool
    record_line: str


class DeferredRateStore:
    """A worker's rate store: every rate-rule match becomes a candidate alert; the window key,
    time, length and count go to the parent, which decides in the merged order."""

    evicted = 0

    def __init__(self) -> None:
        self.pending: deque[tuple[Any, float, float, int]] = deque()

    def hit(self, key: Any, ts: float, window: float, count: int) -> RateResult:
        self.pending.append((key, ts, window, count))
        return RateResult.ALERT

    def __len__(self) -> int:
        return 0


def feed_capture(path: Path, workers: int, send: Callable[[int, tuple], None],
                 placement: FlowPlacement | None = None) -> None:
    """Read one capture of a flow-sharded run, once, and tell each worker (`send(index, message)`)
    what it needs of it, in frame order, its flows placed by `placement` (default: by flow key):

        ("open", format, compressed), or ("unreadable", errno, why) and nothing more (errno: the
        OSError's, -1 for a file that is not a capture)
        ("frames", bytes read, secrets blocks new since the last message, entries, last frame number)
                                                                        every FEED_FRAMES frames
        ("end", frames, wire bytes, last time, damage or None, frames the capture says were dropped)

    A worker's entries: its own frames (Frame's five fields), the frames whose flow only a full
    decode can tell ((frame, owner of the packet it makes or UNKNOWN, None): every worker decodes
    them, for the fragments they may complete, and the owner keeps the packet) and, of the other
    workers' frames, (time, number) of those its flow table checks for idle flows at and of
    every 256th (the workers drain decode anomalies there). Every frame's time counts in every
    worker's flow table (a packet, or `FlowTable.tick`), so where the table checks depends on
    frame times alone and is worked out here, once, as the table does it. The reading worker of
    a run (worker 0) does the same with `route_capture`, keeping its own entries."""
    try:
        reader = open_capture(path)
    except (CaptureFormatError, OSError) as exc:
        _send_all(send, workers, _unreadable_message(exc))
        return
    with reader:
        _send_all(send, workers, ("open", reader.format, reader.compressed))
        route_capture(reader, FrameRouting(workers, reader, send, placement or hash_placement(workers)))
    _send_all(send, workers, _end_message(reader))


def route_capture(reader: Any, routing: FrameRouting) -> None:
    """Every frame of an open capture through `routing`, the last batch sent at the end."""
    reader.routing = routing
    for frame in reader:  # a pcap's record loop routes its frames itself and yields none
        routing.route(frame[:])
    routing.send_batches(reader.packets)


def _unreadable_message(exc: CaptureFormatError | OSError) -> tuple:
    """What the workers are told of a capture that did not open (FedCapture raises it again)."""
    if isinstance(exc, CaptureFormatError):
        return ("unreadable", -1, str(exc))
    return ("unreadable", exc.errno, exc.strerror or str(exc))


def _end_message(reader: Any) -> tuple:
    return ("end", reader.packets, reader.wire_bytes, reader.last_ts, reader.error, reader.dropped)


class FrameRouting:
    """The frames of one capture put in each worker's entries as :func:`feed_capture` says, a batch
    sent to every worker each FEED_FRAMES frames (CaptureReader.routing), worker 0's last."""

    def __init__(self, workers: int, reader: Any, send: Callable[[int, tuple], None],
                 placement: FlowPlacement) -> None:
        self.workers = workers
        self._reader = reader
        self._send = send
        self._placement = placement
        self._direction_owner = placement.directions.get
        self._linktype = -1
        self._direction: Callable[[bytes], re.Match[bytes] | None] = _no_direction
        self._secrets = 0  # the reader's secrets blocks sent so far
        self._now = self._next_check = float("-inf")
        self._order = [*range(1, workers), 0]  # worker 0 reads: it takes its own batch last
        self._new_batches()

    def _new_batches(self) -> None:
        self._entries: list[list[tuple]] = [[] for _ in range(self.workers)]
        self._appends = [batch.append for batch in self._entries]
        self._others = [[append for i, append in enumerate(self._appends) if i != owner]
                        for owner in range(self.workers)]

    def route(self, frame: tuple) -> None:
        """One frame (Frame's fields) to the worker owning its flow (to every worker when only a
        decode can tell), and its time to the others where their flow tables look for idle flows."""
        ts = frame[0]
        number = frame[4]
        clock = not number & 0xFF
        if ts > self._now:  # FlowTable.packet and .tick: when the table looks for idle flows
            self._now = ts
            if ts >= self._next_check:
                self._next_check = ts + EXPIRY_CHECK_INTERVAL
                clock = True
                self._placement.clock(ts)
        data = frame[2]
        if frame[1] != self._linktype:
            self._linktype = frame[1]
            self._direction = _DIRECTION.get(frame[1], _no_direction)
        match = self._direction(data)
        if match is not None:  # the common frame: its owner by its raw addresses and ports
            direction = match[1] or match[2]
            owner = self._direction_owner(direction)
            if owner is None:
                key = frame_flow_key(data, 0, len(data), frame[1])  # never None for a matched frame
                owner = self._placement.place_direction(direction, key)  # type: ignore[arg-type]
        else:
            key = frame_flow_key(data, 0, len(data), frame[1])
            owner = None if key is None else self._placement.owner(key)
        if owner is not None:
            self._appends[owner](frame)
            if clock:
                mark = (ts, number)
                for append in self._others[owner]:
                    append(mark)
        else:
            shared = (frame, self._placement.decoded_owner(frame), None)
            for append in self._appends:
                append(shared)
        if not number % FEED_FRAMES:
            self.send_batches(number)

    def send_batches(self, last: int) -> None:
        """Each worker its entries so far, which cover the frames up to number `last`."""
        reader = self._reader
        secrets = reader.secrets[self._secrets:]
        self._secrets = len(reader.secrets)
        entries = self._entries
        self._new_batches()
        for index in self._order:
            self._send(index, ("frames", reader.bytes_read, secrets, entries[index], last))


def _send_all(send: Callable[[int, tuple], None], workers: int, message: tuple) -> None:
    for index in range(workers):
        send(index, message)


class FedCapture:
    """One capture as a flow-sharded worker sees it, told by :func:`feed_capture` through
    `receive()` (its next message): CaptureReader's attributes (the counts once the capture is
    done) and :meth:`batches`, the worker's entries. An unreadable capture raises as
    `open_capture` would have."""

    def __init__(self, receive: Callable[[], tuple]) -> None:
        message = receive()
        if message[0] == "unreadable":
            _, errno, why = message
            raise CaptureFormatError(why) if errno == -1 else OSError(errno, why)
        _, self.format, self.compressed = message
        self._receive = receive
        self.secrets: list[Any] = []  # grows as the batches come, as a reader's does
        self.bytes_read = 0
        self.packets = 0
        self.wire_bytes = 0
        self.last_ts = 0.0
        self.error: Any = None
        self.dropped = 0

    def batches(self) -> Iterator[tuple[list[tuple], int]]:
        """(entries, number of the last frame they cover) until the capture ends."""
        while True:
            message = self._receive()
            if message[0] == "end":
                _, self.packets, self.wire_bytes, self.last_ts, self.error, self.dropped = message
                return
            _, self.bytes_read, secrets, entries, last = message
            self.secrets.extend(secrets)
            yield entries, last

    def close(self) -> None:
        pass


class ShardAnalyzer(Analyzer):
    """One worker: the flows of its shard, records tagged with their place in the single-process order."""

    def __init__(self, index: int, workers: int, send: Callable[[list], None], rate_sids: frozenset[int],
                 rate_store: DeferredRateStore | None, *, encode: bool = True,
                 feed: Callable[[], tuple] | None = None, feeds: Feeds | None = None,
                 placement: str = "load", **kwargs: Any) -> None:
        """With `workers` > 1, worker 0 reads the captures and feeds the others (`feeds`), placing
        new flows by `placement` ("load": with a worker whose feed is short, else itself;
        "hash": by flow key); the others take `feed()`, the reading worker's next message."""
        if workers > 1 and (feed is None) == (feeds is None):
            raise ValueError("a flow-sharded worker reads the captures (feeds) or is fed them (feed)")
        if feeds is not None and index != 0:
            raise ValueError("worker 0 reads the captures of a flow-sharded run")
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, not {placement!r}")
        super().__init__(self._collect, **kwargs)
        self._feed = feed
        self._feeds = feeds
        self._placement = placement
        self._encode = encode  # send EVE lines (made here, in parallel) rather than dicts
        self._undecided_flows: set[Any] = set()  # flows with rate-rule candidate alerts
        self.index = index
        self.workers = workers
        self._send = send
        self._rate_sids = rate_sids
        self._rate_store = rate_store
        self._record_line: str | None = None  # the EVE line of the last record that was not an alert
        self._batch: list[tuple[tuple, Any, tuple, Any]] = []
        self._seq = 0
        self._file = 0
        self._phase = 0
        self._frame = 0
        self._stage = 1
        self._sub: tuple[int, int] = (0, 0)
        #: No record this worker sends from now on comes before this key: what the parent may
        #: write of the other workers' records while this one waits for frames.
        self._watermark: tuple = (0, 0, 0, 0)
        self._told = 0  # the frame up to which the parent was last told this worker's watermark

    # -- output --------------------------------------------------------------------------------

    def _collect(self, record: dict[str, Any]) -> None:
        hit = None
        meta = record_meta(record)
        kind = meta[0]
        payload: Any = record
        if kind == "alert" and meta[1] in self._rate_sids and self._rate_store is not None:
            hit = self._rate_store.pending.popleft()
            self._undecided_flows.add(meta[3])
            if self._record_line is not None:  # most candidates are dropped: not encoded here
                payload = CandidateAlert(meta[1], record["alert"]["action"] == "blocked", self._record_line)
            elif self._encode:
                payload = encode_record(record)
        elif kind == "flow" and meta[1] in self._undecided_flows:
            self._undecided_flows.discard(meta[1])  # its `alerted` is decided by the parent
        elif self._encode:
            payload = encode_record(record)
        if kind != "alert":  # the record the next alerts are about (they follow it at once)
            self._record_line = payload if payload.__class__ is str else None
        self._seq += 1
        self._batch.append(((self._file, self._phase, self._frame, self._stage, self._sub, self._seq),
                            payload, meta, hit))
        if len(self._batch) >= BATCH_RECORDS:
            self.flush()

    def flush(self) -> None:
        if self._batch:
            self._send(self._batch)
            self._batch = []

    def waiting(self) -> None:
        """About to wait (for frames, or for room in a feed): the records so far go to the parent,
        with the watermark (an item without payload), so the merge need not wait for this
        worker's next record to write the others' (the reading worker may be waiting for them to
        read on)."""
        self._batch.append((self._watermark, None, None, None))
        self.flush()

    # -- files ---------------------------------------------------------------------------------

    def analyze_files(self, files: list[Path], numbers: Sequence[int] | None = None,
                      file_done: Callable[[int], None] | None = None,
                      progress: Callable[[int, int], None] | None = None) -> None:
        """Analyze `files`, whose places in the run are `numbers` (default 0, 1, ...); `file_done`
        is told each number once its records have all been sent; `progress` (file number, bytes
        of it read) as the reading goes."""
        for self._file, path in zip(numbers if numbers is not None else range(len(files)), files, strict=True):
            self._phase, self._frame, self._stage, self._sub = 0, 0, 1, (0, 0)
            self._watermark = (self._file, 0, 0, 0)
            self._told = 0
            number = self._file
            self.analyze_file(path, None if progress is None else lambda done, n=number: progress(n, done))
            self.flush()
            if file_done is not None:
                file_done(self._file)

    def _open_capture(self, path: str | Path) -> Any:
        if self._feeds is not None:  # the reading worker: the others are told what it opened
            try:
                reader = super()._open_capture(path)
            except (CaptureFormatError, OSError) as exc:
                self._tell_others(_unreadable_message(exc))
                raise
            self._tell_others(("open", reader.format, reader.compressed))
            return reader
        if self._feed is None:  # a whole file (split by file)
            return super()._open_capture(path)
        return FedCapture(self._feed)

    def _tell_others(self, message: tuple) -> None:
        assert self._feeds is not None
        for index in range(1, self.workers):
            self._feeds.send(index, message)

    def _run(self, reader: Any, decoder: PacketDecoder, table: FlowTable,
             progress: Callable[[int], None] | None) -> tuple[int, int, float]:
        if self.workers == 1:  # a whole file (split by file): nothing to skip, records come in order
            return super()._run(reader, decoder, table, progress)
        shared = PacketDecoder(self._limits)  # frames every worker decodes; worker 0 reports them
        self._shared = shared
        table.on_flow_ending = self._flow_ending
        feeds = self._feeds
        if feeds is None:
            for entries, last in reader.batches():
                self._take(entries, last, decoder, shared, table)
                if progress is not None:
                    progress(reader.bytes_read)
            if self.index != 0:  # worker 0 counts the frames
                return 0, 0, reader.last_ts
            return reader.packets, reader.wire_bytes, reader.last_ts

        def send(index: int, message: tuple) -> None:
            if index:
                feeds.send(index, message)
                return
            self._take(message[3], message[4], decoder, shared, table)
            if progress is not None:
                progress(reader.bytes_read)

        placement = (FlowPlacement(feeds.pick, self._limits, self.workers) if self._placement == "load"
                     else hash_placement(self.workers, self._limits))
        route_capture(reader, FrameRouting(self.workers, reader, send, placement))
        self._tell_others(_end_message(reader))
        return reader.packets, reader.wire_bytes, reader.last_ts

    def _take(self, entries: list[tuple], last: int, decoder: PacketDecoder, shared: PacketDecoder,
              table: FlowTable) -> None:
        """One batch of this worker's entries (feed_capture), covering the frames up to `last`."""
        new_frame = tuple.__new__
        decode, tick, packet_in = decoder.decode, table.tick, table.packet
        for entry in entries:
            size = len(entry)
            if size == 2:  # another worker's frame: its time, where the table checks, or a drain
                ts, number = entry
                self._frame = number
                self._stage = 0
                try:
                    tick(ts)
                except Exception as exc:  # contained as one process contains it at that frame
                    self._stage = 1
                    self._frame_failed(exc, Frame(ts, 0, b"", 0, number))
                if not number & 0xFF:
                    self._drain(decoder, shared)
                continue
            if size == 5:  # this worker's
                frame = new_frame(Frame, entry)
                number = entry[4]
                self._frame = number
                try:
                    packet = decode(frame)
                    if entry[0] >= table.next_expiry_check:  # what its time expires comes first (stage 0)
                        self._stage = 0
                        tick(entry[0])
                    if packet is not None:
                        self._stage = 1
                        self._sub = (0, 0)
                        packet_in(packet)
                except Exception as exc:
                    self._stage = 1
                    self._frame_failed(exc, frame)
            else:
                frame = new_frame(Frame, entry[0])
                number = frame.number
                self._frame = number
                self._shared_frame(frame, entry[1], shared, table)
            if not number & 0xFF:
                self._drain(decoder, shared)
        self._watermark = (self._file, 0, last, 3)  # past every stage of frame `last`
        if last - self._told >= WATERMARK_FRAMES:  # a worker with few records of its own: the
            self._told = last  # merge need not hold the others' back until it has 512
            self.waiting()

    def _shared_frame(self, frame: Frame, owner: int, shared: PacketDecoder, table: FlowTable) -> None:
        """A frame whose flow only a full decode tells: every worker decodes it, the owner of the
        packet it makes (as the reading worker's decode placed it) keeps that, the others take its
        time; worker 0 reports what fails."""
        mine = False
        try:
            packet = shared.decode(frame)
            mine = packet is not None and owner == self.index
            if frame.ts >= table.next_expiry_check:
                self._stage = 0
                table.tick(frame.ts)
            if mine:
                self._stage = 1
                self._sub = (0, 0)
                table.packet(packet)
        except Exception as exc:
            if mine or self.index == 0:  # a frame every worker decodes fails in each: worker 0 reports
                self._stage = 1
                self._frame_failed(exc, frame)
            elif not self._contain_errors:
                raise

    def _flow_ending(self, flow: Flow, reason: str) -> None:
        if self._phase == 2:
            self._frame = flow.last_number
        elif self._stage == 0:
            self._sub = (0, flow.closed_number) if reason == "closed" else (1, flow.last_number)

    def _drain(self, decoder: PacketDecoder, shared: PacketDecoder) -> None:
        anomalies = decoder.drain_anomalies()
        extra = shared.drain_anomalies()
        if self.index == 0:
            anomalies += extra
        if not anomalies:
            return
        self._stage = 2
        for anomaly in sorted(anomalies, key=lambda a: a.number):
            self._sub = (0, anomaly.number)
            self._emit_decode_anomalies((anomaly,))

    def _finish(self, decoder: PacketDecoder, table: FlowTable) -> None:
        if self.workers == 1:
            super()._finish(decoder, table)
            return
        shared = self._shared
        self._phase, self._frame, self._stage = 1, 0, 0
        decoder.flush()
        shared.flush()
        self._drain(decoder, shared)
        self._phase, self._stage, self._sub = 2, 0, (0, 0)
        table.finish()
        self._phase, self._frame = 3, 0
        if self.index == 0:
            decoder.counters = Counter(decoder.counters) + Counter(shared.counters)  # type: ignore[assignment]

    def _capture_damaged(self, result: FileResult, ts: float) -> None:
        if self.index == 0:
            super()._capture_damaged(result, ts)


class _FileSpool:
    """File mode: a worker's batches go to one spool file per capture file, and the parent is told
    when a capture file's spool is complete."""

    def __init__(self, directory: str, conn: Any) -> None:
        self._directory = directory
        self._conn = conn
        self._file: Any = None

    def send(self, batch: list) -> None:
        if self._file is None:
            raise RuntimeError("records outside a capture file")
        pickle.dump(batch, self._file, protocol=5)

    def start(self, number: int) -> None:
        self._file = open(spool_path(self._directory, number), "wb")  # noqa: SIM115 (closed in done)

    def done(self, number: int) -> None:
        self._file.close()
        self._file = None
        self._conn.send_bytes(pickle.dumps(("file", number), protocol=5))


class _ProgressSender:
    """A worker's reading progress to the parent: (file number, bytes read), a few times a second."""

    INTERVAL = 0.25

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._last = 0.0

    def __call__(self, number: int, done: int) -> None:
        now = time.monotonic()
        if now - self._last >= self.INTERVAL:
            self._last = now
            self._conn.send_bytes(pickle.dumps(("progress", number, done), protocol=5))


def spool_path(directory: str, number: int) -> str:
    return os.path.join(directory, f"{number}.records")


def _child_start(others: list[Any], parent: int | None) -> None:
    """A forked process's first steps: the pipe ends of the others closed (so that when one process
    dies, its pipes end at once), SIGTERM stopping it (the parent's handler raises), and death
    with the parent."""
    for end in others:
        end.close()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    _die_with_parent(parent)


class FeedQueue:
    """One worker's feed in the reading worker. A message goes straight into the worker's pipe,
    by a write that does not block and without the queue's thread, when nothing is queued before
    it and the pipe has room. What the pipe does not take is queued and written by the thread,
    so the reader waits for a worker only once `limit` bytes are queued for it (beyond its
    pipe), not whenever its pipe is full, and the queue drains while the reader is busy or waits
    elsewhere (for the parent, or another worker). Measured on the 210 MB capture, `--workers
    2`: with the reader writing straight into the pipes (blocking) the workers waited for frames
    0.5-1.0 s each of an 11-12 s run; with every message handed to the thread 0.16-0.43 s, but
    about 10,100 context switches a run (the thread and the reader passing the interpreter lock
    back and forth for each message); with the direct write first about 3,900, as the load
    placement keeps a fed worker's pipe nearly full (benchmarks/README.md).

    Messages are framed as `multiprocessing.Connection.send_bytes` frames them (the worker reads
    them with `recv_bytes`). `on_wait()` is called before a send waits (the reading worker sends
    what records it has, so the merge goes on). A failed write (the worker is gone) is raised by
    the next `send` and by `close`."""

    def __init__(self, conn: Any, limit: int, on_wait: Callable[[], None] | None = None) -> None:
        self._conn = conn
        self._fd = conn.fileno()
        os.set_blocking(self._fd, False)  # the file description of this write end: the reader's is its own
        self._limit = limit
        self._on_wait = on_wait
        self._queue: deque[memoryview] = deque()
        self._queued = 0  # bytes queued or being written by the thread
        self._closing = False
        self._failure: OSError | None = None
        self._changed = threading.Condition()
        self._writer = threading.Thread(target=self._write, name="feed", daemon=True)
        self._writer.start()

    def _full(self, size: int) -> bool:
        return bool(self._queued) and self._queued + size > self._limit and self._failure is None

    def send(self, data: bytes) -> None:
        if len(data) > _MAX_MESSAGE_BYTES:
            raise ValueError(f"a feed message of {len(data)} bytes (at most {_MAX_MESSAGE_BYTES})")
        header = _MESSAGE_SIZE(len(data))
        changed = self._changed
        size = len(header) + len(data)
        with changed:
            if self._failure is not None:
                raise self._failure
            if not self._queued:
                self._enqueue(self._write_now(header, data))
                return
            full = self._on_wait is not None and self._full(size)
        if full:
            self._on_wait()  # type: ignore[misc]  # not holding the lock: the writer goes on meanwhile
        with changed:
            while self._full(size):
                changed.wait()
            if self._failure is not None:
                raise self._failure
            self._enqueue([memoryview(header), memoryview(data)])

    def _enqueue(self, parts: list[memoryview]) -> None:
        """Parts of a message for the thread to write (holding the lock)."""
        if parts:
            self._queue.extend(parts)
            self._queued += sum(len(part) for part in parts)
            self._changed.notify_all()

    def _write_now(self, header: bytes, data: bytes) -> list[memoryview]:
        """Write a message without blocking (holding the lock, nothing queued); what the pipe did
        not take. A failed write is kept for the next send, and raised."""
        try:
            written = os.writev(self._fd, (header, data))
        except BlockingIOError:
            written = 0
        except OSError as exc:
            self._failure = exc
            raise
        if written >= len(header):
            return [memoryview(data)[written - len(header):]] if written < len(header) + len(data) else []
        return [memoryview(header)[written:], memoryview(data)]

    def backlog(self) -> int:
        """Bytes written for the worker that it has not read: queued here and in its pipe."""
        return self._queued + _pipe_bytes(self._fd)

    def close(self, *, discard: bool = False) -> None:
        """Write what is queued (`discard`: drop it), then close the pipe; raise a failed write."""
        with self._changed:
            self._closing = True
            if discard:
                self._queue.clear()
            self._changed.notify_all()
        self._writer.join()
        self._conn.close()
        if self._failure is not None and not discard:
            raise self._failure

    def _write(self) -> None:
        changed = self._changed
        room = select.poll()
        room.register(self._fd, select.POLLOUT)
        while True:
            with changed:
                while not self._queue and not self._closing:
                    changed.wait()
                if not self._queue:
                    return
                view = self._queue[0]
            try:
                room.poll()  # until the pipe has room (or the worker's end is closed: the write says)
                written = os.write(self._fd, view)
            except BlockingIOError:
                continue
            except OSError as exc:
                with changed:
                    self._failure = exc
                    self._queue.clear()
                    self._queued = 0
                    changed.notify_all()
                return
            with changed:
                self._queued -= written
                if self._queue and self._queue[0] is view:  # (a discarding close empties it)
                    if written < len(view):
                        self._queue[0] = view[written:]
                    else:
                        self._queue.popleft()
                changed.notify_all()


def _pipe_bytes(fd: int) -> int:
    """Bytes in a pipe (Linux answers FIONREAD on either end); 0 where that cannot be asked."""
    if termios is None or fcntl is None:
        return 0
    try:
        return _I32(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    except OSError:
        return 0


class Feeds:
    """The reading worker's feeds to the other workers (a FeedQueue each), and the load
    placement, which reads how much each has waiting."""

    def __init__(self, conns: list[Any], on_wait: Callable[[], None]) -> None:
        share = FEED_QUEUE_BYTES // max(1, len(conns))
        self._queues: list[Any] = [None, *(FeedQueue(conn, share, on_wait) for conn in conns)]
        self._turn = 0
        #: Each fed worker's backlog as last asked (None: a message went since): asked once per
        #: message at most, not for every new flow (a system call each; about 10,000 a run on the
        #: 210 MB capture). Between two messages a backlog only shrinks as the worker reads, so
        #: the answer kept is never less than what is waiting: a worker may be thought busier
        #: than it is until the reader's next message to it, never idler.
        self._backlogs: list[int | None] = [None] * len(self._queues)

    def send(self, index: int, message: tuple) -> None:
        try:
            self._queues[index].send(pickle.dumps(message, protocol=5))
            self._backlogs[index] = None
        except OSError as exc:  # that worker is gone (its own failure, or killed)
            raise FedWorkerGone(index) from exc

    def pick(self, key: int) -> int:
        """The worker for a new flow: the next other worker (in turn) with less than
        LOAD_BACKLOG_BYTES waiting for it, else the reading worker. A worker that falls behind
        gets no new flows until it catches up, so the reading worker, which also reads every
        frame, takes what the others cannot keep up with, whatever the machine and the traffic."""
        others = len(self._queues) - 1
        for step in range(others):
            index = 1 + (self._turn + step) % others
            backlog = self._backlogs[index]
            if backlog is None:
                backlog = self._backlogs[index] = self._queues[index].backlog()
            if backlog < LOAD_BACKLOG_BYTES:
                self._turn = (self._turn + step + 1) % others
                return index
        return 0

    def close(self, *, discard: bool = False) -> None:
        """Every feed written out (`discard`: dropped) and closed; a failed write is not raised:
        that worker is gone, and the parent says so."""
        for queue in self._queues[1:]:
            with contextlib.suppress(OSError):
                queue.close(discard=discard)


class FedWorkerGone(RuntimeError):
    """The reading worker could not feed worker `index`: that worker ended. The parent reports
    that worker's own failure, not the reader's."""

    def __init__(self, index: int) -> None:
        super().__init__(f"worker {index} ended before the end of the captures")
        self.index = index


class ReaderGone(RuntimeError):
    """The reading worker ended (it failed, or was killed) before the end of the captures: the
    worker it fed says so, without a traceback of its own (it has no bug to show), and the parent
    reports worker 0's own failure where there is one."""


def _fed_by(feed: Any, analyzer: Callable[[], ShardAnalyzer]) -> Callable[[], tuple]:
    """A worker's `feed()`: the reading worker's next message. Before waiting for one, the
    worker's records so far go to the parent (`ShardAnalyzer.waiting`)."""

    def receive() -> tuple:
        if not feed.poll():
            analyzer().waiting()
        try:
            return pickle.loads(feed.recv_bytes())
        except EOFError:
            raise ReaderGone("the reading worker (0) ended before the end of the captures") from None
        except OSError as exc:  # it died in the middle of a message
            raise ReaderGone(f"the reading worker (0) ended before the end of the captures ({exc})") from None

    return receive


def _worker_main(index: int, workers: int, files: list[Path], conn: Any, options: dict[str, Any],
                 others: list[Any], numbers: list[int] | None = None, spool: str | None = None, *,
                 parent: int | None = None, feed: Any = None, feeds: list[Any] | None = None) -> None:
    """One worker. Flow mode: shard `index` of `workers` over every file; worker 0 reads them and
    feeds the others (`feeds`: their pipes), the others are fed on `feed`; batches sent on `conn`.
    File mode (`numbers`, `spool`): the whole of its files (the run's files `numbers`), spooled."""
    _child_start(others, parent)
    reading: Feeds | None = None
    finished = False  # failed: the workers it fed are not given the rest, they are told it ended
    try:
        options = dict(options)
        engine = options.pop("engine", None)
        rate_store = None
        rate_sids: frozenset[int] = frozenset()
        if engine is not None:
            rate_store = DeferredRateStore()
            rate_sids = frozenset(rule.sid for rule in engine.ruleset.rules if rule.rate is not None)
            engine = Engine(engine.ruleset, engine.config, rate_store=rate_store)  # type: ignore[arg-type]
        report = _ProgressSender(conn)
        if spool is None:
            if feeds is not None:
                reading = Feeds(feeds, lambda: analyzer.waiting())
            analyzer = ShardAnalyzer(index, workers, lambda batch: conn.send_bytes(pickle.dumps(batch, protocol=5)),
                                     rate_sids, rate_store, engine=engine, feeds=reading,
                                     feed=None if feed is None else _fed_by(feed, lambda: analyzer), **options)
            analyzer.analyze_files(files, progress=report if index == 0 else None)  # the reader tells
        else:  # the only worker of its files: shard 0 of 1 (counts every frame, reports everything)
            spooler = _FileSpool(spool, conn)
            analyzer = ShardAnalyzer(0, 1, spooler.send, rate_sids, rate_store, engine=engine, **options)
            for number, path in zip(numbers or [], files, strict=True):
                spooler.start(number)
                analyzer.analyze_files([path], [number], spooler.done, report)
        policy = analyzer.policy
        summary = {"stats": analyzer.stats, "policy": None if policy is None else policy.counts(),
                   "numbers": numbers}
        conn.send_bytes(pickle.dumps(("done", summary), protocol=5))
        finished = True
    except ReaderGone as exc:
        conn.send_bytes(pickle.dumps(("gone", str(exc)), protocol=5))
    except FedWorkerGone as exc:
        conn.send_bytes(pickle.dumps(("lost", exc.index), protocol=5))
    except BaseException:  # reported to the parent, which fails the run
        conn.send_bytes(pickle.dumps(("error", traceback.format_exc()), protocol=5))
    finally:
        if reading is not None:  # finished: what the others still need of the captures, written out
            reading.close(discard=not finished)
        conn.close()


def _die_with_parent(parent: int | None) -> None:
    """Linux: the kernel kills this worker when the parent dies, even by SIGKILL (its own SIGTERM
    handler stops the workers otherwise): no orphan goes on analyzing and spooling."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if parent is not None and os.getppid() != parent:  # the parent died before the call (the
            os._exit(1)  # worker went to init or to a subreaper such as tini, rarely pid 1 then)


class WorkerFailed(RuntimeError):
    """A worker process died or raised; its traceback is the message, or that it exited."""


def plan_files(sizes: Sequence[int], workers: int, *, balance: float | None = FILE_BALANCE) -> list[list[int]] | None:
    """The run's files (by their sizes) split across workers, each worker's in run order: the
    largest file goes to the least loaded worker, and so on. None when there is one file, or when
    the split would give a worker more than `balance` times an even share of the bytes (then
    sharding flows spreads the work better); `balance` None: split by file whatever the balance."""
    if len(sizes) < 2:
        return None
    loads = [0] * min(workers, len(sizes))
    plan: list[list[int]] = [[] for _ in loads]
    for number in sorted(range(len(sizes)), key=lambda n: -sizes[n]):
        lightest = min(range(len(loads)), key=lambda w: (loads[w], len(plan[w])))
        plan[lightest].append(number)
        loads[lightest] += sizes[number]
    total = sum(sizes)
    if balance is not None and total and max(loads) > balance * total / workers:
        return None
    return [sorted(numbers) for numbers in plan if numbers]


#: Pipe capacity asked for (Linux): a batch of records fits, so a worker's write returns at once
#: rather than waiting for the parent to come round to its pipe.
PIPE_BYTES = 1 << 20


def _widen_pipe(fd: int) -> None:
    """Ask for a `PIPE_BYTES` pipe buffer; where that is refused or unknown, the default stays."""
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
    if setpipe is None:
        return
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, setpipe, PIPE_BYTES)


@contextlib.contextmanager
def _workers(jobs: list[tuple[list[Path], tuple]], options: dict[str, Any],
             feed: bool = False) -> Iterator[list[Any]]:
    """Fork one worker per job (its files, and _worker_main's file-mode arguments or ()), with
    `feed` worker 0 reading the captures and feeding the others through pipes of their own;
    yields the receiving ends of the workers' pipes. If the parent fails, every process is killed
    (the others would wait for a reader that is gone); they are reaped on the way out."""
    context = multiprocessing.get_context("fork")
    pipes = [context.Pipe(duplex=False) for _ in jobs]
    feeds = [context.Pipe(duplex=False) for _ in jobs[1:]] if feed else []
    for receiver, _ in pipes + feeds:
        _widen_pipe(receiver.fileno())
    ends = [end for pair in pipes + feeds for end in pair]
    processes = []
    parent = os.getpid()
    for index, (files, extra) in enumerate(jobs):
        # A process keeps only its own ends: when one dies, its pipes end (EOF, EPIPE) at once.
        kwargs: dict[str, Any] = {"parent": parent}
        own = [pipes[index][1]]
        if feeds and index == 0:
            kwargs["feeds"] = [sender for _, sender in feeds]
            own += kwargs["feeds"]
        elif feeds:
            kwargs["feed"] = feeds[index - 1][0]
            own.append(kwargs["feed"])
        processes.append(context.Process(target=_worker_main, daemon=True,
                                         args=(index, len(jobs), files, pipes[index][1], options,
                                               [end for end in ends if end not in own], *extra),
                                         kwargs=kwargs))
    prepare_first_use()  # once here, shared, rather than in each worker
    # Forked with the parent's objects (rules, engine, modules) frozen out of the collector, so the
    # workers' garbage collections do not write to, and copy, the pages they share.
    gc.freeze()
    # SIGTERM waits until the forks are done: its handler (the CLI's) raises, and an exception
    # raised inside fork's own hooks would be swallowed; the workers unblock it themselves.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        for process in processes:
            process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        gc.unfreeze()
    for end in [sender for _, sender in pipes] + [end for pair in feeds for end in pair]:
        end.close()
    try:
        yield [receiver for receiver, _ in pipes]
    except BaseException:
        for process in processes:
            process.kill()
        raise
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()


class _Inbox:
    """Flow mode: the workers' batches, read from their pipes as soon as they arrive.

    The merge needs the workers' records in turn; reading a worker's pipe only when the merge
    wants its next batch would leave a worker that got ahead blocked on a full pipe, idle, while
    the parent waits for another. So whenever the merge runs out of a worker's records, every
    pipe that has a batch ready is read into that worker's queue. A queue holding
    `MAX_QUEUED_BATCHES` is not read until the merge takes from it: a worker far ahead waits,
    and memory stays bounded."""

    MAX_QUEUED_BATCHES = 32

    def __init__(self, receivers: list[Any], read: Callable[[int, Any], list | None]) -> None:
        """`read(index, receiver)`: worker `index`'s next batch, or None once it is done."""
        self._receivers = receivers
        self._read = read
        self._queues: list[deque[list]] = [deque() for _ in receivers]
        self._open = set(range(len(receivers)))

    def stream(self, index: int) -> Iterator[tuple]:
        """Worker `index`'s records, in its order, until it is done."""
        queue = self._queues[index]
        while True:
            while not queue and index in self._open:
                self._pump(index)
            if not queue:
                return
            yield from queue.popleft()

    def _pump(self, needed: int) -> None:
        """Wait until a pipe has something (the needed worker's, or one with room in its queue),
        then read every pipe that is ready, one message each."""
        readable = {self._receivers[i]: i for i in self._open
                    if i == needed or len(self._queues[i]) < self.MAX_QUEUED_BATCHES}
        for receiver in wait(list(readable)):
            index = readable[receiver]
            batch = self._read(index, receiver)
            if batch is None:
                self._open.discard(index)
            else:
                self._queues[index].append(batch)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class ParallelAnalyzer:
    """`Analyzer`'s interface (analyze_files, stats, policy, keylog) over N worker processes."""

    def __init__(self, write: Callable[[dict[str, Any]], None], workers: int, *, engine: Engine | None = None,
                 policy: Any = None, keylog: Any = None, write_encoded: Callable[[str], None] | None = None,
                 shard: str = "auto", placement: str = "load", **options: Any) -> None:
        """`write` takes records as dicts; with `write_encoded` (EveWriter.write_encoded) the workers
        encode the EVE lines themselves and the parent writes them as they are. `shard`: flows
        (hash every flow to a worker), files (whole files to workers) or auto (files when several
        balance, see plan_files). `placement`: how the reading worker of a flow-sharded run places
        new flows (PLACEMENTS). `options`: the rest of Analyzer's keyword arguments (limits,
        flow_records, egress)."""
        if workers < 2:
            raise ValueError("ParallelAnalyzer needs at least 2 workers")
        if shard not in SHARD_MODES:
            raise ValueError(f"shard must be one of {', '.join(SHARD_MODES)}, not {shard!r}")
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, not {placement!r}")
        self.shard = shard
        #: How the last run was split: "flows" or "files".
        self.split = ""
        self._progress: Callable[[int], None] | None = None
        self._sizes: list[int] = []
        self._read: dict[int, int] = {}  # bytes read per file, as the workers report them
        if options.get("baseline") is not None:
            raise ValueError("anomaly baselines learn across flows: run them in one process (no --workers)")
        self.workers = workers
        self.policy = policy
        self.keylog = keylog
        self._options = {**options, "engine": engine, "policy": policy, "keylog": keylog,
                         "encode": write_encoded is not None, "placement": placement}
        self._receivers: list[Any] = []
        self._counter = Analyzer(write)  # counts what is written, as one process does
        self._engine = engine  # builds the rate-rule alerts the windows keep
        self._write = write
        self._write_encoded = write_encoded
        self.rate_store = MemoryRateStore(engine.config.rate_max_keys) if engine is not None else None
        self.rate_pending = 0  # rate-rule candidates below their count, as Engine.rate_pending
        self.rate_quiet = 0  # and inside the window after an alert, as Engine.rate_quiet

    @property
    def stats(self) -> RunStats:
        return self._counter.stats

    def analyze_files(self, files: list[Path], progress: Callable[[int], None] | None = None) -> None:
        """Analyze `files`; `progress` is told the bytes of them read so far, as the workers go."""
        self._progress = progress
        self._sizes = [_file_size(path) for path in files]
        self._read = {}
        plan = None
        if self.shard != "flows":
            plan = plan_files(self._sizes, self.workers, balance=None if self.shard == "files" else FILE_BALANCE)
        self.split = "files" if plan is not None else "flows"
        if plan is not None:
            self._analyze_by_file(files, plan)
        else:
            self._analyze_by_flow(files)
        if progress is not None:
            progress(sum(self._sizes))

    def _progressed(self, number: int, done: int) -> None:
        """A worker read `done` bytes of file `number` (flows: worker 0 reads the files in order)."""
        if self._progress is None:
            return
        self._read[number] = max(done, self._read.get(number, 0))
        if self.split == "flows":
            self._read.update((earlier, self._sizes[earlier]) for earlier in range(number))
        self._progress(sum(self._read.values()))

    def _analyze_by_file(self, files: list[Path], plan: list[list[int]]) -> None:
        with tempfile.TemporaryDirectory(prefix="inspector-workers-") as spool:
            jobs = [([files[n] for n in numbers], (numbers, spool)) for numbers in plan]
            summaries: list[dict[str, Any]] = [{} for _ in jobs]
            with _workers(jobs, self._options) as receivers:
                running = {receiver: index for index, receiver in enumerate(receivers)}
                ready: set[int] = set()
                for number in range(len(files)):  # in run order, as each file's spool completes
                    while number not in ready:
                        self._receive(running, ready, summaries)
                    self._write_spool(spool_path(spool, number))
                    self._progressed(number, self._sizes[number])
                while running:
                    self._receive(running, ready, summaries)
        self._add_summaries(summaries)

    def _receive(self, running: dict[Any, int], ready: set[int], summaries: list[dict[str, Any]]) -> None:
        """File mode: the next messages of the workers that have one (a file done, their end)."""
        if not running:
            raise WorkerFailed("the workers finished without analyzing every file")
        for receiver in wait(list(running)):
            message = self._next(running[receiver], receiver, summaries)
            if message is None:
                del running[receiver]
            else:
                ready.add(message[1])

    def _next(self, index: int, receiver: Any, summaries: list[dict[str, Any]]) -> Any:
        """Worker `index`'s next batch (a list) or ("file", number); None once it is done (its
        summary stored). Progress is passed on; a failure, or an end without a summary, raised."""
        while True:
            try:
                message = pickle.loads(receiver.recv_bytes())
            except EOFError:
                raise WorkerFailed(f"worker {index} exited without finishing") from None
            if isinstance(message, list) or message[0] == "file":
                return message
            if message[0] == "progress":
                self._progressed(message[1], message[2])
            elif message[0] == "done":
                summaries[index] = message[1]
                return None
            elif message[0] == "gone":  # its feed ended: what happened to the reading worker
                raise self._failure_of(0, f"worker {index} failed: {message[1]}")
            elif message[0] == "lost":  # the reading worker could not feed that worker
                raise self._failure_of(message[1], f"worker {message[1]} exited without finishing")
            else:
                raise WorkerFailed(f"worker {index} failed:\n{message[1]}")

    def _failure_of(self, index: int, otherwise: str) -> WorkerFailed:
        """Worker `index`'s own failure, as its pipe tells it within FAILURE_WAIT seconds (its
        traceback, or its end), else `otherwise`: when one worker fails, the one it fed or fed
        from finds out too, and the run names the first."""
        receiver = self._receivers[index]
        deadline = time.monotonic() + FAILURE_WAIT
        with contextlib.suppress(OSError):
            while receiver.poll(max(0.0, deadline - time.monotonic())):
                try:
                    message = pickle.loads(receiver.recv_bytes())
                except EOFError:
                    return WorkerFailed(f"worker {index} exited without finishing")
                if isinstance(message, tuple) and message[0] == "error":
                    return WorkerFailed(f"worker {index} failed:\n{message[1]}")
        return WorkerFailed(otherwise)

    def _write_spool(self, path: str) -> None:
        with open(path, "rb") as spooled:
            while True:
                try:
                    batch = pickle.load(spooled)
                except EOFError:
                    break
                for _, payload, meta, hit in batch:
                    self._write_merged(payload, meta, hit)
        os.unlink(path)

    def _analyze_by_flow(self, files: list[Path]) -> None:
        summaries: list[dict[str, Any]] = [{} for _ in range(self.workers)]
        with _workers([(files, ()) for _ in range(self.workers)], self._options, feed=True) as receivers:
            self._receivers = receivers
            inbox = _Inbox(receivers, lambda index, receiver: self._next(index, receiver, summaries))
            streams = [inbox.stream(index) for index in range(len(receivers))]
            for _, payload, meta, hit in heapq.merge(*streams, key=lambda item: item[0]):
                if payload is not None:  # None: a worker's watermark
                    self._write_merged(payload, meta, hit)
        self._add_summaries(summaries)

    def _write_merged(self, payload: Any, meta: tuple, hit: Any) -> None:
        if hit is not None and self.rate_store is not None:
            result = self.rate_store.hit(*hit)
            if result is not RateResult.ALERT:
                if result is RateResult.BELOW:
                    self.rate_pending += 1
                else:
                    self.rate_quiet += 1
                return
        if payload.__class__ is CandidateAlert and self._engine is not None:
            payload = encode_record(self._engine.alert_record(jsonio.loads(payload.record_line), payload.sid,
                                                              payload.blocked))
        counter = self._counter
        if payload.__class__ is not dict:  # an EVE line a worker made
            counter.count_meta(meta)
            self._write_encoded(payload)  # type: ignore[misc]
            return
        if meta[0] == "flow":
            payload["flow"]["alerted"] = counter.flow_alerted(meta[1])
        counter.count_meta(meta)
        self._write(payload)

    def _add_summaries(self, summaries: list[dict[str, Any]]) -> None:
        stats = self.stats
        if summaries[0].get("numbers") is None:  # flows: worker 0 read and counted every frame
            first: RunStats = summaries[0]["stats"]
            stats.files.extend(first.files)
            stats.packets += first.packets
            stats.frame_bytes += first.frame_bytes
            stats.dropped += first.dropped
        else:  # files: each worker counted its own
            results = {}
            for summary in summaries:
                results.update(zip(summary["numbers"], summary["stats"].files, strict=True))
                stats.packets += summary["stats"].packets
                stats.frame_bytes += summary["stats"].frame_bytes
                stats.dropped += summary["stats"].dropped
            stats.files.extend(results[number] for number in sorted(results))
        for summary in summaries:
            worker: RunStats = summary["stats"]
            stats.last_ts = max(stats.last_ts, worker.last_ts)
            stats.flows += worker.flows
            stats.flows_by_app.update(worker.flows_by_app)
            stats.decode.update(worker.decode)
            stats.tcp.update(worker.tcp)
            stats.detection.update(worker.detection)
            if self.policy is not None and summary["policy"] is not None:
                self.policy.add_counts(summary["policy"])
        if self._engine is not None:
            stats.engine = self._engine_counters([summary["stats"].engine or {} for summary in summaries])

    def _engine_counters(self, workers: list[dict[str, Any]]) -> dict[str, Any]:
        """The engine counters the run's `detect` object reads (runstats.detect_object), as one
        process counts them. Each record is evaluated in exactly one worker (its flow's, or
        worker 0 for what every worker decodes), so matches and suppressions add up; rate
        windows are decided here, so their counters are the parent's. Alerts are what was
        written (`stats.alerts`)."""
        assert self.rate_store is not None and self._engine is not None
        return {
            "rules": len(self._engine.ruleset.rules),
            **{name: sum(int(worker.get(name, 0)) for worker in workers) for name in ("matches", "suppressed")},
            "rate_pending": self.rate_pending,
            "rate_quiet": self.rate_quiet,
            "rate_keys": len(self.rate_store),
            "rate_keys_evicted": self.rate_store.evicted,
        }
