"""Live `tls` records: mitmproxy's tls_clienthello hook, the same parser and fingerprints as offline.

The sidecar runs as a real `inspector proxy` process with a TLS listener. The expected JA4 and
JA3 are computed by the offline parser from a ClientHello the same client context produces in
memory (OpenSSL does not shuffle its extensions, so every hello of one context has the same
fingerprints).
"""

from __future__ import annotations

import http.client
import socket
import ssl

import pytest
from live_sidecar import Sidecar, write_rule

from inspector.protocols.tls import parse_client_hello, tls_object

SID_SEEN = 9700101
SID_BLOCKED = 9700102


@pytest.fixture(scope="module")
def sidecar(rest_upstream, certs, tmp_path_factory):
    rules = tmp_path_factory.mktemp("tls-rules")
    write_rule(rules, SID_SEEN, "TLS client offering HTTP/1.1 to localhost", "tls",
               {"tls.sni": "localhost", "tls.alpn": "http/1.1"})
    write_rule(rules, SID_BLOCKED, "TLS client naming a forbidden host", "tls",
               {"tls.sni|endswith": ".forbidden.example"}, action="block")
    with Sidecar(tmp_path_factory.mktemp("tls"), f"http://127.0.0.1:{rest_upstream.port}", rules,
                 cert=certs.server_cert, key=certs.server_key) as proxy:
        yield proxy


def _hello_fields(context: ssl.SSLContext, server_name: str) -> dict:
    """What the offline parser makes of a ClientHello from `context` (produced in memory)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    end = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        end.do_handshake()
    record = outgoing.read()
    assert record[0] == 0x16 and record[5] == 1
    length = int.from_bytes(record[6:9], "big")
    return tls_object(parse_client_hello(record[9:9 + length]), None)


def _get(sidecar, context: ssl.SSLContext, host: str) -> int:
    connection = http.client.HTTPSConnection(host, sidecar.port, context=context, timeout=5)
    try:
        connection.request("GET", "/v2/health/live")
        return connection.getresponse().status
    finally:
        connection.close()


def test_client_hello_makes_a_tls_record_with_the_offline_fingerprints(sidecar, certs):
    context = ssl.create_default_context(cafile=str(certs.ca))
    context.set_alpn_protocols(["http/1.1"])
    expected = _hello_fields(context, "localhost")
    assert _get(sidecar, context, "localhost") == 200
    record = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] == "tls"])[0]
    assert record["app_proto"] == "tls" and record["src_ip"] == "127.0.0.1" and record["tx_id"] == 0
    tls = record["tls"]
    assert tls["sni"] == "localhost" and tls["alpn"] == ["http/1.1"]
    assert tls["ja4"] == expected["ja4"] and tls["ja4"].startswith("t13d")
    assert tls["ja3"] == expected["ja3"] and tls["cipher_suites"] == expected["cipher_suites"]
    assert "version" not in tls  # the live record is the client's hello; the sidecar is the server
    (alert,) = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] == "alert"
                                                and r["alert"]["signature_id"] == SID_SEEN])
    assert alert["tls"]["ja4"] == tls["ja4"]
    # the HTTP transaction of the same connection follows it
    exchange = sidecar.wait_records(lambda rs: [r for r in rs if "http" in r and r["event_type"] != "alert"
                                                and r["flow_id"] == record["flow_id"]])[0]
    assert exchange["tx_id"] == 1 and exchange["app_proto"] != "tls"


def test_a_block_rule_on_the_hello_closes_the_connection(sidecar):
    context = ssl.create_default_context()
    context.check_hostname = False  # the name is refused by the rule, not by certificate checks
    context.verify_mode = ssl.CERT_NONE
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException, OSError)):
        _connect(sidecar, context)
    (alert,) = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] == "alert"
                                                and r["alert"]["signature_id"] == SID_BLOCKED])
    assert alert["tls"]["sni"] == "api.forbidden.example"
    assert sidecar.metric("inspector_blocks_total", reason="rule") >= 1


def _connect(sidecar, context: ssl.SSLContext) -> None:
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="api.forbidden.example") as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: api.forbidden.example\r\n\r\n")
        if not tls.recv(1):
            raise ConnectionError("closed by the sidecar")
