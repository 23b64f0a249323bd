"""`obokit serve`: the workbook's MCP server as a process of its own, in the foreground until Ctrl+C / SIGTERM.

The server is the one of 03 (`obokit.server.start_workbook_server`) for the target of `.env`: on the emulator
target `connect()` starts an emulator inside this process over the workbook's state folder (the registrations of
01, the secrets file, the proxy's signing key and the emulator's CA are the notebooks' own). Its storage
(`.obokit/mcp-servers/standalone`: audit log, the proxy's client registrations) is not the kernel's server's, so
both can run at once. Nothing printed is a secret or a token.
"""

from __future__ import annotations

import errno
import json
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from .server import RunningServer, start_workbook_server
from .server.credentials import (
    CERTIFICATE_FILE_NAME, ClientCertificate, ClientSecret, ManagedIdentityAssertion, ServerCredential,
    workbook_credential,
)
from .tenant.provisioning import Registrations, registrations
from .tenant.target import Target, connect, disconnect

SERVER_NAME = "standalone"
# The README's URL (http://localhost:8000/mcp) and 01's redirect URI (http://localhost:8000/auth/callback): a
# client configured once keeps working across restarts, because clients keep their registration per server URL.
DEFAULT_PORT = 8000
CREDENTIALS = ("secret", "certificate", "managed-identity")
MODES = ("proxy", "direct")


class ServeError(Exception):
    """Why the server cannot start, in words for the learner."""


def server_credential(target: Target, registration: Registrations, choice: str | None) -> ServerCredential:
    """The credential `choice` names; None: the one the workbook's notebooks use (`workbook_credential`): after 08,
    the managed identity where this process has an endpoint, else the certificate; before 08, the secret of 01."""
    if choice is None:
        if not (registration.mcp_server_client_secret or target.secrets_file.with_name(CERTIFICATE_FILE_NAME).exists()):
            raise ServeError(f"neither MCP_SERVER_CLIENT_SECRET in {target.secrets_file.name} nor {CERTIFICATE_FILE_NAME} "
                             "next to it: run 01-app-registration (and 02) first")
        return workbook_credential(target, registration.mcp_server_client_secret)
    if choice == "secret":
        if not registration.mcp_server_client_secret:
            raise ServeError(f"no MCP_SERVER_CLIENT_SECRET in {target.secrets_file.name} (08-secretless removes it): "
                             "use --credential certificate")
        return ClientSecret(registration.mcp_server_client_secret)
    if choice == "certificate":
        key_file = target.secrets_file.with_name(CERTIFICATE_FILE_NAME)
        if not key_file.exists():
            raise ServeError(f"no {CERTIFICATE_FILE_NAME} next to {target.secrets_file.name}: run 08-secretless first")
        return ClientCertificate.from_pem(key_file.read_bytes())
    if choice == "managed-identity":
        client_id = target.managed_identity()
        if client_id is None:
            raise ServeError("no managed-identity endpoint here (IDENTITY_ENDPOINT and IDENTITY_HEADER are unset): "
                             "use --credential certificate")
        return ManagedIdentityAssertion(client_id)
    raise ServeError(f"--credential must be one of {', '.join(CREDENTIALS)}, not {choice!r}")


def mode_options(mode: str, trusted_callers: Sequence[str]) -> dict[str, Any]:
    """The keywords of `start_workbook_server` for `mode` (direct: trusting VS Code's app unless told otherwise)."""
    if mode == "proxy":
        return {}
    if mode != "direct":
        raise ServeError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    from .server.direct import VS_CODE_CLIENT_ID

    return {"mode": "direct", "trusted_callers": tuple(trusted_callers) or (VS_CODE_CLIENT_ID,)}


def connect_lines(mcp_url: str, mode: str) -> list[str]:
    """How to point the usual MCP clients at `mcp_url` (commands as their documentation gives them)."""
    vscode = json.dumps({"servers": {"obokit": {"type": "http", "url": mcp_url}}})
    lines = [
        # code.visualstudio.com/docs/copilot/reference/mcp-configuration: "servers", "type": "http", "url"
        f"  VS Code         .vscode/mcp.json: {vscode}",
    ]
    if mode == "direct":
        return lines + ["  Entra has no dynamic client registration: clients must be pre-authorized on the server's "
                        "scope and trusted (--trusted-caller). MCP Inspector, Claude Code and mcp-remote: use --mode proxy."]
    return lines + [
        # npmjs.com/package/@modelcontextprotocol/inspector: the UI opens on http://localhost:6274
        f"  MCP Inspector   npx @modelcontextprotocol/inspector   then transport Streamable HTTP, URL {mcp_url}",
        # docs.anthropic.com/en/docs/claude-code/mcp: claude mcp add --transport http <name> <url>
        f"  Claude Code     claude mcp add --transport http obokit {mcp_url}",
        # npmjs.com/package/mcp-remote: npx mcp-remote <url> (plain http is accepted for localhost only)
        f"  mcp-remote      npx mcp-remote {mcp_url}",
    ]


def banner(server: RunningServer, target: Target, mode: str, credential: ServerCredential) -> list[str]:
    """What `obokit serve` prints once the server answers: the URL, how to connect, who can sign in."""
    where = "the emulator" if target.is_emulator else f"tenant {target.tenant_id}"
    lines = [
        f"obokit workbook server on {where}, {mode} mode, the server's app signs in with a {credential.kind}.",
        f"MCP URL: {server.mcp_url}",
        "Connect a client (streamable HTTP; it registers and signs in on its first 401):",
        *connect_lines(server.mcp_url, mode),
        f"Sign in as {target.demo.analyst} (Task.Read, Task.Write) or {target.demo.engineer} (Task.Read).",
    ]
    if target.is_emulator:
        lines.append(f"The sign-in page ({target.authority}, a new port at every start) is HTTPS from the emulator's "
                     f"local CA: trust {target.emulator.tls.ca_cert} in your browser, or accept its warning.")
        if mode == "direct":
            lines.append(f"  Direct mode: the client itself calls the emulator; Node-based clients need "
                         f"NODE_EXTRA_CA_CERTS={target.emulator.tls.ca_cert}.")
    lines += [f"Audit log: {server.audit_log.path}", "Stop with Ctrl+C."]
    return lines


def start(target: Target, *, port: int, mode: str, credential: str | None,
          trusted_callers: Sequence[str] = ()) -> tuple[RunningServer, ServerCredential]:
    """Start the workbook server for `target` on `port` (0: any free port) in the background of this process."""
    options = mode_options(mode, trusted_callers)
    try:
        registration = registrations(target)
    except LookupError as error:
        raise ServeError(str(error)) from None
    chosen = server_credential(target, registration, credential)
    try:
        server = start_workbook_server(target, name=SERVER_NAME, port=port, registration=registration,
                                       credential=chosen, **options)
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        raise ServeError(f"port {port} is in use (the kernel's server started with port={port}, or another "
                         "program): pass --port N, or --port 0 for any free port") from None
    return server, chosen


def wait_until_stopped(server: RunningServer) -> bool:
    """Serve until SIGINT or SIGTERM; False if the server stopped by itself first."""
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    while not stopped.wait(0.5):
        if not server.running:
            return False
    return True


def run(*, port: int = DEFAULT_PORT, mode: str = "proxy", credential: str | None = None,
        trusted_callers: Sequence[str] = ()) -> int:
    """`obokit serve`: exit code 0 after a clean stop, 1 when it cannot start or stops unexpectedly."""
    try:
        return _serve(port=port, mode=mode, credential=credential, trusted_callers=trusted_callers)
    finally:
        disconnect()  # the emulator connect() started in this process, if any


def _serve(*, port: int, mode: str, credential: str | None, trusted_callers: Sequence[str]) -> int:
    try:
        target = connect()
        server, chosen = start(target, port=port, mode=mode, credential=credential, trusted_callers=trusted_callers)
    except (ServeError, ValueError) as error:  # ValueError: an incomplete .env (OBOKIT_TARGET=tenant)
        print(f"obokit serve: {error}", file=sys.stderr)
        return 1
    print("\n".join(banner(server, target, mode, chosen)), flush=True)
    interrupted = wait_until_stopped(server)
    server.stop()  # uvicorn's shutdown runs the server's lifespan: the audit log is flushed and closed
    if not interrupted or server.running:
        print("obokit serve: the server stopped unexpectedly" if not interrupted
              else "obokit serve: the server did not stop within 10 s", file=sys.stderr)
        return 1
    print("Server stopped.", flush=True)
    return 0


__all__ = ["DEFAULT_PORT", "SERVER_NAME", "ServeError", "banner", "connect_lines", "run",
           "server_credential", "start"]
