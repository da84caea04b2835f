"""Reading a certificate and its key from PEM files, and what SNI and the
operators need of it: its names, its expiry, whether the key belongs to it.

Every problem is a `TlsError` whose message names the YAML path and the
file, so that `loadstone check`, `run` and a reload report it the same way."""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

# A certificate that expires within this many seconds is warned about.
EXPIRY_WARNING = 30 * 86400


class TlsError(Exception):
    """A certificate, key or CA file cannot be used, or OpenSSL refuses a setting;
    the message names the YAML path (and the file) and says why."""


@dataclass(frozen=True, slots=True)
class Certificate:
    """One loaded certificate with its key: what SNI matches and what status shows."""

    where: str  # the YAML path, e.g. listeners.web.tls.certificates[0]
    cert_path: str
    key_path: str
    names: tuple[str, ...]  # subjectAltName DNS names, else the CN; lower case
    not_after: float  # expiry, seconds since the epoch
    subject: str

    def matches(self, server_name: str) -> bool:
        """Does this certificate serve `server_name` (exact, or one-label wildcard)?"""
        for name in self.names:
            if name == server_name:
                return True
            # A wildcard stands for exactly one label: *.a.b matches x.a.b, not a.b.
            if name.startswith("*.") and server_name.partition(".")[2] == name[2:]:
                return True
        return False

    def expiry_problem(self, now: float | None = None) -> str | None:
        """A warning line when the certificate has expired or will within 30 days."""
        left = self.not_after - (time.time() if now is None else now)
        if left <= 0:
            return f"{self.where}: certificate {self.cert_path} ({self.subject}) has expired"
        if left < EXPIRY_WARNING:
            days = int(left // 86400)
            what = f"{self.where}: certificate {self.cert_path} ({self.subject})"
            return f"{what} expires in {days} days"
        return None


def read_pem(path: str, where: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise TlsError(f"{where}: cannot read {what} {path}: {exc.strerror}") from None


def load_certificate(where: str, cert_path: str, key_path: str | None) -> Certificate:
    """Read and check one certificate (and its key: in its own file or in cert_path)."""
    data = read_pem(cert_path, where, "certificate")
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TlsError(f"{where}: no PEM certificate in {cert_path}") from None
    leaf = chain[0]
    key_file = key_path if key_path is not None else cert_path
    key_data = data if key_path is None else read_pem(key_path, where, "key")
    if b"PRIVATE KEY-----" not in key_data:
        raise TlsError(f"{where}: no private key in {key_file} (give `key` or append it)")
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError) as exc:
        raise TlsError(f"{where}: cannot read the private key in {key_file}: {exc}") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki):
        raise TlsError(f"{where}: the key in {key_file} does not match the certificate {cert_path}")
    return Certificate(
        where=where,
        cert_path=cert_path,
        key_path=key_file,
        names=_names(leaf),
        not_after=leaf.not_valid_after_utc.timestamp(),
        subject=leaf.subject.rfc4514_string(),
    )


def _names(cert: x509.Certificate) -> tuple[str, ...]:
    """The DNS names of subjectAltName, or the CN when there is none (as browsers
    no longer do, but older internal CAs still issue)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return tuple(n.lower() for n in names)


def load_into(context: ssl.SSLContext, cert: Certificate) -> None:
    """Give `context` this certificate and key (already checked by load_certificate)."""
    try:
        context.load_cert_chain(cert.cert_path, cert.key_path)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"{cert.where}: OpenSSL refuses {cert.cert_path}: {exc}") from None


def load_ca(context: ssl.SSLContext, path: str, where: str) -> None:
    read_pem(path, where, "CA file")  # the readable-file message first
    try:
        context.load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"{where}: no usable CA certificate in {path}: {exc}") from None
