"""Throw-away X.509 material for tests: a self-signed certificate and key generated at test time.

Used by the token server (the registry's `rootcertbundle` that verifies token signatures) and by
the TLS front of the fault proxy. Never imports `retention`.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["CertPair", "self_signed"]


@dataclass(frozen=True, slots=True)
class CertPair:
    """A private key and its self-signed certificate, in memory and written as PEM files."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    cert_path: Path
    key_path: Path

    @property
    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


def self_signed(
    folder: Path, name: str, *, hosts: tuple[str, ...] = ("127.0.0.1",), ca: bool = True
) -> CertPair:
    """An EC P-256 key and a self-signed certificate valid for `hosts` (IPs or DNS names) for a
    day, written to `<folder>/<name>.crt` and `<folder>/<name>.key`."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"retention test {name}")])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    )
    cert = builder.sign(key, hashes.SHA256())
    cert_path = folder / f"{name}.crt"
    key_path = folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return CertPair(key=key, cert=cert, cert_path=cert_path, key_path=key_path)
