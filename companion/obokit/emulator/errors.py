"""Error bodies in the shapes Entra and Microsoft Graph really send.

Entra: `{"error", "error_description": "AADSTS<n>: ... Trace ID: ... Correlation ID: ... Timestamp: ...",
"error_codes": [n], ...}`. The parts of `error_description` are separated by single spaces, as in raw bodies
captured in 2024 (Azure-Samples/ms-identity-dotnet-webapi-azurefunctions#3, Azure/azure-sdk-for-go#22386);
bodies up to 2023 used `\\r\\n` (OfficeDev/microsoft-365-agents-toolkit#8621): parse neither, use
`error_codes`.
Graph: `{"error": {"code", "message", "innerError": {"date", "request-id", "client-request-id"}}}`.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
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


def hex_thumbprint(kid: Any) -> str:
    """The certificate thumbprint a base64url `kid`/`x5t` stands for, as Entra prints it (hex, upper case); the
    value itself if it is no SHA-1 or SHA-256 digest."""
    text = str(kid)
    try:
        raw = base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except ValueError:
        return text
    return raw.hex().upper() if len(raw) in (20, 32) else text


# -- client assertions (certificates, RFC 7523 private_key_jwt) --------------------------------------------------
CERTIFICATE_DOCS = "https://learn.microsoft.com/entra/identity-platform/certificate-credentials"


def _keys_hint(app_id: str) -> str:
    return (f"Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id "
            f"'{app_id}'. Review the documentation at https://docs.microsoft.com/en-us/graph/deployments to determine "
            "the corresponding service endpoint and https://docs.microsoft.com/en-us/graph/api/application-get?view="
            "graph-rest-1.0&tabs=http to build a query request URL, such as "
            f"'https://graph.microsoft.com/beta/applications/{app_id}'")


def certificate_not_registered(app_id: str, thumbprint: str | None) -> EntraError:
    """No registered certificate has the assertion's thumbprint. The 2023-2026 wording (Microsoft Q&A 5915574,
    2026-06; AzureAD/microsoft-authentication-library-for-js#8339, 2026-02; keycloak/keycloak#19425, 2023); up to
    2022 it began "Client assertion contains an invalid signature." (Azure/azure-sdk-for-net#29007). A thumbprint
    that does not decode is left out of the message, as in the Q&A capture."""
    used = f"Thumbprint of key used by client: '{thumbprint}', " if thumbprint else ""
    return EntraError(
        700027,
        "invalid_client",
        "The certificate with identifier used to sign the client assertion is not registered on application. "
        f"[Reason - The key was not found., {used}{_keys_hint(app_id)}]",
        status=401,
    )


def _found_key(start: dt.datetime, end: dt.datetime) -> str:
    return f"Found key 'Start={start:%m/%d/%Y %H:%M:%S}, End={end:%m/%d/%Y %H:%M:%S}'"


def certificate_signature_invalid(app_id: str, thumbprint: str, start: dt.datetime, end: dt.datetime) -> EntraError:
    """The key is registered but the signature does not verify: the Reason and "Found key" of the 50013 captures
    (microsoftgraph/msgraph-sdk-php#1585, 2024; Azure/azure-sdk-for-java#25109) under 700027's prefix (the Java SDK's
    troubleshooting table: 700027 "Client assertion contains an invalid signature.", MicrosoftDocs/azure-dev-docs
    articles/java/sdk/troubleshooting-authentication-service-principal.md). No capture of this exact 700027 found."""
    return EntraError(
        700027,
        "invalid_client",
        "Client assertion contains an invalid signature. [Reason - Key was found, but use of the key to verify the "
        f"signature failed., Thumbprint of key used by client: '{thumbprint}', {_found_key(start, end)}, "
        f"{_keys_hint(app_id)}]",
        status=401,
    )


def certificate_expired(app_id: str, thumbprint: str, start: dt.datetime, end: dt.datetime) -> EntraError:
    """The registered key credential is outside its start/end dates. No public capture found: the Reason text is
    the emulator's, in the form of the others."""
    return EntraError(
        700027,
        "invalid_client",
        f"Client assertion contains an invalid signature. [Reason - The key used is expired., Thumbprint of key used "
        f"by client: '{thumbprint}', {_found_key(start, end)}, {_keys_hint(app_id)}]",
        status=401,
    )


def assertion_client_mismatch() -> EntraError:
    """`iss` or `sub` is not the client_id (MicrosoftDocs/azure-dev-docs, Java SDK troubleshooting table)."""
    return EntraError(
        700021,
        "invalid_client",
        "Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at "
        f"{CERTIFICATE_DOCS} .",
        status=401,
    )


def assertion_audience_mismatch() -> EntraError:
    """`aud` is not this tenant's token endpoint (same table as 700021)."""
    return EntraError(
        700023,
        "invalid_client",
        f"Client assertion audience claim does not match Realm issuer. Review the documentation at {CERTIFICATE_DOCS} .",
        status=401,
    )


def _ests_time(when: float, fraction: str = "0000000") -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{fraction}Z"


def assertion_time_range(now: float, nbf: float, exp: float) -> EntraError:
    """Expired or not yet valid; "valid from 1970-01-01..." when there is no `nbf` (AzureAD/microsoft-authentication-
    library-for-java#984, 2025, `invalid_client`: obikuro/Sato#1). Federated assertions get it too (the Azure DevOps
    workload identity error table, MicrosoftDocs/azure-devops-docs errors-workload-identity.md)."""
    return EntraError(
        700024,
        "invalid_client",
        f"Client assertion is not within its valid time range. Current time: {_ests_time(now, f'{int(now % 1 * 1e7):07d}')}, "
        f"assertion valid from {_ests_time(nbf)}, expiry time of assertion {_ests_time(exp)}. "
        f"Review the documentation at {CERTIFICATE_DOCS} .",
        status=401,
    )


def malformed_jwt() -> EntraError:
    """entra-docs reference-error-codes.md (50027 InvalidJwtToken); the message of the Java SDK's table."""
    return EntraError(50027, "invalid_request", "JWT token is invalid or malformed.")


def assertion_without_thumbprint() -> EntraError:
    """Neither `x5t` nor `x5t#S256` in the header: "AADSTS50027: Invalid JWT token. No certificate thumbprint
    specified in token header." (AzureAD/microsoft-authentication-library-for-dotnet#124, 2016, then wrapped in
    70002). The `error` value is not in that capture: `invalid_client`, like the other client-assertion failures."""
    return EntraError(50027, "invalid_client", "Invalid JWT token. No certificate thumbprint specified in token header.",
                      status=401)


# -- federated identity credentials -------------------------------------------------------------------------------
WORKLOAD_IDENTITY_DOCS = "https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
_CHECK_FIC = ("Please check your federated identity credential Subject, Audience and Issuer against the presented "
              f"assertion. {WORKLOAD_IDENTITY_DOCS}")


def no_federated_record(issuer: str, subject: str, audience: str) -> EntraError:
    """The app has no federated identity credential at all. The older all-in-one message (Azure/azure-workload-
    identity#616, 2022, `invalid_request`, 400); Azure DevOps still documents it for "No federated credential was
    created" (errors-workload-identity.md, 2026). Newer captures name the one field that failed (below)."""
    return EntraError(
        70021,
        "invalid_request",
        f"No matching federated identity record found for presented assertion. Assertion Issuer: '{issuer}'. "
        f"Assertion Subject: '{subject}'. Assertion Audience: '{audience}'. {WORKLOAD_IDENTITY_DOCS}",
    )


def federated_issuer_mismatch(issuer: str) -> EntraError:
    """No credential trusts this issuer (Azure/azure-workload-identity#1200, 2024: `invalid_client`)."""
    return EntraError(
        700211, "invalid_client",
        f"No matching federated identity record found for presented assertion issuer '{issuer}'. {_CHECK_FIC}",
        status=401,
    )


def federated_subject_mismatch(subject: str) -> EntraError:
    """The issuer is trusted, not this subject (Azure/azure-workload-identity#1200, 2025; dotnet/maui#31978, 2025)."""
    return EntraError(
        700213, "invalid_client",
        f"No matching federated identity record found for presented assertion subject '{subject}'. Check your "
        f"federated identity credential Subject, Audience and Issuer against the presented assertion. "
        f"{WORKLOAD_IDENTITY_DOCS}",
        status=401,
    )


def federated_audience_mismatch(audience: str) -> EntraError:
    """Issuer and subject match, the audience does not (a recorded body in AthenZ/athenz
    AzureAccessTokenProviderTest.java: `invalid_client`)."""
    return EntraError(
        700212, "invalid_client",
        f"No matching federated identity record found for presented assertion audience '{audience}'. {_CHECK_FIC}",
        status=401,
    )


def external_oidc_failed() -> EntraError:
    """A trusted issuer whose metadata cannot be fetched (Azure/azure-workload-identity#642, 2022, `invalid_request`;
    Azure/azure-cli#28863, 2024). The emulator fetches no one's metadata: only its own issuer verifies."""
    return EntraError(50166, "invalid_request", "Request to External OIDC endpoint failed.")


def federated_key_not_found(thumbprint: str, issuer: str) -> EntraError:
    """The issuer's metadata has no key with the assertion's `kid` (Azure/azure-workload-identity#1232, 2024)."""
    return EntraError(
        7000272,
        "invalid_client",
        f"The certificate with identifier {thumbprint} used to sign the federated credential could not be found in "
        f"the metadata of identity provider {issuer}. Please validate that your Identity Provider's metadata exposes "
        "the key used to sign the incoming token.",
        status=401,
    )
