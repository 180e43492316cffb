"""The authenticated client of a live connection, as the `principal` object of its records.

With client-certificate verification on (`inspector proxy --client-ca`), every record of a
connection carries who presented the certificate, so rules can say who may call what::

    detection:
      selection: {grpc.method: RepositoryModelLoad}
      filter_deployer: {principal.common_name: model-deployer}
      condition: selection and not filter_deployer

Declared here for every record type; this module belongs in `inspector.fields.FIELD_MODULES`
so offline validation knows the names too (offline records never carry them).
"""

from __future__ import annotations

import hashlib
from typing import Any

from inspector.fields import ALL_EVENTS, declare

_MAX_SANS = 32


def principal_from_certificate(cert: Any) -> dict[str, Any]:
    """The `principal` object of a `cryptography.x509.Certificate` presented by a client."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    sans: list[str] = []
    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        extension = None
    if extension is not None:
        for name in extension:
            if isinstance(name, x509.DNSName | x509.UniformResourceIdentifier | x509.RFC822Name | x509.IPAddress):
                sans.append(str(name.value))
    der = cert.public_bytes(serialization.Encoding.DER)
    return {
        "source": "mtls",
        "subject": cert.subject.rfc4514_string(),
        "common_name": str(common_names[0].value) if common_names else None,
        "sans": sans[:_MAX_SANS],
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "fingerprint_sha256": hashlib.sha256(der).hexdigest(),
    }


declare(ALL_EVENTS, [
    ("principal.source", "string", "How the client was authenticated (live sidecar): mtls."),
    ("principal.subject", "string", "Subject of the client certificate (RFC 4514), live sidecar with mTLS."),
    ("principal.common_name", "string", "Common name (CN) of the client certificate's subject."),
    ("principal.sans", "list[string]", "Subject alternative names of the client certificate (DNS, URI, email, IP)."),
    ("principal.issuer", "string", "Issuer of the client certificate (RFC 4514)."),
    ("principal.serial", "string", "Serial number of the client certificate, hex."),
    ("principal.fingerprint_sha256", "string", "SHA-256 of the client certificate (DER), hex."),
])
