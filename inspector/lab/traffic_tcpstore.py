"""PyTorch TCPStore traffic: a client connection speaking the new (torch >= 2.2) query numbering.

Queries and replies are encoded by `inspector.lab.tcpstorecaps.StoreWire` from the wire brief
(u8 query type, u64-length strings, little-endian integers). A :class:`StoreSession` opens the
way torch does - VALIDATE with the magic, then PING - unless told otherwise, and keys get
TCPStore's "/" prefix as the C++ client adds it.
"""

from __future__ import annotations

import base64
import random

from inspector.lab.craft import CLIENT, SERVER, Capture, TcpConversation
from inspector.lab.tcpstorecaps import MAGIC, NEW, StoreWire
from inspector.lab.traffic_http import EPOCH

PORT = 29500


class StoreSession:
    """One client connection to a TCPStore server (new numbering)."""

    def __init__(self, cap: Capture, rng: random.Random, client: str, server: str, *, port: int = PORT,
                 start: float = EPOCH, validate: bool = True, magic: int = MAGIC) -> None:
        self.conversation = TcpConversation(cap, (client, rng.randrange(40000, 60000)), (server, port), start,
                                            rng).handshake()
        if validate:
            self.query(StoreWire.validate(magic) + bytes([NEW["PING"]]) + (4242).to_bytes(4, "little"),
                       (4242).to_bytes(4, "little"))

    def query(self, query: bytes, reply: bytes = b"") -> None:
        self.conversation.send(CLIENT, query, think=0.0003)
        if reply:
            self.conversation.send(SERVER, reply, think=0.0002)

    def set(self, key: str, value: bytes) -> None:
        self.query(bytes([NEW["SET"]]) + StoreWire.string("/" + key) + StoreWire.string(value))

    def get(self, key: str, value: bytes) -> None:
        """WAIT then GET, as the C++ client's get() does."""
        self.query(bytes([NEW["WAIT"]]) + StoreWire.keys(["/" + key]), b"\x00")
        self.query(bytes([NEW["GET"]]) + StoreWire.string("/" + key), StoreWire.string(value))

    def delete_key(self, key: str) -> None:
        self.query(bytes([NEW["DELETE_KEY"]]) + StoreWire.string("/" + key), StoreWire.i64(1))

    def list_keys(self, keys: list[str]) -> None:
        self.query(bytes([NEW["LIST_KEYS"]]), StoreWire.i64(len(keys)) + b"".join(StoreWire.string(k) for k in keys))

    def close(self) -> None:
        self.conversation.close()


def rendezvous_value(pickled: bytes) -> bytes:
    """What torchrun's c10d rendezvous backend stores: base64 of the pickled state."""
    return base64.b64encode(pickled)

