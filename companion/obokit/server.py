"""The workbook's MCP server: FastMCP behind Entra (AzureProvider), with OBO tools, in the kernel.

    from obokit.server import start_workbook_server
    from obokit.target import connect

    server = start_workbook_server(connect())   # reads the registration 01-app-registration made
    server.mcp_url                               # http://localhost:<port>/mcp
    server.audit_log.table()                     # who called what
    server.stop()

The pieces, for notebooks that want to show them (03-server-in-the-kernel builds them cell by cell):

* `signing_key(target)` - the OAuth proxy's JWT signing key, generated once and kept owner-only
  in the target's secrets file (`MCP_PROXY_SIGNING_KEY`), so tokens the proxy issued stay valid
  across restarts;
* `persistent_client_store(storage_dir, key)` - py-key-value's `FileTreeStore`, encrypted with a
  key derived from the signing key: client registrations and upstream tokens survive a restart
  (FastMCP's in-memory store forgets them, and every client must register and sign in again); reads
  come from a memory cache of the store, so one running server per storage folder;
* `workbook_auth(...)` - the `AzureProvider`; `build_server(...)` - FastMCP with the middleware
  of `obokit.middleware` and the tools of `obokit.tools`.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.fernet import Fernet
from dotenv import dotenv_values
from fastmcp import FastMCP
from fastmcp.server.auth.jwt_issuer import derive_jwt_key
from fastmcp.server.auth.providers.azure import AzureProvider
from key_value.aio.protocols import AsyncKeyValue
from key_value.aio.stores.filetree import (
    FileTreeStore,
    FileTreeV1CollectionSanitizationStrategy,
    FileTreeV1KeySanitizationStrategy,
)
from key_value.aio.stores.memory import MemoryStore
from key_value.aio.wrappers.encryption import FernetEncryptionWrapper
from key_value.aio.wrappers.passthrough_cache import PassthroughCacheWrapper

from . import settings
from .audit import AuditLog
from .expenses import ExpenseBook
from .kernel import BackgroundServer, bind_loopback, serve_in_background, stop_previous
from .middleware import AppRoleGate, AuditTrail, CallerContext
from .target import Target, write_secret
from .obo_cache import OboCache
from .verifier import harden
from .tools import GraphApi, OboTokenSource, cached_on_behalf_of, register_tools

SIGNING_KEY_NAME = "MCP_PROXY_SIGNING_KEY"
# Salt of the Fernet key that encrypts every OAuth-proxy store (files here, Redis in obokit.scaleout):
# replicas and restarts must derive the same key, or the stores read as empty.
STORAGE_SALT = "obokit-oauth-proxy-storage"
REQUIRED_SCOPES = ["mcp-access"]
APP_ROLES = ("Task.Read", "Task.Write")
# Redirect URIs MCP clients may register through the proxy's dynamic client registration (every
# URI of a registration must match; README "Connecting other MCP clients"):
CLIENT_REDIRECT_URIS = [
    # FastMCP's client, the mcp SDK's, Claude Code: a loopback /callback on any port
    "http://localhost:*/callback",
    "http://127.0.0.1:*/callback",
    # MCP Inspector (port 6274 unless CLIENT_PORT is set): its callback and its debug callback
    "http://localhost:*/oauth/callback",
    "http://localhost:*/oauth/callback/debug",
    "http://127.0.0.1:*/oauth/callback",
    "http://127.0.0.1:*/oauth/callback/debug",
    # VS Code registers all four; it listens on 127.0.0.1:33418/ or, when taken, on any free port.
    # A loopback pattern whose path is "/" admits any path on 127.0.0.1 (RFC 8252 loopback redirect).
    "https://vscode.dev/redirect",
    "https://insiders.vscode.dev/redirect",
    "http://127.0.0.1:*/",
]


class _DropLoopbackNotices(logging.Filter):
    """The in-kernel server is plain http on loopback by design: FastMCP's start-up notices about
    it (non-secure cookies; the provider's ids at INFO) would only add noise to notebook cells."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "non-secure cookies" not in record.getMessage()


logging.getLogger("fastmcp.server.auth.oauth_proxy.proxy").addFilter(_DropLoopbackNotices())
logging.getLogger("fastmcp.server.auth.providers.azure").setLevel(logging.WARNING)


class ServerRegistration(Protocol):
    """What the server needs of `obokit.provisioning.Registrations`."""

    mcp_server_client_id: str
    mcp_server_client_secret: str


def signing_key(target: Target) -> str:
    """The proxy's JWT signing key from the secrets file; created (owner-only) on first use."""
    return stored_key(target, SIGNING_KEY_NAME)


def stored_key(target: Target, name: str) -> str:
    """A random key kept in the target's secrets file under `name`; created (owner-only) on first use."""
    values = dotenv_values(target.secrets_file) if target.secrets_file.exists() else {}
    key = values.get(name)
    if not key:
        key = secrets.token_urlsafe(32)
        write_secret(target.secrets_file, name, key)
    return key


def persistent_client_store(storage_dir: Path, key: str, *, folder: str = "oauth-proxy") -> AsyncKeyValue:
    """A file-backed, encrypted key-value store for the OAuth proxy (registrations, tokens), read through a memory cache.

    `storage_dir / folder` is created owner-only (0700); obokit.mcp_client keeps its clients' registrations the same way.
    """
    directory = Path(storage_dir) / folder
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    files = FileTreeStore(
        data_directory=directory,
        key_sanitization_strategy=FileTreeV1KeySanitizationStrategy(directory),
        collection_sanitization_strategy=FileTreeV1CollectionSanitizationStrategy(directory),
    )
    fernet_key = derive_jwt_key(high_entropy_material=key, salt=STORAGE_SALT)
    # A store written under another key reads as empty (clients register again) instead of failing.
    encrypted = FernetEncryptionWrapper(key_value=files, fernet=Fernet(fernet_key), raise_on_decryption_error=False)
    # The proxy reads the client and its upstream tokens on every request; from disk that is a dozen
    # worker-thread hops per call. Reads come from memory, writes and deletes go through to disk.
    return PassthroughCacheWrapper(primary_key_value=encrypted, cache_key_value=MemoryStore())


def default_storage_dir(name: str = "workbook") -> Path:
    return settings.state_dir() / "mcp-servers" / name


def server_socket(name: str, port: int | None = None) -> Any:
    """A loopback listening socket for the server `name`: on `port`, or (None) on the port it had last time.

    An explicit `port` is used as is (0: any free port). A server's URL is what its clients know it
    by (they keep their registration per server URL), so a server started again comes back at the
    same address when that port is still free; otherwise, or on the first start, the OS picks a free
    port, remembered in the state folder (`mcp-servers/<name>.port`).
    """
    if port is not None:
        return bind_loopback("127.0.0.1", port)
    memory = settings.state_dir() / "mcp-servers" / f"{name}.port"
    if memory.exists():
        try:
            return bind_loopback("127.0.0.1", int(memory.read_text()))
        except (OSError, ValueError):
            pass  # taken by something else meanwhile: a new address, clients register there once
    sock = bind_loopback("127.0.0.1", 0)
    memory.parent.mkdir(parents=True, exist_ok=True)
    memory.write_text(str(sock.getsockname()[1]))
    return sock


def workbook_auth(target: Target, registration: ServerRegistration, *, base_url: str, storage_dir: Path,
                  client_storage: AsyncKeyValue | None = None) -> AzureProvider:
    """Entra in front of the server: FastMCP's OAuth proxy for the app registration of 01."""
    key = signing_key(target)
    # harden: fastmcp's JWTVerifier plus the checks it skips (nbf, exp required, tid; obokit.verifier).
    return harden(AzureProvider(
        client_id=registration.mcp_server_client_id,
        client_secret=registration.mcp_server_client_secret,
        tenant_id=target.tenant_id,
        base_url=base_url,
        required_scopes=REQUIRED_SCOPES,
        base_authority=target.authority_host,
        allowed_client_redirect_uris=CLIENT_REDIRECT_URIS,
        jwt_signing_key=key,
        client_storage=client_storage if client_storage is not None else persistent_client_store(storage_dir, key),
    ), tenant_id=target.tenant_id)


def build_server(
    target: Target,
    registration: ServerRegistration,
    *,
    base_url: str,
    storage_dir: Path,
    name: str = "obokit workbook",
    auth: AzureProvider | None = None,
    audit_log: AuditLog | None = None,
    expenses: ExpenseBook | None = None,
    obo: OboTokenSource | None = None,
) -> FastMCP:
    """The workbook's FastMCP server (not yet serving): Entra sign-in, tier-1 roles, OBO tools, audit.

    `obo` is how the tools get a Graph token for the caller; by default an `OboCache` of the server's
    app (one exchange per user token and scopes, coalesced, non-blocking), reachable as
    `mcp.obo_cache`. Pass `obokit.tools.on_behalf_of` for FastMCP's own `EntraOBOToken` credential.
    """
    auth = auth or workbook_auth(target, registration, base_url=base_url, storage_dir=storage_dir)
    audit_log = audit_log if audit_log is not None else AuditLog(Path(storage_dir) / "audit.jsonl")
    cache: OboCache | None = None
    if obo is None:
        cache = OboCache.for_app(target, registration.mcp_server_client_id, registration.mcp_server_client_secret)
        obo = cached_on_behalf_of(cache)
    graph = GraphApi(target.graph_url, obo=obo)

    @asynccontextmanager
    async def lifespan(server: FastMCP) -> AsyncIterator[dict[str, Any]]:
        # Closed in reverse order of registration, each even if one before it fails.
        async with AsyncExitStack() as stack:
            stack.push_async_callback(audit_log.aclose)  # writes what is pending and ends its writer thread
            if cache is not None:
                stack.push_async_callback(cache.aclose)
            stack.push_async_callback(graph.aclose)
            # FastMCP keeps one OnBehalfOfCredential per user token and never closes them.
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
) -> RunningServer:
    """Build the workbook server and serve it in the background; re-using `name` replaces it.

    The registration comes from `obokit.provisioning.registrations(target)` (01-app-registration).
    `port=None` comes back on the port the server `name` had last time, if free (`server_socket`);
    `port=0` picks a free port; pass the old `.port` to restart on the same URL. `obo`: see `build_server`.
    """
    if registration is None:
        from .provisioning import registrations

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
                           audit_log=audit_log, expenses=expenses, obo=obo)
    except BaseException:
        sock.close()
        raise
    handle = serve(mcp, sock, name=name)
    return RunningServer(name=name, url=base_url, handle=handle, audit_log=audit_log, expenses=expenses,
                         storage_dir=storage_dir, mcp=mcp)


@contextmanager
def captured_logs(*names: str, level: int = logging.INFO) -> Iterator[list[str]]:
    """Collect the log messages of loggers `names` (e.g. "fastmcp", "mcp") instead of printing them.

    The server runs in a thread of this kernel, so its log lines would land, unformatted and with
    timestamps, in whichever cell is running; a "what can go wrong" cell shows the few it needs.
    """
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(f"{record.levelname} {record.getMessage().splitlines()[0]}")

    handler, saved = Collect(level), []
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate, logger.level))
        logger.handlers, logger.propagate = [handler], False
        if logger.level == logging.NOTSET or logger.level > level:
            logger.setLevel(level)
    try:
        yield messages
    finally:
        for logger, handlers, propagate, old_level in saved:
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(old_level)


__all__ = [
    "APP_ROLES", "CLIENT_REDIRECT_URIS", "REQUIRED_SCOPES", "SIGNING_KEY_NAME", "STORAGE_SALT", "RunningServer", "build_server", "captured_logs",
    "default_storage_dir", "persistent_client_store", "serve", "server_socket", "signing_key", "stored_key", "start_workbook_server", "workbook_auth",
]
