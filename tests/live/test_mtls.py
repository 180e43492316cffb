"""Client-certificate verification (mTLS): clients without a certificate from the configured CA
fail the handshake; records of a verified client carry its certificate as `principal`."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request

import pytest
from live_sidecar import Sidecar, write_rule

SID = 9700001


@pytest.fixture(scope="module")
def sidecar(rest_upstream, certs, tmp_path_factory):
    rules = tmp_path_factory.mktemp("mtls-rules")
    write_rule(rules, SID, "Model load by the deployer", "http",
               {"http.url|startswith": "/v2/repository/", "principal.common_name": "model-deployer"})
    with Sidecar(tmp_path_factory.mktemp("mtls"), f"http://127.0.0.1:{rest_upstream.port}", rules,
                 cert=certs.server_cert, key=certs.server_key, args=["--client-ca", str(certs.ca)]) as proxy:
        yield proxy


def _context(certs, cert=None, key=None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


def _post(sidecar, context, path: str) -> int:
    request = urllib.request.Request(f"https://localhost:{sidecar.port}{path}", data=b"{}", method="POST")
    with urllib.request.urlopen(request, context=context, timeout=5) as reply:
        return reply.status


def test_verified_client_is_the_principal(sidecar, certs):
    assert _post(sidecar, _context(certs, certs.client_cert, certs.client_key), "/v2/repository/models/simple/load") \
        == 200
    alert = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] == "alert"])[-1]
    principal = alert["principal"]
    assert alert["alert"]["signature_id"] == SID
    assert principal["source"] == "mtls" and principal["common_name"] == "model-deployer"
    assert principal["subject"] == "CN=model-deployer,O=inspector"
    assert principal["issuer"] == "CN=inspector test CA,O=inspector"
    assert principal["sans"] == ["model-deployer"] and len(principal["fingerprint_sha256"]) == 64


@pytest.mark.parametrize("who", ["no certificate", "another CA"])
def test_other_clients_fail_the_handshake(sidecar, certs, who):
    context = _context(certs) if who == "no certificate" else _context(certs, certs.stranger_cert,
                                                                       certs.stranger_key)
    with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
        _post(sidecar, context, "/v2/health/live")
