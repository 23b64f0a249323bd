"""The sign-in a learner sees, in a real browser: FastMCP consent, the emulator's account picker, the callback.

FastMCP's own `OAuth` client provider runs unmodified: it registers through the workbook server's
OAuth proxy (DCR), starts its loopback callback server and calls `webbrowser.open` with the
authorization URL. The only stand-in is the operating system's browser launcher: here
`webbrowser.open` hands the URL to Chromium, driven by Playwright, which clicks through the pages
a person would. The test then calls `whoami` and gets the identity of the account it picked.
"""

from __future__ import annotations

import asyncio
import html
import json
import webbrowser
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_support import TIMEOUT_MS, Screenshots, chromium_options, needs_chromium
from fastmcp import Client
from fastmcp.client.auth import OAuth
from key_value.aio.stores.memory import MemoryStore
from playwright.async_api import Page, async_playwright, expect
from server_fixtures import serve_consented
from tenant_setup import user_upn

from obokit.emulator import Emulator
from obokit.server import RunningServer

pytestmark = [needs_chromium, pytest.mark.filterwarnings("ignore:Using in-memory token storage")]


@pytest.fixture(scope="module")
def server(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The workbook server (AzureProvider, roles, OBO tools) for a fresh registration with admin consent."""
    yield from serve_consented(emulator, tmp_path_factory.mktemp("browser-signin"), "browser sign-in test", "browser-signin")


class ChromiumLauncher:
    """Stands in for `webbrowser.open`: opens the URL in Chromium and signs in as `account`."""

    def __init__(self, page: Page, *, account: str, callback_port: int, shots: Screenshots) -> None:
        self.page, self.account, self.callback_port, self.shots = page, account, callback_port, shots
        self.task: asyncio.Task[str] | None = None

    def open(self, url: str, new: int = 0, autoraise: bool = True) -> bool:
        # Called from FastMCP's async redirect_handler, on the running loop: the walk runs as a
        # task while FastMCP goes on to start its callback server and wait for the redirect.
        self.task = asyncio.get_running_loop().create_task(self.sign_in(url))
        return True

    async def _callback_server_listening(self) -> None:
        for _ in range(200):
            try:
                _, writer = await asyncio.open_connection("localhost", self.callback_port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return
        raise TimeoutError(f"FastMCP's callback server never listened on port {self.callback_port}")

    async def sign_in(self, url: str) -> str:
        page = self.page
        await self._callback_server_listening()
        await page.goto(url)
        # 1. FastMCP's consent page: which client, which redirect URI; the learner allows access.
        await expect(page.get_by_role("button", name="Allow Access")).to_be_visible()
        await expect(page.locator("body")).to_contain_text("obokit browser client")
        await page.screenshot(path=self.shots.path("fastmcp-consent"), full_page=True)
        await page.get_by_role("button", name="Allow Access").click()
        # 2. The emulator's sign-in page (Entra's account picker): pick the demo user, accept.
        await expect(page.get_by_role("heading", name="Pick an account")).to_be_visible()
        for person in ("Adele Vance", "Bruno Diaz", "Chen Li"):
            await expect(page.get_by_label(person)).to_be_visible()
        await page.get_by_label(self.account).check()
        await page.screenshot(path=self.shots.path("entra-account-picker"), full_page=True)
        await page.get_by_role("button", name="Accept").click()
        # 3. Back at FastMCP's loopback callback server, which caught the code.
        await page.wait_for_url(f"http://localhost:{self.callback_port}/callback?**")
        await expect(page.locator("body")).to_contain_text("Authentication successful")
        await page.screenshot(path=self.shots.path("client-callback"), full_page=True)
        return page.url


async def test_learner_signs_in_in_chromium_and_whoami_names_them(
    server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shots = Screenshots("signin")
    bruno = user_upn("bruno")
    auth = OAuth(server.mcp_url, client_name="obokit browser client", token_storage=MemoryStore(), callback_timeout=60)
    async with async_playwright() as playwright:
        # The emulator's HTTPS certificate comes from its own local CA. Making Chromium trust a CA
        # needs an NSS database in the profile, so this context ignores certificate errors instead;
        # it only ever talks to the loopback emulator and servers (the suite has no network).
        context = await playwright.chromium.launch_persistent_context(
            **chromium_options(tmp_path / "chromium-profile", ignore_https_errors=True)
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            launcher = ChromiumLauncher(page, account=bruno, callback_port=auth.redirect_port, shots=shots)
            monkeypatch.setattr(webbrowser, "open", launcher.open)
            async with Client(server.mcp_url, auth=auth) as client:
                result = await client.call_tool("whoami")
                tools = {tool.name for tool in await client.list_tools()}
            assert launcher.task is not None, "FastMCP never opened the browser"
            callback_url = await launcher.task
            # What the tool answered, as a page of its own: the artifact shows who signed in.
            answer = html.escape(json.dumps(result.structured_content, indent=2))
            await page.set_content(f"<h1>whoami</h1><pre id='whoami'>{answer}</pre>")
            await page.screenshot(path=shots.path("whoami-result"))
        finally:
            await context.close()

    me = result.structured_content or {}
    assert me["upn"] == bruno and me["name"] == "Bruno Diaz"
    assert me["roles"] == ["Task.Read", "Task.Write"] and me["scp"] == "mcp-access"
    assert {"whoami", "add_expense", "approve_expense"} <= tools  # Bruno holds both app roles
    assert callback_url.startswith(f"http://localhost:{auth.redirect_port}/callback?code=")
    # The client registered itself at the proxy (DCR) with that loopback callback.
    client_info = auth.context.client_info
    assert client_info is not None and client_info.client_id
    assert [str(uri) for uri in client_info.redirect_uris or []] == [f"http://localhost:{auth.redirect_port}/callback"]
    assert all(shot.stat().st_size > 0 for shot in shots.taken)
