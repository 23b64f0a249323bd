"""Client assertions at /token (`client_assertion_type=...:jwt-bearer`, RFC 7523): a JWT the app signed with a
certificate it registered (`keyCredentials`), or a token from a trusted issuer that one of its federated identity
credentials names (workload identity federation).

An assertion whose `iss` or `sub` is the client id is the app's own (entra-docs certificate-credentials.md:
`iss` = `sub` = client id, `aud` = the tenant's token endpoint); any other is a federated one, matched on issuer,
subject and audience before its signature is checked (Entra names the unmatched field first: AADSTS700211/3/2,
and fails to fetch an issuer's metadata, AADSTS50166, only for an issuer a credential trusts). The emulator can
verify one issuer: its own tenant's v2 issuer, whose tokens (a managed identity's, for instance) it signs itself.

No `jti` replay check: Entra accepts a client assertion more than once. MSAL Python 1.39 signs one and sends it for
540 s (`create_regenerative_assertion` wraps it in `AutoRefresher`); MSAL4J kept one for 10 minutes up to 1.23
(AzureAD/microsoft-authentication-library-for-java#986); workload identity tokens are reused until they expire.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import time
from typing import Any
from urllib.parse import urlsplit

import jwt

from . import errors
from .federated import federated_credentials
from .ids import TENANT_DOMAIN, TENANT_ID
from .key_credentials import find_key
from .signing import KeySet
from .tokens import v2_issuer

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ACR = "2"  # azpacr / appidacr of a client that proved itself with a certificate (access-token claims)
RSA_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
NBF_SKEW = 300  # seconds an `nbf` may lie ahead (the skew the OBO assertion check allows; Entra's is not public)
_ONLY_SIGNATURE = {"verify_aud": False, "verify_exp": False, "verify_nbf": False, "verify_iat": False,
                   "verify_iss": False, "verify_sub": False, "verify_jti": False}


def _thumbprint(header: dict[str, Any], name: str, size: int) -> bytes | None:
    value = header.get(name)
    if not isinstance(value, str):
        return None
    try:
        raw = base64.urlsafe_b64decode(value.rstrip("=") + "=" * (-len(value.rstrip("=")) % 4))
    except (ValueError, binascii.Error):
        return None
    return raw if len(raw) == size else None


def _audiences(claims: dict[str, Any]) -> list[str]:
    aud = claims.get("aud")
    return [a for a in (aud if isinstance(aud, list) else [aud]) if isinstance(a, str)]


class ClientAssertions:
    """Authenticates a client by its `client_assertion`; `authority` is the emulator's identity origin."""

    def __init__(self, keys: KeySet, authority: str) -> None:
        self.keys = keys
        self.authority = authority

    def authenticate(self, app: dict[str, Any], form: dict[str, str]) -> str:
        """The client's acr ("2") if the assertion proves it is `app`; the AADSTS error otherwise."""
        assertion = form.get("client_assertion")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise errors.missing_parameter("client_assertion_type")  # Entra's answer to a wrong type is not public
        if not assertion:
            raise errors.missing_parameter("client_assertion")
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise errors.malformed_jwt() from None
        if app["appId"] in (claims.get("iss"), claims.get("sub")):
            self._check_certificate(app, assertion, header, claims)
        else:
            self._check_federated(app, assertion, header, claims)
        self._check_time(claims)
        return ASSERTION_ACR

    # -- the app's own certificate ----------------------------------------------------------
    def _check_certificate(self, app: dict[str, Any], assertion: str, header: dict[str, Any],
                           claims: dict[str, Any]) -> None:
        if claims.get("iss") != app["appId"] or claims.get("sub") != app["appId"]:
            raise errors.assertion_client_mismatch()
        if "x5t" not in header and "x5t#S256" not in header:
            raise errors.assertion_without_thumbprint()
        sha256, sha1 = _thumbprint(header, "x5t#S256", 32), _thumbprint(header, "x5t", 20)
        used = (sha256 or sha1 or b"").hex().upper()
        key = find_key(app, sha1=sha1, sha256=sha256) if used else None
        if key is None:
            raise errors.certificate_not_registered(app["appId"], used or None)
        if not key.valid_at(dt.datetime.now(dt.timezone.utc)):
            raise errors.certificate_expired(app["appId"], used, key.start, key.end)
        try:
            jwt.decode(assertion, key.cert.public_key(), algorithms=RSA_ALGORITHMS, options=_ONLY_SIGNATURE)
        except jwt.PyJWTError:
            raise errors.certificate_signature_invalid(app["appId"], used, key.start, key.end) from None
        if not set(_audiences(claims)) & self._token_endpoints():
            raise errors.assertion_audience_mismatch()

    def _token_endpoints(self) -> set[str]:
        """What `aud` may be: the tenant's token endpoints (v2, v1), by id or domain, and its v2 issuer (accepted
        in AzureAD/microsoft-authentication-library-for-dotnet#2184, whose failure was only the expiry)."""
        tenants = (TENANT_ID, TENANT_DOMAIN)
        return {f"{self.authority}/{t}/{path}" for t in tenants for path in ("oauth2/v2.0/token", "oauth2/token", "v2.0")}

    # -- a token from a trusted issuer ------------------------------------------------------
    def _own_issuer_at_any_port(self, issuer: Any) -> Any:
        """The emulator's v2 issuer for a credential naming it at another loopback port (a simplification: the
        emulator listens on a new port per start, Entra's issuer never changes, so a credential written by an
        earlier kernel must still match); any other issuer as it is."""
        own = urlsplit(v2_issuer(self.authority))
        named = urlsplit(str(issuer))
        if (named.scheme, named.hostname, named.path) == (own.scheme, own.hostname, own.path):
            return v2_issuer(self.authority)
        return issuer

    def _check_federated(self, app: dict[str, Any], assertion: str, header: dict[str, Any],
                         claims: dict[str, Any]) -> None:
        issuer, subject, audiences = str(claims.get("iss")), str(claims.get("sub")), _audiences(claims)
        credentials = federated_credentials(app)
        if not credentials:
            raise errors.no_federated_record(issuer, subject, ",".join(audiences))
        # Matching is case-sensitive (entra-docs reference-breaking-changes.md, 2025; Azure/login#517).
        trusted = [c for c in credentials if self._own_issuer_at_any_port(c.get("issuer")) == issuer]
        if not trusted:
            raise errors.federated_issuer_mismatch(issuer)
        trusted = [c for c in trusted if c.get("subject") == subject]
        if not trusted:
            raise errors.federated_subject_mismatch(subject)
        if not any(set(c.get("audiences") or []) & set(audiences) for c in trusted):
            raise errors.federated_audience_mismatch(",".join(audiences))
        if issuer != v2_issuer(self.authority):
            raise errors.external_oidc_failed()
        keys = {k.kid: k for k in (self.keys.current, self.keys.next)}
        key = keys.get(str(header.get("kid")))
        if key is None:
            raise errors.federated_key_not_found(errors.hex_thumbprint(header.get("kid", "")), issuer)
        try:
            jwt.decode(assertion, key.private_key.public_key(), algorithms=["RS256"], options=_ONLY_SIGNATURE)
        except jwt.PyJWTError:  # no capture of Entra's answer: the certificate wording, as the closest
            raise errors.certificate_signature_invalid(app["appId"], errors.hex_thumbprint(key.kid),
                                                       key.cert.not_valid_before_utc, key.cert.not_valid_after_utc) from None

    @staticmethod
    def _check_time(claims: dict[str, Any]) -> None:
        now = time.time()
        exp, nbf = claims.get("exp"), claims.get("nbf")
        exp = exp if isinstance(exp, (int, float)) else 0
        nbf = nbf if isinstance(nbf, (int, float)) else 0
        if exp <= now or nbf > now + NBF_SKEW:
            raise errors.assertion_time_range(now, nbf, exp)
