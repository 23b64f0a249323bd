"""Browser sessions (tenant profile): the sign-in page remembers the last account, as Entra's session cookie does.

Entra keeps the signed-in user in an `ESTSAUTH` cookie, "user's session information to facilitate SSO. Transient."
(learn.microsoft.com/entra/identity/authentication/concept-authentication-web-browser-cookies). The emulator's
cookie of the same name carries only a random session id; which account it stands for stays on the server, in
memory (a restart or `reset` signs every browser out). It is host-only (the identity host), `Path=/` (so both
/{tenant}/oauth2/v2.0/authorize and /devicelogin see it), HttpOnly, Secure, SameSite=None.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "ESTSAUTH"
_MAX_SESSIONS = 1000


class Sessions:
    """Session id -> user id, for the last `_MAX_SESSIONS` sign-ins (thread-safe)."""

    def __init__(self) -> None:
        self._users: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, user_id: str) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._users[sid] = user_id
            while len(self._users) > _MAX_SESSIONS:
                self._users.popitem(last=False)
        return sid

    def user_id(self, request: Request) -> str | None:
        """The account the request's browser session stands for, if any."""
        sid = request.cookies.get(COOKIE)
        with self._lock:
            return self._users.get(sid) if sid else None

    def end(self, request: Request) -> None:
        sid = request.cookies.get(COOKIE)
        with self._lock:
            if sid:
                self._users.pop(sid, None)

    def clear(self) -> None:
        with self._lock:
            self._users.clear()


def remember(response: Response, sid: str) -> Response:
    response.set_cookie(COOKIE, sid, path="/", secure=True, httponly=True, samesite="none")
    return response


def forget(response: Response) -> Response:
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="none")
    return response
