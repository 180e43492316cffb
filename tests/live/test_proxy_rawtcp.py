"""Raw TCP through `inspector proxy --upstream tcp://`: a PyTorch TCPStore conversation captured
from real torch (pcaps/clients/tcpstore_libuv.pcap) is replayed by a real client and server
socket through the sidecar; the live records equal the offline records of the capture, and a
block rule closes the connection."""

from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path

import pytest
from live_sidecar import Sidecar, write_rule

from inspector.analyze import Analyzer

REPO = Path(__file__).resolve().parents[2]
CAPTURE = REPO / "pcaps" / "clients" / "tcpstore_libuv.pcap"
sys.path.insert(0, str(REPO / "tests" / "protocols"))

pytestmark = pytest.mark.skipif(not CAPTURE.exists(), reason="the TCPStore capture is not there")


def _conversation() -> list[tuple[int, bytes]]:
    from rawtcp_support import conversations

    return max(conversations(CAPTURE), key=len)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


class ReplayServer:
    """Plays the server side of a captured conversation to whoever connects."""

    def __init__(self, chunks: list[tuple[int, bytes]]) -> None:
        self.chunks = chunks
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        try:
            with conn:
                for direction, data in self.chunks:
                    if direction == 0:
                        _recv_exactly(conn, len(data))
                    else:
                        conn.sendall(data)
        except BaseException as exc:
            self.error = exc


def _play_client(port: int, chunks: list[tuple[int, bytes]]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for direction, data in chunks:
            if direction == 0:
                sock.sendall(data)
            else:
                _recv_exactly(sock, len(data))


def test_tcpstore_records_equal_offline(tmp_path):
    chunks = _conversation()
    server = ReplayServer(chunks)
    rules = tmp_path / "rules"
    rules.mkdir()
    write_rule(rules, 9950001, "TCPStore ping", "tcpstore", {"tcpstore.query": "PING"})
    with Sidecar(tmp_path, f"tcp://127.0.0.1:{server.port}", rules) as sidecar:
        _play_client(sidecar.port, chunks)
        server.thread.join(10)
        assert server.error is None
        offline: list = []
        Analyzer(offline.append).analyze_file(CAPTURE)
        wanted = [r["tcpstore"] for r in offline if r["event_type"] == "tcpstore"
                  and r["src_port"] == _client_port(offline, chunks)]
        live = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] == "tcpstore"]
                                    if len([r for r in rs if r["event_type"] == "tcpstore"]) >= len(wanted) else None)
    assert [r["tcpstore"] for r in live] == wanted
    assert live[0]["app_proto"] == "tcpstore" and live[0]["dest_port"] == sidecar.port
    pings = [r for r in sidecar.alerts() if r["alert"]["signature_id"] == 9950001]
    assert len(pings) == sum(1 for r in wanted if r["query"] == "PING") > 0


def _client_port(offline: list, chunks: list) -> int:
    """The capture's client port of the replayed conversation (the one with the most records)."""
    from collections import Counter

    ports = Counter(r["src_port"] for r in offline if r["event_type"] == "tcpstore")
    return ports.most_common(1)[0][0]


def test_block_rule_closes_the_connection(tmp_path):
    chunks = _conversation()
    server = ReplayServer(chunks)
    rules = tmp_path / "rules"
    rules.mkdir()
    write_rule(rules, 9950002, "TCPStore ping blocked", "tcpstore", {"tcpstore.query": "PING"}, action="block")
    with Sidecar(tmp_path, f"tcp://127.0.0.1:{server.port}", rules) as sidecar:
        with pytest.raises((ConnectionError, TimeoutError, OSError)):
            _play_client(sidecar.port, chunks)
        alerts = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] == "alert"])
    assert alerts[0]["alert"]["action"] == "blocked" and alerts[0]["tcpstore"]["query"] == "PING"
