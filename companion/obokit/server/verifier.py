"""A stricter check of the Entra access tokens behind the workbook server's OAuth proxy.

FastMCP's `AzureProvider` validates, on every MCP request, the Entra token the proxy holds for the
client, with fastmcp's `JWTVerifier`: signature (RS256 only, key from the tenant's JWKS), issuer,
audience, expiry and the required scope. fastmcp 4.1.2 lets these hostile tokens through:

* `nbf` in the future (the token is not valid yet: it is never compared with the clock);
* no `exp` at all (an expiry is only checked when `exp` is present);
* `tid` naming another tenant than the one in the issuer;
* `iat` in the future.

`EntraTokenVerifier` runs fastmcp's checks and then these, plus the policies of the workbook:

* every tool acts for a signed-in user, so an app-only token (`idtyp: app`, no `scp`, no `oid`) is
  refused even if it carries roles;
* a `crit` header is refused outright (Entra never sets one, so an unknown critical extension
  cannot be honoured);
* a token Entra would never issue is refused even if validly signed: each claim the server relies
  on must have its documented type and shape (entra-docs access-token-claims-reference.md) and agree
  with the others: `exp`, `iat` (and `nbf`) numbers, `iat` and `nbf` before `exp`, and a lifetime Entra
  gives (at most 28 hours); `tid` and `oid` GUIDs; `ver` "2.0" with the v2 issuer, "1.0" with sts.windows.net;
  `scp` a non-empty string of space-separated scopes; `roles`, if present, a list of strings; `sub` a
  non-empty string; `idtyp`, if present, "user"; and the calling application (`azp` in v2, `appid` in
  v1) a GUID;
* the calling application must be one this server trusts (`trusted_callers`): behind FastMCP's OAuth
  proxy every Entra token the server sees was issued to the server's own app (the proxy signs users in
  with it), so that is the default; a server that Entra clients call directly lists its pre-authorized
  clients instead.

`harden(provider, tenant_id)` puts it in place of the verifier an `AzureProvider` built;
`rejection_reason(header, claims, ...)` is the same policy as a pure function, for notebooks that want
to show why a token is refused.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit

import jwt
from fastmcp.server.auth.auth import AccessToken
from fastmcp.server.auth.providers.azure import AzureProvider
from fastmcp.server.auth.providers.jwt import JWTVerifier

__all__ = ["CLOCK_SKEW_SECONDS", "MAX_LIFETIME_SECONDS", "EntraTokenVerifier", "harden", "issuer_tenant",
           "rejection_reason"]

CLOCK_SKEW_SECONDS = 300  # tolerated clock difference for `nbf` and `iat` (5 minutes)
# Entra's access tokens live 60-90 minutes by default; with continuous access evaluation up to 28 hours
# (entra-docs configurable-token-lifetimes.md, concept-continuous-access-evaluation.md). Nothing lives longer.
MAX_LIFETIME_SECONDS = 28 * 3600
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_SCOPE_LIST = re.compile(r"^[^\s\x00-\x1f]+( [^\s\x00-\x1f]+)*$")
logger = logging.getLogger("obokit.server.verifier")


def _is_time(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def issuer_tenant(iss: Any) -> str | None:
    """The tenant an Entra issuer names: `https://login.microsoftonline.com/{tenant}/v2.0` (v1: `https://sts.windows.net/{tenant}/`)."""
    first = urlsplit(iss).path.strip("/").split("/")[0] if isinstance(iss, str) else ""
    return first or None


def _is_guid(value: Any) -> bool:
    return isinstance(value, str) and bool(_GUID.match(value))


def _calling_app(claims: dict[str, Any], v2: bool) -> Any:
    return claims.get("azp") if v2 else claims.get("appid")


def rejection_reason(header: dict[str, Any], claims: dict[str, Any], *, tenant_id: str,
                     now: float | None = None, leeway: int = CLOCK_SKEW_SECONDS,
                     trusted_callers: Collection[str] | None = None) -> str | None:
    """Why the workbook refuses a token that fastmcp's `JWTVerifier` accepted, or None if it does not.

    Only the checks fastmcp does not make (see the module's docstring): `crit`; the times; the tenant;
    the shape of every claim relied on and their agreement; a delegated (user) token; a trusted caller
    (`trusted_callers`: application ids, compared case-insensitively; None trusts any well-formed one).
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
    if not _is_time(claims.get("iat")) or not claims["iat"] < claims["exp"] or not claims.get("nbf", 0) < claims["exp"]:
        return "times out of order: Entra issues an iat, and iat and nbf before exp"
    if claims["exp"] - claims["iat"] > MAX_LIFETIME_SECONDS:
        return f"lifetime of {claims['exp'] - claims['iat']} s: Entra issues none longer than {MAX_LIFETIME_SECONDS} s"
    tid = claims.get("tid")
    issuer = issuer_tenant(claims.get("iss"))
    # Tenant ids are GUIDs: compare them case-insensitively.
    if not _is_guid(tid) or issuer is None or not tid.lower() == tenant_id.lower() == issuer.lower():
        return f"tid {tid!r} is not this server's tenant (the issuer's)"
    v2 = str(claims.get("iss", "")).rstrip("/").endswith("/v2.0")
    if claims.get("ver") != ("2.0" if v2 else "1.0"):
        return f"ver {claims.get('ver')!r} does not match the {'v2' if v2 else 'v1'} issuer"
    if claims.get("idtyp") not in (None, "user", "app"):
        return f"idtyp {claims.get('idtyp')!r} is not a token type Entra issues"
    if claims.get("idtyp") == "app" or not claims.get("scp") or not claims.get("oid"):
        return "app-only token: the tools act for a signed-in user (delegated scp and oid required)"
    if not isinstance(claims["scp"], str) or not _SCOPE_LIST.match(claims["scp"]):
        return "scp is not a space-separated string of scopes"
    if not _is_guid(claims["oid"]):
        return "oid is not a GUID"
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        return "no sub claim"
    roles = claims.get("roles")
    if roles is not None and (not isinstance(roles, list) or not all(isinstance(r, str) for r in roles)):
        return "roles is not a list of strings"
    caller = _calling_app(claims, v2)
    if not _is_guid(caller):
        return f"no calling application ({'azp' if v2 else 'appid'} must be an application id)"
    if trusted_callers is not None and caller.lower() not in {c.lower() for c in trusted_callers}:
        return f"calling application {caller} is not one this server trusts"
    return None


class EntraTokenVerifier(JWTVerifier):
    """fastmcp's `JWTVerifier` plus the checks it skips (`exp` required, `nbf`, `iat`, `tid`, `crit`)
    and the workbook's policy that only delegated user tokens are accepted.

    A refused token makes `verify_token` return None (the server answers 401 with its
    `WWW-Authenticate` challenge) and logs one line on `obokit.server.verifier` with the reason,
    never the token.
    """

    def __init__(self, *, tenant_id: str, leeway: int = CLOCK_SKEW_SECONDS,
                 trusted_callers: Collection[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tenant_id = tenant_id
        self.leeway = leeway
        self.trusted_callers = frozenset(trusted_callers) if trusted_callers is not None else None

    @classmethod
    def like(cls, stock: JWTVerifier, *, tenant_id: str, leeway: int = CLOCK_SKEW_SECONDS,
             trusted_callers: Collection[str] | None = None) -> "EntraTokenVerifier":
        """The same JWKS, issuer, audience, algorithm and scopes as `stock`, with the extra checks."""
        return cls(
            tenant_id=tenant_id, leeway=leeway, trusted_callers=trusted_callers,
            jwks_uri=stock.jwks_uri, public_key=stock.public_key,
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
        reason = rejection_reason(header, claims, tenant_id=self.tenant_id, leeway=self.leeway,
                                  trusted_callers=self.trusted_callers)
        return access if reason is None else self._refuse(reason, claims)

    def _refuse(self, reason: str | None, claims: dict[str, Any]) -> None:
        who = claims.get("preferred_username") or claims.get("azp") or "unknown client"
        logger.warning("Bearer token rejected for %s: %s", who, reason)
        return None


def harden(provider: AzureProvider, *, tenant_id: str, trusted_callers: Collection[str] | None = None) -> AzureProvider:
    """Replace the `JWTVerifier` an `AzureProvider` built with an `EntraTokenVerifier` like it.

    `trusted_callers`: the application ids whose tokens the server accepts; by default the provider's own
    client id, the only one behind FastMCP's OAuth proxy.
    """
    stock = provider._token_validator
    if not isinstance(stock, JWTVerifier):
        raise TypeError(f"expected the AzureProvider's JWTVerifier, found {type(stock).__name__}")
    if trusted_callers is None:
        trusted_callers = [provider._upstream_client_id]
    if not isinstance(stock, EntraTokenVerifier):
        provider._token_validator = EntraTokenVerifier.like(stock, tenant_id=tenant_id, trusted_callers=trusted_callers)
    return provider
