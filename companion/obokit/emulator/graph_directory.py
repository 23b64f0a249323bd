"""Graph directory endpoints: applications, servicePrincipals, oauth2PermissionGrants, appRoleAssignedTo."""

from __future__ import annotations

import datetime as dt
import secrets
import string
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .errors import GraphError
from . import graph_schema as schema
from . import key_credentials
from .directory import new_service_principal
from .graph_core import Caller, GraphContext, RouteEntry, no_content, not_found, read_json, route
from .ids import TENANT_DOMAIN, TENANT_ID, stable_id, stable_key_id
from .odata import apply_filter, parse_top

APP_WRITE = {"Application.ReadWrite.All"}
APP_READ = APP_WRITE | {"Application.Read.All", "Directory.Read.All"}
GRANT_WRITE = {"DelegatedPermissionGrant.ReadWrite.All"}
GRANT_READ = GRANT_WRITE | APP_READ
ROLE_WRITE = {"AppRoleAssignment.ReadWrite.All"}
ROLE_READ = ROLE_WRITE | APP_READ
_SECRET_ALPHABET = string.ascii_letters + string.digits + "~._-"
APP_KEY = r"(?:/(?P<id>[0-9A-Za-z-]+)|\(appId='(?P<appid>[^']+)'\))"


PERSONAL_ACCOUNT_AUDIENCES = ("AzureADandPersonalMicrosoftAccount", "PersonalMicrosoftAccount")


def find_app(view: Any, params: dict[str, str]) -> dict[str, Any]:
    """The application a route names by object id or `(appId='...')` (first-party apps are not Graph's to show)."""
    if params.get("appid"):
        app = view.find_one("applications", appId=params["appid"])
    else:
        app = view.get("applications", params.get("id") or "")
    if app is None or app.get("_firstParty"):
        raise not_found(params.get("appid") or params.get("id") or "")
    return app


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """Graph PATCH semantics used here: top-level properties replace, complex ones merge one level."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            target[key].update(value)
        else:
            target[key] = value


def _new_secret() -> str:
    body = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(37))
    return body[:3] + "8Q~" + body[3:]


class DirectoryEndpoints:
    """Handlers for the directory objects the workbook provisions."""

    def __init__(self, ctx: GraphContext) -> None:
        self.ctx = ctx
        self.store = ctx.store  # writes, and the lookups of writes (they see every write at once)
        self.reads = ctx.reads  # GET and list: a lagging replica in the tenant profile (replication.py)

    # -- lookups --------------------------------------------------------------------------
    def _app(self, params: dict[str, str], view: Any = None) -> dict[str, Any]:
        return find_app(view or self.store, params)

    def _sp(self, params: dict[str, str], view: Any = None) -> dict[str, Any]:
        view = view or self.store
        if params.get("appid"):
            sp = view.find_one("servicePrincipals", appId=params["appid"])
        else:
            sp = view.get("servicePrincipals", params.get("id") or "")
        if sp is None:
            raise not_found(params.get("appid") or params.get("id") or "")
        return self._sp_view(sp, view)

    def _sp_view(self, sp: dict[str, Any], view: Any = None) -> dict[str, Any]:
        """A service principal reflects its application's current scopes and roles."""
        app = (view or self.store).find_one("applications", appId=sp["appId"])
        if app is not None and not app.get("_firstParty"):
            sp["oauth2PermissionScopes"] = app.get("api", {}).get("oauth2PermissionScopes", [])
            sp["appRoles"] = app.get("appRoles", [])
            sp["replyUrls"] = app.get("web", {}).get("redirectUris", [])
            sp["servicePrincipalNames"] = [app["appId"], *app.get("identifierUris", [])]
        return sp

    def _list(self, request: Request, items: list[dict[str, Any]], fragment: str) -> Response:
        items = apply_filter(items, request.query_params.get("$filter"))
        top = parse_top(request.query_params.get("$top"))
        return self.ctx.collection(items[:top] if top else items, fragment, request)

    # -- applications ---------------------------------------------------------------------
    async def list_apps(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=APP_READ, application=APP_READ)
        apps = [a for a in self.reads.all("applications") if not a.get("_firstParty")]
        return self._list(request, apps, "applications")

    async def create_app(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=APP_WRITE, application=APP_WRITE, admin=True)
        body = await read_json(request, schema.APPLICATION, "Application")
        if not body.get("displayName"):
            raise GraphError(400, "Request_BadRequest", "Property 'displayName' is required.")
        if body.get("passwordCredentials"):
            raise GraphError(400, "Request_BadRequest", "passwordCredentials cannot be set on create; use addPassword.")
        seq = await self.store.next_seq("application")
        app: dict[str, Any] = {
            "id": stable_id("application-object", seq),
            "appId": stable_id("application", seq),
            "displayName": None,
            "signInAudience": "AzureADandPersonalMicrosoftAccount",
            "identifierUris": [],
            "createdDateTime": _now(),
            "publisherDomain": TENANT_DOMAIN,
            "isFallbackPublicClient": None,
            "api": {"requestedAccessTokenVersion": None, "acceptMappedClaims": None, "knownClientApplications": [],
                    "oauth2PermissionScopes": [], "preAuthorizedApplications": []},
            "appRoles": [],
            "publicClient": {"redirectUris": []},
            "spa": {"redirectUris": []},
            "web": {"redirectUris": [], "homePageUrl": None, "logoutUrl": None,
                    "implicitGrantSettings": {"enableIdTokenIssuance": False, "enableAccessTokenIssuance": False}},
            "requiredResourceAccess": [],
            "passwordCredentials": [],
            "keyCredentials": [],
            # More of what Graph answers to POST /applications (application-post-applications.md)
            "addIns": [],
            "tags": [],
            "groupMembershipClaims": None,
            "optionalClaims": None,
            "info": {"logoUrl": None, "marketingUrl": None, "privacyStatementUrl": None, "supportUrl": None,
                     "termsOfServiceUrl": None},
            "parentalControlSettings": {"countriesBlockedForMinors": [], "legalAgeGroupRule": "Allow"},
        }
        requested_keys = body.pop("keyCredentials", None)
        _merge(app, body)
        if requested_keys:
            app["keyCredentials"] = key_credentials.replace_credentials(app, requested_keys)
        if app["signInAudience"] in PERSONAL_ACCOUNT_AUDIENCES and app["api"].get("requestedAccessTokenVersion") is None:
            # Graph's own answer to a bare POST /applications: this audience only works with v2 tokens
            # (application-post-applications.md; apiApplication.requestedAccessTokenVersion's description).
            app["api"]["requestedAccessTokenVersion"] = 2
        self._check_identifier_uris(app, app.get("identifierUris") or [])
        await self.store.put("applications", app)
        return self.ctx.entity(app, "applications/$entity", request, status=201)

    async def get_app(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=APP_READ, application=APP_READ)
        app = self._app(params, self.reads)
        selected = {s.strip() for s in (request.query_params.get("$select") or "").split(",")}
        # A certificate's `key` is read back only with $select=keyCredentials on one object (keycredential.md).
        app["keyCredentials"] = key_credentials.shown(app.get("keyCredentials") or [], "keyCredentials" in selected)
        return self.ctx.entity(app, "applications/$entity", request)

    async def patch_app(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=APP_WRITE, application=APP_WRITE, admin=True)
        app = self._app(params)
        body = await read_json(request, schema.APPLICATION, "Application")
        for frozen in ("id", "appId", "passwordCredentials"):
            body.pop(frozen, None)
        if "identifierUris" in body:
            self._check_identifier_uris(app, body["identifierUris"] or [])
        if "keyCredentials" in body:  # the whole collection is replaced
            body["keyCredentials"] = key_credentials.replace_credentials(app, body["keyCredentials"] or [])
        _merge(app, body)
        await self.store.put("applications", app)
        return no_content()

    def _check_identifier_uris(self, app: dict[str, Any], uris: list[str]) -> None:
        for uri in uris:
            allowed = (
                uri in (f"api://{app['appId']}", f"api://{TENANT_ID}")
                or uri.startswith((f"api://{app['appId']}/", f"api://{TENANT_ID}/"))
                or uri.startswith(f"https://{TENANT_DOMAIN}/")
            )
            if not allowed:
                raise GraphError(
                    400, "HostNameNotOnVerifiedDomain",
                    f"Values of identifierUris property must use a verified domain of the organization or its subdomain: '{uri}'",
                )
            for other in self.store.all("applications"):
                if other["id"] != app["id"] and uri in other.get("identifierUris", []):
                    raise GraphError(400, "Request_BadRequest", "Another object with the same value for property identifierUris already exists.")

    async def delete_app(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=APP_WRITE, application=APP_WRITE, admin=True)
        app = self._app(params)
        sp = self.store.find_one("servicePrincipals", appId=app["appId"])
        if sp is not None:
            await self._delete_sp_cascade(sp)
        await self.store.delete("applications", app["id"])
        return no_content()

    async def add_password(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=APP_WRITE, application=APP_WRITE, admin=True)
        app = self._app(params)
        requested = (await read_json(request, schema.PASSWORD, "PasswordCredential")).get("passwordCredential") or {}
        start = requested.get("startDateTime") or _now()
        end = requested.get("endDateTime") or (
            dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=730)
        ).strftime("%Y-%m-%dT%H:%M:%SZ")
        secret = _new_secret()
        seq = await self.store.next_seq("password")
        credential = {
            "customKeyIdentifier": None,
            "displayName": requested.get("displayName"),
            "endDateTime": end,
            "hint": secret[:3],
            "keyId": stable_id("password", seq),
            "secretText": None,
            "startDateTime": start,
            "_secret": secret,
        }
        app["passwordCredentials"] = [*app.get("passwordCredentials", []), credential]
        await self.store.put("applications", app)
        shown = {**self.ctx.public(credential), "secretText": secret}
        return self.ctx.entity(shown, "microsoft.graph.passwordCredential", request)

    async def remove_password(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=APP_WRITE, application=APP_WRITE, admin=True)
        app = self._app(params)
        key_id = (await read_json(request, schema.REMOVE_PASSWORD)).get("keyId")
        remaining = [c for c in app.get("passwordCredentials", []) if c.get("keyId") != key_id]
        if len(remaining) == len(app.get("passwordCredentials", [])):
            raise GraphError(400, "Request_BadRequest", f"No password credential found with keyId '{key_id}'.")
        app["passwordCredentials"] = remaining
        await self.store.put("applications", app)
        return no_content()

    # -- service principals ---------------------------------------------------------------
    async def list_sps(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=APP_READ, application=APP_READ)
        return self._list(request, [self._sp_view(s, self.reads) for s in self.reads.all("servicePrincipals")], "servicePrincipals")

    async def create_sp(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=APP_WRITE, application=APP_WRITE, admin=True)
        body = await read_json(request, schema.SERVICE_PRINCIPAL, "ServicePrincipal")
        app = self.store.find_one("applications", appId=body.get("appId") or "")
        if app is None:
            raise GraphError(400, "Request_BadRequest", f"The appId '{body.get('appId')}' of the service principal does not reference a valid application object.")
        if self.store.find_one("servicePrincipals", appId=app["appId"]):
            raise GraphError(409, "Request_MultipleObjectsWithSameKeyValue", "The service principal cannot be created, updated, or restored because the service principal name is already in use.")
        sp = new_service_principal(app, tags=body.get("tags", []),
                                   assignment_required=bool(body.get("appRoleAssignmentRequired", False)))
        await self.store.put("servicePrincipals", sp)
        return self.ctx.entity(self._sp_view(sp), "servicePrincipals/$entity", request, status=201)

    async def get_sp(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=APP_READ, application=APP_READ)
        return self.ctx.entity(self._sp(params, self.reads), "servicePrincipals/$entity", request)

    async def delete_sp(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=APP_WRITE, application=APP_WRITE, admin=True)
        await self._delete_sp_cascade(self._sp(params))
        return no_content()

    async def _delete_sp_cascade(self, sp: dict[str, Any]) -> None:
        for grant in self.store.all("oauth2PermissionGrants"):
            if sp["id"] in (grant["clientId"], grant["resourceId"]):
                await self.store.delete("oauth2PermissionGrants", grant["id"])
        for assignment in self.store.all("appRoleAssignments"):
            if sp["id"] in (assignment["principalId"], assignment["resourceId"]):
                await self.store.delete("appRoleAssignments", assignment["id"])
        await self.store.delete("servicePrincipals", sp["id"])

    # -- delegated permission grants ------------------------------------------------------
    async def list_grants(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=GRANT_READ, application=GRANT_READ)
        return self._list(request, self.reads.all("oauth2PermissionGrants"), "oauth2PermissionGrants")

    async def create_grant(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=GRANT_WRITE, application=GRANT_WRITE, admin=True)
        body = await read_json(request, schema.PERMISSION_GRANT, "OAuth2PermissionGrant")
        for prop in ("clientId", "resourceId"):
            if self.store.get("servicePrincipals", body.get(prop) or "") is None:
                raise GraphError(400, "Request_BadRequest", f"Invalid value specified for property '{prop}' of resource 'OAuth2PermissionGrant'.")
        consent_type = body.get("consentType")
        if consent_type not in ("AllPrincipals", "Principal"):
            raise GraphError(400, "Request_BadRequest", "Invalid value specified for property 'consentType' of resource 'OAuth2PermissionGrant'.")
        principal = body.get("principalId") if consent_type == "Principal" else None
        if consent_type == "Principal" and self.store.get("users", principal or "") is None:
            raise GraphError(400, "Request_BadRequest", "Invalid value specified for property 'principalId' of resource 'OAuth2PermissionGrant'.")
        duplicate = self.store.find_one("oauth2PermissionGrants", clientId=body["clientId"], resourceId=body["resourceId"],
                                        consentType=consent_type, principalId=principal)
        if duplicate:
            raise GraphError(409, "Request_MultipleObjectsWithSameKeyValue", "Permission entry already exists.")
        seq = await self.store.next_seq("grant")
        grant = {"id": stable_key_id("grant", seq), "clientId": body["clientId"], "consentType": consent_type,
                 "principalId": principal, "resourceId": body["resourceId"], "scope": (body.get("scope") or "").strip()}
        await self.store.put("oauth2PermissionGrants", grant)
        return self.ctx.entity(grant, "oauth2PermissionGrants/$entity", request, status=201)

    def _grant(self, params: dict[str, str], view: Any = None) -> dict[str, Any]:
        grant = (view or self.store).get("oauth2PermissionGrants", params.get("id") or "")
        if grant is None:
            raise not_found(params.get("id") or "")
        return grant

    async def get_grant(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=GRANT_READ, application=GRANT_READ)
        return self.ctx.entity(self._grant(params, self.reads), "oauth2PermissionGrants/$entity", request)

    async def patch_grant(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=GRANT_WRITE, application=GRANT_WRITE, admin=True)
        grant = self._grant(params)
        body = await read_json(request, schema.PERMISSION_GRANT, "OAuth2PermissionGrant")
        if "scope" in body:
            grant["scope"] = (body["scope"] or "").strip()
        await self.store.put("oauth2PermissionGrants", grant)
        return no_content()

    async def delete_grant(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=GRANT_WRITE, application=GRANT_WRITE, admin=True)
        await self.store.delete("oauth2PermissionGrants", self._grant(params)["id"])
        return no_content()

    # -- app role assignments -------------------------------------------------------------
    async def list_assignments(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=ROLE_READ, application=ROLE_READ)
        sp = self._sp(params, self.reads)
        items = self.reads.find("appRoleAssignments", resourceId=sp["id"])
        return self._list(request, items, f"servicePrincipals('{sp['id']}')/appRoleAssignedTo")

    async def create_assignment(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=ROLE_WRITE, application=ROLE_WRITE, admin=True)
        sp = self._sp(params)
        body = await read_json(request, schema.APP_ROLE_ASSIGNMENT, "AppRoleAssignment")
        if body.get("resourceId") != sp["id"]:
            raise GraphError(400, "Request_BadRequest", "The resourceId in the request body must match the service principal in the URL.")
        role_ids = {r["id"] for r in sp.get("appRoles", [])} | {"00000000-0000-0000-0000-000000000000"}
        if body.get("appRoleId") not in role_ids:
            raise GraphError(400, "Request_BadRequest", "Permission being assigned was not found on application")
        principal_id = body.get("principalId") or ""
        principal_type, principal = next(
            ((kind, obj) for kind, coll in (("User", "users"), ("Group", "groups"), ("ServicePrincipal", "servicePrincipals"))
             if (obj := self.store.get(coll, principal_id)) is not None),
            (None, None),
        )
        if principal is None:
            raise GraphError(400, "Request_BadRequest", "Invalid value specified for property 'principalId' of resource 'AppRoleAssignment'.")
        if self.store.find_one("appRoleAssignments", resourceId=sp["id"], principalId=principal_id, appRoleId=body["appRoleId"]):
            raise GraphError(409, "Request_MultipleObjectsWithSameKeyValue", "Permission being assigned already exists on the object")
        seq = await self.store.next_seq("assignment")
        assignment = {
            "id": stable_key_id("assignment", seq), "appRoleId": body["appRoleId"], "createdDateTime": _now(),
            "deletedDateTime": None, "principalDisplayName": principal["displayName"], "principalId": principal_id,
            "principalType": principal_type, "resourceDisplayName": sp["displayName"], "resourceId": sp["id"],
        }
        await self.store.put("appRoleAssignments", assignment)
        return self.ctx.entity(assignment, f"servicePrincipals('{sp['id']}')/appRoleAssignedTo/$entity", request, status=201)

    async def delete_assignment(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=ROLE_WRITE, application=ROLE_WRITE, admin=True)
        sp = self._sp(params)
        assignment = self.store.get("appRoleAssignments", params["aid"])
        if assignment is None or assignment["resourceId"] != sp["id"]:
            raise not_found(params["aid"])
        await self.store.delete("appRoleAssignments", assignment["id"])
        return no_content()

    def routes(self) -> list[RouteEntry]:
        app, sp = f"/applications{APP_KEY}", f"/servicePrincipals{APP_KEY}"
        return [
            route("GET", "/applications", self.list_apps),
            route("POST", "/applications", self.create_app),
            route("GET", app, self.get_app),
            route("PATCH", app, self.patch_app),
            route("DELETE", app, self.delete_app),
            route("POST", f"{app}/addPassword", self.add_password),
            route("POST", f"{app}/removePassword", self.remove_password),
            route("GET", "/servicePrincipals", self.list_sps),
            route("POST", "/servicePrincipals", self.create_sp),
            route("GET", sp, self.get_sp),
            route("DELETE", sp, self.delete_sp),
            route("GET", f"{sp}/appRoleAssignedTo", self.list_assignments),
            route("POST", f"{sp}/appRoleAssignedTo", self.create_assignment),
            route("DELETE", f"{sp}/appRoleAssignedTo/(?P<aid>[0-9A-Za-z_-]+)", self.delete_assignment),
            route("GET", "/oauth2PermissionGrants", self.list_grants),
            route("POST", "/oauth2PermissionGrants", self.create_grant),
            route("GET", "/oauth2PermissionGrants/(?P<id>[^/]+)", self.get_grant),
            route("PATCH", "/oauth2PermissionGrants/(?P<id>[^/]+)", self.patch_grant),
            route("DELETE", "/oauth2PermissionGrants/(?P<id>[^/]+)", self.delete_grant),
        ]
