"""`inspector certs`: a private CA and certificates for the sidecar and its clients.

    inspector certs --out certs/ --name triton.ml.svc --name 10.0.0.7 [--client deployer]

writes `ca.pem` / `ca-key.pem` (reused when already there), `server.pem` (certificate then CA) /
`server-key.pem` for the names given (DNS names or IP addresses, the first one is the subject's
CN), and `client-<name>.pem` / `client-<name>-key.pem` for each `--client` (for mTLS: their CN is
what `principal.common_name` shows). Keys are ECDSA P-256, written readable by the owner only
(0600). Give clients `ca.pem` as their trust root and the sidecar `--cert server.pem --key
server-key.pem [--client-ca ca.pem]`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from inspector.live.proxy import write_private

DEFAULT_DAYS = 365
CA_DAYS = 3650


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "inspector"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)


def make_ca(common_name: str = "inspector sidecar CA") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    name = _name(common_name)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(_now())
            .not_valid_after(_now() + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def san_entries(names: list[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


def make_leaf(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, names: list[str], *, client: bool,
              days: int = DEFAULT_DAYS) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A server (serverAuth, SANs) or client (clientAuth) certificate signed by the CA."""
    if not names:
        raise ValueError("a certificate needs at least one name")
    key = _key()
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(_now()).not_valid_after(_now() + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.SubjectAlternativeName(san_entries(names)), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    return builder.sign(ca_key, hashes.SHA256()), key


def load_or_make_ca(out: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, bool]:
    cert_path, key_path = out / "ca.pem", out / "ca-key.pem"
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path}: not an EC key made by inspector certs")
        return cert, key, False
    cert, key = make_ca()
    write_private(key_path, key_pem(key))
    cert_path.write_bytes(cert_pem(cert))
    return cert, key, True


def cmd_certs(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        ca_cert, ca_key, created = load_or_make_ca(out)
        written = [out / "ca.pem"] if created else []
        if args.name:
            cert, key = make_leaf(ca_cert, ca_key, args.name, client=False, days=args.days)
            write_private(out / "server-key.pem", key_pem(key))
            (out / "server.pem").write_bytes(cert_pem(cert) + cert_pem(ca_cert))
            written.append(out / "server.pem")
        for client in args.client or []:
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in client)
            cert, key = make_leaf(ca_cert, ca_key, [client], client=True, days=args.days)
            write_private(out / f"client-{safe}-key.pem", key_pem(key))
            (out / f"client-{safe}.pem").write_bytes(cert_pem(cert))
            written.append(out / f"client-{safe}.pem")
    except (ValueError, OSError) as exc:
        print(f"inspector certs: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


def add_certs_command(sub: Any) -> None:
    certs = sub.add_parser("certs", help="create a CA and server/client certificates for the sidecar",
                           description=__doc__.split("\n\n")[1] if __doc__ else None)
    certs.add_argument("--out", default="certs", help="directory for the PEM files (default: certs/)")
    certs.add_argument("--name", action="append", help="DNS name or IP address of the sidecar (repeatable)")
    certs.add_argument("--client", action="append", help="make a client certificate with this CN (repeatable)")
    certs.add_argument("--days", type=int, default=DEFAULT_DAYS, help=f"validity (default {DEFAULT_DAYS} days)")
    certs.set_defaults(func=cmd_certs)
