"""Token signing keys: two RSA keys (current and next), published as a JWKS like Entra's.

Tokens are signed RS256 with the current key; the next key is published too, so that
key rotation can be exercised. Keys are cached in the state folder.

Microsoft Graph's tokens carry a `nonce` in their header, and the signature covers the header with the
*SHA-256 of that nonce* instead (justinlettau/azure-ad-verify-token#5; AzureAD/azure-activedirectory-identitymodel-
extensions-for-dotnet#853 and #609; MicrosoftDocs/azure-docs#80018: "The validate jwt policy is not meant to validate
tokens targeted for the Graph api"). A standard JWT library therefore refuses a Graph token's signature; only
Graph knows to hash the nonce back. `sign(..., graph_nonce=True)` and `verify` do the same here.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from ..files import private_dir, write_private


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@dataclass(frozen=True)
class SigningKey:
    """One RSA key with its self-signed certificate; `kid` is the certificate's SHA-1 thumbprint."""

    private_key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @property
    def kid(self) -> str:
        return b64url(self.cert.fingerprint(hashes.SHA1()))  # noqa: S303 - x5t is SHA-1 by definition

    def jwk(self, issuer: str) -> dict[str, Any]:
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": _int_b64(numbers.n),
            "e": _int_b64(numbers.e),
            "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()],
            "cloud_instance_name": "microsoftonline.com",
            "issuer": issuer,
        }


def _generate(name: str) -> SigningKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return SigningKey(key, cert)


def _load_or_create(path: Path, name: str) -> SigningKey:
    if path.exists():
        pem = path.read_bytes()
        # Our own key from an owner-only file: skip OpenSSL's RSA consistency check (~80 ms per key).
        key = serialization.load_pem_private_key(pem, password=None, unsafe_skip_rsa_key_validation=True)
        cert = x509.load_pem_x509_certificate(pem)
        assert isinstance(key, rsa.RSAPrivateKey)
        return SigningKey(key, cert)
    signing_key = _generate(name)
    pem = signing_key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ) + signing_key.cert.public_bytes(serialization.Encoding.PEM)
    write_private(path, pem)
    return signing_key


class KeySet:
    """The emulator's signing keys: `current` signs, both verify."""

    def __init__(self, folder: Path) -> None:
        private_dir(folder, tighten=True)  # older versions made it 0755
        self.current = _load_or_create(folder / "signing-current.pem", "obokit emulator signing key 1")
        self.next = _load_or_create(folder / "signing-next.pem", "obokit emulator signing key 2")
        self._by_kid = {k.kid: k for k in (self.current, self.next)}

    def jwks(self, issuer: str) -> dict[str, Any]:
        return {"keys": [k.jwk(issuer) for k in (self.current, self.next)]}

    def sign(self, claims: dict[str, Any], *, x5t: bool = False, graph_nonce: bool = False) -> str:
        """An RS256 JWT; `graph_nonce`: with a Graph-style `nonce` header (the signature covers its SHA-256)."""
        if graph_nonce:
            return self._sign_with_nonce(claims)
        headers = {"typ": "JWT", "kid": self.current.kid}
        if x5t:
            headers["x5t"] = self.current.kid
        return jwt.encode(claims, self.current.private_key, algorithm="RS256", headers=headers)

    def _sign_with_nonce(self, claims: dict[str, Any]) -> str:
        nonce = b64url(secrets.token_bytes(48))
        # Header fields in the order of real Graph tokens: typ, nonce, alg, x5t, kid.
        header = {"typ": "JWT", "nonce": nonce, "alg": "RS256", "x5t": self.current.kid, "kid": self.current.kid}
        payload = _segment(claims)
        signing_input = f"{_segment({**header, 'nonce': _hashed_nonce(nonce)})}.{payload}".encode()
        signature = self.current.private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return ".".join([_segment(header), payload, b64url(signature)])

    def verify(self, token: str, *, audience: list[str] | None = None, leeway: int = 300) -> dict[str, Any]:
        """Check signature, expiry and (optionally) audience; raise `jwt.PyJWTError` on failure.

        A Graph-style `nonce` header is hashed back first, as Graph itself does."""
        header = jwt.get_unverified_header(token)
        if isinstance(header.get("nonce"), str):
            _, payload, signature = token.split(".")
            token = ".".join([_segment({**header, "nonce": _hashed_nonce(header["nonce"])}), payload, signature])
        key = self._by_kid.get(header.get("kid", ""))
        if key is None:
            raise jwt.InvalidSignatureError("unknown signing key")
        return jwt.decode(
            token,
            key.private_key.public_key(),
            algorithms=["RS256"],
            audience=audience,
            leeway=leeway,
            options={"verify_aud": audience is not None, "require": ["exp", "iat"]},
        )


def _hashed_nonce(nonce: str) -> str:
    return b64url(hashlib.sha256(nonce.encode()).digest())


def _segment(part: dict[str, Any]) -> str:
    return b64url(json.dumps(part, separators=(",", ":")).encode())


def sha256_b64url(text: str) -> str:
    return b64url(hashlib.sha256(text.encode()).digest())
