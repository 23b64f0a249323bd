"""Who called which tool, which downstream API the tool called for them, and how it ended.

The `AuditTrail` middleware (`obokit.middleware`) writes one `AuditEntry` per tool call into an
`AuditLog`: in memory for the notebook, and appended to a JSON Lines file when one is given.
An entry names people by `oid` and user principal name and APIs by method and path; it never
holds a token, a secret or a tool's arguments.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class AuditEntry:
    timestamp: str  # ISO 8601, UTC
    oid: str
    upn: str
    tool: str
    outcome: str  # "ok", "denied: …", "refused: …", "error: …"
    downstream: tuple[str, ...] = field(default_factory=tuple)  # e.g. "GET /me/transitiveMemberOf/…"


class AuditLog:
    """An append-only list of `AuditEntry`, optionally mirrored to a JSON Lines file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._entries: list[AuditEntry] = []
        self._lock = threading.Lock()

    def record(self, *, oid: str, upn: str, tool: str, outcome: str, downstream: list[str] | tuple[str, ...] = ()) -> AuditEntry:
        entry = AuditEntry(
            timestamp=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
            oid=oid, upn=upn, tool=tool, outcome=outcome, downstream=tuple(downstream),
        )
        with self._lock:
            self._entries.append(entry)
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                with os.fdopen(fd, "a") as handle:
                    handle.write(json.dumps(asdict(entry)) + "\n")
        return entry

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
