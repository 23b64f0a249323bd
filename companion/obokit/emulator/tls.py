"""A throwaway local certificate authority and the server certificate it signs.

Real clients (MSAL, azure-identity, httpx, aiohttp) refuse plain-http authorities, so the
emulator serves HTTPS. The CA and leaf are generated once per state folder and reused.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..files import private_dir, write_private, write_public

_VALIDITY = dt.timedelta(days=365)
_RENEW_BEFORE = dt.timedelta(days=7)


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the generated PEM files."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    bundle: Path  # system CAs + the local CA: what SSL_CERT_FILE / REQUESTS_CA_BUNDLE point at


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _still_valid(cert_path: Path) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return False
    return cert.not_valid_after_utc - _RENEW_BEFORE > dt.datetime.now(dt.timezone.utc)


def _build_ca(now: dt.datetime, common_name: str = "obokit emulator local CA") -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _san_entry(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _build_leaf(
    ca_key: rsa.RSAPrivateKey, ca_cert: x509.Certificate, now: dt.datetime,
    hosts: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = _new_key()
    san = x509.SubjectAlternativeName([_san_entry(host) for host in hosts])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def ensure_tls(folder: Path) -> TlsFiles:
    """Create (or reuse) the CA, the server certificate and the combined CA bundle in `folder`."""
    private_dir(folder, tighten=True)  # older versions made it 0755
    files = TlsFiles(
        ca_cert=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server-key.pem",
        bundle=folder / "ca-bundle.pem",
    )
    if not (_still_valid(files.ca_cert) and _still_valid(files.server_cert) and files.server_key.exists()):
        now = dt.datetime.now(dt.timezone.utc)
        ca_key, ca_cert = _build_ca(now)
        leaf_key, leaf_cert = _build_leaf(ca_key, ca_cert, now)
        write_private(files.server_key, _key_pem(leaf_key))
        write_public(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
        write_public(files.server_cert, leaf_cert.public_bytes(serialization.Encoding.PEM))
    system = Path(certifi.where()).read_bytes()
    # Other processes may be reading the bundle (SSL_CERT_FILE): rewrite it only when it changes, atomically.
    write_public(files.bundle, system.rstrip(b"\n") + b"\n" + files.ca_cert.read_bytes())
    return files


def issue_certificate(ca_name: str, hosts: Sequence[str]) -> tuple[bytes, bytes, bytes]:
    """A new CA named `ca_name` and a server certificate it signs for `hosts` (names or IP addresses):
    (CA certificate, server certificate, server key) as PEM; the CA's key is not kept."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, ca_cert = _build_ca(now, ca_name)
    leaf_key, leaf_cert = _build_leaf(ca_key, ca_cert, now, hosts)
    pem = serialization.Encoding.PEM
    return ca_cert.public_bytes(pem), leaf_cert.public_bytes(pem), _key_pem(leaf_key)
