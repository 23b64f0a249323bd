"""Where a warm tool call's time goes: client, auth layer, MCP stack, tool (benchmarks/obo_tools.py, (c) and (d)).

Timestamps, not cProfile: cProfile sees only the server's CPU on its loop thread (a coroutine's waits, e.g. the
Graph round trip, are not on its stack) and slows what it measures. Instead, in the server child (`--serve`):

* `CallTimer.wrap` is the outermost ASGI layer of the server's HTTP app: for each `tools/call` POST it records the
  time from the request reaching the app until the last response bytes were handed to the transport (*server*);
* `CallTimer.instrument_auth` times the auth provider's `verify_token` (the whole auth layer of a request) and its
  parts: behind the OAuth proxy the proxy's own JWT (`jwt_issuer.verify_token`), its store lookups (JTI mapping,
  upstream token) and the upstream Entra token's verification (`EntraTokenVerifier`); in direct mode the Entra
  token's verification;
* the benchmark's `GraphApi.get` timer gives the *tool*'s part: the OBO token (a cache hit) plus the Graph request.

In the callers' process: *client* = end-to-end latency - server time, per call (the MCP client, httpx, the
loopback and uvicorn's parsing of the request); *MCP stack* = server - auth - tool (Starlette, the MCP SDK's session and streams, FastMCP and its
middleware, JSON). With one caller the calls are sequential, so the n-th record of each list is the n-th call.
Each column is the median over the level's calls (medians need not add up exactly to the end-to-end p50).
"""

from __future__ import annotations

import inspect
import statistics
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from fastmcp.server.auth import RemoteAuthProvider
from fastmcp.server.auth.oauth_proxy import OAuthProxy

AUTH = "auth"
# The auth layer's parts, in the order printed.
PROXY_JWT, STORE, UPSTREAM, ENTRA = "proxy JWT", "store lookup", "upstream token verification", "Entra token verification"
AUTH_PARTS = (PROXY_JWT, STORE, UPSTREAM, ENTRA)

_current: ContextVar[dict[str, float] | None] = ContextVar("bench_request_times", default=None)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


def _timed(owner: Any, name: str, key: str) -> None:
    """Replace `owner.name` (an instance's method, sync or async) by one adding its wall time to the request's `key`."""
    method = getattr(owner, name)

    def add(t0: float) -> None:
        record = _current.get()
        if record is not None:
            record[key] = record.get(key, 0.0) + time.perf_counter() - t0

    if inspect.iscoroutinefunction(method):
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await method(*args, **kwargs)
            finally:
                add(t0)
        setattr(owner, name, timed_async)
    else:
        def timed_sync(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                add(t0)
        setattr(owner, name, timed_sync)


class CallTimer:
    """Server-side timestamps of each `tools/call` request (see the module's docstring); `take()` hands them over."""

    def __init__(self) -> None:
        self.requests: list[tuple[float, dict[str, float]]] = []  # (server seconds, {auth part: seconds})

    def wrap(self, app: ASGIApp) -> ASGIApp:
        async def timed(scope: Scope, receive: Callable[[], Awaitable[Message]],
                        send: Callable[[Message], Awaitable[None]]) -> None:
            if scope["type"] != "http" or scope.get("method") != "POST":
                return await app(scope, receive, send)
            t0, body, end = time.perf_counter(), bytearray(), [0.0]
            record: dict[str, float] = {}
            token = _current.set(record)

            async def receive_body() -> Message:
                message = await receive()
                if message.get("type") == "http.request":
                    body.extend(message.get("body", b""))
                return message

            async def send_timed(message: Message) -> None:
                await send(message)
                if message["type"] == "http.response.body" and message.get("body"):
                    end[0] = time.perf_counter()  # the response's last bytes are with the transport

            try:
                await app(scope, receive_body, send_timed)
            finally:
                _current.reset(token)
            if b'"tools/call"' in body and end[0]:
                self.requests.append((end[0] - t0, dict(record)))

        return timed

    @staticmethod
    def instrument_auth(auth: Any) -> None:
        """Time `auth.verify_token` and its parts (the OAuth proxy's or the direct mode's)."""
        _timed(auth, "verify_token", AUTH)
        if isinstance(auth, OAuthProxy):
            _timed(auth.jwt_issuer, "verify_token", PROXY_JWT)
            _timed(auth._jti_mapping_store, "get", STORE)  # private: FastMCP 4.1.2's proxy stores
            _timed(auth._upstream_token_store, "get", STORE)
            _timed(auth._token_validator, "verify_token", UPSTREAM)
        elif isinstance(auth, RemoteAuthProvider):
            _timed(auth.token_verifier, "verify_token", ENTRA)

    def take(self) -> list[tuple[float, dict[str, float]]]:
        taken, self.requests = self.requests, []
        return taken


@dataclass
class Split:
    """Medians (ms) of one level's calls: end to end and its parts."""

    calls: int
    end_to_end: float
    server: float
    client: float
    auth: float
    auth_parts: dict[str, float]
    mcp_stack: float
    tool: float
    aligned: bool  # one server record and one tool time per call (per-call differences), else medians subtracted

    @property
    def parts_sum(self) -> float:
        return self.client + self.auth + self.mcp_stack + self.tool


def _median_ms(values: list[float]) -> float:
    return 1000 * statistics.median(values) if values else float("nan")


def split(latencies: list[float], requests: list[tuple[float, dict[str, float]]], in_tool: list[float]) -> Split:
    """The split of one level's calls from the callers' latencies, the server's request records and tool times."""
    server = [s for s, _ in requests]
    auth = [r.get(AUTH, 0.0) for _, r in requests]
    parts = {p: _median_ms([r.get(p, 0.0) for _, r in requests]) for p in AUTH_PARTS
             if any(p in r for _, r in requests)}
    aligned = len(latencies) == len(requests) == len(in_tool) > 0
    if aligned:
        client = _median_ms([e - s for e, s in zip(latencies, server)])
        stack = _median_ms([s - a - t for s, a, t in zip(server, auth, in_tool)])
    else:
        client = _median_ms(latencies) - _median_ms(server)
        stack = _median_ms(server) - _median_ms(auth) - _median_ms(in_tool)
    return Split(len(latencies), _median_ms(latencies), _median_ms(server), client, _median_ms(auth), parts, stack,
                 _median_ms(in_tool), aligned)


def print_split(splits: dict[str, tuple[str, Split]], *, graph_ms: float, graph_alone_ms: float | None) -> None:
    """The table: one row per implementation (label, split), then the legend."""
    floor = f"{graph_alone_ms:.1f} ms measured" if graph_alone_ms is not None else "not measured"
    print(f"\nper-call time split, warm calls (medians, ms; Graph latency injected {graph_ms:g} ms, "
          f"Graph round trip alone {floor}):\n")
    print("| implementation | calls | end-to-end p50 | client | auth layer | auth: parts | MCP stack | "
          "tool (OBO hit + Graph) | p50 - Graph round trip | p50 - injected Graph latency |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for label, s in splits.values():
        parts = ", ".join(f"{name} {ms:.2f}" for name, ms in s.auth_parts.items()) or "-"
        above = f"{s.end_to_end - graph_alone_ms:.1f}" if graph_alone_ms is not None else "-"
        print(f"| {label} | {s.calls}{'' if s.aligned else ' (counts differ: medians subtracted)'} | {s.end_to_end:.1f} | {s.client:.1f} | {s.auth:.2f} | {parts} | "
              f"{s.mcp_stack:.1f} | {s.tool:.1f} | {above} | {s.end_to_end - graph_ms:.1f} |")
    print("\nmethod: timestamps, not cProfile (which sees only CPU on the server's loop thread, not the awaited Graph"
          "\nround trip). In the server process: the outermost ASGI layer times each tools/call request (arrival to the"
          "\nlast response bytes), FastMCP's auth provider's verify_token times the auth layer (proxy: its own JWT, the"
          "\nstore lookups, the upstream Entra token's verification; direct: the Entra token's verification), and"
          "\nGraphApi.get the tool (OBO cache hit + the Graph request). client = end-to-end - server per call (MCP"
          "\nclient, httpx, loopback, uvicorn's HTTP parsing); MCP stack = server - auth - tool (Starlette, the MCP SDK's"
          "\nsession, FastMCP and its middleware)."
          "\nGraph round trip alone: the tool's Graph request sent from the callers' process with a warm connection.")


__all__ = ["CallTimer", "Split", "print_split", "split"]
