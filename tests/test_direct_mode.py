"""The workbook server in direct mode: a pure resource server, Entra as the clients' authorization server.

Real FastMCP (`RemoteAuthProvider`), MSAL and the official mcp SDK / FastMCP clients against the session emulator:
the protected resource metadata names Entra; a pre-authorized public client and VS Code's first-party app sign in
at Entra with MSAL and send Entra's token; the OBO tools and the tier-1 role gate work as behind the proxy; a client
the server does not trust is refused; a spec-following MCP client that sends RFC 8707 `resource` (the server's URL)
is refused by Entra (AADSTS9010010), because an Application ID URI cannot be a localhost URL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import msal
import pytest
from fastmcp import Client
from fastmcp.client.auth import BearerAuth
from fastmcp.exceptions import ToolError
from server_fixtures import make_target, register_workbook_server, registrations
from tenant_setup import Registration, admin_headers, run_async, user_upn

from obokit.clients.headless import HeadlessBrowser
from obokit.clients.mcp_client import HeadlessOAuth
from obokit.emulator import Emulator, group_id
from obokit.server import RunningServer, start_workbook_server
from obokit.server.direct import VS_CODE_CLIENT_ID

pytestmark = pytest.mark.emulator


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("direct")


@pytest.fixture(scope="module")
def registration(emulator: Emulator) -> Registration:
    return register_workbook_server(emulator, "direct mode server", consent=True)


def public_client(emu: Emulator, name: str) -> str:
    """A public client app (loopback redirect) with a service principal; its app id."""
    with httpx.Client(base_url=emu.graph_url, headers=admin_headers(emu)) as graph:
        app = graph.post("/applications", json={"displayName": name, "isFallbackPublicClient": True,
                                                "publicClient": {"redirectUris": ["http://localhost"]}}).raise_for_status().json()
        graph.post("/servicePrincipals", json={"appId": app["appId"]}).raise_for_status()
    return app["appId"]


@pytest.fixture(scope="module")
def clients(emulator: Emulator, registration: Registration) -> dict[str, str]:
    """The workbook's own client and VS Code, pre-authorized on the server's scope; a third client that is not."""
    own, stranger = public_client(emulator, "direct mode client"), public_client(emulator, "direct mode stranger")
    with httpx.Client(base_url=emulator.graph_url, headers=admin_headers(emulator)) as graph:
        app = graph.get(f"/applications/{registration.object_id}").raise_for_status().json()
        scope_ids = [s["id"] for s in app["api"]["oauth2PermissionScopes"]]
        pre = [{"appId": client, "delegatedPermissionIds": scope_ids} for client in (own, VS_CODE_CLIENT_ID)]
        graph.patch(f"/applications/{registration.object_id}",
                    json={"api": {**app["api"], "preAuthorizedApplications": pre}}).raise_for_status()
    return {"own": own, "vs code": VS_CODE_CLIENT_ID, "stranger": stranger}


@pytest.fixture(scope="module")
def server(emulator: Emulator, folder: Path, registration: Registration, clients: dict[str, str]) -> Iterator[RunningServer]:
    running = start_workbook_server(make_target(emulator, folder), name="direct", port=0, storage_dir=folder / "direct",
                                    registration=registrations(registration), mode="direct",
                                    trusted_callers=[clients["own"], clients["vs code"]])
    yield running
    running.stop()


def entra_token(emu: Emulator, client_id: str, scope: str, person: str) -> str:
    """What a pre-registered client does: MSAL's auth code flow at Entra (no `resource`), the user signs in."""
    app = msal.PublicClientApplication(client_id, authority=emu.tenant_authority, instance_discovery=False)
    redirect = "http://localhost:8765"  # a loopback redirect on any port; never bound: the browser stops there
    flow = app.initiate_auth_code_flow([scope], redirect_uri=redirect, login_hint=user_upn(person),
                                       response_mode="form_post")
    callback = run_async(HeadlessBrowser(account=user_upn(person)).sign_in(flow["auth_uri"], redirect_uri=redirect))
    result = app.acquire_token_by_auth_code_flow(flow, dict(parse_qsl(urlsplit(callback).query)))
    assert "access_token" in result, result.get("error_description")
    return result["access_token"]


def test_protected_resource_metadata_names_entra(emulator: Emulator, server: RunningServer,
                                                 registration: Registration) -> None:
    challenge = httpx.post(server.mcp_url, json={})
    assert challenge.status_code == 401 and "resource_metadata=" in challenge.headers["www-authenticate"]
    prm = httpx.get(f"{server.url}/.well-known/oauth-protected-resource/mcp").json()
    assert prm["authorization_servers"] == [f"{emulator.tenant_authority}/v2.0"]
    assert prm["scopes_supported"] == [f"api://{registration.app_id}/mcp-access"]
    assert prm["resource"] == server.mcp_url
    assert httpx.get(f"{server.url}/register").status_code == 404, "no dynamic client registration: no proxy"


@pytest.mark.parametrize("client", ["own", "vs code"])
async def test_a_pre_authorized_client_calls_the_obo_tools_with_its_entra_token(
        emulator: Emulator, server: RunningServer, registration: Registration, clients: dict[str, str],
        client: str) -> None:
    token = entra_token(emulator, clients[client], registration.scope, "bruno")
    async with Client(server.mcp_url, auth=BearerAuth(token)) as mcp:
        me = (await mcp.call_tool("whoami")).data
        member = (await mcp.call_tool("check_group_membership", {"group_id": group_id("finance")})).data
        tools = {t.name for t in await mcp.list_tools()}
    assert me["upn"] == user_upn("bruno") and member["member"] is True
    assert "approve_expense" in tools, "bruno holds Task.Write: the role gate shows the write tool"


async def test_the_role_gate_hides_the_write_tool_from_a_reader(emulator: Emulator, server: RunningServer,
                                                                 registration: Registration,
                                                                 clients: dict[str, str]) -> None:
    token = entra_token(emulator, clients["own"], registration.scope, "chen")
    async with Client(server.mcp_url, auth=BearerAuth(token)) as mcp:
        tools = {t.name for t in await mcp.list_tools()}
        with pytest.raises(ToolError, match="requires the app role Task.Write"):
            await mcp.call_tool("approve_expense", {"expense_id": "EXP-000000"})
    assert "approve_expense" not in tools and "add_expense" in tools


def test_a_client_the_server_does_not_trust_is_refused(emulator: Emulator, server: RunningServer,
                                                       registration: Registration, clients: dict[str, str]) -> None:
    token = entra_token(emulator, clients["stranger"], registration.scope, "bruno")  # Entra issues it (user consents)
    answer = httpx.post(server.mcp_url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"},
                        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert answer.status_code == 401


async def test_a_spec_following_mcp_client_cannot_sign_in_on_localhost(emulator: Emulator, server: RunningServer,
                                                                       registration: Registration,
                                                                       clients: dict[str, str]) -> None:
    """FastMCP's OAuth client sends RFC 8707 `resource` = the server's URL; Entra answers AADSTS9010010 (no
    Application ID URI can be http://localhost:…), which FastMCP's pre-flight reads as a rejected client."""
    auth = HeadlessOAuth(account=user_upn("bruno"), client_id=clients["own"], scopes=[registration.scope])
    with pytest.raises(RuntimeError, match="rejected the static client credentials"):
        async with Client(server.mcp_url, auth=auth):
            pass
    authorize = httpx.get(f"{emulator.tenant_authority}/oauth2/v2.0/authorize", follow_redirects=False, params={
        "client_id": clients["own"], "response_type": "code", "redirect_uri": "http://localhost:8765",
        "scope": registration.scope, "resource": server.mcp_url, "code_challenge": "x" * 43,
        "code_challenge_method": "S256"})
    assert "AADSTS9010010" in dict(parse_qsl(urlsplit(authorize.headers["location"]).query))["error_description"]


async def test_a_restart_breaks_nothing_the_server_stores_nothing(emulator: Emulator, folder: Path, server: RunningServer,
                                                                  registration: Registration,
                                                                  clients: dict[str, str]) -> None:
    token = entra_token(emulator, clients["own"], registration.scope, "bruno")
    server.stop()
    again = start_workbook_server(make_target(emulator, folder), name="direct", port=server.port,
                                  storage_dir=folder / "direct", registration=registrations(registration),
                                  mode="direct", trusted_callers=[clients["own"]])
    try:
        async with Client(again.mcp_url, auth=BearerAuth(token)) as mcp:
            assert (await mcp.call_tool("whoami")).data["upn"] == user_upn("bruno")
    finally:
        again.stop()
    assert not (folder / "direct" / "oauth-proxy").exists(), "no OAuth proxy store in direct mode"


def test_direct_mode_needs_its_trusted_callers(emulator: Emulator, folder: Path, registration: Registration) -> None:
    with pytest.raises(ValueError, match="trusted_callers"):
        start_workbook_server(make_target(emulator, folder), name="direct-none", port=0, storage_dir=folder / "none",
                              registration=registrations(registration), mode="direct")
