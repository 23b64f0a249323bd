"""A bounded load test on loopback: 20 users, each with its own MCP session, calling OBO tools for 30 s.

The workbook's server (`obokit.server.start_workbook_server`: FastMCP, AzureProvider, OBO tools)
runs against a private emulator whose directory gets 17 users besides the 3 demo users (added
to this test's own state folder; the seeded demo tenant is not changed). Every user has a group
and a SharePoint site of their own, so each answer can only be right for its caller:

* `whoami` names the caller;
* `check_group_membership` on the caller's group says "member" (only the caller is in it) and on
  the next user's group says "not a member";
* `check_site_access` grants the caller's site and refuses the next user's.

An OBO token of another user would flip at least one of those, so a mix-up counts as a
cross-user result. The test asserts 0 errors, 0 cross-user results and a flat memory curve,
and prints calls made and calls per second (no timing is asserted: CI machines differ).

Memory: the server runs in this process (a background thread, as in the workbook's kernel), so
the process RSS (psutil) covers the server, the emulator and the 20 clients. It is sampled after
a warm-up round (every user signed in, every tool called once, caches filled) and at the end,
after a garbage collection. The bound, +50 MB, is generous on purpose: a few thousand calls
leaking even 20 KB each (a kept response, credential or session per call) would exceed it, while
allocator noise and the audit log's in-memory entries (~1 KB per call, by design) stay far below.
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from fastmcp import Client
from server_fixtures import make_target, registrations
from tenant_setup import admin_headers, grant_graph_consent, register_api, user_upn

from obokit.emulator import Emulator, user_id
from obokit.emulator.seed import _group, _site, _user
from obokit.clients.mcp_client import HeadlessOAuth
from obokit.tenant.provisioning import Registrations
from obokit.server import RunningServer, start_workbook_server

pytestmark = [pytest.mark.slow, pytest.mark.emulator, pytest.mark.timeout(300)]

DEMO_USERS = ["adele", "bruno", "chen"]
EXTRA_USERS = [f"load{n:02d}" for n in range(1, 18)]  # 3 + 17 = 20 simulated users
DURATION = 30.0  # seconds of load
MEMORY_BOUND = 50 * 2**20


@dataclass(frozen=True)
class User:
    key: str
    group: str  # the id of the group only this user belongs to
    site: str  # host:/sites/name of the site only this user's group may open

    @property
    def upn(self) -> str:
        return user_upn(self.key)


def own_objects(key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    group = _group(f"load-group-{key}", f"Load group {key}", f"Only {key}", [key], [])
    return group, _site(f"load-{key}", f"Load site {key}", [f"load-group-{key}"])


async def populate(emu: Emulator) -> list[User]:
    """Add the extra users, and a group and a site per user, to the emulator's directory."""
    users = []
    for key in DEMO_USERS + EXTRA_USERS:
        if key in EXTRA_USERS:
            await emu.store.put("users", _user(key, f"Load User {key[4:]}", "Load", f"User {key[4:]}", "Tester", False))
        group, site = own_objects(key)
        await emu.store.put("groups", group)
        await emu.store.put("sites", site)
        users.append(User(key, group["id"], f"{emu.sharepoint_host}:/sites/{site['name']}"))
    return users


def register_server(emu: Emulator, users: list[User]) -> Registrations:
    """The workbook server's registration, with Graph consent and Task.Read for every user."""
    read = str(uuid.uuid4())
    reg = register_api(emu, name="load test server", redirect_uris=["http://localhost:8000/auth/callback"], app_roles=[
        {"id": read, "value": "Task.Read", "displayName": "Task.Read", "description": "Task.Read",
         "allowedMemberTypes": ["User"], "isEnabled": True}])
    with httpx.Client(base_url=emu.graph_url, headers=admin_headers(emu)) as graph:
        for user in users:
            graph.post(f"/servicePrincipals/{reg.sp_id}/appRoleAssignedTo",
                       json={"principalId": user_id(user.key), "resourceId": reg.sp_id, "appRoleId": read}).raise_for_status()
    grant_graph_consent(emu, reg)
    return registrations(reg)


@pytest.fixture
def load_emulator(tmp_path: Path) -> Iterator[Emulator]:
    with Emulator(tmp_path / "emulator").start() as emu:
        yield emu


@dataclass
class Tally:
    calls: int = 0
    errors: Counter = None  # type: ignore[assignment]
    crossed: list[str] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.errors, self.crossed = Counter(), []


def expected_answers(user: User, neighbour: User) -> list[tuple[str, dict[str, Any], Any]]:
    """(tool, arguments, check of the answer) for one round of a user's calls."""
    return [
        ("whoami", {}, lambda a: a["upn"] == user.upn and a["oid"] == user_id(user.key)),
        ("check_group_membership", {"group_id": user.group}, lambda a: a["member"] is True and a["group"] == f"Load group {user.key}"),
        ("check_group_membership", {"group_id": neighbour.group}, lambda a: a["member"] is False),
        ("check_site_access", {"site": user.site}, lambda a: a["access"] == "granted" and a["name"] == f"Load site {user.key}"),
        ("check_site_access", {"site": neighbour.site}, lambda a: a["access"] == "no access"),
    ]


async def one_round(client: Client, user: User, neighbour: User, tally: Tally) -> None:
    for tool, arguments, check in expected_answers(user, neighbour):
        try:
            answer = (await client.call_tool(tool, arguments)).data
        except Exception as error:  # counted, and shown by the assertion
            tally.errors[f"{tool}: {type(error).__name__}: {str(error)[:200]}"] += 1
            continue
        finally:
            tally.calls += 1
        if not check(answer):
            tally.crossed.append(f"{user.key} {tool} {arguments} -> {answer}")


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


async def test_twenty_users_call_obo_tools_concurrently_for_30_seconds(load_emulator: Emulator, tmp_path: Path) -> None:
    emu = load_emulator
    users = await populate(emu)
    registration = await asyncio.to_thread(register_server, emu, users)
    server: RunningServer = await asyncio.to_thread(
        start_workbook_server, make_target(emu, tmp_path), name="load", storage_dir=tmp_path / "server",
        registration=registration)
    pairs = list(zip(users, users[1:] + users[:1]))
    clients = [Client(server.mcp_url, auth=HeadlessOAuth(account=user.upn)) for user in users]
    warm, tally = Tally(), Tally()
    try:
        started = time.perf_counter()
        await asyncio.gather(*(client.__aenter__() for client in clients))  # 20 sign-ins (DCR, consent, picker)
        sign_in_seconds = time.perf_counter() - started
        await asyncio.gather(*(one_round(c, u, n, warm) for c, (u, n) in zip(clients, pairs)))
        assert not warm.errors and not warm.crossed, (warm.errors, warm.crossed)
        baseline, samples = rss(), []

        async def user_loop(client: Client, user: User, neighbour: User, deadline: float) -> None:
            while time.perf_counter() < deadline:
                await one_round(client, user, neighbour, tally)

        async def sample(deadline: float) -> None:
            while time.perf_counter() < deadline:
                await asyncio.sleep(5)
                samples.append(psutil.Process().memory_info().rss)

        t0 = time.perf_counter()
        deadline = t0 + DURATION
        await asyncio.gather(sample(deadline), *(user_loop(c, u, n, deadline) for c, (u, n) in zip(clients, pairs)))
        elapsed = time.perf_counter() - t0
        end = rss()
    finally:
        await asyncio.gather(*(client.__aexit__(None, None, None) for client in clients), return_exceptions=True)
        await asyncio.to_thread(server.stop)

    mib = 2**20
    print(f"\nload: {len(users)} users, {tally.calls} calls in {elapsed:.1f} s = {tally.calls / elapsed:.1f} calls/s, "
          f"{sum(tally.errors.values())} errors, {len(tally.crossed)} cross-user results; "
          f"sign-in of all users {sign_in_seconds:.1f} s; RSS after warm-up {baseline / mib:.1f} MiB, "
          f"at the end {end / mib:.1f} MiB ({(end - baseline) / mib:+.1f} MiB), "
          f"samples {[round(s / mib) for s in samples]} MiB; audit entries {len(server.audit_log)}")
    assert len(users) >= 20 and len({u.upn for u in users}) == len(users)
    assert tally.calls >= 5 * len(users), "every user made at least one round of calls under load"
    assert not tally.errors, f"errors under load: {dict(tally.errors)}"
    assert not tally.crossed, f"cross-user results: {tally.crossed[:5]}"
    assert end - baseline < MEMORY_BOUND, f"memory grew by {(end - baseline) / mib:.1f} MiB under load"
    callers = Counter(entry.upn for entry in server.audit_log.entries)
    assert set(callers) == {u.upn for u in users}, "every user's calls reached the server as that user"
