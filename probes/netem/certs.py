"""The lab's PKI: a throwaway CA made at start-up and one server certificate per domain.

EC P-256 keys keep start-up fast. The CA exists only for the lab's lifetime (its PEM sits in the lab's
temporary directory), so trusting it — via ``TLSConfig(ca_file=...)`` — trusts nothing outside the lab.
The extensions follow what strict verifiers (Python 3.13's VERIFY_X509_STRICT) ask for.
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["LabPKI", "issue_lab_pki"]

_VALIDITY = dt.timedelta(days=7)
_BACKDATE = dt.timedelta(hours=1)  # tolerate small clock differences between processes


@dataclass(frozen=True)
class LabPKI:
    ca_file: str
    # domain -> (certificate chain PEM path, key PEM path)
    server_files: dict[str, tuple[str, str]]

    def server_context(self, domain: str) -> ssl.SSLContext:
        """A TLS server context presenting ``domain``'s certificate."""
        chain, key = self.server_files[domain]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(chain, key)
        context.set_alpn_protocols(["http/1.1"])
        return context


def issue_lab_pki(domains: Iterable[str], directory: Path) -> LabPKI:
    """Generate the CA and a certificate per domain, writing PEM files into ``directory``."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gatewatch lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"gatewatch lab CA {now:%Y%m%dT%H%M%S}"),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    ca_file = directory / "lab-ca.pem"
    ca_file.write_bytes(ca_pem)

    # One key for every server certificate: generating a key per domain buys the lab nothing.
    server_key = ec.generate_private_key(ec.SECP256R1())
    key_file = directory / "lab-server-key.pem"
    key_file.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    server_ski = x509.SubjectKeyIdentifier.from_public_key(server_key.public_key())
    files: dict[str, tuple[str, str]] = {}
    for domain in domains:
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)]))
            .issuer_name(ca_name)
            .public_key(server_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(aki, critical=False)
            .add_extension(server_ski, critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        chain_file = directory / f"{domain}.pem"
        chain_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))  # the CA is the trust anchor
        files[domain] = (str(chain_file), str(key_file))
    return LabPKI(ca_file=str(ca_file), server_files=files)
