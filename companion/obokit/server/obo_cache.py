"""An OBO token cache for async servers: one exchange per (user assertion, scopes), shared by all callers.

`OboCache` wraps any `obokit.server.obo.OboExchange` (an async `(assertion, scopes) -> token response`):

* a result is reused until `skew` seconds before its `expires_in` runs out;
* concurrent first calls for the same key wait on one in-flight exchange (request coalescing);
* a failure is never cached: every waiter of that exchange gets the `OboError`, the next call asks again
  (unlike MSAL, which repeats an identical failed answer for 60 s, a retry after consent succeeds at once);
* keys are SHA-256 digests of the assertion and the sorted scopes, so no token is ever a dict key,
  a log line or part of `repr()`;
* at most `max_entries` results are kept: expired ones are dropped first, then the least recently used.

Nothing blocks: the exchange is an `await`, and the cache itself does no I/O. Use one cache per event loop.

Example::

    from obokit.server.obo_cache import OboCache

    cache = OboCache.for_app(target, client_id, client_secret)   # raw jwt-bearer POSTs over one httpx pool
    graph_token = await cache.token(user_assertion, ["https://graph.microsoft.com/User.Read"])
    await cache.token(user_assertion, ["https://graph.microsoft.com/User.Read"])  # from the cache
    cache.stats.exchanges, cache.stats.hits      # 1, 1
    await cache.aclose()
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from .credentials import ServerCredential
from .obo import HasAuthority, OboExchange, raw_obo_exchange


@dataclass
class CacheStats:
    """What the cache did: `exchanges` started, `hits` served from the cache, `coalesced` callers that
    waited on another caller's exchange, `failures` exchanges that raised, `evicted` entries dropped."""

    exchanges: int = 0
    hits: int = 0
    coalesced: int = 0
    failures: int = 0
    evicted: int = 0


@dataclass(frozen=True)
class _Entry:
    response: dict[str, Any]
    refresh_at: float  # clock time after which the entry is no longer served


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def cache_key(assertion: str, scopes: Sequence[str]) -> str:
    """The cache key: SHA-256 of the assertion and the sorted, de-duplicated scopes (hex)."""
    material = assertion + "\x00" + " ".join(sorted(set(scopes)))
    return hashlib.sha256(material.encode()).hexdigest()


class OboCache:
    """OBO results per (assertion, scopes) until shortly before expiry, with coalesced first calls."""

    def __init__(
        self,
        exchange: OboExchange,
        *,
        skew: float = 300.0,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
        event_hooks: Mapping[str, list[Callable[..., Any]]] | None = None,
    ) -> None:
        self.exchange = exchange
        self.event_hooks = event_hooks  # httpx event hooks of `for_app`'s pool (e.g. `obokit.trace.Trace`); None: none
        self.skew = skew
        self.max_entries = max_entries
        self.clock = clock
        self.stats = CacheStats()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._http: httpx.AsyncClient | None = None

    @classmethod
    def for_app(cls, target: HasAuthority, client_id: str, credential: str | ServerCredential, **options: Any) -> "OboCache":
        """A cache over `raw_obo_exchange` for the middle tier's app (a secret string or any credential of
        `obokit.server.credentials`), reusing one httpx connection pool."""

        async def exchange(assertion: str, scopes: Sequence[str]) -> dict[str, Any]:
            return await raw_obo_exchange(target, client_id, credential, assertion, scopes, http=cache._pool())

        cache = cls(exchange, **options)
        return cache

    async def get(self, assertion: str, scopes: Sequence[str]) -> dict[str, Any]:
        """Entra's token response for `assertion` and `scopes`: cached, joined in flight, or exchanged now."""
        key = cache_key(assertion, scopes)
        entry = self._entries.get(key)
        if entry is not None:
            if self.clock() < entry.refresh_at:
                self._entries.move_to_end(key)
                self.stats.hits += 1
                return dict(entry.response)  # a copy: a caller that changes it cannot change the cache
            del self._entries[key]
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._exchange(key, assertion, list(scopes)))
            future.add_done_callback(_retrieve)  # every waiter may have given up: no "never retrieved" noise
            self._inflight[key] = future
        else:
            self.stats.coalesced += 1
        # shield: a caller that gives up (cancelled) does not cancel the exchange the others wait on.
        return dict(await asyncio.shield(future))  # a copy each: the waiters share one response

    async def token(self, assertion: str, scopes: Sequence[str]) -> str:
        """Just the downstream access token of `get`."""
        return str((await self.get(assertion, scopes))["access_token"])

    async def _exchange(self, key: str, assertion: str, scopes: list[str]) -> dict[str, Any]:
        self.stats.exchanges += 1
        started = self.clock()
        try:
            response = await self.exchange(assertion, scopes)
        except BaseException:
            self.stats.failures += 1
            raise
        else:
            lifetime = float(response.get("expires_in") or 0)
            self._store(key, _Entry(response, started + lifetime - self.skew))
            return response
        finally:
            self._inflight.pop(key, None)

    def _store(self, key: str, entry: _Entry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        if len(self._entries) <= self.max_entries:
            return
        now = self.clock()
        for stale in [k for k, e in self._entries.items() if e.refresh_at <= now]:
            del self._entries[stale]
            self.stats.evicted += 1
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.stats.evicted += 1

    def _pool(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=30, event_hooks=dict(self.event_hooks or {}))
        return self._http

    def clear(self) -> None:
        """Forget every cached result (in-flight exchanges still finish)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        s = self.stats
        return (f"OboCache(entries={len(self)}, exchanges={s.exchanges}, hits={s.hits}, "
                f"coalesced={s.coalesced}, failures={s.failures})")

    async def aclose(self) -> None:
        """Close the connection pool of `for_app` (the cache stays usable and reopens it on demand)."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None


__all__ = ["CacheStats", "OboCache", "cache_key"]
