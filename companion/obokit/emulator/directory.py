"""Directory queries the identity side needs: apps, service principals, consent and role assignments."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import errors
from .ids import GRAPH_APP_ID, GRAPH_RESOURCE, TENANT_DOMAIN, TENANT_ID, stable_id
from .store import Store

OIDC_SCOPES = {"openid", "profile", "email", "offline_access"}
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass
class ScopeRequest:
    """A scope parameter resolved to (at most) one resource and its scope values."""

    raw: str
    resource_sp: dict[str, Any] | None = None
    resource_app: dict[str, Any] | None = None
    prefix: str | None = None  # how the client named the resource, e.g. api://{appId} or a GUID; "" if unnamed (Graph)
    values: list[str] = field(default_factory=list)  # short scope names, e.g. ["User.Read"]
    default: bool = False  # ".default" was requested
    oidc: list[str] = field(default_factory=list)

    @property
    def is_graph(self) -> bool:
        return bool(self.resource_sp and self.resource_sp["appId"] == GRAPH_APP_ID)


def _expired(end: str | None) -> bool:
    """Whether a credential's `endDateTime` ("2028-01-01T00:00:00Z", maybe with a fraction) has passed."""
    if not end:
        return False
    try:
        when = dt.datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when <= dt.datetime.now(dt.timezone.utc)


def new_service_principal(app: dict[str, Any], *, tags: list[str] | None = None,
                          assignment_required: bool = False) -> dict[str, Any]:
    """The service principal record of `app` in the tenant (created by Graph's POST /servicePrincipals or by
    a user's first consent)."""
    return {
        "id": stable_id("sp", app["appId"]),
        "appId": app["appId"],
        "displayName": app["displayName"],
        "appDisplayName": app["displayName"],
        "appOwnerOrganizationId": TENANT_ID,
        "accountEnabled": True,
        "appRoleAssignmentRequired": assignment_required,
        "servicePrincipalType": "Application",
        "signInAudience": app.get("signInAudience"),
        "tags": tags or [],
        "passwordCredentials": [],
        "keyCredentials": [],
    }


class Directory:
    """Read-only views over the store used to decide what a token may contain.

    `store` is the store itself or, in the tenant profile, a lagging `ReplicaView` of it; `tenant_like` also
    tells a secret that no replica knows yet (AADSTS7000222) from a wrong one (7000215)."""

    def __init__(self, store: Store | Any, *, tenant_like: bool = False) -> None:
        self.store = store
        self.tenant_like = tenant_like

    # -- lookups --------------------------------------------------------------------------
    def app(self, app_id: str) -> dict[str, Any] | None:
        return self.store.find_one("applications", appId=app_id)

    def sp(self, app_id: str) -> dict[str, Any] | None:
        return self.store.find_one("servicePrincipals", appId=app_id)

    def user(self, oid: str) -> dict[str, Any] | None:
        return self.store.get("users", oid)

    def user_by_upn(self, upn: str) -> dict[str, Any] | None:
        upn = upn.lower()
        for user in self.store.all("users"):
            if user["userPrincipalName"].lower() == upn:
                return user
        return None

    def require_app(self, client_id: str) -> dict[str, Any]:
        """The client's app registration, or AADSTS700016."""
        app = self.app(client_id)
        if app is None:
            raise errors.unknown_client(client_id, TENANT_DOMAIN)
        return app

    def require_client(self, client_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The app and its service principal, or AADSTS700016 / 7000229."""
        app = self.require_app(client_id)
        sp = self.sp(client_id)
        if sp is None:
            raise errors.missing_service_principal(client_id, TENANT_ID)
        return app, sp

    def check_client_secret(self, app: dict[str, Any], secret: str | None) -> None:
        """AADSTS7000215 for a wrong secret, 7000218 when a confidential client sends none."""
        if secret is None:
            if self.is_public_client(app):
                return
            raise errors.missing_credential()
        credentials = app.get("passwordCredentials", [])
        if self.tenant_like:
            credentials = [c for c in credentials if not _expired(c.get("endDateTime"))]
            if not credentials:
                raise errors.expired_secret(app["appId"])
        for credential in credentials:
            if credential.get("_secret") == secret:
                return
        raise errors.invalid_secret(app["appId"])

    @staticmethod
    def is_public_client(app: dict[str, Any]) -> bool:
        return bool(app.get("isFallbackPublicClient") or app.get("publicClient", {}).get("redirectUris"))

    def redirect_uris(self, app: dict[str, Any]) -> list[str]:
        return [
            *app.get("web", {}).get("redirectUris", []),
            *app.get("publicClient", {}).get("redirectUris", []),
            *app.get("spa", {}).get("redirectUris", []),
        ]

    # -- scopes ---------------------------------------------------------------------------
    def _resource_for_prefix(self, prefix: str) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        if prefix.rstrip("/") in ("", GRAPH_RESOURCE, GRAPH_APP_ID, "https://graph.microsoft.com/v1.0"):
            sp = self.sp(GRAPH_APP_ID)
            return (sp, None) if sp else None
        for app in self.store.all("applications"):
            if prefix == app["appId"] or prefix in app.get("identifierUris", []):
                sp = self.sp(app["appId"])
                if sp is None:
                    raise errors.EntraError(
                        500011,
                        "invalid_resource",
                        f"The resource principal named {prefix} was not found in the tenant named "
                        f"{TENANT_DOMAIN}. This can happen if the application has not been "
                        "installed by the administrator of the tenant or consented to by any user in "
                        "the tenant. You might have sent your authentication request to the wrong tenant.",
                    )
                return sp, app
        return None

    def resolve_scopes(self, raw: str | None, client_name: str = "") -> ScopeRequest:
        """Split a scope parameter into OIDC scopes and one resource's scopes.

        Errors: 28000 for two resources, 70011 for a malformed scope or an unknown resource, 650053 for a scope
        the resource does not expose (`client_name` names the asking app in its message)."""
        raw = (raw or "").strip()
        request = ScopeRequest(raw=raw)
        by_prefix: dict[str, list[str]] = {}
        for item in raw.split():
            if item in OIDC_SCOPES:
                request.oidc.append(item)
                continue
            if "/" in item:
                prefix, value = item.rsplit("/", 1)
            elif _GUID.match(item):
                raise errors.invalid_scope(raw)
            else:
                prefix, value = "", item  # unprefixed scopes mean Microsoft Graph
            if not value or (not prefix and "/" in item):
                raise errors.invalid_scope(
                    raw,
                    " The scope format is invalid. Scope must be in a valid URI form "
                    "<https://example/scope> or a valid Guid <guid/scope>.",
                )
            by_prefix.setdefault(prefix, []).append(value)
        resolved = {}
        for prefix, values in by_prefix.items():
            found = self._resource_for_prefix(prefix)
            if found is None:
                raise errors.invalid_scope(raw)
            resolved.setdefault(found[0]["id"], (found, prefix, values))
            if len(resolved) > 1:
                raise errors.multiple_resources(raw)
        for (sp, app), prefix, values in resolved.values():
            request.resource_sp, request.resource_app, request.prefix = sp, app, prefix
            for value in values:
                if value == ".default":
                    request.default = True
                    continue
                known = {s["value"] for s in self.exposed_scopes(sp, app) if s.get("isEnabled", True)}
                if value not in known:
                    raise errors.scope_not_on_resource(client_name, value, sp["appId"])
                request.values.append(value)
        return request

    @staticmethod
    def check_resource(resource: str | None, scopes: ScopeRequest) -> None:
        """An RFC 8707 `resource` must be, byte for byte, an identifier URI of the app whose scopes are requested
        (learn.microsoft.com "Secure an MCP server with Entra ID"; no trailing-slash tolerance, claude-code#52871).
        Graph scopes (also bare ones like `mcp.read`) match no `resource` (anthropics/claude-ai-mcp#514)."""
        if resource is None:
            return
        if scopes.resource_app is None or resource not in scopes.resource_app.get("identifierUris", []):
            raise errors.resource_mismatch()

    def resolve_consent_scopes(self, raw: str | None, client_name: str = "") -> list[ScopeRequest]:
        """/authorize may name several resources, consented in one prompt (MSAL's "extra scopes to
        consent", fastmcp's `additional_authorize_scopes`); a token is still one resource (28000 at /token)."""
        try:
            return [self.resolve_scopes(raw, client_name)]
        except errors.EntraError as exc:
            if exc.code != 28000:
                raise
        items = (raw or "").split()
        oidc = [item for item in items if item in OIDC_SCOPES]
        by_resource: dict[str, list[str]] = {}
        for item in items:
            if item not in OIDC_SCOPES:
                by_resource.setdefault(self.resolve_scopes(item, client_name).resource_sp["id"], []).append(item)
        return [self.resolve_scopes(" ".join([*group, *oidc]), client_name) for group in by_resource.values()]

    def exposed_scopes(self, sp: dict[str, Any], app: dict[str, Any] | None) -> list[dict[str, Any]]:
        if app is not None:
            return app.get("api", {}).get("oauth2PermissionScopes", [])
        return sp.get("oauth2PermissionScopes", [])

    # -- consent and roles ----------------------------------------------------------------
    def granted_scopes(self, client_sp_id: str, resource_sp_id: str, user_id: str | None) -> set[str]:
        """Delegated scopes consented for this client on this resource, for everyone or this user."""
        granted: set[str] = set()
        for grant in self.store.find("oauth2PermissionGrants", clientId=client_sp_id, resourceId=resource_sp_id):
            if grant["consentType"] == "AllPrincipals" or grant.get("principalId") == user_id:
                granted.update((grant.get("scope") or "").split())
        return granted

    def is_preauthorized(self, client_app_id: str, resource_app: dict[str, Any] | None) -> set[str]:
        """Scope values the resource app pre-authorizes for this client (authorized client applications)."""
        if resource_app is None:
            return set()
        by_id = {s["id"]: s["value"] for s in resource_app.get("api", {}).get("oauth2PermissionScopes", [])}
        allowed: set[str] = set()
        for entry in resource_app.get("api", {}).get("preAuthorizedApplications", []):
            if entry.get("appId") == client_app_id:
                allowed.update(by_id.get(pid, "") for pid in entry.get("delegatedPermissionIds", []))
        return allowed

    def missing_consent(
        self, client_app: dict[str, Any], client_sp: dict[str, Any], scopes: ScopeRequest, user_id: str | None,
        extra: Iterable[str] = (),
    ) -> list[str]:
        """Requested scope values not covered by a grant, pre-authorization or self-access (`extra`: scopes
        consented in this very sign-in, which its code or device flow carries while the grant replicates)."""
        if scopes.resource_sp is None:
            return []
        if scopes.resource_app is not None and scopes.resource_app["appId"] == client_app["appId"]:
            return []  # an app calling its own API needs no separate consent
        covered = self.granted_scopes(client_sp["id"], scopes.resource_sp["id"], user_id) | set(extra)
        covered |= self.is_preauthorized(client_app["appId"], scopes.resource_app)
        if scopes.default and not covered:
            return [".default"]
        return [v for v in scopes.values if v not in covered]

    def effective_scopes(
        self, client_app: dict[str, Any], client_sp: dict[str, Any], scopes: ScopeRequest, user_id: str | None,
        extra: Iterable[str] = (),
    ) -> list[str]:
        """The `scp` values a delegated token gets: every scope consented for this client on the resource,
        whatever subset was requested (OIDC ones included: asked for `User.Read`, a real Graph token had
        `email Mail.Read profile User.Read openid`, MSAL.js#5672), plus those requested and pre-authorized."""
        assert scopes.resource_sp is not None
        if scopes.resource_app is not None and scopes.resource_app["appId"] == client_app["appId"]:
            if not scopes.default:
                return list(scopes.values)
            return [s["value"] for s in self.exposed_scopes(scopes.resource_sp, scopes.resource_app)]
        covered = self.granted_scopes(client_sp["id"], scopes.resource_sp["id"], user_id) | set(extra)
        if scopes.default:
            covered |= self.is_preauthorized(client_app["appId"], scopes.resource_app)
        return sorted(covered | set(scopes.values), key=str.lower)

    def assigned_roles(self, principal_ids: list[str], resource_sp: dict[str, Any]) -> list[str]:
        """App role values assigned on `resource_sp` to any of `principal_ids`."""
        app = self.app(resource_sp["appId"])
        roles = (app or resource_sp).get("appRoles", []) or resource_sp.get("appRoles", [])
        by_id = {r["id"]: r["value"] for r in roles if r.get("isEnabled", True)}
        values = {
            by_id[a["appRoleId"]]
            for a in self.store.find("appRoleAssignments", resourceId=resource_sp["id"])
            if a["principalId"] in principal_ids and a["appRoleId"] in by_id
        }
        return sorted(values)

    def user_group_ids(self, user_id: str) -> list[str]:
        """Groups the user belongs to, directly or through nested groups."""
        groups = self.store.all("groups")
        found: set[str] = set()
        frontier = {user_id}
        while frontier:
            parents = {g["id"] for g in groups if frontier & set(g.get("_members", [])) and g["id"] not in found}
            found |= parents
            frontier = parents
        return sorted(found)

