"""A read-only record of the requests a host received: which bearer token came with which call.

Tests use it as evidence of what reached Graph (e.g. that an MCP server sends Graph an
on-behalf-of token for Graph, never the token its own client presented). It keeps the last
`maxlen` requests in memory only and changes nothing about the request or the answer.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field

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
