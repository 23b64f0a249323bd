"""A stricter check of the Entra access tokens behind the workbook server's OAuth proxy.

FastMCP's `AzureProvider` validates, on every MCP request, the Entra token the proxy holds for the
client, with fastmcp's `JWTVerifier`: signature (RS256 only, key from the tenant's JWKS), issuer,
audience, expiry and the required scope. fastmcp 4.1.2 lets these hostile tokens through:

* `nbf` in the future (the token is not valid yet: it is never compared with the clock);
* no `exp` at all (an expiry is only checked when `exp` is present);
* `tid` naming another tenant than the one in the issuer;
* `iat` in the future.

`EntraTokenVerifier` runs fastmcp's checks and then these, plus two policies of the workbook:
every tool acts for a signed-in user, so an app-only token (`idtyp: app`, no `scp`, no `oid`) is
refused even if it carries roles; and a `crit` header is refused outright (Entra never sets one,
so an unknown critical extension cannot be honoured). `harden(provider, tenant_id)` puts it in
place of the verifier an `AzureProvider` built; `rejection_reason(header, claims, ...)` is the
same policy as a pure function, for notebooks that want to show why a token is refused.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit

import jwt
from fastmcp.server.auth.auth import AccessToken
from fastmcp.server.auth.providers.azure import AzureProvider
from fastmcp.server.auth.providers.jwt import JWTVerifier

__all__ = ["CLOCK_SKEW_SECONDS", "EntraTokenVerifier", "harden", "issuer_tenant", "rejection_reason"]

CLOCK_SKEW_SECONDS = 300  # tolerated clock difference for `nbf` and `iat` (5 minutes)
logger = logging.getLogger("obokit.verifier")


def _is_time(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def issuer_tenant(iss: Any) -> str | None:
    """The tenant an Entra issuer names: `https://login.microsoftonline.com/{tenant}/v2.0` (v1: `https://sts.windows.net/{tenant}/`)."""
    first = urlsplit(iss).path.strip("/").split("/")[0] if isinstance(iss, str) else ""
    return first or None


def rejection_reason(header: dict[str, Any], claims: dict[str, Any], *, tenant_id: str,
                     now: float | None = None, leeway: int = CLOCK_SKEW_SECONDS) -> str | None:
    """Why the workbook refuses a token that fastmcp's `JWTVerifier` accepted, or None if it does not.

    Only the checks fastmcp does not make: `crit`, `exp` present, `nbf`/`iat` not in the future,
    `tid` equal to the tenant of the issuer and of the server, and a delegated (user) token.
    """
    now = time.time() if now is None else now
    if "crit" in header:
        return f"critical header extension(s) {header['crit']!r} not understood"
    if not _is_time(claims.get("exp")):
        return "no valid exp claim: a token must expire"
    if "nbf" in claims and (not _is_time(claims["nbf"]) or claims["nbf"] > now + leeway):
        return "not valid yet (nbf is in the future)"
    if "iat" in claims and (not _is_time(claims["iat"]) or claims["iat"] > now + leeway):
        return "issued in the future (iat)"
    tid = claims.get("tid")
    issuer = issuer_tenant(claims.get("iss"))
    # Tenant ids are GUIDs: compare them case-insensitively.
    if not isinstance(tid, str) or issuer is None or not tid.lower() == tenant_id.lower() == issuer.lower():
        return f"tid {tid!r} is not this server's tenant (the issuer's)"
    if claims.get("idtyp") == "app" or not claims.get("scp") or not claims.get("oid"):
        return "app-only token: the tools act for a signed-in user (delegated scp and oid required)"
    return None


class EntraTokenVerifier(JWTVerifier):
    """fastmcp's `JWTVerifier` plus the checks it skips (`exp` required, `nbf`, `iat`, `tid`, `crit`)
    and the workbook's policy that only delegated user tokens are accepted.

    A refused token makes `verify_token` return None (the server answers 401 with its
    `WWW-Authenticate` challenge) and logs one line on `obokit.verifier` with the reason,
    never the token.
    """

    def __init__(self, *, tenant_id: str, leeway: int = CLOCK_SKEW_SECONDS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tenant_id = tenant_id
        self.leeway = leeway

    @classmethod
    def like(cls, stock: JWTVerifier, *, tenant_id: str, leeway: int = CLOCK_SKEW_SECONDS) -> "EntraTokenVerifier":
        """The same JWKS, issuer, audience, algorithm and scopes as `stock`, with the extra checks."""
        return cls(
            tenant_id=tenant_id, leeway=leeway, jwks_uri=stock.jwks_uri, public_key=stock.public_key,
            issuer=stock.issuer, audience=stock.audience, algorithm=stock.algorithm,
            required_scopes=stock.required_scopes, http_client=stock._http_client, ssrf_safe=stock.ssrf_safe,
            jwks_refresh_interval=stock._jwks_refresh_interval,
        )

    async def load_access_token(self, token: str) -> AccessToken | None:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        if "crit" in header:  # decided before any key is fetched or claim is read
            return self._refuse(rejection_reason(header, {}, tenant_id=self.tenant_id), {})
        access = await super().load_access_token(token)
        if access is None:
            return None
        claims = access.claims or {}
        reason = rejection_reason(header, claims, tenant_id=self.tenant_id, leeway=self.leeway)
        return access if reason is None else self._refuse(reason, claims)

    def _refuse(self, reason: str | None, claims: dict[str, Any]) -> None:
        who = claims.get("preferred_username") or claims.get("azp") or "unknown client"
        logger.warning("Bearer token rejected for %s: %s", who, reason)
        return None


def harden(provider: AzureProvider, *, tenant_id: str) -> AzureProvider:
    """Replace the `JWTVerifier` an `AzureProvider` built with an `EntraTokenVerifier` like it."""
    stock = provider._token_validator
    if not isinstance(stock, JWTVerifier):
        raise TypeError(f"expected the AzureProvider's JWTVerifier, found {type(stock).__name__}")
    if not isinstance(stock, EntraTokenVerifier):
        provider._token_validator = EntraTokenVerifier.like(stock, tenant_id=tenant_id)
    return provider
