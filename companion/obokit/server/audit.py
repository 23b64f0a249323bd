"""Who called which tool, which downstream API the tool called for them, and how it ended.

The `AuditTrail` middleware (`obokit.server.middleware`) writes one `AuditEntry` per tool call into an
`AuditLog`: the last `keep` entries in memory for the notebook, and every entry appended to a JSON
Lines file when one is given. The file is written by a thread of the log's own, never on the
server's event loop: `AuditTrail` awaits `AuditLog.arecord`, which returns once the entry is in the
file (entries that arrive together are written in one append), and `close`/`aclose` (the server's
lifespan end) write whatever is still pending. An entry names people by `oid` and user principal
name and APIs by method and path; it never holds a token, a secret or a tool's arguments.

A failed append is not hidden: `arecord` raises `AuditWriteError`, `last_error` keeps the cause, and
`flush` returns False while the last append failed.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime as dt
import html
import json
import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
WRITER_IDLE_S = 2.0  # the writer thread ends after this long without entries (no thread outlives its server for long)


class AuditWriteError(OSError):
    """An audit entry could not be appended to the audit file (it is still kept in memory)."""


@dataclass(frozen=True)
class AuditEntry:
    timestamp: str  # ISO 8601, UTC
    oid: str
    upn: str
    tool: str
    outcome: str  # "ok", "denied: …", "refused: …", "error: …"
    downstream: tuple[str, ...] = field(default_factory=tuple)  # e.g. "GET /me/transitiveMemberOf/…"


class AuditLog:
    """The last `keep` `AuditEntry` in memory; all of them appended to the JSON Lines file `path`, off the loop."""

    def __init__(self, path: Path | None = None, *, keep: int = 10_000) -> None:
        self.path = path
        self._entries: deque[AuditEntry] = deque(maxlen=keep)
        self._lock = threading.Condition()
        self._pending: list[tuple[str, asyncio.Future[None] | None]] = []  # lines not yet in the file
        self._writing = False
        self._closing = False  # close() asked the writer to end once nothing is pending
        self._writer: threading.Thread | None = None  # the one writer thread; it clears this itself on exit
        self.last_error: BaseException | None = None  # why the last append failed (None: it succeeded)
        self.writer_thread_id: int | None = None  # the thread that last appended to the file
        _open_logs.add(self)

    def record(self, *, oid: str, upn: str, tool: str, outcome: str, downstream: list[str] | tuple[str, ...] = ()) -> AuditEntry:
        """Keep the entry and queue it for the file; returns at once (the writer thread appends it)."""
        return self._record(None, oid=oid, upn=upn, tool=tool, outcome=outcome, downstream=downstream)

    async def arecord(self, *, oid: str, upn: str, tool: str, outcome: str,
                      downstream: list[str] | tuple[str, ...] = ()) -> AuditEntry:
        """`record`, then wait (without blocking the loop) until the entry is in the file.

        Raises `AuditWriteError` when the append failed. The entry is queued before the first await,
        so a cancellation of the caller cuts short the wait, never the record.
        """
        written = asyncio.get_running_loop().create_future() if self.path is not None else None
        entry = self._record(written, oid=oid, upn=upn, tool=tool, outcome=outcome, downstream=downstream)
        if written is not None:
            await written
        return entry

    def _record(self, written: asyncio.Future[None] | None, *, oid: str, upn: str, tool: str, outcome: str,
                downstream: list[str] | tuple[str, ...]) -> AuditEntry:
        entry = AuditEntry(
            timestamp=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
            oid=oid, upn=upn, tool=tool, outcome=outcome, downstream=tuple(downstream),
        )
        with self._lock:
            self._entries.append(entry)
            if self.path is not None:
                self._pending.append((json.dumps(asdict(entry)) + "\n", written))
                if self._writer is None:  # a writer still finishing after close() takes this line too
                    self._closing = False
                    self._writer = threading.Thread(target=self._write_loop, name="obokit-audit", daemon=True)
                    self._writer.start()
                self._lock.notify_all()
        return entry

    def _write_loop(self) -> None:
        """The writer thread: append every pending line in one write, then wake whoever waits for them."""
        while True:
            with self._lock:
                if not self._pending and not self._closing:
                    self._lock.wait_for(lambda: self._pending or self._closing, timeout=WRITER_IDLE_S)
                if not self._pending:  # closed, or idle for a while: a later `record` starts a new writer
                    self._writer = None  # under the lock: never two writers appending at once
                    return
                batch, self._pending, self._writing = self._pending, [], True
            error: BaseException | None = None
            try:
                assert self.path is not None
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_BINARY", 0), 0o600)
                with os.fdopen(fd, "a") as handle:
                    handle.write("".join(line for line, _ in batch))
                self.writer_thread_id = threading.get_ident()
            except Exception as exc:  # noqa: BLE001 - the writer must live on: callers wait for it
                log.exception("could not append %d entries to the audit file %s", len(batch), self.path)
                error = exc
            finally:
                with self._lock:
                    self._writing = False
                    self.last_error = error
                    self._lock.notify_all()
                _wake([waiter for _, waiter in batch if waiter is not None], error)

    def flush(self, timeout: float | None = 10) -> bool:
        """Wait until every recorded entry is written: False if `timeout` passed first or the last append failed."""
        with self._lock:
            done = self._lock.wait_for(lambda: not self._pending and not self._writing, timeout)
            return done and self.last_error is None

    def close(self, timeout: float | None = 10) -> None:
        """Write what is pending and stop the writer thread (a later `record` starts a new one)."""
        with self._lock:
            writer, self._closing = self._writer, True
            self._lock.notify_all()
        if writer is not None and writer is not threading.current_thread():
            writer.join(timeout)

    async def aclose(self) -> None:
        """`close` from async code (the server's lifespan), off the event loop."""
        await asyncio.to_thread(self.close)

    @property
    def entries(self) -> list[AuditEntry]:
        with self._lock:
            return list(self._entries)

    def __iter__(self) -> Iterator[AuditEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def clear(self) -> None:
        """Forget the in-memory entries (the JSON Lines file is left alone)."""
        with self._lock:
            self._entries.clear()

    def table(self, columns: tuple[str, ...] = ("upn", "tool", "downstream", "outcome")) -> "AuditTable":
        """The entries as a table for a notebook (HTML, with a plain-text fallback)."""
        return AuditTable(self.entries, columns)


def _wake(waiters: list[asyncio.Future[None]], error: BaseException | None = None) -> None:
    """Resolve futures of (possibly several) event loops from the writer thread, one hop per loop;
    with `error`, they fail with `AuditWriteError` instead."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for waiter in waiters:
        by_loop.setdefault(waiter.get_loop(), []).append(waiter)
    for loop, futures in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, futures, error)
        except RuntimeError:  # that loop is closed: nobody waits any more
            pass


def _resolve(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            failure = AuditWriteError(f"audit entry not written: {type(error).__name__}: {error}")
            failure.__cause__ = error
            future.set_exception(failure)


_open_logs: "weakref.WeakSet[AuditLog]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """At interpreter exit, write the entries of logs nobody closed (the writer threads are daemons)."""
    for audit_log in list(_open_logs):
        audit_log.close(timeout=5)


class AuditTable:
    """Rows of an audit log; `repr` is a fixed-width text table, `_repr_html_` an HTML table."""

    def __init__(self, entries: list[AuditEntry], columns: tuple[str, ...]) -> None:
        self.columns = columns
        self.rows = [[_cell(entry, name) for name in columns] for entry in entries]

    def __repr__(self) -> str:
        widths = [max([len(name)] + [len(row[i]) for row in self.rows]) for i, name in enumerate(self.columns)]
        line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
        return "\n".join([line(self.columns), line(["-" * w for w in widths]), *(line(r) for r in self.rows)])

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td style='text-align:left'>{html.escape(v)}</td>" for v in row) + "</tr>" for row in self.rows
        )
        return f"<table class='obokit-audit'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(entry: AuditEntry, name: str) -> str:
    value = getattr(entry, name)
    if name == "downstream":
        return ", ".join(value) or "-"
    return str(value)
