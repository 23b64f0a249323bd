"""How the server proves itself to Entra: a client secret, a certificate, or a managed identity via a federated credential.

The server's app authenticates at Entra's token endpoint twice over: when the OAuth proxy redeems a user's
sign-in (authorization code, refresh) and in every On-Behalf-Of exchange. Each credential below gives what
the three ways of calling that endpoint need:

* `form_fields(client_id, token_endpoint)` - the form fields of a hand-made request (`obokit.server.obo`) and of
  the proxy's upstream client: `client_secret`, or `client_assertion_type` + `client_assertion` (RFC 7523);
* `msal_credential()` - MSAL's `client_credential=`: the secret, ``{"private_key", "thumbprint", ...}`` or
  ``{"client_assertion": callable}``;
* `azure_identity_kwargs()` - azure-identity's `client_secret=`, `client_certificate=` or `client_assertion_func=`.

`ManagedIdentityAssertion` fetches its assertion (the managed identity's token for `api://AzureADTokenExchange`)
with I/O; `await credential.prepare()` does that in a worker thread, ahead of the call, and the synchronous
callables that MSAL and azure-identity invoke (azure-identity's aio credentials invoke them *on* the event loop)
only read the assertion kept from then, until shortly before it expires.

    credential = ClientCertificate.from_pem(pem)          # private key + certificate, PEM
    credential = ManagedIdentityAssertion(mi_client_id)   # in App Service / Container Apps
    await credential.prepare()
    app = msal.ConfidentialClientApplication(client_id, client_credential=credential.msal_credential(), ...)
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, ClassVar

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# The audience of a token that is used as a federated credential (Entra's "Workload identity federation" docs).
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
ASSERTION_LIFETIME = 600  # seconds: MSAL and azure-identity sign theirs for 10 minutes too


class ServerCredential(ABC):
    """What the server's app presents to Entra instead of (or as) a client secret."""

    kind: ClassVar[str]

    async def prepare(self) -> None:
        """Do any I/O the credential needs, off the event loop, before a token request (a no-op by default)."""

    @abstractmethod
    def form_fields(self, client_id: str, token_endpoint: str) -> dict[str, str]:
        """The client-authentication fields of a token request to `token_endpoint` (without I/O)."""

    @abstractmethod
    def msal_credential(self) -> Any:
        """The `client_credential=` of `msal.ConfidentialClientApplication`."""

    @abstractmethod
    def azure_identity_kwargs(self) -> dict[str, Any]:
        """The credential keywords of azure-identity's `OnBehalfOfCredential` / `ClientSecretCredential` family."""


@dataclass(repr=False)
class ClientSecret(ServerCredential):
    """A client secret (a password of the app registration): simple, and a thing that can leak."""

    value: str
    kind: ClassVar[str] = "client secret"

    def form_fields(self, client_id: str, token_endpoint: str) -> dict[str, str]:
        return {"client_id": client_id, "client_secret": self.value}

    def msal_credential(self) -> str:
        return self.value

    def azure_identity_kwargs(self) -> dict[str, Any]:
        return {"client_secret": self.value}

    def __repr__(self) -> str:
        return "ClientSecret(<hidden>)"


@dataclass(repr=False)
class ClientCertificate(ServerCredential):
    """A certificate whose public part is registered on the app (`keyCredentials`); the private key signs assertions."""

    private_key_pem: bytes
    certificate_pem: bytes
    kind: ClassVar[str] = "certificate"
    _private_key: Any = field(init=False, compare=False)
    _assertions: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict, init=False, compare=False)
    _signing: threading.Lock = field(default_factory=threading.Lock, init=False, compare=False)

    def __post_init__(self) -> None:
        # Parsed once, here, not per assertion: loading a PEM RSA key (OpenSSL's consistency check) takes ~35 ms and
        # holds the GIL, so the event loop would wait for it even in a worker thread. Signing takes ~0.3 ms.
        self._private_key = serialization.load_pem_private_key(self.private_key_pem, password=None)

    @classmethod
    def from_pem(cls, pem: bytes) -> "ClientCertificate":
        """From one PEM file holding the private key and the certificate (what azure-identity reads)."""
        key = serialization.load_pem_private_key(pem, password=None)
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return cls(key_pem, x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.PEM))

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.certificate_pem)

    @property
    def thumbprint(self) -> str:
        """SHA-1 of the certificate (hex, upper case): Graph's `customKeyIdentifier`, the `x5t` header."""
        return self.certificate.fingerprint(hashes.SHA1()).hex().upper()

    def form_fields(self, client_id: str, token_endpoint: str) -> dict[str, str]:
        return {"client_id": client_id, "client_assertion_type": CLIENT_ASSERTION_TYPE,
                "client_assertion": self.reusable_assertion(client_id, token_endpoint)}

    def reusable_assertion(self, client_id: str, audience: str) -> str:
        """`sign_assertion`, signed again only when the last one for this client and audience has less than a
        minute left. Entra accepts a client assertion more than once, and MSAL reuses its own for 9 minutes
        (`msal/oauth2cli/assertion.py`): signing holds the GIL, so ten exchanges starting together would otherwise
        keep the event loop waiting for ten signatures."""
        key, now = (client_id, audience), time.time()
        with self._signing:
            kept = self._assertions.get(key)
            if kept is None or now > kept[1] - 60:
                kept = (self.sign_assertion(client_id, audience, now=now), now + ASSERTION_LIFETIME)
                self._assertions[key] = kept
            return kept[0]

    def sign_assertion(self, client_id: str, audience: str, *, now: float | None = None,
                       lifetime: int = ASSERTION_LIFETIME) -> str:
        """An RFC 7523 client assertion: iss = sub = the client, aud = the token endpoint, a fresh jti.

        Signed PS256 with the certificate's SHA-256 thumbprint in `x5t#S256`, as MSAL does.
        """
        issued = int(now if now is not None else time.time())
        claims = {"aud": audience, "iss": client_id, "sub": client_id, "jti": str(uuid.uuid4()),
                  "iat": issued, "nbf": issued, "exp": issued + lifetime}
        digest = self.certificate.fingerprint(hashes.SHA256())
        header = {"x5t#S256": base64.urlsafe_b64encode(digest).rstrip(b"=").decode()}
        return jwt.encode(claims, self._private_key, algorithm="PS256", headers=header)

    def msal_credential(self) -> dict[str, str]:
        # With the certificate (not only its SHA-1 "thumbprint"), MSAL 1.35+ signs PS256 with x5t#S256.
        return {"private_key": self.private_key_pem.decode(), "public_certificate": self.certificate_pem.decode()}

    def azure_identity_kwargs(self) -> dict[str, Any]:
        return {"client_certificate": self.private_key_pem + self.certificate_pem}

    def __repr__(self) -> str:
        return f"ClientCertificate(thumbprint={self.thumbprint!r})"


def self_signed_certificate(common_name: str, *, days: int = 30) -> bytes:
    """A new RSA-2048 key and a self-signed certificate for it, as one PEM (key first). Entra needs no CA for app keys."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, common_name)])
    start = time.time() - 300
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_utc(start)).not_valid_after(_utc(start + days * 86400))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem + certificate.public_bytes(serialization.Encoding.PEM)


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)


@dataclass(repr=False)
class ManagedIdentityAssertion(ServerCredential):
    """A user-assigned managed identity's token, trusted by the app as a federated identity credential.

    No secret exists anywhere: the hosting platform (App Service, Container Apps: `IDENTITY_ENDPOINT` and
    `IDENTITY_HEADER`) gives the identity a token for `api://AzureADTokenExchange`, and the app's federated
    credential (issuer = the tenant's v2 issuer, subject = the identity's principal id) tells Entra to accept it
    as the app's client assertion. `fetch` is how the token is obtained (default: MSAL's `ManagedIdentityClient`);
    `fetches` counts the calls it made.
    """

    managed_identity_client_id: str
    fetch: Callable[[], dict[str, Any]] | None = None
    refresh_margin: int = 300  # seconds before expiry when a new assertion is fetched
    kind: ClassVar[str] = "managed identity (federated credential)"
    fetches: int = field(default=0, init=False)
    _token: str | None = field(default=None, init=False)
    _expires_on: float = field(default=0.0, init=False)
    _fetched_at: float = field(default=0.0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        if self.fetch is None:
            self.fetch = msal_managed_identity_fetch(self.managed_identity_client_id)

    @property
    def fresh(self) -> bool:
        # The margin is at most half the token's lifetime: a platform token shorter than the margin is still used.
        margin = min(self.refresh_margin, (self._expires_on - self._fetched_at) / 2)
        return self._token is not None and time.time() < self._expires_on - margin

    async def prepare(self) -> None:
        if not self.fresh:
            await asyncio.to_thread(self.client_assertion)

    def client_assertion(self) -> str:
        """The managed identity's token: the kept one while fresh, otherwise fetched (blocking; see `prepare`)."""
        with self._lock:
            if not self.fresh:
                result = self.fetch()  # type: ignore[misc]
                if "access_token" not in result:
                    raise ManagedIdentityError(result)
                self.fetches += 1
                self._token = result["access_token"]
                self._expires_on = _expiry(result)
                self._fetched_at = time.time()
            return self._token  # type: ignore[return-value]

    def form_fields(self, client_id: str, token_endpoint: str) -> dict[str, str]:
        return {"client_id": client_id, "client_assertion_type": CLIENT_ASSERTION_TYPE,
                "client_assertion": self.client_assertion()}

    def msal_credential(self) -> dict[str, Any]:
        return {"client_assertion": self.client_assertion}

    def azure_identity_kwargs(self) -> dict[str, Any]:
        return {"client_assertion_func": self.client_assertion}

    def __repr__(self) -> str:
        return f"ManagedIdentityAssertion(managed_identity_client_id={self.managed_identity_client_id!r})"


class ManagedIdentityError(RuntimeError):
    """The managed-identity endpoint gave no token; carries its error body (never a token)."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = {k: v for k, v in body.items() if k != "access_token"}
        super().__init__(f"{body.get('error', 'error')}: {body.get('error_description', body)}")


def _expiry(result: dict[str, Any]) -> float:
    if "expires_on" in result:
        return float(result["expires_on"])
    return time.time() + float(result.get("expires_in", 0))


def msal_managed_identity_fetch(client_id: str) -> Callable[[], dict[str, Any]]:
    """A fetch of the identity's token for `api://AzureADTokenExchange` with MSAL's `ManagedIdentityClient`.

    MSAL reads the platform's endpoint from the environment (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER` in App
    Service and Container Apps) when the first token is requested, and keeps tokens in its own cache.
    """
    import msal
    import requests

    client = msal.ManagedIdentityClient(msal.UserAssignedManagedIdentity(client_id=client_id),
                                        http_client=requests.Session())

    def fetch() -> dict[str, Any]:
        return client.acquire_token_for_client(resource=TOKEN_EXCHANGE_AUDIENCE)

    return fetch


CERTIFICATE_FILE_NAME = "mcp-server-certificate.pem"  # next to the secrets file; 08-secretless writes it


def workbook_credential(target: Any, client_secret: str) -> ServerCredential:
    """The credential the workbook server proves itself with, after 08-secretless as before it.

    Where 08 stored a certificate (`CERTIFICATE_FILE_NAME` next to the target's secrets file): the managed identity
    if this process has one (08 made the app trust it), else the certificate. Before 08: the client secret.
    """
    key_file = target.secrets_file.with_name(CERTIFICATE_FILE_NAME)
    if not key_file.exists():
        return ClientSecret(client_secret)
    managed_identity = target.managed_identity()
    if managed_identity:
        return ManagedIdentityAssertion(managed_identity)
    return ClientCertificate.from_pem(key_file.read_bytes())


__all__ = [
    "ASSERTION_LIFETIME", "CERTIFICATE_FILE_NAME", "workbook_credential", "CLIENT_ASSERTION_TYPE", "TOKEN_EXCHANGE_AUDIENCE", "ClientCertificate", "ClientSecret",
    "ManagedIdentityAssertion", "ManagedIdentityError", "ServerCredential",
    "msal_managed_identity_fetch", "self_signed_certificate",
]
