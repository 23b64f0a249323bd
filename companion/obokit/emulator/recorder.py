"""Read-only records: the requests a host received (`RequestLog`) and the sign-in events (`EventLog`).

`RequestLog` is evidence of what reached Graph (e.g. that an MCP server sends Graph an on-behalf-of
token for Graph, never the token its own client presented). `EventLog` counts what a person would
have seen: device-code prompts, account pickers, silent sign-ins by the browser session, consent
pages. Both keep the last `maxlen` entries in memory only and change nothing about the answers.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send


@dataclass(frozen=True)
class SeenRequest:
    """One request as the host received it; `bearer` is the raw token of `Authorization: Bearer`."""

    seq: int
    method: str
    path: str
    bearer: str | None = field(repr=False)  # a raw access token: never in a repr or a test failure


class RequestLog:
    """The last `maxlen` HTTP requests of the apps wrapped with `wrap` (thread-safe appends)."""

    def __init__(self, maxlen: int = 1000) -> None:
        self._entries: deque[SeenRequest] = deque(maxlen=maxlen)
        self._seq = itertools.count(1)
        self.last_seq = 0

    def wrap(self, app: ASGIApp) -> ASGIApp:
        async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                self._note(scope)
            await app(scope, receive, send)

        return recorded

    def _note(self, scope: Scope) -> None:
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        bearer = header[7:].strip() or None if header[:7].lower() == "bearer " else None
        entry = SeenRequest(next(self._seq), scope["method"], scope["path"], bearer)
        self._entries.append(entry)
        self.last_seq = entry.seq

    def since(self, seq: int = 0) -> list[SeenRequest]:
        """The recorded requests after `seq` (take `last_seq` before the calls you want to see)."""
        return [e for e in list(self._entries) if e.seq > seq]


# What `EventLog` records (kind): a device code was issued (POST /devicecode), the /devicelogin page was
# shown, an account picker was shown at /authorize, the browser session signed an account in without one,
# a consent page or a "Need admin approval" page was shown, consent was given.
EVENT_KINDS = ("device_code", "device_login_page", "picker", "auto_sign_in", "consent_page",
               "admin_approval_page", "consent_granted")


@dataclass(frozen=True)
class Event:
    """One sign-in event: never a token or a code, only who and which client."""

    seq: int
    at: float  # time.time()
    kind: str
    client_id: str | None
    account: str | None = None  # the user principal name, when one is known
    detail: str | None = None  # e.g. "authorize" / "device_code", or the consent type


class EventLog:
    """The last `maxlen` sign-in events, numbered from 1 (thread-safe)."""

    def __init__(self, maxlen: int = 5000) -> None:
        self._entries: deque[Event] = deque(maxlen=maxlen)
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self.last_seq = 0

    def record(self, kind: str, client_id: str | None, account: str | None = None, detail: str | None = None) -> None:
        assert kind in EVENT_KINDS, kind
        with self._lock:
            event = Event(next(self._seq), time.time(), kind, client_id, account, detail)
            self._entries.append(event)
            self.last_seq = event.seq

    def since(self, seq: int = 0) -> list[dict[str, Any]]:
        """The events after `seq`, as dicts (take `last_seq` first, then read what a run added)."""
        with self._lock:
            return [asdict(e) for e in self._entries if e.seq > seq]

    def count(self, kind: str, since: int = 0) -> int:
        return sum(1 for e in self.since(since) if e["kind"] == kind)
