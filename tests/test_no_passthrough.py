"""No token passthrough, no cross-user leakage: what Graph receives from the workbook server.

The emulator's Graph host keeps a read-only record of every request and its bearer token
(`Emulator.graph_requests`). Through the running server (whatever OBO path and cache it uses):

* Graph only ever sees on-behalf-of tokens with Graph's audience, issued to the server's app for
  the calling user: never the MCP client's token, nor the Entra token the proxy holds for it;
* several users calling at once, on a cold and then a warm cache, each get their own answers,
  and Graph saw exactly as many calls with each user's token as that user made.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import pytest
from fastmcp import Client
from server_fixtures import FINANCE_SITE, register_workbook_server, serve
from tenant_setup import Registration, user_upn

from obokit.emulator import Emulator, group_id, user_id
from obokit.emulator.graph_core import GRAPH_AUDIENCES
from obokit.emulator.recorder import SeenRequest
from obokit.clients.mcp_client import HeadlessOAuth
from obokit.server import RunningServer
from obokit.token_attacks import claims_of, upstream_token

PEOPLE = ("adele", "bruno", "chen")
# (finance, engineering) membership: adele and bruno are in Finance, chen in Engineering
MEMBERSHIP = {"adele": (True, False), "bruno": (True, False), "chen": (False, True)}
CALLS_PER_USER = 3  # concurrent rounds of (whoami, finance check, engineering check) per user


@pytest.fixture(scope="module")
def registration(emulator: Emulator) -> Registration:
    # adele gets Task.Read too, so that three users call the Graph-backed tools
    return register_workbook_server(emulator, "no passthrough", consent=True, also_readers=["adele"])


@pytest.fixture(scope="module")
def server(emulator: Emulator, registration: Registration, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from serve(emulator, tmp_path_factory.mktemp("no-passthrough"), registration, "no-passthrough")


def graph_calls(emu: Emulator, since: int) -> list[SeenRequest]:
    return [r for r in emu.graph_requests.since(since) if r.bearer]


async def test_graph_sees_only_obo_tokens_for_graph_never_the_clients(
    emulator: Emulator, server: RunningServer, registration: Registration
) -> None:
    auth = HeadlessOAuth(account=user_upn("bruno"))
    async with Client(server.mcp_url, auth=auth) as client:
        await client.call_tool("whoami")  # signed in
        mark = emulator.graph_requests.last_seq
        await client.call_tool("check_group_membership", {"group_id": group_id("finance")})
        await client.call_tool("check_site_access", {"site": FINANCE_SITE})
    seen = graph_calls(emulator, mark)
    assert len(seen) == 2, "the record holds both Graph calls (the check below is not vacuous)"
    client_bearer = auth.context.current_tokens.access_token
    mcp_token = await upstream_token(server, client_bearer)
    assert claims_of(mcp_token)["aud"] == registration.app_id, "the proxy holds an Entra token for the MCP server"
    for request in seen:
        assert request.bearer not in (client_bearer, mcp_token), "no token passthrough"
        claims = claims_of(request.bearer)
        assert claims["aud"] in GRAPH_AUDIENCES and claims["aud"] != registration.app_id
        assert claims["appid" if "appid" in claims else "azp"] == registration.app_id, "issued to the server (OBO)"
        assert claims["oid"] == user_id("bruno") and claims.get("idtyp") == "user"
    # One exchange per scope the tool asked for; a Graph token lists every consented scope (as Entra's do)
    assert all({"GroupMember.Read.All", "Sites.Read.All"} <= set(claims_of(r.bearer)["scp"].split()) for r in seen)
    assert len({r.bearer for r in seen}) == 2, "each tool's own OBO token"


async def calls_of(server: RunningServer, auth: HeadlessOAuth) -> list[tuple[str, object]]:
    """One user's session: CALLS_PER_USER rounds of three tool calls, all in flight at once."""
    async with Client(server.mcp_url, auth=auth) as client:
        async def call(tool: str, arguments: dict | None = None) -> tuple[str, object]:
            return tool, (await client.call_tool(tool, arguments or {})).structured_content

        jobs = []
        for _ in range(CALLS_PER_USER):
            jobs += [call("whoami"),
                     call("check_group_membership", {"group_id": group_id("finance")}),
                     call("check_group_membership", {"group_id": group_id("engineering")})]
        return list(await asyncio.gather(*jobs))


def check_identity(person: str, results: list[tuple[str, object]]) -> None:
    finance, engineering = MEMBERSHIP[person]
    for tool, content in results:
        assert isinstance(content, dict)
        if tool == "whoami":
            assert (content["upn"], content["oid"]) == (user_upn(person), user_id(person))
        else:
            expected = finance if content["group_id"] == group_id("finance") else engineering
            assert content["member"] is expected, (person, content)


async def test_concurrent_users_each_get_their_own_answers_and_tokens(emulator: Emulator, server: RunningServer) -> None:
    sessions = {person: HeadlessOAuth(account=user_upn(person)) for person in PEOPLE}
    async with asyncio.TaskGroup() as signing_in:  # sign in first, so that the Graph calls start together
        for auth in sessions.values():
            signing_in.create_task(_sign_in(server, auth))
    # Round 1: every user's first on-behalf-of exchange at the same moment (a cold cache);
    # round 2: the same signed-in clients again, answered from whatever the server cached.
    for round_ in ("cold", "warm"):
        mark = emulator.graph_requests.last_seq
        answers = await asyncio.gather(*(calls_of(server, sessions[person]) for person in PEOPLE))
        for person, results in zip(PEOPLE, answers):
            check_identity(person, results)
        seen = graph_calls(emulator, mark)
        per_user = Counter(claims_of(r.bearer)["oid"] for r in seen)
        assert per_user == {user_id(person): 2 * CALLS_PER_USER for person in PEOPLE}, \
            f"{round_}: each user's Graph calls carried that user's token, and only those"
        assert all(claims_of(r.bearer)["aud"] in GRAPH_AUDIENCES for r in seen), round_


async def _sign_in(server: RunningServer, auth: HeadlessOAuth) -> None:
    async with Client(server.mcp_url, auth=auth) as client:
        await client.call_tool("whoami")
