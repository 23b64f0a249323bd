"""Conformance of the emulator's Graph host with the real msgraph-sdk, through `obokit.clients.graph.graph_client`.

App-only calls use azure-identity's async ClientSecretCredential (the seeded automation app);
delegated calls use azure-identity's async OnBehalfOfCredential with a user assertion obtained
through MSAL's auth-code flow and the HeadlessBrowser. Nothing here is mocked.
"""

from __future__ import annotations

import time
import uuid
import warnings
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlsplit

import msal
import pytest
from azure.identity.aio import ClientSecretCredential, OnBehalfOfCredential
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphServiceClient
from msgraph.generated.applications.item.add_password.add_password_post_request_body import AddPasswordPostRequestBody
from msgraph.generated.applications.item.remove_password.remove_password_post_request_body import RemovePasswordPostRequestBody
from msgraph.generated.models.api_application import ApiApplication
from msgraph.generated.models.app_role import AppRole
from msgraph.generated.models.app_role_assignment import AppRoleAssignment
from msgraph.generated.models.application import Application
from msgraph.generated.models.o_auth2_permission_grant import OAuth2PermissionGrant
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.password_credential import PasswordCredential
from msgraph.generated.models.permission_scope import PermissionScope
from msgraph.generated.models.service_principal import ServicePrincipal
from msgraph.generated.models.web_application import WebApplication

with warnings.catch_warnings():  # msgraph's generated builders warn about their own deprecated classes on import
    warnings.simplefilter("ignore", DeprecationWarning)
    from msgraph.generated.applications.applications_request_builder import ApplicationsRequestBuilder
    from msgraph.generated.oauth2_permission_grants.oauth2_permission_grants_request_builder import (
        Oauth2PermissionGrantsRequestBuilder,
    )
    from msgraph.generated.users.item.transitive_member_of.graph_group.graph_group_request_builder import (
        GraphGroupRequestBuilder,
    )

from obokit.emulator import GRAPH_APP_ID, Emulator, group_id, user_id
from obokit.clients.graph import consistency_eventual, graph_client
from obokit.clients.headless import HeadlessBrowser
from tenant_setup import consented_api, Registration, user_upn

pytestmark = [
    pytest.mark.emulator,
    # the SDK instantiates its own deprecated per-builder configuration classes; not ours to fix.
    pytest.mark.filterwarnings("ignore:This class is deprecated:DeprecationWarning"),
]

REDIRECT_URI = "http://localhost/callback"
DELEGATED_SCOPES = [f"https://graph.microsoft.com/{s}" for s in ("User.Read", "GroupMember.Read.All", "Sites.Read.All")]


# -- clients -------------------------------------------------------------------------------------
@pytest.fixture
async def admin(emulator: Emulator) -> AsyncIterator[GraphServiceClient]:
    """An app-only Graph client (automation app, Graph application permissions)."""
    client_id, secret = emulator.automation_credentials()
    async with ClientSecretCredential(
        emulator.tenant_id, client_id, secret, authority=emulator.authority, disable_instance_discovery=True
    ) as credential:
        yield graph_client(credential, base_url=emulator.graph_url)


@pytest.fixture(scope="module")
def middle_tier(emulator: Emulator) -> Registration:
    """The OBO middle tier: exposes mcp-access, holds a secret, has admin consent for Graph."""
    return consented_api(emulator, "graph sdk middle tier", REDIRECT_URI)


_assertions: dict[tuple[str, str], str] = {}


async def user_assertion(emu: Emulator, reg: Registration, user: str) -> str:
    """The user's access token for the middle tier (auth code + PKCE through the headless browser)."""
    key = (reg.app_id, user)
    if key not in _assertions:
        app = msal.ConfidentialClientApplication(
            reg.app_id, client_credential=reg.secret, authority=emu.tenant_authority, instance_discovery=False
        )
        flow = app.initiate_auth_code_flow([reg.scope], redirect_uri=REDIRECT_URI, login_hint=user_upn(user), response_mode="form_post")
        callback = await HeadlessBrowser(account=user_upn(user)).sign_in(flow["auth_uri"], redirect_uri=REDIRECT_URI)
        result = app.acquire_token_by_auth_code_flow(flow, dict(parse_qsl(urlsplit(callback).query)))
        assert "access_token" in result, result.get("error_description")
        _assertions[key] = result["access_token"]
    return _assertions[key]


async def delegated(emu: Emulator, reg: Registration, user: str) -> tuple[GraphServiceClient, OnBehalfOfCredential]:
    """A Graph client acting as `user` through OBO; close the credential when done."""
    credential = OnBehalfOfCredential(
        emu.tenant_id, reg.app_id, client_secret=reg.secret,
        user_assertion=await user_assertion(emu, reg, user), authority=emu.authority,
    )
    return graph_client(credential, base_url=emu.graph_url, scopes=DELEGATED_SCOPES), credential


def new_application(name: str) -> Application:
    return Application(
        display_name=name,
        sign_in_audience="AzureADMyOrg",
        web=WebApplication(redirect_uris=[REDIRECT_URI, "http://localhost:8000/auth/callback"]),
        api=ApiApplication(
            requested_access_token_version=2,
            oauth2_permission_scopes=[PermissionScope(
                id=uuid.uuid4(), value="mcp-access", type="User", is_enabled=True,
                admin_consent_display_name="Access the MCP server", admin_consent_description="Access the MCP server",
            )],
        ),
        app_roles=[AppRole(
            id=uuid.uuid4(), value="Task.Read", display_name="Read tasks", description="Read tasks",
            allowed_member_types=["User"], is_enabled=True,
        )],
    )


# -- applications, secrets -------------------------------------------------------------------------
async def test_application_registration_round_trip(admin: GraphServiceClient) -> None:
    created = await admin.applications.post(new_application("sdk round trip"))
    assert created.id and created.app_id and created.identifier_uris == []
    assert created.api.requested_access_token_version == 2
    assert created.api.oauth2_permission_scopes[0].value == "mcp-access"

    await admin.applications.by_application_id(created.id).patch(Application(identifier_uris=[f"api://{created.app_id}"]))
    fetched = await admin.applications.by_application_id(created.id).get()
    assert fetched.identifier_uris == [f"api://{created.app_id}"]
    assert fetched.sign_in_audience == "AzureADMyOrg"
    assert REDIRECT_URI in fetched.web.redirect_uris

    query = ApplicationsRequestBuilder.ApplicationsRequestBuilderGetQueryParameters(filter=f"appId eq '{created.app_id}'")
    listed = await admin.applications.get(request_configuration=RequestConfiguration(query_parameters=query))
    assert [a.id for a in listed.value] == [created.id]

    body = AddPasswordPostRequestBody(password_credential=PasswordCredential(display_name="sdk secret"))
    password = await admin.applications.by_application_id(created.id).add_password.post(body)
    assert password.secret_text and len(password.secret_text) >= 16
    assert password.hint == password.secret_text[:3]
    assert password.key_id is not None and password.end_date_time > password.start_date_time

    stored = (await admin.applications.by_application_id(created.id).get()).password_credentials
    assert [(c.key_id, c.hint) for c in stored] == [(password.key_id, password.hint)]
    assert stored[0].secret_text is None  # shown once, never again

    await admin.applications.by_application_id(created.id).remove_password.post(
        RemovePasswordPostRequestBody(key_id=password.key_id))
    assert (await admin.applications.by_application_id(created.id).get()).password_credentials == []
    await admin.applications.by_application_id(created.id).delete()


async def test_unverified_identifier_uri_is_an_odata_error(admin: GraphServiceClient) -> None:
    created = await admin.applications.post(Application(display_name="sdk bad uri", sign_in_audience="AzureADMyOrg"))
    with pytest.raises(ODataError) as caught:
        await admin.applications.by_application_id(created.id).patch(Application(identifier_uris=["https://myapi.example.com"]))
    assert caught.value.response_status_code == 400
    assert "verified domain" in caught.value.error.message
    await admin.applications.by_application_id(created.id).delete()


# -- service principals, consent, app role assignments, cascade -----------------------------------
async def test_service_principal_grant_and_assignment_lifecycle(admin: GraphServiceClient) -> None:
    app = await admin.applications.post(new_application("sdk lifecycle"))
    sp = await admin.service_principals.post(ServicePrincipal(app_id=app.app_id))
    assert sp.app_id == app.app_id and sp.id != app.id
    by_app_id = await admin.service_principals_with_app_id(app.app_id).get()
    assert by_app_id.id == sp.id
    assert [s.value for s in by_app_id.oauth2_permission_scopes] == ["mcp-access"]

    graph_sp = await admin.service_principals_with_app_id(GRAPH_APP_ID).get()
    grant = await admin.oauth2_permission_grants.post(OAuth2PermissionGrant(
        client_id=sp.id, consent_type="AllPrincipals", resource_id=graph_sp.id, scope="User.Read offline_access"))
    assert grant.id and grant.principal_id is None
    query = Oauth2PermissionGrantsRequestBuilder.Oauth2PermissionGrantsRequestBuilderGetQueryParameters(
        filter=f"clientId eq '{sp.id}' and resourceId eq '{graph_sp.id}'")
    grants = await admin.oauth2_permission_grants.get(request_configuration=RequestConfiguration(query_parameters=query))
    assert [(g.id, g.scope) for g in grants.value] == [(grant.id, "User.Read offline_access")]

    role_id = app.app_roles[0].id
    assignments = admin.service_principals.by_service_principal_id(sp.id).app_role_assigned_to
    assignment = await assignments.post(AppRoleAssignment(
        principal_id=uuid.UUID(user_id("bruno")), resource_id=uuid.UUID(sp.id), app_role_id=role_id))
    assert assignment.principal_type == "User"
    assert assignment.principal_display_name and assignment.resource_display_name == "sdk lifecycle"
    listed = await assignments.get()
    assert [(a.id, a.app_role_id, str(a.principal_id)) for a in listed.value] == [(assignment.id, role_id, user_id("bruno"))]

    await admin.applications.by_application_id(app.id).delete()
    for gone in (admin.service_principals.by_service_principal_id(sp.id).get(),
                 admin.oauth2_permission_grants.by_o_auth2_permission_grant_id(grant.id).get(),
                 admin.applications.by_application_id(app.id).get()):
        with pytest.raises(ODataError) as caught:
            await gone
        assert caught.value.response_status_code == 404
        assert caught.value.error.code == "Request_ResourceNotFound"


# -- delegated calls through OBO ------------------------------------------------------------------
async def test_me_through_obo(emulator: Emulator, middle_tier: Registration) -> None:
    client, credential = await delegated(emulator, middle_tier, "bruno")
    async with credential:
        me = await client.me.get()
    assert me.user_principal_name == user_upn("bruno")
    assert me.id == user_id("bruno")


@pytest.mark.parametrize(("user", "expected"), [("bruno", 1), ("chen", 0)])
async def test_transitive_membership_with_consistency_level(
    emulator: Emulator, middle_tier: Registration, user: str, expected: int
) -> None:
    client, credential = await delegated(emulator, middle_tier, user)
    query = GraphGroupRequestBuilder.GraphGroupRequestBuilderGetQueryParameters(
        filter=f"id eq '{group_id('finance')}'", count=True)
    async with credential:
        page = await client.me.transitive_member_of.graph_group.get(request_configuration=consistency_eventual(query))
    assert page.odata_count == expected
    assert [g.display_name for g in page.value] == ["Finance"] * expected


async def test_membership_filter_without_consistency_level_is_unsupported(
    emulator: Emulator, middle_tier: Registration
) -> None:
    client, credential = await delegated(emulator, middle_tier, "bruno")
    query = GraphGroupRequestBuilder.GraphGroupRequestBuilderGetQueryParameters(
        filter=f"id eq '{group_id('finance')}'", count=True)
    async with credential:
        with pytest.raises(ODataError) as caught:
            await client.me.transitive_member_of.graph_group.get(
                request_configuration=RequestConfiguration(query_parameters=query))
    assert caught.value.response_status_code == 400
    assert caught.value.error.code == "Request_UnsupportedQuery"


async def test_sharepoint_sites_follow_group_membership(emulator: Emulator, middle_tier: Registration) -> None:
    client, credential = await delegated(emulator, middle_tier, "bruno")
    host = emulator.sharepoint_host
    async with credential:
        site = await client.sites.by_site_id(f"{host}:/sites/finance").get()
        assert site.web_url == f"https://{host}/sites/finance"
        assert site.id.startswith(f"{host},")
        same = await client.sites.by_site_id(site.id).get()
        assert same.display_name == site.display_name
        for path, status, code in (("/sites/engineering", 403, "accessDenied"), ("/sites/no-such-site", 404, "itemNotFound")):
            with pytest.raises(ODataError) as caught:
                await client.sites.by_site_id(f"{host}:{path}").get()
            assert (caught.value.response_status_code, caught.value.error.code) == (status, code)


# -- Graph error shapes and resilience ------------------------------------------------------------
async def test_token_for_another_audience_is_rejected(emulator: Emulator, middle_tier: Registration) -> None:
    """A token minted for the middle tier's own API (not for Graph) is refused by Graph."""
    client_id, secret = emulator.automation_credentials()
    async with ClientSecretCredential(
        emulator.tenant_id, client_id, secret, authority=emulator.authority, disable_instance_discovery=True
    ) as credential:
        client = graph_client(credential, base_url=emulator.graph_url, scopes=[f"api://{middle_tier.app_id}/.default"])
        with pytest.raises(ODataError) as caught:
            await client.applications.get()
    assert caught.value.response_status_code == 401
    assert caught.value.error.code == "InvalidAuthenticationToken"
    assert "Invalid audience" in caught.value.error.message


async def test_sdk_retries_throttled_requests(fresh_faults: Emulator, admin: GraphServiceClient) -> None:
    await admin.service_principals_with_app_id(GRAPH_APP_ID).get()  # token acquired before the fault
    fresh_faults.faults.throttle("graph", count=1, retry_after=1)
    started = time.perf_counter()
    graph_sp = await admin.service_principals_with_app_id(GRAPH_APP_ID).get()
    elapsed = time.perf_counter() - started
    assert graph_sp.display_name == "Microsoft Graph"
    assert fresh_faults.faults.describe()["graph"]["throttle_next"] == 0
    assert elapsed >= 1.0, f"the retry did not wait for Retry-After ({elapsed:.2f}s)"
