"""The workbook server (`obokit.server`): input validation, tier-1 role gating, OBO tools, audit log, restart.

A real FastMCP server with AzureProvider runs in a background thread against the session
emulator; a real `fastmcp.Client` signs in headlessly as the demo users. Nothing is mocked.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError
from server_fixtures import FINANCE_SITE, RECEIPT, make_target, register_workbook_server, serve, start
from tenant_setup import Registration, user_upn

from obokit.emulator import Emulator, group_id, user_id
from obokit.emulator.ids import SHAREPOINT_HOST
from obokit.server.expenses import ExpenseBook, InvalidExpense, parse_amount
from obokit.clients.mcp_client import HeadlessOAuth
from obokit.server import SIGNING_KEY_NAME, RunningServer, signing_key


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("workbook-server")


@pytest.fixture(scope="module")
def registration(emulator: Emulator) -> Registration:
    return register_workbook_server(emulator, "server tools test", consent=True)


@pytest.fixture(scope="module")
def server(emulator: Emulator, folder: Path, registration: Registration) -> Iterator[RunningServer]:
    yield from serve(emulator, folder, registration, "tools")


async def refusal(server: RunningServer, auth: HeadlessOAuth, tool: str, arguments: dict) -> str:
    async with Client(server.mcp_url, auth=auth) as client:
        with pytest.raises(ToolError) as failure:
            await client.call_tool(tool, arguments)
    return str(failure.value)


# -- validation without a server ----------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"), [(42.5, "42.50"), ("7", "7.00"), (0.1, "0.10"), ("10000", "10000.00")]
)
def test_amounts_are_kept_to_the_cent(value: object, expected: str) -> None:
    assert str(parse_amount(value)) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [(0, "greater than zero"), (-1, "greater than zero"), (1.005, "more than two decimals"),
     ("abc", "must be a number"), (float("nan"), "greater than zero"), (True, "must be a number"),
     (10000.01, "above the 10000 limit")],
)
def test_bad_amounts_are_refused_with_a_reason(value: object, message: str) -> None:
    with pytest.raises(InvalidExpense, match=message):
        parse_amount(value)


def test_expense_book_is_per_user_and_deduplicates(tmp_path: Path) -> None:
    book = ExpenseBook(tmp_path / "expenses.json")
    first = book.add("oid-a", **RECEIPT)
    assert book.add("oid-a", **RECEIPT) == first
    other = book.add("oid-b", **RECEIPT)
    assert other["id"] != first["id"], "the same receipt of another person is another expense"
    assert [e["id"] for e in book.list("oid-a")] == [first["id"]] and book.list("nobody") == []
    with pytest.raises(InvalidExpense, match="your own expense"):
        book.approve(first["id"], approver_oid="oid-a", approver="a")
    assert book.approve(first["id"].lower(), approver_oid="oid-b", approver="b")["status"] == "approved"
    reloaded = ExpenseBook(tmp_path / "expenses.json")
    assert reloaded.list("oid-a")[0]["status"] == "approved"
    assert (tmp_path / "expenses.json").stat().st_mode & 0o077 == 0


def test_signing_key_is_created_once_and_kept_owner_only(emulator: Emulator, tmp_path: Path) -> None:
    target = make_target(emulator, tmp_path)
    key = signing_key(target)
    assert len(key) >= 40 and signing_key(target) == key
    assert f"{SIGNING_KEY_NAME}={key}" in target.secrets_file.read_text()
    assert target.secrets_file.stat().st_mode & 0o077 == 0


# -- through a real client ----------------------------------------------------------------
async def test_unauthenticated_request_is_challenged(server: RunningServer) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(server.mcp_url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert response.status_code == 401
    assert f'resource_metadata="{server.url}/.well-known/oauth-protected-resource/mcp"' in response.headers["www-authenticate"]


async def test_add_and_list_expenses_validate_input(server: RunningServer, bruno: HeadlessOAuth) -> None:
    tomorrow = (dt.date.today() + dt.timedelta(days=1)).isoformat()
    async with Client(server.mcp_url, auth=bruno) as client:
        added = (await client.call_tool("add_expense", RECEIPT)).data
        assert (await client.call_tool("add_expense", RECEIPT)).data == added
        assert (await client.call_tool("list_expenses")).data == [added]
        assert added["amount"] == 42.5 and added["status"] == "submitted" and added["submitted_by"] == user_upn("bruno")
        refusals = {}
        for label, change in {"date": {"date": "2.11.2026"}, "future": {"date": tomorrow}, "negative": {"amount": -3},
                              "cents": {"amount": 9.999}, "category": {"category": "snacks"},
                              "empty": {"description": "   "}}.items():
            with pytest.raises(ToolError) as failure:
                await client.call_tool("add_expense", {**RECEIPT, **change})
            refusals[label] = str(failure.value)
        with pytest.raises(ToolError, match="object id"):
            await client.call_tool("check_group_membership", {"group_id": "Finance"})
        with pytest.raises(ToolError, match="must look like"):
            await client.call_tool("check_site_access", {"site": "https://evil.example.com/sites/finance"})
    assert "ISO date" in refusals["date"] and "in the future" in refusals["future"]
    assert "greater than zero" in refusals["negative"] and "two decimals" in refusals["cents"]
    assert "travel, meals" in refusals["category"] and "must not be empty" in refusals["empty"]
    assert len(server.expenses.list(user_id("bruno"))) == 1, "refused input is never stored"


async def test_tier1_hides_and_refuses_the_write_tool(server: RunningServer, bruno: HeadlessOAuth, chen: HeadlessOAuth) -> None:
    async with Client(server.mcp_url, auth=bruno) as client:
        bruno_tools = {tool.name for tool in await client.list_tools()}
    async with Client(server.mcp_url, auth=chen) as client:
        chen_tools = {tool.name for tool in await client.list_tools()}
        chens = (await client.call_tool("add_expense", {**RECEIPT, "category": "training"})).data
    assert bruno_tools - chen_tools == {"approve_expense"}
    assert "check_site_access" in chen_tools
    message = await refusal(server, chen, "approve_expense", {"expense_id": chens["id"]})
    assert "requires the app role Task.Write" in message
    assert server.expenses.list(user_id("chen"))[0]["status"] == "submitted", "a refused call never reaches the tool"
    async with Client(server.mcp_url, auth=bruno) as client:
        approved = (await client.call_tool("approve_expense", {"expense_id": chens["id"]})).data
    assert approved["status"] == "approved" and approved["approved_by"] == user_upn("bruno")
    async with Client(server.mcp_url, auth=HeadlessOAuth(account=user_upn("adele"))) as client:
        adele_tools = {tool.name for tool in await client.list_tools()}
    assert adele_tools == {"whoami"}, "no app role, no role-tagged tools"


async def test_role_gate_fails_closed_on_a_tool_it_cannot_resolve(server: RunningServer, chen: HeadlessOAuth) -> None:
    message = await refusal(server, chen, "no_such_tool", {})
    assert message == "unknown tool: no_such_tool"
    assert server.audit_log.entries[-1].outcome == "refused: unknown tool: no_such_tool"


async def test_obo_tools_answer_with_each_users_rights(server: RunningServer, bruno: HeadlessOAuth, chen: HeadlessOAuth) -> None:
    answers = {}
    for name, auth in (("bruno", bruno), ("chen", chen)):
        async with Client(server.mcp_url, auth=auth) as client:
            me = (await client.call_tool("whoami")).data
            member = (await client.call_tool("check_group_membership", {"group_id": group_id("finance")})).data
            finance = (await client.call_tool("check_site_access", {"site": FINANCE_SITE})).data
            engineering = (await client.call_tool("check_site_access", {"site": f"https://{SHAREPOINT_HOST}/sites/engineering"})).data
            missing = (await client.call_tool("check_site_access", {"site": f"{SHAREPOINT_HOST}:/sites/nowhere"})).data
        answers[name] = (member["member"], finance["access"], engineering["access"], missing["access"])
        assert me["oid"] == user_id(name) and "token" not in json.dumps(me).lower()
    assert answers == {"bruno": (True, "granted", "no access", "not found"),
                       "chen": (False, "no access", "granted", "not found")}


async def test_audit_log_names_caller_tool_downstream_and_outcome(server: RunningServer, chen: HeadlessOAuth) -> None:
    before = len(server.audit_log)
    async with Client(server.mcp_url, auth=chen) as client:
        await client.call_tool("check_site_access", {"site": FINANCE_SITE})
        with pytest.raises(ToolError):
            await client.call_tool("approve_expense", {"expense_id": "EXP-000000"})
        with pytest.raises(ToolError):
            await client.call_tool("add_expense", {**RECEIPT, "amount": 0})
    new = server.audit_log.entries[before:]
    assert [(e.upn, e.tool, e.outcome.split(":")[0]) for e in new] == [
        (user_upn("chen"), "check_site_access", "ok"),
        (user_upn("chen"), "approve_expense", "denied"),
        (user_upn("chen"), "add_expense", "refused"),
    ]
    assert new[0].downstream == (f"GET /sites/{FINANCE_SITE} -> 403",) and new[0].oid == user_id("chen")
    assert new[1].outcome == "denied: needs Task.Write"
    lines = (server.storage_dir / "audit.jsonl").read_text().splitlines()
    assert len(lines) >= len(new) and json.loads(lines[-1])["tool"] == "add_expense"
    assert "eyJ" not in (server.storage_dir / "audit.jsonl").read_text(), "no token in the audit file"
    assert "approve_expense" in repr(server.audit_log.table()) and "<table" in server.audit_log.table()._repr_html_()


async def test_restart_keeps_registrations_and_tokens(emulator: Emulator, folder: Path, registration: Registration) -> None:
    reg = registration
    first = start(emulator, folder, reg, "restart")
    auth = HeadlessOAuth(account=user_upn("bruno"))
    try:
        async with Client(first.mcp_url, auth=auth) as client:
            await client.call_tool("whoami")
        client_id, callback = auth.context.client_info.client_id, auth.last_callback_url
        first.stop()
        second = start(emulator, folder, reg, "restart", port=first.port)
        async with Client(second.mcp_url, auth=auth) as client:
            me = (await client.call_tool("whoami")).data
        second.stop()
    finally:
        first.stop()
    assert me["upn"] == user_upn("bruno")
    assert auth.context.client_info.client_id == client_id, "no new dynamic client registration"
    assert auth.last_callback_url == callback, "no new sign-in"
    stored = list((folder / "restart" / "oauth-proxy").rglob("*.json"))
    assert stored and not any("eyJ" in p.read_text() for p in stored), "the store encrypts the upstream tokens"


async def test_missing_consent_is_reported_with_its_aadsts_code(emulator: Emulator, folder: Path) -> None:
    reg = register_workbook_server(emulator, "server tools no consent", consent=False)
    running = start(emulator, folder, reg, "no-consent")
    try:
        message = await refusal(running, HeadlessOAuth(account=user_upn("bruno")), "check_group_membership",
                                {"group_id": group_id("finance")})
    finally:
        running.stop()
    assert message.startswith("Microsoft Entra refused the on-behalf-of exchange: AADSTS65001:")
    assert "Trace ID" not in message
    assert running.audit_log.entries[-1].outcome.startswith("refused: Microsoft Entra refused")
