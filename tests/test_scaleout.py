"""Scale-out: two replicas of the workbook server behind a round-robin proxy, OAuth state in a real Redis.

A Redis-protocol server (the packaged Valkey, tests/test_redis_server.py) runs on an ephemeral loopback port; two real FastMCP servers with AzureProvider serve
behind `obokit.scaleout.RoundRobinProxy`; a real `fastmcp.Client` signs in headlessly against the session
emulator. A client that registered through replica 1 keeps working through replica 2 and after both replicas
are replaced, without registering again.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from fastmcp import Client
from fastmcp.server.auth.jwt_issuer import derive_jwt_key
from server_fixtures import FINANCE_SITE, make_target, register_workbook_server, registrations
from tenant_setup import user_upn

from obokit.emulator import Emulator
from obokit.clients.mcp_client import HeadlessOAuth
from obokit.redis_server import RedisServer, start_redis
from obokit.scaleout import STORAGE_SALT, RoundRobinProxy, Route, ScaleOut, start_scale_out
from obokit.server import signing_key

pytestmark = [
    pytest.mark.emulator, pytest.mark.slow, pytest.mark.timeout(300),
    # redis-py 8 deprecates SETEX, which py-key-value's RedisStore uses for entries with a TTL
    pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning"),
]

COLLECTIONS = {"mcp-oauth-proxy-clients", "mcp-upstream-tokens", "mcp-jti-mappings", "mcp-refresh-tokens"}


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    server.stop()
    assert not server.running and not server.directory.exists()


@pytest.fixture(scope="module")
def cluster(emulator: Emulator, redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaleOut]:
    folder = tmp_path_factory.mktemp("scale-out")
    registration = registrations(register_workbook_server(emulator, "scale-out test", consent=True))
    running = start_scale_out(make_target(emulator, folder), redis.url, replicas=2, registration=registration,
                              storage_dir=folder / "servers")
    yield running
    running.stop()


async def whoami_and_site(url: str, auth: HeadlessOAuth, calls: int = 1, mode: str = "auto") -> list[dict]:
    """`calls` rounds of whoami + check_site_access (OBO to Graph) in one MCP connection."""
    results = []
    async with Client(url, auth=auth, mode=mode) as client:
        for _ in range(calls):
            results.append((await client.call_tool("whoami")).data)
            results.append((await client.call_tool("check_site_access", {"site": FINANCE_SITE})).data)
    return results


async def test_registered_through_replica_1_works_through_replica_2_and_after_a_restart(
    cluster: ScaleOut, redis: RedisServer
) -> None:
    bruno = HeadlessOAuth(account=user_upn("bruno"))
    timings = {}

    t0 = time.perf_counter()
    cluster.use("replica-1")  # replica 2 drained: the whole sign-in goes through replica 1
    first = await whoami_and_site(cluster.mcp_url, bruno)
    timings["sign-in + 2 calls via replica 1"] = time.perf_counter() - t0
    client_id = bruno.context.client_info.client_id
    assert cluster.proxy.answered_by("/register") == {"replica-1": 1}
    assert first[0]["upn"] == user_upn("bruno") and first[1]["access"] == "granted"

    t0 = time.perf_counter()
    cluster.use("replica-2")  # replica 1 drained: replica 2 has never seen this client
    second = await whoami_and_site(cluster.mcp_url, bruno)
    timings["2 calls via replica 2"] = time.perf_counter() - t0
    assert second == first

    cluster.use_all()
    before = len(cluster.proxy.routes)
    spread = await whoami_and_site(cluster.mcp_url, bruno, calls=3)
    mcp_routes = [r for r in cluster.proxy.routes[before:] if r.path == "/mcp"]
    assert {r.replica for r in mcp_routes} == {"replica-1", "replica-2"}, "round-robin reached both replicas"
    assert [r.replica for r in mcp_routes] == [("replica-1", "replica-2")[i % 2] for i in range(len(mcp_routes))]
    assert all(r.status < 400 for r in mcp_routes), mcp_routes
    assert spread == first * 3
    before = len(cluster.proxy.routes)  # a 2025-revision client (initialize handshake): no session to lose either
    assert await whoami_and_site(cluster.mcp_url, bruno, mode="legacy") == first
    legacy = cluster.proxy.routes[before:]
    assert {r.replica for r in legacy} == {"replica-1", "replica-2"} and all(r.status < 400 for r in legacy)
    assert "2025-11-25" in {r.protocol for r in legacy} and {r.protocol for r in mcp_routes} == {"2026-07-28"}

    t0 = time.perf_counter()
    old = [r.url for r in cluster.replicas]
    cluster.restart()
    timings["restart both"] = time.perf_counter() - t0
    assert [r.url for r in cluster.replicas] != old and all(r.running for r in cluster.replicas)
    t0 = time.perf_counter()
    after = await whoami_and_site(cluster.mcp_url, bruno, calls=2)
    timings["4 calls after restart"] = time.perf_counter() - t0
    assert after == first * 2
    assert bruno.context.client_info.client_id == client_id
    assert sum(cluster.proxy.answered_by("/register").values()) == 1, "the client never registered again"
    assert sum(cluster.proxy.answered_by("/authorize").values()) == 1, "nor signed in again"
    audited = {r.name: len(r.audit_log) for r in cluster.replicas}
    print("timings:", {k: f"{v:.2f} s" for k, v in timings.items()}, "| audit after restart:", audited)


async def test_redis_holds_the_proxy_state_encrypted(cluster: ScaleOut, redis: RedisServer) -> None:
    """Every value in Redis is a Fernet token under the key derived from the signing key; none is plain JSON."""
    chen = HeadlessOAuth(account=user_upn("chen"))
    await whoami_and_site(cluster.mcp_url, chen)
    fernet = Fernet(derive_jwt_key(high_entropy_material=signing_key(cluster.target), salt=STORAGE_SALT))
    decrypted: dict[str, list[dict]] = {}
    with redis.client() as client:
        keys = list(client.scan_iter(count=1000))
        assert COLLECTIONS <= {key.split("::", 1)[0] for key in keys}, keys
        for key in keys:
            raw = client.get(key)
            value = json.loads(raw)["value"]
            assert set(value) == {"__encrypted_data__", "__encryption_version__"}, key
            for plain in ("access_token", "refresh_token", "client_secret", "redirect_uris", "eyJ"):
                assert plain not in raw, f"{plain!r} in plain text under {key.split('::')[0]}"
            record = json.loads(fernet.decrypt(base64.b64decode(value["__encrypted_data__"])))
            decrypted.setdefault(key.split("::", 1)[0], []).append(record)
    registered = {record["client_id"] for record in decrypted["mcp-oauth-proxy-clients"]}
    assert chen.context.client_info.client_id in registered
    assert all(record["access_token"].startswith("eyJ") for record in decrypted["mcp-upstream-tokens"])


def test_the_proxy_keeps_only_the_last_routes() -> None:
    proxy = RoundRobinProxy()
    proxy.MAX_ROUTES = 3
    for i in range(5):
        proxy._route(Route("GET", f"/r{i}", "replica-1", 200))
    assert [r.path for r in proxy.routes] == ["/r2", "/r3", "/r4"] and proxy.routes[1:][0].path == "/r3"
