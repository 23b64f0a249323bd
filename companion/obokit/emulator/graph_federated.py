"""Graph endpoints of an application's federated identity credentials: list, create, get, update, delete."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from . import graph_schema as schema
from .errors import GraphError
from .federated import add_credential, federated_credentials, find_credential, remove_credential, update_credential
from .graph_core import Caller, GraphContext, RouteEntry, no_content, read_json, route
from .graph_directory import APP_KEY, APP_READ, APP_WRITE, find_app
from .ids import stable_id
from .odata import apply_filter

_ITEM = r"(?:/(?P<fid>[0-9A-Za-z-]+)|\(name='(?P<fname>[^']+)'\))"


class FederatedCredentialEndpoints:
    """`/applications/{id}/federatedIdentityCredentials` (federatedidentitycredential.md)."""

    def __init__(self, ctx: GraphContext) -> None:
        self.ctx = ctx

    def _credential(self, app: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
        found = find_credential(app, credential_id=params.get("fid"), name=params.get("fname"))
        if found is None:  # azure-workload-identity's tests quote Graph: "... with name X not found."
            raise GraphError(404, "Request_ResourceNotFound",
                             f"FederatedIdentityCredential with name {params.get('fname') or params.get('fid')} not found.")
        return found

    def _fragment(self, app: dict[str, Any]) -> str:
        return f"applications('{app['id']}')/federatedIdentityCredentials"

    async def list(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=APP_READ, application=APP_READ)
        app = find_app(self.ctx.reads, params)
        items = apply_filter(federated_credentials(app), request.query_params.get("$filter"))
        return self.ctx.collection(items, self._fragment(app), request)

    async def create(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=APP_WRITE, application=APP_WRITE, admin=True)
        app = find_app(self.ctx.store, params)
        body = await read_json(request, schema.FEDERATED_CREDENTIAL, "FederatedIdentityCredential")
        seq = await self.ctx.store.next_seq("federated-credential")
        record = add_credential(app, body, stable_id("federated-credential", seq))
        await self.ctx.store.put("applications", app)
        return self.ctx.entity(record, f"{self._fragment(app)}/$entity", request, status=201)

    async def get(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=APP_READ, application=APP_READ)
        app = find_app(self.ctx.reads, params)
        return self.ctx.entity(self._credential(app, params), f"{self._fragment(app)}/$entity", request)

    async def update(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=APP_WRITE, application=APP_WRITE, admin=True)
        app = find_app(self.ctx.store, params)
        body = await read_json(request, schema.FEDERATED_CREDENTIAL, "FederatedIdentityCredential")
        update_credential(app, self._credential(app, params), body)
        await self.ctx.store.put("applications", app)
        return no_content()

    async def delete(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=APP_WRITE, application=APP_WRITE, admin=True)
        app = find_app(self.ctx.store, params)
        remove_credential(app, self._credential(app, params))
        await self.ctx.store.put("applications", app)
        return no_content()

    def routes(self) -> list[RouteEntry]:
        collection = f"/applications{APP_KEY}/federatedIdentityCredentials"
        return [
            route("GET", collection, self.list),
            route("POST", collection, self.create),
            route("GET", f"{collection}{_ITEM}", self.get),
            route("PATCH", f"{collection}{_ITEM}", self.update),
            route("DELETE", f"{collection}{_ITEM}", self.delete),
        ]
