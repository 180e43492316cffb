"""The `nccl` raw-TCP protocol: placeholder until its parser lands (ML-protocol parsers issue).

Implements the raw-TCP interface of inspector.rawtcp and detects nothing yet.
"""

from __future__ import annotations

from inspector.limits import Limits

APP_PROTO = "nccl"


def detect(client: bytes, server: bytes) -> bool | None:
    return False


class Session:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def receive_data(self, direction: int, data: bytes, ts: float) -> list:
        return []

    def receive_gap(self, direction: int, length: int, ts: float) -> list:
        return []

    def receive_eof(self, direction: int, ts: float) -> list:
        return []
