"""Idempotent provisioning over the Microsoft Graph SDK: app registrations, secrets, consent, roles.

The notebooks build the msgraph-sdk models in the cell, where the learner sees them, and hand
them to these helpers, which make a re-run converge instead of piling up duplicates::

    app = await ensure_application(graph, Application(display_name="my MCP server", ...))
    app = await ensure_identifier_uri(graph, app)                    # api://{appId}
    sp = await ensure_service_principal(graph, app)
    stored = await rotate_secret(graph, app, target, key="MCP_SERVER_CLIENT_SECRET", display_name="workbook")
    await ensure_admin_consent(graph, sp, GRAPH_APP_ID, "User.Read openid profile")
    await ensure_role_assignment(graph, sp, user.id, "Task.Read")

Each helper prints one progress line whose wording does not depend on GUIDs; the bracketed word
says what happened (`[created]`, `[found: updated]`, `[unchanged]`, `[replaced]`, `[removed]`).
The registration steps (application, identifier URI, service principal, secret, role) are
check-marked, so a multi-step cell reads as a list of steps done::

    ✓ application 'obokit workbook task API' [created]
    ✓ identifier URI of 'obokit workbook task API' [updated]
    ✓ service principal of 'obokit workbook task API' [created]

Secret values are written owner-only to `target.secrets_file` and never returned or printed.
"""

from __future__ import annotations

import asyncio
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphServiceClient
from msgraph.generated.applications.item.add_password.add_password_post_request_body import AddPasswordPostRequestBody
from msgraph.generated.applications.item.remove_password.remove_password_post_request_body import (
    RemovePasswordPostRequestBody,
)
from msgraph.generated.models.app_role_assignment import AppRoleAssignment
from msgraph.generated.models.application import Application
from msgraph.generated.models.o_auth2_permission_grant import OAuth2PermissionGrant
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.password_credential import PasswordCredential
from msgraph.generated.models.service_principal import ServicePrincipal
from msgraph.generated.models.web_application import WebApplication

with warnings.catch_warnings():  # the generated builders warn about their own deprecated classes on import
    warnings.simplefilter("ignore", DeprecationWarning)
    from msgraph.generated.applications.applications_request_builder import ApplicationsRequestBuilder
    from msgraph.generated.oauth2_permission_grants.oauth2_permission_grants_request_builder import (
        Oauth2PermissionGrantsRequestBuilder,
    )
    from msgraph.generated.service_principals.service_principals_request_builder import ServicePrincipalsRequestBuilder

from .consistency import until_replicated
from ..files import write_private
from .target import Target, write_secret

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"  # Microsoft Graph, the same in every tenant
MCP_SERVER_APP = "obokit workbook MCP server"
TASK_API_APP = "obokit workbook task API"
TASK_CLIENT_APP = "obokit workbook task client"
SCRATCH_APP = "obokit workbook scratch"  # a throw-away app 01 creates and deletes in one cell
WORKBOOK_APPS = (MCP_SERVER_APP, TASK_API_APP, TASK_CLIENT_APP, SCRATCH_APP)
SECRET_DISPLAY_NAME = "obokit workbook"
SECRET_KEYS = ("MCP_SERVER_CLIENT_ID", "MCP_SERVER_CLIENT_SECRET", "TASK_API_CLIENT_ID",
               "TASK_API_CLIENT_SECRET", "TASK_CLIENT_CLIENT_ID")


def say(message: str) -> None:
    """One progress line (kept GUID-free so stored notebook outputs stay comparable)."""
    print(message, flush=True)


def step(what: str, outcome: str) -> None:
    """One registration step done, as a check-marked line: `✓ service principal of 'x' [created]`."""
    say(f"✓ {what} [{outcome}]")


def _quote(value: str) -> str:
    """An OData string literal's body: single quotes are doubled."""
    return value.replace("'", "''")


def _status(error: ODataError) -> int | None:
    return getattr(error, "response_status_code", None)


def _filter(builder_cls: Any, expression: str) -> RequestConfiguration:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        params_cls = getattr(builder_cls, f"{builder_cls.__name__}GetQueryParameters")
        return RequestConfiguration(query_parameters=params_cls(filter=expression))


async def _all_pages(first: Any, builder: Any) -> list[Any]:
    """Every item of a collection response, following `@odata.nextLink`."""
    items = list(first.value or []) if first else []
    while first is not None and first.odata_next_link:
        first = await builder.with_url(first.odata_next_link).get()
        items.extend(first.value or [])
    return items


# -- applications ------------------------------------------------------------------------------
async def find_applications(graph: GraphServiceClient, display_name: str) -> list[Application]:
    """All applications with exactly this display name (`$filter=displayName eq '...'`)."""
    config = _filter(ApplicationsRequestBuilder, f"displayName eq '{_quote(display_name)}'")
    page = await graph.applications.get(request_configuration=config)
    return await _all_pages(page, graph.applications)


def _adopt_ids(existing: list[Any] | None, desired: list[Any] | None) -> None:
    """Give desired scopes/roles the ids their namesakes already have: Entra refuses to change
    the id of an enabled permission, and consent and assignments refer to those ids."""
    known = {item.value: item.id for item in existing or [] if item.value}
    for item in desired or []:
        if item.value in known:
            item.id = known[item.value]


async def ensure_application(graph: GraphServiceClient, desired: Application) -> Application:
    """The application named `desired.display_name`: created if missing, otherwise patched with
    the desired properties (those left unset are not touched), so a re-run converges."""
    name = desired.display_name
    if not name:
        raise ValueError("the desired Application needs a display_name: it is how a re-run finds it")
    found = await find_applications(graph, name)
    if len(found) > 1:
        raise RuntimeError(f"{len(found)} applications are named {name!r}; delete the extras (08-cleanup) and re-run")
    if not found:
        app = await graph.applications.post(desired)
        step(f"application {name!r}", "created")
        return app
    existing = found[0]
    _adopt_ids(existing.app_roles, desired.app_roles)
    if desired.api is not None and existing.api is not None:
        _adopt_ids(existing.api.oauth2_permission_scopes, desired.api.oauth2_permission_scopes)
    await graph.applications.by_application_id(existing.id).patch(desired)
    step(f"application {name!r}", "found: updated")
    return await graph.applications.by_application_id(existing.id).get()


async def ensure_identifier_uri(graph: GraphServiceClient, app: Application, uri: str | None = None) -> Application:
    """Make `uri` (default `api://{appId}`) the application ID URI; it prefixes the API's scopes."""
    uri = uri or f"api://{app.app_id}"
    if list(app.identifier_uris or []) == [uri]:
        step(f"identifier URI of {app.display_name!r}", "unchanged")
        return app
    await graph.applications.by_application_id(app.id).patch(Application(identifier_uris=[uri]))
    step(f"identifier URI of {app.display_name!r}", "updated")
    return await until_replicated(lambda: graph.applications.by_application_id(app.id).get(),
                                  what=f"identifier URI of {app.display_name!r}",
                                  ready=lambda fresh: uri in (fresh.identifier_uris or []))


# -- redirect URIs of a deployed server ----------------------------------------------------------
CALLBACK_PATH = "/auth/callback"  # FastMCP's OAuth proxy receives Entra's answer there
LOOPBACK_HOSTS = ("localhost", "127.0.0.1")
MAX_REDIRECT_URI_LENGTH = 256  # Entra's limit for one redirect URI


def callback_uri(base_url: str) -> str:
    """`{base_url}/auth/callback`, or a ValueError saying what is wrong with `base_url`.

    Entra accepts a web redirect URI over https, or http on localhost / 127.0.0.1 (any port), without a
    fragment or a wildcard; `base_url` is the server's public URL, not its MCP endpoint.
    """
    text = str(base_url).strip().rstrip("/")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as error:
        raise ValueError(f"not a URL: {base_url!r} ({error})") from None
    loopback = parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS
    if parts.scheme != "https" and not loopback:
        raise ValueError(f"Entra needs https for a redirect URI (plain http only on localhost or 127.0.0.1): {base_url!r}")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise ValueError(f"expected https://host[:port][/path], with a host and without user info: {base_url!r}")
    if parts.query or parts.fragment or "#" in text or "*" in text or any(c.isspace() for c in text):
        raise ValueError(f"a base URL has no query, fragment, wildcard or spaces: {base_url!r}")
    if parts.path.endswith((CALLBACK_PATH, "/mcp")):
        raise ValueError(f"pass the server's base URL, without /mcp or {CALLBACK_PATH}: {base_url!r}")
    uri = f"{text}{CALLBACK_PATH}"
    if len(uri) > MAX_REDIRECT_URI_LENGTH:
        raise ValueError(f"{uri!r} is longer than Entra's {MAX_REDIRECT_URI_LENGTH} characters")
    return uri


async def ensure_redirect_uri(graph: GraphServiceClient, app: Application, base_url: str) -> list[str]:
    """Add `{base_url}/auth/callback` to the app's web redirect URIs (the others stay); returns them all.

    What the deployment scripts of the source article do after `azd provision` (auth_update.py): the proxy of a
    server deployed at `base_url` receives Entra's answer there. Idempotent: a URI already there is left alone.
    """
    uri = callback_uri(base_url)
    current = await until_replicated(lambda: graph.applications.by_application_id(app.id).get(),
                                     what=f"application {app.display_name!r}")
    uris = list(current.web.redirect_uris or []) if current.web else []
    if uri in uris:
        step(f"redirect URI {uri} of {app.display_name!r}", "unchanged")
        return uris
    uris.append(uri)
    await graph.applications.by_application_id(app.id).patch(Application(web=WebApplication(redirect_uris=uris)))
    step(f"redirect URI {uri} of {app.display_name!r}", "added")
    say(f"  web redirect URIs now: {', '.join(uris)}")
    fresh = await until_replicated(lambda: graph.applications.by_application_id(app.id).get(),
                                   what=f"redirect URIs of {app.display_name!r}",
                                   ready=lambda a: uri in ((a.web.redirect_uris or []) if a.web else []))
    return list(fresh.web.redirect_uris or [])


# -- service principals ------------------------------------------------------------------------
async def find_service_principal(graph: GraphServiceClient, app_id: str) -> ServicePrincipal | None:
    """The service principal of an appId in this tenant, or None (`/servicePrincipals(appId='...')`)."""
    try:
        return await graph.service_principals_with_app_id(app_id).get()
    except ODataError as error:
        if _status(error) == 404:
            return None
        raise


async def ensure_service_principal(graph: GraphServiceClient, app: Application, *, attempts: int = 6) -> ServicePrincipal:
    """The app's service principal (its instance in the tenant), created if missing.

    A new application can take a few seconds to replicate in Entra; creating its service
    principal too early fails with 400, so that case is retried with a short back-off.
    """
    sp = await find_service_principal(graph, app.app_id)
    if sp is not None:
        step(f"service principal of {app.display_name!r}", "unchanged")
        return sp
    for attempt in range(attempts):
        try:
            sp = await graph.service_principals.post(ServicePrincipal(app_id=app.app_id))
            step(f"service principal of {app.display_name!r}", "created")
            return sp
        except ODataError as error:
            if _status(error) == 409:  # created meanwhile
                step(f"service principal of {app.display_name!r}", "unchanged")
                return await graph.service_principals_with_app_id(app.app_id).get()
            if _status(error) != 400 or attempt == attempts - 1:
                raise
            await asyncio.sleep(2 * (attempt + 1))
    raise AssertionError("unreachable")


# -- secrets ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoredSecret:
    """Where a new client secret went; holds its hint (first 3 characters), never the value."""

    key: str
    hint: str
    display_name: str
    expires: str
    file: Path

    def __repr__(self) -> str:
        return (f"{self.key}: hint {self.hint}… (secret {self.display_name!r}, expires {self.expires}), "
                f"written owner-only to {self.file.name}")


async def rotate_secret(graph: GraphServiceClient, app: Application, target: Target, *, key: str,
                        display_name: str = SECRET_DISPLAY_NAME) -> StoredSecret:
    """Replace the app's secrets named `display_name` by one new secret, stored under `key`.

    Graph returns a secret's value only once, in the addPassword response: it goes straight into
    the owner-only secrets file. Removing the previous ones keeps one live secret per app however
    often the notebook runs.
    """
    current = await until_replicated(lambda: graph.applications.by_application_id(app.id).get(),
                                     what=f"application {app.display_name!r}")  # new apps reach Graph reads late
    old = [c for c in current.password_credentials or [] if c.display_name == display_name]
    for credential in old:
        await graph.applications.by_application_id(app.id).remove_password.post(
            RemovePasswordPostRequestBody(key_id=credential.key_id))
    created = await graph.applications.by_application_id(app.id).add_password.post(
        AddPasswordPostRequestBody(password_credential=PasswordCredential(display_name=display_name)))
    write_secret(target.secrets_file, key, created.secret_text)
    step(f"secret {display_name!r} of {app.display_name!r}", "replaced" if old else "created")
    expires = created.end_date_time.date().isoformat() if created.end_date_time else "never"
    return StoredSecret(key, created.hint or "", display_name, expires, target.secrets_file)


def forget_secrets(path: Path, keys: tuple[str, ...] = SECRET_KEYS) -> list[str]:
    """Drop `keys` from an env file (other lines stay); returns the keys that were there."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    kept = [line for line in lines if line.split("=", 1)[0] not in keys]
    removed = [line.split("=", 1)[0] for line in lines if line not in kept]
    write_private(path, ("\n".join(kept) + ("\n" if kept else "")).encode())
    return removed


# -- delegated consent ------------------------------------------------------------------------
async def delegated_grants(graph: GraphServiceClient, client_sp_id: str,
                           resource_sp_id: str | None = None) -> list[OAuth2PermissionGrant]:
    """The oauth2PermissionGrants of a client service principal (optionally for one resource)."""
    expression = f"clientId eq '{client_sp_id}'" + (f" and resourceId eq '{resource_sp_id}'" if resource_sp_id else "")
    page = await graph.oauth2_permission_grants.get(request_configuration=_filter(Oauth2PermissionGrantsRequestBuilder, expression))
    return await _all_pages(page, graph.oauth2_permission_grants)


def _scope_string(scope: str | list[str] | tuple[str, ...]) -> str:
    return " ".join(scope.split() if isinstance(scope, str) else scope)


async def ensure_admin_consent(graph: GraphServiceClient, client_sp: ServicePrincipal, resource_app_id: str,
                               scope: str | list[str]) -> OAuth2PermissionGrant:
    """Admin consent for everyone: an `AllPrincipals` oauth2PermissionGrant from the client's
    service principal to the resource's, with exactly `scope` (patched if it differs)."""
    scope = _scope_string(scope)
    resource = await graph.service_principals_with_app_id(resource_app_id).get()
    for grant in await delegated_grants(graph, client_sp.id, resource.id):
        if grant.consent_type == "AllPrincipals":
            if set((grant.scope or "").split()) == set(scope.split()):
                say(f"admin consent {client_sp.display_name!r} -> {resource.display_name!r} [unchanged]")
                return grant
            await graph.oauth2_permission_grants.by_o_auth2_permission_grant_id(grant.id).patch(
                OAuth2PermissionGrant(scope=scope))
            say(f"admin consent {client_sp.display_name!r} -> {resource.display_name!r} [found: updated]")
            return await graph.oauth2_permission_grants.by_o_auth2_permission_grant_id(grant.id).get()
    grant = await graph.oauth2_permission_grants.post(OAuth2PermissionGrant(
        client_id=client_sp.id, consent_type="AllPrincipals", resource_id=resource.id, scope=scope))
    say(f"admin consent {client_sp.display_name!r} -> {resource.display_name!r} [created]")
    return grant


async def revoke_admin_consent(graph: GraphServiceClient, client_sp: ServicePrincipal, resource_app_id: str) -> int:
    """Delete every delegated grant (admin and user consent) from the client to the resource."""
    resource = await graph.service_principals_with_app_id(resource_app_id).get()
    grants = await delegated_grants(graph, client_sp.id, resource.id)
    for grant in grants:
        await graph.oauth2_permission_grants.by_o_auth2_permission_grant_id(grant.id).delete()
    say(f"consent {client_sp.display_name!r} -> {resource.display_name!r}: none left")
    return len(grants)


# -- app role assignments ---------------------------------------------------------------------
async def ensure_role_assignment(graph: GraphServiceClient, resource_sp: ServicePrincipal, principal_id: str,
                                 role_value: str) -> AppRoleAssignment:
    """Assign the app role `role_value` of `resource_sp` to a user, group or service principal."""
    fresh = await until_replicated(  # roles as of now; a new service principal reaches Graph reads late
        lambda: graph.service_principals.by_service_principal_id(resource_sp.id).get(),
        what=f"service principal of {resource_sp.display_name!r}")
    role = next((r for r in fresh.app_roles or [] if r.value == role_value), None)
    if role is None:
        raise ValueError(f"{resource_sp.display_name!r} defines no app role {role_value!r}")
    builder = graph.service_principals.by_service_principal_id(resource_sp.id).app_role_assigned_to
    for assignment in await _all_pages(await builder.get(), builder):
        if str(assignment.principal_id) == str(principal_id) and str(assignment.app_role_id) == str(role.id):
            step(f"role {role_value} for {assignment.principal_display_name}", "unchanged")
            return assignment
    assignment = await builder.post(AppRoleAssignment(principal_id=principal_id, resource_id=resource_sp.id, app_role_id=role.id))
    step(f"role {role_value} for {assignment.principal_display_name}", "created")
    return assignment


# -- clean-up ---------------------------------------------------------------------------------
async def remove_workbook_objects(graph: GraphServiceClient, display_names: tuple[str, ...] | list[str] = WORKBOOK_APPS) -> dict[str, int]:
    """Delete the named applications with everything hanging off them: delegated grants, role
    assignments, secrets, service principals. Returns how many of each were removed."""
    removed = {"grants": 0, "role assignments": 0, "secrets": 0, "service principals": 0, "applications": 0}
    for name in display_names:
        for app in await find_applications(graph, name):
            sp = await find_service_principal(graph, app.app_id)
            if sp is not None:
                for grant in await delegated_grants(graph, sp.id):
                    await graph.oauth2_permission_grants.by_o_auth2_permission_grant_id(grant.id).delete()
                    removed["grants"] += 1
                builder = graph.service_principals.by_service_principal_id(sp.id).app_role_assigned_to
                for assignment in await _all_pages(await builder.get(), builder):
                    await builder.by_app_role_assignment_id(assignment.id).delete()
                    removed["role assignments"] += 1
                await graph.service_principals.by_service_principal_id(sp.id).delete()
                removed["service principals"] += 1
            for credential in app.password_credentials or []:
                await graph.applications.by_application_id(app.id).remove_password.post(
                    RemovePasswordPostRequestBody(key_id=credential.key_id))
                removed["secrets"] += 1
            await graph.applications.by_application_id(app.id).delete()
            removed["applications"] += 1
            say(f"application {name!r} and its objects [removed]")
    return removed


async def workbook_objects(graph: GraphServiceClient, prefix: str = "obokit workbook") -> dict[str, list[str]]:
    """Display names of the applications and service principals whose name starts with `prefix`."""
    expression = f"startswith(displayName, '{_quote(prefix)}')"
    apps = await graph.applications.get(request_configuration=_filter(ApplicationsRequestBuilder, expression))
    sps = await graph.service_principals.get(request_configuration=_filter(ServicePrincipalsRequestBuilder, expression))
    return {
        "applications": sorted(a.display_name for a in await _all_pages(apps, graph.applications)),
        "service principals": sorted(s.display_name for s in await _all_pages(sps, graph.service_principals)),
    }


# -- what later notebooks need ----------------------------------------------------------------
@dataclass(frozen=True)
class Registrations:
    """Client ids and secrets written by 01-app-registration (values from the secrets file)."""

    mcp_server_client_id: str
    mcp_server_client_secret: str = ""
    task_api_client_id: str = ""
    task_api_client_secret: str = ""
    task_client_client_id: str = ""

    def __repr__(self) -> str:  # never show the secrets themselves
        shown = ", ".join(f"{k}={'set' if v else 'missing'}" for k, v in vars(self).items())
        return f"Registrations({shown})"


def registrations(target: Target) -> Registrations:
    """The registrations 01-app-registration stored in `target.secrets_file`."""
    values = {k: v or "" for k, v in dotenv_values(target.secrets_file).items()} if target.secrets_file.exists() else {}
    if not values.get("MCP_SERVER_CLIENT_ID"):
        raise LookupError(f"no MCP_SERVER_CLIENT_ID in {target.secrets_file.name}: run 01-app-registration first")
    return Registrations(
        mcp_server_client_id=values["MCP_SERVER_CLIENT_ID"],
        mcp_server_client_secret=values.get("MCP_SERVER_CLIENT_SECRET", ""),
        task_api_client_id=values.get("TASK_API_CLIENT_ID", ""),
        task_api_client_secret=values.get("TASK_API_CLIENT_SECRET", ""),
        task_client_client_id=values.get("TASK_CLIENT_CLIENT_ID", ""),
    )


async def load_registrations(target: Target) -> Registrations:
    """`registrations(target)` for async callers."""
    return await asyncio.to_thread(registrations, target)


__all__ = [
    "GRAPH_APP_ID", "MCP_SERVER_APP", "TASK_API_APP", "TASK_CLIENT_APP", "SCRATCH_APP", "WORKBOOK_APPS", "SECRET_DISPLAY_NAME",
    "find_applications", "ensure_application", "ensure_identifier_uri", "callback_uri", "ensure_redirect_uri", "find_service_principal",
    "ensure_service_principal", "StoredSecret", "rotate_secret", "forget_secrets", "ensure_admin_consent",
    "revoke_admin_consent", "delegated_grants", "ensure_role_assignment", "remove_workbook_objects", "workbook_objects",
    "Registrations", "registrations", "load_registrations",
]
