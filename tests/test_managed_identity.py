"""The emulator's managed identity endpoint (App Service / Container Apps style) through the real clients, no mocks.

MSAL's `ManagedIdentityClient`, azure-identity's sync `ManagedIdentityCredential` (which wraps MSAL's) and its aio
one (its own HTTP client) find the endpoint in IDENTITY_ENDPOINT / IDENTITY_HEADER, set only inside
`emu.managed_identity_env()`. Tokens are checked against the emulator's JWKS (the exchange token) or by Graph.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import msal
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import CredentialUnavailableError, ManagedIdentityCredential
from azure.identity.aio import ManagedIdentityCredential as AsyncManagedIdentityCredential
from tenant_setup import admin_headers, register_api
from test_identity_msal import verify

from obokit.emulator import GRAPH_APP_ID, Emulator
from obokit.emulator.managed_identity import app_service_environment
from obokit.emulator.seed import PROFILES, demo_tenant

EXCHANGE = "api://AzureADTokenExchange"
GRAPH = "https://graph.microsoft.com"
UNKNOWN_CLIENT_ID = "6f0b8c2e-0d7a-4d3e-9a51-2b7c4e8f1a90"
UNKNOWN_RESOURCE = "https://vault.azure.net"
# The real endpoint's messages (see managed_identity.py for where each was seen).
UNKNOWN_IDENTITY_MESSAGE = "Unable to load the proper Managed Identity."
UNKNOWN_RESOURCE_MESSAGE = "An unexpected error occured while fetching the AAD Token."
ENV_NAMES = ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT")


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def issuer(emu: Emulator) -> str:
    """The v2 issuer the emulator's discovery document names (and its other v2 tokens carry)."""
    return httpx.get(f"{emu.tenant_authority}/v2.0/.well-known/openid-configuration").json()["issuer"]


def msal_client(emu: Emulator, **identity: str) -> msal.ManagedIdentityClient:
    identity = identity or {"client_id": emu.managed_identity.client_id}
    return msal.ManagedIdentityClient(msal.UserAssignedManagedIdentity(**identity), http_client=requests.Session())


def endpoint_calls(emu: Emulator, since: int) -> int:
    return len(emu.managed_identity_requests.since(since))


def check_exchange_token(emu: Emulator, token: str) -> None:
    claims = verify(emu, token, audience=EXCHANGE, issuer=issuer(emu))
    identity = emu.managed_identity
    assert claims["sub"] == claims["oid"] == identity.principal_id
    assert claims["azp"] == identity.client_id and claims["idtyp"] == "app" and claims["ver"] == "2.0"
    assert claims["tid"] == emu.tenant_id and "roles" not in claims


def graph_get(emu: Emulator, token: str, path: str) -> httpx.Response:
    return httpx.get(f"{emu.graph_url}{path}", headers={"Authorization": f"Bearer {token}"})


@pytest.fixture(autouse=True)
def environment_untouched() -> Iterator[None]:
    """Every test leaves the managed identity variables as it found them."""
    before = {name: os.environ.get(name) for name in ENV_NAMES}
    yield
    assert {name: os.environ.get(name) for name in ENV_NAMES} == before


def assign_graph_role(emu: Emulator, principal_id: str, role: str = "User.Read.All") -> str:
    """Assign Graph's app role `role` to `principal_id` through Graph; returns the assignment's URL path."""
    with httpx.Client(base_url=emu.graph_url, headers=admin_headers(emu)) as graph:
        graph_sp = graph.get(f"/servicePrincipals(appId='{GRAPH_APP_ID}')").raise_for_status().json()
        role_id = next(r["id"] for r in graph_sp["appRoles"] if r["value"] == role)
        assigned = graph.post(f"/servicePrincipals/{graph_sp['id']}/appRoleAssignedTo", json={
            "principalId": principal_id, "resourceId": graph_sp["id"], "appRoleId": role_id})
    assert assigned.status_code == 201, assigned.text
    return f"/servicePrincipals/{graph_sp['id']}/appRoleAssignedTo/{assigned.json()['id']}"


@pytest.fixture
def graph_reader(emulator: Emulator) -> Iterator[str]:
    """The managed identity holds Graph's User.Read.All app role for the test (assigned and removed through Graph)."""
    assignment = assign_graph_role(emulator, emulator.managed_identity.principal_id)
    yield "User.Read.All"
    removed = httpx.delete(f"{emulator.graph_url}{assignment}", headers=admin_headers(emulator))
    assert removed.status_code == 204, removed.text


# -- the seeded identity ---------------------------------------------------------------------
@pytest.mark.parametrize("profile", PROFILES)
def test_both_profiles_seed_the_user_assigned_identity(profile: str) -> None:
    objects, _ = demo_tenant(profile)
    identities = [o for kind, o in objects
                  if kind == "servicePrincipals" and o["servicePrincipalType"] == "ManagedIdentity"]
    assert [(i["appId"], i["id"]) for i in identities] == [(Emulator.managed_identity.client_id,
                                                            Emulator.managed_identity.principal_id)]
    assert not any(kind == "applications" and o["appId"] == identities[0]["appId"] for kind, o in objects)


def test_graph_shows_the_identity_as_a_managed_identity_service_principal(emulator: Emulator) -> None:
    identity = emulator.managed_identity
    listed = httpx.get(f"{emulator.graph_url}/servicePrincipals", headers=admin_headers(emulator),
                       params={"$filter": "servicePrincipalType eq 'ManagedIdentity'"})
    assert listed.status_code == 200, listed.text
    [sp] = listed.json()["value"]
    assert (sp["id"], sp["appId"], sp["displayName"]) == (identity.principal_id, identity.client_id, identity.name)
    assert sp["alternativeNames"] == ["isExplicit=True", identity.resource_id]
    assert identity.resource_id.endswith(f"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{identity.name}")
    assert sp["servicePrincipalNames"][0] == identity.client_id


# -- MSAL ------------------------------------------------------------------------------------
def test_msal_gets_the_exchange_token_once_then_from_its_cache(emulator: Emulator) -> None:
    client = msal_client(emulator)
    with emulator.managed_identity_env():
        since = emulator.managed_identity_requests.last_seq
        first = client.acquire_token_for_client(resource=EXCHANGE)
        again = client.acquire_token_for_client(resource=EXCHANGE)
    assert first["token_source"] == "identity_provider" and again["token_source"] == "cache", first.get("error")
    assert again["access_token"] == first["access_token"] and endpoint_calls(emulator, since) == 1
    check_exchange_token(emulator, first["access_token"])
    exp = claims_of(first["access_token"])["exp"]
    assert abs(time.time() + first["expires_in"] - exp) <= 2  # expires_on, a string, is the token's exp
    assert first["expires_in"] > 23 * 3600  # a managed identity's token lives about a day


def test_msal_selects_the_identity_by_object_id_and_by_resource_id(emulator: Emulator) -> None:
    identity = emulator.managed_identity
    with emulator.managed_identity_env():
        by_object = msal_client(emulator, object_id=identity.principal_id).acquire_token_for_client(resource=EXCHANGE)
        by_resource = msal_client(emulator, resource_id=identity.resource_id.upper()).acquire_token_for_client(
            resource=EXCHANGE)
    for result in (by_object, by_resource):
        assert claims_of(result["access_token"])["oid"] == identity.principal_id, result.get("error_description")


def test_msal_graph_token_carries_the_identitys_app_roles(emulator: Emulator, graph_reader: str) -> None:
    with emulator.managed_identity_env():
        result = msal_client(emulator).acquire_token_for_client(resource=GRAPH)
    claims = claims_of(result["access_token"])
    assert claims["aud"] == GRAPH and claims["appid"] == emulator.managed_identity.client_id
    assert claims["oid"] == emulator.managed_identity.principal_id and claims["idtyp"] == "app"
    assert claims["roles"] == [graph_reader] and claims["ver"] == "1.0"
    users = graph_get(emulator, result["access_token"], "/users")
    assert users.status_code == 200, users.text


def test_a_graph_token_without_app_roles_is_refused_by_graph(emulator: Emulator) -> None:
    with emulator.managed_identity_env():
        result = msal_client(emulator).acquire_token_for_client(resource=GRAPH)
    assert "roles" not in claims_of(result["access_token"])
    assert graph_get(emulator, result["access_token"], "/users").status_code == 403


# -- azure-identity --------------------------------------------------------------------------
def test_azure_identity_sync_credential_gets_both_tokens(emulator: Emulator, graph_reader: str) -> None:
    client_id = emulator.managed_identity.client_id
    with emulator.managed_identity_env(), ManagedIdentityCredential(client_id=client_id) as cred:
        exchange = cred.get_token(f"{EXCHANGE}/.default")
        graph = cred.get_token(f"{GRAPH}/.default")
    check_exchange_token(emulator, exchange.token)
    assert abs(exchange.expires_on - claims_of(exchange.token)["exp"]) <= 2
    assert claims_of(graph.token)["roles"] == [graph_reader]
    assert graph_get(emulator, graph.token, "/users").status_code == 200


async def test_azure_identity_aio_credential_gets_both_tokens_and_caches(emulator: Emulator, graph_reader: str) -> None:
    with emulator.managed_identity_env():
        async with AsyncManagedIdentityCredential(client_id=emulator.managed_identity.client_id) as cred:
            since = emulator.managed_identity_requests.last_seq
            exchange = await cred.get_token(f"{EXCHANGE}/.default")
            graph = await cred.get_token(f"{GRAPH}/.default")
            assert (await cred.get_token(f"{EXCHANGE}/.default")).token == exchange.token
    assert endpoint_calls(emulator, since) == 2  # one per resource; the repeat came from the credential's cache
    check_exchange_token(emulator, exchange.token)
    assert exchange.expires_on == claims_of(exchange.token)["exp"]  # the aio client reads expires_on itself
    assert claims_of(graph.token)["roles"] == [graph_reader]
    async with httpx.AsyncClient() as http:
        users = await http.get(f"{emulator.graph_url}/users", headers={"Authorization": f"Bearer {graph.token}"})
    assert users.status_code == 200, users.text


# -- errors, through each client -------------------------------------------------------------
def test_the_protocols_answers_on_the_wire(emulator: Emulator) -> None:
    env = emulator.managed_identity_environment()
    identity = emulator.managed_identity

    def get(header: str = env["IDENTITY_HEADER"], **params: str) -> httpx.Response:
        query = {"api-version": "2019-08-01", "resource": EXCHANGE, **params}
        return httpx.get(env["IDENTITY_ENDPOINT"], params=query, headers={"X-IDENTITY-HEADER": header})

    assert env["IDENTITY_ENDPOINT"].startswith("http://127.0.0.1:")
    ok = get(principal_id=identity.principal_id.upper())
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("application/json")
    body = ok.json()
    assert set(body) == {"access_token", "expires_on", "resource", "token_type", "client_id"}
    assert isinstance(body["expires_on"], str) and int(body["expires_on"]) == claims_of(body["access_token"])["exp"]
    assert (body["resource"], body["token_type"], body["client_id"]) == (EXCHANGE, "Bearer", identity.client_id)
    for response, status, message in [
        (get(header="not-the-header", client_id=identity.client_id), 401, None),
        (get(header="", client_id=identity.client_id), 401, None),
        (get(client_id=UNKNOWN_CLIENT_ID), 400, UNKNOWN_IDENTITY_MESSAGE),
        (get(), 400, UNKNOWN_IDENTITY_MESSAGE),  # no selector: the system-assigned identity, which this host lacks
        (get(client_id=identity.client_id, object_id=identity.principal_id), 400, UNKNOWN_IDENTITY_MESSAGE),
        (get(client_id=identity.client_id, resource=UNKNOWN_RESOURCE), 500, UNKNOWN_RESOURCE_MESSAGE),
    ]:
        error = response.json()
        assert response.status_code == error["statusCode"] == status, response.text
        assert set(error) == {"statusCode", "message", "correlationId"}
        assert response.headers["x-correlation-id"] == error["correlationId"]
        assert message is None or error["message"] == message
        assert "access_token" not in error


def test_msal_surfaces_each_error(emulator: Emulator) -> None:
    env = emulator.managed_identity_environment()
    with app_service_environment(env["IDENTITY_ENDPOINT"], "not-the-header"):
        wrong_header = msal_client(emulator).acquire_token_for_client(resource=EXCHANGE)
    with emulator.managed_identity_env():
        unknown_identity = msal_client(emulator, client_id=UNKNOWN_CLIENT_ID).acquire_token_for_client(resource=GRAPH)
        unknown_resource = msal_client(emulator).acquire_token_for_client(resource=UNKNOWN_RESOURCE)
    # MSAL reports any answer without a token as invalid_scope, with "statusCode, message".
    assert wrong_header["error"] == "invalid_scope" and wrong_header["error_description"].startswith("401, ")
    assert unknown_identity["error_description"] == f"400, {UNKNOWN_IDENTITY_MESSAGE}"
    assert unknown_resource["error_description"] == f"500, {UNKNOWN_RESOURCE_MESSAGE}"
    assert "access_token" not in wrong_header | unknown_identity | unknown_resource


def test_azure_identity_sync_surfaces_each_error(emulator: Emulator) -> None:
    env = emulator.managed_identity_environment()
    client_id = emulator.managed_identity.client_id
    # retry_total=0: azure-core retries a GET answered 500 ten times with backoff, against any endpoint.
    cases = [(env["IDENTITY_HEADER"], UNKNOWN_CLIENT_ID, GRAPH, f"400, {UNKNOWN_IDENTITY_MESSAGE}"),
             (env["IDENTITY_HEADER"], client_id, UNKNOWN_RESOURCE, f"500, {UNKNOWN_RESOURCE_MESSAGE}"),
             ("not-the-header", client_id, GRAPH, "401, ")]
    for header, identity, resource, expected in cases:
        credential = ManagedIdentityCredential(client_id=identity, retry_total=0)
        with app_service_environment(env["IDENTITY_ENDPOINT"], header), pytest.raises(CredentialUnavailableError) as caught:
            credential.get_token(f"{resource}/.default")
        assert f"(invalid_scope) {expected}" in str(caught.value)


async def test_azure_identity_aio_surfaces_each_error(emulator: Emulator) -> None:
    env = emulator.managed_identity_environment()
    client_id = emulator.managed_identity.client_id
    cases = [(env["IDENTITY_HEADER"], UNKNOWN_CLIENT_ID, GRAPH, 400, UNKNOWN_IDENTITY_MESSAGE),
             (env["IDENTITY_HEADER"], client_id, UNKNOWN_RESOURCE, 500, UNKNOWN_RESOURCE_MESSAGE),
             ("not-the-header", client_id, GRAPH, 401, None)]
    for header, identity, resource, status, message in cases:
        with app_service_environment(env["IDENTITY_ENDPOINT"], header):
            async with AsyncManagedIdentityCredential(client_id=identity, retry_total=0) as cred:
                with pytest.raises(ClientAuthenticationError) as caught:
                    await cred.get_token(f"{resource}/.default")
        assert caught.value.response is not None and caught.value.response.status_code == status
        assert message is None or message in str(caught.value)


# -- the process environment -----------------------------------------------------------------
def test_the_env_context_sets_and_restores_the_process_variables(emulator: Emulator,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:1/earlier")
    monkeypatch.delenv("IDENTITY_HEADER", raising=False)
    # A Service Fabric thumbprint would send MSAL and azure-identity to Service Fabric's protocol instead.
    monkeypatch.setenv("IDENTITY_SERVER_THUMBPRINT", "0" * 40)
    before = {name: os.environ.get(name) for name in ENV_NAMES}
    with emulator.managed_identity_env() as values:
        assert values == emulator.managed_identity_environment()
        assert {name: os.environ.get(name) for name in ENV_NAMES} == {**values, "IDENTITY_SERVER_THUMBPRINT": None}
        assert "access_token" in msal_client(emulator).acquire_token_for_client(resource=EXCHANGE)
    assert {name: os.environ.get(name) for name in ENV_NAMES} == before


def test_a_restart_rotates_the_header_and_the_old_one_is_refused(tmp_path: Path) -> None:
    """A short token lifetime (MSAL treats tokens with under 5 minutes left as expired): each call reaches the
    endpoint once the cached token is that old, so the endpoint sees one call per token lifetime."""
    with Emulator(tmp_path / "state", token_lifetime=301).start() as emu:
        first = emu.managed_identity_environment()
        client = msal_client(emu)
        with emu.managed_identity_env():
            since = emu.managed_identity_requests.last_seq
            assert "access_token" in client.acquire_token_for_client(resource=EXCHANGE)
            time.sleep(1.5)
            assert client.acquire_token_for_client(resource=EXCHANGE)["token_source"] == "identity_provider"
        assert endpoint_calls(emu, since) == 2
        emu.stop()
        emu.start()
        second = emu.managed_identity_environment()
        assert second["IDENTITY_HEADER"] != first["IDENTITY_HEADER"]
        query = {"api-version": "2019-08-01", "resource": EXCHANGE, "client_id": emu.managed_identity.client_id}
        stale = httpx.get(second["IDENTITY_ENDPOINT"], params=query, headers={"X-IDENTITY-HEADER": first["IDENTITY_HEADER"]})
        assert stale.status_code == 401
    with pytest.raises(RuntimeError):
        emu.managed_identity_environment()


# -- secretless: the managed identity as a federated identity credential ----------------------
def test_an_app_trusting_the_identity_gets_graph_tokens_without_a_secret(emulator: Emulator) -> None:
    """The secretless pattern (pamelafox/azure-cosmosdb-identity-aware-mcp-server): a federated identity credential
    on the app trusts the managed identity (issuer: the tenant's v2 issuer, subject: its principal id); MSAL sends
    the identity's exchange token as the client assertion. Two app instances share one managed identity client."""
    app = register_api(emulator, name="secretless mcp server")
    created = httpx.post(f"{emulator.graph_url}/applications/{app.object_id}/federatedIdentityCredentials",
                         headers=admin_headers(emulator), json={
                             "name": "managed-identity", "issuer": issuer(emulator),
                             "subject": emulator.managed_identity.principal_id, "audiences": [EXCHANGE]})
    assert created.status_code == 201, created.text
    assign_graph_role(emulator, app.sp_id)
    identity_client = msal_client(emulator)

    def assertion() -> str:
        return identity_client.acquire_token_for_client(resource=EXCHANGE)["access_token"]

    with emulator.managed_identity_env():
        since, grants = emulator.managed_identity_requests.last_seq, emulator.stats()["token_requests"]
        results = [msal.ConfidentialClientApplication(app.app_id, client_credential={"client_assertion": assertion},
                                                      authority=emulator.tenant_authority, instance_discovery=False,
                                                      ).acquire_token_for_client([f"{GRAPH}/.default"])
                   for _replica in range(2)]
    for result in results:
        claims = claims_of(result["access_token"])
        assert claims["appid"] == app.app_id and claims["appidacr"] == "2", result.get("error_description")
        assert claims["roles"] == ["User.Read.All"]
        assert graph_get(emulator, result["access_token"], "/users").status_code == 200
    after = emulator.stats()["token_requests"]
    assert after["client_credentials"] - grants.get("client_credentials", 0) == 2
    assert endpoint_calls(emulator, since) == 1  # the second instance's assertion came from MSAL's cache


def test_cli_prints_the_two_variables_to_export(tmp_path: Path) -> None:
    from test_cli import serving

    with serving(tmp_path) as (process, printed):
        exports = dict(line.removeprefix("export ").split("=", 1) for line in printed if line.startswith("export "))
        assert set(exports) == {"IDENTITY_ENDPOINT", "IDENTITY_HEADER"}
        assert not any(line.strip().startswith("IDENTITY_") for line in printed)  # never among the .env lines
        client = msal.ManagedIdentityClient(msal.UserAssignedManagedIdentity(client_id=Emulator.managed_identity.client_id),
                                            http_client=requests.Session())
        with app_service_environment(exports["IDENTITY_ENDPOINT"], exports["IDENTITY_HEADER"]):
            result = client.acquire_token_for_client(resource=EXCHANGE)
        assert claims_of(result["access_token"])["azp"] == Emulator.managed_identity.client_id, result.get("error")


def test_a_state_folder_seeded_before_the_identity_gains_it_and_keeps_its_objects(tmp_path: Path) -> None:
    first = Emulator(tmp_path)
    identity_id = first.managed_identity.principal_id
    kept = [(collection, obj) for collection, obj in demo_tenant("quick")[0] if obj["id"] != identity_id]
    kept.append(("applications", {"id": "made-by-a-learner", "appId": "made-by-a-learner", "displayName": "mine"}))
    first.store.replace_all(kept)  # the state as an older version left it, plus a learner's app
    first.store.close()
    upgraded = Emulator(tmp_path)
    assert upgraded.store.get("servicePrincipals", identity_id)["servicePrincipalType"] == "ManagedIdentity"
    assert upgraded.store.get("applications", "made-by-a-learner")["displayName"] == "mine"
    upgraded.store.close()
