"""Scale-out plumbing: replicas of the workbook server behind a round-robin proxy, sharing one Redis.

    from obokit.scaleout import start_scale_out

    cluster = start_scale_out(target, redis_url, replicas=2)
    cluster.mcp_url                 # http://localhost:<proxy port>/mcp, the one URL clients use
    cluster.use("replica-1")        # route everything to one replica (a rolling deployment)
    cluster.use_all()               # round-robin again
    cluster.restart()               # replace every replica (same Redis, same keys)
    cluster.stop()

The replicas are the workbook server of `obokit.server` with deployment settings: every replica's `base_url`
is the proxy's public URL (what clients and Entra see), and the OAuth proxy's `client_storage` is py-key-value's
`RedisStore`, Fernet-encrypted exactly like the file store of 03. MCP runs in stateless HTTP mode, so any replica
can answer any request, also for clients of the 2025 protocol revision, and the proxy needs no sticky sessions.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet
from fastmcp.server.auth.jwt_issuer import derive_jwt_key
from key_value.aio.protocols import AsyncKeyValue
from key_value.aio.stores.redis import RedisStore
from key_value.aio.wrappers.encryption import FernetEncryptionWrapper

from .server.audit import AuditLog
from .kernel import BackgroundServer, bind_loopback, serve_in_background
from .server import STORAGE_SALT, ServerRegistration, build_server, default_storage_dir, signing_key, workbook_auth
from .tenant.target import Target

__all__ = ["Replica", "RoundRobinProxy", "Route", "ScaleOut", "shared_client_store", "start_replica",
           "start_scale_out"]

# The salt of obokit.server.persistent_client_store: the same key encrypts the file store and the Redis store.
# Hop-by-hop headers (RFC 9110 7.6.1) are not forwarded by a proxy.
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
              b"transfer-encoding", b"upgrade"}


def shared_client_store(redis_url: str, key: str) -> tuple[AsyncKeyValue, RedisStore]:
    """The OAuth proxy's store in Redis, every value Fernet-encrypted; returns (wrapped store, raw store).

    Close the raw store on the event loop that used it (`Replica.stop` does).
    """
    raw = RedisStore(url=redis_url)
    fernet = Fernet(derive_jwt_key(high_entropy_material=key, salt=STORAGE_SALT))
    return FernetEncryptionWrapper(key_value=raw, fernet=fernet, raise_on_decryption_error=False), raw


@dataclass(frozen=True)
class Route:
    """One request the proxy forwarded: which replica answered, and how (no query strings: they hold codes)."""

    method: str
    path: str
    replica: str
    status: int
    protocol: str = ""  # the MCP-Protocol-Version header of an MCP request


class RoundRobinProxy:
    """An ASGI reverse proxy: each request goes to the next replica of `pool` (name -> base URL).

    Requests are not pinned to a replica (no sticky sessions); `routes` records who answered what: the
    last `MAX_ROUTES` requests (a list, not a deque, so that `routes[before:]` slices as notebook 07 does).
    """

    MAX_ROUTES = 10_000

    def __init__(self, pool: dict[str, str] | None = None, *, timeout: float = 60) -> None:
        self.routes: list[Route] = []
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None
        self.set_pool(pool or {})

    def set_pool(self, pool: dict[str, str]) -> None:
        """Replace the replicas requests are spread over (takes effect with the next request)."""
        self.pool = dict(pool)
        self._cycle = itertools.cycle(list(self.pool.items()))

    def answered_by(self, path: str | None = None) -> Counter[str]:
        """How many requests (to `path`, or all) each replica answered."""
        return Counter(r.replica for r in self.routes if path is None or r.path == path)

    def _route(self, route: Route) -> None:
        self.routes.append(route)
        if len(self.routes) > self.MAX_ROUTES:
            del self.routes[: len(self.routes) - self.MAX_ROUTES]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._forward(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._client = httpx.AsyncClient(timeout=self._timeout, trust_env=False)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _forward(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if not self.pool or self._client is None:
            await _plain(send, 503, b"no replica in the pool")
            return
        name, base = next(self._cycle)
        protocol = dict(scope["headers"]).get(b"mcp-protocol-version", b"").decode("latin-1")
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        client_host = (scope.get("client") or ("", 0))[0]
        headers += [(b"x-forwarded-for", client_host.encode()), (b"x-forwarded-proto", scope["scheme"].encode())]
        url = base + scope["raw_path"].decode() + (f"?{scope['query_string'].decode()}" if scope["query_string"] else "")
        request = self._client.build_request(scope["method"], url, headers=headers, content=body)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TransportError as error:
            self._route(Route(scope["method"], scope["path"], name, 502, protocol))
            await _plain(send, 502, f"replica {name} unreachable: {type(error).__name__}".encode())
            return
        self._route(Route(scope["method"], scope["path"], name, response.status_code, protocol))
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": [(k, v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP]})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()


async def _plain(send: Any, status: int, text: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(text)).encode())]})
    await send({"type": "http.response.body", "body": text})


@dataclass
class Replica:
    """One replica of the workbook server, serving from a background thread of this process."""

    name: str
    url: str  # its own http://127.0.0.1:<port>, known only to the proxy
    handle: BackgroundServer
    audit_log: AuditLog
    redis: RedisStore = field(repr=False)

    @property
    def running(self) -> bool:
        return self.handle.running

    def stop(self) -> None:
        """Close its Redis connections (on its own loop), then stop serving (idempotent; stops even if closing fails)."""
        try:
            if self.handle.running:
                self.handle.run(self.redis.close())
        finally:
            self.handle.stop()


def start_replica(target: Target, registration: ServerRegistration, *, name: str, public_url: str,
                  redis_url: str, storage_dir: Path, stateless: bool = True) -> Replica:
    """Build and serve one replica: OAuth proxy state in Redis, `base_url` = the proxy's public URL."""
    key = signing_key(target)  # the same key for every replica: tokens one issues, the others accept
    store, raw = shared_client_store(redis_url, key)
    storage_dir = Path(storage_dir) / name  # the audit log; OAuth state lives in Redis
    auth = workbook_auth(target, registration, base_url=public_url, storage_dir=storage_dir, client_storage=store)
    audit_log = AuditLog(storage_dir / "audit.jsonl")
    mcp = build_server(target, registration, base_url=public_url, storage_dir=storage_dir, auth=auth,
                       audit_log=audit_log, name=f"obokit workbook ({name})")
    handle = serve_in_background({"mcp": mcp.http_app(stateless_http=stateless)}, name=f"mcp-scale-out-{name}")
    return Replica(name=name, url=handle.url, handle=handle, audit_log=audit_log, redis=raw)


@dataclass
class ScaleOut:
    """Replicas of the workbook server behind one round-robin proxy, sharing one Redis."""

    target: Target
    registration: ServerRegistration = field(repr=False)
    redis_url: str = field(repr=False)
    storage_dir: Path
    public_url: str
    proxy: RoundRobinProxy = field(repr=False)
    proxy_handle: BackgroundServer = field(repr=False)
    replicas: list[Replica] = field(default_factory=list)
    stateless: bool = True

    @property
    def mcp_url(self) -> str:
        return f"{self.public_url}/mcp"

    def start_replicas(self, count: int) -> None:
        """Start `count` replicas (replica-1, replica-2, ...) and put them all in the pool.

        Each replica joins `replicas` as soon as it serves, so `stop()` stops it if a later one fails.
        """
        self.replicas = []
        for i in range(1, count + 1):
            self.replicas.append(
                start_replica(self.target, self.registration, name=f"replica-{i}", public_url=self.public_url,
                              redis_url=self.redis_url, storage_dir=self.storage_dir, stateless=self.stateless))
        self.use_all()

    def use(self, *names: str) -> None:
        """Route requests to these replicas only (the others are drained, as during a rolling deployment)."""
        unknown = set(names) - {r.name for r in self.replicas}
        if unknown:
            raise ValueError(f"no replica named {sorted(unknown)}")
        self.proxy.set_pool({r.name: r.url for r in self.replicas if r.name in names})

    def use_all(self) -> None:
        self.use(*(r.name for r in self.replicas))

    def stop_replicas(self) -> None:
        self.proxy.set_pool({})
        for replica in self.replicas:
            replica.stop()

    def restart(self, *, stateless: bool | None = None) -> None:
        """Stop every replica, then start as many new ones (new processes in a real deployment)."""
        count = len(self.replicas)
        self.stop_replicas()
        if stateless is not None:
            self.stateless = stateless
        self.start_replicas(count)

    def stop(self) -> None:
        self.stop_replicas()
        self.proxy_handle.stop()


def start_scale_out(target: Target, redis_url: str, *, replicas: int = 2, registration: ServerRegistration | None = None,
                    storage_dir: Path | None = None, name: str = "scale-out", stateless: bool = True) -> ScaleOut:
    """Bind the proxy's public URL first, start `replicas` replicas built around it, then serve the proxy."""
    if registration is None:
        from .tenant.provisioning import registrations

        registration = registrations(target)
    sock = bind_loopback("127.0.0.1", 0)
    # "localhost", as in obokit.server: Entra accepts any port on a registered http://localhost redirect URI.
    public_url = f"http://localhost:{sock.getsockname()[1]}"
    proxy = RoundRobinProxy()
    try:
        handle = serve_in_background({"proxy": proxy}, name=f"{name}-proxy", sockets={"proxy": sock})
    except BaseException:
        sock.close()
        raise
    cluster = ScaleOut(target=target, registration=registration, redis_url=redis_url,
                       storage_dir=Path(storage_dir) if storage_dir is not None else default_storage_dir(name),
                       public_url=public_url, proxy=proxy, proxy_handle=handle, stateless=stateless)
    try:
        cluster.start_replicas(replicas)
    except BaseException:
        cluster.stop()
        raise
    return cluster
