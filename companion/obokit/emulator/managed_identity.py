"""The managed identity endpoint of Azure App Service and Container Apps (IDENTITY_ENDPOINT, IDENTITY_HEADER).

The protocol (api-version 2019-08-01; learn.microsoft.com container-apps/managed-identity.md and
app-service/overview-managed-identity.md, "REST endpoint reference"): GET $IDENTITY_ENDPOINT?resource=R&api-version=
2019-08-01, at most one of client_id / principal_id (alias object_id) / mi_res_id, header `X-IDENTITY-HEADER:
$IDENTITY_HEADER`. 200 answers {"access_token", "expires_on" (epoch seconds as a string), "resource", "token_type",
"client_id"} (the docs' example; Azure/azure-sdk-for-python#11346). Errors are JSON {"statusCode", "message",
"correlationId"} with that status and an X-CORRELATION-ID header (Azure/azure-sdk-for-net#43691, #44685).

What the clients send: MSAL Python 1.39 (msal/managed_identity.py, `_obtain_token_on_app_service`) client_id,
object_id or mi_res_id, plus `Metadata: true`; azure-identity 1.27's sync credential wraps MSAL's client, its aio
one (`_credentials/app_service.py`) sends the keys of `identity_config` as given and `client_id=` as client_id.
None of them checks the endpoint's scheme or host, so a loopback http URL works (msal-node's proposed check,
AzureAD/microsoft-authentication-library-for-js#8682, also allows loopback).
"""

from __future__ import annotations

import contextlib
import hmac
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .directory import Directory
from .ids import (
    GRAPH_APP_ID,
    GRAPH_RESOURCE,
    MANAGED_IDENTITY_CLIENT_ID,
    MANAGED_IDENTITY_NAME,
    MANAGED_IDENTITY_PRINCIPAL_ID,
    MANAGED_IDENTITY_RESOURCE_ID,
)
from .tokens import TOKEN_EXCHANGE_AUDIENCE, TokenFactory

PATH = "/msi/token"  # App Service's path (the docs' raw HTTP example: http://localhost:42356/msi/token)
API_VERSION = "2019-08-01"
SELECTORS = ("client_id", "principal_id", "object_id", "mi_res_id")
CONTENT_TYPE = "application/json; charset=utf-8"

# Messages seen on the real endpoint. An unknown or missing user-assigned identity: 400 (azure-sdk-for-net#43691,
# microsoft/azure-container-apps#442). A resource Entra does not know: 500 (azure-functions-host#9884 with made-up
# resources; MSAL Python: "Empirically, wrong resource ends up with a vague statusCode=500"). The misspelling is
# Azure's. A wrong X-IDENTITY-HEADER gets 401 (azure-sdk-for-js#11595); its message is not public.
UNKNOWN_IDENTITY = "Unable to load the proper Managed Identity."
UNKNOWN_RESOURCE = "An unexpected error occured while fetching the AAD Token."
BAD_HEADER = "Unauthorized. The X-IDENTITY-HEADER is missing or invalid."
BAD_REQUEST = "The request needs resource and api-version 2019-08-01 or later."  # not public either


@dataclass(frozen=True)
class ManagedIdentity:
    """The demo tenant's user-assigned managed identity, as `az identity show` names it."""

    client_id: str = MANAGED_IDENTITY_CLIENT_ID
    principal_id: str = MANAGED_IDENTITY_PRINCIPAL_ID
    resource_id: str = MANAGED_IDENTITY_RESOURCE_ID
    name: str = MANAGED_IDENTITY_NAME


class ManagedIdentityEndpoint:
    """The token endpoint of the managed identities in `directory`, guarded by a fresh random `header`."""

    def __init__(self, directory: Directory, tokens: TokenFactory) -> None:
        self.directory = directory
        self.tokens = tokens
        self.header = str(uuid.uuid4())  # a GUID, as the docs describe IDENTITY_HEADER
        self.requests = 0
        self.tokens_issued: Counter[str] = Counter()  # by resource

    def app(self) -> Starlette:
        return Starlette(routes=[Route(PATH, self.token, methods=["GET"])])

    def stats(self) -> dict[str, Any]:
        return {"requests": self.requests, "tokens_issued": dict(self.tokens_issued)}

    def clear_stats(self) -> None:
        self.requests = 0
        self.tokens_issued.clear()

    async def token(self, request: Request) -> Response:
        self.requests += 1
        sent = request.headers.get("x-identity-header", "")
        if not hmac.compare_digest(sent.encode(), self.header.encode()):
            return _error(401, BAD_HEADER)
        query = request.query_params
        resource = query.get("resource") or ""
        if not resource or query.get("api-version", "") < API_VERSION:  # ISO dates compare as strings
            return _error(400, BAD_REQUEST)
        identity = self._identity({k: v for k in SELECTORS if (v := query.get(k))})
        if identity is None:
            return _error(400, UNKNOWN_IDENTITY)
        roles = self._roles(identity, resource)
        if roles is None:
            return _error(500, UNKNOWN_RESOURCE)
        token, expires_on = self.tokens.managed_identity_token(identity, resource, roles)
        self.tokens_issued[resource] += 1
        return JSONResponse({"access_token": token, "expires_on": str(expires_on), "resource": resource,
                             "token_type": "Bearer", "client_id": identity["appId"]}, media_type=CONTENT_TYPE)

    def _identity(self, selector: dict[str, str]) -> dict[str, Any] | None:
        """The one user-assigned identity the selector names; none without one: the host has no system-assigned
        identity. Ids compare case-insensitively (GUIDs and ARM ids; MSAL compares echoed ids the same way)."""
        if len(selector) != 1:
            return None
        (key, value), = selector.items()
        for sp in self.directory.store.find("servicePrincipals", servicePrincipalType="ManagedIdentity"):
            names = {"client_id": [sp["appId"]], "principal_id": [sp["id"]], "object_id": [sp["id"]],
                     "mi_res_id": sp.get("alternativeNames", [])[1:]}[key]
            if value.lower() in (n.lower() for n in names):
                return sp
        return None

    def _roles(self, identity: dict[str, Any], resource: str) -> list[str] | None:
        """The app roles the token carries for `resource`, or None for a resource the emulator does not serve."""
        if resource == TOKEN_EXCHANGE_AUDIENCE:
            return []
        if resource.rstrip("/") in (GRAPH_RESOURCE, GRAPH_APP_ID):
            graph = self.directory.sp(GRAPH_APP_ID)
            return self.directory.assigned_roles([identity["id"]], graph) if graph else []
        return None


def _error(status: int, message: str) -> Response:
    correlation_id = str(uuid.uuid4())
    return JSONResponse({"statusCode": status, "message": message, "correlationId": correlation_id},
                        status_code=status, media_type=CONTENT_TYPE, headers={"X-CORRELATION-ID": correlation_id})


@contextlib.contextmanager
def app_service_environment(endpoint: str, header: str) -> Iterator[dict[str, str]]:
    """IDENTITY_ENDPOINT and IDENTITY_HEADER set process-wide within the block, the previous values back after it.

    IDENTITY_SERVER_THUMBPRINT is unset meanwhile: with it, MSAL and azure-identity take the three variables for
    Service Fabric's endpoint. MSI_ENDPOINT / MSI_SECRET (Azure ML) and IMDS_ENDPOINT (Arc) rank below App Service
    in both (msal/managed_identity.py `_obtain_token`; azure-identity `ManagedIdentityCredential.__init__`)."""
    values: dict[str, str | None] = {"IDENTITY_ENDPOINT": endpoint, "IDENTITY_HEADER": header,
                                     "IDENTITY_SERVER_THUMBPRINT": None}
    saved = {name: os.environ.get(name) for name in values}
    _set_environ(values)
    try:
        yield {"IDENTITY_ENDPOINT": endpoint, "IDENTITY_HEADER": header}
    finally:
        _set_environ(saved)


def _set_environ(values: dict[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
