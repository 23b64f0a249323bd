"""The On-Behalf-Of (OBO) exchange, the ways the workbook shows it side by side.

A middle tier (the MCP server) holds a user's access token whose audience is *itself*, and
trades it at Entra's token endpoint for a token to a downstream API (Microsoft Graph):

* `raw_obo_exchange` - the protocol by hand: one `jwt-bearer` POST with httpx (async);
* `confidential_client` + `msal_obo` / `msal_obo_async` - MSAL's `acquire_token_on_behalf_of`
  (a blocking call: from async code it runs in a worker thread, never on the event loop);
* FastMCP's `EntraOBOToken` (azure-identity's async `OnBehalfOfCredential`) lives in the
  server (`obokit.server`), not here.

Every failure is raised as `OboError`, which carries Entra's AADSTS code and its error body,
never a token or a secret.

Example::

    from obokit.server.obo import raw_obo_exchange, OboError
    try:
        graph = await raw_obo_exchange(target, client_id, secret, assertion, ["https://graph.microsoft.com/User.Read"])
    except OboError as e:
        print(e.aadsts, e.description)   # AADSTS65001 The user or administrator has not consented ...

The seam for caching is `OboExchange`: an async callable `(assertion, scopes) -> token response`.
`raw_exchange` and `msal_exchange` return one; `obokit.server.obo_cache.OboCache` wraps any of them (one
exchange per assertion and scopes, concurrent first calls coalesced) without the tools noticing.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import httpx
import msal
import requests

from ..settings import is_microsoft_cloud
from .credentials import ClientSecret, ServerCredential

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GRAPH_DEFAULT = "https://graph.microsoft.com/.default"
# Fields of a token endpoint answer that must never be shown or logged.
SECRET_FIELDS = frozenset({"access_token", "refresh_token", "id_token", "client_info", "client_secret", "assertion",
                           "client_assertion"})

OboExchange = Callable[[str, Sequence[str]], Awaitable[dict[str, Any]]]
"""An async OBO exchange: (the user's access token, downstream scopes) -> Entra's token response."""


class HasAuthority(Protocol):
    """What the helpers need of `obokit.tenant.target.Target`."""

    tenant_authority: str  # https://login.microsoftonline.com/{tenant} or the emulator's


_TRACE_SUFFIX = re.compile(r"\s+Trace ID:")


def entra_message(description: str) -> str:
    """The message of an Entra `error_description`, without the Trace ID, Correlation ID and Timestamp after it
    (separated by CRLF in bodies up to 2023, by single spaces since)."""
    lines = _TRACE_SUFFIX.split(description, maxsplit=1)[0].splitlines()
    return lines[0].strip() if lines else ""


class OboError(RuntimeError):
    """Entra refused an OBO exchange.

    `code` is the AADSTS number (65001, 500131, ...), `error` the OAuth error (`invalid_grant`),
    `description` the message of `error_description` (`entra_message`), `body` Entra's error body without any
    token or secret, `status` the HTTP status (None when MSAL reported the error).
    """

    def __init__(self, body: dict[str, Any], status: int | None = None) -> None:
        self.body = {k: v for k, v in body.items() if k not in SECRET_FIELDS}
        self.status = status
        self.error: str = str(body.get("error", "unknown_error"))
        codes = body.get("error_codes") or []
        self.code: int | None = int(codes[0]) if codes else None
        self.description = entra_message(str(body.get("error_description", "")))
        super().__init__(f"{self.error}: {self.description}")

    @property
    def aadsts(self) -> str:
        """`AADSTS65001`-style label ('' when Entra sent no code)."""
        return f"AADSTS{self.code}" if self.code is not None else ""

    @property
    def message(self) -> str:
        """The description without its `AADSTSnnnn: ` prefix."""
        return self.description.split(": ", 1)[1] if self.description.startswith("AADSTS") else self.description


def as_credential(credential: str | ServerCredential) -> ServerCredential:
    """A `ServerCredential`; a plain string is a client secret."""
    return ClientSecret(credential) if isinstance(credential, str) else credential


def token_endpoint(target: HasAuthority) -> str:
    return f"{target.tenant_authority}/oauth2/v2.0/token"


def check(result: dict[str, Any]) -> dict[str, Any]:
    """Return an MSAL result that holds a token; raise `OboError` for an error result."""
    if "access_token" not in result:
        raise OboError(result)
    return result


# -- 1. the protocol by hand ---------------------------------------------------------------
async def raw_obo_exchange(
    target: HasAuthority,
    client_id: str,
    credential: str | ServerCredential,
    assertion: str,
    scopes: Sequence[str],
    *,
    http: httpx.AsyncClient | None = None,
) -> dict[str, Any]:
    """POST the jwt-bearer grant to `{tenant_authority}/oauth2/v2.0/token`; Entra's JSON answer or `OboError`.

    `credential` is the middle tier's client secret (a string) or any `obokit.server.credentials` credential.
    Pass a long-lived `http` client to reuse connections; otherwise one is opened per call.
    """
    credential = as_credential(credential)
    await credential.prepare()  # e.g. a managed identity's assertion, fetched off the event loop
    form = {
        "grant_type": JWT_BEARER,
        **credential.form_fields(client_id, token_endpoint(target)),
        "assertion": assertion,
        "scope": " ".join(scopes),
        "requested_token_use": "on_behalf_of",
    }
    if http is None:
        async with httpx.AsyncClient(timeout=30) as own:
            response = await own.post(token_endpoint(target), data=form)
    else:
        response = await http.post(token_endpoint(target), data=form)
    try:
        body = response.json()
    except ValueError:
        body = {"error": "invalid_response", "error_description": f"HTTP {response.status_code}, not JSON"}
    if response.status_code != 200 or "access_token" not in body:
        raise OboError(body, response.status_code)
    return body


def raw_exchange(target: HasAuthority, client_id: str, credential: str | ServerCredential, *,
                 http: httpx.AsyncClient | None = None) -> OboExchange:
    """`raw_obo_exchange` with the middle tier's credentials bound, as an `OboExchange`."""

    async def exchange(assertion: str, scopes: Sequence[str]) -> dict[str, Any]:
        return await raw_obo_exchange(target, client_id, credential, assertion, scopes, http=http)

    return exchange


# -- 2. MSAL ------------------------------------------------------------------------------
def confidential_client(
    target: HasAuthority,
    client_id: str,
    credential: str | ServerCredential,
    *,
    token_cache: msal.TokenCache | None = None,
    http_client: Any = None,
) -> msal.ConfidentialClientApplication:
    """The middle tier as an MSAL confidential client of `target`'s tenant (`credential`: a secret string or any
    `obokit.server.credentials` credential).

    Instance discovery (a GET to login.microsoftonline.com) is on only for Microsoft's own cloud hosts.
    """
    return msal.ConfidentialClientApplication(
        client_id,
        client_credential=as_credential(credential).msal_credential(),
        authority=target.tenant_authority,
        token_cache=token_cache,
        http_client=http_client,
        instance_discovery=is_microsoft_cloud(target.tenant_authority),
    )


def msal_obo(app: msal.ConfidentialClientApplication, assertion: str, scopes: Sequence[str]) -> dict[str, Any]:
    """`app.acquire_token_on_behalf_of` (blocking), raising `OboError` instead of returning an error dict.

    MSAL 1.39 always asks Entra: it does not look in its cache first. See `msal_obo_async`
    for async code.
    """
    return check(app.acquire_token_on_behalf_of(assertion, list(scopes)))


async def msal_obo_async(app: msal.ConfidentialClientApplication, assertion: str, scopes: Sequence[str]) -> dict[str, Any]:
    """`msal_obo` in a worker thread, so the calling event loop keeps serving other requests."""
    return await asyncio.to_thread(msal_obo, app, assertion, scopes)


def msal_exchange(app: msal.ConfidentialClientApplication) -> OboExchange:
    """`msal_obo_async` bound to `app`, as an `OboExchange`."""

    async def exchange(assertion: str, scopes: Sequence[str]) -> dict[str, Any]:
        return await msal_obo_async(app, assertion, scopes)

    return exchange


class CountingSession(requests.Session):
    """A `requests.Session` for MSAL's `http_client=` that counts token requests by grant type.

    It counts what leaves the process, so it works the same against a tenant and the emulator:
    ``app = confidential_client(target, id, secret, http_client=(s := CountingSession()))``,
    then ``s.token_requests[JWT_BEARER]`` is the number of OBO exchanges MSAL made.
    """

    def __init__(self) -> None:
        super().__init__()
        self.token_requests: Counter[str] = Counter()

    def post(self, url: str | bytes, data: Any = None, json: Any = None, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if str(url).endswith("/oauth2/v2.0/token") and isinstance(data, dict):
            self.token_requests[str(data.get("grant_type"))] += 1
        return super().post(url, data=data, json=json, **kwargs)


__all__ = [
    "entra_message",
    "JWT_BEARER",
    "GRAPH_DEFAULT",
    "OboError",
    "OboExchange",
    "CountingSession",
    "as_credential",
    "check",
    "confidential_client",
    "msal_exchange",
    "msal_obo",
    "msal_obo_async",
    "raw_exchange",
    "raw_obo_exchange",
    "token_endpoint",
]
