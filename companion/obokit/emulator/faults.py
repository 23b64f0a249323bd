"""Faults on demand, per endpoint family ("identity" or "graph"): latency, forced errors, throttling."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import graph_error_body

FAMILIES = ("identity", "graph")


@dataclass
class FamilyFaults:
    latency_ms: float = 0.0
    fail_next: int = 0
    fail_status: int = 503
    throttle_next: int = 0
    retry_after: int = 1


@dataclass
class Faults:
    """Mutable fault settings shared by the running servers (set from any thread)."""

    families: dict[str, FamilyFaults] = field(default_factory=lambda: {f: FamilyFaults() for f in FAMILIES})

    def set_latency(self, family: str, ms: float) -> None:
        self._family(family).latency_ms = ms

    def fail(self, family: str, count: int = 1, status: int = 503) -> None:
        fam = self._family(family)
        fam.fail_next, fam.fail_status = count, status

    def throttle(self, family: str, count: int = 1, retry_after: int = 1) -> None:
        fam = self._family(family)
        fam.throttle_next, fam.retry_after = count, retry_after

    def clear(self) -> None:
        self.families = {f: FamilyFaults() for f in FAMILIES}

    def describe(self) -> dict[str, Any]:
        return {name: vars(fam).copy() for name, fam in self.families.items()}

    def _family(self, family: str) -> FamilyFaults:
        if family not in self.families:
            raise ValueError(f"unknown endpoint family {family!r}; expected one of {FAMILIES}")
        return self.families[family]


def _identity_error(status: int) -> dict[str, Any]:
    return {
        "error": "temporarily_unavailable",
        "error_description": "AADSTS50196: The server terminated an operation because it encountered a client request loop."
        if status == 429 else "AADSTS90033: A transient error has occurred. Please try again.",
        "error_codes": [50196 if status == 429 else 90033],
    }


def _graph_error(status: int, scope: Scope) -> tuple[dict[str, Any], list[tuple[bytes, bytes]]]:
    """The same Graph error shape as the emulator's own errors (request ids, date)."""
    client_request_id = dict(scope.get("headers") or []).get(b"client-request-id", b"").decode("latin-1") or None
    if status == 429:
        code, message = "TooManyRequests", "Please retry again later."
    else:
        code, message = "serviceNotAvailable", "The service is temporarily unavailable."
    body, request_id = graph_error_body(status, code, message, client_request_id)
    return body, [(b"request-id", request_id.encode())]


class FaultMiddleware:
    """Applies the family's faults before the wrapped app sees the request (control routes exempt)."""

    def __init__(self, app: ASGIApp, faults: Faults, family: str) -> None:
        self.app = app
        self.faults = faults
        self.family = family

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_emulator"):
            await self.app(scope, receive, send)
            return
        fam = self.faults.families[self.family]
        if fam.latency_ms:
            await asyncio.sleep(fam.latency_ms / 1000)
        status, headers = None, []
        if fam.throttle_next > 0:
            fam.throttle_next -= 1
            status, headers = 429, [(b"retry-after", str(fam.retry_after).encode())]
        elif fam.fail_next > 0:
            fam.fail_next -= 1
            status = fam.fail_status
        if status is None:
            await self.app(scope, receive, send)
            return
        if self.family == "graph":
            body, extra = _graph_error(status, scope)
            headers = [*headers, *extra]
        else:
            body = _identity_error(status)
        payload = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *headers]})
        await send({"type": "http.response.body", "body": payload})
