"""The official MCP Python SDK's client (`mcp`) signing in through the workbook server's OAuth proxy.

Nobody in this project wrote that client: the SDK's `OAuthClientProvider` does the discovery
(401 -> protected resource metadata -> authorization server metadata), the dynamic client
registration, PKCE, the code exchange and the refresh itself. An application gives it three
things, and this module gives it ours:

* a `TokenStorage`: `TokenFile` keeps the registration and the tokens in an owner-only JSON
  file (or in memory), so a second session reuses both;
* a redirect handler (open the user's browser at the authorization URL) and a callback handler
  (catch the redirect back): `HeadlessUserAgent` plays the user with `obokit.clients.headless.HeadlessBrowser`,
  which walks FastMCP's consent page and the emulator's account picker and stops at the redirect.

Example::

    from obokit.clients.sdk_client import HeadlessUserAgent, TokenFile, connect, sdk_oauth

    agent = HeadlessUserAgent(account="bruno@obokitdemo.onmicrosoft.com")
    auth = sdk_oauth("http://localhost:8000/mcp", agent=agent, storage=TokenFile(".obokit/sdk-client.json"))
    async with connect("http://localhost:8000/mcp", auth) as client:
        result = await client.call_tool("whoami", {})
        print(result.structured_content["upn"])
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from obokit.files import write_private
from obokit.clients.headless import LOOPBACK_REDIRECT_URI, HeadlessBrowser, SignInError, code_result

__all__ = ["DEFAULT_REDIRECT_URI", "HeadlessUserAgent", "TokenFile", "connect", "sdk_oauth"]

DEFAULT_REDIRECT_URI = LOOPBACK_REDIRECT_URI  # a desktop client's loopback callback; nothing listens on it


class TokenFile:
    """The SDK's `TokenStorage`: the DCR registration and the tokens, in an owner-only JSON file.

    `TokenFile(None)` keeps them in memory. The file holds a client secret and tokens: it is
    written 0600 and nothing here prints its content.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._memory: dict[str, Any] = {}

    def _read(self) -> dict[str, Any]:
        if self.path is None:
            return dict(self._memory)
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def _save(self, data: dict[str, Any]) -> None:
        if self.path is None:
            self._memory = data
            return
        write_private(self.path, json.dumps(data).encode())

    def _update(self, key: str, value: Any) -> None:
        self._save({**self._read(), key: value})

    async def get_tokens(self) -> OAuthToken | None:
        stored = (await anyio.to_thread.run_sync(self._read)).get("tokens")
        return OAuthToken.model_validate(stored) if stored else None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        await anyio.to_thread.run_sync(self._update, "tokens", tokens.model_dump(mode="json", exclude_none=True))

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        stored = (await anyio.to_thread.run_sync(self._read)).get("client_info")
        return OAuthClientInformationFull.model_validate(stored) if stored else None

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        info = client_info.model_dump(mode="json", exclude_none=True)
        await anyio.to_thread.run_sync(self._update, "client_info", info)

    def forget_tokens(self) -> None:
        """Drop the tokens but keep the registration (the next session signs in again)."""
        self._save({k: v for k, v in self._read().items() if k != "tokens"})

    def __repr__(self) -> str:
        return f"TokenFile({str(self.path) if self.path else 'in memory'})"


class HeadlessUserAgent:
    """The user's half of the SDK's authorization-code flow, played headlessly as `account`.

    `open` is the SDK's `redirect_handler` (the browser opens the authorization URL; here the
    headless browser consents, picks the account and stops at the redirect to `redirect_uri`);
    `callback` is its `callback_handler` (hands back the code, the state and the issuer).
    """

    def __init__(self, account: str, *, redirect_uri: str = DEFAULT_REDIRECT_URI) -> None:
        self.account = account
        self.redirect_uri = redirect_uri
        self.sign_ins = 0  # how many times the SDK sent the user to sign in
        self.steps: list[str] = []  # the pages of the last sign-in
        self._callback_url: str | None = None

    async def open(self, authorization_url: str) -> None:
        browser = HeadlessBrowser(account=self.account)
        self._callback_url = None
        try:
            self._callback_url = await browser.sign_in(authorization_url, redirect_uri=self.redirect_uri)
        finally:
            self.steps = browser.steps
            self.sign_ins += 1

    async def callback(self) -> AuthorizationCodeResult:
        if self._callback_url is None:
            raise SignInError("callback requested before a sign-in reached the redirect URI")
        callback_url, self._callback_url = self._callback_url, None
        return code_result(callback_url)


def sdk_oauth(mcp_url: str, *, agent: HeadlessUserAgent, storage: TokenFile | None = None,
              client_name: str = "obokit mcp-sdk client") -> OAuthClientProvider:
    """The SDK's own `OAuthClientProvider` for `mcp_url`, registering `agent.redirect_uri` through DCR."""
    metadata = OAuthClientMetadata(
        client_name=client_name,
        redirect_uris=[agent.redirect_uri],
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
    )
    return OAuthClientProvider(
        server_url=mcp_url,
        client_metadata=metadata,
        storage=storage if storage is not None else TokenFile(None),
        redirect_handler=agent.open,
        callback_handler=agent.callback,
    )


@asynccontextmanager
async def connect(mcp_url: str, auth: OAuthClientProvider, **client_options: Any) -> AsyncIterator[Client]:
    """An SDK `Client` session over streamable HTTP whose requests carry `auth` (an httpx2 auth flow)."""
    async with httpx2.AsyncClient(auth=auth, timeout=httpx2.Timeout(30, read=300)) as http:
        async with Client(streamable_http_client(mcp_url, http_client=http), **client_options) as client:
            yield client
