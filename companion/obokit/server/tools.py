"""The workbook server's tools, and the one place where they trade the user's token (OBO).

`register_tools(mcp, graph=..., expenses=...)` adds six tools to a FastMCP server:

| tool | tier 1 (app role) | downstream, tier 2 (OBO: Graph checks the user's own rights) |
|---|---|---|
| `whoami` | any signed-in user | - |
| `add_expense`, `list_expenses` | `Task.Read` | - (the user's own data, keyed by `oid`) |
| `check_group_membership` | `Task.Read` | `GET /me/transitiveMemberOf/microsoft.graph.group` |
| `check_site_access` | `Task.Read` | `GET /sites/{host}:/sites/{name}` |
| `approve_expense` | `Task.Write` | - |

Tier 1 is enforced by `obokit.server.middleware.AppRoleGate` from the tools' tags. Every Graph call
goes through `GraphApi`, which gets its token from an `OboTokenSource` (`GraphApi(obo=...)`):
the server's default is `cached_on_behalf_of(OboCache)` (one exchange per user and scopes, coalesced,
non-blocking); `on_behalf_of` is FastMCP's `EntraOBOToken` way (azure-identity's credential).
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any

import httpx
from azure.core.exceptions import ClientAuthenticationError
from fastmcp import Context, FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.server.auth.providers.azure import AzureProvider
from fastmcp.server.dependencies import get_access_token, get_server
from pydantic import Field

from .expenses import CATEGORIES, ExpenseBook, InvalidExpense, shown
from .middleware import current_caller, refusal, schemas_from_gate
from .obo import OboError, entra_message
from .obo_cache import OboCache

GRAPH = "https://graph.microsoft.com"
GROUP_SCOPES = [f"{GRAPH}/GroupMember.Read.All"]
SITE_SCOPES = [f"{GRAPH}/Sites.Read.All"]
GRAPH_CONNECTIONS = 10  # Graph requests in flight at once per server (more wait for a free connection)
SITE_PATTERN = re.compile(
    r"^(?:https://)?(?P<host>[a-z0-9-]+(?:\.[a-z0-9-]+)*\.sharepoint\.(?:com|us|cn|de))(?::?/sites/)(?P<name>[A-Za-z0-9_.-]{1,100})/?$",
    re.IGNORECASE,
)

OboTokenSource = Callable[[Sequence[str]], Awaitable[str]]


class _DropOboFailureWarnings(logging.Filter):
    """azure-identity logs every failed `get_token` as a WARNING; `on_behalf_of` already turns an OBO
    refusal into a tool error that the client sees and the audit log records, so that copy is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.WARNING and record.getMessage().startswith("OnBehalfOfCredential."))


logging.getLogger("azure.identity.aio._internal.get_token_mixin").addFilter(_DropOboFailureWarnings())


async def on_behalf_of(scopes: Sequence[str]) -> str:
    """A downstream token for the caller of this request (OBO), as FastMCP's `EntraOBOToken` gets it.

    The AzureProvider keeps one azure-identity `OnBehalfOfCredential` per user token, so
    repeated calls with the same scopes reuse its cached result instead of asking Entra again.
    Entra's refusal (e.g. AADSTS65001, consent missing) becomes a `ToolError` with the AADSTS line.
    """
    token = get_access_token()
    provider = get_server().auth
    if token is None or not isinstance(provider, AzureProvider):
        raise refusal("on-behalf-of needs a request authenticated by the server's AzureProvider")
    credential = await provider.get_obo_credential(user_assertion=token.token)
    try:
        return (await credential.get_token(*scopes)).token
    except ClientAuthenticationError as error:
        found = re.search(r"AADSTS\d+:.*", str(error).replace("\\r\\n", "\n"))
        reason = entra_message(found.group(0)) if found else type(error).__name__
        raise refusal(f"Microsoft Entra refused the on-behalf-of exchange: {reason}") from None


def cached_on_behalf_of(cache: OboCache) -> OboTokenSource:
    """The workbook server's default token source: OBO through `cache` (`obokit.server.obo_cache.OboCache`).

    One exchange per (user token, scopes) until shortly before expiry, concurrent first calls
    coalesced, nothing blocking the event loop. Refusals read as those of `on_behalf_of`.
    """

    async def obo(scopes: Sequence[str]) -> str:
        token = get_access_token()
        if token is None:
            raise refusal("on-behalf-of needs a request authenticated by the server's AzureProvider")
        try:
            return await cache.token(token.token, scopes)
        except OboError as error:
            reason = error.description or error.error
            raise refusal(f"Microsoft Entra refused the on-behalf-of exchange: {reason}") from None

    return obo


class GraphApi:
    """Microsoft Graph calls made for the current caller, with one shared HTTP connection pool."""

    def __init__(self, base_url: str, *, obo: OboTokenSource = on_behalf_of,
                 event_hooks: Mapping[str, list[Callable[..., Any]]] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.obo = obo
        self.event_hooks = event_hooks  # httpx event hooks of the Graph client (e.g. `obokit.trace.Trace`); None: none
        self._http: httpx.AsyncClient | None = None

    async def get(self, ctx: Context, path: str, *, scopes: Sequence[str], params: dict[str, str] | None = None,
                  headers: dict[str, str] | None = None) -> httpx.Response:
        """GET `path` with an OBO token for `scopes`; the call is noted in the caller's audit trail."""
        caller = await current_caller(ctx)
        token = await self.obo(scopes)
        if self._http is None:
            # A small pool, every connection kept alive (a TLS handshake costs more than the request): httpcore
            # scans all of its connections, quadratically, on each request, so 50 idle connections from a
            # burst cost ~2 ms of CPU per call; ~10 requests in flight already carry hundreds of calls/s.
            self._http = httpx.AsyncClient(timeout=15, limits=httpx.Limits(max_connections=GRAPH_CONNECTIONS,
                                                                           max_keepalive_connections=GRAPH_CONNECTIONS),
                                           event_hooks=dict(self.event_hooks or {}))
        response = await self._http.get(
            f"{self.base_url}{path}", params=params, headers={**(headers or {}), "Authorization": f"Bearer {token}"}
        )
        caller.downstream.append(f"GET {path} -> {response.status_code}")
        return response

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def graph_refusal(response: httpx.Response) -> ToolError:
    """A Graph error answer as a tool error: status, Graph's error code and message."""
    try:
        error = response.json().get("error", {})
    except ValueError:
        error = {}
    return refusal(f"Microsoft Graph answered {response.status_code} {error.get('code', '')}: {error.get('message', '')}".strip())


def parse_group_id(value: str) -> str:
    try:
        return str(uuid.UUID(str(value).strip()))
    except ValueError:
        raise refusal(f"group_id must be a group's object id (a GUID), not {shown(value)}") from None


def parse_site(value: str) -> tuple[str, str]:
    """`host:/sites/name` or `https://host/sites/name` -> (host, name)."""
    match = SITE_PATTERN.match(str(value).strip())
    if match is None or not match["name"].strip("."):  # "." and ".." would walk up the Graph URL
        raise refusal(
            f"site must look like contoso.sharepoint.com:/sites/finance or https://contoso.sharepoint.com/sites/finance, not {shown(value)}"
        )
    return match["host"].lower(), match["name"]


def register_tools(mcp: FastMCP, *, graph: GraphApi, expenses: ExpenseBook) -> FastMCP:
    """Add the workbook's tools to `mcp` (tags name the app role each one requires)."""

    @mcp.tool
    async def whoami(ctx: Context) -> dict[str, Any]:
        """Who the server thinks you are: name, object id, app roles and delegated scopes (never the token)."""
        caller = await current_caller(ctx)
        return {"name": caller.name, "upn": caller.upn, "oid": caller.oid,
                "roles": sorted(caller.roles), "scp": " ".join(caller.scopes)}

    @mcp.tool(tags={"Task.Read"})
    async def add_expense(
        ctx: Context,
        date: Annotated[str, Field(description="ISO date of the expense, e.g. 2026-11-02; not in the future")],
        amount: Annotated[float, Field(description="positive amount with at most two decimals")],
        category: Annotated[str, Field(description=f"one of: {', '.join(CATEGORIES)}")],
        description: Annotated[str, Field(description="what it was for (max 200 characters)")],
    ) -> dict[str, Any]:
        """Record one of your expenses. Submitting the same expense again returns the first one."""
        caller = await current_caller(ctx)
        try:
            # ExpenseBook takes a threading lock and may write its JSON file: off the event loop.
            return await asyncio.to_thread(expenses.add, caller.oid, date=date, amount=amount, category=category,
                                           description=description, submitted_by=caller.upn)
        except InvalidExpense as error:
            raise refusal(str(error)) from None

    @mcp.tool(tags={"Task.Read"})
    async def list_expenses(ctx: Context) -> list[dict[str, Any]]:
        """Your expenses, oldest first (only your own: they are stored under your object id)."""
        return expenses.list((await current_caller(ctx)).oid)

    @mcp.tool(tags={"Task.Read"})
    async def check_group_membership(
        ctx: Context, group_id: Annotated[str, Field(description="the group's object id, a GUID")]
    ) -> dict[str, Any]:
        """Whether you are a member of the group, directly or through nested groups (Graph, on your behalf)."""
        group = parse_group_id(group_id)
        response = await graph.get(
            ctx,
            "/me/transitiveMemberOf/microsoft.graph.group",
            scopes=GROUP_SCOPES,
            # $filter and $count on membership are "advanced queries": Graph answers 400 unless
            # the request also says it accepts eventually consistent results.
            params={"$filter": f"id eq '{group}'", "$count": "true", "$select": "id,displayName"},
            headers={"ConsistencyLevel": "eventual"},
        )
        if response.status_code != 200:
            raise graph_refusal(response)
        body = response.json()
        found = body.get("value", [])
        return {"group_id": group, "member": body.get("@odata.count", len(found)) > 0,
                "group": found[0].get("displayName") if found else None}

    @mcp.tool(tags={"Task.Read"})
    async def check_site_access(
        ctx: Context,
        site: Annotated[str, Field(description="contoso.sharepoint.com:/sites/finance or https://contoso.sharepoint.com/sites/finance")],
    ) -> dict[str, Any]:
        """Whether you can open a SharePoint site (Graph decides with your own permissions)."""
        host, name = parse_site(site)
        response = await graph.get(ctx, f"/sites/{host}:/sites/{name}", scopes=SITE_SCOPES, params={"$select": "id,displayName,webUrl"})
        verdicts = {200: "granted", 403: "no access", 404: "not found"}
        if response.status_code not in verdicts:
            raise graph_refusal(response)
        result: dict[str, Any] = {"site": f"{host}:/sites/{name}", "access": verdicts[response.status_code]}
        if response.status_code == 200:
            result["name"] = response.json().get("displayName")
        return result

    @mcp.tool(tags={"Task.Write"})
    async def approve_expense(
        ctx: Context, expense_id: Annotated[str, Field(description="the id list_expenses shows, e.g. EXP-1A2B3C")]
    ) -> dict[str, Any]:
        """Approve a colleague's expense (needs the Task.Write app role; never your own)."""
        caller = await current_caller(ctx)
        try:
            return await asyncio.to_thread(expenses.approve, expense_id, approver_oid=caller.oid, approver=caller.upn)
        except InvalidExpense as error:
            raise refusal(str(error)) from None

    schemas_from_gate(mcp)  # a tools/call no longer lists every tool to find the called one's schema
    return mcp
