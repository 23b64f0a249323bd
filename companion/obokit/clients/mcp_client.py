"""A FastMCP OAuth client that signs in headlessly, as a named demo user, instead of opening a browser.

FastMCP's `OAuth` opens the learner's browser at the MCP server's authorize URL and runs a
local callback server to catch the redirect. `HeadlessOAuth` keeps everything else (discovery,
dynamic client registration, PKCE, token storage and refresh) and replaces only those two
steps: `obokit.clients.headless.HeadlessBrowser` walks the same pages a person would (FastMCP's
consent screen, the sign-in page's account picker, FastMCP's `/auth/callback`) and hands the
final redirect back, so no port is listened on and no browser is needed.

`oauth_for` gives the notebooks' clients what a desktop MCP client has: their dynamic client
registration is kept on disk per (server URL, account) in `client_registrations(...)`, so running a
notebook again signs in with the registration of the last run instead of registering once more
with the server's OAuth proxy. On a tenant the tokens are kept there too, so a user signs in to a
server URL once, not once per notebook; on the emulator they stay in the kernel's memory: its issuer
(its port) changes with every kernel, so tokens of an earlier kernel would only be refused.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
from fastmcp.client.auth import OAuth
from fastmcp.client.auth.oauth import ClientNotFoundError
from key_value.aio.protocols import AsyncKeyValue
from key_value.aio.stores.memory import MemoryStore
from key_value.aio.wrappers.prefix_collections import PrefixCollectionsWrapper
from key_value.aio.wrappers.routing import RoutingWrapper
from mcp.shared.auth import AuthorizationCodeResult

from obokit import settings
from obokit.clients.headless import HeadlessBrowser, SignInError, code_result

__all__ = ["CLIENT_STORAGE_KEY_NAME", "HeadlessOAuth", "client_registrations", "oauth_for"]

_IN_MEMORY_WARNING = "Using in-memory token storage"
CLIENT_STORAGE_KEY_NAME = "MCP_CLIENT_STORAGE_KEY"  # in the target's secrets file, like the proxy's signing key
_CLIENT_INFO = "mcp-oauth-client-info"  # the collection FastMCP's OAuth keeps its registration in


class HeadlessOAuth(OAuth):
    """FastMCP's OAuth client provider, signing in as `account` without a browser.

    Example::

        from fastmcp import Client
        from obokit.clients.mcp_client import HeadlessOAuth

        auth = HeadlessOAuth(account="bruno@obokitdemo.onmicrosoft.com")
        async with Client("http://127.0.0.1:8000/mcp", auth=auth) as client:
            print(await client.call_tool("whoami"))

    Tokens live in memory unless `token_storage` is given: a headless client is a throwaway
    identity for one notebook or test run, so the persistence warning FastMCP raises for an
    in-memory store does not apply and is not shown.
    """

    def __init__(
        self,
        mcp_url: str | None = None,
        *,
        account: str,
        token_storage: AsyncKeyValue | None = None,
        client_name: str = "obokit headless client",
        timeout: float = 30.0,
        **kwargs: Any,
    ) -> None:
        self.account = account
        self._sign_in_timeout = timeout
        self._result: AuthorizationCodeResult | None = None
        self.last_callback_url: str | None = None
        self.last_sign_in_steps: list[str] = []  # the pages the headless browser went through
        # FastMCP warns for *any* MemoryStore, even one passed on purpose; the in-memory
        # choice is deliberate here, so only that one warning is silenced, in _bind.
        self._quiet_memory_store = token_storage is None or isinstance(token_storage, MemoryStore)
        super().__init__(
            mcp_url, client_name=client_name, token_storage=token_storage or MemoryStore(), **kwargs
        )

    def _bind(self, mcp_url: str) -> None:
        with warnings.catch_warnings():
            if self._quiet_memory_store:
                warnings.filterwarnings("ignore", message=_IN_MEMORY_WARNING, category=UserWarning)
            super()._bind(mcp_url)

    @property
    def redirect_uri(self) -> str:
        """The loopback redirect URI this client registered (nothing listens on it)."""
        return str(self.context.client_metadata.redirect_uris[0])

    async def redirect_handler(self, authorization_url: str) -> None:
        """Walk the sign-in from the MCP server's authorize URL to our redirect URI; keep code and state."""
        self._result = None
        async with httpx.AsyncClient(timeout=self._sign_in_timeout) as client:
            # The same pre-flight as FastMCP's OAuth: a 400 here means the server forgot our
            # registration (e.g. a restart with in-memory client storage); the parent class then
            # clears the cached client and registers again.
            first = await client.get(authorization_url)
            if first.status_code == 400:
                raise ClientNotFoundError("OAuth client not found - cached credentials may be stale")
            # Continue from where the authorize endpoint sent us (its consent page) with the same
            # cookie jar, so that the proxy sees exactly one authorization transaction per sign-in.
            start = urljoin(authorization_url, first.headers["location"]) if first.is_redirect else authorization_url
            self.last_sign_in_steps = [f"GET {first.url.copy_with(query=None)} -> {first.status_code}"]
            if start.startswith(self.redirect_uri):  # answered at once, e.g. an error redirect
                callback_url = start
            else:
                browser = HeadlessBrowser(account=self.account, client=client)
                try:
                    callback_url = await browser.sign_in(start, redirect_uri=self.redirect_uri)
                finally:
                    self.last_sign_in_steps += browser.steps
        self.last_callback_url = callback_url
        self._result = code_result(callback_url)

    async def callback_handler(self) -> AuthorizationCodeResult:
        """Return what `redirect_handler` caught; no local callback server is started."""
        if self._result is None:
            raise SignInError("callback_handler called before a headless sign-in completed")
        result, self._result = self._result, None
        return result


def client_registrations(target: Any, account: str, *, storage_dir: Path | None = None) -> AsyncKeyValue:
    """Token storage for FastMCP's `OAuth`: the registration on disk per (server URL, `account`); the tokens
    too on a tenant (one sign-in per user and server for the whole workbook), in memory on the emulator.

    The registrations live in `<state dir>/mcp-clients`, owner-only and encrypted with a key of the
    target's secrets file (`MCP_CLIENT_STORAGE_KEY`), in `obokit.server.persistent_client_store`.
    FastMCP keys what it stores by the server URL; each account gets collections of its own.
    """
    from obokit.server import persistent_client_store, stored_key  # heavy; imported when needed

    folder = Path(storage_dir) if storage_dir is not None else settings.state_dir()
    on_disk = PrefixCollectionsWrapper(
        persistent_client_store(folder, stored_key(target, CLIENT_STORAGE_KEY_NAME), folder="mcp-clients"), prefix=account)
    keep_tokens = not target.is_emulator
    return RoutingWrapper(routing_function=lambda collection: on_disk if keep_tokens or collection == _CLIENT_INFO else None,
                          default_store=MemoryStore())


def oauth_for(target: Any, *, account: str, **kwargs: Any) -> OAuth:
    """The MCP client's OAuth for `target` (an `obokit.tenant.target.Target`), registered once per server URL and account.

    Emulator: `HeadlessOAuth` signs in as the demo `account`. Tenant: FastMCP's own `OAuth`,
    which opens your browser (sign in as that account there) and catches the redirect locally.
    Unless `token_storage` is given, the registration is kept on disk (`client_registrations`).
    """
    kwargs.setdefault("token_storage", client_registrations(target, account))
    if target.is_emulator:
        return HeadlessOAuth(account=account, **kwargs)
    return OAuth(**kwargs)
