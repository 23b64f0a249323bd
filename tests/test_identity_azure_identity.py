"""Conformance of the emulator's identity side with the real azure-identity credentials (no mocks).

The sync credentials wrap MSAL (and so need `disable_instance_discovery=True`); the aio
`OnBehalfOfCredential` is the one fastmcp's `EntraOBOToken` uses and posts straight to /token.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest
from azure.identity import ClientSecretCredential, OnBehalfOfCredential
from azure.identity.aio import OnBehalfOfCredential as AsyncOnBehalfOfCredential

from obokit.emulator import Emulator
from tenant_setup import consented_api, Registration, user_token, user_upn

REDIRECT_URI = "http://localhost:8766/callback"
GRAPH = "https://graph.microsoft.com"
GRAPH_USER_READ = f"{GRAPH}/User.Read"


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def me(emu: Emulator, token: str) -> httpx.Response:
    return httpx.get(f"{emu.graph_url}/me", headers={"Authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def api(emulator: Emulator) -> Registration:
    return consented_api(emulator, "azure-identity conformance api", REDIRECT_URI)


@pytest.fixture(scope="module")
def adele_assertion(emulator: Emulator, api: Registration) -> str:
    return user_token(emulator, api, user_upn("adele"), REDIRECT_URI)


def test_client_secret_credential_gets_an_app_only_graph_token(emulator: Emulator) -> None:
    client_id, secret = emulator.automation_credentials()
    credential = ClientSecretCredential(
        emulator.tenant_id, client_id, secret, authority=emulator.authority, disable_instance_discovery=True
    )
    token = credential.get_token(f"{GRAPH}/.default")
    assert token.expires_on > time.time() + 60
    claims = claims_of(token.token)
    assert claims["aud"] == GRAPH and claims["appid"] == client_id and claims["idtyp"] == "app"
    assert claims["roles"]
    users = httpx.get(f"{emulator.graph_url}/users", headers={"Authorization": f"Bearer {token.token}"})
    assert users.status_code == 200, users.text
    assert user_upn("chen") in {u["userPrincipalName"] for u in users.json()["value"]}
    # A second call is served from the credential's cache.
    before = emulator.stats()["token_requests"].get("client_credentials", 0)
    assert credential.get_token(f"{GRAPH}/.default").token == token.token
    assert emulator.stats()["token_requests"].get("client_credentials", 0) == before


def test_sync_obo_credential_calls_graph_as_the_user(emulator: Emulator, api: Registration, adele_assertion: str) -> None:
    credential = OnBehalfOfCredential(
        emulator.tenant_id, api.app_id, client_secret=api.secret, user_assertion=adele_assertion,
        authority=emulator.authority, disable_instance_discovery=True,
    )
    token = credential.get_token(GRAPH_USER_READ)
    claims = claims_of(token.token)
    assert claims["aud"] == GRAPH and claims["ver"] == "1.0" and claims["appid"] == api.app_id
    assert claims["upn"] == user_upn("adele") and "User.Read" in claims["scp"].split()
    assert abs(token.expires_on - claims["exp"]) <= 2
    response = me(emulator, token.token)
    assert response.status_code == 200, response.text
    assert response.json()["userPrincipalName"] == user_upn("adele")


async def test_async_obo_credential_calls_graph_and_caches(emulator: Emulator, api: Registration, adele_assertion: str) -> None:
    def obo_count() -> int:
        return sum(e["count"] for e in emulator.stats()["obo_exchanges"] if e["scope"] == GRAPH_USER_READ)

    async with AsyncOnBehalfOfCredential(
        emulator.tenant_id, api.app_id, client_secret=api.secret, user_assertion=adele_assertion,
        authority=emulator.authority,
    ) as credential:
        before = obo_count()
        token = await credential.get_token(GRAPH_USER_READ)
        assert obo_count() == before + 1
        again = await credential.get_token(GRAPH_USER_READ)
        assert again.token == token.token and obo_count() == before + 1  # cached, no second exchange
    claims = claims_of(token.token)
    assert claims["aud"] == GRAPH and claims["upn"] == user_upn("adele")
    assert claims["oid"] == claims_of(adele_assertion)["oid"]
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{emulator.graph_url}/me", headers={"Authorization": f"Bearer {token.token}"})
    assert response.status_code == 200, response.text
    assert response.json()["userPrincipalName"] == user_upn("adele")


async def test_async_obo_keeps_users_apart(emulator: Emulator, api: Registration, adele_assertion: str) -> None:
    chen_assertion = user_token(emulator, api, user_upn("chen"), REDIRECT_URI)
    results = {}
    for name, assertion in (("adele", adele_assertion), ("chen", chen_assertion)):
        async with AsyncOnBehalfOfCredential(
            emulator.tenant_id, api.app_id, client_secret=api.secret, user_assertion=assertion,
            authority=emulator.authority,
        ) as credential:
            results[name] = claims_of((await credential.get_token(GRAPH_USER_READ)).token)["upn"]
    assert results == {"adele": user_upn("adele"), "chen": user_upn("chen")}
