"""The emulator's directory state: JSON documents in SQLite, with an in-memory working copy.

Reads come from memory (no I/O on the event loop); writes update memory at once and are
persisted in order on a single writer thread, awaited by the caller, so nothing is lost on
a restart and the event loop never blocks on disk.
"""

from __future__ import annotations

import asyncio
import copy
import json
import sqlite3
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

# on_write(collection, id, before, after): after is None for a deletion; both are the stored objects (read-only)
WriteHook = Callable[[str, str, "dict[str, Any] | None", "dict[str, Any] | None"], None]

COLLECTIONS = (
    "applications",
    "servicePrincipals",
    "oauth2PermissionGrants",
    "appRoleAssignments",
    "users",
    "groups",
    "sites",
    "refreshTokens",
    "meta",  # the state folder's own facts (the profile it was seeded for)
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (collection, id)
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class Store:
    """Collections of JSON objects keyed by `id`, persisted to one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="obokit-store")
        self._db = self._writer.submit(self._connect).result()
        self._data: dict[str, dict[str, dict[str, Any]]] = {c: {} for c in COLLECTIONS}
        self._counters: dict[str, int] = {}
        self._writer.submit(self._load).result()
        self.on_write: WriteHook | None = None  # replication.py watches writes through it

    # -- writer-thread side -------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False)
        db.executescript(_SCHEMA)
        return db

    def _load(self) -> None:
        for collection, oid, body in self._db.execute("SELECT collection, id, body FROM objects"):
            self._data.setdefault(collection, {})[oid] = json.loads(body)
        self._counters = dict(self._db.execute("SELECT name, value FROM counters"))

    def _write(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        with self._db:
            for sql, args in statements:
                self._db.execute(sql, args)

    async def _persist(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._writer, self._write, statements)

    # -- reads ----------------------------------------------------------------------------
    def get(self, collection: str, oid: str) -> dict[str, Any] | None:
        obj = self._data[collection].get(oid)
        return copy.deepcopy(obj) if obj is not None else None

    def all(self, collection: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for o in self._data[collection].values()]

    def find(self, collection: str, **equals: Any) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(o)
            for o in self._data[collection].values()
            if all(o.get(k) == v for k, v in equals.items())
        ]

    def find_one(self, collection: str, **equals: Any) -> dict[str, Any] | None:
        found = self.find(collection, **equals)
        return found[0] if found else None

    def iter_raw(self, collection: str) -> list[tuple[str, dict[str, Any]]]:
        """(id, object) pairs without copying: read-only references for replication.py."""
        return list(self._data[collection].items())

    def peek(self, collection: str, oid: str) -> dict[str, Any] | None:
        """The stored object itself (read-only reference)."""
        return self._data[collection].get(oid)

    # -- writes ---------------------------------------------------------------------------
    def _upsert_statement(self, collection: str, obj: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
        return (
            "INSERT OR REPLACE INTO objects (collection, id, body) VALUES (?, ?, ?)",
            (collection, obj["id"], json.dumps(obj)),
        )

    async def put(self, collection: str, obj: dict[str, Any]) -> dict[str, Any]:
        before = self._data[collection].get(obj["id"])
        stored = self._data[collection][obj["id"]] = copy.deepcopy(obj)
        if self.on_write is not None:
            self.on_write(collection, obj["id"], before, stored)
        await self._persist([self._upsert_statement(collection, obj)])
        return obj

    async def delete(self, collection: str, oid: str) -> bool:
        before = self._data[collection].pop(oid, None)
        existed = before is not None
        if existed and self.on_write is not None:
            self.on_write(collection, oid, before, None)
        await self._persist([("DELETE FROM objects WHERE collection = ? AND id = ?", (collection, oid))])
        return existed

    async def next_seq(self, name: str) -> int:
        value = self._counters.get(name, 0) + 1
        self._counters[name] = value
        await self._persist(
            [("INSERT OR REPLACE INTO counters (name, value) VALUES (?, ?)", (name, value))]
        )
        return value

    def replace_all(self, objects: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Drop everything and load `objects` (used for seeding and reset; blocking, call off-loop)."""
        self._data = {c: {} for c in COLLECTIONS}
        self._counters = {}
        statements: list[tuple[str, tuple[Any, ...]]] = [
            ("DELETE FROM objects", ()),
            ("DELETE FROM counters", ()),
        ]
        for collection, obj in objects:
            self._data[collection][obj["id"]] = copy.deepcopy(obj)
            statements.append(self._upsert_statement(collection, obj))
        self._writer.submit(self._write, statements).result()

    def add_missing(self, collection: str, obj: dict[str, Any]) -> bool:
        """Store `obj` if no object of `collection` has its id (upgrading an older state folder; blocking, call
        off-loop). True when it was added."""
        if obj["id"] in self._data[collection]:
            return False
        self._data[collection][obj["id"]] = copy.deepcopy(obj)
        self._writer.submit(self._write, [self._upsert_statement(collection, obj)]).result()
        return True

    def is_empty(self) -> bool:
        return not any(self._data.values())

    def close(self) -> None:
        self._writer.submit(self._db.close).result()
        self._writer.shutdown(wait=True)
