"""`obokit serve` as a process of its own, and `ensure_redirect_uri` for a deployed server's URL.

The command runs as a subprocess with a clean environment (test_cli's `clean_env`) and its own state folder,
which holds the registration of 01 (made here with `register_workbook_server`, written to `workbook.env` as 01
writes it). The official `mcp` SDK client signs in through the printed URL headlessly; SIGTERM must end the
process with exit code 0 and the audit log on disk. `ensure_redirect_uri` is called through msgraph-sdk
against the session emulator.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import socket
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from azure.identity.aio import ClientSecretCredential
from msgraph.generated.models.application import Application
from msgraph.generated.models.web_application import WebApplication
from server_fixtures import register_workbook_server
from tenant_setup import Registration, run_async, user_upn
from test_cli import COMMAND, clean_env

from obokit.clients.graph import graph_client
from obokit.clients.sdk_client import HeadlessUserAgent, connect, sdk_oauth
from obokit.emulator import Emulator
from obokit.tenant.provisioning import MCP_SERVER_APP, callback_uri, ensure_application, ensure_redirect_uri

pytestmark = pytest.mark.emulator


@dataclass
class Served:
    process: subprocess.Popen[str]
    printed: list[str]  # stdout up to "Stop with Ctrl+C."
    stderr: list[str]

    @property
    def mcp_url(self) -> str:
        return next(m.group(1) for line in self.printed if (m := re.match(r"MCP URL: (\S+)$", line)))


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Registration, str]:
    """A state folder as 01 leaves it (the server's app, roles, consent; workbook.env); its CA bundle."""
    state = tmp_path_factory.mktemp("serve") / "state"
    emulator = Emulator(state).start()
    try:
        server = register_workbook_server(emulator, MCP_SERVER_APP, consent=True)
        bundle = emulator.ca_bundle
    finally:
        emulator.close()
    (state / "workbook.env").write_text(f"MCP_SERVER_CLIENT_ID={server.app_id}\nMCP_SERVER_CLIENT_SECRET={server.secret}\n")
    return state, server, bundle


@contextmanager
def serving(state: Path, cwd: Path, *options: str) -> Iterator[Served]:
    """`obokit serve [options]` in the background, until it printed "Stop with Ctrl+C."; killed if still running."""
    process = subprocess.Popen([*COMMAND, "serve", *options], cwd=cwd, env=clean_env(state),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str | None] = queue.Queue()
    stderr: list[str] = []

    def pump() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    threading.Thread(target=lambda: stderr.extend(process.stderr), daemon=True).start()  # type: ignore[arg-type]
    printed: list[str] = []
    try:
        while not printed or printed[-1] != "Stop with Ctrl+C.":
            line = lines.get(timeout=90)
            assert line is not None, f"obokit serve exited early: {printed} {stderr}"
            printed.append(line)
        yield Served(process, printed, stderr)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


async def whoami_over_sdk(mcp_url: str, account: str) -> tuple[set[str], dict]:
    """One session of the official mcp SDK client, signing in headlessly as `account`: its tools and whoami."""
    agent = HeadlessUserAgent(account=account)
    async with connect(mcp_url, sdk_oauth(mcp_url, agent=agent)) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        result = await client.call_tool("whoami", {})
    assert not result.is_error, result
    assert agent.sign_ins == 1
    return tools, result.structured_content


def test_serve_answers_the_mcp_sdk_client_and_stops_cleanly_on_sigterm(
    provisioned: tuple[Path, Registration, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, server, bundle = provisioned
    with serving(state, tmp_path, "--port", "0") as served:
        url = served.mcp_url
        assert re.fullmatch(r"http://localhost:\d+/mcp", url)
        text = "\n".join(served.printed)
        assert json.dumps({"servers": {"obokit": {"type": "http", "url": url}}}) in text  # the .vscode/mcp.json line
        for command in ("npx @modelcontextprotocol/inspector", f"claude mcp add --transport http obokit {url}",
                        f"npx mcp-remote {url}", str(state / "tls" / "ca.pem"), "client secret"):
            assert command in text, command

        monkeypatch.setenv("SSL_CERT_FILE", bundle)  # the headless browser opens the emulator's sign-in page
        tools, me = run_async(whoami_over_sdk(url, user_upn("bruno")))
        assert {"whoami", "check_group_membership", "check_site_access"} <= tools
        assert me["upn"] == user_upn("bruno") and "Task.Read" in me["roles"]

        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=20) == 0, served.stderr
    output = "\n".join(served.printed + served.stderr)
    assert server.secret not in output
    audit = [json.loads(line) for line in (state / "mcp-servers" / "standalone" / "audit.jsonl").read_text().splitlines()]
    assert any(entry["upn"] == user_upn("bruno") and entry["tool"] == "whoami" for entry in audit)


def test_serve_direct_mode_names_entra_as_the_authorization_server(
    provisioned: tuple[Path, Registration, str], tmp_path: Path
) -> None:
    state, _, _ = provisioned
    with serving(state, tmp_path, "--port", "0", "--mode", "direct") as served:
        base = served.mcp_url.removesuffix("/mcp")
        metadata = httpx.get(f"{base}/.well-known/oauth-protected-resource/mcp", timeout=10).json()
        assert re.fullmatch(rf"https://127\.0\.0\.1:\d+/{Emulator.tenant_id}/v2\.0/?", metadata["authorization_servers"][0])
        text = "\n".join(served.printed)
        assert ".vscode/mcp.json" in text and "claude mcp add" not in text and "use --mode proxy" in text
        served.process.send_signal(signal.SIGINT)
        assert served.process.wait(timeout=20) == 0, served.stderr


def test_serve_says_what_is_missing_or_taken(provisioned: tuple[Path, Registration, str], tmp_path: Path) -> None:
    state, _, _ = provisioned
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        busy = subprocess.run([*COMMAND, "serve", "--port", port], cwd=tmp_path, env=clean_env(state),
                              capture_output=True, text=True, timeout=120)
    assert busy.returncode == 1 and f"port {port} is in use" in busy.stderr and "--port 0" in busy.stderr

    no_key = subprocess.run([*COMMAND, "serve", "--port", "0", "--credential", "certificate"], cwd=tmp_path,
                            env=clean_env(state), capture_output=True, text=True, timeout=120)
    assert no_key.returncode == 1 and "no mcp-server-certificate.pem" in no_key.stderr
    assert "run 08-secretless first" in no_key.stderr

    empty = subprocess.run([*COMMAND, "serve", "--port", "0", "--credential", "certificate"], cwd=tmp_path,
                           env=clean_env(tmp_path / "fresh"), capture_output=True, text=True, timeout=120)
    assert empty.returncode == 1 and "run 01-app-registration first" in empty.stderr, empty.stderr


# -- ensure_redirect_uri ----------------------------------------------------------------------------
@pytest.fixture
async def admin_graph(emulator: Emulator) -> AsyncIterator:
    """msgraph-sdk as the emulator's automation app (Application.ReadWrite.All)."""
    client_id, secret = emulator.automation_credentials()
    async with ClientSecretCredential(emulator.tenant_id, client_id, secret, authority=emulator.authority,
                                      disable_instance_discovery=True) as credential:
        yield graph_client(credential, base_url=emulator.graph_url)


async def test_ensure_redirect_uri_adds_the_deployed_callback_once_and_keeps_the_others(
    admin_graph, capsys: pytest.CaptureFixture[str]
) -> None:
    local = "http://localhost:8000/auth/callback"
    app = await ensure_application(admin_graph, Application(display_name="serve test deployed server",
                                                            web=WebApplication(redirect_uris=[local])))
    first = await ensure_redirect_uri(admin_graph, app, "https://obokit-demo.azurewebsites.net/")
    assert first == [local, "https://obokit-demo.azurewebsites.net/auth/callback"]
    again = await ensure_redirect_uri(admin_graph, app, "https://obokit-demo.azurewebsites.net")
    assert again == first
    stored = await admin_graph.applications.by_application_id(app.id).get()
    assert stored.web.redirect_uris == first
    printed = capsys.readouterr().out
    assert "https://obokit-demo.azurewebsites.net/auth/callback of 'serve test deployed server' [added]" in printed
    assert "[unchanged]" in printed


@pytest.mark.parametrize("base_url, error", [
    ("http://obokit.example.com", "needs https"),
    ("ftp://localhost", "needs https"),
    ("https://", "with a host"),
    ("https://user:pw@obokit.example.com", "without user info"),
    ("https://obokit.example.com/?x=1", "no query"),
    ("https://*.example.com", "wildcard"),
    ("https://obokit.example.com/mcp", "without /mcp"),
    ("https://obokit.example.com/auth/callback", "without /mcp or /auth/callback"),
    ("https://obokit.example.com:99999", "not a URL"),
    (f"https://obokit.example.com/{'a' * 250}", "256 characters"),
])
def test_callback_uri_refuses_what_entra_would_refuse(base_url: str, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        callback_uri(base_url)


def test_callback_uri_accepts_https_and_loopback_http() -> None:
    assert callback_uri("https://mcp.contoso.com/obokit/") == "https://mcp.contoso.com/obokit/auth/callback"
    assert callback_uri("http://localhost:8000") == "http://localhost:8000/auth/callback"
    assert callback_uri("http://127.0.0.1:61234") == "http://127.0.0.1:61234/auth/callback"


def test_serve_defaults_to_the_credential_the_notebooks_use(emulator: Emulator, tmp_path: Path) -> None:
    """Without --credential: the secret until 08 wrote its certificate; then the managed identity where the
    process has an endpoint (the emulator provides one), else the certificate (workbook_credential)."""
    from server_fixtures import make_target

    from obokit.serve import ServeError, server_credential
    from obokit.server.credentials import (
        CERTIFICATE_FILE_NAME, ClientCertificate, ClientSecret, ManagedIdentityAssertion, self_signed_certificate)
    from obokit.tenant.provisioning import Registrations

    target = make_target(emulator, tmp_path)
    with_secret, without = Registrations("app-id", "a-secret"), Registrations("app-id")
    assert isinstance(server_credential(target, with_secret, None), ClientSecret)
    with pytest.raises(ServeError, match="run 01-app-registration"):
        server_credential(target, without, None)

    key_pem = self_signed_certificate("serve default test")
    target.secrets_file.with_name(CERTIFICATE_FILE_NAME).write_bytes(key_pem)
    with emulator.managed_identity_env():
        assert isinstance(server_credential(target, with_secret, None), ManagedIdentityAssertion)
    assert isinstance(server_credential(target, without, "certificate"), ClientCertificate)
