"""NCCL socket traffic: bootstrap and net-socket connections opening the way NCCL >= 2.16 does.

Bytes come from `inspector.lab.ncclcaps.NcclWire` (the wire brief's layouts): the 12-byte
handshake (u64 magic, u32 socket type), then i32-length-framed messages.
"""

from __future__ import annotations

import random

from inspector.lab.craft import CLIENT, Capture, TcpConversation
from inspector.lab.ncclcaps import BOOTSTRAP, SOCKET_MAGIC, NcclWire
from inspector.lab.traffic_http import EPOCH


def bootstrap_rank_info(cap: Capture, rng: random.Random, rank_host: str, root: str, *, magic: int,
                        rank: int = 1, nranks: int = 2, start: float = EPOCH,
                        client_port: int | None = None) -> TcpConversation:
    """A rank reporting to the bootstrap root (NCCL 2.23-2.28 layout: 172-byte extInfo); the closed conversation."""
    root_host, _, root_port = root.rpartition(":")
    sport = client_port if client_port is not None else rng.randrange(40000, 60000)
    conversation = TcpConversation(cap, (rank_host, sport), (root_host, int(root_port)), start, rng).handshake()
    info = NcclWire.rank_info(172, rank, nranks, f"{rank_host}:41001", f"{rank_host}:41002")
    conversation.send(CLIENT, NcclWire.handshake(magic, BOOTSTRAP) + NcclWire.frame(info))
    conversation.close()
    return conversation


def raw_handshake(cap: Capture, rng: random.Random, client: str, server: str, *, socket_type: int,
                  magic: int = SOCKET_MAGIC, payload: bytes = b"", start: float = EPOCH,
                  client_port: int | None = None) -> TcpConversation:
    """A connection that sends the handshake with `socket_type`, then `payload`, and closes; the conversation."""
    host, _, port = server.rpartition(":")
    sport = client_port if client_port is not None else rng.randrange(40000, 60000)
    conversation = TcpConversation(cap, (client, sport), (host, int(port)), start, rng).handshake()
    conversation.send(CLIENT, NcclWire.handshake(magic, socket_type) + payload)
    conversation.close()
    return conversation
