"""OBO token sources side by side under concurrent load: the source articles' blocking ways and ours.

The workbook server's tools get a Graph token from an `OboTokenSource` (`build_server(obo=...)`).
Three of them, all doing the same OBO exchange at the same token endpoint:

* `requests_per_call` - (a) the second source article: `requests.post` of the jwt-bearer grant on
  every tool call, inside the async tool. It blocks the server's event loop for the whole round trip
  (a new TCP + TLS connection each time), so every other caller waits;
* `msal_per_call` - (b) the first source article: MSAL's `acquire_token_on_behalf_of` on every call,
  inside the async tool; MSAL keeps its connection, but the call blocks the loop just the same;
* `None` - (c) ours, the server's default: `obokit.server.obo_cache.OboCache` (async, cached, coalesced).

`drive` runs N concurrent callers against a tool for a while and returns calls/s and latency
percentiles (`load` does the same for any async call); `LoopLag` measures how long the event loop goes without
turning while work runs on it. `benchmarks/obo_tools.py` prints the full table (and, with
`benchmarks/obo_credentials.py`, cold exchanges per server credential), notebook 05 a small live version.

Example::

    server = start_workbook_server(target, name="blocking", obo=requests_per_call(target, regs))
    async with Client(server.mcp_url, auth=oauth_for(target, account=analyst)) as client:
        result = await drive([client], "check_group_membership", {"group_id": group}, concurrency=10, calls=50)
    result.calls_per_s, result.p50_ms
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests
from fastmcp import Client
from fastmcp.server.dependencies import get_access_token

from .server.obo import JWT_BEARER, OboError, check, confidential_client, token_endpoint
from .server.tools import OboTokenSource


class AppCredentials(Protocol):
    """What the sources need of `obokit.tenant.provisioning.Registrations`."""

    mcp_server_client_id: str
    mcp_server_client_secret: str


def _assertion() -> str:
    token = get_access_token()
    if token is None:
        raise RuntimeError("no authenticated request")
    return token.token


def requests_per_call(target: Any, registration: AppCredentials) -> OboTokenSource:
    """(a) A blocking `requests.post` OBO exchange on every call (do not do this in async code)."""
    url = token_endpoint(target)

    async def obo(scopes: Sequence[str]) -> str:
        form = {"grant_type": JWT_BEARER, "client_id": registration.mcp_server_client_id,
                "client_secret": registration.mcp_server_client_secret, "assertion": _assertion(),
                "scope": " ".join(scopes), "requested_token_use": "on_behalf_of"}
        response = requests.post(url, data=form, timeout=30)  # blocks the event loop
        body = response.json()
        if "access_token" not in body:
            raise OboError(body, response.status_code)
        return str(body["access_token"])

    return obo


def msal_per_call(target: Any, registration: AppCredentials) -> OboTokenSource:
    """(b) MSAL's blocking `acquire_token_on_behalf_of` on every call, inside the async tool."""
    app = confidential_client(target, registration.mcp_server_client_id, registration.mcp_server_client_secret)

    async def obo(scopes: Sequence[str]) -> str:
        return str(check(app.acquire_token_on_behalf_of(_assertion(), list(scopes)))["access_token"])  # blocks

    return obo


@dataclass
class LoadResult:
    """Completed calls of one load run, with their latencies (seconds)."""

    concurrency: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    in_tool: list[float] = field(default_factory=list)  # optional server-side timings (seconds)
    # optional: each request's time in the server and its parts, (seconds, {part: seconds}) (benchmarks/call_split.py)
    requests: list[tuple[float, dict[str, float]]] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return len(self.latencies)

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return 1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    @property
    def p50_ms(self) -> float:
        return self.percentile_ms(0.50)

    @property
    def p95_ms(self) -> float:
        return self.percentile_ms(0.95)


async def load(call: Callable[[int], Awaitable[Any]], *, concurrency: int, duration: float | None = None,
               calls: int | None = None) -> LoadResult:
    """`concurrency` workers await `call(i)` (i: the worker's index) back to back, for `duration` seconds or
    until `calls` calls in total; an exception counts as an error and the run goes on."""
    if (duration is None) == (calls is None):
        raise ValueError("give either duration or calls")
    result = LoadResult(concurrency, 0.0)
    started = time.perf_counter()
    deadline = started + duration if duration is not None else float("inf")
    remaining = [calls if calls is not None else -1]

    async def worker(i: int) -> None:
        while time.perf_counter() < deadline and remaining[0] != 0:
            remaining[0] -= 1
            t0 = time.perf_counter()
            try:
                await call(i)
            except Exception:  # noqa: BLE001 - counted, the run goes on
                result.errors += 1
                continue
            result.latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


async def drive(clients: Sequence[Client], tool: str, arguments: dict[str, Any], *, concurrency: int,
                duration: float | None = None, calls: int | None = None) -> LoadResult:
    """`concurrency` callers call `tool` back to back, caller i through `clients[i % len(clients)]`
    (one signed-in client per user), for `duration` seconds or until `calls` calls in total."""
    return await load(lambda i: clients[i % len(clients)].call_tool(tool, arguments), concurrency=concurrency,
                      duration=duration, calls=calls)


class LoopLag:
    """How late a ticker on the running event loop wakes: `async with LoopLag() as lag: ...`, then `lag.max_ms`.

    The ticker sleeps `interval` seconds at a time; a wake-up later than asked is time the loop spent running
    something else without yielding, waiting for the GIL, or waiting for a CPU (a busy machine), and every other
    request on the loop waits it out too. `max_busy_ms` counts of each delay only as much as this process was on a
    CPU meanwhile (all its threads), which leaves out the time the machine gave to other processes.
    """

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.lags: list[tuple[float, float]] = []  # (seconds late, this process's CPU seconds meanwhile), per wake-up
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            t0, cpu0 = time.perf_counter(), time.process_time()
            await asyncio.sleep(self.interval)
            late = max(0.0, time.perf_counter() - t0 - self.interval)
            self.lags.append((late, time.process_time() - cpu0))

    async def __aenter__(self) -> "LoopLag":
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)  # the ticker runs before the measured work starts
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    @property
    def max_ms(self) -> float:
        """The largest delay, ms."""
        return 1000 * max((late for late, _ in self.lags), default=0.0)

    @property
    def max_busy_ms(self) -> float:
        """The largest delay, counting only the part this process spent on a CPU, ms."""
        return 1000 * max((min(late, cpu) for late, cpu in self.lags), default=0.0)


async def bearer_token(mcp_url: str, auth: Any) -> str:
    """Sign in once through `auth` (FastMCP's OAuth client provider) and return its MCP access token.

    The mcp SDK's OAuth provider holds a lock for each request's whole round trip, so one provider
    carries one request at a time: load clients send the token as a plain bearer instead.
    """
    async with Client(mcp_url, auth=auth) as client:
        await client.list_tools()
    return str(auth.context.current_tokens.access_token)


def obo_exchanges(emulator: Any) -> dict[tuple[str, str], int]:
    """The OBO exchanges the emulator has answered so far, per (user object id, scope)."""
    return {(e["user"], e["scope"]): e["count"] for e in emulator.stats()["obo_exchanges"]}


def exchanges_since(emulator: Any, before: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    """New OBO exchanges per (user, scope) since the `obo_exchanges` snapshot `before`."""
    now = obo_exchanges(emulator)
    return {key: n - before.get(key, 0) for key, n in now.items() if n > before.get(key, 0)}


__all__ = ["LoadResult", "LoopLag", "bearer_token", "drive", "exchanges_since", "load", "msal_per_call", "obo_exchanges",
           "requests_per_call"]
