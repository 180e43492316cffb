"""`inspector analyze --workers N`: flows sharded across processes give the same EVE, byte for byte,
and the same rate verdicts as one process, including rate windows whose events land in different
workers and windows that span files."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from inspector.engine import Engine
from inspector.lab import network as net
from inspector.lab.recorder import Lab
from inspector.lab.traffic_triton import Tensor, rest_infer, rest_infer_response
from inspector.limits import DEFAULT_LIMITS
from inspector.parallel import (
    UNKNOWN,
    CandidateAlert,
    DeferredRateStore,
    FlowPlacement,
    ShardAnalyzer,
    flow_key,
    frame_flow_key,
    plan_files,
)
from inspector.rules import load_rules

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "pcaps" / "lab"

RATE_RULE = """title: Many inferences from one client
id: 6d0b9c55-2c49-4f0e-9a37-5a7a3f0b9d11
sid: 9970001
rev: 1
status: experimental
level: medium
description: ten Triton inferences from one client within a minute, counted across its connections
event: triton
detection:
  sel:
    triton.api: infer
  condition: sel
rate:
  count: 10
  window: 60s
  by: [src_ip]
"""


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inspector.cli", "analyze", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


def _many_connections(path: Path, connections: int = 40, seed: int = 1) -> None:
    """One client making one inference per connection, every 0.5 s; two other clients a few each."""
    lab = Lab()
    rng = random.Random(seed)
    lab.rng = rng
    t = 1_767_225_600.0
    for n in range(connections):
        client = net.FRAUD_SERVICE if n % 5 else (net.WEB_FRONTEND if n % 2 else net.CHAT_APP)
        session = lab.http(client, net.TRITON, net.TRITON_HTTP, start=t + n * 0.5)
        tensor = Tensor(name="INPUT0", shape=(1, 4))
        session.exchange(rest_infer("fraud-detector", [tensor]), rest_infer_response("fraud-detector", [tensor]),
                         event="triton", what="infer")
        session.close()
    lab.capture.write(path)


def test_flow_key_is_symmetric_and_spreads_flows_by_hash():
    a, b = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    for workers in (2, 3, 4):
        seen = Counter(flow_key(a, b, port, 8000) % workers for port in range(40000, 41000))
        assert set(seen) == set(range(workers))
        assert min(seen.values()) > 1000 / workers / 2
    for port in (40000, 51234, 65535):
        assert flow_key(a, b, port, 8000) == flow_key(b, a, 8000, port)
    six = bytes(range(16)), bytes(range(16, 32))
    assert flow_key(*six, 443, 50000) == flow_key(six[1], six[0], 50000, 443)


def test_frame_flow_key_agrees_with_the_decoder_and_refers_odd_frames_to_it():
    from inspector.capture.decode import PacketDecoder
    from inspector.capture.reader import open_capture

    decoder = PacketDecoder()
    checked = unknown = 0
    for path in [LAB / "mixed.pcap", *sorted((REPO / "pcaps" / "core").glob("*.pcap*"))]:
        with open_capture(path) as reader:
            for frame in reader:
                key = frame_flow_key(frame.data, 0, len(frame.data), frame.linktype)
                packet = decoder.decode(frame)
                if key is None:
                    unknown += 1
                    continue
                assert packet is not None
                assert key == flow_key(packet.src, packet.dst, packet.sport, packet.dport)
                checked += 1
    assert checked > 3000
    assert unknown < checked / 10


def _eth(ethertype: int, ip: bytes) -> bytes:
    return bytes(6) + bytes([2, 0, 0, 0, 0, 1]) + ethertype.to_bytes(2, "big") + ip


def _common_frames() -> list[bytes]:
    """Ethernet frames of the kinds the routers read at fixed offsets: IPv4 and IPv6, TCP and UDP,
    built here, and the first frames of a shipped capture."""
    import struct

    from inspector.capture.reader import open_capture

    tcp = struct.pack("!HHIIBBHHH", 40000, 8001, 1, 2, 0x50, 0x18, 512, 0, 0) + b"payload"
    udp = struct.pack("!HHHH", 5353, 53, 15, 0) + b"payload"
    frames = []
    for proto, transport in ((6, tcp), (17, udp)):
        ipv4 = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(transport), 7, 0x4000, 64, proto, 0,
                           bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
        ipv6 = struct.pack("!IHBB16s16s", 0x60000000, len(transport), proto, 64, bytes(range(16)),
                           bytes(range(16, 32)))
        frames += [_eth(0x0800, ipv4 + transport), _eth(0x86DD, ipv6 + transport)]
    with open_capture(LAB / "mixed.pcap") as reader:
        frames += [frame.data for _, frame in zip(range(40), reader)]
    return frames


def test_the_routers_memo_takes_exactly_the_frames_whose_key_is_their_raw_addresses_and_ports():
    """The reading worker places the common frame by its raw addresses and ports (one direction,
    a memo of owners) and computes `frame_flow_key` only for a direction it has not seen. That is
    right only if every frame the matcher takes is one frame_flow_key gives a key, and that key is
    the flow key of the matched bytes: checked on the common frames under every link type the
    matchers cover, each cut at every length and with every header byte set to values that flip
    the conditions (version, header length, fragment bits, protocol, TCP data offset, lengths)."""
    from inspector.capture.decode import LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_RAW
    from inspector.lab.craft import RELINK_TYPES, relink
    from inspector.parallel import _DIRECTION

    def key_of(direction: bytes) -> int:
        half = len(direction) // 2 - 2
        return flow_key(direction[:half], direction[half:2 * half], int.from_bytes(direction[-4:-2], "big"),
                        int.from_bytes(direction[-2:], "big"))

    values = (0x00, 0x06, 0x11, 0x1B, 0x1C, 0x20, 0x3F, 0x40, 0x45, 0x46, 0x4F, 0x50, 0x60, 0x6F, 0x80, 0x86,
              0xC0, 0xDD, 0xFF)
    taken = refused = 0
    for ethernet in _common_frames():
        variants = [(1, ethernet), *((RELINK_TYPES[link], relink(ethernet, link)) for link in ("sll", "sll2"))]
        ip = ethernet[14:]
        variants += [(LINKTYPE_RAW, ip), (LINKTYPE_IPV4 if ip[0] >> 4 == 4 else LINKTYPE_IPV6, ip)]
        for linktype, frame in variants:
            match = _DIRECTION[linktype](frame)
            assert match is not None  # the common frame itself is taken
            mutants = [frame[:size] for size in range(len(frame))]
            mutants += [frame[:at] + bytes([value]) + frame[at + 1:] for at in range(min(len(frame), 80))
                        for value in values]
            for data in [frame, *mutants]:
                match = _DIRECTION[linktype](data)
                key = frame_flow_key(data, 0, len(data), linktype)
                if match is None:
                    refused += 1
                    continue
                taken += 1
                assert key is not None and key == key_of(match[1] or match[2]), (linktype, data.hex())
    assert taken > 10_000 and refused > 10_000


def test_a_placement_remembers_a_flow_until_the_workers_have_ended_it():
    """An owner is kept at least `memory` of capture time after the flow's last frame (the idle
    timeout and the closed-flow linger, plus the expiry interval), then forgotten; a flow in the
    previous generation comes back to the current one; past `cap` new flows a generation starts
    early, and is counted."""
    from dataclasses import replace

    picks = iter(range(100))
    placement = FlowPlacement(lambda key: next(picks) % 3, replace(DEFAULT_LIMITS, max_flows=2), 2)
    assert placement.memory == DEFAULT_LIMITS.flow_idle_timeout + 2.0 and placement.cap == 4
    placement.clock(0.0)
    assert placement.place(111) == 0 and placement.place(222) == 1
    placement.clock(placement.memory - 1)  # within the generation: nothing moves
    assert placement.current == {111: 0, 222: 1}
    placement.clock(placement.memory)  # next generation: both still known
    assert placement.current == {} and placement.place(111) == 0 and placement.current == {111: 0}
    placement.clock(2 * placement.memory)  # 222 unseen for two generations: forgotten, 111 kept
    assert placement.place(222) == 2 and placement.place(111) == 0
    assert placement.place(1) == 0 and placement.place(2) == 1
    assert placement.early == 0 and len(placement.current) == 4  # at the cap
    assert placement.place(3) == 2
    assert placement.early == 1 and placement.current == {3: 2}
    assert placement.place(2) == 1  # from the generation the cap closed


def test_a_placement_remembers_directions_of_a_flow_for_its_generation():
    """The router's memo (a direction's raw addresses and ports -> owner) holds what `current`
    holds for this generation and is emptied with it, so a forgotten flow is placed anew."""
    picks = iter(range(100))
    placement = FlowPlacement(lambda key: next(picks) % 2, DEFAULT_LIMITS, 2)
    placement.clock(0.0)
    assert placement.place_direction(b"a->b", 111) == 0 and placement.place_direction(b"b->a", 111) == 0
    assert placement.directions == {b"a->b": 0, b"b->a": 0} and placement.current == {111: 0}
    assert placement.place_direction(b"c->d", 222) == 1
    placement.clock(placement.memory)
    assert placement.directions == {} and placement.current == {}
    assert placement.place_direction(b"b->a", 111) == 0  # back from the previous generation
    placement.clock(3 * placement.memory)
    assert placement.place_direction(b"c->d", 222) == 0  # forgotten: placed anew


def test_the_direction_memo_stays_bounded_when_many_directions_share_one_key():
    """Addresses and ports can be chosen to share one flow key (the same XORs): each is one more
    direction, no more flows. The memo is capped at two directions per flow the generation may
    hold, and a direction it dropped still finds its flow's owner by key."""
    from dataclasses import replace

    placement = FlowPlacement(lambda key: 1, replace(DEFAULT_LIMITS, max_flows=5), 2)
    placement.clock(0.0)
    for n in range(1000):
        assert placement.place_direction(n.to_bytes(12, "big"), 777) == 1
        assert len(placement.directions) <= 2 * placement.cap == 20
    assert placement.current == {777: 1} and placement.early == 0
    assert placement.place_direction((0).to_bytes(12, "big"), 777) == 1


def _relinked(path: Path, out: Path, link: str) -> Path:
    """The capture's Ethernet frames under another link layer (inspector.lab.craft.relink)."""
    from inspector.capture.reader import open_capture
    from inspector.lab.craft import RELINK_TYPES, relink, write_pcap

    with open_capture(path) as reader:
        write_pcap(out, [(frame.ts, relink(frame.data, link)) for frame in reader], linktype=RELINK_TYPES[link])
    return out


def _expiry_checks(frames: list) -> set[int]:
    """Numbers of the frames at which a flow table seeing every frame's time looks for idle flows."""
    from inspector.capture.flows import FlowTable

    table = FlowTable(DEFAULT_LIMITS, lambda flow: None, lambda flow: None)
    checks = set()
    for frame in frames:
        before = table.next_expiry_check
        table.tick(frame.ts)
        if table.next_expiry_check != before:
            checks.add(frame.number)
    return checks


@pytest.mark.parametrize("link", ["ethernet", "vlan", "qinq", "sll", "sll2", "pcapng"])
def test_the_reader_gives_each_worker_its_frames_and_the_times_it_needs(tmp_path, link):
    """feed_capture reads a capture once: each frame goes to the worker its flow key names (hash
    placement), a frame it cannot place goes to every worker with the owner of the packet a decode
    makes of it, and each worker gets (time, number) of the other workers' frames
    where its flow table checks for idle flows and at every 256th frame; batches cover the frames
    in order, and the end carries the reader's totals."""
    from inspector.capture.decode import PacketDecoder
    from inspector.capture.reader import open_capture
    from inspector.parallel import FEED_FRAMES, feed_capture

    def owner(frame) -> int:
        key = frame_flow_key(frame.data, 0, len(frame.data), frame.linktype)
        return UNKNOWN if key is None else key % 3

    paths = [LAB / "mixed.pcap", *sorted((REPO / "pcaps" / "core").glob("*.pcap"))]
    if link == "pcapng":
        paths = [_rewritten(path, tmp_path / f"{path.stem}.pcapng", "pcapng") for path in paths]
    elif link != "ethernet":
        paths = [_relinked(path, tmp_path / f"{path.stem}.{link}.pcap", link) for path in paths]
    placed = Counter()
    for path in paths:
        with open_capture(path) as reader:
            frames = list(reader)
            totals = (reader.packets, reader.wire_bytes, reader.last_ts)
        checks = _expiry_checks(frames)
        decoder = PacketDecoder()
        packets = [decoder.decode(frame) for frame in frames if owner(frame) == UNKNOWN]
        decoded_owners = [UNKNOWN if packet is None else flow_key(packet.src, packet.dst, packet.sport,
                                                                   packet.dport) % 3 for packet in packets]
        messages: list[list[tuple]] = [[], [], []]
        feed_capture(path, 3, lambda index, message, into=messages: into[index].append(message))
        for index, told in enumerate(messages):
            assert told[0][0] == "open" and told[-1][:4] == ("end", *totals)
            batches = [message for message in told if message[0] == "frames"]
            lasts = [message[4] for message in batches]
            assert lasts == sorted(lasts) and lasts[-1] == len(frames)
            assert all(last % FEED_FRAMES == 0 for last in lasts[:-1])
            own, shared, marks = [], [], []
            for message in batches:
                for entry in message[3]:
                    {5: own, 3: shared, 2: marks}[len(entry)].append(entry)
            for entry in own:
                frame = frames[entry[4] - 1]
                assert entry == tuple(frame)
                assert owner(frame) == index
            assert [entry[0] for entry in shared] == [tuple(frame) for frame in frames if owner(frame) == UNKNOWN]
            assert [entry[1] for entry in shared] == decoded_owners
            others = {f.number for f in frames} - {entry[4] for entry in own} - {entry[0][4] for entry in shared}
            assert [number for _, number in marks] == sorted(n for n in others if n in checks or not n & 0xFF)
            assert all(ts == frames[number - 1].ts for ts, number in marks)
            placed.update(own=len(own), shared=len(shared) if index == 0 else 0, marks=len(marks),
                          shared_packets=sum(o != UNKNOWN for o in decoded_owners) if index == 0 else 0)
    assert placed["own"] > 0.9 * (placed["own"] + placed["shared"])  # all but the odd frames (fragments, ...)
    assert placed["marks"] > 0


def _rewritten(path: Path, out: Path, kind: str) -> Path:
    """The capture's frames written again: a gzip'd big-endian nanosecond pcap, or a pcapng."""
    import gzip
    import struct

    from inspector.capture.reader import open_capture

    with open_capture(path) as reader:
        frames = [(frame.ts, frame.data, frame.wire_len, frame.linktype) for frame in reader]
    if kind == "pcap-be-ns.gz":
        parts = [struct.pack(">IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, frames[0][3])]
        for ts, data, wire_len, _ in frames:
            sec = int(ts)
            parts.append(struct.pack(">IIII", sec, round((ts - sec) * 1e9), len(data), wire_len) + data)
        out.write_bytes(gzip.compress(b"".join(parts)))
        return out

    def block(block_type: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", block_type, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    parts = [block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)),
             block(1, struct.pack("<HHI", frames[0][3], 0, 0))]
    for ts, data, wire_len, _ in frames:
        ticks = round(ts * 1e6)
        parts.append(block(6, struct.pack("<IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), wire_len) + data))
    out.write_bytes(b"".join(parts))
    return out


@pytest.mark.parametrize("kind", ["pcap-be-ns.gz", "pcapng", "vlan", "sll2"])
def test_other_capture_formats_give_one_process_output(tmp_path, kind):
    """Sharded runs of a gzip'd big-endian nanosecond pcap (the record loop's own skip, through
    the decompressor), of a pcapng (frames placed by `select` alone) and of 802.1Q-tagged and
    Linux cooked captures (read in the loop) give the single-process EVE."""
    if kind in ("vlan", "sll2"):
        capture = _relinked(LAB / "mixed.pcap", tmp_path / f"mixed.{kind}.pcap", kind)
    else:
        capture = _rewritten(LAB / "mixed.pcap", tmp_path / f"mixed.{kind}", kind)
    args = ["--config", str(LAB / "site.yaml"), "-q"]
    one = _cli(str(capture), *args, "--eve", str(tmp_path / "one.json"))
    many = _cli(str(capture), *args, "--eve", str(tmp_path / "many.json"), "--workers", "2", "--shard", "flows")
    assert one.returncode == many.returncode == 0, one.stdout + one.stderr + many.stderr
    first = (tmp_path / "one.json").read_bytes()
    assert first.count(b'"event_type":"alert"') > 10
    assert first == (tmp_path / "many.json").read_bytes()


def test_files_are_planned_largest_first_and_only_when_they_balance():
    assert plan_files([100, 100, 100, 100], 2) == [[0, 2], [1, 3]]
    assert plan_files([400, 100, 100, 100, 100], 2) == [[0], [1, 2, 3, 4]]  # 400 against 400
    assert plan_files([90, 60, 100, 40], 3) == [[2], [0], [1, 3]]  # 100, 90, 60 + 40
    assert plan_files([500], 2) is None  # one file: shard its flows
    assert plan_files([900, 50, 50], 2) is None  # one worker would do 90%: shard flows instead
    assert plan_files([900, 50, 50], 2, balance=None) == [[0], [1, 2]]  # --shard files: split anyway
    assert plan_files([0, 0], 2) == [[0], [1]]  # unreadable or empty files are still each worker's to report


@pytest.mark.parametrize(("workers", "shard", "placement"), [(2, "flows", "load"), (3, "flows", "load"),
                                                             (2, "flows", "hash"), (3, "flows", "hash"),
                                                             (2, "files", "load"), (3, "files", "load")])
def test_eve_is_byte_identical_to_one_process(tmp_path, workers, shard, placement):
    captures = [str(LAB / "mixed.pcap"), str(REPO / "pcaps" / "core"), str(REPO / "pcaps" / "clients")]
    args = ["--config", str(LAB / "site.yaml"), "--policy", str(LAB / "policy.yaml"), "-q"]
    one = _cli(*captures, *args, "--eve", str(tmp_path / "one.json"))
    many = _cli(*captures, *args, "--eve", str(tmp_path / "many.json"), "--workers", str(workers), "--shard", shard,
                "--placement", placement)
    assert one.returncode == many.returncode
    first = (tmp_path / "one.json").read_bytes()
    assert first == (tmp_path / "many.json").read_bytes()
    alerts = Counter(json.loads(line)["alert"]["signature_id"] for line in first.splitlines()
                     if b'"event_type":"alert"' in line)
    assert alerts[3100003] == 1 and alerts[3400003] == 1  # rate rules of the lab, decided in the parent


def test_rate_window_across_workers_gives_single_process_verdicts(tmp_path):
    capture = tmp_path / "many.pcap"
    _many_connections(capture)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rate.yml").write_text(RATE_RULE)

    def run(workers: int, placement: str = "load") -> str:
        out = tmp_path / f"eve-{workers}.json"
        done = _cli(str(capture), "--rules", str(rules), "--eve", str(out), "-q", "--workers", str(workers),
                    "--placement", placement)
        assert done.returncode == 0, done.stdout + done.stderr
        return out.read_text()

    text = run(1)
    single = [json.loads(line) for line in text.splitlines()]
    fraud_flows = {r["flow_id"] for r in single if r["event_type"] == "triton" and r["src_ip"] == net.FRAUD_SERVICE}
    owners = {flow_key(*_endpoints(r)) % 2 for r in single if r["event_type"] == "triton"
              and r["flow_id"] in fraud_flows}
    assert owners == {0, 1}, "placed by hash, the client's connections must land in both workers"
    alerts = [r for r in single if r["event_type"] == "alert"]
    assert [a["src_ip"] for a in alerts] == [net.FRAUD_SERVICE]  # the 10th inference of the busy client
    for workers in (2, 3):
        assert run(workers, "hash") == text
        assert run(workers) == text
    flow_alerted = [r["flow"]["alerted"] for r in single if r["event_type"] == "flow"]
    assert flow_alerted.count(True) == 1


def test_a_worker_leaves_rate_candidates_unencoded_and_the_line_they_name_is_the_records(tmp_path):
    """Most candidates are dropped by the parent's window: a worker sends the rule and the EVE line
    of the record the alert is about (the same string object, so pickling it again costs a
    reference), not an encoded alert."""
    capture = tmp_path / "many.pcap"
    _many_connections(capture, connections=12)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rate.yml").write_text(RATE_RULE)
    ruleset = load_rules([rules])
    store = DeferredRateStore()
    items: list = []
    worker = ShardAnalyzer(0, 1, items.extend, frozenset(rule.sid for rule in ruleset.rules), store,
                           engine=Engine(ruleset, rate_store=store))
    worker.analyze_files([capture])
    payloads = [payload for _, payload, _, _ in items]
    candidates = [(n, p) for n, p in enumerate(payloads) if isinstance(p, CandidateAlert)]
    assert len(candidates) >= 12 and not any('"event_type":"alert"' in p for p in payloads if isinstance(p, str))
    assert all(p.record_line is payloads[n - 1] and not p.blocked for n, p in candidates)  # the record before it


def _endpoints(record: dict) -> tuple[bytes, bytes, int, int]:
    import ipaddress

    return (ipaddress.ip_address(record["src_ip"]).packed, ipaddress.ip_address(record["dest_ip"]).packed,
            record["src_port"], record["dest_port"])


@pytest.mark.parametrize("shard", ["flows", "files"])
def test_rate_windows_span_files_as_in_one_process(tmp_path, shard):
    first, second = tmp_path / "a.pcap", tmp_path / "b.pcap"
    _many_connections(first, connections=7, seed=2)
    _many_connections(second, connections=7, seed=3)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rate.yml").write_text(RATE_RULE)
    one = _cli(str(first), str(second), "--rules", str(rules), "--eve", str(tmp_path / "one.json"), "-q")
    two = _cli(str(first), str(second), "--rules", str(rules), "--eve", str(tmp_path / "two.json"), "-q",
               "--workers", "2", "--shard", shard)
    assert one.returncode == two.returncode == 0
    text = (tmp_path / "one.json").read_text()
    assert text == (tmp_path / "two.json").read_text()
    assert text.count('"event_type":"alert"') == 1  # 5 + 5 inferences of the busy client: the 10th alerts


@pytest.mark.parametrize("shard", ["flows", "files"])
def test_damaged_capture_and_summary_match(tmp_path, shard):
    damaged = tmp_path / "cut.pcap"
    data = (LAB / "mixed.pcap").read_bytes()
    damaged.write_bytes(data[: len(data) // 2 + 7])
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    notes = tmp_path / "notes.pcap"  # not a capture: the reading worker tells the others
    notes.write_text("hello, not a capture\n")
    captures = [str(notes), str(damaged)] if shard == "flows" else [str(LAB / "shadowray.pcap"), str(damaged),
                                                                      str(empty)]
    one = _cli(*captures, "--eve", str(tmp_path / "one.json"))
    two = _cli(*captures, "--eve", str(tmp_path / "two.json"), "--workers", "2", "--shard", shard)
    assert one.returncode == two.returncode == 1
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()
    assert "capture_damaged" in (tmp_path / "two.json").read_text()
    def summary(text: str) -> list[str]:
        return [line for line in text.splitlines() if "packets/s" not in line and "split by" not in line]

    assert summary(two.stdout) == summary(one.stdout)
    assert f"2, split by {shard[:-1]}" in two.stdout  # how the run was split


@pytest.mark.parametrize("shard", ["auto", "flows"])
def test_corpus_captures_are_identical_with_workers(tmp_path, corpus_dir, shard):
    """Real captures of public projects: split by file (auto, for this many files), and each
    capture's flows sharded across the workers (flows)."""
    captures = sorted(p for p in corpus_dir.rglob("*") if p.is_file() and p.suffix in (".pcap", ".pcapng", ".cap")
                      and p.stat().st_size < 2_000_000)[:60]
    assert captures
    one = _cli(*map(str, captures), "--eve", str(tmp_path / "one.json"), "-q")
    two = _cli(*map(str, captures), "--eve", str(tmp_path / "two.json"), "-q", "--workers", "2", "--shard", shard)
    assert one.returncode == two.returncode
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()


def test_workers_refuse_bad_counts(tmp_path):
    for count in ("0", "many"):
        bad = _cli(str(LAB / "shadowray.pcap"), "--workers", count, "--eve", str(tmp_path / "x.json"))
        assert bad.returncode == 2 and "--workers" in bad.stdout + bad.stderr


def test_an_unknown_placement_is_refused():
    from inspector.parallel import ParallelAnalyzer

    with pytest.raises(ValueError, match="placement must be one of load, hash"):
        ParallelAnalyzer(lambda record: None, 2, placement="random")
    bad = _cli(str(LAB / "shadowray.pcap"), "--workers", "2", "--placement", "random", "--eve", "/dev/null")
    assert bad.returncode == 2 and "--placement" in bad.stderr


def test_workers_auto_gives_one_process_output(tmp_path):
    capture = str(LAB / "mixed.pcap")
    one = _cli(capture, "-q", "--eve", str(tmp_path / "one.json"))
    auto = _cli(capture, "-q", "--eve", str(tmp_path / "auto.json"), "--workers", "auto")
    assert one.returncode == auto.returncode == 0
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "auto.json").read_bytes()


@pytest.mark.parametrize("shard", ["flows", "files"])
def test_a_failing_worker_fails_the_run_with_its_reason(tmp_path, shard):
    """A worker that raises (here: a segmentation policy whose zone lookup breaks) ends the run with
    its traceback, and the other worker is stopped, not left waiting. Run in a child process: the
    test process has threads, which a fork must not inherit."""
    script = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from inspector.parallel import ParallelAnalyzer, WorkerFailed

class BrokenPolicy:
    def zones(self, *args):
        raise RuntimeError("zone lookup exploded")

    def counts(self):  # a worker with no flow of its own gets to the end
        return {{}}

out = []
try:
    ParallelAnalyzer(out.append, 2, policy=BrokenPolicy(), shard={shard!r}).analyze_files(
        [Path({str(LAB / "mixed.pcap")!r}), Path({str(LAB / "shadowray.pcap")!r})])
except WorkerFailed as exc:
    print("FAILED", "zone lookup exploded" in str(exc))
else:
    print("NO FAILURE")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "FAILED True", done.stdout + done.stderr


@pytest.mark.parametrize(("placement", "backlog"), [("hash", None), ("load", None), ("load", -1)])
def test_a_worker_waiting_for_frames_lets_the_merge_go_on(placement, backlog):
    """With the smallest buffers (4 KiB pipes, two frames a feed, a record a batch, one batch
    queued per worker, no feed queued in the reading worker beyond the message being written:
    checked to hang without watermarks), the reading worker waits on another's full pipe, that
    worker on the parent, and the parent's merge on a record of a worker that cannot make it
    until it is fed: unless, before it waits (for frames, or for room in a feed), a worker sends
    what it has and how far it has come (its watermark). The run ends, with one process's
    records, whether flows are placed by hash, by load (on so small a capture, all with worker
    1) or all with the reading worker (no backlog is small enough). In a child process (no
    threads to fork)."""
    script = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
import inspector.parallel as parallel
from inspector.analyze import Analyzer
from inspector.sinks.eve import encode_record

parallel.PIPE_BYTES = 4096
parallel.FEED_FRAMES = 2
parallel.BATCH_RECORDS = 1
parallel.FEED_QUEUE_BYTES = 0
parallel._Inbox.MAX_QUEUED_BATCHES = 1
if {backlog!r} is not None:
    parallel.LOAD_BACKLOG_BYTES = {backlog!r}
capture = Path({str(LAB / "mixed.pcap")!r})
one, two = [], []
Analyzer(lambda record: one.append(encode_record(record))).analyze_file(capture)
parallel.ParallelAnalyzer(lambda record: two.append(encode_record(record)), 2, shard="flows",
                          placement={placement!r}).analyze_files([capture])
print(len(one), one == two)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    count, same = done.stdout.split()
    assert int(count) > 500 and same == "True", done.stderr


def test_a_capture_the_reader_cannot_open_is_the_same_error_in_the_workers(tmp_path):
    """What open_capture raises in the reading worker is raised again in each worker, so the
    file's error and its capture_damaged record are one process's."""
    from inspector.analyze import Analyzer
    from inspector.parallel import feed_capture

    text = tmp_path / "notes.pcap"
    text.write_text("hello, not a capture\n")
    for path in (text, tmp_path / "absent.pcap"):
        alone = Analyzer(lambda record: None)
        alone.analyze_file(path)
        messages: list[tuple] = []
        feed_capture(path, 2, lambda index, message, into=messages: into.append(message) if index == 0 else None)
        worker = ShardAnalyzer(0, 2, lambda batch: None, frozenset(), None, feed=iter(messages).__next__)
        worker.analyze_files([path])
        assert worker.stats.files[0].error == alone.stats.files[0].error
        assert alone.stats.files[0].error.startswith(str(path) if path == text else "cannot read: ")


def test_an_expiry_failing_at_another_workers_frame_is_contained(monkeypatch):
    """A flow table that raises while it looks for idle flows at a frame of another worker's
    (a bug) costs that frame a `parser_error`, as at the worker's own frames, not the run."""
    from inspector.capture.flows import FlowTable
    from inspector.parallel import feed_capture

    messages: list[tuple] = []
    feed_capture(LAB / "mixed.pcap", 2, lambda index, message: messages.append(message) if index == 1 else None)
    marks = [entry[1] for message in messages if message[0] == "frames" for entry in message[3] if len(entry) == 2]
    tick = FlowTable.tick
    failing = marks[len(marks) // 2]

    def tick_failing_once(table, ts):
        if ts == next(e[0] for m in messages if m[0] == "frames" for e in m[3] if len(e) == 2 and e[1] == failing):
            raise RuntimeError("expiry exploded")
        tick(table, ts)

    monkeypatch.setattr(FlowTable, "tick", tick_failing_once)
    records: list = []
    worker = ShardAnalyzer(1, 2, records.extend, frozenset(), None, feed=iter(messages).__next__, encode=False)
    worker.analyze_files([LAB / "mixed.pcap"])
    failed = [payload for _, payload, _, _ in records
              if payload is not None and payload.get("anomaly", {}).get("event") == "parser_error"]
    assert [record["anomaly"]["packet"] for record in failed] == [failing]
    assert worker.stats.detection["frame_errors"] == 1
    assert sum(1 for _, payload, _, _ in records if payload is not None and payload["event_type"] == "flow") > 10


def _run_patched(patch: str) -> str:
    """A flow-sharded run of two workers, in a child process, after `patch` (source run with
    `parallel` and `os` imported): the run's WorkerFailed message, or "NO FAILURE"."""
    script = f"""
import os, sys
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
import inspector.parallel as parallel

{patch}

try:
    parallel.ParallelAnalyzer(lambda record: None, 2, shard="flows").analyze_files([Path({str(LAB / "mixed.pcap")!r})])
except parallel.WorkerFailed as exc:
    print(repr(str(exc)))
else:
    print("NO FAILURE")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip(), done.stderr
    return done.stdout.strip()


def test_a_failing_reading_worker_fails_the_run_with_its_reason():
    """The reading worker's exception is the run's failure, not what the worker it fed saw (its
    feed ending), whichever of the two the parent hears first."""
    message = _run_patched("def route_capture(reader, routing):\n"
                           "    raise RuntimeError('capture shelf collapsed')\n"
                           "parallel.route_capture = route_capture")
    assert message.startswith("'worker 0 failed") and "capture shelf collapsed" in message, message


def test_a_reading_worker_that_dies_fails_the_run_naming_it():
    """The reading worker dies (os._exit: no exception, no message): the run fails naming it, without
    a traceback, whichever the parent hears first: its end, or the fed worker's."""
    message = _run_patched("def route_capture(reader, routing):\n    os._exit(9)\n"
                           "parallel.route_capture = route_capture")
    assert message == "'worker 0 exited without finishing'", message


@pytest.mark.parametrize("how", ["dies", "raises"])
def test_a_fed_worker_that_ends_fails_the_run_naming_it_not_the_reader(how):
    """Worker 1 dies at its first batch (os._exit) or raises there: the reader's next write to it
    fails too, and the run names worker 1 (its end, or its traceback), not the reader's failed
    write, whichever the parent hears first."""
    act = "os._exit(9)" if how == "dies" else "raise RuntimeError('feed tray jammed')"
    message = _run_patched("take = parallel.ShardAnalyzer._take\n"
                           "def _take(self, *args):\n"
                           f"    if self.index == 1:\n        {act}\n"
                           "    take(self, *args)\n"
                           "parallel.ShardAnalyzer._take = _take\n"
                           "parallel.FEED_FRAMES = 8  # many batches: the reader writes to worker 1 after it ended")
    if how == "dies":
        assert message == "'worker 1 exited without finishing'", message
    else:
        assert message.startswith("'worker 1 failed") and "feed tray jammed" in message, message


@pytest.mark.parametrize("cut", [0, 10])
def test_a_reading_worker_gone_mid_feed_is_named_as_such(cut):
    """The reading worker killed between two messages (EOF) or inside one (the pipe ends part
    way through a message, as when SIGKILL stops its writer thread mid-write): the worker fails
    with that reason (ReaderGone), not with the pipe's error."""
    import multiprocessing
    import os
    import struct

    from inspector.parallel import ReaderGone, _fed_by

    receiver, sender = multiprocessing.Pipe(False)
    if cut:  # a message that says 1000 bytes and brings 10
        os.write(sender.fileno(), struct.pack("!i", 1000) + b"x" * cut)
    sender.close()
    feed = _fed_by(receiver, lambda: ShardAnalyzer(0, 2, lambda batch: None, frozenset(), None, feed=iter(()).__next__))
    with pytest.raises(ReaderGone, match=r"the reading worker \(0\) ended before the end of the captures"):
        feed()


@pytest.mark.parametrize("shard", ["flows", "files"])
def test_progress_is_told_as_the_workers_read(shard):
    """The bytes read so far reach the parent's progress callback (the CLI's progress bar), never
    going back, and end at the captures' total size. In a child process (no threads to fork)."""
    captures = [LAB / "mixed.pcap", LAB / "shadowray.pcap"]
    script = f"""
import json, sys
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from inspector.parallel import ParallelAnalyzer

seen = []
files = [Path(p) for p in {[str(p) for p in captures]!r}]
ParallelAnalyzer(lambda record: None, 2, shard={shard!r}).analyze_files(files, progress=seen.append)
print(json.dumps(seen))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    total = sum(path.stat().st_size for path in captures)
    assert seen and seen[-1] == total
    assert seen == sorted(seen)
    assert len(seen) >= 2 and seen[0] < total  # told before the end, not only at it


def test_the_parent_reads_ahead_of_the_merge_up_to_its_cap():
    """A worker that got ahead is read while the merge waits for another, until its queue holds
    MAX_QUEUED_BATCHES; then only the awaited worker's pipe is read."""
    import multiprocessing
    import pickle
    import threading

    from inspector.parallel import _Inbox

    (ahead_out, ahead_in), (behind_out, behind_in) = multiprocessing.Pipe(False), multiprocessing.Pipe(False)
    cap = _Inbox.MAX_QUEUED_BATCHES
    for n in range(cap + 8):
        ahead_in.send_bytes(pickle.dumps([((0, n), n)]))
    ahead_in.send_bytes(pickle.dumps([]))  # the end of worker 0
    reads = Counter()

    def read(index, receiver):
        reads[index] += 1
        batch = pickle.loads(receiver.recv_bytes())
        return batch or None

    inbox = _Inbox([ahead_out, behind_out], read)
    got = []
    waiting = threading.Thread(target=lambda: got.append(next(inbox.stream(1))))
    waiting.start()
    waiting.join(timeout=1.0)
    assert waiting.is_alive() and reads[0] == cap  # read ahead to the cap, now waiting for worker 1 alone
    behind_in.send_bytes(pickle.dumps([((0, 0), "first")]))
    waiting.join(timeout=10)
    assert got == [((0, 0), "first")]
    assert [item[1] for item in inbox.stream(0)] == list(range(cap + 8))  # in order, to its end


def test_a_feed_queue_holds_messages_for_a_worker_not_reading_up_to_its_limit():
    """The reading worker goes on while a worker's pipe is full, until `limit` bytes wait for it
    (one message is always taken); the worker then gets every message, in order."""
    import multiprocessing
    import threading

    from inspector.parallel import FeedQueue

    receiver, sender = multiprocessing.Pipe(False)
    message = 200_000  # over the pipe's capacity (1 MiB at most): the first write alone fills it
    queue = FeedQueue(sender, limit=5 * message)
    sent = []

    def send_all():
        for n in range(12):
            queue.send(bytes([n]) * message)
            sent.append(n)

    sending = threading.Thread(target=send_all, daemon=True)
    sending.start()
    sending.join(timeout=2.0)  # nobody reads: the queue fills to its limit, then send waits
    assert sending.is_alive()
    assert 5 <= len(sent) <= 5 + 1_048_576 // message + 1  # the limit, plus what the pipe took
    got = [receiver.recv_bytes() for _ in range(12)]
    sending.join(timeout=10)
    assert not sending.is_alive() and sent == list(range(12))
    assert got == [bytes([n]) * message for n in range(12)]
    queue.close()
    with pytest.raises(EOFError):
        receiver.recv_bytes()


def test_a_feed_message_goes_straight_into_a_pipe_with_room():
    """A message the pipe has room for is in it when send returns (nothing queued for the
    writing thread); one larger than the pipe leaves the rest queued, written as the worker
    reads, and the worker gets both whole and in order."""
    import multiprocessing

    from inspector.parallel import FeedQueue, _pipe_bytes

    receiver, sender = multiprocessing.Pipe(False)
    queue = FeedQueue(sender, limit=8 << 20)
    queue.send(b"m" * 1000)
    assert queue._queued == 0 and _pipe_bytes(receiver.fileno()) == 4 + 1000
    big = bytes(range(256)) * 8192  # 2 MiB: more than a pipe holds (64 KiB here, 1 MiB widened)
    queue.send(big)
    assert queue._queued > 0 and queue.backlog() == 4 + 1000 + 4 + len(big)
    assert receiver.recv_bytes() == b"m" * 1000 and receiver.recv_bytes() == big
    queue.close()
    with pytest.raises(EOFError):
        receiver.recv_bytes()


def test_one_workers_full_pipe_does_not_stop_the_others_frames():
    """Nobody reads either worker's pipe and the capture is still read to its end, the messages
    held in the reading worker's queues; worker 1 gets every message while worker 0 has read
    nothing, then worker 0 gets all of its own."""
    import multiprocessing
    import pickle
    import threading

    from inspector.parallel import FeedQueue, feed_capture

    pipes = [multiprocessing.Pipe(False) for _ in range(2)]
    queues = [FeedQueue(sender, limit=64 << 20) for _, sender in pipes]
    held = [0, 0]

    def send(index, message):
        data = pickle.dumps(message)
        held[index] += len(data)
        queues[index].send(data)

    reading = threading.Thread(target=feed_capture, args=(LAB / "mixed.pcap", 2, send), daemon=True)
    reading.start()
    reading.join(timeout=60)
    assert not reading.is_alive()  # read to the end with nobody reading either pipe
    from inspector.parallel import fcntl

    pipe_bytes = 65536
    if fcntl is not None and hasattr(fcntl, "F_GETPIPE_SZ"):
        pipe_bytes = fcntl.fcntl(pipes[0][0].fileno(), fcntl.F_GETPIPE_SZ)
    assert held[0] > pipe_bytes  # straight into the pipe, the reading would have stopped
    kinds = []
    while not kinds or kinds[-1] != "end":
        kinds.append(pickle.loads(pipes[1][0].recv_bytes())[0])
    assert kinds[0] == "open" and kinds.count("frames") > 1
    first = [pickle.loads(pipes[0][0].recv_bytes())[0] for _ in range(len(kinds))]
    assert first == kinds  # the same messages, held for worker 0 until it read
    for queue in queues:
        queue.close()


def test_a_feed_queue_whose_worker_is_gone_raises():
    import multiprocessing

    from inspector.parallel import FeedQueue

    receiver, sender = multiprocessing.Pipe(False)
    queue = FeedQueue(sender, limit=1)
    receiver.close()
    with pytest.raises(OSError):
        for _ in range(100):  # the write that fails is the queue's; a later send or close says so
            queue.send(b"x" * 100_000)
        queue.close()


def test_a_feed_queue_says_when_it_is_about_to_wait():
    """on_wait is called once a send would wait for room (the reading worker sends its records
    and watermark then), not while the queue has room."""
    import multiprocessing
    import threading

    from inspector.parallel import FeedQueue

    receiver, sender = multiprocessing.Pipe(False)
    waits = []
    queue = FeedQueue(sender, limit=300_000, on_wait=lambda: waits.append(len(waits)))
    queue.send(b"a" * 200_000)
    assert waits == []  # one message is always taken
    sending = threading.Thread(target=lambda: [queue.send(bytes([n]) * 200_000) for n in range(12)], daemon=True)
    sending.start()
    sending.join(timeout=2.0)
    assert sending.is_alive() and waits  # nobody reads: full, and said so before waiting
    got = [receiver.recv_bytes() for _ in range(13)]
    sending.join(timeout=10)
    assert got[0] == b"a" * 200_000 and got[1:] == [bytes([n]) * 200_000 for n in range(12)]
    queue.close()


def test_load_placement_gives_new_flows_to_workers_keeping_up_in_turn_else_to_the_reader():
    """Feeds.pick reads each fed worker's backlog (its pipe's unread bytes and its queue, asked
    again after each message to it): under LOAD_BACKLOG_BYTES it takes the next new flow, in
    turn; when no worker is under it, the reading worker (0) keeps the flow."""
    import multiprocessing
    import time

    from inspector.parallel import LOAD_BACKLOG_BYTES, Feeds

    def fill(index: int) -> int:  # a worker that reads nothing: over the backlog limit
        chunk, count = b"x" * 100_000, LOAD_BACKLOG_BYTES // 100_000 + 1
        for _ in range(count):
            feeds.send(index, chunk)
        deadline = time.monotonic() + 10
        while feeds._queues[index].backlog() < LOAD_BACKLOG_BYTES and time.monotonic() < deadline:
            time.sleep(0.01)
        assert feeds._queues[index].backlog() >= LOAD_BACKLOG_BYTES
        return count

    pipes = [multiprocessing.Pipe(False) for _ in range(2)]
    feeds = Feeds([sender for _, sender in pipes], on_wait=lambda: None)
    try:
        assert [feeds.pick(key) for key in range(4)] == [1, 2, 1, 2]  # both keeping up: in turn
        sent = fill(1)
        assert [feeds.pick(key) for key in range(3)] == [2, 2, 2]  # worker 1 behind: worker 2
        fill(2)
        assert feeds.pick(0) == 0  # both behind: the reading worker keeps it
        for _ in range(sent):  # worker 1 catches up
            pipes[0][0].recv_bytes()
        deadline = time.monotonic() + 10
        while feeds._queues[1].backlog() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert feeds.pick(0) == 0  # the backlog is asked again at the next message, not per flow
        feeds.send(1, ("frames", 0, [], [], 0))
        assert feeds.pick(0) == 1
    finally:
        for receiver, _ in pipes:  # let the writers finish
            receiver.close()
        feeds.close(discard=True)


def _fragmented(path: Path, out: Path) -> Path:
    """The capture with every third IPv4 TCP segment of over 200 bytes cut into IP fragments, the
    last fragments of every seventh of those sent first (scapy)."""
    from scapy.all import IP, TCP, fragment, rdpcap, wrpcap

    packets, cut = [], 0
    for packet in rdpcap(str(path)):
        if IP in packet and TCP in packet and len(packet[TCP].payload) > 200:
            cut += 1
            if cut % 3 == 0:
                pieces = fragment(packet, fragsize=96)
                for piece in pieces:
                    piece.time = packet.time
                packets.extend(reversed(pieces) if cut % 7 == 0 else pieces)
                continue
        packets.append(packet)
    wrpcap(str(out), packets)
    return out


@pytest.mark.parametrize("placement", ["load", "hash"])
def test_fragmented_flows_give_one_process_output(tmp_path, placement):
    """Fragments are placed by a decode in the reading worker, which names the owner of the
    packet they make; every worker decodes them and that owner keeps it: the records are one
    process's, with 2 and 3 workers."""
    capture = _fragmented(LAB / "mixed.pcap", tmp_path / "fragmented.pcap")
    one = _cli(str(capture), "-q", "--eve", str(tmp_path / "one.json"))
    text = (tmp_path / "one.json").read_text()
    stats = json.loads(text.splitlines()[-1])["stats"]
    assert one.returncode == 0 and stats["decoder"]["ipv4_reassembled"] > 100 and text.count('"triton"') > 100
    for workers in (2, 3):
        many = _cli(str(capture), "-q", "--eve", str(tmp_path / "many.json"), "--workers", str(workers),
                    "--placement", placement)
        assert many.returncode == 0, many.stderr
        assert (tmp_path / "many.json").read_text() == text


def test_worker_pipes_are_widened_where_the_system_allows():
    import os

    from inspector.parallel import PIPE_BYTES, _widen_pipe, fcntl

    reader, writer = os.pipe()
    try:
        if fcntl is None or not hasattr(fcntl, "F_GETPIPE_SZ"):  # no pipe sizes here: nothing done, nothing raised
            assert _widen_pipe(reader) is None
            return
        before = fcntl.fcntl(reader, fcntl.F_GETPIPE_SZ)
        _widen_pipe(reader)
        after = fcntl.fcntl(reader, fcntl.F_GETPIPE_SZ)
    finally:
        os.close(reader)
        os.close(writer)
    limit = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    if os.geteuid() == 0 or limit >= PIPE_BYTES:
        assert after >= PIPE_BYTES > before
    else:  # refused: the default stays, and nothing raised
        assert after == before


def test_a_sharded_run_makes_what_workers_share_before_it_forks(tmp_path):
    """What one process leaves to first use (the HPACK Huffman automaton, picklescan's import)
    a sharded run makes in the parent before the fork, once for every worker: the parent, which
    decodes no frame itself, has both after the run; a process that has only loaded the
    analyzer has neither."""
    code = (
        "import sys\n"
        "import inspector.capture.hpack as hpack\n"
        "from inspector.parallel import ParallelAnalyzer\n"
        "before = (hpack._automaton is not None, 'picklescan' in sys.modules)\n"
        "records = []\n"
        "analyzer = ParallelAnalyzer(records.append, 2, shard='flows')\n"
        f"analyzer.analyze_files([__import__('pathlib').Path({str(LAB / 'bucket-poisoning.pcap')!r})])\n"
        "after = (hpack._automaton is not None, 'picklescan' in sys.modules)\n"
        "print(before, after, len(records) > 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                          check=True)
    assert done.stdout.split() == ["(False,", "False)", "(True,", "True)", "True"], done.stdout + done.stderr
