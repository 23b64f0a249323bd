"""One switch between the embedded emulator and a real tenant.

`connect()` returns the `Target` the notebooks use. With nothing configured it starts the
emulator (once per process); with `OBOKIT_TARGET=tenant` in `.env` it reads the tenant's
coordinates. Teaching cells never branch on the target: the differences (admin sign-in,
demo accounts, browser or headless sign-in) live here.
"""

from __future__ import annotations

import asyncio
import os
import threading
import webbrowser
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from azure.identity import AuthenticationRecord, DeviceCodeCredential, TokenCachePersistenceOptions

from .. import settings
from ..files import write_private
from ..clients.headless import HeadlessBrowser

GRAPH_CLI_CLIENT_ID = "14d82eec-204b-4c2f-b7e8-296a70dab67e"  # Microsoft Graph Command Line Tools
# What the admin's sign-in asks for: the delegated Graph permissions notebooks 01, 02, 06 and 08 use
# (all need an administrator's consent, which the first sign-in of a fresh tenant asks for).
ADMIN_SCOPES = [
    "https://graph.microsoft.com/Application.ReadWrite.All",
    "https://graph.microsoft.com/DelegatedPermissionGrant.ReadWrite.All",
    "https://graph.microsoft.com/AppRoleAssignment.ReadWrite.All",
    "https://graph.microsoft.com/Directory.Read.All",
]


@dataclass(frozen=True)
class DemoDirectory:
    """The people, group and sites the workbook's examples use."""

    admin: str
    analyst: str  # member of the finance group, can open the finance site
    engineer: str  # not in finance; can open the engineering site
    finance_group_id: str
    finance_site: str  # "{hostname}:/sites/{path}"
    engineering_site: str


@dataclass
class Target:
    """Where the workbook's identity and Graph calls go."""

    kind: str  # "emulator" or "tenant"
    tenant_id: str
    authority: str  # https://host[:port]
    graph_url: str  # .../v1.0
    demo: DemoDirectory
    secrets_file: Path
    emulator: Any = None
    _admin_credential: Any = field(default=None, repr=False)

    @property
    def authority_host(self) -> str:
        return urlsplit(self.authority).netloc

    @property
    def tenant_authority(self) -> str:
        return f"{self.authority}/{self.tenant_id}"

    @property
    def is_emulator(self) -> bool:
        return self.kind == "emulator"

    @property
    def instance_discovery(self) -> bool:
        """MSAL's `instance_discovery` for this authority: only Microsoft's own cloud hosts have it."""
        return settings.is_microsoft_cloud(self.authority)

    def managed_identity(self) -> str | None:
        """The client id of the user-assigned managed identity this process can get tokens for, or None.

        A managed identity is there where the hosting platform exposes its endpoint (App Service and Container
        Apps set `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`); which identity is `MANAGED_IDENTITY_CLIENT_ID` (.env or
        the environment). A laptop has no such endpoint: None. On the emulator, the emulator plays the platform:
        its endpoint is exported into this process's environment, as App Service does, with its seeded identity.
        """
        if self.is_emulator:
            os.environ.update(self.emulator.managed_identity_environment())
            return str(self.emulator.managed_identity.client_id)
        if not (os.environ.get("IDENTITY_ENDPOINT") and os.environ.get("IDENTITY_HEADER")):
            return None
        return settings.read_env().get("MANAGED_IDENTITY_CLIENT_ID") or None

    # -- the admin's Graph credential -----------------------------------------------------
    def admin_credential(self) -> DeviceCodeCredential:
        """The admin, signed in with the device code flow (Microsoft Graph Command Line Tools client),
        for `ADMIN_SCOPES`.

        On a tenant the prompt tells you where to enter the code, once per machine rather than once per
        notebook: the tokens stay in azure-identity's persistent token cache (an owner-only file,
        `~/.IdentityService/obokit-workbook-admin*`) and the `AuthenticationRecord` that lets it use them
        silently in the next kernel is kept in the state folder. On the emulator (a new port per kernel)
        the demo admin approves headlessly and nothing is kept.
        """
        if self._admin_credential is None:
            options: dict[str, Any] = dict(
                client_id=GRAPH_CLI_CLIENT_ID,
                tenant_id=self.tenant_id,
                authority=self.authority,
                disable_instance_discovery=not self.instance_discovery,
            )
            if self.is_emulator:
                credential = DeviceCodeCredential(**options, prompt_callback=self._approve_device_code)
                credential.authenticate(scopes=ADMIN_SCOPES, enable_cae=True)
            else:
                record = self._admin_record()
                if record is not None:  # the record names the client and the authority itself
                    options = {k: v for k, v in options.items() if k not in ("client_id", "authority")}
                credential = DeviceCodeCredential(
                    **options, authentication_record=record, cache_persistence_options=TokenCachePersistenceOptions(
                        name=ADMIN_CACHE_NAME, allow_unencrypted_storage=True))  # no keyring on most Linux boxes
                if record is None:
                    # enable_cae: the Graph SDK asks for CAE tokens, which azure-identity caches apart from the others;
                    # signing in for the other kind would make its first Graph call prompt a second time.
                    record = credential.authenticate(scopes=ADMIN_SCOPES, enable_cae=True)
                    write_private(self._admin_record_file, record.serialize().encode())
            self._admin_credential = credential
        return self._admin_credential

    @property
    def _admin_record_file(self) -> Path:
        return settings.state_dir() / ADMIN_RECORD_FILE

    def _admin_record(self) -> AuthenticationRecord | None:
        """The admin's `AuthenticationRecord` of an earlier kernel, if it is for this tenant and authority."""
        try:
            record = AuthenticationRecord.deserialize(self._admin_record_file.read_text())
        except (OSError, ValueError, KeyError):
            return None
        same = (record.tenant_id, record.client_id, record.authority) == (
            self.tenant_id, GRAPH_CLI_CLIENT_ID, self.authority_host)
        return record if same else None

    def _approve_device_code(self, verification_uri: str, user_code: str, expires_on: Any) -> None:
        response = httpx.post(
            verification_uri, data={"user_code": user_code, "account": self.demo.admin, "action": "accept"}
        )
        response.raise_for_status()
        print(f"Device code approved on the emulator as {self.demo.admin}.")

    def approve_device_code(self, flow: dict[str, Any], *, account: str) -> None:
        """The person's half of a device-code flow started by MSAL's `initiate_device_flow`.

        On a tenant you open `flow["verification_uri"]` and type the code yourself (MSAL's
        `acquire_token_by_device_flow` waits for you); on the emulator `account` approves it here.
        """
        if not self.is_emulator:
            return
        response = httpx.post(
            flow["verification_uri"], data={"user_code": flow["user_code"], "account": account, "action": "accept"}
        )
        response.raise_for_status()

    # -- what only the emulator can show --------------------------------------------------
    def obo_exchange_count(self) -> int | None:
        """How many On-Behalf-Of exchanges the identity provider has answered; None on a tenant (Entra has no counter)."""
        if not self.is_emulator:
            return None
        from ..server.obo import JWT_BEARER

        return int(self.emulator.stats()["token_requests"].get(JWT_BEARER, 0))

    @contextmanager
    def simulated_latency(self, *, identity_ms: float, graph_ms: float) -> Iterator[None]:
        """Network latency for the identity provider and Graph inside the block, as a real tenant has.

        The emulator answers in a millisecond; a tenant's own latency applies as it is (nothing changes there).
        """
        if not self.is_emulator:
            yield
            return
        faults = self.emulator.faults
        faults.set_latency("identity", identity_ms)
        faults.set_latency("graph", graph_ms)
        try:
            yield
        finally:
            faults.clear()

    # -- interactive sign-in of a demo user -----------------------------------------------
    async def sign_in(self, authorize_url: str, *, redirect_uri: str, account: str) -> str:
        """Complete an authorization request as `account`; returns the callback URL with `code` and `state`.

        The request names the account (`login_hint`, added if missing): a browser that is still signed in
        as someone else must not silently sign that person in. Emulator: a headless browser picks
        `account`. Tenant: your browser opens and a one-shot listener on the redirect URI's loopback port
        catches the answer.
        """
        authorize_url = with_login_hint(authorize_url, account)
        if self.is_emulator:
            return await HeadlessBrowser(account).sign_in(authorize_url, redirect_uri=redirect_uri)
        return await asyncio.to_thread(_browser_sign_in, authorize_url, redirect_uri)


def with_login_hint(authorize_url: str, account: str) -> str:
    """`authorize_url` with `login_hint=account`, unless it names an account or asks for the picker already."""
    parts = urlsplit(authorize_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(key == "login_hint" or (key == "prompt" and value in ("select_account", "login")) for key, value in query):
        return authorize_url
    return urlunsplit(parts._replace(query=urlencode([*query, ("login_hint", account)])))


def _browser_sign_in(authorize_url: str, redirect_uri: str, timeout: float = 300) -> str:
    parts = urlsplit(redirect_uri)
    captured: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            captured["url"] = f"{parts.scheme}://{parts.netloc}{self.path}"
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"Signed in. You can close this tab and return to the notebook.")

        def do_POST(self) -> None:  # noqa: N802 - response_mode=form_post: code and state come in the body
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            self.path = f"{self.path.split('?', 1)[0]}?{body}"
            self.do_GET()

        def log_message(self, *args: Any) -> None:
            pass

    with HTTPServer((parts.hostname or "localhost", parts.port or 80), Handler) as server:
        server.timeout = timeout
        # On a remote kernel (Codespaces, a remote Jupyter) no browser opens where the learner is: the link is
        # printed, and the answer reaches this listener through a forwarded port (README "Remote kernels").
        print(f"If no browser opened, open this link yourself (answer expected at {redirect_uri}):\n{authorize_url}")
        webbrowser.open(authorize_url)
        server.handle_request()
    if "url" not in captured:
        raise TimeoutError("no sign-in answer arrived at the redirect URI")
    return captured["url"]


ADMIN_CACHE_NAME = "obokit-workbook-admin"
ADMIN_RECORD_FILE = "admin-authentication-record.json"

_lock = threading.Lock()
_current: Target | None = None


def _emulator_target() -> Target:
    from ..emulator import Emulator, group_id
    from ..emulator.ids import SHAREPOINT_HOST, TENANT_DOMAIN

    emulator = Emulator().start()
    return Target(
        kind="emulator",
        tenant_id=emulator.tenant_id,
        authority=emulator.authority,
        graph_url=emulator.graph_url,
        demo=DemoDirectory(
            admin=f"adele@{TENANT_DOMAIN}",
            analyst=f"bruno@{TENANT_DOMAIN}",
            engineer=f"chen@{TENANT_DOMAIN}",
            finance_group_id=group_id("finance"),
            finance_site=f"{SHAREPOINT_HOST}:/sites/finance",
            engineering_site=f"{SHAREPOINT_HOST}:/sites/engineering",
        ),
        secrets_file=emulator.state_dir / "workbook.env",
        emulator=emulator,
    )


def _tenant_target() -> Target:
    tenant = settings.tenant_settings()
    env = settings.read_env()
    missing = [k for k in ("DEMO_ADMIN_UPN", "DEMO_ANALYST_UPN", "DEMO_ENGINEER_UPN", "DEMO_FINANCE_GROUP_ID",
                           "DEMO_FINANCE_SITE", "DEMO_ENGINEERING_SITE") if not env.get(k)]
    if missing:
        raise ValueError(f"OBOKIT_TARGET=tenant needs these keys in .env: {', '.join(missing)} (see .env.example)")
    return Target(
        kind="tenant",
        tenant_id=tenant.tenant_id,
        authority=tenant.authority_host,
        graph_url=tenant.graph_base_url,
        demo=DemoDirectory(
            admin=env["DEMO_ADMIN_UPN"],
            analyst=env["DEMO_ANALYST_UPN"],
            engineer=env["DEMO_ENGINEER_UPN"],
            finance_group_id=env["DEMO_FINANCE_GROUP_ID"],
            finance_site=env["DEMO_FINANCE_SITE"],
            engineering_site=env["DEMO_ENGINEERING_SITE"],
        ),
        secrets_file=settings.env_file(),
    )


def connect() -> Target:
    """The process-wide target: the emulator unless `.env` says `OBOKIT_TARGET=tenant`."""
    global _current
    with _lock:
        if _current is None:
            _current = _emulator_target() if settings.target() == "emulator" else _tenant_target()
        return _current


def disconnect() -> None:
    """Stop the emulator (if this process started one) and forget the target."""
    global _current
    with _lock:
        if _current is not None and _current.emulator is not None:
            _current.emulator.close()
        _current = None


def write_secret(path: Path, key: str, value: str) -> None:
    """Set `key=value` in an env file written owner-only (0600) and atomically; other lines are kept."""
    lines = path.read_text().splitlines() if path.exists() else []
    lines = [line for line in lines if not line.startswith(f"{key}=")] + [f"{key}={value}"]
    write_private(path, ("\n".join(lines) + "\n").encode())
