"""The Graph host: routes `/v1.0/...` requests to the directory and people handlers."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from .errors import GraphError, graph_error_response
from .graph_core import GraphContext, RouteEntry
from .graph_directory import DirectoryEndpoints
from .graph_federated import FederatedCredentialEndpoints
from .graph_people import PeopleEndpoints

API_VERSIONS = ("/v1.0", "/beta")


class GraphApp:
    """An ASGI app: authenticate, find the handler, render Graph-shaped errors."""

    def __init__(self, ctx: GraphContext) -> None:
        self.ctx = ctx
        self.table: list[RouteEntry] = (
            DirectoryEndpoints(ctx).routes() + FederatedCredentialEndpoints(ctx).routes() + PeopleEndpoints(ctx).routes()
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        response = await self.dispatch(request)
        client_request_id = request.headers.get("client-request-id")
        if client_request_id:
            response.headers["client-request-id"] = client_request_id
        await response(scope, receive, send)

    async def dispatch(self, request: Request) -> Response:
        try:
            path = request.url.path
            version = next((v for v in API_VERSIONS if path == v or path.startswith(v + "/")), None)
            if version is None:
                raise GraphError(400, "BadRequest", "Invalid version.")
            path = path[len(version):].rstrip("/") or "/"
            allowed_methods = []
            for method, pattern, handler in self.table:
                match = pattern.match(path)
                if not match:
                    continue
                if method != request.method:
                    allowed_methods.append(method)
                    continue
                caller = self.ctx.authenticate(request)
                params = {k: v for k, v in match.groupdict().items() if v is not None}
                return await handler(request, caller, params)
            if allowed_methods:
                raise GraphError(405, "Request_BadRequest", f"The HTTP method '{request.method}' is not allowed for this resource.")
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{path.strip('/').split('/')[0]}'.")
        except GraphError as exc:
            return graph_error_response(exc, request)
