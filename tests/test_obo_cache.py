"""obokit.server.obo_cache.OboCache against the emulator, and the workbook server that uses it by default.

Behaviour, not timing: the emulator counts the OBO exchanges it answers per (user, scope); the
no-blocking check compares which call finishes first while the identity provider is slow.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from types import SimpleNamespace

import jwt
import pytest
from fastmcp import Client
from server_fixtures import FINANCE_SITE, serve_consented
from tenant_setup import Registration, consented_api, grant_graph_consent, obo_target, register_api, user_token, user_upn

from obokit.emulator import Emulator, group_id, user_id
from obokit.clients.mcp_client import HeadlessOAuth
from obokit.server.obo import OboError
from obokit.server.obo_cache import OboCache, cache_key
from obokit.server import RunningServer

REDIRECT_URI = "http://localhost:8766/callback"
GRAPH = "https://graph.microsoft.com"
USER_READ, SITES, GROUPS = [f"{GRAPH}/User.Read"], [f"{GRAPH}/Sites.Read.All"], [f"{GRAPH}/GroupMember.Read.All"]


def exchanges(emu: Emulator) -> Counter[tuple[str, str]]:
    """OBO exchanges the emulator answered so far, per (user object id, scope string)."""
    return Counter({(e["user"], e["scope"]): e["count"] for e in emu.stats()["obo_exchanges"]})


def new_exchanges(emu: Emulator, before: Counter[tuple[str, str]]) -> dict[tuple[str, str], int]:
    return {key: n for key, n in (exchanges(emu) - before).items() if n}


def oid(token: str) -> str:
    return jwt.decode(token, options={"verify_signature": False})["oid"]


class Clock:
    """A clock the test moves by hand, for expiry without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def target(emulator: Emulator) -> SimpleNamespace:
    return obo_target(emulator)


@pytest.fixture(scope="module")
def api(emulator: Emulator) -> Registration:
    return consented_api(emulator, "obo cache api", REDIRECT_URI)


@pytest.fixture(scope="module")
def tokens(emulator: Emulator, api: Registration) -> dict[str, str]:
    """Bruno's and Chen's access tokens for `api`: the user assertions a middle tier receives."""
    return {name: user_token(emulator, api, user_upn(name), REDIRECT_URI) for name in ("bruno", "chen")}


def cache_for(target: SimpleNamespace, api: Registration, **options: object) -> OboCache:
    return OboCache.for_app(target, api.app_id, api.secret, **options)


# -- the cache on its own -----------------------------------------------------------------
async def test_one_exchange_per_user_and_scope_and_users_kept_apart(emulator, target, api, tokens) -> None:
    cache = cache_for(target, api)
    before = exchanges(emulator)
    got: dict[tuple[str, str], set[str]] = {}
    for _ in range(5):
        for name, scopes in (("bruno", USER_READ), ("bruno", SITES), ("chen", USER_READ)):
            got.setdefault((name, scopes[0]), set()).add(await cache.token(tokens[name], scopes))
    await cache.aclose()
    assert new_exchanges(emulator, before) == {
        (user_id("bruno"), USER_READ[0]): 1, (user_id("bruno"), SITES[0]): 1, (user_id("chen"), USER_READ[0]): 1}
    assert all(len(seen) == 1 for seen in got.values()), "the cached token is served again"
    assert oid(next(iter(got[("bruno", USER_READ[0])]))) == user_id("bruno")
    assert oid(next(iter(got[("chen", USER_READ[0])]))) == user_id("chen"), "never another user's token"
    assert (cache.stats.exchanges, cache.stats.hits, len(cache)) == (3, 12, 3)


async def test_callers_get_copies_of_the_cached_response(emulator, target, api, tokens) -> None:
    cache = cache_for(target, api)
    first = await cache.get(tokens["bruno"], USER_READ)
    first["access_token"] = "changed by a careless caller"
    again = await cache.get(tokens["bruno"], USER_READ)
    await cache.aclose()
    assert again["access_token"] != "changed by a careless caller" and cache.stats.hits == 1


async def test_concurrent_first_calls_coalesce_into_one_exchange(fresh_faults, target, api, tokens) -> None:
    fresh_faults.faults.set_latency("identity", 200)  # the first exchange is surely still in flight
    cache = cache_for(target, api)
    before = exchanges(fresh_faults)
    results = await asyncio.gather(*(cache.token(tokens[name], GROUPS) for name in ["bruno", "chen"] * 10))
    await cache.aclose()
    assert new_exchanges(fresh_faults, before) == {(user_id("bruno"), GROUPS[0]): 1, (user_id("chen"), GROUPS[0]): 1}
    assert len(set(results[0::2])) == len(set(results[1::2])) == 1
    assert oid(results[0]) == user_id("bruno") and oid(results[1]) == user_id("chen")
    assert (cache.stats.exchanges, cache.stats.coalesced) == (2, 18)


async def test_scopes_in_any_order_share_one_entry(emulator, target, api, tokens) -> None:
    cache = cache_for(target, api)
    both = [USER_READ[0], SITES[0]]
    first = await cache.token(tokens["bruno"], both)
    assert await cache.token(tokens["bruno"], list(reversed(both))) == first
    await cache.aclose()
    assert cache.stats.exchanges == 1


async def test_an_entry_is_refreshed_shortly_before_it_expires(emulator, target, api, tokens) -> None:
    clock = Clock()
    cache = cache_for(target, api, skew=120, clock=clock)
    before = exchanges(emulator)
    response = await cache.get(tokens["chen"], SITES)
    lifetime = int(response["expires_in"])
    clock.now += lifetime - 121  # still more than the skew left: served from the cache
    assert await cache.token(tokens["chen"], SITES) == response["access_token"]
    clock.now += 2  # inside the skew: exchanged again
    renewed = await cache.get(tokens["chen"], SITES)
    await cache.aclose()
    assert renewed["access_token"] != response["access_token"]
    assert new_exchanges(emulator, before) == {(user_id("chen"), SITES[0]): 2}
    assert (cache.stats.exchanges, cache.stats.hits) == (2, 1)


async def test_a_failure_is_shared_by_its_waiters_but_never_cached(fresh_faults, target, api, tokens) -> None:
    cache = cache_for(target, api)
    fresh_faults.faults.fail("identity", count=1, status=503)
    before = exchanges(fresh_faults)
    failed = await asyncio.gather(*(cache.token(tokens["bruno"], GROUPS) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(f, OboError) and f.code == 90033 for f in failed), failed
    assert len(cache) == 0
    token = await cache.token(tokens["bruno"], GROUPS)  # the next call asks Entra again, and succeeds
    await cache.aclose()
    assert oid(token) == user_id("bruno")
    assert new_exchanges(fresh_faults, before) == {(user_id("bruno"), GROUPS[0]): 1}
    assert (cache.stats.exchanges, cache.stats.failures, cache.stats.coalesced) == (2, 1, 2)


async def test_a_consent_error_is_not_remembered_after_consent(emulator, target) -> None:
    bare = register_api(emulator, name="obo cache no consent", redirect_uris=[REDIRECT_URI])
    chen = user_token(emulator, bare, user_upn("chen"), REDIRECT_URI)
    cache = cache_for(target, bare)
    with pytest.raises(OboError) as refused:
        await cache.token(chen, USER_READ)
    assert refused.value.code == 65001
    await asyncio.to_thread(grant_graph_consent, emulator, bare)
    assert oid(await cache.token(chen, USER_READ)) == user_id("chen"), "no 60 s replay of the failure (MSAL has one)"
    await cache.aclose()


async def test_size_is_bounded_expired_entries_go_first_then_the_oldest(emulator, target, api, tokens) -> None:
    clock = Clock()
    cache = cache_for(target, api, max_entries=2, skew=0, clock=clock)
    short = await cache.get(tokens["bruno"], USER_READ)
    clock.now += int(short["expires_in"]) // 2
    await cache.get(tokens["bruno"], SITES)
    await cache.get(tokens["bruno"], GROUPS)  # over the bound: the oldest (USER_READ) goes
    assert len(cache) == 2 and cache.stats.evicted == 1
    await cache.get(tokens["bruno"], SITES)  # still cached
    assert cache.stats.exchanges == 3
    clock.now += 10_000  # everything expired: the next insert drops both expired entries
    await cache.get(tokens["chen"], USER_READ)
    await cache.get(tokens["chen"], SITES)
    await cache.get(tokens["chen"], GROUPS)
    await cache.aclose()
    assert len(cache) == 2 and cache.stats.evicted == 4 and cache.stats.exchanges == 6


async def test_no_token_in_keys_or_repr(target, api, tokens) -> None:
    cache = cache_for(target, api)
    graph_token = await cache.token(tokens["bruno"], USER_READ)
    await cache.aclose()
    key = cache_key(tokens["bruno"], USER_READ)
    assert len(key) == 64 and int(key, 16) >= 0 and key != cache_key(tokens["chen"], USER_READ)
    shown = repr(cache) + repr(list(cache._entries))
    assert tokens["bruno"] not in shown and graph_token not in shown and "eyJ" not in shown
    assert "exchanges=1" in repr(cache)


async def test_a_cancelled_caller_does_not_cancel_the_shared_exchange(fresh_faults, target, api, tokens) -> None:
    fresh_faults.faults.set_latency("identity", 300)
    cache = cache_for(target, api)
    first = asyncio.create_task(cache.token(tokens["chen"], GROUPS))
    second = asyncio.create_task(cache.token(tokens["chen"], GROUPS))
    await asyncio.sleep(0.05)
    first.cancel()
    assert oid(await second) == user_id("chen") and first.cancelled()
    await cache.aclose()
    assert cache.stats.exchanges == 1 and len(cache) == 1


# -- the workbook server ------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from serve_consented(emulator, tmp_path_factory.mktemp("obo-cache-server"), "obo cache server", "obo-cache")


async def test_server_tools_exchange_once_per_user_and_scope(emulator, server: RunningServer) -> None:
    before = exchanges(emulator)
    finance = {"group_id": group_id("finance")}
    answers = {}
    for name in ("bruno", "chen"):
        async with Client(server.mcp_url, auth=HeadlessOAuth(account=user_upn(name))) as client:
            calls = [client.call_tool("check_group_membership", finance) for _ in range(8)]
            calls += [client.call_tool("check_site_access", {"site": FINANCE_SITE}) for _ in range(8)]
            results = [r.structured_content for r in await asyncio.gather(*calls)]
        answers[name] = {(r.get("member"), r.get("access")) for r in results}
    assert answers == {"bruno": {(True, None), (None, "granted")}, "chen": {(False, None), (None, "no access")}}
    assert new_exchanges(emulator, before) == {
        (user_id(name), scope[0]): 1 for name in ("bruno", "chen") for scope in (GROUPS, SITES)}
    cache = server.mcp.obo_cache
    assert cache.stats.exchanges == 4 and cache.stats.hits + cache.stats.coalesced == 28


async def test_slow_identity_provider_does_not_delay_another_users_cached_call(fresh_faults, server: RunningServer) -> None:
    finance = {"group_id": group_id("finance")}
    cache = server.mcp.obo_cache
    async with (Client(server.mcp_url, auth=HeadlessOAuth(account=user_upn("bruno"))) as bruno,
                Client(server.mcp_url, auth=HeadlessOAuth(account=user_upn("chen"))) as chen):
        await bruno.call_tool("check_site_access", {"site": FINANCE_SITE})  # bruno's Sites token is now cached
        await chen.call_tool("whoami")
        fresh_faults.faults.set_latency("identity", 1500)
        started = cache.stats.exchanges
        chen_first = asyncio.create_task(chen.call_tool("check_site_access", {"site": FINANCE_SITE}))
        while cache.stats.exchanges == started:  # chen's exchange is now waiting on the slow identity provider
            await asyncio.sleep(0.01)
        bruno_cached = await bruno.call_tool("check_site_access", {"site": FINANCE_SITE})
        chen_pending = not chen_first.done()
        chen_answer = await chen_first
    assert chen_pending, "bruno's cached call finished while chen's exchange was still in flight"
    assert bruno_cached.structured_content["access"] == "granted"
    assert chen_answer.structured_content["access"] == "no access"
