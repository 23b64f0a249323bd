"""Error bodies in the shapes Entra and Microsoft Graph really send.

Entra: `{"error", "error_description": "AADSTS<n>: ... Trace ID: ... Correlation ID: ... Timestamp: ...",
"error_codes": [n], ...}`. The parts of `error_description` are separated by single spaces, as in raw bodies
captured in 2024 (Azure-Samples/ms-identity-dotnet-webapi-azurefunctions#3, Azure/azure-sdk-for-go#22386);
bodies up to 2023 used `\\r\\n` (OfficeDev/microsoft-365-agents-toolkit#8621): parse neither, use
`error_codes`.
Graph: `{"error": {"code", "message", "innerError": {"date", "request-id", "client-request-id"}}}`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class EntraError(Exception):
    """An AADSTS failure, raised inside a grant handler and rendered by `entra_error_response`."""

    def __init__(
        self,
        code: int,
        error: str,
        message: str,
        *,
        status: int = 400,
        suberror: str | None = None,
        claims: str | None = None,
    ) -> None:
        super().__init__(f"AADSTS{code}: {message}")
        self.code = code
        self.error = error
        self.message = message
        self.status = status
        self.suberror = suberror
        self.claims = claims

    def body(self) -> dict[str, Any]:
        now = _now()
        stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
        trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
        body: dict[str, Any] = {
            "error": self.error,
            "error_description": (
                f"AADSTS{self.code}: {self.message} Trace ID: {trace_id} "
                f"Correlation ID: {correlation_id} Timestamp: {stamp}"
            ),
            "error_codes": [self.code],
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.code}",
        }
        if self.suberror:
            body["suberror"] = self.suberror
        if self.claims:
            body["claims"] = self.claims
        return body


def entra_error_response(exc: EntraError) -> JSONResponse:
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="login.microsoftonline.com"'
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


class GraphError(Exception):
    """A Microsoft Graph failure, rendered by `graph_error_response`."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def graph_error_body(status: int, code: str, message: str, client_request_id: str | None = None) -> tuple[dict[str, Any], str]:
    """Graph's error body (`innerError` with date and request ids) and the new request id."""
    request_id = str(uuid.uuid4())
    inner: dict[str, Any] = {
        "date": _now().strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": request_id,
        "client-request-id": client_request_id or request_id,
    }
    if status == 429:
        inner.update({"code": "429", "message": "Please retry after", "status": "429"})
    return {"error": {"code": code, "message": message, "innerError": inner}}, request_id


def graph_error_response(exc: GraphError, request: Request) -> JSONResponse:
    body, request_id = graph_error_body(exc.status, exc.code, exc.message, request.headers.get("client-request-id"))
    headers = {"request-id": request_id, **exc.headers}
    return JSONResponse(body, status_code=exc.status, headers=headers)


# Catalogue of the AADSTS errors the emulator raises, so messages are written once.
def consent_required(app_id: str, name: str) -> EntraError:
    return EntraError(
        65001,
        "invalid_grant",
        f"The user or administrator has not consented to use the application with ID '{app_id}' "
        f"named '{name}'. Send an interactive authorization request for this user and resource.",
        suberror="consent_required",
    )


def unknown_client(client_id: str, tenant: str) -> EntraError:
    return EntraError(
        700016,
        "unauthorized_client",
        f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. "
        "This can happen if the application has not been installed by the administrator of the "
        "tenant or consented to by any user in the tenant. You may have sent your authentication "
        "request to the wrong tenant.",
    )


def missing_service_principal(app_id: str, tenant_id: str) -> EntraError:
    return EntraError(
        7000229,
        "invalid_client",
        f"The client application {app_id} is missing service principal in the tenant {tenant_id}. "
        "See instructions here: https://go.microsoft.com/fwlink/?linkid=2225119",
        status=400,
    )


def invalid_secret(app_id: str) -> EntraError:
    return EntraError(
        7000215,
        "invalid_client",
        "Invalid client secret provided. Ensure the secret being sent in the request is the client "
        f"secret value, not the client secret ID, for a secret added to app '{app_id}'.",
        status=401,
    )


def missing_credential() -> EntraError:
    return EntraError(
        7000218,
        "invalid_client",
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        status=401,
    )


def missing_parameter(name: str) -> EntraError:
    return EntraError(900144, "invalid_request", f"The request body must contain the following parameter: '{name}'.")


def invalid_scope(scopes: str, detail: str = "") -> EntraError:
    return EntraError(
        70011,
        "invalid_scope",
        "The provided request must include a 'scope' input parameter. The provided value for the "
        f"input parameter 'scope' is not valid. The scope {scopes} is not valid.{detail}",
    )


def scope_not_on_resource(client_name: str, scope: str, resource_app_id: str) -> EntraError:
    """A misspelt scope of an existing resource (O365/python-o365#551: `invalid_client`, AADSTS650053)."""
    return EntraError(
        650053,
        "invalid_client",
        f"The application '{client_name}' asked for scope '{scope}' that doesn't exist on the resource "
        f"'{resource_app_id}'. Contact the app vendor.",
    )


def resource_mismatch() -> EntraError:
    """RFC 8707 `resource` that is not an identifier URI of the app owning the scopes (enforced since
    March 2026: microsoft/vscode#321249, microsoft/azure-devops-mcp#1381, anthropics/claude-code#73460)."""
    return EntraError(
        9010010, "invalid_target", "The resource parameter provided in the request doesn't match with the requested scopes."
    )


def multiple_resources(scopes: str) -> EntraError:
    return EntraError(
        28000,
        "invalid_request",
        "Provided value for the input parameter scope is not valid because it contains more than "
        f"one resource. Scope {scopes} is not valid.",
    )


def mfa_required(resource: str, claims: str) -> EntraError:
    """The evidence conflicts: the OBO doc's 2017 example says `interaction_required` (50079); the newest real
    capture of an OBO exchange, 2023 (MSAL.js#5491), says `invalid_grant` + `suberror: basic_action` + `claims`.
    The newest wins; branch on `claims`/`suberror`, never on `error`."""
    return EntraError(
        50076,
        "invalid_grant",
        "Due to a configuration change made by your administrator, or because you moved to a new location, "
        f"you must use multi-factor authentication to access '{resource}'.",
        suberror="basic_action",
        claims=claims,
    )


def expired_secret(app_id: str) -> EntraError:
    """No client secret of the app is valid as far as this replica knows. Entra says so for secrets that are
    really expired and, while they replicate, for brand new ones ("Register Azure AD app ... and immediately run
    the application": Azure-Samples/active-directory-dotnetcore-daemon-v2#87; sjkp/letsencrypt-siteextension#358;
    dafthack/GraphRunner#28). Text and 401 of the 2023-2025 captures (liprec/vsts-release-aas#119, dotnet/sign#849)."""
    return EntraError(
        7000222,
        "invalid_client",
        f"The provided client secret keys for app '{app_id}' are expired. Visit the Azure portal to create new keys "
        "for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added "
        "security: https://aka.ms/certCreds.",
        status=401,
    )


def admin_approval_required(app_name: str) -> EntraError:
    """A user who may not consent to an admin-only permission (entra-docs application-sign-in-unexpected-user-
    consent-error.md; the page is titled "Need admin approval", microsoft/semantic-kernel discussion #923)."""
    return EntraError(
        90094,
        "invalid_grant",
        f"{app_name} needs permission to access resources in your organization that only an admin can grant. "
        "Ask an admin to grant permission to this app before you can use it.",
    )


def login_required() -> EntraError:
    """`prompt=none` without a browser session: `login_required` (entra-docs v2-oauth2-auth-code-flow.md), text as
    quoted in Microsoft's "Troubleshooting startup issues for Power Apps" (powerapps-docs)."""
    return EntraError(
        50058,
        "login_required",
        "A silent sign-in request was sent but no user is signed in. The cookies used to represent the user's "
        "session were not sent in the request to Azure AD.",
    )
