"""What every Graph handler shares: the caller (from a validated token), permission checks and output shaping."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import jwt
from starlette.requests import Request
from starlette.responses import Response

from .directory import Directory
from .errors import GraphError
from .ids import GRAPH_APP_ID, GRAPH_RESOURCE
from .graph_schema import validate
from .odata import apply_select
from .signing import KeySet
from .store import Store

CONTENT_TYPE = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
GRAPH_AUDIENCES = [GRAPH_RESOURCE, f"{GRAPH_RESOURCE}/", GRAPH_APP_ID]


@dataclass
class Caller:
    """Who is calling Graph: the user (delegated) or only the app, and what the token allows."""

    claims: dict[str, Any]
    user: dict[str, Any] | None
    scopes: set[str] = field(default_factory=set)
    roles: set[str] = field(default_factory=set)

    @property
    def app_id(self) -> str:
        return self.claims.get("appid") or self.claims.get("azp") or ""

    def require(self, *, delegated: set[str], application: set[str], admin: bool = False) -> None:
        """403 Authorization_RequestDenied unless the token carries one of the permissions."""
        if self.user is not None:
            allowed = bool(self.scopes & delegated) and (not admin or bool(self.user.get("_directoryRoles")))
        else:
            allowed = bool(self.roles & application)
        if not allowed:
            raise GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")

    def require_user(self) -> dict[str, Any]:
        if self.user is None:
            raise GraphError(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
        return self.user


Handler = Callable[[Request, Caller, dict[str, str]], Awaitable[Response]]


class GraphContext:
    """Token validation and helpers bound to one emulator instance.

    `store` takes writes (and the lookups writes make); `reads` answers GET and list requests: the store
    itself, or in the tenant profile a lagging `ReplicaView` (replication.py)."""

    def __init__(self, store: Store, directory: Directory, keys: KeySet, base_url: str, reads: Any = None) -> None:
        self.store = store
        self.reads = reads if reads is not None else store
        self.directory = directory
        self.keys = keys
        self.base_url = base_url

    def authenticate(self, request: Request) -> Caller:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer ") or not header[7:].strip():
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
        token = header[7:].strip()
        try:
            claims = self.keys.verify(token, audience=GRAPH_AUDIENCES, leeway=0)
        except jwt.ExpiredSignatureError:
            raise GraphError(401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.") from None
        except jwt.InvalidAudienceError:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.") from None
        except (jwt.PyJWTError, ValueError):
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure.") from None
        user = self.directory.user(claims.get("oid", "")) if claims.get("scp") else None
        return Caller(
            claims=claims,
            user=user,
            scopes=set((claims.get("scp") or "").split()),
            roles=set(claims.get("roles") or []),
        )

    def context_url(self, fragment: str) -> str:
        return f"{self.base_url}/$metadata#{fragment}"

    @staticmethod
    def public(obj: dict[str, Any]) -> dict[str, Any]:
        """Drop emulator-internal fields (those starting with `_`), recursively."""
        def clean(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items() if not k.startswith("_")}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value
        return clean(obj)

    def entity(self, obj: dict[str, Any], fragment: str, request: Request, status: int = 200) -> Response:
        body = {"@odata.context": self.context_url(fragment), **apply_select(self.public(obj), request.query_params.get("$select"))}
        return json_response(body, status)

    def collection(self, items: list[dict[str, Any]], fragment: str, request: Request, *, count: bool = False) -> Response:
        select = request.query_params.get("$select")
        body: dict[str, Any] = {"@odata.context": self.context_url(fragment)}
        if count:
            body["@odata.count"] = len(items)
        body["value"] = [apply_select(self.public(i), select) for i in items]
        return json_response(body)


def json_response(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status_code=status, media_type=CONTENT_TYPE)


async def read_json(request: Request, schema: dict[str, Any] | None = None, resource: str = "request") -> dict[str, Any]:
    """The request body as a JSON object whose known properties have `schema`'s types, or Graph's 400."""
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise GraphError(400, "BadRequest", "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.") from None
    if not isinstance(body, dict):
        raise GraphError(400, "BadRequest", "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.")
    body.pop("@odata.type", None)
    return validate(body, schema, resource) if schema else body


def not_found(oid: str) -> GraphError:
    return GraphError(404, "Request_ResourceNotFound", f"Resource '{oid}' does not exist or one of its queried reference-property objects are not present.")


def no_content() -> Response:
    return Response(status_code=204)


# Route table entries: (method, compiled path regex, handler)
RouteEntry = tuple[str, "re.Pattern[str]", Handler]


def route(method: str, pattern: str, handler: Handler) -> RouteEntry:
    return method, re.compile(f"^{pattern}$"), handler
