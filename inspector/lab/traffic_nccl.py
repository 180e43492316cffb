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
                        rank: int = 1, nranks: int = 2, start: float = EPOCH) -> None:
    """A rank reporting to the bootstrap root (NCCL 2.23-2.28 layout: 172-byte extInfo)."""
    root_host, _, root_port = root.rpartition(":")
    conversation = TcpConversation(cap, (rank_host, rng.randrange(40000, 60000)), (root_host, int(root_port)),
                                   start, rng).handshake()
    info = NcclWire.rank_info(172, rank, nranks, f"{rank_host}:41001", f"{rank_host}:41002")
    conversation.send(CLIENT, NcclWire.handshake(magic, BOOTSTRAP) + NcclWire.frame(info))
    conversation.close()


def raw_handshake(cap: Capture, rng: random.Random, client: str, server: str, *, socket_type: int,
                  magic: int = SOCKET_MAGIC, payload: bytes = b"", start: float = EPOCH) -> None:
    """A connection that sends the handshake with `socket_type`, then `payload`, and closes."""
    host, _, port = server.rpartition(":")
    conversation = TcpConversation(cap, (client, rng.randrange(40000, 60000)), (host, int(port)), start,
                                   rng).handshake()
    conversation.send(CLIENT, NcclWire.handshake(magic, socket_type) + payload)
    conversation.close()
