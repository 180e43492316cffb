"""The segmentation policy live: `inspector proxy --policy` puts zones on every record (the
destination zone is the upstream server's, while dest_ip stays the listener), writes a policy
record for a flow the policy does not allow, alerts through signatures/policy/, counts the
checks in inspector_policy_flows_total, and writes records that validate against the shipped
EVE schema."""

from __future__ import annotations

import socket
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import jsonschema
import pytest
from live_servers import serving
from live_sidecar import Sidecar

from inspector.sinks.eveschema import shipped_schema

REPO = Path(__file__).resolve().parents[2]
POLICY_RULES = REPO / "signatures" / "policy"


def _external_address() -> str | None:
    """This host's address on a non-loopback interface (no packet is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))
            address = sock.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture(scope="module")
def upstream():
    address = _external_address()
    if address is None:
        pytest.skip("no non-loopback IPv4 address to put the upstream on")
    with serving(_Handler, host=address) as server:
        yield server


def _get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.read()


def test_zones_policy_records_alerts_and_metrics(upstream, tmp_path):
    host, port = upstream.server_address[:2]
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""name: live-test
default: deny
zones:
  - {{name: clients, plane: data, cidrs: [127.0.0.0/8]}}
  - {{name: inference, plane: data, cidrs: ["{host}/32"]}}
rules:
  - {{name: clients-infer, from: clients, to: inference, protocols: [triton]}}
""")
    with Sidecar(tmp_path, f"http://{host}:{port}", POLICY_RULES, args=["--policy", str(policy)]) as sidecar:
        assert _get(sidecar.port, "/v2/health/ready") == b"{}"  # Triton REST: allowed
        assert _get(sidecar.port, "/hello") == b"{}"  # plain HTTP: not allowed
        records = sidecar.wait_records(lambda rs: rs if any(r["event_type"] == "alert" for r in rs) else None)
        records = sidecar.wait_records(lambda rs: rs if len([r for r in rs if r.get("http")]) >= 2 else None)
        denied = sidecar.metric("inspector_policy_flows_total", from_zone="clients", to_zone="inference",
                                app_proto="http", verdict="denied")
        allowed = sidecar.metric("inspector_policy_flows_total", from_zone="clients", to_zone="inference",
                                 app_proto="triton", verdict="allowed")
        rule_info = sidecar.metric("inspector_rule_info", sid="4600001", level="high", severity="2",
                                   rule_action="alert", signature="Flow not allowed by the segmentation policy")
    transactions = [r for r in records if r["event_type"] in ("http", "triton")]
    assert sorted(r["event_type"] for r in transactions) == ["http", "triton"]
    for record in transactions:
        assert record["dest_ip"] == "127.0.0.1" and record["dest_port"] == sidecar.port  # the listener
        assert (record["src_zone"], record["dest_zone"]) == ("clients", "inference")  # the upstream's zone
    (policy_record,) = [r for r in records if r["event_type"] == "policy"]
    assert policy_record["policy"] == {
        "verdict": "denied", "name": "live-test", "default": "deny", "from_zone": "clients",
        "to_zone": "inference", "from_plane": "data", "to_plane": "data", "app_proto": "http",
        "port": sidecar.port, "reason": f"no rule allows clients -> inference http on port {sidecar.port} "
                                       "(default deny)"}
    (alert,) = [r for r in records if r["event_type"] == "alert"]
    assert alert["alert"]["signature_id"] == 4600001 and alert["policy"]["app_proto"] == "http"
    assert (denied, allowed, rule_info) == (1.0, 1.0, 1.0)
    validator = jsonschema.Draft202012Validator(shipped_schema())
    problems = [(r["event_type"], e.message) for r in records for e in validator.iter_errors(r)]
    assert problems == []


def test_a_connection_nothing_recognises_is_checked_as_it_closes(upstream, tmp_path):
    """Raw TCP through `tcp://`: bytes no parser claims give no transaction; when the client
    closes, the connection is checked as protocol `failed` (not allowed here)."""
    host = upstream.server_address[0]
    echo = socket.create_server((host, 0))
    port = echo.getsockname()[1]

    def serve() -> None:
        conn, _ = echo.accept()
        with conn:
            conn.sendall(conn.recv(64))

    threading.Thread(target=serve, daemon=True).start()
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"default: deny\nzones:\n  - {{name: clients, plane: data, cidrs: [127.0.0.0/8]}}\n"
                      f"  - {{name: training, plane: data, cidrs: [\"{host}/32\"]}}\n"
                      "rules:\n  - {name: store, from: clients, to: training, protocols: [tcpstore]}\n")
    with Sidecar(tmp_path, f"tcp://{host}:{port}", POLICY_RULES, args=["--policy", str(policy)]) as sidecar:
        with socket.create_connection(("127.0.0.1", sidecar.port), timeout=5) as sock:
            sock.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
            assert sock.recv(64) == b"SSH-2.0-OpenSSH_9.6\r\n"
        records = sidecar.wait_records(lambda rs: rs if any(r["event_type"] == "alert" for r in rs) else None)
    (record,) = [r for r in records if r["event_type"] == "policy"]
    assert (record["src_zone"], record["dest_zone"], record["dest_port"]) == ("clients", "training", sidecar.port)
    assert record["policy"]["app_proto"] == "failed" and record["policy"]["port"] == sidecar.port
    echo.close()
