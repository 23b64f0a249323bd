"""Consent in the tenant profile: what a sign-in still needs, who may give it, and the grants it records.

At /authorize and on the device-code page Entra "ensures that the user has consented to the permissions
indicated in the scope ... If the user hasn't consented to any of those permissions, it asks the user to
consent" (entra-docs v2-oauth2-auth-code-flow.md). Admin-only permissions need an administrator; an
administrator may also consent "on behalf of the entire tenant" (entra-docs application-consent-experience.md):
that is an AllPrincipals oauth2PermissionGrant, a user's own consent a Principal grant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import errors
from .directory import OIDC_SCOPES, Directory, ScopeRequest, new_service_principal
from .ids import GRAPH_APP_ID, GRAPH_RESOURCE, stable_key_id
from .store import Store


@dataclass
class Missing:
    """What one resource still lacks for this user: scope values (OIDC ones included, they are Graph's)."""

    resource_sp: dict[str, Any]
    values: list[str]
    admin_only: list[str] = field(default_factory=list)
    descriptions: dict[str, str] = field(default_factory=dict)

    def shown(self) -> list[tuple[str, str]]:
        """(scope as requested, description) for the consent page."""
        prefix = GRAPH_RESOURCE if self.resource_sp["appId"] == GRAPH_APP_ID else self.resource_sp["appId"]
        return [(v if v in OIDC_SCOPES else f"{prefix}/{v}", self.descriptions.get(v, v)) for v in self.values]


def is_admin(user: dict[str, Any]) -> bool:
    """Adele (a Global Administrator in the seed); the org checkbox "will only show for the Global Administrator
    role" (entra-docs application-consent-experience.md)."""
    return "Global Administrator" in (user.get("_directoryRoles") or [])


def needed(directory: Directory, app: dict[str, Any], scope: str, user: dict[str, Any], *, force: bool = False) -> list[Missing]:
    """The permissions `user` has not consented to for `app` (all requested ones with `prompt=consent`).
    OIDC scopes (openid, profile, email, offline_access) are Microsoft Graph's permissions, checked there."""
    graph_sp = directory.sp(GRAPH_APP_ID)
    client_sp = directory.sp(app["appId"]) or {"id": ""}  # no (visible) service principal: nothing consented
    wanted: dict[str, tuple[dict[str, Any], dict[str, Any] | None, list[str]]] = {}
    oidc: list[str] = []
    for request in directory.resolve_consent_scopes(scope, app["displayName"]):
        oidc += [o for o in request.oidc if o not in oidc]
        if request.resource_sp is None:
            continue
        values = list(request.values)
        if request.default:
            values += _static_permissions(app, request.resource_sp, directory, request)
            if not values:  # nothing registered to show: 65001, as the quick profile answers
                raise errors.consent_required(app["appId"], app["displayName"])
        probe = ScopeRequest(raw=scope, resource_sp=request.resource_sp, resource_app=request.resource_app, values=values)
        missing = values if force else directory.missing_consent(app, client_sp, probe, user["id"])
        wanted[request.resource_sp["id"]] = (request.resource_sp, request.resource_app, list(missing))
    if oidc and graph_sp is not None:
        granted = set() if force else directory.granted_scopes(client_sp["id"], graph_sp["id"], user["id"])
        _, _, graph_missing = wanted.setdefault(graph_sp["id"], (graph_sp, None, []))
        graph_missing += [o for o in oidc if o not in granted and o not in graph_missing]
    found = []
    for resource_sp, resource_app, missing in wanted.values():
        if not missing:
            continue
        exposed = {s["value"]: s for s in directory.exposed_scopes(resource_sp, resource_app)}
        entry = Missing(resource_sp, list(dict.fromkeys(missing)))
        for value in entry.values:
            spec = exposed.get(value, {})
            if spec.get("type") == "Admin":
                entry.admin_only.append(value)
            text = spec.get("adminConsentDisplayName") if is_admin(user) else spec.get("userConsentDisplayName")
            entry.descriptions[value] = text or spec.get("adminConsentDisplayName") or value
        found.append(entry)
    return found


def _static_permissions(app: dict[str, Any], resource_sp: dict[str, Any], directory: Directory,
                        request: ScopeRequest) -> list[str]:
    """`.default`: the delegated permissions the app registered for this resource (requiredResourceAccess)."""
    by_id = {s["id"]: s["value"] for s in directory.exposed_scopes(resource_sp, request.resource_app)}
    return [by_id[a["id"]] for r in app.get("requiredResourceAccess") or [] if r.get("resourceAppId") == resource_sp["appId"]
            for a in r.get("resourceAccess") or [] if a.get("type") == "Scope" and a.get("id") in by_id]


def admin_only(missing: list[Missing]) -> list[str]:
    return [v for m in missing for v in m.admin_only]


async def record(store: Store, app: dict[str, Any], user: dict[str, Any], missing: list[Missing], *,
                 for_org: bool) -> tuple[dict[str, Any], dict[str, list[str]], bool]:
    """Write the grants (through the store: the write path sees everything). Returns the client's service
    principal (created if missing: a first consent creates it, entra-docs app-objects-and-service-principals.md),
    {resource SP id: values} for the code or device flow to carry while the grants replicate, and whether the
    service principal is new."""
    client_sp = store.find_one("servicePrincipals", appId=app["appId"])
    created = client_sp is None
    if client_sp is None:
        client_sp = new_service_principal(app)
        await store.put("servicePrincipals", client_sp)
    consent_type = "AllPrincipals" if for_org else "Principal"
    principal = None if for_org else user["id"]
    consented: dict[str, list[str]] = {}
    for entry in missing:
        grant = store.find_one("oauth2PermissionGrants", clientId=client_sp["id"], resourceId=entry.resource_sp["id"],
                               consentType=consent_type, principalId=principal)
        if grant is None:
            seq = await store.next_seq("grant")
            grant = {"id": stable_key_id("grant", seq), "clientId": client_sp["id"], "consentType": consent_type,
                     "principalId": principal, "resourceId": entry.resource_sp["id"], "scope": ""}
        grant["scope"] = " ".join(dict.fromkeys([*grant["scope"].split(), *entry.values]))
        await store.put("oauth2PermissionGrants", grant)
        consented[entry.resource_sp["id"]] = list(entry.values)
    return client_sp, consented, created
