"""Serve ASGI apps in the background of a Python process or Jupyter kernel.

The servers run on a daemon thread with an event loop of their own, never on the kernel's
loop: a notebook cell that calls a synchronous client (MSAL, requests) would otherwise
block the very loop that has to answer it. Sockets are bound in the caller, on free
ports, so a bind error is an ordinary exception in the cell and the kernel survives.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import random
import socket
import sys
import threading
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import uvicorn

T = TypeVar("T")

# Two optional imports that cost the workbook time and give it nothing; `None` in sys.modules makes
# `import x` fail at once, and both importers treat the ImportError as "not installed":
# * sniffio: httpcore tries it for every lock it sets up, and a failed import searches sys.path again
#   each time (~0.5 ms, several times per request);
# * rfc3987_syntax: jsonschema (which the MCP client imports on its first tool call) compiles 38
#   grammars at import time (1.5 s) for the rarely used "iri" format, which nothing here checks.
for _optional in ("sniffio", "rfc3987_syntax"):
    if _optional not in sys.modules and (_optional == "rfc3987_syntax" or importlib.util.find_spec(_optional) is None):
        sys.modules[_optional] = None  # type: ignore[assignment]
_registry: dict[str, "BackgroundServer"] = {}
_registry_lock = threading.Lock()


class _DropShutdownNoise(logging.Filter):
    """uvicorn logs an ERROR when idle keep-alive connections outlive the graceful-shutdown wait;
    for an in-kernel server that is expected, and stderr noise breaks nbval output comparison."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "timeout graceful shutdown exceeded" not in record.getMessage()


logging.getLogger("uvicorn.error").addFilter(_DropShutdownNoise())


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host (the kernel or the CLI)."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield


def bind_loopback(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening socket on `host`; port 0 lets the OS pick a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose proto says TCP.
    # Without it every response written in two parts (headers, body) waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    if hasattr(socket, "SO_EXCLUSIVEADDRUSE"):  # Windows, where SO_REUSEADDR would let another socket take the port
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def ephemeral_port_range() -> tuple[int, int]:
    """The ports the OS hands out for port 0 and for outgoing connections: Linux's setting where it can be
    read, else the IANA range (macOS and Windows use it by default)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return 49152, 65535
    return low, high


def bind_lasting_port(host: str = "127.0.0.1", *, attempts: int = 50) -> socket.socket:
    """A listening socket on a free port *below* the ephemeral range, picked at random.

    A port from the ephemeral range (what port 0 gives) is free now, but once this server stops, any
    outgoing connection on the machine may borrow it; a server that wants to come back on the same
    address later (its clients know it by URL) does better with a port nothing is handed
    automatically. Falls back to port 0 when the ephemeral range leaves no room below it.
    """
    low, _ = ephemeral_port_range()
    floor = 10000  # clear of the well-known and most registered service ports
    for port in random.sample(range(floor, low), k=min(attempts, max(low - floor, 0))):
        try:
            return bind_loopback(host, port)
        except OSError:
            continue  # someone listens there: try another
    return bind_loopback(host, 0)


@dataclass
class BackgroundServer:
    """One or more ASGI apps served from one background thread; `urls` maps each app's name to its base URL."""

    name: str
    urls: dict[str, str] = field(default_factory=dict)
    loop: asyncio.AbstractEventLoop | None = None
    _servers: list[uvicorn.Server] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _error: BaseException | None = None

    @property
    def url(self) -> str:
        """The base URL of the first (or only) app."""
        return next(iter(self.urls.values()))

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30) -> T:
        """Run a coroutine on the servers' loop from another thread and wait for its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, timeout: float = 10) -> None:
        """Ask every server to exit and wait for the thread to finish (idempotent)."""
        for server in self._servers:
            server.should_exit = True
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)
        with _registry_lock:
            if _registry.get(self.name) is self:
                del _registry[self.name]

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> "BackgroundServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_previous(name: str) -> None:
    """Stop the background server registered as `name`, if any (frees its port for a restart)."""
    with _registry_lock:
        previous = _registry.get(name)
    if previous is not None:
        previous.stop()


def serve_in_background(
    apps: Mapping[str, Any],
    *,
    name: str,
    host: str = "127.0.0.1",
    ports: Mapping[str, int] | None = None,
    sockets: Mapping[str, socket.socket] | None = None,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    timeout: float = 15,
) -> BackgroundServer:
    """Start `apps` (name -> ASGI app) on ephemeral ports; re-using `name` stops the previous servers first.

    Pass `sockets` (name -> bound socket, see `bind_loopback`) when an app must know its own URL
    before it is built.
    """
    stop_previous(name)
    scheme = "https" if ssl_certfile else "http"
    url_host = f"[{host}]" if ":" in host else host
    handle = BackgroundServer(name=name)
    bound: list[socket.socket] = []
    try:
        for app_name, app in apps.items():
            sock = (sockets or {}).get(app_name) or bind_loopback(host, (ports or {}).get(app_name, 0))
            bound.append(sock)
            config = uvicorn.Config(
                app,
                log_level="warning",
                access_log=False,
                lifespan="auto",
                ssl_certfile=ssl_certfile,
                ssl_keyfile=ssl_keyfile,
                # Idle keep-alive TLS connections would otherwise hold every stop for seconds.
                timeout_graceful_shutdown=0.5,
                # uvicorn's default (5 s) equals the device-code poll interval: MSAL's next poll could meet a
                # connection the server is closing (RemoteDisconnected). Entra's front doors keep them longer.
                timeout_keep_alive=75,
            )
            handle._servers.append(_QuietServer(config))
            handle.urls[app_name] = f"{scheme}://{url_host}:{sock.getsockname()[1]}"
    except BaseException:
        for sock in bound:
            sock.close()
        raise

    ready = threading.Event()

    def runner() -> None:
        async def main() -> None:
            handle.loop = asyncio.get_running_loop()
            ready.set()
            await asyncio.gather(*(s.serve(sockets=[sock]) for s, sock in zip(handle._servers, bound)))

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            handle._error = exc
            ready.set()
        finally:
            for sock in bound:
                sock.close()

    handle._thread = threading.Thread(target=runner, name=f"obokit-{name}", daemon=True)
    handle._thread.start()
    deadline = time.monotonic() + timeout
    ready.wait(timeout)
    while not all(s.started for s in handle._servers):
        if handle._error is not None or not handle._thread.is_alive():
            raise RuntimeError(f"server {name!r} failed to start: {handle._error!r}")
        if time.monotonic() > deadline:
            handle.stop()
            raise TimeoutError(f"server {name!r} did not start within {timeout} s")
        time.sleep(0.01)
    with _registry_lock:
        _registry[name] = handle
    return handle
