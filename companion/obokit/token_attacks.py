"""Hostile access tokens, made from a real one, and a way to put them in front of the workbook server.

The workbook teaches token validation, so it shows what a server must refuse. Every forgery
here starts from a genuine token the emulator issued and, where a signature is needed, signs
with the emulator's real key (`Emulator.keys`): the server can only refuse such a token by its
claims or headers, which is the point.

    from obokit.token_attacks import forge, proxied_token

    not_yet = forge(emu.keys, valid, nbf=now + 3600)      # claims changed, validly signed
    no_exp = forge(emu.keys, valid, exp=None)              # None removes a claim
    bearer = await proxied_token(server, not_yet)          # what a client would hold
    httpx.post(server.mcp_url, headers={"Authorization": f"Bearer {bearer}"}, ...)  # 401

`proxied_token` answers "what if Entra's token endpoint had returned this token to the OAuth
proxy?": the workbook server is FastMCP's OAuth proxy, so its clients never hold an Entra token,
only the proxy's reference to one, and the proxy validates the Entra token behind it on every
request. The proxy's own `/register` and `/token` endpoints do the rest over HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastmcp.server.auth.oauth_proxy.models import ClientCode, JTIMapping, UpstreamTokenSet

from .clients.headless import LOOPBACK_REDIRECT_URI

if TYPE_CHECKING:  # importing obokit.emulator at run time would start nothing, but a tenant run must not need it
    from .emulator.signing import KeySet


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

__all__ = [
    "REDIRECT_URI", "alg_none", "bad_signature", "claims_of", "forge", "hs256_with_public_key", "proxied_token",
    "register_client", "tampered", "unknown_kid", "upstream_token",
]

REDIRECT_URI = LOOPBACK_REDIRECT_URI  # a loopback callback, as a desktop client registers


def _segments(token: str) -> list[str]:
    return token.split(".")


def claims_of(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified (for building variants and showing claims, never for trust)."""
    return jwt.decode(token, options={"verify_signature": False})


def _with_changes(claims: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = {**claims, **changes}
    return {k: v for k, v in out.items() if v is not None}


def _encode(part: dict[str, Any]) -> str:
    return b64url(json.dumps(part, separators=(",", ":")).encode())


def forge(keys: KeySet, token: str, *, header: dict[str, Any] | None = None, **changes: Any) -> str:
    """`token` with its claims changed (a None value removes the claim), signed with `keys`' current key.

    `header` adds header parameters (e.g. `crit`). The result is as well signed as the original.
    """
    extra = {"typ": "JWT", "kid": keys.current.kid, **(header or {})}
    return jwt.encode(_with_changes(claims_of(token), changes), keys.current.private_key, algorithm="RS256",
                      headers=extra)


def alg_none(token: str) -> str:
    """The same claims, `alg: none` and no signature (RFC 7519 "unsecured JWT")."""
    header = {**jwt.get_unverified_header(token), "alg": "none"}
    return f"{_encode(header)}.{_segments(token)[1]}."


def hs256_with_public_key(keys: KeySet, token: str) -> str:
    """Algorithm confusion: HS256 with the verifier's RSA *public* key (PEM) as the HMAC secret."""
    public_pem = keys.current.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {**jwt.get_unverified_header(token), "alg": "HS256"}
    signing_input = f"{_encode(header)}.{_segments(token)[1]}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def unknown_kid(token: str, *, kid: str | None = None, header: dict[str, Any] | None = None) -> str:
    """The same claims signed by an attacker's own RSA key, under `kid` (default: one the tenant never
    published); `header` adds parameters such as `jku` / `x5u` pointing at the attacker's keys."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    headers = {"typ": "JWT", "kid": kid or secrets.token_hex(8), **(header or {})}
    return jwt.encode(claims_of(token), key, algorithm="RS256", headers=headers)


def bad_signature(token: str) -> str:
    """The genuine token with its signature's bytes flipped."""
    head, payload, signature = _segments(token)
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[0] ^= 0xFF
    raw[-1] ^= 0xFF
    return f"{head}.{payload}.{b64url(bytes(raw))}"


def tampered(token: str, **changes: Any) -> str:
    """The genuine header and signature around a changed payload (e.g. another user's `oid`)."""
    head, _, signature = _segments(token)
    return f"{head}.{_encode(_with_changes(claims_of(token), changes))}.{signature}"


async def proxied_token(server: Any, upstream_token: str, *, client_id: str | None = None) -> str:
    """The proxy's access token for a client, had Entra's token endpoint answered with `upstream_token`.

    `server` is an `obokit.server.RunningServer`. Only the one step the emulator would do (the
    upstream code exchange that ends in the proxy's code store) is replaced; the dynamic client
    registration (unless `client_id` is given: once per server, see `_attack_client`), PKCE and
    the code exchange are the proxy's own `/register` and `/token` over HTTP.
    """
    provider = server.mcp.auth
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as http:
        if client_id is None:
            client_id = await _attack_client(server, http)
        verifier = secrets.token_urlsafe(48)
        challenge = b64url(hashlib.sha256(verifier.encode()).digest())
        code, now = secrets.token_urlsafe(32), time.time()
        scopes = list(provider.required_scopes)
        stored = ClientCode(
            code=code, client_id=client_id, redirect_uri=REDIRECT_URI, code_challenge=challenge,
            code_challenge_method="S256", scopes=scopes, expires_at=now + 300, created_at=now,
            idp_tokens={"access_token": upstream_token, "token_type": "Bearer", "expires_in": 3600,
                        "scope": " ".join(scopes)},
        )
        # The proxy's stores live on the server's event loop (a background thread): write there.
        await _on_server_loop(server, provider._code_store.put(key=code, value=stored, ttl=300))
        answer = await http.post("/token", data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
            "client_id": client_id, "code_verifier": verifier})
    answer.raise_for_status()
    return answer.json()["access_token"]


async def _attack_client(server: Any, http: httpx.AsyncClient) -> str:
    """The client `proxied_token` registered at `server` before, if the proxy still knows it; else a new one.

    Its id (a public client's, no secret) is kept in the server's storage folder, next to the
    proxy's store, so calls and re-runs of a notebook reuse one registration instead of piling up.
    """
    memo = Path(server.storage_dir) / "token-attacks-client-id"
    known = (await asyncio.to_thread(memo.read_text)).strip() if memo.exists() else ""
    if known and await _on_server_loop(server, server.mcp.auth.get_client(known)) is not None:
        return known
    client_id = await register_client(http)
    await asyncio.to_thread(memo.write_text, client_id)
    return client_id


async def register_client(http: httpx.AsyncClient, *, name: str = "obokit token attacks") -> str:
    """Dynamic client registration at the proxy (`http` has the server's base URL); the client id."""
    answer = await http.post("/register", json={
        "client_name": name, "redirect_uris": [REDIRECT_URI], "grant_types": ["authorization_code"],
        "response_types": ["code"], "token_endpoint_auth_method": "none"})
    answer.raise_for_status()
    return answer.json()["client_id"]


async def upstream_token(server: Any, client_bearer: str) -> str:
    """The Entra access token the proxy holds behind a client's token (`client_bearer`, the proxy's JWT)."""
    provider = server.mcp.auth
    jti = claims_of(client_bearer)["jti"]

    async def lookup() -> str:
        mapping: JTIMapping | None = await provider._jti_mapping_store.get(key=jti)
        tokens: UpstreamTokenSet | None = (
            await provider._upstream_token_store.get(key=mapping.upstream_token_id) if mapping else None)
        if tokens is None:
            raise LookupError("the proxy holds no Entra token for this client token")
        return tokens.access_token

    return await _on_server_loop(server, lookup())


async def _on_server_loop(server: Any, coro: Any) -> Any:
    """Await `coro` on the server's event loop: the proxy's stores live there (a background thread)."""
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, server.handle.loop))
