"""Labelled sessions: the traffic library's sessions, recording the ground truth as they put traffic on the wire.

A :class:`Lab` is what scenarios and the benign background build with. It holds the capture
being written, the truth flows (inspector.lab.truth) and the label of the traffic being made (a
scenario name, or `benign`). Its sessions wrap the traffic library's (inspector.lab.traffic_http,
traffic_tcpstore, traffic_nccl): each connection becomes a truth flow with its Community ID,
5-tuple, zones and times, and each exchange a truth transaction with its index in the flow,
the EVE event type it must produce, the attack step it belongs to and a line saying what it is.

    lab.label = "triton-log-file"
    rest = lab.http(net.ATTACKER, net.TRITON, net.TRITON_HTTP, start=t)
    rest.exchange(rest_logging({"log_file": "/root/.bashrc"}), json_response({}), event="triton",
                  step="rest", what="POST /v2/logging log_file=/root/.bashrc")
    rest.close()

Client ports are drawn from the scenario's seeded generator, never reused for the same server
endpoint within a capture, so every flow has its own Community ID.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterator
from contextlib import contextmanager

from inspector.capture.packet import IPPROTO_TCP
from inspector.communityid import community_id
from inspector.lab import network
from inspector.lab.craft import Capture, TcpConversation
from inspector.lab.h2wire import GrpcCall
from inspector.lab.tcpstorecaps import MAGIC
from inspector.lab.traffic_http import GrpcSession, HttpSession
from inspector.lab.traffic_nccl import bootstrap_rank_info, raw_handshake
from inspector.lab.traffic_tcpstore import StoreSession
from inspector.lab.truth import BENIGN, TruthFlow, TruthTransaction


class Lab:
    """The capture under construction, its truth flows, and the label of the traffic being made."""

    def __init__(self, capture: Capture | None = None) -> None:
        self.capture = capture if capture is not None else Capture()
        self.flows: list[TruthFlow] = []
        self.label = BENIGN
        self.rng = random.Random(0)
        self._ports: set[tuple[str, int, str, int]] = set()

    @contextmanager
    def making(self, label: str, rng: random.Random) -> Iterator[Lab]:
        """Traffic made inside the block is labelled `label` and drawn from `rng`."""
        saved = self.label, self.rng
        self.label, self.rng = label, rng
        try:
            yield self
        finally:
            self.label, self.rng = saved

    def client_port(self, client: str, server: str, port: int, low: int = 32768, high: int = 60999) -> int:
        """An ephemeral port not yet used by `client` towards this server endpoint."""
        while True:
            candidate = self.rng.randrange(low, high)
            key = (client, candidate, server, port)
            if key not in self._ports:
                self._ports.add(key)
                return candidate

    def _flow(self, conversation: TcpConversation, start: float) -> TruthFlow:
        (client, sport), (server, dport) = conversation.ends
        flow = TruthFlow(community_id=community_id(ipaddress.ip_address(client).packed,
                                                   ipaddress.ip_address(server).packed, IPPROTO_TCP, sport, dport),
                         src_ip=client, src_port=sport, dest_ip=server, dest_port=dport, start=start, end=start,
                         label=self.label, src_zone=network.zone_of(client), dest_zone=network.zone_of(server))
        self.flows.append(flow)
        return flow

    # -- sessions ----------------------------------------------------------------------------

    def http(self, client: str, server: str, port: int, *, start: float, think: float = 0.002) -> LabHttp:
        session = HttpSession(self.capture, self.rng, client, server, port, start=start,
                              client_port=self.client_port(client, server, port), think=think)
        return LabHttp(self, session.conversation, start, session)

    def grpc(self, client: str, server: str, port: int, *, start: float) -> LabGrpc:
        session = GrpcSession(self.capture, self.rng, client, server, port, start=start,
                              client_port=self.client_port(client, server, port))
        return LabGrpc(self, session.conversation, start, session)

    def store(self, client: str, server: str, *, start: float, port: int = network.TCPSTORE_PORT,
              validate: bool = True, magic: int = MAGIC, step: str | None = None) -> LabStore:
        """A TCPStore client connection; opening it (VALIDATE, PING) makes two transactions unless
        `validate` is False."""
        sport = self.client_port(client, server, port, 40000, 60000)
        session = StoreSession(self.capture, self.rng, client, server, port=port, start=start, validate=validate,
                               magic=magic, client_port=sport)
        store = LabStore(self, session.conversation, start, session)
        if validate:
            what = "VALIDATE" + ("" if magic == MAGIC else f" magic {magic:#x}")
            store.record(start, "tcpstore", what, step)
            store.record(start, "tcpstore", "PING", step)
        return store

    def nccl_bootstrap(self, rank_host: str, root: str, root_port: int, *, start: float, magic: int, rank: int,
                       nranks: int, step: str | None = None) -> TruthFlow:
        """One rank's bootstrap connection to the root (handshake and rank info): one transaction."""
        conversation = bootstrap_rank_info(self.capture, self.rng, rank_host, f"{root}:{root_port}", magic=magic,
                                           rank=rank, nranks=nranks, start=start,
                                           client_port=self.client_port(rank_host, root, root_port, 40000, 60000))
        return self._one_shot(conversation, start, "nccl", f"bootstrap rank_info rank {rank}/{nranks}", step)

    def nccl_handshake(self, client: str, server: str, port: int, *, start: float, socket_type: int,
                       payload: bytes = b"", step: str | None = None) -> TruthFlow:
        """A connection sending the NCCL socket handshake (and `payload`): one transaction."""
        conversation = raw_handshake(self.capture, self.rng, client, f"{server}:{port}", socket_type=socket_type,
                                     payload=payload, start=start,
                                     client_port=self.client_port(client, server, port, 40000, 60000))
        return self._one_shot(conversation, start, "nccl", f"handshake socket type {socket_type}", step)

    def _one_shot(self, conversation: TcpConversation, start: float, event: str, what: str,
                  step: str | None) -> TruthFlow:
        flow = self._flow(conversation, start)
        flow.end = conversation.now
        flow.transactions.append(TruthTransaction(tx=0, start=start, end=conversation.now, event_type=event,
                                                  label=self.label, step=step, what=what))
        return flow


class LabSession:
    """A connection being made: its truth flow, and transactions recorded as they complete."""

    def __init__(self, lab: Lab, conversation: TcpConversation, start: float) -> None:
        self.lab = lab
        self.conversation = conversation
        self.label = lab.label
        self.flow = lab._flow(conversation, start)

    @property
    def now(self) -> float:
        return self.conversation.now

    def wait(self, seconds: float) -> None:
        self.conversation.wait(seconds)

    def record(self, start: float, event: str, what: str, step: str | None) -> None:
        self.flow.transactions.append(TruthTransaction(tx=len(self.flow.transactions), start=start,
                                                       end=self.conversation.now, event_type=event,
                                                       label=self.label, step=step, what=what))

    def close(self) -> TruthFlow:
        self.conversation.close()
        self.flow.end = self.conversation.now
        return self.flow


class LabHttp(LabSession):
    """An HTTP/1.1 connection (inspector.lab.traffic_http.HttpSession)."""

    def __init__(self, lab: Lab, conversation: TcpConversation, start: float, session: HttpSession) -> None:
        super().__init__(lab, conversation, start)
        self.session = session

    def exchange(self, request: bytes, response: bytes, *, event: str, what: str, step: str | None = None) -> None:
        began = self.now
        self.session.exchange(request, response)
        self.record(began, event, what, step)


class LabGrpc(LabSession):
    """An h2c connection carrying gRPC calls (inspector.lab.traffic_http.GrpcSession)."""

    def __init__(self, lab: Lab, conversation: TcpConversation, start: float, session: GrpcSession) -> None:
        super().__init__(lab, conversation, start)
        self.session = session

    def call(self, call: GrpcCall, *, event: str, what: str, step: str | None = None) -> None:
        began = self.now
        self.session.call(call)
        self.record(began, event, what, step)

    def raw(self, request_headers: list[tuple[bytes, bytes]], body: bytes, response_headers: list[tuple[bytes, bytes]],
            response_body: bytes = b"", trailers: list[tuple[bytes, bytes]] | None = None, *, event: str, what: str,
            step: str | None = None) -> None:
        began = self.now
        self.session.raw(request_headers, body, response_headers, response_body, trailers)
        self.record(began, event, what, step)


class LabStore(LabSession):
    """A TCPStore client connection (inspector.lab.traffic_tcpstore.StoreSession): one transaction per query."""

    def __init__(self, lab: Lab, conversation: TcpConversation, start: float, session: StoreSession) -> None:
        super().__init__(lab, conversation, start)
        self.session = session

    def set(self, key: str, value: bytes, *, step: str | None = None, what: str = "") -> None:
        began = self.now
        self.session.set(key, value)
        self.record(began, "tcpstore", what or f"SET /{key}", step)

    def get(self, key: str, value: bytes, *, step: str | None = None) -> None:
        """WAIT then GET: two transactions."""
        began = self.now
        self.session.get(key, value)
        self.record(began, "tcpstore", f"WAIT /{key}", step)
        self.record(began, "tcpstore", f"GET /{key}", step)

    def list_keys(self, keys: list[str], *, step: str | None = None) -> None:
        began = self.now
        self.session.list_keys(keys)
        self.record(began, "tcpstore", "LIST_KEYS", step)

    def query(self, query: bytes, reply: bytes = b"", *, what: str, step: str | None = None) -> None:
        """Any query bytes (e.g. a SET with no VALIDATE before it); one transaction."""
        began = self.now
        self.session.query(query, reply)
        self.record(began, "tcpstore", what, step)

    def delete_key(self, key: str, *, step: str | None = None) -> None:
        began = self.now
        self.session.delete_key(key)
        self.record(began, "tcpstore", f"DELETE_KEY /{key}", step)
