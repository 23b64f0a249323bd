"""Raw-HTTP provisioning for tests: an app registration with a secret, its service principal, consent.

Uses the emulator's seeded app-only automation app, so tests don't depend on msgraph-sdk
(that SDK has conformance tests of its own).
"""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import msal

from obokit.emulator import GRAPH_APP_ID, Emulator
from obokit.clients.headless import HeadlessBrowser

GRAPH_SCOPES_FOR_TOOLS = "User.Read email offline_access openid profile GroupMember.Read.All Sites.Read.All"


@dataclass
class Registration:
    """An app registration made for a test; its repr leaves out the secret (pytest prints it on failure)."""

    app_id: str
    object_id: str
    sp_id: str
    secret: str = field(repr=False)
    scope: str  # e.g. api://{app_id}/mcp-access

    @property
    def client_id(self) -> str:
        return self.app_id


def admin_headers(emu: Emulator) -> dict[str, str]:
    client_id, secret = emu.automation_credentials()
    app = msal.ConfidentialClientApplication(
        client_id, client_credential=secret, authority=emu.tenant_authority, instance_discovery=False
    )
    result = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
    return {"Authorization": f"Bearer {result['access_token']}"}


def register_api(
    emu: Emulator,
    *,
    name: str = "test mcp server",
    scope_value: str = "mcp-access",
    redirect_uris: list[str] | None = None,
    token_version: int | None = 2,
    service_principal: bool = True,
    app_roles: list[dict] | None = None,
) -> Registration:
    """Create an app exposing `scope_value`, with api://{appId}, a secret and (by default) a service principal."""
    headers = admin_headers(emu)
    with httpx.Client(base_url=emu.graph_url, headers=headers) as graph:
        app = graph.post(
            "/applications",
            json={
                "displayName": name,
                "signInAudience": "AzureADMyOrg",
                "web": {"redirectUris": redirect_uris or ["http://localhost/callback"]},
                "api": {
                    "requestedAccessTokenVersion": token_version,
                    "oauth2PermissionScopes": [
                        {"id": str(uuid.uuid4()), "value": scope_value, "type": "User", "isEnabled": True,
                         "adminConsentDisplayName": scope_value, "adminConsentDescription": scope_value}
                    ],
                },
                "appRoles": app_roles or [],
            },
        ).raise_for_status().json()
        graph.patch(f"/applications/{app['id']}", json={"identifierUris": [f"api://{app['appId']}"]}).raise_for_status()
        secret = graph.post(f"/applications/{app['id']}/addPassword", json={"passwordCredential": {"displayName": "test"}}).raise_for_status().json()["secretText"]
        sp_id = ""
        if service_principal:
            sp_id = graph.post("/servicePrincipals", json={"appId": app["appId"]}).raise_for_status().json()["id"]
    return Registration(app["appId"], app["id"], sp_id, secret, f"api://{app['appId']}/{scope_value}")


def grant_graph_consent(emu: Emulator, registration: Registration, scope: str = GRAPH_SCOPES_FOR_TOOLS) -> str:
    """Admin consent (AllPrincipals) for `scope` on Microsoft Graph; returns the grant id."""
    with httpx.Client(base_url=emu.graph_url, headers=admin_headers(emu)) as graph:
        graph_sp = graph.get(f"/servicePrincipals(appId='{GRAPH_APP_ID}')").raise_for_status().json()
        grant = graph.post(
            "/oauth2PermissionGrants",
            json={"clientId": registration.sp_id, "consentType": "AllPrincipals", "resourceId": graph_sp["id"], "scope": scope},
        ).raise_for_status().json()
    return grant["id"]


def consented_api(emu: Emulator, name: str, redirect_uri: str) -> Registration:
    """A middle-tier registration with `redirect_uri` and admin consent for the tools' Graph scopes."""
    registration = register_api(emu, name=name, redirect_uris=[redirect_uri])
    grant_graph_consent(emu, registration)
    return registration


def obo_target(emu: Emulator) -> SimpleNamespace:
    """What `obokit.server.obo` and `obokit.server.obo_cache` read of a Target: the tenant authority."""
    return SimpleNamespace(tenant_authority=emu.tenant_authority)


def user_upn(name: str) -> str:
    return f"{name}@{Emulator.tenant_domain}"


def run_async(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, even when called inside an event loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def msal_sign_in(app: msal.ClientApplication, scope: str, upn: str, redirect_uri: str) -> dict[str, Any]:
    """MSAL's authorization code flow (form_post), the browser replaced by the headless demo user `upn`."""
    flow = app.initiate_auth_code_flow([scope], redirect_uri=redirect_uri, response_mode="form_post")
    callback = run_async(HeadlessBrowser(account=upn).sign_in(flow["auth_uri"], redirect_uri=redirect_uri))
    result = app.acquire_token_by_auth_code_flow(flow, dict(parse_qsl(urlsplit(callback).query)))
    assert "access_token" in result, result.get("error_description")
    return result


def user_token(emu: Emulator, reg: Registration, upn: str, redirect_uri: str) -> str:
    """An access token for `reg`'s own API signed in as `upn` (MSAL auth code + headless browser)."""
    app = msal.ConfidentialClientApplication(
        reg.app_id, client_credential=reg.secret, authority=emu.tenant_authority, instance_discovery=False
    )
    return msal_sign_in(app, reg.scope, upn, redirect_uri)["access_token"]
