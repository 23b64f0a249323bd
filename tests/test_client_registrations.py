"""The notebooks' MCP clients register once per (server URL, account), across kernels and restarts.

`obokit.clients.mcp_client.oauth_for` keeps the dynamic client registration on disk (encrypted, owner-only)
and `obokit.server.start_workbook_server` brings a server back at the URL it had, so a new kernel
(here: a new `oauth_for`, nothing shared in memory) signs in with the registration of the last one
instead of registering again with the server's OAuth proxy. `proxied_token` (notebook 03's token
attacks) likewise registers one client per server, however often it is called.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastmcp import Client
from server_fixtures import make_target, register_workbook_server, registrations
from tenant_setup import user_upn

from obokit.emulator import Emulator
from obokit.clients.mcp_client import oauth_for
from obokit.server import RunningServer, start_workbook_server
from obokit.tenant.target import Target
from obokit.token_attacks import proxied_token, upstream_token

pytestmark = [pytest.mark.emulator]


def proxy_clients(server: RunningServer) -> int:
    """The clients registered (DCR) in the server's persistent OAuth proxy store."""
    return sum(len(list(d.glob("*.json"))) for d in (server.storage_dir / "oauth-proxy").glob("*oauth_proxy_clients*")
               if d.is_dir())


async def whoami(server: RunningServer, target: Target, account: str) -> str:
    """Sign in as `account` with a fresh `oauth_for` (as a new kernel would) and call whoami; the client id used."""
    auth = oauth_for(target, account=account)
    async with Client(server.mcp_url, auth=auth) as client:
        assert (await client.call_tool("whoami")).data["upn"] == account
    return auth.context.client_info.client_id


async def test_a_new_kernel_signs_in_with_the_registration_it_kept(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OBOKIT_STATE_DIR", str(tmp_path))
    target = make_target(emulator, tmp_path)
    registration = registrations(register_workbook_server(emulator, "client registrations test", consent=True))

    def start() -> RunningServer:
        return start_workbook_server(target, name="kept", registration=registration)

    server = start()
    try:
        first = await whoami(server, target, user_upn("bruno"))
        assert await whoami(server, target, user_upn("bruno")) == first
        other = await whoami(server, target, user_upn("chen"))  # another account: a registration of its own
        assert other != first and proxy_clients(server) == 2
    finally:
        server.stop()
    url = server.url

    server = start()  # the next run: the server comes back at its URL, the clients find their registration
    try:
        assert server.url == url
        assert await whoami(server, target, user_upn("bruno")) == first
        assert await whoami(server, target, user_upn("chen")) == other
        assert proxy_clients(server) == 2, "a client registered again"

        genuine = await upstream_token(server, await _bearer(server, target))
        for _ in range(2):  # one registration for the token attacks, however often they run
            assert await proxied_token(server, genuine)
        assert proxy_clients(server) == 3
    finally:
        server.stop()

    kept = tmp_path / "mcp-clients"
    assert kept.stat().st_mode & 0o777 == 0o700, "the clients' registrations are owner-only"
    stored = b"".join(p.read_bytes() for p in kept.rglob("*") if p.is_file())
    assert first.encode() not in stored and other.encode() not in stored, "registrations are stored encrypted"


async def _bearer(server: RunningServer, target: Target) -> str:
    auth = oauth_for(target, account=user_upn("bruno"))
    async with Client(server.mcp_url, auth=auth) as client:
        await client.call_tool("whoami")
    return auth.context.current_tokens.access_token
