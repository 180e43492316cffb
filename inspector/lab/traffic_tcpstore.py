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


def opening(magic: int = MAGIC) -> tuple[bytes, bytes]:
    """(query, reply) of how torch opens a connection: VALIDATE with the magic and a PING, in one write."""
    return StoreWire.validate(magic) + bytes([NEW["PING"]]) + (4242).to_bytes(4, "little"), (4242).to_bytes(4, "little")


def set_query(key: str, value: bytes) -> bytes:
    return bytes([NEW["SET"]]) + StoreWire.string("/" + key) + StoreWire.string(value)


def wait_query(key: str) -> bytes:
    return bytes([NEW["WAIT"]]) + StoreWire.keys(["/" + key])


def get_query(key: str) -> bytes:
    return bytes([NEW["GET"]]) + StoreWire.string("/" + key)


def delete_key_query(key: str) -> bytes:
    return bytes([NEW["DELETE_KEY"]]) + StoreWire.string("/" + key)


def list_keys_query() -> bytes:
    return bytes([NEW["LIST_KEYS"]])


class StoreSession:
    """One client connection to a TCPStore server (new numbering)."""

    def __init__(self, cap: Capture, rng: random.Random, client: str, server: str, *, port: int = PORT,
                 start: float = EPOCH, validate: bool = True, magic: int = MAGIC,
                 client_port: int | None = None) -> None:
        sport = client_port if client_port is not None else rng.randrange(40000, 60000)
        self.conversation = TcpConversation(cap, (client, sport), (server, port), start, rng).handshake()
        if validate:
            self.query(*opening(magic))

    def query(self, query: bytes, reply: bytes = b"") -> None:
        self.conversation.send(CLIENT, query, think=0.0003)
        if reply:
            self.conversation.send(SERVER, reply, think=0.0002)

    def set(self, key: str, value: bytes) -> None:
        self.query(set_query(key, value))

    def get(self, key: str, value: bytes) -> None:
        """WAIT then GET, as the C++ client's get() does."""
        self.query(wait_query(key), b"\x00")
        self.query(get_query(key), StoreWire.string(value))

    def delete_key(self, key: str) -> None:
        self.query(delete_key_query(key), StoreWire.i64(1))

    def list_keys(self, keys: list[str]) -> None:
        self.query(list_keys_query(), StoreWire.i64(len(keys)) + b"".join(StoreWire.string(k) for k in keys))

    def close(self) -> None:
        self.conversation.close()


def rendezvous_value(pickled: bytes) -> bytes:
    """What torchrun's c10d rendezvous backend stores: base64 of the pickled state."""
    return base64.b64encode(pickled)

