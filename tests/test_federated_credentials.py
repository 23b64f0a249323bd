"""Federated identity credentials, through the real libraries (no mocks): Graph's
`/applications/{id}/federatedIdentityCredentials` and client assertions from a trusted issuer at /token (MSAL's
`client_assertion` callable, azure-identity's ClientAssertionCredential and OnBehalfOfCredential with
`client_assertion_func`, sync and aio), with Entra's AADSTS70021 family when nothing matches.

The assertion is what a managed identity gets for `api://AzureADTokenExchange`: a token of the emulator's own
tenant (issuer `{authority}/{tenant}/v2.0`, subject the identity's principal id), minted here with the emulator's
signing keys. The only issuer the emulator can verify is that one.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import jwt
import msal
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientAssertionCredential, OnBehalfOfCredential
from azure.identity.aio import ClientAssertionCredential as AsyncClientAssertionCredential
from azure.identity.aio import ClientSecretCredential as AsyncClientSecretCredential
from azure.identity.aio import OnBehalfOfCredential as AsyncOnBehalfOfCredential
from cryptography.hazmat.primitives.asymmetric import rsa
from msgraph.generated.models.federated_identity_credential import FederatedIdentityCredential

from obokit.clients.graph import graph_client
from obokit.emulator import Emulator
from tenant_setup import Registration, admin_headers, consented_api, register_api, user_token, user_upn
from test_client_certificates import eventually, tenant_emu  # noqa: F401 - tenant_emu is a fixture

pytestmark = [
    pytest.mark.emulator,
    pytest.mark.filterwarnings("ignore:This class is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:GetQueryParameters is deprecated:DeprecationWarning"),
]

REDIRECT_URI = "http://localhost:8768/callback"
GRAPH_USER_READ = "https://graph.microsoft.com/User.Read"
EXCHANGE = "api://AzureADTokenExchange"
GITHUB = "https://token.actions.githubusercontent.com"
GITHUB_SUBJECT = "repo:contoso/mcp-server:ref:refs/heads/main"
PRINCIPAL_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "obokit test managed identity"))  # a managed identity's object id


def issuer(emu: Emulator) -> str:
    return f"{emu.authority}/{emu.tenant_id}/v2.0"


def identity_token(emu: Emulator, *, subject: str = PRINCIPAL_ID, iss: str | None = None, aud: str = EXCHANGE,
                   lifetime: int = 3600, key: rsa.RSAPrivateKey | None = None) -> str:
    """A managed identity's token for the exchange: signed by the emulator, or by `key` (with an unknown kid)."""
    now = int(time.time())
    claims = {"iss": iss or issuer(emu), "sub": subject, "aud": aud, "iat": now - 60, "nbf": now - 60,
              "exp": now + lifetime, "tid": emu.tenant_id, "ver": "2.0"}
    if key is None:
        return emu.keys.sign(claims)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "kMYzNsqUbNQKjc8a3cpmsmHQ4Ek"})


def graph(emu: Emulator) -> httpx.Client:
    return httpx.Client(base_url=emu.graph_url, headers=admin_headers(emu))


def add_fic(emu: Emulator, reg: Registration, name: str, iss: str, subject: str, **extra: Any) -> httpx.Response:
    with graph(emu) as client:
        return client.post(f"/applications/{reg.object_id}/federatedIdentityCredentials",
                           json={"name": name, "issuer": iss, "subject": subject, **extra})


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def msal_app(emu: Emulator, reg: Registration, assertion: str) -> msal.ConfidentialClientApplication:
    """A new MSAL client each time (MSAL answers a repeated 400 from its cache); the assertion as a callable."""
    return msal.ConfidentialClientApplication(reg.app_id, client_credential={"client_assertion": lambda: assertion},
                                              authority=emu.tenant_authority, instance_discovery=False)


def app_token(emu: Emulator, reg: Registration, assertion: str) -> dict[str, Any]:
    return msal_app(emu, reg, assertion).acquire_token_for_client([f"api://{reg.app_id}/.default"])


def code(result: dict[str, Any]) -> int | None:
    return (result.get("error_codes") or [None])[0]


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api(emulator: Emulator) -> Registration:
    """A v2 API with consent for Graph that trusts the managed identity's tokens."""
    reg = consented_api(emulator, "federated api", REDIRECT_URI)
    add_fic(emulator, reg, "managed-identity", issuer(emulator), PRINCIPAL_ID).raise_for_status()
    return reg


@pytest.fixture(scope="module")
def github_api(emulator: Emulator) -> Registration:
    """An API that trusts a GitHub Actions workflow: an issuer the emulator cannot verify."""
    reg = register_api(emulator, name="github federated api")
    add_fic(emulator, reg, "github-main", GITHUB, GITHUB_SUBJECT).raise_for_status()
    return reg


@pytest.fixture(scope="module")
def outsider() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def adele_assertion(emulator: Emulator, api: Registration) -> str:
    return user_token(emulator, api, user_upn("adele"), REDIRECT_URI)


# -- Graph ----------------------------------------------------------------------------------------
def test_graph_create_list_get_update_delete(emulator: Emulator) -> None:
    reg = register_api(emulator, name="fic crud api")
    created = add_fic(emulator, reg, "crud", issuer(emulator), "some-principal", description="for tests")
    assert created.status_code == 201
    body = created.json()
    assert body["@odata.context"].endswith(f"applications('{reg.object_id}')/federatedIdentityCredentials/$entity")
    assert uuid.UUID(body["id"]) and body["audiences"] == [EXCHANGE]  # the default audience
    assert (body["name"], body["issuer"], body["subject"], body["description"]) == (
        "crud", issuer(emulator), "some-principal", "for tests")
    base = f"/applications/{reg.object_id}/federatedIdentityCredentials"
    with graph(emulator) as client:
        listed = client.get(base).json()["value"]
        assert [c["id"] for c in listed] == [body["id"]]
        assert client.get(f"{base}/{body['id']}").json()["subject"] == "some-principal"
        assert client.get(f"{base}(name='crud')").json()["id"] == body["id"]  # name is an alternate key
        assert client.get(base, params={"$filter": "subject eq 'some-principal'"}).json()["value"][0]["name"] == "crud"
        assert client.patch(f"{base}/{body['id']}", json={"subject": "another"}).status_code == 204
        assert client.get(f"{base}/{body['id']}").json()["subject"] == "another"
        assert client.patch(f"{base}/{body['id']}", json={"name": "renamed"}).status_code == 400  # immutable
        assert "federatedIdentityCredentials" not in client.get(f"/applications/{reg.object_id}").json()
        assert client.delete(f"{base}/{body['id']}").status_code == 204
        gone = client.get(f"{base}/{body['id']}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "Request_ResourceNotFound"


def test_graph_validates_credentials(emulator: Emulator) -> None:
    reg = register_api(emulator, name="fic validation api")
    assert add_fic(emulator, reg, "first", GITHUB, "repo:a/b:ref:refs/heads/main").status_code == 201
    duplicate = add_fic(emulator, reg, "first", GITHUB, "repo:a/b:environment:prod")
    assert duplicate.status_code == 409 and duplicate.json()["error"]["code"] == "Request_MultipleObjectsWithSameKeyValue"
    assert duplicate.json()["error"]["message"] == "FederatedIdentityCredential with name first already exists."
    assert add_fic(emulator, reg, "same-pair", GITHUB, "repo:a/b:ref:refs/heads/main").status_code == 409
    assert add_fic(emulator, reg, "not url/friendly", GITHUB, "x").status_code == 400
    assert add_fic(emulator, reg, "x" * 121, GITHUB, "x").status_code == 400
    assert add_fic(emulator, reg, "two-audiences", GITHUB, "y", audiences=[EXCHANGE, "api://other"]).status_code == 400
    assert add_fic(emulator, reg, "no-issuer", "", "z").status_code == 400
    for n in range(19):  # 20 in all
        assert add_fic(emulator, reg, f"fill-{n}", GITHUB, f"subject-{n}").status_code == 201
    over = add_fic(emulator, reg, "twenty-first", GITHUB, "one-too-many")
    assert over.status_code == 400 and "20" in over.json()["error"]["message"]


async def test_msgraph_sdk_creates_a_federated_credential(emulator: Emulator) -> None:
    reg = register_api(emulator, name="msgraph-sdk federated api")
    client_id, secret = emulator.automation_credentials()
    async with AsyncClientSecretCredential(emulator.tenant_id, client_id, secret, authority=emulator.authority,
                                           disable_instance_discovery=True) as credential:
        client = graph_client(credential, base_url=emulator.graph_url)
        fics = client.applications.by_application_id(reg.object_id).federated_identity_credentials
        created = await fics.post(FederatedIdentityCredential(
            name="sdk", issuer=issuer(emulator), subject=PRINCIPAL_ID, audiences=[EXCHANGE]))
        listed = await fics.get()
    assert created.id and [c.name for c in listed.value] == ["sdk"]
    assert "access_token" in app_token(emulator, reg, identity_token(emulator))


# -- successful exchanges ---------------------------------------------------------------------------
def test_msal_client_credentials_with_a_managed_identity_token(emulator: Emulator, api: Registration) -> None:
    result = app_token(emulator, api, identity_token(emulator))
    assert "access_token" in result, result.get("error_description")
    claims = claims_of(result["access_token"])
    assert claims["azp"] == api.app_id and claims["azpacr"] == "2"


def test_msal_obo_with_a_managed_identity_token(emulator: Emulator, api: Registration, adele_assertion: str) -> None:
    result = msal_app(emulator, api, identity_token(emulator)).acquire_token_on_behalf_of(adele_assertion,
                                                                                       [GRAPH_USER_READ])
    assert "access_token" in result, result.get("error_description")
    claims = claims_of(result["access_token"])
    assert claims["appid"] == api.app_id and claims["appidacr"] == "2" and claims["upn"] == user_upn("adele")
    me = httpx.get(f"{emulator.graph_url}/me", headers={"Authorization": f"Bearer {result['access_token']}"})
    assert me.status_code == 200 and me.json()["userPrincipalName"] == user_upn("adele")


def test_sync_client_assertion_credential(emulator: Emulator, api: Registration) -> None:
    calls: list[int] = []

    def assertion() -> str:
        calls.append(1)
        return identity_token(emulator)

    credential = ClientAssertionCredential(emulator.tenant_id, api.app_id, assertion, authority=emulator.authority)
    token = credential.get_token(f"api://{api.app_id}/.default")
    assert claims_of(token.token)["azpacr"] == "2" and calls


async def test_async_client_assertion_credential(emulator: Emulator, api: Registration) -> None:
    async with AsyncClientAssertionCredential(emulator.tenant_id, api.app_id, lambda: identity_token(emulator),
                                              authority=emulator.authority) as credential:
        token = await credential.get_token(f"api://{api.app_id}/.default")
    assert claims_of(token.token)["azp"] == api.app_id


def test_sync_obo_credential_with_an_assertion_func(emulator: Emulator, api: Registration,
                                                    adele_assertion: str) -> None:
    credential = OnBehalfOfCredential(emulator.tenant_id, api.app_id, client_assertion_func=lambda: identity_token(emulator),
                                      user_assertion=adele_assertion, authority=emulator.authority,
                                      disable_instance_discovery=True)
    claims = claims_of(credential.get_token(GRAPH_USER_READ).token)
    assert claims["appidacr"] == "2" and claims["upn"] == user_upn("adele")


async def test_async_obo_credential_with_an_assertion_func(emulator: Emulator, api: Registration,
                                                           adele_assertion: str) -> None:
    async with AsyncOnBehalfOfCredential(emulator.tenant_id, api.app_id,
                                         client_assertion_func=lambda: identity_token(emulator),
                                         user_assertion=adele_assertion, authority=emulator.authority) as credential:
        token = await credential.get_token(GRAPH_USER_READ)
    assert claims_of(token.token)["upn"] == user_upn("adele")


# -- failures -------------------------------------------------------------------------------------
def test_an_app_without_federated_credentials_answers_70021(emulator: Emulator) -> None:
    reg = register_api(emulator, name="no federation api")
    result = app_token(emulator, reg, identity_token(emulator))
    assert code(result) == 70021 and result["error"] == "invalid_request"
    assert (f"No matching federated identity record found for presented assertion. Assertion Issuer: "
            f"'{issuer(emulator)}'. Assertion Subject: '{PRINCIPAL_ID}'. Assertion Audience: '{EXCHANGE}'."
            ) in result["error_description"]


def test_an_untrusted_issuer_is_700211(emulator: Emulator, github_api: Registration) -> None:
    result = app_token(emulator, github_api, identity_token(emulator))
    assert code(result) == 700211 and result["error"] == "invalid_client"
    assert f"presented assertion issuer '{issuer(emulator)}'" in result["error_description"]


def test_another_subject_is_700213(emulator: Emulator, api: Registration) -> None:
    credential = ClientAssertionCredential(emulator.tenant_id, api.app_id,
                                           lambda: identity_token(emulator, subject="another-identity"),
                                           authority=emulator.authority)
    with pytest.raises(ClientAuthenticationError, match="AADSTS700213") as failure:
        credential.get_token(f"api://{api.app_id}/.default")
    assert "presented assertion subject 'another-identity'" in str(failure.value)


async def test_another_audience_is_700212(emulator: Emulator, api: Registration) -> None:
    async with AsyncClientAssertionCredential(emulator.tenant_id, api.app_id,
                                              lambda: identity_token(emulator, aud="api://not-the-exchange"),
                                              authority=emulator.authority) as credential:
        with pytest.raises(ClientAuthenticationError, match="AADSTS700212") as failure:
            await credential.get_token(f"api://{api.app_id}/.default")
    assert "presented assertion audience 'api://not-the-exchange'" in str(failure.value)


def test_a_trusted_issuer_the_emulator_cannot_reach_is_50166(emulator: Emulator, github_api: Registration,
                                                              outsider: rsa.RSAPrivateKey) -> None:
    token = identity_token(emulator, iss=GITHUB, subject=GITHUB_SUBJECT, key=outsider)
    result = app_token(emulator, github_api, token)
    assert code(result) == 50166 and "Request to External OIDC endpoint failed." in result["error_description"]


def test_a_key_the_issuer_does_not_publish_is_7000272(emulator: Emulator, api: Registration,
                                                      outsider: rsa.RSAPrivateKey) -> None:
    result = app_token(emulator, api, identity_token(emulator, key=outsider))
    assert code(result) == 7000272
    assert f"could not be found in the metadata of identity provider {issuer(emulator)}" in result["error_description"]


def test_an_expired_identity_token_is_700024(emulator: Emulator, api: Registration) -> None:
    result = app_token(emulator, api, identity_token(emulator, lifetime=-30))
    assert code(result) == 700024 and "not within its valid time range" in result["error_description"]


def test_obo_surfaces_the_mismatch_too(emulator: Emulator, github_api: Registration) -> None:
    credential = OnBehalfOfCredential(emulator.tenant_id, github_api.app_id,
                                      client_assertion_func=lambda: identity_token(emulator),
                                      user_assertion="unused", authority=emulator.authority,
                                      disable_instance_discovery=True)
    with pytest.raises(ClientAuthenticationError, match="AADSTS700211"):
        credential.get_token(GRAPH_USER_READ)


# -- replication (the tenant profile) ---------------------------------------------------------------
def test_a_new_federated_credential_is_unknown_until_it_replicates(tenant_emu: Emulator) -> None:
    reg = register_api(tenant_emu, name="replicating federated api")
    tenant_emu.replication.settle_all()  # setup done; the credential below is under test
    assert add_fic(tenant_emu, reg, "late", issuer(tenant_emu), PRINCIPAL_ID).status_code == 201
    assert code(app_token(tenant_emu, reg, identity_token(tenant_emu))) == 70021
    result = eventually(lambda: app_token(tenant_emu, reg, identity_token(tenant_emu)))
    assert claims_of(result["access_token"])["azpacr"] == "2"


def test_a_credential_naming_the_emulators_issuer_at_an_earlier_port_still_matches(emulator: Emulator) -> None:
    """The emulator listens on a new port per start; Entra's issuer never changes (README known differences)."""
    reg = register_api(emulator, name="fic earlier port api")
    earlier = f"https://127.0.0.1:1/{emulator.tenant_id}/v2.0"  # as an earlier start's emulator wrote it
    add_fic(emulator, reg, "earlier-port", earlier, PRINCIPAL_ID).raise_for_status()
    assert "access_token" in app_token(emulator, reg, identity_token(emulator))
    other_host = register_api(emulator, name="fic other host api")
    add_fic(emulator, other_host, "other-host", f"https://login.example/{emulator.tenant_id}/v2.0",
            PRINCIPAL_ID).raise_for_status()
    assert code(app_token(emulator, other_host, identity_token(emulator))) == 700211
