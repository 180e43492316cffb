"""HTTP/2 and gRPC conversations as wire bytes, produced by the real `h2` library.

An :class:`H2Wire` holds a client and a server `h2` connection talking to each other in memory;
every byte either side sends is recorded as `(side, bytes)` in wire order, ready for
`inspector.lab.craft.TcpConversation.send`. HPACK, flow control, CONTINUATION splitting and
SETTINGS acknowledgements are h2's: the bytes are what a real client and server would exchange.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass, field

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived

from inspector.lab.craft import CLIENT, SERVER

Header = tuple[bytes, bytes]


def grpc_frame(payload: bytes, compress: bool = False) -> bytes:
    """One gRPC length-prefixed message (gzip-compressed when `compress`)."""
    if compress:
        payload = gzip.compress(payload, mtime=0)
    return struct.pack("!BI", 1 if compress else 0, len(payload)) + payload


@dataclass
class GrpcCall:
    """A gRPC call to script: request and response messages, final status."""

    path: str
    requests: list[bytes]
    responses: list[bytes]
    status: int = 0
    message: str = ""
    compress_requests: bool = False
    authority: str = "inference.local:8001"
    trailers_only: bool = False  # status in the response HEADERS, no body (how errors often look)
    extra_headers: list[Header] = field(default_factory=list)


class H2Wire:
    """A client and a server h2 connection; `chunks` is what crossed the wire, in order."""

    def __init__(self, upgrade_settings: bytes | None = None, upgraded: bool = False) -> None:
        self.client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.server = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.chunks: list[tuple[int, bytes]] = []
        if upgraded:
            settings = self.client.initiate_upgrade_connection()
            self.upgrade_settings = settings
            self.server.initiate_upgrade_connection(settings)
        else:
            self.upgrade_settings = None
            self.client.initiate_connection()
            self.server.initiate_connection()
        self.pump()

    def pump(self) -> None:
        """Move pending bytes both ways until neither side has anything to send."""
        moved = True
        while moved:
            moved = False
            for side, conn, peer in ((CLIENT, self.client, self.server), (SERVER, self.server, self.client)):
                data = conn.data_to_send()
                if data:
                    moved = True
                    self.chunks.append((side, data))
                    for event in peer.receive_data(data):
                        if isinstance(event, DataReceived) and event.flow_controlled_length:
                            # the receiving application consumed it: open the window again
                            peer.acknowledge_received_data(event.flow_controlled_length, event.stream_id)

    def request(self, stream_id: int, headers: list[Header], body: bytes = b"",
                end_stream: bool = True, pad_length: int | None = None) -> None:
        self.client.send_headers(stream_id, headers, end_stream=not body and end_stream)
        if body:
            self._send_data(self.client, stream_id, body, end_stream, pad_length)
        self.pump()

    def respond(self, stream_id: int, headers: list[Header], body: bytes = b"",
                trailers: list[Header] | None = None, pad_length: int | None = None) -> None:
        self.server.send_headers(stream_id, headers, end_stream=not body and not trailers)
        if body:
            self._send_data(self.server, stream_id, body, not trailers, pad_length)
        if trailers:
            self.server.send_headers(stream_id, trailers, end_stream=True)
        self.pump()

    def reset(self, side: int, stream_id: int, error_code: int = 8) -> None:
        (self.client if side == CLIENT else self.server).reset_stream(stream_id, error_code)
        self.pump()

    def _send_data(self, conn: H2Connection, stream_id: int, body: bytes, end_stream: bool,
                   pad_length: int | None) -> None:
        max_size = conn.max_outbound_frame_size - (pad_length + 1 if pad_length else 0)
        offset = 0
        while offset < len(body):
            window = conn.local_flow_control_window(stream_id)
            if window <= 0:
                self.pump()
                if conn.local_flow_control_window(stream_id) <= 0:
                    raise RuntimeError("flow control window stuck")
                continue
            chunk = body[offset:offset + min(max_size, window)]
            offset += len(chunk)
            conn.send_data(stream_id, chunk, end_stream=end_stream and offset >= len(body),
                           pad_length=pad_length)
            if conn is self.client:
                self.pump()
            else:
                self.pump()

    def grpc(self, stream_id: int, call: GrpcCall) -> None:
        """Run one gRPC call on `stream_id` (all requests, then all responses)."""
        headers = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", call.path.encode()),
                   (b":authority", call.authority.encode()), (b"content-type", b"application/grpc"),
                   (b"te", b"trailers"), (b"user-agent", b"grpc-python/1.81.1 grpc-c/50.0.0 (linux)"),
                   (b"grpc-accept-encoding", b"identity,deflate,gzip")]
        if call.compress_requests:
            headers.append((b"grpc-encoding", b"gzip"))
        headers.extend(call.extra_headers)
        body = b"".join(grpc_frame(m, call.compress_requests) for m in call.requests)
        self.request(stream_id, headers, body)
        status = [(b"grpc-status", str(call.status).encode())]
        if call.message:
            status.append((b"grpc-message", call.message.encode()))
        if call.trailers_only:
            self.respond(stream_id, [(b":status", b"200"), (b"content-type", b"application/grpc"), *status])
            return
        response_body = b"".join(grpc_frame(m) for m in call.responses)
        self.respond(stream_id, [(b":status", b"200"), (b"content-type", b"application/grpc"),
                                 (b"grpc-accept-encoding", b"identity,deflate,gzip")],
                     response_body, trailers=status)
