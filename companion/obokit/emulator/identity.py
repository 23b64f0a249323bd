"""The identity side (login.microsoftonline.com): discovery, JWKS, /authorize, /devicecode, /token."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from . import errors, pages
from .directory import Directory, new_service_principal
from .errors import EntraError
from .grants import CODE_LIFETIME, PendingCode, TokenService
from .ids import TENANT_DOMAIN, TENANT_ID, stable_id, stable_key_id
from .recorder import EventLog
from .replication import Replication
from .session import Sessions, forget
from .store import Store
from .tenant_signin import TenantSignIn
from .tokens import V1_ISSUER, v2_issuer

ACCEPTED_TENANTS = {TENANT_ID, TENANT_DOMAIN, "organizations", "common"}
_LOOPBACK = {"localhost", "127.0.0.1", "[::1]", "::1"}


def _tenant_or_error(request: Request) -> None:
    tenant = request.path_params.get("tenant", "")
    if tenant not in ACCEPTED_TENANTS:
        raise EntraError(
            90002,
            "invalid_request",
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing "
            "into the correct cloud.",
        )


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded (or multipart) body as strings; a body that does not parse is Entra's 9002313."""
    try:
        form = await request.form()
    except (HTTPException, MultiPartException, UnicodeDecodeError, ValueError):
        raise EntraError(9002313, "invalid_request", "Invalid request. Request is malformed or invalid.") from None
    return {k: str(v) for k, v in form.items()}


async def read_form_or_empty(request: Request) -> dict[str, str]:
    """The posted form of a page (an unparseable body is an empty form: the page says what is missing)."""
    try:
        return await read_form(request)
    except EntraError:
        return {}


def redirect_uri_matches(requested: str, registered: list[str]) -> bool:
    """Exact match, except that loopback http URIs match on any port (as Entra allows)."""
    if requested in registered:
        return True
    req = urlsplit(requested)
    if req.scheme != "http" or req.hostname not in _LOOPBACK:
        return False
    for uri in registered:
        reg = urlsplit(uri)
        if reg.scheme == "http" and reg.hostname == req.hostname and (reg.path or "/") == (req.path or "/"):
            return True
    return False


class IdentityApp:
    """Starlette routes of the identity endpoints over the shared store.

    `profile="tenant"` hands the interactive pages to `TenantSignIn` (browser session, consent pages);
    `directory` then reads a lagging replica, `replication` is the lag itself."""

    def __init__(self, store: Store, directory: Directory, service: TokenService, authority: str, *,
                 profile: str = "quick", events: EventLog | None = None, sessions: Sessions | None = None,
                 replication: Replication | None = None) -> None:
        self.store = store
        self.directory = directory
        self.service = service
        self.authority = authority
        self.pending: dict[str, dict[str, Any]] = {}
        self.events = events or EventLog()
        self.sessions = sessions or Sessions()
        self.replication = replication
        self.tenant = TenantSignIn(self) if profile == "tenant" else None

    # -- discovery ------------------------------------------------------------------------
    def openid_configuration(self, request: Request) -> Response:
        _tenant_or_error(request)
        base = f"{self.authority}/{TENANT_ID}"
        return JSONResponse(
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": v2_issuer(self.authority),
                "request_uri_parameter_supported": False,
                "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "http_logout_supported": True,
                "frontchannel_logout_supported": True,
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
                                     "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr",
                                     "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
                "kerberos_endpoint": f"{base}/kerberos",
                "tenant_region_scope": "EU",
                "cloud_instance_name": "microsoftonline.com",
                "cloud_graph_host_name": "graph.windows.net",
                "msgraph_host": "graph.microsoft.com",
                "rbac_url": "https://pas.windows.net",
            },
            headers={"Cache-Control": "max-age=86400, private", "Access-Control-Allow-Origin": "*"},
        )

    def openid_configuration_v1(self, request: Request) -> Response:
        _tenant_or_error(request)
        base = f"{self.authority}/{TENANT_ID}"
        return JSONResponse(
            {
                "token_endpoint": f"{base}/oauth2/token",
                "jwks_uri": f"{self.authority}/common/discovery/keys",
                "issuer": V1_ISSUER,
                "authorization_endpoint": f"{base}/oauth2/authorize",
                "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    def jwks(self, request: Request) -> Response:
        # /common (and /organizations) publish the issuer as a template (an Azure SDK JWKS recording, [20])
        tenant = request.path_params.get("tenant")
        issuer = f"{self.authority}/{{tenantid}}/v2.0" if tenant in ("common", "organizations") else v2_issuer(self.authority)
        return JSONResponse(self.service.tokens.keys.jwks(issuer))

    def instance_discovery(self, request: Request) -> Response:
        host = urlsplit(self.authority).netloc
        return JSONResponse(
            {
                "tenant_discovery_endpoint": f"{self.authority}/{TENANT_ID}/v2.0/.well-known/openid-configuration",
                "api-version": "1.1",
                "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
            }
        )

    # -- /authorize -----------------------------------------------------------------------
    async def authorize(self, request: Request) -> Response:
        try:
            _tenant_or_error(request)
            if request.method == "POST":
                return await self._authorize_submit(request)
            return await self._authorize_start(request)
        except EntraError as exc:
            return HTMLResponse(pages.error_page(exc.code, exc.message), status_code=400)

    async def _authorize_start(self, request: Request) -> Response:
        q = request.query_params
        client_id = q.get("client_id", "")
        app = self.directory.require_app(client_id)  # no service principal yet: consent creates it
        redirect_uri = q.get("redirect_uri", "")
        if not redirect_uri_matches(redirect_uri, self.directory.redirect_uris(app)):
            raise EntraError(
                50011,
                "invalid_request",
                f"The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs "
                f"configured for the application '{client_id}'. Make sure the redirect URI sent in the request "
                "matches one added to your application in the Azure portal. Navigate to "
                "https://aka.ms/redirectUriMismatchError to learn more about how to fix this.",
            )
        state = q.get("state")
        if q.get("response_type") != "code":
            return self._redirect_error(redirect_uri, state, "unsupported_response_type",
                                        EntraError(70001, "unsupported_response_type", "Only response_type=code is supported."))
        method = q.get("code_challenge_method")
        if q.get("code_challenge") and method not in (None, "S256", "plain"):
            return self._redirect_error(redirect_uri, state, "invalid_request",
                                        EntraError(50148, "invalid_request", "The code_challenge_method is not supported."))
        try:
            requests = self.directory.resolve_consent_scopes(q.get("scope"), app["displayName"])
            # Refused before any sign-in, by redirect (anthropics/claude-ai-mcp#324 and #977)
            self.directory.check_resource(q.get("resource"), requests[0])
        except EntraError as exc:
            return self._redirect_error(redirect_uri, state, exc.error, exc)
        txn = stable_id("txn", time.time_ns(), client_id)
        self.pending[txn] = {
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "state": state,
            "scope": q.get("scope", ""),
            "nonce": q.get("nonce"),
            "code_challenge": q.get("code_challenge"),
            "code_challenge_method": method or ("plain" if q.get("code_challenge") else None),
            "response_mode": q.get("response_mode", "query"),
            "prompt": q.get("prompt"),
            "login_hint": q.get("login_hint"),
            "created": time.time(),
        }
        if self.tenant is not None:
            return await self.tenant.start(request, txn, self.pending[txn])
        self.events.record("picker", client_id, q.get("login_hint"), "authorize")
        shown = [f"{r.prefix}/{v}" if r.prefix else v for r in requests for v in r.values] + requests[0].oidc
        html = pages.sign_in_page(
            action=f"/{TENANT_ID}/oauth2/v2.0/authorize",
            txn=txn,
            app_name=app["displayName"],
            users=sorted(self.store.all("users"), key=lambda u: u["userPrincipalName"]),
            scopes=shown,
            login_hint=q.get("login_hint"),
        )
        return HTMLResponse(html)

    async def _authorize_submit(self, request: Request) -> Response:
        form = await read_form(request)
        if self.tenant is not None:
            return await self.tenant.submit(request, form)
        pending = self.pending.pop(str(form.get("txn", "")), None)
        if pending is None or time.time() - pending["created"] > CODE_LIFETIME:
            raise EntraError(9002313, "invalid_request", "Invalid request. The sign-in session has expired; start again.")
        redirect_uri, state = pending["redirect_uri"], pending["state"]
        if form.get("action") != "accept":
            return self._redirect_error(redirect_uri, state, "access_denied",
                                        EntraError(65004, "access_denied", "User declined to consent to access the app."))
        user = self.directory.user_by_upn(str(form.get("account", "")))
        if user is None:
            raise EntraError(50034, "invalid_request", "The user account does not exist in this directory.")
        app = self.directory.require_app(pending["client_id"])
        sp = self.directory.sp(app["appId"])
        if sp is None:  # a user's first consent creates the app's service principal (entra-docs app-objects-and-service-principals.md)
            sp = new_service_principal(app)
            await self.store.put("servicePrincipals", sp)
        for scopes in self.directory.resolve_consent_scopes(pending["scope"], app["displayName"]):  # one prompt, every resource
            await self._record_user_consent(app, sp, scopes, user)
        return self.code_response(pending, user, {})

    def code_response(self, pending: dict[str, Any], user: dict[str, Any], consented: dict[str, list[str]]) -> Response:
        """The redirect (or form_post page) that hands the client its authorization code."""
        redirect_uri, state = pending["redirect_uri"], pending["state"]
        code = self.service.new_code(
            PendingCode(
                client_id=pending["client_id"],
                redirect_uri=redirect_uri,
                user_id=user["id"],
                scope=pending["scope"],
                nonce=pending["nonce"],
                code_challenge=pending["code_challenge"],
                code_challenge_method=pending["code_challenge_method"],
                expires_at=time.time() + CODE_LIFETIME,
                consented=consented,
            )
        )
        params = {"code": code}
        if state is not None:
            params["state"] = state
        params["session_state"] = stable_id("session", user["id"])
        if pending["response_mode"] == "form_post":
            return HTMLResponse(pages.form_post_page(redirect_uri, params))
        return RedirectResponse(_append_query(redirect_uri, params), status_code=302)

    async def _record_user_consent(self, app, sp, scopes, user) -> None:
        """Interactive sign-in is where a user consents: user-consentable scopes become a Principal grant."""
        missing = self.directory.missing_consent(app, sp, scopes, user["id"])
        if not missing or missing == [".default"]:
            if missing:
                raise errors.consent_required(app["appId"], app["displayName"])
            return
        kinds = {s["value"]: s.get("type", "User") for s in self.directory.exposed_scopes(scopes.resource_sp, scopes.resource_app)}
        needs_admin = [m for m in missing if kinds.get(m) == "Admin"]
        if needs_admin and not user.get("_directoryRoles"):
            raise EntraError(
                90094,
                "invalid_grant",
                f"The grant requires admin permission. {app['displayName']} needs permission to access "
                f"resources in your organization that only an admin can grant ({' '.join(needs_admin)}).",
            )
        existing = self.store.find_one(
            "oauth2PermissionGrants", clientId=sp["id"], resourceId=scopes.resource_sp["id"],
            consentType="Principal", principalId=user["id"],
        )
        if existing is None:
            seq = await self.store.next_seq("grant")
            existing = {
                "id": stable_key_id("grant", seq), "clientId": sp["id"], "consentType": "Principal",
                "principalId": user["id"], "resourceId": scopes.resource_sp["id"], "scope": "",
            }
        existing["scope"] = " ".join(sorted(set(existing["scope"].split()) | set(missing)))
        await self.store.put("oauth2PermissionGrants", existing)

    @staticmethod
    def _redirect_error(redirect_uri: str, state: str | None, error: str, exc: EntraError) -> Response:
        params = {"error": error, "error_description": exc.body()["error_description"]}
        if state is not None:
            params["state"] = state
        return RedirectResponse(_append_query(redirect_uri, params), status_code=302)

    redirect_error = _redirect_error

    def logout(self, request: Request) -> Response:
        """Sign the browser out (ends its session; entra-docs v2-protocols-oidc.md "Send a sign-out request")."""
        self.sessions.end(request)
        return forget(HTMLResponse(pages.message_page("You signed out of your account",
                                                      "It's a good idea to close all browser windows.")))

    # -- device code ----------------------------------------------------------------------
    async def devicecode(self, request: Request) -> Response:
        try:
            _tenant_or_error(request)
            form = await read_form(request)
            client_id = str(form.get("client_id") or "")
            if not client_id:
                raise errors.missing_parameter("client_id")
            app, _ = self.directory.require_client(client_id)
            if not str(form.get("scope") or "").strip():
                raise errors.missing_parameter("scope")  # entra-docs v2-oauth2-device-code.md: scope is required
            self.directory.resolve_scopes(str(form.get("scope")), app["displayName"])
            device_code, flow = self.service.new_device_flow(client_id, str(form.get("scope") or ""))
        except EntraError as exc:
            return errors.entra_error_response(exc)
        self.events.record("device_code", client_id, None, "device_code")
        uri = f"{self.authority}/devicelogin"
        return JSONResponse(
            {
                "user_code": flow.user_code,
                "device_code": device_code,
                "verification_uri": uri,
                "expires_in": 900,
                "interval": 5,
                "message": f"To sign in, use a web browser to open the page {uri} and enter the code "
                f"{flow.user_code} to authenticate.",
            }
        )

    async def devicelogin(self, request: Request) -> Response:
        if self.tenant is not None:
            if request.method == "GET":
                return self.tenant.device_page(request)
            return await self.tenant.device_submit(request, await read_form_or_empty(request))
        users = sorted(self.store.all("users"), key=lambda u: u["userPrincipalName"])
        if request.method == "GET":
            self.events.record("device_login_page", None, None, "device_code")
            return HTMLResponse(pages.device_login_page(action="/devicelogin", users=users))
        form = await request.form()
        flow = self.service.device_flow_by_user_code(str(form.get("user_code", "")))
        if flow is None:
            return HTMLResponse(
                pages.device_login_page(action="/devicelogin", users=users, message="That code didn't work."),
                status_code=400,
            )
        if form.get("action") != "accept":
            flow.declined = True
            return HTMLResponse(pages.message_page("Sign-in cancelled", "You can close this window."))
        user = self.directory.user_by_upn(str(form.get("account", "")))
        if user is None:
            return HTMLResponse(pages.device_login_page(action="/devicelogin", users=users, message="Pick an account."), status_code=400)
        flow.user_id = user["id"]
        return HTMLResponse(pages.message_page("You're signed in", f"Signed in as {user['userPrincipalName']}. You can close this window."))

    # -- /token ---------------------------------------------------------------------------
    async def token(self, request: Request) -> Response:
        try:
            _tenant_or_error(request)
            form = await read_form(request)
            body = await self.service.handle(form, request.headers.get("authorization"))
        except EntraError as exc:
            return errors.entra_error_response(exc)
        return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def routes(self) -> list[Route]:
        return [
            Route("/{tenant}/v2.0/.well-known/openid-configuration", self._json_errors(self.openid_configuration)),
            Route("/{tenant}/.well-known/openid-configuration", self._json_errors(self.openid_configuration_v1)),
            Route("/{tenant}/discovery/v2.0/keys", self.jwks),
            Route("/{tenant}/discovery/keys", self.jwks),
            Route("/common/discovery/instance", self.instance_discovery),
            Route("/{tenant}/oauth2/v2.0/authorize", self.authorize, methods=["GET", "POST"]),
            Route("/{tenant}/oauth2/v2.0/devicecode", self.devicecode, methods=["POST"]),
            Route("/{tenant}/oauth2/v2.0/token", self.token, methods=["POST"]),
            Route("/devicelogin", self.devicelogin, methods=["GET", "POST"]),
            Route("/{tenant}/oauth2/v2.0/logout", self.logout, methods=["GET", "POST"]),
        ]

    @staticmethod
    def _json_errors(handler):
        def wrapped(request: Request) -> Response:
            try:
                return handler(request)
            except EntraError as exc:
                return errors.entra_error_response(exc)

        return wrapped


def _append_query(uri: str, params: dict[str, str]) -> str:
    return uri + ("&" if "?" in uri else "?") + urlencode(params)


def build_identity_app(identity: IdentityApp, extra_routes: list[Route]) -> Starlette:
    return Starlette(routes=identity.routes() + extra_routes)
