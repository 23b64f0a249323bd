"""The workbook's MCP server: FastMCP behind Entra, with OBO tools, served in the kernel.

    from obokit.server import start_workbook_server
    from obokit.tenant.target import connect

    server = start_workbook_server(connect())   # reads the registration 01-app-registration made
    server.mcp_url                               # http://localhost:<port>/mcp
    server.audit_log.table()                     # who called what
    server.stop()

`build_server(...)` is FastMCP with the auth of `obokit.server.proxy`, the middleware of
`obokit.server.middleware` and the tools of `obokit.server.tools`, not yet serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Collection, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastmcp import FastMCP
from fastmcp.server.auth import AuthProvider
from fastmcp.server.auth.providers.azure import AzureProvider

from .. import settings
from ..kernel import BackgroundServer, bind_lasting_port, bind_loopback, serve_in_background, stop_previous
from ..tenant.target import Target
from ..trace import Trace
from .audit import AuditLog
from .credentials import ClientSecret, ServerCredential
from .direct import direct_auth
from .expenses import ExpenseBook
from .middleware import AppRoleGate, AuditTrail, CallerContext
from .obo_cache import OboCache
from .proxy import ServerRegistration, workbook_auth
from .tools import GraphApi, OboTokenSource, cached_on_behalf_of, register_tools

APP_ROLES = ("Task.Read", "Task.Write")


def default_storage_dir(name: str = "workbook") -> Path:
    return settings.state_dir() / "mcp-servers" / name


def server_socket(name: str, port: int | None = None) -> Any:
    """A loopback listening socket for the server `name`: on `port`, or (None) on the port it had last time.

    An explicit `port` is used as is (0: any free port). A server's URL is what its clients know it
    by (they keep their registration per server URL), so a server started again comes back at the
    same address when that port is still free; otherwise, or on the first start, a free port below the
    ephemeral range (`bind_lasting_port`: no outgoing connection borrows it meanwhile), remembered in the
    state folder (`mcp-servers/<name>.port`).
    """
    if port is not None:
        return bind_loopback("127.0.0.1", port)
    memory = settings.state_dir() / "mcp-servers" / f"{name}.port"
    if memory.exists():
        try:
            return bind_loopback("127.0.0.1", int(memory.read_text()))
        except (OSError, ValueError):
            pass  # taken by something else meanwhile: a new address, clients register there once
    sock = bind_lasting_port("127.0.0.1")
    memory.parent.mkdir(parents=True, exist_ok=True)
    memory.write_text(str(sock.getsockname()[1]))
    return sock


def build_server(
    target: Target,
    registration: ServerRegistration,
    *,
    base_url: str,
    storage_dir: Path,
    name: str = "obokit workbook",
    auth: AuthProvider | None = None,
    audit_log: AuditLog | None = None,
    expenses: ExpenseBook | None = None,
    obo: OboTokenSource | None = None,
    credential: ServerCredential | None = None,
    mode: str = "proxy",
    trusted_callers: Collection[str] = (),
    trace: Trace | None = None,
) -> FastMCP:
    """The workbook's FastMCP server (not yet serving): Entra sign-in, tier-1 roles, OBO tools, audit.

    `obo` is how the tools get a Graph token for the caller; by default an `OboCache` of the server's
    app (one exchange per user token and scopes, coalesced, non-blocking), reachable as
    `mcp.obo_cache`. Pass `obokit.server.tools.on_behalf_of` for FastMCP's own `EntraOBOToken` credential.
    `credential`: how the server's app proves itself to Entra, in the proxy and in OBO (`obokit.server.credentials`;
    default: the registration's client secret).
    `mode`: "proxy" (FastMCP's OAuth proxy, `obokit.server.proxy`) or "direct" (Entra as the clients' authorization
    server, `obokit.server.direct`; `trusted_callers`: the app ids of the pre-authorized clients).
    `trace`: an `obokit.trace.Trace` that records (redacted) the OBO exchanges of the default `OboCache` and the
    Graph calls; None (the default) records nothing.
    """
    credential = credential if credential is not None else ClientSecret(registration.mcp_server_client_secret)
    if mode == "direct" and not trusted_callers:
        raise ValueError("direct mode needs trusted_callers: the app ids of the clients pre-authorized on the server")
    if auth is None and mode == "direct":
        auth = direct_auth(target, registration, base_url=base_url, trusted_callers=trusted_callers)
    elif auth is None and mode == "proxy":
        auth = workbook_auth(target, registration, base_url=base_url, storage_dir=storage_dir, credential=credential)
    elif auth is None:
        raise ValueError(f"mode must be 'proxy' or 'direct', not {mode!r}")
    audit_log = audit_log if audit_log is not None else AuditLog(Path(storage_dir) / "audit.jsonl")
    cache: OboCache | None = None
    if obo is None:
        cache = OboCache.for_app(target, registration.mcp_server_client_id, credential,
                                 event_hooks=trace.event_hooks("entra") if trace is not None else None)
        obo = cached_on_behalf_of(cache)
    graph = GraphApi(target.graph_url, obo=obo, event_hooks=trace.event_hooks("graph") if trace is not None else None)

    @asynccontextmanager
    async def lifespan(server: FastMCP) -> AsyncIterator[dict[str, Any]]:
        # Closed in reverse order of registration, each even if one before it fails.
        async with AsyncExitStack() as stack:
            stack.push_async_callback(audit_log.aclose)  # writes what is pending and ends its writer thread
            if cache is not None:
                stack.push_async_callback(cache.aclose)
            stack.push_async_callback(graph.aclose)
            if isinstance(auth, AzureProvider):  # FastMCP keeps one OnBehalfOfCredential per user token, never closed
                stack.push_async_callback(auth.close_obo_credentials)
            yield {}

    mcp = FastMCP(
        name,
        auth=auth,
        lifespan=lifespan,
        middleware=[CallerContext(), AuditTrail(audit_log), AppRoleGate(APP_ROLES)],
    )
    mcp.obo_cache = cache  # type: ignore[attr-defined]  # None when `obo` was given
    return register_tools(mcp, graph=graph, expenses=expenses if expenses is not None else ExpenseBook())


@dataclass
class RunningServer:
    """A workbook server serving from a background thread of this process (the kernel)."""

    name: str
    url: str  # http://localhost:<port>
    handle: BackgroundServer
    audit_log: AuditLog
    expenses: ExpenseBook
    storage_dir: Path
    mcp: FastMCP = field(repr=False)
    trace: Trace | None = field(default=None, repr=False)  # what `start_workbook_server(trace=...)` records into

    @property
    def mcp_url(self) -> str:
        return f"{self.url}/mcp"

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        self.handle.stop()

    @property
    def running(self) -> bool:
        return self.handle.running

    def __repr__(self) -> str:
        return f"RunningServer({self.name!r}, mcp_url={self.mcp_url!r}, running={self.running})"


def serve(mcp: FastMCP, sock: Any, *, name: str) -> BackgroundServer:
    """Serve `mcp` (streamable HTTP at /mcp) on an already bound socket, in the background.

    Serving again under the same `name` (e.g. re-running a notebook cell) stops the previous one.
    """
    return serve_in_background({"mcp": mcp.http_app()}, name=f"mcp-{name}", sockets={"mcp": sock})


def start_workbook_server(
    target: Target,
    *,
    name: str = "workbook",
    port: int | None = None,
    storage_dir: Path | None = None,
    expenses: ExpenseBook | None = None,
    registration: ServerRegistration | None = None,
    obo: OboTokenSource | None = None,
    credential: ServerCredential | None = None,
    mode: str = "proxy",
    trusted_callers: Collection[str] = (),
    trace: Trace | None = None,
) -> RunningServer:
    """Build the workbook server and serve it in the background; re-using `name` replaces it.

    The registration comes from `obokit.tenant.provisioning.registrations(target)` (01-app-registration).
    `port=None` comes back on the port the server `name` had last time, if free (`server_socket`);
    `port=0` picks a free port; pass the old `.port` to restart on the same URL. `obo`, `credential`, `mode`,
    `trusted_callers`, `trace`: see `build_server`.
    """
    if registration is None:
        from ..tenant.provisioning import registrations

        registration = registrations(target)
    storage_dir = Path(storage_dir) if storage_dir is not None else default_storage_dir(name)
    # Re-running the cell: stop the previous server first, so its (remembered) port is free to bind again.
    stop_previous(f"mcp-{name}")
    sock = server_socket(name, port)
    # "localhost": the redirect URI registered in Entra is http://localhost:8000/auth/callback, and
    # Entra (like the emulator) accepts any port for an http loopback redirect URI.
    base_url = f"http://localhost:{sock.getsockname()[1]}"
    audit_log = AuditLog(storage_dir / "audit.jsonl")
    expenses = expenses if expenses is not None else ExpenseBook()
    try:
        mcp = build_server(target, registration, base_url=base_url, storage_dir=storage_dir,
                           audit_log=audit_log, expenses=expenses, obo=obo, credential=credential, mode=mode, trusted_callers=trusted_callers,
                           trace=trace)
    except BaseException:
        sock.close()
        raise
    handle = serve(mcp, sock, name=name)
    return RunningServer(name=name, url=base_url, handle=handle, audit_log=audit_log, expenses=expenses,
                         storage_dir=storage_dir, mcp=mcp, trace=trace)


@contextmanager
def captured_logs(*names: str, level: int = logging.INFO, until: str | None = None,
                  timeout: float = 5.0) -> Iterator[list[str]]:
    """Collect the log messages of loggers `names` (e.g. "fastmcp", "mcp") instead of printing them.

    The server runs in a thread of this kernel, so its log lines would land, unformatted and with
    timestamps, in whichever cell is running; a "what can go wrong" cell shows the few it needs.
    A server often logs just *after* it has answered: with `until`, leaving the block waits (at most
    `timeout` seconds) for a message containing that text, so the line cannot slip into a later cell.
    """
    messages: list[str] = []
    seen = threading.Event()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(f"{record.levelname} {record.getMessage().splitlines()[0]}")
            if until is not None and until in messages[-1]:
                seen.set()

    handler, saved = Collect(level), []
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate, logger.level))
        logger.handlers, logger.propagate = [handler], False
        if logger.level == logging.NOTSET or logger.level > level:
            logger.setLevel(level)
    try:
        yield messages
        if until is not None and not seen.wait(timeout):
            raise TimeoutError(f"no log message containing {until!r} within {timeout} s; got {messages}")
    finally:
        for logger, handlers, propagate, old_level in saved:
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(old_level)


__all__ = [
    "APP_ROLES", "RunningServer", "build_server", "captured_logs", "default_storage_dir", "serve", "server_socket",
    "start_workbook_server",
]
