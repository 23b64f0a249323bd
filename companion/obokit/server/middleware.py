"""FastMCP middleware of the workbook server: who is calling, what they may see, what they did.

* `CallerContext` reads the Entra token FastMCP already validated and puts a `Caller` (oid,
  name, roles, scopes; never the token) into the request state, where tools read it with
  `await ctx.get_state("caller")`.
* `AppRoleGate` is tier 1 of the workbook's security: a tool tagged with an app role's name
  (`@mcp.tool(tags={"Task.Write"})`) is listed only to callers whose token carries that role
  in its `roles` claim, and a call from anyone else is refused before the tool runs.
* `AuditTrail` writes one `obokit.server.audit.AuditEntry` per tool call.

Order matters: FastMCP runs the first middleware of the list outermost, so
`[CallerContext(), AuditTrail(log), AppRoleGate(...)]` audits the gate's refusals too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastmcp import FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.server.dependencies import get_access_token
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.server.providers.addressing import parse_hashed_backend_name
from fastmcp.tools import Tool

from .audit import AuditWriteError

log = logging.getLogger(__name__)
CALLER = "caller"  # the request-state key


@dataclass
class Caller:
    """The signed-in user of one request, from the claims of their Entra access token."""

    oid: str  # object id: the stable key for per-user data
    upn: str  # preferred_username (v2) or upn (v1)
    name: str
    roles: tuple[str, ...]  # app roles assigned to the user (the `roles` claim)
    scopes: tuple[str, ...]  # delegated scopes the client holds (the `scp` claim)
    downstream: list[str] = field(default_factory=list)  # APIs called for this request (audit)

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> "Caller":
        roles = claims.get("roles") or ()
        return cls(
            oid=str(claims.get("oid", "")),
            upn=str(claims.get("preferred_username") or claims.get("upn") or ""),
            name=str(claims.get("name", "")),
            roles=(roles,) if isinstance(roles, str) else tuple(roles),
            scopes=tuple(str(claims.get("scp", "")).split()),
        )


async def current_caller(context: Any) -> Caller:
    """The `Caller` `CallerContext` stored for this request (`context`: a FastMCP `Context`)."""
    caller = await context.get_state(CALLER) if context is not None else None
    if caller is None:
        raise refusal("no signed-in caller for this request (is CallerContext in the server's middleware?)")
    return caller


class CallerContext(Middleware):
    """Put the caller's identity (`Caller`) into the request state for every MCP request."""

    async def on_request(self, context: MiddlewareContext, call_next: CallNext) -> Any:
        token = get_access_token()
        if token is not None and context.fastmcp_context is not None:
            caller = Caller.from_claims(token.claims)
            # Request-scoped (serializable=False): a Caller is per request, never kept in the session.
            await context.fastmcp_context.set_state(CALLER, caller, serializable=False)
        return await call_next(context)


def refusal(message: str) -> ToolError:
    """A tool error the caller caused (bad input, no access): told to the client and audited, but
    logged by FastMCP only at debug level, so it is not reported as a server fault."""
    return ToolError(message, log_level=logging.DEBUG)


class RoleRequired(ToolError):
    """A tier-1 refusal: the tool needs an app role the caller does not hold."""

    def __init__(self, tool: str, missing: list[str]) -> None:
        super().__init__(f"{tool} requires the app role {', '.join(missing)}, which you have not been assigned",
                         log_level=logging.DEBUG)
        self.missing = missing


class AppRoleGate(Middleware):
    """Tier 1: tools tagged with one of `roles` are listed and callable only with that app role.

    The tools' tags are read once from the server's registered tools and kept until the tools change
    (one lookup per call instead of FastMCP's `get_tool`). `input_schemas(mcp)` gives the MCP SDK the
    input schema of a tool the caller may see, so a `tools/call` does not list every tool first.
    """

    def __init__(self, roles: Iterable[str] = ("Task.Read", "Task.Write")) -> None:
        self.roles = frozenset(roles)
        self._tools: dict[str, Tool] = {}  # name -> registered tool, for the registry `_seen` describes
        self._seen: tuple[Any, ...] | None = None

    def required_roles(self, tool: Tool) -> set[str]:
        return set(tool.tags) & self.roles

    def allows(self, tool: Tool, caller_roles: Iterable[str]) -> bool:
        return self.required_roles(tool) <= set(caller_roles)

    def registered(self, server: FastMCP) -> dict[str, Tool]:
        """The server's own (local) tools by name, rebuilt whenever a tool is added, replaced or removed."""
        components = getattr(server.local_provider, "_components", None)
        if components is None:  # another FastMCP: no cache, every call asks `get_tool`
            return {}
        # The components themselves, not their ids: kept alive, a replaced tool's id cannot come back.
        # (Unchanged, the tuples compare element by identity first, which is all this costs per call.)
        seen = tuple(components.values())
        if seen != self._seen:
            tools = [c for c in components.values() if isinstance(c, Tool)]
            names = [tool.name for tool in tools]
            # A name with several versions is left to FastMCP's own resolution.
            self._tools = {tool.name: tool for tool in tools if names.count(tool.name) == 1}
            self._seen = seen
        return self._tools

    def input_schemas(self, server: FastMCP) -> Callable[[str], Mapping[str, Any] | None]:
        """`name -> input schema` of the server's tools the current caller may see, for the MCP SDK's
        `get_tool_input_schema` (Mcp-Param header checks); None lets the SDK skip the check, as its
        own listing does for a tool this caller is not shown."""

        def lookup(name: str) -> Mapping[str, Any] | None:
            tool = self.registered(server).get(name)
            return tool.parameters if tool is not None and self.allows(tool, _token_roles()) else None

        return lookup

    async def on_list_tools(self, context: MiddlewareContext, call_next: CallNext) -> Sequence[Tool]:
        tools = await call_next(context)
        roles = _token_roles()
        return [tool for tool in tools if self.allows(tool, roles)]

    async def on_call_tool(self, context: MiddlewareContext, call_next: CallNext) -> Any:
        name = context.message.name
        tool = await self.resolve(context.fastmcp_context.fastmcp, name) if context.fastmcp_context else None
        if tool is None:  # fail closed: a tool whose tags the gate cannot read is not called
            raise refusal(f"unknown tool: {name}")
        missing = sorted(self.required_roles(tool) - set(_token_roles()))
        if missing:
            raise RoleRequired(name, missing)
        return await call_next(context)

    async def resolve(self, server: FastMCP, name: str) -> Tool | None:
        """The tool a `tools/call` of `name` runs, routed as FastMCP's `call_tool` routes it (None: none)."""
        tool = self.registered(server).get(name)
        if tool is None:
            tool = await server.get_tool(name)  # a mounted or versioned tool
        if tool is None and (hashed := parse_hashed_backend_name(name)) is not None:
            tool = await server.get_tool_by_hash(*hashed)  # an app-callable backend tool, `<hash>_<name>`
        return tool


def schemas_from_gate(mcp: FastMCP) -> None:
    """Have the MCP SDK take a called tool's input schema from `mcp`'s `AppRoleGate` (if it has one).

    Before dispatching a `tools/call`, the SDK checks the request's Mcp-Param headers against the tool's
    input schema; without a lookup it finds the schema by running a whole `tools/list` through
    FastMCP and its middleware, on every call.
    """
    gate = next((m for m in mcp.middleware if isinstance(m, AppRoleGate)), None)
    if gate is not None:
        mcp._mcp_server.get_tool_input_schema = gate.input_schemas(mcp)


def _token_roles() -> tuple[str, ...]:
    token = get_access_token()
    if token is None:
        return ()
    return Caller.from_claims(token.claims).roles


class AuditTrail(Middleware):
    """Record who called which tool, the downstream APIs it called for them, and the outcome.

    A call that is cancelled (the client went away) is recorded as "cancelled". When the audit file
    cannot be written, the tool's answer still goes out (the tool has run; withholding its answer
    would not undo it) and the failure is logged at ERROR on `obokit.server.middleware`; the entry stays
    in memory and `AuditLog.flush()` returns False.
    """

    def __init__(self, log: Any) -> None:
        self.log = log  # an obokit.server.audit.AuditLog

    async def on_call_tool(self, context: MiddlewareContext, call_next: CallNext) -> Any:
        caller = await context.fastmcp_context.get_state(CALLER) if context.fastmcp_context else None
        outcome = "cancelled"
        try:
            result = await call_next(context)
            outcome = "ok"
            return result
        except RoleRequired as error:
            outcome = f"denied: needs {', '.join(error.missing)}"
            raise
        except ToolError as error:
            outcome = f"refused: {_first_line(error)}"
            raise
        except Exception as error:
            outcome = f"error: {type(error).__name__}"
            raise
        except BaseException as error:
            if not isinstance(error, asyncio.CancelledError):
                outcome = f"aborted: {type(error).__name__}"
            raise
        finally:
            # Written by the log's own thread; the answer goes out once the entry is in the file. The
            # entry is queued before arecord's first await: a second cancel only cuts short the wait.
            try:
                await self.log.arecord(
                    oid=caller.oid if caller else "", upn=caller.upn if caller else "(anonymous)",
                    tool=context.message.name, outcome=outcome, downstream=caller.downstream if caller else (),
                )
            except AuditWriteError as error:
                log.error("AUDIT ENTRY NOT WRITTEN for %s calling %s (%s): %s", caller.upn if caller else
                          "(anonymous)", context.message.name, outcome, error)


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
