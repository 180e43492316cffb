"""Scenarios made of HTTP/1.1 calls to one service: the same list of requests goes into the capture (with the
answers a server gives) and, live, out through `Replay.send_http`.

Requests and answers come from the traffic library (inspector.lab.traffic_*), so a replay sends
byte for byte the request line, headers and body the capture carries (Host and Content-Length
are set by http.client for the target).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from inspector.lab.recorder import Lab, LabHttp
from inspector.lab.replay import Replay


@dataclass(frozen=True, kw_only=True)
class Call:
    """One request, the answer the capture shows, the EVE record it makes, and its attack step."""

    request: bytes
    answer: bytes
    event: str
    what: str
    step: str | None = None
    #: Seconds before this call (jittered by the scenario's generator).
    pause: float = 0.5


def play(lab: Lab, client: str, server: str, port: int, start: float, calls: Sequence[Call]) -> LabHttp:
    """The calls on one keep-alive connection; returns the closed session (its `now` is the end)."""
    session = lab.http(client, server, port, start=start)
    for n, call in enumerate(calls):
        if n:
            session.wait(call.pause * lab.rng.uniform(0.7, 1.3))
        session.exchange(call.request, call.answer, event=call.event, what=call.what, step=call.step)
    session.close()
    return session


def replay_calls(replay: Replay, calls: Sequence[Call]) -> None:
    for call in calls:
        replay.attempt(call.what, lambda call=call: replay.send_http(call.request), step=call.step)
