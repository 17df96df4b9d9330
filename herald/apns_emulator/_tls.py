"""Test certificate authority and server certificate for the APNs emulator.

The emulator speaks real TLS so that clients exercise the same code path as
against Apple; they only have to trust our throwaway CA instead of the system
store.  Certificates live in a directory so a long-running ``herald dev``
setup keeps the same CA across restarts (clients configured once keep
working).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from herald.apns_emulator._log import logger

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
SERVER_CERT_FILE = "server.pem"
SERVER_KEY_FILE = "server-key.pem"

#: Names every server certificate is valid for.  Fixed rather than derived
#: from the bind address so a certificate directory can be shared between
#: emulators bound differently.
SERVER_DNS_NAMES = ("localhost",)
SERVER_IP_ADDRESSES = ("127.0.0.1", "::1")

_CA_VALIDITY = dt.timedelta(days=3650)
_SERVER_VALIDITY = dt.timedelta(days=365)
# Re-issue a little before expiry so a process started just before the
# deadline does not fail mid-run.
_RENEW_MARGIN = dt.timedelta(days=2)


@dataclass(frozen=True)
class TlsMaterial:
    """Paths of the PEM files making up the emulator's TLS identity."""

    ca_path: Path
    cert_path: Path
    key_path: Path


def ensure_tls_material(cert_dir: Path) -> TlsMaterial:
    """Load the CA and server certificate from ``cert_dir``, creating them if needed.

    An existing CA is reused whenever it is still valid, so clients that
    already trust it keep working; the server certificate is re-issued when
    it is missing, expiring, not signed by that CA or missing a required name.
    """
    cert_dir.mkdir(parents=True, exist_ok=True)
    with _directory_lock(cert_dir):
        ca_cert, ca_key = _load_or_create_ca(cert_dir)
        if not _server_cert_usable(cert_dir, ca_cert):
            _issue_server_cert(cert_dir, ca_cert, ca_key)
    return TlsMaterial(
        ca_path=cert_dir / CA_CERT_FILE,
        cert_path=cert_dir / SERVER_CERT_FILE,
        key_path=cert_dir / SERVER_KEY_FILE,
    )


def server_ssl_context(material: TlsMaterial) -> ssl.SSLContext:
    """Build the server-side TLS context: TLS 1.2+, ALPN ``h2`` offered, not required."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # Apple requires TLS 1.2+, and so does HTTP/2 (RFC 9113 section 9.2).
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    context.load_cert_chain(material.cert_path, material.key_path)
    # Advertise h2, but a client that offers no ALPN at all (aioapns' default
    # context is one) still gets a connection and is spoken to in HTTP/2,
    # exactly as Apple's servers behave.
    context.set_alpn_protocols(["h2"])
    return context


def client_ssl_context(ca_path: str | os.PathLike[str]) -> ssl.SSLContext:
    """A client context that trusts only the emulator CA and offers ALPN ``h2``."""
    context = ssl.create_default_context(cafile=os.fspath(ca_path))
    context.set_alpn_protocols(["h2"])
    return context


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@contextmanager
def _directory_lock(cert_dir: Path) -> Iterator[None]:
    """Serialise certificate creation between processes sharing ``cert_dir``.

    Without it two emulators started together (e.g. parallel test workers)
    could each write a CA and leave a server certificate signed by the other.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: best effort, no lock
        yield
        return
    with open(cert_dir / ".lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _write(path: Path, data: bytes, *, private: bool) -> None:
    """Write atomically; private keys are created 0600 from the start."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _same_public_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)


def _load_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    if not (cert_path.is_file() and key_path.is_file()):
        return None
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except ValueError:
        logger.warning("Ignoring unreadable certificate/key %s", cert_path)
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not _same_public_key(cert, key):
        return None
    if cert.not_valid_after_utc - _RENEW_MARGIN < _now():
        return None
    return cert, key


def _load_or_create_ca(
    cert_dir: Path,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    existing = _load_pair(cert_dir / CA_CERT_FILE, cert_dir / CA_KEY_FILE)
    if existing is not None:
        return existing
    logger.info("Creating APNs emulator test CA in %s", cert_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Herald development"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Herald APNs emulator test CA"),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + _CA_VALIDITY)
        # Critical basic constraints / key usage and the key identifiers are
        # what OpenSSL 3 with VERIFY_X509_STRICT (Python 3.13's default) needs.
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(cert_dir / CA_KEY_FILE, _key_pem(key), private=True)
    _write(
        cert_dir / CA_CERT_FILE,
        cert.public_bytes(serialization.Encoding.PEM),
        private=False,
    )
    return cert, key


def _server_cert_usable(cert_dir: Path, ca_cert: x509.Certificate) -> bool:
    pair = _load_pair(cert_dir / SERVER_CERT_FILE, cert_dir / SERVER_KEY_FILE)
    if pair is None:
        return False
    cert, _ = pair
    try:
        cert.verify_directly_issued_by(ca_cert)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    dns = set(san.get_values_for_type(x509.DNSName))
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return dns.issuperset(SERVER_DNS_NAMES) and ips.issuperset(SERVER_IP_ADDRESSES)


def _issue_server_cert(cert_dir: Path, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey) -> None:
    logger.info("Issuing APNs emulator server certificate in %s", cert_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in SERVER_DNS_NAMES]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IP_ADDRESSES]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(min(now + _SERVER_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(cert_dir / SERVER_KEY_FILE, _key_pem(key), private=True)
    _write(
        cert_dir / SERVER_CERT_FILE,
        cert.public_bytes(serialization.Encoding.PEM),
        private=False,
    )
