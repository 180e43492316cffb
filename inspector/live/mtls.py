"""Client-certificate verification for mTLS, with `cryptography`'s X.509 path validation.

mitmproxy builds (and caches) the client-side TLS context itself, and a context that has made a
connection cannot be changed any more, so the CA cannot be loaded into OpenSSL's trust store.
The addon sets verification on each connection instead (`VERIFY_PEER |
VERIFY_FAIL_IF_NO_PEER_CERT`) with :meth:`ClientCertVerifier.callback`, which validates the
presented leaf against the configured CA file (RFC 5280 path validation: signatures up to a
CA of the file, validity, the CAs' constraints; the leaf's extended key usage must allow
clientAuth when it lists any). OpenSSL's own verdict on
the chain is ignored: its trust store does not hold our CA. Intermediates must be in the CA file.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import ExtensionPolicy, PolicyBuilder, Store, VerificationError

logger = logging.getLogger("inspector.live")


class ClientCertVerifier:
    def __init__(self, ca_file: str | Path) -> None:
        certificates = x509.load_pem_x509_certificates(Path(ca_file).read_bytes())
        if not certificates:
            raise ValueError(f"{ca_file}: no PEM certificate in it")
        self.store = Store(certificates)
        self.rejected = 0

    def verify(self, leaf: x509.Certificate) -> bool:
        # CA certificates get the Web PKI checks; the client's own certificate only needs to chain,
        # be valid now and, when it lists extended key usages, allow clientAuth (certificates made
        # by older tooling often lack the AKI or SAN extensions the Web PKI profile demands).
        verifier = (PolicyBuilder().store(self.store).time(dt.datetime.now(dt.UTC))
                    .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(),
                                        ee_policy=ExtensionPolicy.permit_all())
                    .build_client_verifier())
        try:
            verifier.verify(leaf, [])
            _check_client_usage(leaf)
        except VerificationError as exc:
            self.rejected += 1
            logger.info("inspector: client certificate %s rejected: %s", leaf.subject.rfc4514_string(), exc)
            return False
        return True

    def callback(self, conn: Any, cert: Any, errno: int, depth: int, ok: int) -> bool:
        """OpenSSL verify callback: the decision is taken on the leaf (depth 0)."""
        if depth > 0:
            return True
        try:
            return self.verify(cert.to_cryptography())
        except Exception as exc:  # never let a client in because our check broke
            logger.error("inspector: client certificate check failed: %s", exc)
            return False


def _check_client_usage(leaf: x509.Certificate) -> None:
    try:
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in usages:
        raise VerificationError("the certificate's extended key usage does not allow clientAuth")
