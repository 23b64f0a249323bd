"""The deterministic demo tenant: users, groups, SharePoint sites and Microsoft's first-party apps.

Fields whose names start with `_` are emulator-internal and never shown by Graph.
"""

from __future__ import annotations

import secrets
from typing import Any

from .ids import (
    GRAPH_APP_ID,
    GRAPH_CLI_APP_ID,
    VS_CODE_APP_ID,
    MANAGED_IDENTITY_CLIENT_ID,
    MANAGED_IDENTITY_NAME,
    MANAGED_IDENTITY_PRINCIPAL_ID,
    MANAGED_IDENTITY_RESOURCE_ID,
    SHAREPOINT_HOST,
    TENANT_DOMAIN,
    TENANT_ID,
    stable_id,
    stable_key_id,
)

CREATED = "2026-01-05T09:00:00Z"

# Delegated scopes of Microsoft Graph: (value, id, type). "Admin" scopes need admin consent.
GRAPH_SCOPES = [
    ("User.Read", "e1fe6dd8-ba31-4d61-89e7-88639da4683d", "User"),
    ("openid", "37f7f235-527c-4136-accd-4a02d197296e", "User"),
    ("profile", "14dad69e-099b-42c9-810b-d002981feec1", "User"),
    ("email", "64a6cdd6-aab1-4aaf-94b8-3cc8405e90d0", "User"),
    ("offline_access", "7427e0e9-2fba-42fe-b0c0-848c9e6a8182", "User"),
    ("User.ReadBasic.All", "b340eb25-3456-403f-be2f-af7a0d370277", "User"),
    ("User.Read.All", "a154be20-db9c-4678-8ab7-66f6cc099a59", "Admin"),
    ("GroupMember.Read.All", "bc024368-1153-4739-b217-4326f2e966d0", "Admin"),
    ("Group.Read.All", "5f8c59db-677d-491f-a6b8-5f174b11ec1d", "Admin"),
    ("Sites.Read.All", "205e70e5-aba6-4c52-a976-6d2d46c48043", "User"),
    ("Directory.Read.All", "06da0dbc-49e2-44d2-8312-53f166ab848a", "Admin"),
    ("Application.ReadWrite.All", "bdfbf15f-ee85-4955-8675-146e8e5296b5", "Admin"),
    ("DelegatedPermissionGrant.ReadWrite.All", "41ce6ca6-6826-4807-84f1-1c82854f7ee5", "Admin"),
    ("AppRoleAssignment.ReadWrite.All", "84bccea3-f856-4a8a-967b-dbe0a3d53a64", "Admin"),
]

# Application permissions (app roles) of Microsoft Graph: (value, id).
GRAPH_APP_ROLES = [
    ("Application.ReadWrite.All", "1bfefb4e-e0b5-418b-a88f-73c46d2cc8e9"),
    ("AppRoleAssignment.ReadWrite.All", "06b708a9-e830-4db3-a914-8e69da51d44f"),
    ("DelegatedPermissionGrant.ReadWrite.All", "8e8e4742-1d95-4f68-9d56-6ee75648c72a"),
    ("User.Read.All", "df021288-bdef-4463-88db-98f22de89214"),
    ("Group.Read.All", "5b567255-7703-4780-807c-7be8301ae99b"),
    ("GroupMember.Read.All", "98830695-27a2-44f7-8c18-0c3ebc9698f6"),
    ("Sites.Read.All", "332a536c-c7ef-4017-ab91-336970924f0d"),
]

# The permissions the workbook's admin needs to provision apps, consent and assignments.
ADMIN_SCOPES = [
    "Application.ReadWrite.All",
    "DelegatedPermissionGrant.ReadWrite.All",
    "AppRoleAssignment.ReadWrite.All",
    "Directory.Read.All",
    "User.Read",
    "openid",
    "profile",
    "offline_access",
]

USERS = [
    # (mailNickname, displayName, givenName, surname, jobTitle, admin)
    ("adele", "Adele Vance", "Adele", "Vance", "IT Administrator", True),
    ("bruno", "Bruno Diaz", "Bruno", "Diaz", "Financial Analyst", False),
    ("chen", "Chen Li", "Chen", "Li", "Software Engineer", False),
]

GROUPS = [
    # (key, displayName, description, member user keys, member group keys)
    ("finance", "Finance", "Finance department", ["bruno", "adele"], []),
    ("engineering", "Engineering", "Product engineering", ["chen"], []),
    ("all-staff", "All Staff", "Everyone; contains the department groups", [], ["finance", "engineering"]),
]

SITES = [
    # (path, displayName, member group keys)
    ("finance", "Finance Team Site", ["finance"]),
    ("engineering", "Engineering Hub", ["engineering"]),
]


def user_id(key: str) -> str:
    return stable_id("user", key)


def group_id(key: str) -> str:
    return stable_id("group", key)


def _user(key: str, display: str, given: str, surname: str, title: str, admin: bool) -> dict[str, Any]:
    upn = f"{key}@{TENANT_DOMAIN}"
    return {
        "id": user_id(key),
        "displayName": display,
        "givenName": given,
        "surname": surname,
        "jobTitle": title,
        "mail": upn,
        "userPrincipalName": upn,
        "businessPhones": [],
        "mobilePhone": None,
        "officeLocation": None,
        "preferredLanguage": "en-US",
        "_directoryRoles": ["Global Administrator"] if admin else [],
    }


def _group(key: str, display: str, description: str, users: list[str], groups: list[str]) -> dict[str, Any]:
    return {
        "id": group_id(key),
        "displayName": display,
        "description": description,
        "mailEnabled": False,
        "mailNickname": key,
        "securityEnabled": True,
        "groupTypes": [],
        "mail": None,
        "createdDateTime": CREATED,
        "_members": [user_id(u) for u in users] + [group_id(g) for g in groups],
    }


def _site(path: str, display: str, groups: list[str]) -> dict[str, Any]:
    collection = stable_id("site-collection", path)
    web = stable_id("site-web", path)
    return {
        "id": f"{SHAREPOINT_HOST},{collection},{web}",
        "name": path,
        "displayName": display,
        "webUrl": f"https://{SHAREPOINT_HOST}/sites/{path}",
        "createdDateTime": CREATED,
        "lastModifiedDateTime": CREATED,
        "_path": f"/sites/{path}",
        "_memberGroups": [group_id(g) for g in groups],
    }


def _graph_service_principal() -> dict[str, Any]:
    return {
        "id": stable_id("sp", GRAPH_APP_ID),
        "appId": GRAPH_APP_ID,
        "displayName": "Microsoft Graph",
        "appDisplayName": "Microsoft Graph",
        "appOwnerOrganizationId": "f8cdef31-a31e-4b4a-93e4-5f571e91255a",
        "accountEnabled": True,
        "appRoleAssignmentRequired": False,
        "servicePrincipalType": "Application",
        "servicePrincipalNames": [GRAPH_APP_ID, "https://graph.microsoft.com"],
        "signInAudience": "AzureADMultipleOrgs",
        "tags": [],
        "replyUrls": [],
        "oauth2PermissionScopes": [
            {
                "id": sid,
                "value": value,
                "type": kind,
                "isEnabled": True,
                "adminConsentDisplayName": value,
                "adminConsentDescription": f"Allows the app to use {value}.",
                "userConsentDisplayName": value,
                "userConsentDescription": f"Allows the app to use {value}.",
            }
            for value, sid, kind in GRAPH_SCOPES
        ],
        "appRoles": [
            {
                "id": rid,
                "value": value,
                "displayName": value,
                "description": f"Application permission {value}.",
                "allowedMemberTypes": ["Application"],
                "isEnabled": True,
                "origin": "Application",
            }
            for value, rid in GRAPH_APP_ROLES
        ],
        "passwordCredentials": [],
        "keyCredentials": [],
        "_firstParty": True,
    }


def _first_party_app(app_id: str, name: str, *, public: bool) -> dict[str, Any]:
    return {
        "id": stable_id("app", app_id),
        "appId": app_id,
        "displayName": name,
        "signInAudience": "AzureADMultipleOrgs",
        "identifierUris": [],
        "isFallbackPublicClient": public,
        "publicClient": {"redirectUris": ["http://localhost"] if public else []},
        "web": {"redirectUris": []},
        "api": {"requestedAccessTokenVersion": None, "oauth2PermissionScopes": []},
        "appRoles": [],
        "passwordCredentials": [],
        "_firstParty": True,
    }


def vs_code_objects() -> list[tuple[str, dict[str, Any]]]:
    """Visual Studio Code as a first-party public client: loopback redirects on any port and vscode.dev's redirect
    (the URIs VS Code's Microsoft authentication uses: extensions/microsoft-authentication in microsoft/vscode)."""
    app = _first_party_app(VS_CODE_APP_ID, "Visual Studio Code", public=True)
    app["publicClient"]["redirectUris"] = ["http://localhost", "http://127.0.0.1", "https://vscode.dev/redirect"]
    return [("applications", app), ("servicePrincipals", _sp_for(app))]


def _sp_for(app: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": stable_id("sp", app["appId"]),
        "appId": app["appId"],
        "displayName": app["displayName"],
        "appDisplayName": app["displayName"],
        "accountEnabled": True,
        "appRoleAssignmentRequired": False,
        "servicePrincipalType": "Application",
        "servicePrincipalNames": [app["appId"]],
        "oauth2PermissionScopes": [],
        "appRoles": [],
        "tags": [],
        "replyUrls": [],
        "_firstParty": app.get("_firstParty", False),
    }


def managed_identity_sp() -> dict[str, Any]:
    """A user-assigned managed identity's service principal as Graph shows one: `isExplicit=True` and the Azure
    resource id in `alternativeNames`, an identity.azure.net name (captured with `az rest` on /directoryObjects:
    Kevin Hakanson, "Azure Managed Identity Resources", 2020-10-10). It has no application object."""
    return {
        "id": MANAGED_IDENTITY_PRINCIPAL_ID,
        "appId": MANAGED_IDENTITY_CLIENT_ID,
        "displayName": MANAGED_IDENTITY_NAME,
        "accountEnabled": True,
        "alternativeNames": ["isExplicit=True", MANAGED_IDENTITY_RESOURCE_ID],
        "appRoleAssignmentRequired": False,
        "servicePrincipalType": "ManagedIdentity",
        "servicePrincipalNames": [
            MANAGED_IDENTITY_CLIENT_ID,
            f"https://identity.azure.net/{stable_key_id('managed-identity', MANAGED_IDENTITY_NAME)}=",
        ],
        "oauth2PermissionScopes": [],
        "appRoles": [],
        "tags": [],
        "replyUrls": [],
        "passwordCredentials": [],
        "keyCredentials": [],
    }


AUTOMATION_APP_ID = stable_id("app", "automation")


PROFILES = ("quick", "tenant")


def demo_tenant(profile: str = "quick") -> tuple[list[tuple[str, dict[str, Any]]], str]:
    """All seed objects as (collection, object) pairs, plus the automation app's client secret.

    "quick" pre-consents the Microsoft Graph Command Line Tools client for the workbook's admin scopes (a
    shortcut); "tenant" consents nothing, as a fresh tenant, whose admin consents at the first sign-in."""
    if profile not in PROFILES:
        raise ValueError(f"unknown emulator profile {profile!r}; expected one of {PROFILES}")
    objects: list[tuple[str, dict[str, Any]]] = [("meta", {"id": "profile", "value": profile})]
    objects += [("users", _user(*u)) for u in USERS]
    objects += [("groups", _group(*g)) for g in GROUPS]
    objects += [("sites", _site(*s)) for s in SITES]

    graph_sp = _graph_service_principal()
    objects.append(("servicePrincipals", graph_sp))

    cli_app = _first_party_app(GRAPH_CLI_APP_ID, "Microsoft Graph Command Line Tools", public=True)
    cli_sp = _sp_for(cli_app)
    objects += [("applications", cli_app), ("servicePrincipals", cli_sp)]
    objects += vs_code_objects()
    objects.append(("servicePrincipals", managed_identity_sp()))  # both profiles: Azure creates it, not a sign-in
    # The service principal stays in both profiles (in a fresh tenant the first sign-in would create it).
    if profile == "quick":
        objects.append(
            (
                "oauth2PermissionGrants",
                {
                    "id": stable_key_id("grant", "graph-cli"),
                    "clientId": cli_sp["id"],
                    "consentType": "AllPrincipals",
                    "principalId": None,
                    "resourceId": graph_sp["id"],
                    "scope": " ".join(ADMIN_SCOPES),
                },
            )
        )

    # A confidential "automation" app with Graph application permissions: the app-only admin
    # path used by tests and CI (a learner would sign in as the admin user instead).
    secret = "aut~" + secrets.token_urlsafe(30).replace("-", "_")
    automation = {
        "id": stable_id("app-object", "automation"),
        "appId": AUTOMATION_APP_ID,
        "displayName": "obokit automation",
        "signInAudience": "AzureADMyOrg",
        "identifierUris": [],
        "isFallbackPublicClient": False,
        "publicClient": {"redirectUris": []},
        "web": {"redirectUris": []},
        "api": {"requestedAccessTokenVersion": 2, "oauth2PermissionScopes": []},
        "appRoles": [],
        "passwordCredentials": [
            {
                "keyId": stable_id("secret", "automation"),
                "displayName": "seed",
                "hint": secret[:3],
                "startDateTime": CREATED,
                "endDateTime": "2099-01-01T00:00:00Z",
                "_secret": secret,
            }
        ],
        "_firstParty": True,
    }
    automation_sp = _sp_for(automation)
    objects += [("applications", automation), ("servicePrincipals", automation_sp)]
    for value, role_id in GRAPH_APP_ROLES:
        objects.append(
            (
                "appRoleAssignments",
                {
                    "id": stable_key_id("assignment", "automation", value),
                    "appRoleId": role_id,
                    "principalId": automation_sp["id"],
                    "principalType": "ServicePrincipal",
                    "principalDisplayName": automation["displayName"],
                    "resourceId": graph_sp["id"],
                    "resourceDisplayName": "Microsoft Graph",
                    "createdDateTime": CREATED,
                    "deletedDateTime": None,
                },
            )
        )
    return objects, secret


__all__ = ["demo_tenant", "user_id", "group_id", "TENANT_ID", "AUTOMATION_APP_ID", "PROFILES"]
