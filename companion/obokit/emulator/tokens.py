"""Claim sets and token responses shaped like Entra's (v1 and v2 access tokens, id tokens, refresh tokens)."""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import time
from dataclasses import dataclass
from typing import Any

from .directory import OIDC_SCOPES, ScopeRequest
from .ids import GRAPH_APP_ID, GRAPH_RESOURCE, TENANT_ID
from .signing import KeySet, b64url


def v2_issuer(authority: str) -> str:
    return f"{authority}/{TENANT_ID}/v2.0"


V1_ISSUER = f"https://sts.windows.net/{TENANT_ID}/"
# The audience of a managed identity's token for a federated identity credential (entra-docs
# workload-identity-federation-config-app-trust-managed-identity.md).
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
# A managed identity's token lives about a day: 86,700 s (exp - iat) in a 2023 capture of an AKS managed identity's
# ARM token in an Azure activity-log event, which also shows `appidacr` "2" (a certificate) and `idtyp` "app".
MANAGED_IDENTITY_LIFETIME = 86_700


def _opaque(n: int = 24) -> str:
    return b64url(secrets.token_bytes(n))


def pairwise_sub(oid: str, app_id: str) -> str:
    return b64url(hashlib.sha256(f"{oid}:{app_id}".encode()).digest())[:43]


def client_info(oid: str) -> str:
    return b64url(json.dumps({"uid": oid, "utid": TENANT_ID}).encode())


@dataclass
class Subject:
    """Who a token is about: a user (delegated) or the client itself (app-only)."""

    user: dict[str, Any] | None
    client_app: dict[str, Any]
    client_sp: dict[str, Any]
    client_authenticated: bool  # azpacr / appidacr: "1" with a secret, "0" for a public client
    client_acr: str | None = None  # overrides it: "2" for a certificate or federated credential (client_assertions.py)


class TokenFactory:
    """Signs access, id and refresh tokens for the emulator's tenant."""

    def __init__(self, keys: KeySet, authority: str, lifetime: int | None = None) -> None:
        self.keys = keys
        self.authority = authority
        self.lifetime = lifetime  # None: random 60-90 minutes, as Entra does

    def _lifetime(self) -> int:
        return self.lifetime if self.lifetime is not None else random.randint(3600, 5400)

    def access_token(
        self,
        subject: Subject,
        scopes: ScopeRequest,
        *,
        scp: list[str],
        roles: list[str],
    ) -> tuple[str, int]:
        """Sign an access token for the resource in `scopes`; the version follows the resource app."""
        assert scopes.resource_sp is not None
        now = int(time.time())
        lifetime = self._lifetime()
        resource_app = scopes.resource_app
        version = 1
        if resource_app is not None and resource_app.get("api", {}).get("requestedAccessTokenVersion") == 2:
            version = 2
        claims: dict[str, Any] = {"iat": now, "nbf": now, "exp": now + lifetime}
        client_app_id = subject.client_app["appId"]
        acr = subject.client_acr or ("1" if subject.client_authenticated else "0")
        if version == 2:
            claims.update(aud=resource_app["appId"], iss=v2_issuer(self.authority), azp=client_app_id, azpacr=acr)
        else:
            claims.update(aud=_v1_audience(scopes), iss=V1_ISSUER, appid=client_app_id, appidacr=acr)
        claims.update(aio=_opaque(), rh=_opaque(16), tid=TENANT_ID, uti=_opaque(16), ver=f"{version}.0")
        user = subject.user
        if user is not None:
            claims.update(
                oid=user["id"],
                sub=pairwise_sub(user["id"], client_app_id),
                name=user["displayName"],
                scp=" ".join(scp),
            )
            if scopes.is_graph:
                claims["idtyp"] = "user"  # Graph sets it (captured tokens, MSAL.js#5672); custom APIs do not
            if version == 2:
                claims["preferred_username"] = user["userPrincipalName"]
            else:
                claims.update(
                    upn=user["userPrincipalName"],
                    unique_name=user["userPrincipalName"],
                    given_name=user.get("givenName"),
                    family_name=user.get("surname"),
                    amr=["pwd"],
                    acr="1",
                    ipaddr="127.0.0.1",
                )
        else:
            claims.update(oid=subject.client_sp["id"], sub=subject.client_sp["id"])
            if scopes.is_graph or _opted_in(resource_app, "idtyp"):
                claims["idtyp"] = "app"
        if roles:
            claims["roles"] = roles
        return self.keys.sign(claims, x5t=version == 1, graph_nonce=scopes.is_graph), lifetime

    def id_token(self, user: dict[str, Any], client_id: str, nonce: str | None, scopes: list[str]) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": client_id,
            "iss": v2_issuer(self.authority),
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "oid": user["id"],
            "sub": pairwise_sub(user["id"], client_id),
            "tid": TENANT_ID,
            "ver": "2.0",
            "rh": _opaque(16),
            "uti": _opaque(16),
        }
        if "profile" in scopes:
            claims.update(name=user["displayName"], preferred_username=user["userPrincipalName"])
        if "email" in scopes and user.get("mail"):
            claims["email"] = user["mail"]
        if nonce:
            claims["nonce"] = nonce
        return self.keys.sign(claims)

    def managed_identity_token(self, identity: dict[str, Any], audience: str, roles: list[str]) -> tuple[str, int]:
        """An app-only token of a managed identity (`identity`: its service principal) and its `exp`: v1 for
        Graph, v2 (issuer `v2_issuer`) for TOKEN_EXCHANGE_AUDIENCE, the assertion a federated credential trusts."""
        now = int(time.time())
        lifetime = self.lifetime if self.lifetime is not None else MANAGED_IDENTITY_LIFETIME
        graph = audience != TOKEN_EXCHANGE_AUDIENCE
        claims: dict[str, Any] = {"aud": audience, "iat": now, "nbf": now, "exp": now + lifetime}
        if graph:
            claims.update(iss=V1_ISSUER, appid=identity["appId"], appidacr="2")
        else:
            claims.update(iss=v2_issuer(self.authority), azp=identity["appId"], azpacr="2")
        claims.update(aio=_opaque(), idtyp="app", oid=identity["id"], rh=_opaque(16), sub=identity["id"],
                      tid=TENANT_ID, uti=_opaque(16), ver="1.0" if graph else "2.0")
        if roles:
            claims["roles"] = roles
        return self.keys.sign(claims, x5t=graph, graph_nonce=graph), claims["exp"]


def _v1_audience(scopes: ScopeRequest) -> str:
    """Graph's `aud` follows how the scope was written: its app id for `User.Read`, its URL for
    `https://graph.microsoft.com/User.Read` (MSAL.js#5672 and #3547; TheNetworg/oauth2-azure#107)."""
    if scopes.is_graph:
        return GRAPH_RESOURCE if scopes.prefix else GRAPH_APP_ID
    assert scopes.resource_sp is not None
    return scopes.prefix or scopes.resource_sp["appId"]


def _opted_in(app: dict[str, Any] | None, claim: str) -> bool:
    """Whether the resource app asks for an optional access-token claim (`optionalClaims.accessToken`).

    `idtyp` is such a claim, and Entra then adds it to app-only tokens only (entra-docs optional-claims.md)."""
    wanted = ((app or {}).get("optionalClaims") or {}).get("accessToken") or []
    return any(isinstance(c, dict) and c.get("name") == claim for c in wanted)


def response_scope(scopes: ScopeRequest, values: list[str]) -> str:
    """The `scope` field of a token response: the token's scopes, then the OIDC scopes
    unprefixed and without offline_access ("User.Read profile openid email", entra-docs v2-oauth2-device-code.md)."""
    # Graph scopes keep the form they were asked in: "User.Read" unprefixed ([22]), "https://graph.microsoft.com/
    # user.read" prefixed (entra-docs v2-oauth2-on-behalf-of-flow.md), like the token's `aud` (_v1_audience).
    prefix = GRAPH_RESOURCE if scopes.is_graph and scopes.prefix else scopes.prefix
    granted = [f"{prefix}/{v}" if prefix else v for v in values if v not in OIDC_SCOPES]
    oidc = dict.fromkeys(s for s in [*scopes.oidc, *values] if s in OIDC_SCOPES and s != "offline_access")
    return " ".join(granted + list(oidc))


def new_refresh_token() -> tuple[str, str]:
    """An opaque refresh token and the hash it is stored under."""
    token = "0.A" + _opaque(48)
    return token, hashlib.sha256(token.encode()).hexdigest()


def refresh_token_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
