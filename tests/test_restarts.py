"""Restarts lose nothing: the emulator's tenant and signing keys, the MCP server's OAuth proxy state.

* The emulator, stopped and started again on the same state folder (and ports), still lists what
  was created before, accepts the access tokens it issued before (same signing keys, same issuer),
  the client secret added before, and the refresh token issued before.
* The workbook's MCP server, stopped and started again on the same port and storage folder, still
  knows the MCP client that registered through its OAuth proxy (dynamic client registration) and
  the tokens it issued: the same `fastmcp.Client` keeps calling OBO tools without a second
  `POST /register` and without signing in again. A control run with FastMCP's in-memory store
  shows the counter would catch it: there the client must register again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import msal
import pytest
from fastmcp import Client
from key_value.aio.stores.memory import MemoryStore
from server_fixtures import make_target, register_workbook_server, registrations
from tenant_setup import admin_headers, msal_sign_in, register_api, user_upn

from obokit.emulator import Emulator, group_id
from obokit.kernel import BackgroundServer, bind_loopback, serve_in_background
from obokit.clients.mcp_client import HeadlessOAuth
from obokit.tenant.provisioning import Registrations
from obokit.server import build_server, workbook_auth

pytestmark = [pytest.mark.emulator]

REDIRECT = "http://localhost/callback"


# -- the emulator ---------------------------------------------------------------------------
def jwks(emu: Emulator) -> dict[str, Any]:
    return httpx.get(f"{emu.tenant_authority}/discovery/v2.0/keys").raise_for_status().json()


def verify(token: str, keys: dict[str, Any], *, audience: str, issuer: str) -> dict[str, Any]:
    """Validate a JWT as a resource server does: signature by `kid` from the JWKS, aud, iss, exp."""
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in keys["keys"] if k["kid"] == kid)
    return jwt.decode(token, jwt.PyJWK(key).key, algorithms=["RS256"], audience=audience, issuer=issuer)


def test_emulator_restart_keeps_state_keys_secrets_and_refresh_tokens(tmp_path: Path) -> None:
    first = Emulator(tmp_path).start()
    try:
        reg = register_api(first, name="restart survivor", redirect_uris=[REDIRECT])
        admin = admin_headers(first)  # an app-only Graph token issued before the restart
        app = msal.ConfidentialClientApplication(reg.app_id, client_credential=reg.secret,
                                                 authority=first.tenant_authority, instance_discovery=False)
        signed_in = msal_sign_in(app, reg.scope, user_upn("bruno"), REDIRECT)
        keys_before, issuer = jwks(first), f"{first.tenant_authority}/v2.0"
        ports = {name: int(url.rsplit(":", 1)[1]) for name, url in first.server.urls.items()}
    finally:
        first.close()

    second = Emulator(tmp_path).start(identity_port=ports["identity"], graph_port=ports["graph"])
    try:
        keys_after = jwks(second)
        assert [k["kid"] for k in keys_after["keys"]] == [k["kid"] for k in keys_before["keys"]]
        # the token issued before the restart still validates, by the JWKS published after it
        claims = verify(signed_in["access_token"], keys_after, audience=reg.app_id, issuer=issuer)
        assert claims["preferred_username"] == user_upn("bruno") and claims["scp"] == "mcp-access"
        # ... and Graph accepts the admin token issued before the restart; the app is still there
        apps = httpx.get(f"{second.graph_url}/applications", headers=admin).raise_for_status().json()["value"]
        assert [(a["appId"], a["displayName"], len(a["passwordCredentials"])) for a in apps] == [
            (reg.app_id, "restart survivor", 1)]
        sp = httpx.get(f"{second.graph_url}/servicePrincipals(appId='{reg.app_id}')", headers=admin)
        assert sp.status_code == 200 and sp.json()["id"] == reg.sp_id
        # the secret added before the restart still authenticates, and the refresh token still redeems
        again = msal.ConfidentialClientApplication(reg.app_id, client_credential=reg.secret,
                                                   authority=second.tenant_authority, instance_discovery=False)
        refreshed = again.acquire_token_by_refresh_token(signed_in["refresh_token"], [reg.scope])
        assert "access_token" in refreshed, refreshed.get("error_description")
        assert verify(refreshed["access_token"], keys_after, audience=reg.app_id, issuer=issuer)["oid"] == claims["oid"]
    finally:
        second.close()


# -- the MCP server -------------------------------------------------------------------------
@dataclass
class RequestLog:
    """An ASGI wrapper that notes every HTTP request the MCP server receives (method and path)."""

    seen: list[str] = field(default_factory=list)

    def wrap(self, app: Any) -> Any:
        async def recorded(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                self.seen.append(f"{scope['method']} {scope['path']}")
            await app(scope, receive, send)

        return recorded

    def count(self, request: str) -> int:
        return self.seen.count(request)


@pytest.fixture(scope="module")
def registration(emulator: Emulator) -> Registrations:
    return registrations(register_workbook_server(emulator, "restart test server", consent=True))


def serve_workbook(emu: Emulator, folder: Path, registration: Registrations, log: RequestLog, *, port: int = 0,
                   in_memory: bool = False) -> BackgroundServer:
    """The workbook's server (obokit.server.build_server), served with a request log in front."""
    sock = bind_loopback("127.0.0.1", port)
    base_url = f"http://localhost:{sock.getsockname()[1]}"
    target, storage = make_target(emu, folder), folder / "server"
    auth = workbook_auth(target, registration, base_url=base_url, storage_dir=storage,
                         client_storage=MemoryStore() if in_memory else None)
    mcp = build_server(target, registration, base_url=base_url, storage_dir=storage, auth=auth)
    return serve_in_background({"mcp": log.wrap(mcp.http_app())}, name=f"restart-{folder.name}", sockets={"mcp": sock})


async def use_tools(url: str, auth: HeadlessOAuth) -> tuple[str, bool]:
    async with Client(f"{url}/mcp", auth=auth) as client:
        me = (await client.call_tool("whoami")).data
        member = (await client.call_tool("check_group_membership", {"group_id": group_id("finance")})).data
    return me["upn"], member["member"]


async def restart_once(emu: Emulator, folder: Path, registration: Registrations, *, in_memory: bool) -> tuple[RequestLog, list, HeadlessOAuth]:
    """Sign in and call tools, restart the server on the same port, call tools again with the same client."""
    log, auth, answers = RequestLog(), HeadlessOAuth(account=user_upn("bruno")), []
    server: BackgroundServer | None = serve_workbook(emu, folder, registration, log, in_memory=in_memory)
    port = int(server.url.rsplit(":", 1)[1])
    url = f"http://localhost:{port}"  # the server's base URL (what its OAuth metadata names)
    try:
        answers.append(await use_tools(url, auth))
        server.stop()
        server = serve_workbook(emu, folder, registration, log, port=port, in_memory=in_memory)
        answers.append(await use_tools(url, auth))
    finally:
        server.stop()
    return log, answers, auth


def registered_clients(folder: Path) -> list[Path]:
    """The DCR client records in the server's persistent (encrypted, file-backed) store."""
    return sorted((folder / "server" / "oauth-proxy").glob("*oauth_proxy_clients*/*.json"))


async def test_server_restart_keeps_the_client_registration_and_its_tokens(
        emulator: Emulator, registration: Registrations, tmp_path: Path) -> None:
    log, answers, auth = await restart_once(emulator, tmp_path, registration, in_memory=False)
    assert answers == [(user_upn("bruno"), True)] * 2
    assert log.count("POST /register") == 1, f"the client registered again after the restart: {log.seen}"
    assert log.count("GET /authorize") == 1 and log.count("POST /token") == 1, "no second sign-in"
    after_restart = log.seen[log.seen.index("POST /token") + 1:]
    assert after_restart and all(line.endswith(" /mcp") for line in after_restart), after_restart
    assert auth.context.client_info is not None
    clients = registered_clients(tmp_path)
    assert len(clients) == 1, [p.relative_to(tmp_path) for p in clients]
    assert auth.context.client_info.client_id not in clients[0].read_text(), "the store is encrypted"


async def test_control_in_memory_store_makes_the_client_register_again(
        emulator: Emulator, registration: Registrations, tmp_path: Path) -> None:
    log, answers, _ = await restart_once(emulator, tmp_path, registration, in_memory=True)
    assert answers == [(user_upn("bruno"), True)] * 2  # it recovers, but only by starting over:
    assert log.count("POST /register") == 2 and log.count("GET /authorize") >= 2, log.seen
