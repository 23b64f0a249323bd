"""FastMCP's AzureProvider end to end against the emulator: discovery, DCR, consent, sign-in, OBO, Graph.

Everything on the wire is real: FastMCP's OAuth proxy and its consent page, the MCP client's
dynamic client registration and PKCE, the emulator's sign-in page, fastmcp's `EntraOBOToken`
(azure-identity's async OnBehalfOfCredential) and an httpx call to Graph `/me`. Only the
browser is replaced, by `obokit.clients.mcp_client.HeadlessOAuth`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
from azure.core.exceptions import ClientAuthenticationError
from fastmcp import Client, FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.server.auth.providers.azure import AzureProvider, EntraOBOToken
from fastmcp.server.dependencies import get_access_token
from fastmcp.server.middleware import Middleware, MiddlewareContext
from key_value.aio.stores.memory import MemoryStore
from tenant_setup import Registration, admin_headers, grant_graph_consent, register_api, user_upn

from obokit.emulator import Emulator
from obokit.kernel import BackgroundServer, bind_loopback, serve_in_background
from obokit.clients.mcp_client import HeadlessOAuth

GRAPH_USER_READ = "https://graph.microsoft.com/User.Read"
OBO_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@dataclass
class McpServer:
    registration: Registration
    handle: BackgroundServer

    @property
    def url(self) -> str:
        return f"{self.handle.url}/mcp"


class EntraErrorsAsToolErrors(Middleware):
    """Tell the MCP client *why* an OBO exchange failed.

    fastmcp wraps a failing dependency as "Failed to resolve dependency 'graph_token'", so the
    client never learns that Entra answered AADSTS65001 (consent missing). This middleware finds
    azure-identity's ClientAuthenticationError in the cause chain and re-raises its AADSTS line.
    """

    async def on_call_tool(self, context: MiddlewareContext, call_next):  # type: ignore[override]
        try:
            return await call_next(context)
        except Exception as error:
            cause: BaseException | None = error
            while cause is not None and not isinstance(cause, ClientAuthenticationError):
                cause = cause.__cause__
            found = re.search(r"AADSTS\d+:[^\r\n']*", str(cause)) if cause is not None else None
            if found is None:
                raise
            raise ToolError(f"Microsoft Entra refused the on-behalf-of exchange: {found.group(0)}") from error


def build_server(emu: Emulator, reg: Registration, base_url: str, *, graph_scopes: list[str]) -> FastMCP:
    """The MCP server of the workbook in miniature: Entra sign-in through the proxy, two tools."""
    auth = AzureProvider(
        client_id=reg.app_id,
        client_secret=reg.secret,
        tenant_id=emu.tenant_id,
        base_url=base_url,
        required_scopes=["mcp-access"],
        base_authority=emu.authority_host,
        # Graph scopes the user consents to at sign-in (never sent at the code exchange,
        # which Entra limits to one resource: fastmcp keeps only this API's scopes there).
        additional_authorize_scopes=graph_scopes,
        allowed_client_redirect_uris=["http://localhost:*/callback"],
        jwt_signing_key=secrets.token_bytes(32),
        client_storage=MemoryStore(),
    )

    @asynccontextmanager
    async def close_obo_credentials(server: FastMCP) -> AsyncIterator[dict]:
        # fastmcp caches one azure-identity OnBehalfOfCredential (an aiohttp session) per user
        # token and never closes them; do it when the server stops.
        try:
            yield {}
        finally:
            await auth.close_obo_credentials()

    mcp = FastMCP(
        "obokit e2e", auth=auth, middleware=[EntraErrorsAsToolErrors()], lifespan=close_obo_credentials
    )

    @mcp.tool
    async def my_profile(graph_token: str = EntraOBOToken([GRAPH_USER_READ])) -> dict:
        """The signed-in user's Graph profile, fetched with an OBO token."""
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(f"{emu.graph_url}/me", headers={"Authorization": f"Bearer {graph_token}"})
            response.raise_for_status()
            me = response.json()
        return {"displayName": me["displayName"], "userPrincipalName": me["userPrincipalName"]}

    @mcp.tool
    async def whoami() -> dict:
        """Claims of the Entra token the proxy validated for this request."""
        token = get_access_token()
        assert token is not None
        keys = ("aud", "iss", "scp", "tid", "oid", "preferred_username", "azp", "ver")
        return {k: token.claims[k] for k in keys if k in token.claims} | {"client_id": token.client_id}

    return mcp


def start_server(emu: Emulator, name: str, *, consent: bool, graph_scopes: list[str]) -> McpServer:
    sock = bind_loopback()
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    reg = register_api(emu, name=name, redirect_uris=[f"{base_url}/auth/callback"])
    if consent:
        grant_graph_consent(emu, reg)
    app = build_server(emu, reg, base_url, graph_scopes=graph_scopes).http_app()
    return McpServer(reg, serve_in_background({"mcp": app}, name=name, sockets={"mcp": sock}))


@pytest.fixture(scope="module")
def server(emulator: Emulator) -> Iterator[McpServer]:
    srv = start_server(emulator, "fastmcp-e2e", consent=True, graph_scopes=["User.Read"])
    yield srv
    srv.handle.stop()


async def call(url: str, account: str, tool: str) -> tuple[HeadlessOAuth, dict]:
    auth = HeadlessOAuth(account=account)
    async with Client(url, auth=auth) as client:
        result = await client.call_tool(tool)
    return auth, result.structured_content or {}


async def test_unauthenticated_request_gets_a_challenge_and_metadata(server: McpServer) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(server.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert response.status_code == 401
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith("Bearer ") and "resource_metadata=" in challenge
        metadata_url = challenge.split('resource_metadata="', 1)[1].split('"', 1)[0]
        assert metadata_url == f"{server.handle.url}/.well-known/oauth-protected-resource/mcp"
        prm = (await http.get(metadata_url)).raise_for_status().json()
        assert prm["resource"] == server.url
        assert prm["authorization_servers"] == [f"{server.handle.url}/"]
        assert "mcp-access" in prm["scopes_supported"]
        asm = (await http.get(f"{server.handle.url}/.well-known/oauth-authorization-server")).raise_for_status().json()
        assert asm["registration_endpoint"] == f"{server.handle.url}/register"
        assert asm["code_challenge_methods_supported"] == ["S256"]


async def test_bruno_signs_in_and_the_obo_tool_returns_his_profile(server: McpServer, emulator: Emulator) -> None:
    auth, profile = await call(server.url, user_upn("bruno"), "my_profile")
    assert profile == {"displayName": "Bruno Diaz", "userPrincipalName": user_upn("bruno")}
    # The client went through DCR at the proxy: its client id is the proxy's, not the Entra app's.
    client_info = auth.context.client_info
    assert client_info is not None and client_info.client_id != server.registration.app_id
    assert auth.last_callback_url is not None and auth.last_callback_url.startswith(auth.redirect_uri)
    # The headless browser went the way a person would: proxy authorize -> FastMCP consent page
    # (approved) -> Entra sign-in page (account picked) -> FastMCP's /auth/callback.
    base, tenant_authorize = server.handle.url, f"{emulator.tenant_authority}/oauth2/v2.0/authorize"
    assert [step.rsplit(" -> ", 1)[0] for step in auth.last_sign_in_steps] == [
        f"GET {base}/authorize",
        f"GET {base}/consent",
        f"POST {base}/consent",
        f"GET {tenant_authorize}",
        f"POST {tenant_authorize}",
        f"GET {base}/auth/callback",
    ]


async def test_chen_gets_chen_and_the_token_is_for_this_api(server: McpServer, emulator: Emulator) -> None:
    _, profile = await call(server.url, user_upn("chen"), "my_profile")
    assert profile == {"displayName": "Chen Li", "userPrincipalName": user_upn("chen")}
    _, claims = await call(server.url, user_upn("chen"), "whoami")
    assert claims["preferred_username"] == user_upn("chen")
    assert claims["aud"] == server.registration.app_id
    assert claims["iss"] == f"https://{emulator.authority_host}/{emulator.tenant_id}/v2.0"
    assert claims["scp"] == "mcp-access"


def obo_count(emu: Emulator, user_id: str) -> int:
    rows = emu.stats()["obo_exchanges"]
    return sum(r["count"] for r in rows if r["user"] == user_id and r["scope"] == GRAPH_USER_READ)


async def test_one_obo_exchange_per_sign_in_then_the_cached_token(server: McpServer, emulator: Emulator) -> None:
    obo_before = emulator.stats()["token_requests"].get(OBO_GRANT, 0)
    async with Client(server.url, auth=HeadlessOAuth(account=user_upn("bruno"))) as client:
        oid = (await client.call_tool("whoami")).structured_content["oid"]
        before = obo_count(emulator, oid)
        for _ in range(3):
            profile = (await client.call_tool("my_profile")).structured_content
            assert profile["displayName"] == "Bruno Diaz"
    # A fresh sign-in is a new user assertion, hence one jwt-bearer (OBO) exchange at the
    # emulator; the next calls reuse the OnBehalfOfCredential's cached Graph token.
    assert obo_count(emulator, oid) - before == 1
    assert emulator.stats()["token_requests"].get(OBO_GRANT, 0) - obo_before == 1


async def test_missing_graph_consent_surfaces_as_a_tool_error(emulator: Emulator) -> None:
    # A second app, never granted Graph consent, whose sign-in does not ask for Graph scopes
    # either: the user consents only to the MCP API, so the OBO exchange for Graph must fail.
    srv = start_server(emulator, "fastmcp-e2e-no-consent", consent=False, graph_scopes=[])
    try:
        with pytest.raises(ToolError) as failure:
            await call(srv.url, user_upn("bruno"), "my_profile")
    finally:
        srv.handle.stop()
    text = str(failure.value)
    assert "AADSTS65001" in text and "consented" in text


async def test_user_consent_at_sign_in_is_enough_for_user_read(emulator: Emulator) -> None:
    # No admin consent, but the sign-in asks for User.Read (additional_authorize_scopes): a user
    # may consent to that scope, the sign-in records a Principal grant, and OBO then succeeds.
    srv = start_server(emulator, "fastmcp-e2e-user-consent", consent=False, graph_scopes=["User.Read"])
    try:
        _, profile = await call(srv.url, user_upn("chen"), "my_profile")
    finally:
        srv.handle.stop()
    assert profile["userPrincipalName"] == user_upn("chen")
    async with httpx.AsyncClient(base_url=emulator.graph_url, headers=admin_headers(emulator)) as graph:
        grants = (await graph.get("/oauth2PermissionGrants")).raise_for_status().json()["value"]
    mine = [g for g in grants if g["clientId"] == srv.registration.sp_id]
    assert [(g["consentType"], g["scope"].split()) for g in mine] == [("Principal", ["User.Read"])]
