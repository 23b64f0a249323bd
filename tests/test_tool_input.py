"""Bad tool arguments, sent through real MCP clients, are refused with a message that says what to send.

Every tool of the workbook server (`obokit.server.tools`) is called by a FastMCP client signed in as Bruno (who
holds both app roles). A refused call never reaches storage or Graph, and the message names the argument.
The type checks FastMCP does from the signatures (missing, wrongly typed, unknown arguments) are covered
too, as is the official `mcp` SDK client's view of a refusal (`isError` with the text).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import jwt
import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError
from server_fixtures import RECEIPT, serve_consented

from obokit.emulator import Emulator, group_id, user_id
from obokit.emulator.ids import SHAREPOINT_HOST
from obokit.clients.mcp_client import HeadlessOAuth
from obokit.clients.sdk_client import HeadlessUserAgent, connect, sdk_oauth
from obokit.server import RunningServer
from tenant_setup import user_upn

TOMORROW = (dt.date.today() + dt.timedelta(days=1)).isoformat()
PASTED_TOKEN = jwt.encode({"aud": "api://somewhere", "scp": "mcp-access"}, "k" * 32, algorithm="HS256")

# (tool, arguments, words the refusal must contain)
BAD_INPUT = {
    "date: not ISO": ("add_expense", {**RECEIPT, "date": "02/11/2026"}, ["date", "ISO date"]),
    "date: no such day": ("add_expense", {**RECEIPT, "date": "2026-02-30"}, ["date", "ISO date"]),
    "date: empty": ("add_expense", {**RECEIPT, "date": ""}, ["date", "ISO date"]),
    "date: a timestamp": ("add_expense", {**RECEIPT, "date": "2026-11-02T10:00:00"}, ["date", "ISO date"]),
    "date: future": ("add_expense", {**RECEIPT, "date": TOMORROW}, ["date", "in the future"]),
    "date: ancient": ("add_expense", {**RECEIPT, "date": "1999-12-31"}, ["date", "2000"]),
    "amount: zero": ("add_expense", {**RECEIPT, "amount": 0}, ["amount", "greater than zero"]),
    "amount: negative": ("add_expense", {**RECEIPT, "amount": -12.5}, ["amount", "greater than zero"]),
    "amount: sub-cent": ("add_expense", {**RECEIPT, "amount": 3.14159}, ["amount", "two decimals"]),
    "amount: huge": ("add_expense", {**RECEIPT, "amount": 1e300}, ["amount", "limit"]),
    "amount: text": ("add_expense", {**RECEIPT, "amount": "lots"}, ["amount"]),
    "category: unknown": ("add_expense", {**RECEIPT, "category": "snacks"}, ["category", "travel, meals"]),
    "category: empty": ("add_expense", {**RECEIPT, "category": ""}, ["category", "travel, meals"]),
    "description: blank": ("add_expense", {**RECEIPT, "description": " \n\t "}, ["description", "empty"]),
    "description: too long": ("add_expense", {**RECEIPT, "description": "x" * 201}, ["description", "200"]),
    "missing argument": ("add_expense", {k: v for k, v in RECEIPT.items() if k != "amount"}, ["amount", "required"]),
    "group: a name": ("check_group_membership", {"group_id": "Finance"}, ["group_id", "GUID"]),
    "group: empty": ("check_group_membership", {"group_id": ""}, ["group_id", "GUID"]),
    "group: truncated GUID": ("check_group_membership", {"group_id": group_id("finance")[:-1]}, ["group_id", "GUID"]),
    "group: OData injection": ("check_group_membership", {"group_id": "x' or id ne '"}, ["group_id", "GUID"]),
    "group: a number": ("check_group_membership", {"group_id": 42}, ["group_id"]),
    "site: other host": ("check_site_access", {"site": "https://evil.example.com/sites/finance"}, ["site", "must look like"]),
    "site: no host": ("check_site_access", {"site": "finance"}, ["site", "must look like"]),
    "site: empty name": ("check_site_access", {"site": f"{SHAREPOINT_HOST}:/sites/"}, ["site", "must look like"]),
    "site: dot segment": ("check_site_access", {"site": f"{SHAREPOINT_HOST}:/sites/.."}, ["site", "must look like"]),
    "site: path traversal": ("check_site_access", {"site": f"{SHAREPOINT_HOST}:/sites/x/../../me"}, ["site", "must look like"]),
    "site: query string": ("check_site_access", {"site": f"{SHAREPOINT_HOST}:/sites/finance?$select=id"}, ["site", "must look like"]),
    "site: name too long": ("check_site_access", {"site": f"{SHAREPOINT_HOST}:/sites/{'a' * 101}"}, ["site", "must look like"]),
    "site: a pasted token": ("check_site_access", {"site": PASTED_TOKEN}, ["site", "redacted"]),
    "group: a pasted token": ("check_group_membership", {"group_id": PASTED_TOKEN}, ["group_id", "redacted"]),
    "expense id: empty": ("approve_expense", {"expense_id": ""}, ["expense_id", "EXP-"]),
    "expense id: wrong shape": ("approve_expense", {"expense_id": "12345"}, ["expense_id", "EXP-"]),
    "expense id: huge": ("approve_expense", {"expense_id": "EXP-" + "A" * 5000}, ["expense_id", "EXP-"]),
    "expense id: unknown": ("approve_expense", {"expense_id": "EXP-000000"}, ["no expense EXP-000000"]),
}


@pytest.fixture(scope="module")
def server(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from serve_consented(emulator, tmp_path_factory.mktemp("tool-input"), "tool input test", "tool-input")


async def test_bad_input_is_refused_with_a_clear_message(server: RunningServer, bruno: HeadlessOAuth) -> None:
    refusals: dict[str, str] = {}
    async with Client(server.mcp_url, auth=bruno) as client:
        for case, (tool, arguments, _) in BAD_INPUT.items():
            try:
                result = await client.call_tool(tool, arguments)
            except ToolError as failure:
                refusals[case] = str(failure)
            else:
                refusals[case] = f"accepted: {result.data}"
    unclear = {case: refusals[case] for case, (_, _, words) in BAD_INPUT.items()
               if not all(word.lower() in refusals[case].lower() for word in words)}
    assert unclear == {}, "\n".join(f"{case}: {message[:300]}" for case, message in unclear.items())
    assert all("Traceback" not in message and len(message) < 600 for message in refusals.values())
    assert server.expenses.list(user_id("bruno")) == [], "nothing refused was stored"
    outcomes = " ".join(entry.outcome for entry in server.audit_log.entries)
    assert "refused: site must look like" in outcomes and PASTED_TOKEN.split(".")[1] not in outcomes


async def test_refused_input_never_reaches_graph(emulator: Emulator, server: RunningServer, bruno: HeadlessOAuth) -> None:
    async with Client(server.mcp_url, auth=bruno) as client:
        await client.call_tool("whoami")  # signed in before counting
        before = emulator.graph_requests.last_seq
        for case, (tool, arguments, _) in BAD_INPUT.items():
            if tool in ("check_group_membership", "check_site_access"):
                with pytest.raises(ToolError):
                    await client.call_tool(tool, arguments)
        assert emulator.graph_requests.since(before) == []
        await client.call_tool("check_site_access", {"site": f"{SHAREPOINT_HOST}:/sites/finance"})
    assert [r.path for r in emulator.graph_requests.since(before)] == [f"/v1.0/sites/{SHAREPOINT_HOST}:/sites/finance"]


@pytest.mark.parametrize("case", ["date: future", "amount: text", "group: a name", "site: dot segment", "expense id: wrong shape"])
async def test_refusals_through_the_official_mcp_client(server: RunningServer, case: str) -> None:
    """The `mcp` SDK's client gets the same refusal as a tool result with `isError` (nothing raised)."""
    tool, arguments, words = BAD_INPUT[case]
    auth = sdk_oauth(server.mcp_url, agent=HeadlessUserAgent(account=user_upn("bruno")))
    async with connect(server.mcp_url, auth) as client:
        result = await client.call_tool(tool, arguments)
    text = " ".join(getattr(block, "text", "") for block in result.content)
    assert result.is_error is True
    assert all(word.lower() in text.lower() for word in words), text


async def test_every_argument_is_described_in_the_tool_schema(server: RunningServer, bruno: HeadlessOAuth) -> None:
    """What a client (or a model) sees before calling: each argument says what it expects."""
    async with Client(server.mcp_url, auth=bruno) as client:
        tools = await client.list_tools()
    undescribed = [f"{tool.name}.{name}" for tool in tools for name, spec in tool.input_schema.get("properties", {}).items()
                   if not spec.get("description")]
    assert {tool.name for tool in tools} >= {"add_expense", "check_group_membership", "check_site_access", "approve_expense"}
    assert undescribed == []
