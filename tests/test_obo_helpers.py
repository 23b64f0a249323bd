"""obokit.server.obo against the emulator with the real httpx and MSAL: the raw jwt-bearer POST, MSAL's OBO
(in a worker thread from async code), the AADSTS errors they surface, and the request counter."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import httpx
import jwt
import pytest

from obokit.emulator import Emulator
from obokit.server.obo import (
    JWT_BEARER,
    CountingSession,
    OboError,
    confidential_client,
    msal_exchange,
    msal_obo,
    msal_obo_async,
    raw_exchange,
    raw_obo_exchange,
)
from tenant_setup import Registration, consented_api, obo_target, register_api, user_token, user_upn

REDIRECT_URI = "http://localhost:8765/callback"
USER_READ = ["https://graph.microsoft.com/User.Read"]


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


@pytest.fixture(scope="module")
def target(emulator: Emulator) -> SimpleNamespace:
    return obo_target(emulator)


@pytest.fixture(scope="module")
def api(emulator: Emulator) -> Registration:
    return consented_api(emulator, "obo helpers api", REDIRECT_URI)


@pytest.fixture(scope="module")
def bruno(emulator: Emulator, api: Registration) -> str:
    """Bruno's access token for `api`: the user assertion a middle tier receives."""
    return user_token(emulator, api, user_upn("bruno"), REDIRECT_URI)


async def test_raw_exchange_returns_a_graph_token_for_the_same_user(emulator, target, api, bruno) -> None:
    result = await raw_obo_exchange(target, api.app_id, api.secret, bruno, USER_READ)
    graph = claims(result["access_token"])
    assert graph["aud"] == "https://graph.microsoft.com" and graph["oid"] == claims(bruno)["oid"]
    assert "User.Read" in graph["scp"].split() and result["token_type"] == "Bearer"
    async with httpx.AsyncClient() as http:
        me = await http.get(f"{emulator.graph_url}/me", headers={"Authorization": f"Bearer {result['access_token']}"})
    assert me.json()["userPrincipalName"] == user_upn("bruno")


async def test_raw_exchange_wrong_audience_is_500131_without_secrets(emulator, target, api, bruno) -> None:
    other = register_api(emulator, name="obo helpers other api")
    with pytest.raises(OboError) as failure:
        await raw_obo_exchange(target, other.app_id, other.secret, bruno, USER_READ)
    error = failure.value
    assert (error.status, error.error, error.code, error.aadsts) == (400, "invalid_grant", 500131, "AADSTS500131")
    assert error.message.startswith("Assertion audience does not match")
    shown = f"{error} {error.body}"
    assert other.secret not in shown and bruno not in shown


async def test_raw_exchange_bad_secret_is_7000215_http_401(target, api, bruno) -> None:
    with pytest.raises(OboError) as failure:
        await raw_obo_exchange(target, api.app_id, "not-the-secret", bruno, USER_READ)
    assert (failure.value.status, failure.value.error, failure.value.code) == (401, "invalid_client", 7000215)


async def test_raw_exchange_misspelt_scope_is_650053(target, api, bruno) -> None:
    with pytest.raises(OboError) as failure:
        await raw_obo_exchange(target, api.app_id, api.secret, bruno, ["https://graph.microsoft.com/Nope.Nothing"])
    assert (failure.value.error, failure.value.code) == ("invalid_client", 650053)
    assert "Trace ID" not in failure.value.description and "'Nope.Nothing'" in failure.value.description


def test_msal_obo_and_its_consent_error(emulator, target, api, bruno) -> None:
    result = msal_obo(confidential_client(target, api.app_id, api.secret), bruno, USER_READ)
    assert claims(result["access_token"])["oid"] == claims(bruno)["oid"]
    assert result["token_source"] == "identity_provider"
    # An API never granted Graph consent: MSAL's error dict becomes OboError 65001.
    bare = register_api(emulator, name="obo helpers no consent", redirect_uris=[REDIRECT_URI])
    chen = user_token(emulator, bare, user_upn("chen"), REDIRECT_URI)
    with pytest.raises(OboError) as failure:
        msal_obo(confidential_client(target, bare.app_id, bare.secret), chen, USER_READ)
    assert (failure.value.code, failure.value.body.get("suberror"), failure.value.status) == (65001, "consent_required", None)


async def test_msal_obo_async_keeps_the_event_loop_free(fresh_faults, target, api, bruno) -> None:
    fresh_faults.faults.set_latency("identity", 400)
    app = confidential_client(target, api.app_id, api.secret)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    try:
        result = await msal_obo_async(app, bruno, USER_READ)
    finally:
        task.cancel()
    elapsed = time.monotonic() - started
    assert "access_token" in result and elapsed >= 0.4
    # A blocking call would have starved the ticker for the whole exchange.
    assert ticks >= int(elapsed / 0.02) // 2


async def test_counting_session_sees_every_msal_obo_and_the_seam_is_interchangeable(target, api, bruno) -> None:
    session = CountingSession()
    app = confidential_client(target, api.app_id, api.secret, http_client=session)
    for _ in range(2):
        await msal_obo_async(app, bruno, USER_READ)  # MSAL 1.39 OBO never reads its cache first
    assert session.token_requests[JWT_BEARER] == 2
    via_raw, via_msal = await asyncio.gather(
        raw_exchange(target, api.app_id, api.secret)(bruno, USER_READ), msal_exchange(app)(bruno, USER_READ)
    )
    assert claims(via_raw["access_token"])["oid"] == claims(via_msal["access_token"])["oid"] == claims(bruno)["oid"]
    assert session.token_requests[JWT_BEARER] == 3
