"""`inspector certs`: a CA, a server certificate for the given names, client certificates; keys
written 0600; the CA is reused on a second run."""

from __future__ import annotations

import ipaddress
import ssl
import stat

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from inspector.cli import main


def test_certs_for_names_and_clients(tmp_path):
    out = tmp_path / "certs"
    assert main(["certs", "--out", str(out), "--name", "triton.ml.svc", "--name", "10.0.0.7",
                 "--client", "model-deployer"]) == 0
    for key in ("ca-key.pem", "server-key.pem", "client-model-deployer-key.pem"):
        assert stat.S_IMODE((out / key).stat().st_mode) == 0o600, key
    chain = x509.load_pem_x509_certificates((out / "server.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    assert chain[1] == ca
    server = chain[0]
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["triton.ml.svc"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7")]
    server.verify_directly_issued_by(ca)
    client = x509.load_pem_x509_certificate((out / "client-model-deployer.pem").read_bytes())
    usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert client.subject.rfc4514_string() == "CN=model-deployer,O=inspector"
    # OpenSSL accepts the pair as a server identity and the CA as a trust root.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(out / "server.pem"), str(out / "server-key.pem"))
    ssl.create_default_context(cafile=str(out / "ca.pem"))

    ca_before = (out / "ca.pem").read_bytes()
    assert main(["certs", "--out", str(out), "--name", "other.ml.svc"]) == 0
    assert (out / "ca.pem").read_bytes() == ca_before  # reused, so clients keep trusting it
    renewed = x509.load_pem_x509_certificates((out / "server.pem").read_bytes())[0]
    renewed.verify_directly_issued_by(ca)
