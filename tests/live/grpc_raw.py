"""A raw gRPC-over-TLS call with the h2 library, for what grpcio will not send (unknown
grpc-encoding, hand-made frames)."""

from __future__ import annotations

import socket
import ssl

import h2.config
import h2.connection
import h2.events


def raw_grpc_call(port: int, ca: str, path: str, body: bytes, headers: list[tuple[str, str]] | None = None,
                  timeout: float = 5.0) -> tuple[dict[str, str], dict[str, str], bytes]:
    """(response headers, trailers, body) of one gRPC call to 127.0.0.1:port over TLS."""
    context = ssl.create_default_context(cafile=ca)
    context.set_alpn_protocols(["h2"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock = context.wrap_socket(raw, server_hostname="localhost")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    stream_id = conn.get_next_available_stream_id()
    request_headers = [(":method", "POST"), (":scheme", "https"), (":authority", f"localhost:{port}"),
                       (":path", path), ("content-type", "application/grpc"), ("te", "trailers")]
    conn.send_headers(stream_id, request_headers + list(headers or []))
    conn.send_data(stream_id, body, end_stream=True)
    sock.sendall(conn.data_to_send())
    response: dict[str, str] = {}
    trailers: dict[str, str] = {}
    data = bytearray()
    done = False
    while not done:
        chunk = sock.recv(65536)
        if not chunk:
            break
        for event in conn.receive_data(chunk):
            if isinstance(event, h2.events.ResponseReceived):
                response = dict(event.headers)
            elif isinstance(event, h2.events.TrailersReceived):
                trailers = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                data += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
            elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                done = True
        sock.sendall(conn.data_to_send())
    sock.close()
    return response, trailers, bytes(data)
