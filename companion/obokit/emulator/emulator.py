"""The embedded emulator: identity and Graph hosts over HTTPS, a managed identity endpoint over http; in-process
or from the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..kernel import BackgroundServer, bind_loopback, serve_in_background
from ..settings import state_dir as default_state_dir
from .directory import Directory
from .faults import FaultMiddleware, Faults
from .grants import TokenService
from .graph_app import GraphApp
from .graph_core import GraphContext
from .identity import IdentityApp
from .ids import GRAPH_CLI_APP_ID, SHAREPOINT_HOST, TENANT_DOMAIN, TENANT_ID
from .key_cache import keep_key_material, reuse_key_material
from .managed_identity import PATH as MANAGED_IDENTITY_PATH
from .managed_identity import ManagedIdentity, ManagedIdentityEndpoint, app_service_environment
from .recorder import EventLog, RequestLog
from .replication import Replication
from .seed import AUTOMATION_APP_ID, PROFILES, demo_tenant, managed_identity_sp, vs_code_objects
from .session import Sessions
from .signing import KeySet
from .store import Store
from .tls import ensure_tls
from .tokens import TokenFactory

_CA_ENV = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
# Seconds before a directory write is visible to the token endpoint and Graph reads, drawn per write.
DEFAULT_REPLICATION_DELAY = {"quick": (0.0, 0.0), "tenant": (2.0, 5.0)}
TENANT_PROFILE_FOLDER = "tenant-profile"  # under the default state folder, so the two profiles never share one


class Emulator:
    """Entra + Graph on two local HTTPS ports, with a persistent, seeded demo tenant, and the managed identity
    endpoint of App Service (plain http) for the tenant's user-assigned identity.

    Example::

        emu = Emulator().start()
        emu.authority      # https://127.0.0.1:PORT  (pass as MSAL authority host)
        emu.graph_url      # https://127.0.0.1:PORT/v1.0
        with emu.managed_identity_env():  # IDENTITY_ENDPOINT / IDENTITY_HEADER, as App Service sets them
            ManagedIdentityCredential(client_id=emu.managed_identity.client_id).get_token(...)
        emu.stop()

    `profile="quick"` (the default) is the workbook's fast path: the admin's Graph client is pre-consented and
    every write is visible at once. `profile="tenant"` behaves like a fresh tenant: nothing is consented (the
    sign-in pages ask), writes replicate after `replication_delay` seconds (default 2-5), and the sign-in page
    remembers the browser's last account. The profile is passed each time; a state folder seeded for the other
    profile is reseeded, and the tenant profile's default folder is `<state folder>/tenant-profile`.
    """

    tenant_id = TENANT_ID
    tenant_domain = TENANT_DOMAIN
    sharepoint_host = SHAREPOINT_HOST
    graph_cli_client_id = GRAPH_CLI_APP_ID
    managed_identity = ManagedIdentity()  # the seeded user-assigned identity (client, principal, resource ids)

    def __init__(
        self,
        state_dir: Path | str | None = None,
        *,
        token_lifetime: int | None = None,
        profile: str = "quick",
        replication_delay: tuple[float, float] | float | None = None,
    ) -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown emulator profile {profile!r}; expected one of {PROFILES}")
        self.profile = profile
        if state_dir:
            self.state_dir = Path(state_dir)
        else:
            self.state_dir = default_state_dir() / (TENANT_PROFILE_FOLDER if profile == "tenant" else "")
        self.token_lifetime = token_lifetime
        self.replication_delay = _delay(replication_delay, profile)
        self.faults = Faults()
        self.graph_requests = RequestLog()  # read-only: what the Graph host received (tests)
        self.events = EventLog()  # read-only: device-code prompts, pickers, silent sign-ins, consent pages
        self.managed_identity_requests = RequestLog()  # read-only: what the managed identity endpoint received
        self.sessions = Sessions()
        # Keys generated once are copied into new state folders (RSA generation is most of a cold start).
        cache_usable = reuse_key_material(self.state_dir)
        self.tls = ensure_tls(self.state_dir / "tls")
        self.keys = KeySet(self.state_dir / "keys")
        keep_key_material(self.state_dir, replace=not cache_usable)
        self.store = Store(self.state_dir / "emulator.sqlite3")
        self.replication: Replication | None = (
            Replication(self.store, self.replication_delay) if self.replication_delay[1] > 0 else None)
        seeded = self.store.get("meta", "profile")
        if self.store.is_empty() or (seeded or {}).get("value", "quick") != profile:
            self._seed()
        else:  # a state folder seeded before these existed keeps its objects and gains them
            self.store.add_missing("servicePrincipals", managed_identity_sp())
            for collection, obj in vs_code_objects():
                self.store.add_missing(collection, obj)
        self.server: BackgroundServer | None = None
        self.managed_identity_server: BackgroundServer | None = None
        self.managed_identity_endpoint: ManagedIdentityEndpoint | None = None
        self._saved_env: dict[str, str | None] = {}
        self.authority = self.graph_url = ""
        self.service: TokenService | None = None
        self.identity: IdentityApp | None = None

    # -- life cycle -----------------------------------------------------------------------
    def start(self, *, host: str = "127.0.0.1", identity_port: int = 0, graph_port: int = 0) -> "Emulator":
        """Bind the two ports, trust the local CA through the environment, serve in the background; the managed
        identity endpoint gets a third port, plain http on 127.0.0.1 like App Service's."""
        identity_sock, graph_sock = bind_loopback(host, identity_port), bind_loopback(host, graph_port)
        self.authority = f"https://{host}:{identity_sock.getsockname()[1]}"
        graph_origin = f"https://{host}:{graph_sock.getsockname()[1]}"
        self.graph_url = f"{graph_origin}/v1.0"
        reads = self.replication.view() if self.replication else self.store  # what a replica answers
        directory = Directory(reads, tenant_like=self.profile == "tenant")
        tokens = TokenFactory(self.keys, self.authority, self.token_lifetime)
        self.service = TokenService(self.store, directory, tokens)
        self.identity = IdentityApp(self.store, directory, self.service, self.authority, profile=self.profile,
                                    events=self.events, sessions=self.sessions, replication=self.replication)
        identity_app = Starlette(routes=self.identity.routes() + self._control_routes())
        graph_app = GraphApp(GraphContext(self.store, directory, self.keys, self.graph_url, reads=reads))
        self._trust_ca()
        try:
            self.server = serve_in_background(
                {
                    "identity": FaultMiddleware(identity_app, self.faults, "identity"),
                    "graph": self.graph_requests.wrap(FaultMiddleware(graph_app, self.faults, "graph")),
                },
                name=f"obokit-emulator:{self.state_dir}",
                sockets={"identity": identity_sock, "graph": graph_sock},
                ssl_certfile=str(self.tls.server_cert),
                ssl_keyfile=str(self.tls.server_key),
            )
            self.managed_identity_endpoint = ManagedIdentityEndpoint(directory, tokens)
            self.managed_identity_server = serve_in_background(
                {"managed_identity": self.managed_identity_requests.wrap(self.managed_identity_endpoint.app())},
                name=f"obokit-emulator-managed-identity:{self.state_dir}",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop serving (the three ports) and restore SSL_CERT_FILE / REQUESTS_CA_BUNDLE (the state stays on disk)."""
        for server in (self.server, self.managed_identity_server):
            if server is not None:
                server.stop()
        self.server = self.managed_identity_server = None
        self._restore_env()

    def close(self) -> None:
        self.stop()
        self.store.close()

    def __enter__(self) -> "Emulator":
        return self if self.server else self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _trust_ca(self) -> None:
        self._saved_env = {name: os.environ.get(name) for name in _CA_ENV}
        for name in _CA_ENV:
            os.environ[name] = str(self.tls.bundle)

    def _restore_env(self) -> None:
        for name, value in self._saved_env.items():
            if os.environ.get(name) != str(self.tls.bundle):
                continue  # an emulator started after this one (and still running) set it: leave it to that one
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env = {}

    # -- what clients need ----------------------------------------------------------------
    @property
    def authority_host(self) -> str:
        """host:port, the form fastmcp's `AzureProvider(base_authority=...)` takes."""
        return self.authority.split("://", 1)[1]

    @property
    def tenant_authority(self) -> str:
        """The authority URL with the tenant, as MSAL's `authority=` takes it."""
        return f"{self.authority}/{TENANT_ID}"

    @property
    def ca_bundle(self) -> str:
        return str(self.tls.bundle)

    def managed_identity_environment(self) -> dict[str, str]:
        """IDENTITY_ENDPOINT and IDENTITY_HEADER as App Service sets them; the header is new at every start."""
        if self.managed_identity_server is None or self.managed_identity_endpoint is None:
            raise RuntimeError("the emulator is not running: start() it first")
        return {"IDENTITY_ENDPOINT": self.managed_identity_server.url + MANAGED_IDENTITY_PATH,
                "IDENTITY_HEADER": self.managed_identity_endpoint.header}

    def managed_identity_env(self) -> contextlib.AbstractContextManager[dict[str, str]]:
        """`with emu.managed_identity_env():` the process sees the two variables (the previous values return
        after the block), so MSAL's and azure-identity's managed identity clients reach this emulator."""
        values = self.managed_identity_environment()
        return app_service_environment(values["IDENTITY_ENDPOINT"], values["IDENTITY_HEADER"])

    def automation_credentials(self) -> tuple[str, str]:
        """(client_id, client_secret) of the seeded app-only admin app, for tests and scripts."""
        app = self.store.find_one("applications", appId=AUTOMATION_APP_ID)
        assert app is not None, "the emulator state has no automation app; reset it"
        return app["appId"], app["passwordCredentials"][0]["_secret"]

    def env_lines(self) -> list[str]:
        """The .env lines that point the workbook at this emulator (standalone mode)."""
        return [
            "OBOKIT_TARGET=tenant",
            f"AZURE_TENANT_ID={TENANT_ID}",
            f"AZURE_AUTHORITY_HOST={self.authority}",
            f"GRAPH_BASE_URL={self.graph_url}",
            f"SSL_CERT_FILE={self.tls.bundle}",
            f"REQUESTS_CA_BUNDLE={self.tls.bundle}",
        ]

    def stats(self) -> dict[str, Any]:
        """Token requests by grant, OBO exchanges, and the managed identity endpoint's requests and tokens."""
        counts = self.service.stats.snapshot() if self.service else {}
        if self.managed_identity_endpoint is not None:
            counts["managed_identity"] = self.managed_identity_endpoint.stats()
        return counts

    def _clear_stats(self) -> None:
        if self.service is not None:
            self.service.stats.clear()
        if self.managed_identity_endpoint is not None:
            self.managed_identity_endpoint.clear_stats()

    # -- state ----------------------------------------------------------------------------
    def _seed(self) -> None:
        objects, _secret = demo_tenant(self.profile)
        self.store.replace_all(objects)
        if self.replication is not None:
            self.replication.settle_all()

    def reset(self) -> None:
        """Back to the freshly seeded demo tenant of this profile (blocking; call from a thread, not an event
        loop). Browser sessions end; the event log keeps counting."""
        self._seed()
        self.sessions.clear()
        if self.identity is not None:
            self.identity.pending.clear()
        if self.service is not None:
            self.service.codes.clear()
            self.service.device_flows.clear()
            self.service.conditional_access.clear()
        self._clear_stats()
        self.faults.clear()

    # -- control endpoints (for the standalone emulator) ---------------------------------
    def _control_routes(self) -> list[Route]:
        async def health(request: Request) -> Response:
            return JSONResponse({"status": "ok", "tenant": TENANT_ID, "graph": self.graph_url, "profile": self.profile,
                                 "replication_delay": list(self.replication_delay),
                                 "replication_pending": self.replication.pending() if self.replication else 0})

        async def events(request: Request) -> Response:
            """GET ?since=N: the sign-in events after sequence number N (see recorder.EventLog)."""
            try:
                since = int(request.query_params.get("since") or 0)
            except ValueError:
                return JSONResponse({"error": "since must be an integer"}, status_code=400)
            return JSONResponse({"events": self.events.since(since), "last_seq": self.events.last_seq})

        async def faults(request: Request) -> Response:
            if request.method == "POST":
                spec = await request.json()
                family = spec.get("family", "graph")
                try:
                    if "latency_ms" in spec:
                        self.faults.set_latency(family, float(spec["latency_ms"]))
                    if "fail" in spec:
                        self.faults.fail(family, int(spec["fail"]), int(spec.get("status", 503)))
                    if "throttle" in spec:
                        self.faults.throttle(family, int(spec["throttle"]), int(spec.get("retry_after", 1)))
                    if spec.get("clear"):
                        self.faults.clear()
                except (ValueError, TypeError) as exc:
                    return JSONResponse({"error": str(exc)}, status_code=400)
            return JSONResponse(self.faults.describe())

        async def stats(request: Request) -> Response:
            if request.method == "DELETE":
                self._clear_stats()
            return JSONResponse(self.stats())

        async def reset(request: Request) -> Response:
            await asyncio.get_running_loop().run_in_executor(None, self.reset)
            return JSONResponse({"status": "reset"})

        return [
            Route("/_emulator/health", health),
            Route("/_emulator/faults", faults, methods=["GET", "POST"]),
            Route("/_emulator/stats", stats, methods=["GET", "DELETE"]),
            Route("/_emulator/reset", reset, methods=["POST"]),
            Route("/_emulator/events", events, methods=["GET"]),
        ]


def _delay(value: tuple[float, float] | float | None, profile: str) -> tuple[float, float]:
    """(low, high) seconds from a pair, a single number (fixed delay) or None (the profile's default)."""
    if value is None:
        return DEFAULT_REPLICATION_DELAY[profile]
    low, high = (value, value) if isinstance(value, (int, float)) else value
    if not 0 <= float(low) <= float(high):
        raise ValueError(f"replication delay must be 0 <= low <= high seconds, not {value!r}")
    return float(low), float(high)
