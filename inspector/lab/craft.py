"""Crafting TCP conversations into pcaps, as a real stack would put them on the wire.

A :class:`Capture` collects timestamped frames from any number of :class:`TcpConversation`s and
writes them, time-ordered, with scapy. Conversations do what a kernel does: three-way handshake,
MSS-sized segments, delayed ACKs (one per two segments), FIN teardown or RST, with a seeded
jitter so a seed gives the same bytes every time. Optional faults for testing reassembly:
reordered, retransmitted and missing segments.

Application bytes come from real libraries (h2 for HTTP/2 framing, botocore for SigV4 ...):
this module only moves them.
"""

from __future__ import annotations

import ipaddress
import json
import random
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

CLIENT = 0
SERVER = 1


@dataclass
class Capture:
    """Frames from several conversations, written in time order."""

    frames: list[tuple[float, int, bytes]] = field(default_factory=list)  # (ts, seq, frame)
    _counter: int = 0

    def add(self, ts: float, frame: bytes) -> None:
        self._counter += 1
        self.frames.append((ts, self._counter, frame))

    def write(self, path: str | Path, nanosecond: bool = False) -> int:
        """Write a pcap (Ethernet link type); returns the number of frames."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_pcap(path, ((ts, frame) for ts, _, frame in sorted(self.frames)), nanosecond=nanosecond)
        return len(self.frames)


def write_pcap(target: str | Path | BinaryIO, frames: Iterable[tuple[float, bytes]], nanosecond: bool = False,
               linktype: int = 1) -> None:
    """A classic pcap (little-endian; µs or ns timestamps) from (ts, frame) pairs, to a file
    named `target` or into an open binary file."""
    if isinstance(target, str | Path):
        with open(target, "wb") as fh:
            write_pcap(fh, frames, nanosecond, linktype)
        return
    magic, scale = (0xA1B23C4D, 1_000_000_000) if nanosecond else (0xA1B2C3D4, 1_000_000)
    target.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, 262144, linktype))
    for ts, frame in frames:
        sec = int(ts)
        frac = min(round((ts - sec) * scale), scale - 1)
        target.write(struct.pack("<IIII", sec, frac, len(frame), len(frame)))
        target.write(frame)


#: The link layers :func:`relink` puts Ethernet frames under, with their pcap link types: Linux
#: cooked captures (`tcpdump -i any`: SLL, SLL2 since libpcap 1.10), Ethernet with one 802.1Q tag
#: (vlan) and with an 802.1ad tag outside it (qinq).
RELINK_TYPES = {"ethernet": 1, "vlan": 1, "qinq": 1, "sll": 113, "sll2": 276}


def relink(frame: bytes, link: str) -> bytes:
    """An Ethernet frame's payload under the link layer `link` (a key of RELINK_TYPES), as the
    capture of the same packet on a cooked or tagged interface would hold it."""
    source, ethertype, payload = frame[6:12], frame[12:14], frame[14:]
    if link == "sll":  # packet type (to us), ARPHRD_ETHER, address length, address, protocol
        return struct.pack("!HHH", 0, 1, 6) + source + b"\0\0" + ethertype + payload
    if link == "sll2":  # protocol, reserved, interface index, ARPHRD_ETHER, packet type, address
        return ethertype + b"\0\0" + struct.pack("!IHBB", 2, 1, 0, 6) + source + b"\0\0" + payload
    if link == "vlan":
        return frame[:12] + b"\x81\x00\x00\x64" + ethertype + payload  # VLAN 100
    if link == "qinq":
        return frame[:12] + b"\x88\xa8\x00\x0a\x81\x00\x00\x64" + ethertype + payload  # S-VLAN 10, C-VLAN 100
    if link == "ethernet":
        return frame
    raise ValueError(f"unknown link layer {link!r}")


def generate_captures(captures: dict[str, Callable[[Capture, random.Random], dict[str, Any]]],
                      out_dir: str | Path, seed: int, truth_name: str) -> dict[str, dict[str, Any]]:
    """Run each capture builder with its own seeded generator, write the pcaps and the truth
    file (`{capture: truth}` with the packet count added) into `out_dir`; returns the truth."""
    out = Path(out_dir)
    truth: dict[str, dict[str, Any]] = {}
    for name, make in captures.items():
        cap = Capture()
        truth[name] = make(cap, random.Random(f"{seed}:{name}"))
        truth[name]["packets"] = cap.write(out / name)
    (out / truth_name).write_text(json.dumps(truth, indent=1, sort_keys=True) + "\n")
    return truth


def _mac(ip: str) -> str:
    packed = ipaddress.ip_address(ip).packed[-4:]
    return "02:00:" + ":".join(f"{b:02x}" for b in packed)


class TcpConversation:
    """One TCP connection between a client and a server endpoint."""

    def __init__(self, capture: Capture, client: tuple[str, int], server: tuple[str, int], start: float,
                 rng: random.Random, *, mss: int = 1460, rtt: float = 0.0004, window: int = 65535) -> None:
        self.capture = capture
        self.ends = (client, server)
        self.now = start
        self.rng = rng
        self.mss = mss
        self.rtt = rtt
        self.window = window
        self.seq = [rng.randrange(1 << 32), rng.randrange(1 << 32)]
        self.acked = [0, 0]  # what each side has acknowledged of the other (next expected seq)
        self._unacked_segments = [0, 0]
        self.v6 = ":" in client[0]
        self.macs = (_mac(client[0]), _mac(server[0]))

    # -- timing ------------------------------------------------------------------------------

    def wait(self, seconds: float) -> None:
        self.now += seconds

    def _tick(self, base: float | None = None) -> float:
        step = (base if base is not None else self.rtt / 2) * self.rng.uniform(0.7, 1.5)
        self.now += step
        return self.now

    # -- frames ------------------------------------------------------------------------------

    def _frame(self, side: int, flags: str, seq: int, ack: int, payload: bytes = b"") -> bytes:
        (src, sport), (dst, dport) = (self.ends if side == CLIENT else self.ends[::-1])
        smac, dmac = self.macs if side == CLIENT else self.macs[::-1]
        ip = IPv6(src=src, dst=dst) if self.v6 else IP(src=src, dst=dst, id=self.rng.randrange(65536))
        tcp = TCP(sport=sport, dport=dport, flags=flags, seq=seq & 0xFFFFFFFF, ack=ack & 0xFFFFFFFF,
                  window=self.window)
        return bytes(Ether(src=smac, dst=dmac) / ip / tcp / payload)

    def _emit(self, side: int, flags: str, seq: int, ack: int, payload: bytes = b"",
              ts: float | None = None) -> None:
        self.capture.add(self.now if ts is None else ts, self._frame(side, flags, seq, ack, payload))

    def handshake(self) -> TcpConversation:
        c, s = self.seq
        self._emit(CLIENT, "S", c, 0)
        self._tick()
        self._emit(SERVER, "SA", s, c + 1)
        self._tick()
        self._emit(CLIENT, "A", c + 1, s + 1)
        self.seq = [c + 1, s + 1]
        self.acked = [s + 1, c + 1]
        return self

    def send(self, side: int, data: bytes, *, reorder: bool = False, retransmit: int | None = None,
             drop: int | None = None, think: float | None = None) -> None:
        """Send `data` from `side` in MSS segments; the peer ACKs every second one.

        reorder: swap each pair of segments on the wire. retransmit=i: segment i is sent twice.
        drop=i: segment i never appears in the capture (the peer still ACKs it: a capture gap).
        """
        if think:
            self.wait(think)
        peer = 1 - side
        segments = []
        offset = 0
        while offset < len(data):
            chunk = data[offset:offset + self.mss]
            segments.append((self.seq[side] + offset, chunk))
            offset += len(chunk)
        order = list(range(len(segments)))
        if reorder:
            for i in range(0, len(order) - 1, 2):
                order[i], order[i + 1] = order[i + 1], order[i]
        received = [False] * len(segments)
        for n, index in enumerate(order):
            seq, chunk = segments[index]
            self._tick(0.00002)
            flags = "PA" if index == len(segments) - 1 else "A"
            if index != drop:  # a dropped segment reached the peer, not the capture
                self._emit(side, flags, seq, self.seq[peer], chunk)
            received[index] = True
            if index == retransmit:
                self._tick(self.rtt)
                self._emit(side, flags, seq, self.seq[peer], chunk)
            if n % 2 == 1 or n == len(order) - 1:
                contiguous = received.index(False) if not all(received) else len(segments)
                ack = segments[contiguous][0] if contiguous < len(segments) else self.seq[side] + len(data)
                self._tick()
                self._emit(peer, "A", self.seq[peer], ack)
        self.seq[side] += len(data)

    def close(self, side: int = CLIENT) -> None:
        """FIN from `side`, FIN from the peer, final ACK."""
        peer = 1 - side
        self._tick()
        self._emit(side, "FA", self.seq[side], self.seq[peer])
        self.seq[side] += 1
        self._tick()
        self._emit(peer, "FA", self.seq[peer], self.seq[side])
        self.seq[peer] += 1
        self._tick()
        self._emit(side, "A", self.seq[side], self.seq[peer])

    def reset(self, side: int = CLIENT) -> None:
        self._tick()
        self._emit(side, "R", self.seq[side], 0)
