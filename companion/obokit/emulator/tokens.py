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
from .ids import GRAPH_RESOURCE, TENANT_ID
from .signing import KeySet, b64url


def v2_issuer(authority: str) -> str:
    return f"{authority}/{TENANT_ID}/v2.0"


V1_ISSUER = f"https://sts.windows.net/{TENANT_ID}/"


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
        acr = "1" if subject.client_authenticated else "0"
        if version == 2:
            claims.update(aud=resource_app["appId"], iss=v2_issuer(self.authority), azp=client_app_id, azpacr=acr)
        else:
            aud = GRAPH_RESOURCE if scopes.is_graph else (scopes.prefix or scopes.resource_sp["appId"])
            claims.update(aud=aud, iss=V1_ISSUER, appid=client_app_id, appidacr=acr)
        claims.update(aio=_opaque(), rh=_opaque(16), tid=TENANT_ID, uti=_opaque(16), ver=f"{version}.0")
        user = subject.user
        if user is not None:
            claims.update(
                oid=user["id"],
                sub=pairwise_sub(user["id"], client_app_id),
                name=user["displayName"],
                scp=" ".join(scp),
                idtyp="user",
            )
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
            claims.update(oid=subject.client_sp["id"], sub=subject.client_sp["id"], idtyp="app")
        if roles:
            claims["roles"] = roles
        return self.keys.sign(claims, x5t=version == 1), lifetime

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


def response_scope(scopes: ScopeRequest, values: list[str]) -> str:
    """The `scope` field of a token response: resource-prefixed values plus OIDC scopes."""
    prefix = GRAPH_RESOURCE if scopes.is_graph else scopes.prefix
    granted = [f"{prefix}/{v}" for v in values]
    return " ".join(granted + [s for s in scopes.oidc if s != "offline_access" and s in OIDC_SCOPES])


def new_refresh_token() -> tuple[str, str]:
    """An opaque refresh token and the hash it is stored under."""
    token = "0.A" + _opaque(48)
    return token, hashlib.sha256(token.encode()).hexdigest()


def refresh_token_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
