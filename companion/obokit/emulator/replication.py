"""Replication delay (the tenant profile): directory writes reach the token endpoint and Graph reads late.

Entra's directory is eventually consistent: "A successful write to Microsoft Entra does not guarantee that an
immediate read will reflect that change ... it is normal for a newly created object to return a 'Not Found'
[and] a recently updated property to not yet be visible" (devblogs.microsoft.com/identity/designing-for-
eventual-consistency-for-microsoft-entra, 2026). Seen from clients: AADSTS700016 for an app created seconds
before (AzureAD/microsoft-authentication-library-for-dotnet#3706, "Retry after a few seconds will often work"),
a new client secret that "does not work right away ... latency from 4-18 seconds" (microsoftgraph/
microsoft-graph-docs#17966), AADSTS65001 "a short time later (30 secs) it works" after consent (MSAL.NET#2612),
a new app role assignment missing from `appRoleAssignedTo` for 30-60 s (microsoft-graph-docs#15855).

`Replication` watches the store's writes to the replicated collections and keeps, per object, the version a
reader sees until each newer version's random delay has passed. `ReplicaView` is the store as those readers
(the identity side, Graph GET/list) see it. Writers keep using the store itself: Graph writes that name a
just-created object succeed here. Public evidence says they sometimes do not (a PATCH after a create can 404,
blogs.aaddevsup.xyz 2021/08 "Why do I sometimes get a 404 ..."; POST /servicePrincipals for a new app can
answer 400 "... does not reference a valid application object", Azure/azure-cli#1332): the emulator keeps the
write path consistent, as its brief asks. Deletions are visible at once (a list can lag for removals too,
#15855: not emulated). Pending versions live in memory only: a restart makes everything visible.
"""

from __future__ import annotations

import copy
import random
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .store import Store

REPLICATED = ("applications", "servicePrincipals", "oauth2PermissionGrants", "appRoleAssignments")


@dataclass
class _Lag:
    visible: dict[str, Any] | None  # what readers see now (None: not there yet)
    queue: deque[tuple[float, dict[str, Any]]] = field(default_factory=deque)  # (visible_at, version)


class Replication:
    """Per-object delays of the store's writes; `delay` is (low, high) seconds, drawn per write."""

    def __init__(self, store: Store, delay: tuple[float, float]) -> None:
        low, high = delay
        if low < 0 or high < low:
            raise ValueError(f"replication delay must be 0 <= low <= high, not {delay!r}")
        self.store = store
        self.delay = (float(low), float(high))
        self._lags: dict[tuple[str, str], _Lag] = {}
        self._lock = threading.Lock()
        store.on_write = self._on_write

    def _on_write(self, collection: str, oid: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
        if collection not in REPLICATED or self.delay[1] <= 0:
            return
        key = (collection, oid)
        with self._lock:
            if after is None:  # deletions are immediate
                self._lags.pop(key, None)
                return
            lag = self._lags.setdefault(key, _Lag(visible=before))
            at = time.monotonic() + random.uniform(*self.delay)
            if lag.queue:
                at = max(at, lag.queue[-1][0])  # versions appear in order
            lag.queue.append((at, after))

    def _visible(self, key: tuple[str, str]) -> tuple[bool, dict[str, Any] | None]:
        """(lagging?, the version readers see); caller holds the lock."""
        lag = self._lags.get(key)
        if lag is None:
            return False, None
        now = time.monotonic()
        while lag.queue and lag.queue[0][0] <= now:
            lag.visible = lag.queue.popleft()[1]
        if not lag.queue:
            del self._lags[key]
            return False, None
        return True, lag.visible

    def settle(self, collection: str, oid: str) -> None:
        """Make the latest version of one object visible now."""
        with self._lock:
            self._lags.pop((collection, oid), None)

    def settle_all(self) -> None:
        """Make every write visible now (tests; `reset`)."""
        with self._lock:
            self._lags.clear()

    def pending(self) -> int:
        """How many objects readers still see in an older version (or not at all)."""
        with self._lock:
            return sum(self._visible(key)[0] for key in list(self._lags))

    def view(self) -> "ReplicaView":
        return ReplicaView(self)

    def iter_visible(self, collection: str) -> Iterator[dict[str, Any]]:
        """The collection's objects as readers see them (references: callers copy)."""
        with self._lock:
            items = []
            for oid, obj in self.store.iter_raw(collection):
                lagging, visible = self._visible((collection, oid)) if collection in REPLICATED else (False, None)
                if not lagging:
                    items.append(obj)
                elif visible is not None:
                    items.append(visible)
        return iter(items)

    def get_visible(self, collection: str, oid: str) -> dict[str, Any] | None:
        with self._lock:
            lagging, visible = self._visible((collection, oid)) if collection in REPLICATED else (False, None)
        return visible if lagging else self.store.peek(collection, oid)


class ReplicaView:
    """The read half of `Store` (get, all, find, find_one) as a lagging replica answers it."""

    def __init__(self, replication: Replication) -> None:
        self.replication = replication

    def get(self, collection: str, oid: str) -> dict[str, Any] | None:
        obj = self.replication.get_visible(collection, oid)
        return copy.deepcopy(obj) if obj is not None else None

    def all(self, collection: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for o in self.replication.iter_visible(collection)]

    def find(self, collection: str, **equals: Any) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(o)
            for o in self.replication.iter_visible(collection)
            if all(o.get(k) == v for k, v in equals.items())
        ]

    def find_one(self, collection: str, **equals: Any) -> dict[str, Any] | None:
        found = self.find(collection, **equals)
        return found[0] if found else None
