"""TLS 1.3 KeyUpdate and 0-RTT early data, made by the openssl command-line tools.

Python's ssl module can neither send a KeyUpdate nor early data, so `openssl s_server` and
`openssl s_client` talk through a small recording relay on loopback (no root, no tcpdump): the
bytes each side sent are put in a crafted capture and decrypted with the key log s_client wrote.
Skipped when the openssl binary is missing.
"""

from __future__ import annotations

import select
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from tls_traffic import SERVER_NAME, analyze_with_keylog, server_files, write_pcap

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl binary is not installed")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("openssl did not get there in time")
        time.sleep(0.02)


class Relay:
    """Accepts one connection, forwards it to `upstream`, records `(side, bytes)` in order."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = _free_port()
        self.chunks: list[tuple[int, bytes]] = []
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def count(self, side: int) -> int:
        return sum(1 for s, _ in self.chunks if s == side)

    def _run(self) -> None:
        client, _ = self._listener.accept()
        server = socket.create_connection(("127.0.0.1", self.upstream))
        peers = {client: (server, 0), server: (client, 1)}
        while peers:
            readable, _, _ = select.select(list(peers), [], [], 10)
            if not readable:
                break
            for sock in readable:
                peer, side = peers[sock]
                data = sock.recv(65536)
                if not data:
                    try:
                        peer.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    del peers[sock]
                    continue
                self.chunks.append((side, data))
                peer.sendall(data)
        for sock in (client, server, self._listener):
            sock.close()

    def join(self) -> None:
        self._thread.join(timeout=15)


class OpenSsl:
    """One s_server process (session tickets are only good on the process that issued them) and
    s_client connections to it, each through its own Relay, driven through their stdin."""

    def __init__(self, directory: Path, server_args: list[str], connections: int = 1) -> None:
        self.ca, cert, key = server_files(directory)
        self.port = _free_port()
        self.keylog = directory / "keylog.txt"
        self.server = subprocess.Popen(["openssl", "s_server", "-accept", str(self.port), "-cert", str(cert),
                                        "-key", str(key), "-naccept", str(connections + 1), "-tls1_3",
                                        *server_args],
                                       stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(lambda: _accepts(self.port))  # this probe is the first connection it accepts
        self.relay: Relay | None = None
        self.client: subprocess.Popen | None = None

    def connect(self, client_args: list[str]) -> Relay:
        self.relay = Relay(self.port)
        self.client = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{self.relay.port}",
                                        "-servername", SERVER_NAME, "-CAfile", str(self.ca), "-keylogfile",
                                        str(self.keylog), "-tls1_3", *client_args],
                                       stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self.relay

    def write(self, side: int, data: bytes, expect: int | None = None) -> None:
        """`data` into one side's stdin; wait until that side has sent `expect` chunks in all."""
        process = self.client if side == 0 else self.server
        assert process is not None and process.stdin is not None and self.relay is not None
        process.stdin.write(data)
        process.stdin.flush()
        relay = self.relay
        if expect is not None:
            _wait(lambda: relay.count(side) >= expect)

    def disconnect(self) -> list[tuple[int, bytes]]:
        """End the client (stdin closed: it sends close_notify and exits); the relay's chunks."""
        assert self.client is not None and self.client.stdin is not None and self.relay is not None
        self.client.stdin.close()
        try:
            self.client.wait(timeout=10)
        finally:
            self.client.kill()
            self.client.wait()
        self.relay.join()
        return self.relay.chunks

    def stop(self) -> None:
        self.server.kill()
        self.server.wait()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def _requests(records: list[dict]) -> list[tuple[str, int | None]]:
    return [(r["http"]["url"], r["http"].get("status")) for r in records if r["event_type"] == "http"]


def test_key_update_in_both_directions(tmp_path):
    openssl = OpenSsl(tmp_path, [])
    try:
        relay = openssl.connect([])
        _wait(lambda: relay.count(1) >= 1 and relay.count(0) >= 2)  # handshake done
        openssl.write(0, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", expect=relay.count(0) + 1)
        openssl.write(1, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", expect=relay.count(1) + 1)
        openssl.write(0, b"K\n", expect=relay.count(0) + 1)  # s_client: KeyUpdate, update requested
        openssl.write(0, b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n", expect=relay.count(0) + 1)
        openssl.write(1, b"HTTP/1.1 204 No Content\r\n\r\n", expect=relay.count(1) + 1)
        chunks = openssl.disconnect()
    finally:
        openssl.stop()
    write_pcap(tmp_path / "keyupdate.pcap", chunks)
    analyzer, records = analyze_with_keylog(tmp_path / "keyupdate.pcap", openssl.keylog)
    assert _requests(records) == [("/a", 200), ("/b", 204)]
    counts = analyzer.stats.detection
    assert counts["tls_key_updates"] >= 2  # the client's, and the server's answer to its request
    assert counts.get("tls_records_failed", 0) == 0 and counts.get("tls_records_not_decrypted", 0) == 0


def test_early_data_decrypted_with_its_secret_and_counted_without(tmp_path):
    openssl = OpenSsl(tmp_path, ["-early_data"], connections=2)
    session = tmp_path / "session.pem"
    early = tmp_path / "early.txt"
    early.write_bytes(b"GET /early HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        relay = openssl.connect(["-sess_out", str(session)])
        _wait(lambda: relay.count(1) >= 1 and relay.count(0) >= 2)
        openssl.write(0, b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n", expect=relay.count(0) + 1)
        openssl.disconnect()
        relay = openssl.connect(["-sess_in", str(session), "-early_data", str(early)])
        _wait(lambda: relay.count(1) >= 1 and relay.count(0) >= 2)
        openssl.write(0, b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n", expect=relay.count(0) + 1)
        chunks = openssl.disconnect()
    finally:
        openssl.stop()
    write_pcap(tmp_path / "zero-rtt.pcap", chunks)
    analyzer, records = analyze_with_keylog(tmp_path / "zero-rtt.pcap", openssl.keylog)
    (handshake,) = [r for r in records if r["event_type"] == "tls"]
    assert handshake["tls"]["resumed"] is True and "002a" in handshake["tls"]["extensions"]
    assert _requests(records) == [("/early", None), ("/after", None)]
    assert "tls_records_early_data" not in analyzer.stats.detection

    without = tmp_path / "no-early-secret.txt"
    without.write_text("".join(line for line in openssl.keylog.read_text().splitlines(keepends=True)
                               if not line.startswith("CLIENT_EARLY_TRAFFIC_SECRET")))
    analyzer, records = analyze_with_keylog(tmp_path / "zero-rtt.pcap", without)
    assert _requests(records) == []  # the stream's start is missing: nothing is guessed from the rest
    assert analyzer.stats.detection["tls_records_early_data"] >= 1
