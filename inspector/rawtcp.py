"""Raw-TCP protocol sessions (NCCL, PyTorch TCPStore, ...): their events and their detection.

A raw-TCP protocol module provides

    APP_PROTO = "tcpstore"
    def detect(client: bytes, server: bytes) -> bool | None    # first bytes of each direction
    class Session:                                             # sans-IO, one per connection
        def __init__(self, limits: Limits) -> None
        def receive_data(self, direction, data, ts) -> list[Transaction | SessionAnomaly]
        def receive_gap(self, direction, length, ts) -> list[...]
        def receive_eof(self, direction, ts) -> list[...]
        def picked_up_midstream(self) -> None                  # optional: no handshake captured

`detect` answers True (this protocol; the sides are as given), None (cannot tell yet: more
bytes may decide) or False. It may also answer "swapped" (the bytes show the sides are the other
way round). A session reports what it understood as :class:`Transaction` events: one EVE record
each, `{"event_type": event_type, event_type: data, ...}`. Offline the stream router feeds
sessions reassembled bytes; live the mitmproxy addon feeds them `tcp_message` contents. A
session that has `picked_up_midstream` is told, before any data, when the capture holds no
handshake of its connection (what the connection opened with is then unknown).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SWAPPED = "swapped"


@dataclass(frozen=True, slots=True, kw_only=True)
class Transaction:
    """One application-level exchange (a request and its reply, a handshake, a message)."""

    event_type: str
    data: dict[str, Any]
    ts: float
