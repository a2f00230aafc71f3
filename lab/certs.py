"""The lab's PKI: a throwaway CA made at start-up and one server certificate per domain.

EC P-256 keys keep start-up fast. The CA exists only for the lab's lifetime (its PEM sits in the lab's
temporary directory), so trusting it — via ``TLSConfig(ca_file=...)`` — trusts nothing outside the lab.
The extensions follow what strict verifiers (Python 3.13's VERIFY_X509_STRICT) ask for. ``LabIssuer``
keeps the CA key for the lab's lifetime so wildcard sites can get a certificate when a name first appears.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["LabIssuer", "LabPKI", "issue_lab_pki"]

_VALIDITY = dt.timedelta(days=7)
_BACKDATE = dt.timedelta(hours=1)  # tolerate small clock differences between processes


class LabIssuer:
    """The lab CA's signing side: issues a server certificate for any name, now or later.

    Every server certificate shares one key (generating a key per name buys the lab nothing) and one
    validity window, so a certificate issued on demand mid-run looks like one issued at start-up.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        now = dt.datetime.now(dt.UTC)
        self._not_before, self._not_after = now - _BACKDATE, now + _VALIDITY
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        self._ca_name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gatewatch lab"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"gatewatch lab CA {now:%Y%m%dT%H%M%S}"),
            ]
        )
        ca_ski = x509.SubjectKeyIdentifier.from_public_key(self._ca_key.public_key())
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(self._ca_name)
            .issuer_name(self._ca_name)
            .public_key(self._ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._not_before)
            .not_valid_after(self._not_after)
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
            .sign(self._ca_key, hashes.SHA256())
        )
        self.ca_file = directory / "lab-ca.pem"
        self.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        self._server_key = ec.generate_private_key(ec.SECP256R1())
        self.key_file = directory / "lab-server-key.pem"
        self.key_file.write_bytes(
            self._server_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        self._aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
        self._server_ski = x509.SubjectKeyIdentifier.from_public_key(self._server_key.public_key())

    def issue(self, name: str) -> tuple[str, str]:
        """(certificate PEM path, key PEM path) for ``name``: a DNS name, or an IP literal (IP SAN)."""
        try:
            subject_alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
        except ValueError:
            subject_alt = x509.DNSName(name)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._ca_name)
            .public_key(self._server_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._not_before)
            .not_valid_after(self._not_after)
            .add_extension(x509.SubjectAlternativeName([subject_alt]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(self._aki, critical=False)
            .add_extension(self._server_ski, critical=False)
            .sign(self._ca_key, hashes.SHA256())
        )
        # Names come from clients' SNI too: the file is named by a hash, never by the name itself.
        chain_file = self.directory / f"cert-{hashlib.sha256(name.encode()).hexdigest()[:32]}.pem"
        chain_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))  # the CA is the trust anchor
        return str(chain_file), str(self.key_file)


@dataclass(frozen=True)
class LabPKI:
    ca_file: str
    # domain -> (certificate chain PEM path, key PEM path)
    server_files: dict[str, tuple[str, str]]
    # Issues certificates for names met after start-up (wildcard sites); None: only server_files exist.
    issuer: LabIssuer | None = None

    def server_context(self, domain: str) -> ssl.SSLContext:
        """A TLS server context presenting ``domain``'s certificate."""
        return _context(*self.server_files[domain])

    def issue_context(self, name: str) -> ssl.SSLContext:
        """A TLS server context for a certificate issued now, by the lab CA, for ``name``."""
        if self.issuer is None:
            raise LookupError("this PKI issues no certificates after start-up")
        return _context(*self.issuer.issue(name))


def _context(chain: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key)
    context.set_alpn_protocols(["http/1.1"])
    return context


def issue_lab_pki(domains: Iterable[str], directory: Path) -> LabPKI:
    """Generate the CA and a certificate per domain, writing PEM files into ``directory``."""
    issuer = LabIssuer(directory)
    files = {domain: issuer.issue(domain) for domain in domains}
    return LabPKI(ca_file=str(issuer.ca_file), server_files=files, issuer=issuer)
