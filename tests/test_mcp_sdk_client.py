"""A second MCP client nobody here wrote: the official `mcp` SDK client against the workbook server.

The SDK's own `OAuthClientProvider` (discovery, dynamic client registration, PKCE, code
exchange) signs in through FastMCP's OAuth proxy (`AzureProvider`) of `obokit.server`, which
signs in at the emulator; the OBO tools then call the emulator's Graph. Only the user's browser
is replaced, by `obokit.clients.headless` (through `obokit.clients.sdk_client.HeadlessUserAgent`).

The redirect URI tests register, through the proxy's DCR endpoint, exactly what VS Code and the
MCP Inspector send, and check that unlisted redirect URIs are refused.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from server_fixtures import FINANCE_SITE, register_workbook_server, serve
from tenant_setup import Registration, user_upn

from obokit.emulator import Emulator, group_id
from obokit.clients.headless import SignInError, code_result
from obokit.clients.sdk_client import HeadlessUserAgent, TokenFile, connect, sdk_oauth
from obokit.server import RunningServer

# What the two documented clients send to POST /register (VS Code: src/vs/base/common/oauth.ts,
# fetchDynamicRegistration; MCP Inspector: client/src/lib/auth.ts, InspectorOAuthClientProvider).
VSCODE = {
    "client_name": "Visual Studio Code",
    "client_uri": "https://code.visualstudio.com",
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "redirect_uris": ["https://insiders.vscode.dev/redirect", "https://vscode.dev/redirect",
                      "http://127.0.0.1/", "http://127.0.0.1:33418/"],
    "token_endpoint_auth_method": "none",
    "application_type": "native",
}
INSPECTOR = {
    "client_name": "MCP Inspector",
    "client_uri": "https://github.com/modelcontextprotocol/inspector",
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "redirect_uris": ["http://localhost:6274/oauth/callback", "http://localhost:6274/oauth/callback/debug"],
    "token_endpoint_auth_method": "none",
}


@pytest.fixture(scope="module")
def registration(emulator: Emulator) -> Registration:
    return register_workbook_server(emulator, "mcp sdk client test", consent=True)


@pytest.fixture(scope="module")
def server(emulator: Emulator, registration: Registration, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from serve(emulator, tmp_path_factory.mktemp("sdk-client"), registration, "sdk-client")


async def call_tools(server: RunningServer, agent: HeadlessUserAgent, storage: TokenFile | None = None) -> dict:
    """One SDK session: whoami, the group check and the site check; returns their structured results."""
    auth = sdk_oauth(server.mcp_url, agent=agent, storage=storage)
    async with connect(server.mcp_url, auth) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        results = {
            "whoami": await client.call_tool("whoami", {}),
            "group": await client.call_tool("check_group_membership", {"group_id": group_id("finance")}),
            "site": await client.call_tool("check_site_access", {"site": FINANCE_SITE}),
        }
    assert not any(result.is_error for result in results.values()), results
    return {"tools": tools, "client_id": auth.context.client_info.client_id if auth.context.client_info else None,
            **{name: result.structured_content for name, result in results.items()}}


async def test_sdk_client_signs_in_as_bruno_and_the_obo_tools_answer_for_him(
    server: RunningServer, registration: Registration, emulator: Emulator
) -> None:
    agent = HeadlessUserAgent(account=user_upn("bruno"))
    got = await call_tools(server, agent)
    assert {"whoami", "check_group_membership", "check_site_access"} <= got["tools"]
    assert got["whoami"]["upn"] == user_upn("bruno") and got["whoami"]["name"] == "Bruno Diaz"
    assert got["whoami"]["scp"] == "mcp-access" and "Task.Read" in got["whoami"]["roles"]
    assert got["group"] == {"group_id": group_id("finance"), "member": True, "group": "Finance"}
    assert got["site"]["access"] == "granted"
    # The SDK registered at the proxy (DCR): its client id is the proxy's, not the Entra app's.
    assert got["client_id"] and got["client_id"] != registration.app_id
    # One sign-in, through the pages a person sees: proxy authorize, FastMCP consent, Entra's picker, proxy callback.
    authorize = f"{emulator.tenant_authority}/oauth2/v2.0/authorize"
    assert agent.sign_ins == 1
    assert [step.rsplit(" -> ", 1)[0] for step in agent.steps] == [
        f"GET {server.url}/authorize", f"GET {server.url}/consent", f"POST {server.url}/consent",
        f"GET {authorize}", f"POST {authorize}", f"GET {server.url}/auth/callback",
    ]
    calls = [(entry.upn, entry.tool) for entry in server.audit_log.entries]
    assert (user_upn("bruno"), "check_site_access") in calls


async def test_sdk_client_as_chen_gets_chens_answers(server: RunningServer) -> None:
    got = await call_tools(server, HeadlessUserAgent(account=user_upn("chen")))
    assert got["whoami"]["upn"] == user_upn("chen")
    assert got["group"]["member"] is False
    assert got["site"]["access"] == "no access"


async def test_registration_and_tokens_are_reused_across_sessions(server: RunningServer, tmp_path: Path) -> None:
    storage = TokenFile(tmp_path / "sdk-client.json")
    first = HeadlessUserAgent(account=user_upn("bruno"))
    session1 = await call_tools(server, first, storage)
    assert first.sign_ins == 1
    assert stat.S_IMODE(storage.path.stat().st_mode) == 0o600

    # A new provider over the same storage: the stored token is sent at once, no DCR, no sign-in.
    second = HeadlessUserAgent(account=user_upn("bruno"))
    session2 = await call_tools(server, second, storage)
    assert second.sign_ins == 0
    assert session2["client_id"] == session1["client_id"]
    assert session2["whoami"]["upn"] == user_upn("bruno")

    # Without tokens the user signs in again, but under the same registration (no second DCR).
    storage.forget_tokens()
    third = HeadlessUserAgent(account=user_upn("bruno"))
    session3 = await call_tools(server, third, storage)
    assert third.sign_ins == 1
    assert session3["client_id"] == session1["client_id"]
    assert (await storage.get_client_info()).client_id == session1["client_id"]


# -- which redirect URIs the proxy's dynamic client registration accepts ---------------------
@pytest.mark.parametrize(
    "body",
    [
        VSCODE,
        INSPECTOR,
        INSPECTOR | {"redirect_uris": ["http://127.0.0.1:6274/oauth/callback", "http://127.0.0.1:6274/oauth/callback/debug"]},
        {"client_name": "mcp sdk / FastMCP client", "redirect_uris": ["http://localhost:51234/callback"]},
    ],
    ids=["vscode", "inspector", "inspector-127.0.0.1", "loopback-callback"],
)
def test_documented_clients_can_register(server: RunningServer, body: dict) -> None:
    response = httpx.post(f"{server.url}/register", json=body, timeout=10)
    assert response.status_code == 201, response.text
    assert response.json()["redirect_uris"] == body["redirect_uris"]


@pytest.mark.parametrize(
    "redirect_uris",
    [
        ["https://evil.example/cb"],
        [*VSCODE["redirect_uris"], "https://evil.example/cb"],  # one bad URI spoils the registration
        ["http://localhost:6274/elsewhere"],
        ["https://vscode.dev.evil.example/redirect"],
    ],
    ids=["evil", "vscode-plus-evil", "localhost-other-path", "lookalike-host"],
)
def test_unlisted_redirect_uris_are_refused(server: RunningServer, redirect_uris: list[str]) -> None:
    response = httpx.post(f"{server.url}/register", json={"client_name": "x", "redirect_uris": redirect_uris}, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_redirect_uri"


def authorize_status(server: RunningServer, client_id: str, redirect_uri: str) -> httpx.Response:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "state": "s",
             "code_challenge": challenge, "code_challenge_method": "S256"}
    return httpx.get(f"{server.url}/authorize?{urlencode(query)}", timeout=10)


def test_vscode_may_sign_in_from_another_loopback_port(server: RunningServer) -> None:
    # VS Code falls back to a random port when 33418 is taken (RFC 8252: any port on loopback).
    client_id = httpx.post(f"{server.url}/register", json=VSCODE, timeout=10).json()["client_id"]
    moved = authorize_status(server, client_id, "http://127.0.0.1:59656/")
    assert moved.status_code == 302 and "/consent" in moved.headers["location"]
    assert authorize_status(server, client_id, "https://evil.example/cb").status_code == 400


def test_code_result_reads_the_callback_or_names_the_error() -> None:
    result = code_result("http://127.0.0.1:8765/callback?code=abc&state=s1&iss=https%3A%2F%2Fissuer.test")
    assert (result.code, result.state, result.iss) == ("abc", "s1", "https://issuer.test")
    with pytest.raises(SignInError, match="sign-in returned no code: access_denied: nope"):
        code_result("http://127.0.0.1:8765/callback?error=access_denied&error_description=nope&state=s1")
