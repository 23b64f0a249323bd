"""The workbook server with each credential (`obokit.server.credentials`): secret, certificate, managed identity.

FastMCP's OAuth proxy redeems the sign-in and the tools do OBO with the credential under test, against the session
emulator, through the real libraries (FastMCP, azure-identity, MSAL, httpx); nothing is mocked. The extension points
of FastMCP that `obokit.server.azure_provider` overrides are checked first, so an upgrade that moves them fails here.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import inspect
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from fastmcp import Client
from fastmcp.server.auth.oauth_proxy.proxy import OAuthProxy
from fastmcp.server.auth.oauth_proxy.upstream import AsyncOAuth2Client
from fastmcp.server.auth.providers.azure import AzureProvider
from server_fixtures import make_target, register_workbook_server, registrations
from tenant_setup import Registration, admin_headers, user_token, user_upn

from obokit.clients.mcp_client import HeadlessOAuth
from obokit.emulator import Emulator, group_id
from obokit.server import start_workbook_server
from obokit.server.azure_provider import AssertionUpstreamClient, CredentialAzureProvider
from obokit.server.credentials import (
    ClientCertificate, ClientSecret, ManagedIdentityAssertion, ServerCredential, self_signed_certificate,
)
from obokit.server.obo import OboError, confidential_client, raw_obo_exchange
from obokit.server.tools import on_behalf_of
from obokit.tenant.target import Target

pytestmark = pytest.mark.emulator
REDIRECT_URI = "http://localhost:8000/auth/callback"
GRAPH_USER_READ = ["https://graph.microsoft.com/User.Read"]
EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"


# -- FastMCP's extension points ------------------------------------------------------------------
def test_the_fastmcp_extension_points_azure_provider_overrides_are_still_there() -> None:
    """A FastMCP upgrade that renames or reshapes these breaks secretless sign-in and OBO: fail loudly here."""
    assert "_create_upstream_oauth_client" in vars(OAuthProxy)
    assert "_create_upstream_oauth_client()" in inspect.getsource(OAuthProxy._upstream_oauth_client)
    assert list(inspect.signature(AsyncOAuth2Client._apply_client_auth).parameters) == ["self", "data", "headers"]
    assert list(inspect.signature(AsyncOAuth2Client._request_token).parameters) == ["self", "url", "data"]
    assert "self._apply_client_auth(data, headers)" in inspect.getsource(AsyncOAuth2Client._request_token)
    assert list(inspect.signature(AzureProvider.get_obo_credential).parameters) == ["self", "user_assertion"]
    provider = AzureProvider(client_id="00000000-0000-0000-0000-000000000001", client_secret="s", tenant_id="t",
                             base_url="http://localhost:1", required_scopes=["mcp-access"], jwt_signing_key="k" * 32)
    for name in ("_tenant_id", "_base_authority", "_obo_credentials", "_obo_max_credentials", "_upstream_client_id",
                 "_upstream_token_endpoint"):
        assert hasattr(provider, name), f"AzureProvider no longer has {name}"


# -- credentials on their own --------------------------------------------------------------------
def test_certificate_assertion_has_the_rfc7523_shape() -> None:
    certificate = ClientCertificate.from_pem(self_signed_certificate("shape"))
    assertion = certificate.sign_assertion("client-1", "https://login.example/t/oauth2/v2.0/token", now=1_000_000)
    header, claims = jwt.get_unverified_header(assertion), jwt.decode(assertion, options={"verify_signature": False})
    sha256 = base64.urlsafe_b64encode(certificate.certificate.fingerprint(hashes.SHA256())).rstrip(b"=").decode()
    assert header["alg"] == "PS256" and header["x5t#S256"] == sha256
    assert claims["iss"] == claims["sub"] == "client-1" and claims["aud"].endswith("/oauth2/v2.0/token")
    assert claims["exp"] - claims["iat"] == 600 and claims["nbf"] == 1_000_000 and claims["jti"]
    assert certificate.sign_assertion("c", "a") != certificate.sign_assertion("c", "a"), "a new jti each time"
    assert "PRIVATE" not in repr(certificate) and "secret" not in repr(ClientSecret("secret"))


def test_managed_identity_assertion_is_fetched_once_while_fresh_and_again_near_expiry() -> None:
    now = time.time()
    answers = iter([{"access_token": "first", "expires_on": str(int(now + 3600))},
                    {"access_token": "second", "expires_on": str(int(now + 3600))}])
    credential = ManagedIdentityAssertion("mi-client", fetch=lambda: next(answers), refresh_margin=300)
    assert [credential.client_assertion() for _ in range(3)] == ["first"] * 3 and credential.fetches == 1
    credential._expires_on, credential._fetched_at = now + 200, now - 3400  # an hour-long token, 200 s left
    assert credential.client_assertion() == "second" and credential.fetches == 2


def test_a_platform_token_shorter_than_the_refresh_margin_is_still_reused() -> None:
    fetches = iter({"access_token": f"token-{i}", "expires_on": str(int(time.time() + 200))} for i in range(9))
    credential = ManagedIdentityAssertion("mi-client", fetch=lambda: next(fetches), refresh_margin=300)
    assert {credential.client_assertion() for _ in range(3)} == {"token-0"} and credential.fetches == 1


def test_certificate_assertions_are_reused_per_client_and_audience_until_a_minute_before_expiry() -> None:
    certificate = ClientCertificate.from_pem(self_signed_certificate("reuse"))
    first = certificate.form_fields("client-1", "https://login.example/t/oauth2/v2.0/token")["client_assertion"]
    assert certificate.form_fields("client-1", "https://login.example/t/oauth2/v2.0/token")["client_assertion"] == first
    assert certificate.form_fields("client-1", "https://other.example/token")["client_assertion"] != first
    key = ("client-1", "https://login.example/t/oauth2/v2.0/token")
    certificate._assertions[key] = (first, time.time() + 30)  # less than a minute left
    assert certificate.form_fields(*key)["client_assertion"] != first


def test_managed_identity_error_carries_the_endpoint_body_without_a_token() -> None:
    credential = ManagedIdentityAssertion("mi-client", fetch=lambda: {"error": "invalid_request",
                                                                      "error_description": "no identity"})
    with pytest.raises(RuntimeError, match="invalid_request: no identity"):
        credential.client_assertion()
    assert credential.fetches == 0


# -- against the emulator ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("credentials")


@pytest.fixture(scope="module")
def registration(emulator: Emulator) -> Registration:
    return register_workbook_server(emulator, "credentials test server", consent=True)


@pytest.fixture(scope="module")
def certificate(emulator: Emulator, registration: Registration) -> ClientCertificate:
    """A certificate registered on the server's app with Graph PATCH keyCredentials."""
    credential = ClientCertificate.from_pem(self_signed_certificate("credentials test"))
    der = x509.load_pem_x509_certificate(credential.certificate_pem).public_bytes(Encoding.DER)
    body = {"keyCredentials": [{"type": "AsymmetricX509Cert", "usage": "Verify", "key": base64.b64encode(der).decode(),
                                "displayName": "credentials test"}]}
    httpx.patch(f"{emulator.graph_url}/applications/{registration.object_id}", json=body,
                headers=admin_headers(emulator)).raise_for_status()
    return credential


@pytest.fixture(scope="module")
def trusted_identity(emulator: Emulator, registration: Registration) -> str:
    """The emulator's managed identity, trusted by the server's app as a federated identity credential."""
    identity = emulator.managed_identity
    body = {"name": "credentials-test", "issuer": f"{emulator.authority}/{emulator.tenant_id}/v2.0",
            "subject": identity.principal_id, "audiences": [EXCHANGE_AUDIENCE]}
    httpx.post(f"{emulator.graph_url}/applications/{registration.object_id}/federatedIdentityCredentials", json=body,
               headers=admin_headers(emulator)).raise_for_status()
    return identity.client_id


@pytest.fixture
def platform(emulator: Emulator) -> Iterator[None]:
    """This process as an App Service host: IDENTITY_ENDPOINT / IDENTITY_HEADER set for the test only."""
    with emulator.managed_identity_env():
        yield


@pytest.fixture(scope="module")
def analyst_token(emulator: Emulator, registration: Registration) -> str:
    return user_token(emulator, registration, user_upn("bruno"), REDIRECT_URI)


def credential_under_test(kind: str, certificate: ClientCertificate, identity_client_id: str,
                          registration: Registration) -> ServerCredential:
    return {"secret": lambda: ClientSecret(registration.secret), "certificate": lambda: certificate,
            "managed identity": lambda: ManagedIdentityAssertion(identity_client_id)}[kind]()


@pytest.mark.parametrize("kind", ["secret", "certificate", "managed identity"])
async def test_raw_and_msal_obo_with_each_credential(emulator: Emulator, registration: Registration, kind: str,
                                                     certificate: ClientCertificate, trusted_identity: str,
                                                     analyst_token: str, platform: None) -> None:
    credential = credential_under_test(kind, certificate, trusted_identity, registration)
    target = make_target(emulator, Path("/nonexistent"))
    raw = await raw_obo_exchange(target, registration.app_id, credential, analyst_token, GRAPH_USER_READ)
    via_msal = await asyncio.to_thread(confidential_client(target, registration.app_id, credential)
                                       .acquire_token_on_behalf_of, analyst_token, GRAPH_USER_READ)
    for token in (raw["access_token"], via_msal["access_token"]):
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["appid"] == registration.app_id and claims["upn"] == user_upn("bruno")
        assert claims["appidacr"] == ("1" if kind == "secret" else "2")


async def test_a_removed_certificate_is_refused_with_its_aadsts_code(emulator: Emulator, registration: Registration,
                                                                     analyst_token: str) -> None:
    stranger = ClientCertificate.from_pem(self_signed_certificate("never registered"))
    target = make_target(emulator, Path("/nonexistent"))
    with pytest.raises(OboError) as refused:
        await raw_obo_exchange(target, registration.app_id, stranger, analyst_token, GRAPH_USER_READ)
    assert refused.value.code == 700027 and refused.value.status == 401
    assert "client_assertion" not in refused.value.body


@pytest.mark.parametrize("kind", ["certificate", "managed identity"])
@pytest.mark.parametrize("obo", ["OboCache", "EntraOBOToken"])
async def test_workbook_server_signs_in_and_does_obo_without_a_secret(
        emulator: Emulator, folder: Path, registration: Registration, certificate: ClientCertificate,
        trusted_identity: str, platform: None, kind: str, obo: str) -> None:
    credential = credential_under_test(kind, certificate, trusted_identity, registration)
    no_secret = dataclasses.replace(registrations(registration), mcp_server_client_secret="not-the-secret")
    before = emulator.stats()["managed_identity"]["requests"]
    server = start_workbook_server(make_target(emulator, folder), name=f"cred-{kind}-{obo}".replace(" ", "-"),
                                   port=0, storage_dir=folder / f"{kind}-{obo}", registration=no_secret,
                                   credential=credential, obo=on_behalf_of if obo == "EntraOBOToken" else None)
    try:
        async with Client(server.mcp_url, auth=HeadlessOAuth(account=user_upn("bruno"))) as client:
            member = (await client.call_tool("check_group_membership", {"group_id": group_id("finance")})).data
            again = (await client.call_tool("check_group_membership", {"group_id": group_id("finance")})).data
    finally:
        server.stop()
    assert member["member"] is True and again["member"] is True
    assert isinstance(server.mcp.auth, CredentialAzureProvider) and server.mcp.auth.credential is credential
    if kind == "managed identity":
        assert credential.fetches == 1, "one managed-identity token for the sign-in and every OBO exchange"
        assert emulator.stats()["managed_identity"]["requests"] - before == 1


def test_the_upstream_client_sends_an_assertion_and_no_secret(certificate: ClientCertificate) -> None:
    client = AssertionUpstreamClient("client-1", certificate, token_endpoint="https://login.example/t/oauth2/v2.0/token")
    data: dict[str, str] = {}
    headers: dict[str, str] = {}
    client._apply_client_auth(data, headers)
    asyncio.run(client.aclose())
    assert data["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert "client_secret" not in data and "Authorization" not in headers
    assert jwt.decode(data["client_assertion"], options={"verify_signature": False})["iss"] == "client-1"


# -- where a managed identity is available -----------------------------------------------------------
def test_target_managed_identity_on_the_emulator_exports_its_endpoint(emulator: Emulator, folder: Path) -> None:
    saved = {k: os.environ.get(k) for k in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER")}
    try:
        assert make_target(emulator, folder).managed_identity() == emulator.managed_identity.client_id
        assert {k: os.environ[k] for k in saved} == emulator.managed_identity_environment()
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def test_target_managed_identity_on_a_tenant_depends_on_the_endpoint(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    tenant = Target(kind="tenant", tenant_id="t", authority="https://login.microsoftonline.com",
                    graph_url="https://graph.microsoft.com/v1.0", demo=None, secrets_file=tmp_path / ".env")
    monkeypatch.setenv("OBOKIT_ENV_FILE", str(tmp_path / ".env"))
    monkeypatch.delenv("IDENTITY_ENDPOINT", raising=False)
    monkeypatch.setenv("MANAGED_IDENTITY_CLIENT_ID", "mi-client-id")
    assert tenant.managed_identity() is None, "a laptop: no endpoint, no managed identity"
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "header")
    assert tenant.managed_identity() == "mi-client-id"
    monkeypatch.delenv("MANAGED_IDENTITY_CLIENT_ID")
    assert tenant.managed_identity() is None, "an endpoint, but no identity named"
