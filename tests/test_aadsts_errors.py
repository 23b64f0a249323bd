"""Every AADSTS error the workbook teaches, raised by the emulator and surfaced through the real libraries.

Each case is an On-Behalf-Of request made three ways: MSAL (`acquire_token_on_behalf_of`, whose result
dict carries `error` / `error_codes` / `suberror`), the sync azure-identity `OnBehalfOfCredential` and
its aio twin (both raise `ClientAuthenticationError` quoting `AADSTS<code>`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import jwt
import msal
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import OnBehalfOfCredential
from azure.identity.aio import OnBehalfOfCredential as AsyncOnBehalfOfCredential

from obokit.emulator import Emulator
from tenant_setup import Registration, grant_graph_consent, register_api, user_token, user_upn

REDIRECT_URI = "http://localhost:8767/callback"
GRAPH_USER_READ = "https://graph.microsoft.com/User.Read"


# -- helpers --------------------------------------------------------------------------------
def confidential(emu: Emulator, client_id: str, secret: str) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        client_id, client_credential=secret, authority=emu.tenant_authority, instance_discovery=False
    )


@dataclass
class Obo:
    client_id: str
    secret: str = field(repr=False)
    assertion: str = field(repr=False)  # a user's token: never in a failure message
    scopes: list[str]


@dataclass
class Failure:
    """What a library let the caller see of an error."""

    text: str  # error_description (MSAL) or the exception message (azure-identity)
    error: str | None = None  # MSAL only: the OAuth `error`
    codes: list[int] | None = None  # MSAL only
    suberror: str | None = None  # MSAL only


async def via_msal(emu: Emulator, req: Obo) -> Failure | None:
    result = confidential(emu, req.client_id, req.secret).acquire_token_on_behalf_of(req.assertion, req.scopes)
    if "access_token" in result:
        return None
    return Failure(result.get("error_description", ""), result.get("error"), result.get("error_codes"), result.get("suberror"))


async def via_azure_identity(emu: Emulator, req: Obo) -> Failure | None:
    credential = OnBehalfOfCredential(
        emu.tenant_id, req.client_id, client_secret=req.secret, user_assertion=req.assertion,
        authority=emu.authority, disable_instance_discovery=True,
    )
    try:
        credential.get_token(*req.scopes)
    except ClientAuthenticationError as exc:
        return Failure(str(exc))
    return None


async def via_azure_identity_aio(emu: Emulator, req: Obo) -> Failure | None:
    async with AsyncOnBehalfOfCredential(
        emu.tenant_id, req.client_id, client_secret=req.secret, user_assertion=req.assertion, authority=emu.authority
    ) as credential:
        try:
            await credential.get_token(*req.scopes)
        except ClientAuthenticationError as exc:
            return Failure(str(exc))
    return None


LIBRARIES: dict[str, Callable[[Emulator, Obo], Awaitable[Failure | None]]] = {
    "msal": via_msal,
    "azure-identity": via_azure_identity,
    "azure-identity-aio": via_azure_identity_aio,
}


def assert_surfaces(failure: Failure | None, library: str, code: int, error: str) -> None:
    assert failure is not None, f"expected AADSTS{code}, got a token"
    assert f"AADSTS{code}:" in failure.text
    if library == "msal":
        assert failure.codes == [code]
        assert failure.error == error


def unverified(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def tamper(token: str) -> str:
    """Change one character in the middle of the signature (the last one may only hold padding bits)."""
    header, payload, signature = token.split(".")
    i = len(signature) // 2
    swapped = "A" if signature[i] != "A" else "B"
    return ".".join([header, payload, signature[:i] + swapped + signature[i + 1:]])


# -- fixtures -------------------------------------------------------------------------------
@dataclass
class Tenant:
    api: Registration  # the middle tier, with Graph consent
    other: Registration  # another API in the tenant
    no_sp: Registration  # registered, but no service principal
    # tokens, left out of the repr that pytest prints on failure
    bruno: str = field(repr=False)  # bruno's token for `api`
    bruno_for_other: str = field(repr=False)  # bruno's token for `other`
    expired: str = field(repr=False)  # an expired token for `api`
    app_only: str = field(repr=False)  # an app-only (client credentials) token for `api`


@pytest.fixture(scope="module")
def tenant(emulator: Emulator) -> Tenant:
    api = register_api(emulator, name="aadsts middle tier", redirect_uris=[REDIRECT_URI])
    grant_graph_consent(emulator, api)
    other = register_api(emulator, name="aadsts other api", redirect_uris=[REDIRECT_URI])
    no_sp = register_api(emulator, name="aadsts no sp", redirect_uris=[REDIRECT_URI], service_principal=False)
    assert emulator.service is not None
    saved = emulator.service.tokens.lifetime
    emulator.service.tokens.lifetime = 1
    try:
        expired = user_token(emulator, api, user_upn("chen"), REDIRECT_URI)
    finally:
        emulator.service.tokens.lifetime = saved
    app_only = confidential(emulator, api.app_id, api.secret).acquire_token_for_client([f"api://{api.app_id}/.default"])
    assert "access_token" in app_only, app_only.get("error_description")
    tenant = Tenant(
        api, other, no_sp,
        bruno=user_token(emulator, api, user_upn("bruno"), REDIRECT_URI),
        bruno_for_other=user_token(emulator, other, user_upn("bruno"), REDIRECT_URI),
        expired=expired,
        app_only=app_only["access_token"],
    )
    time.sleep(max(0.0, unverified(expired)["exp"] + 0.2 - time.time()))  # let the 1 s token expire
    return tenant


# (code, error, request builder)
CASES: dict[str, tuple[int, str, Callable[[Tenant], Obo]]] = {
    "audience-is-another-app": (
        500131, "invalid_grant", lambda t: Obo(t.api.app_id, t.api.secret, t.bruno_for_other, [GRAPH_USER_READ])),
    "tampered-signature": (
        50013, "invalid_grant", lambda t: Obo(t.api.app_id, t.api.secret, tamper(t.bruno), [GRAPH_USER_READ])),
    "expired-assertion": (
        500133, "invalid_grant", lambda t: Obo(t.api.app_id, t.api.secret, t.expired, [GRAPH_USER_READ])),
    "misspelt-scope": (  # a scope Graph does not expose: 650053 (O365/python-o365#551)
        650053, "invalid_client",
        lambda t: Obo(t.api.app_id, t.api.secret, t.bruno, ["https://graph.microsoft.com/Nope.Nope"])),
    "unknown-resource": (
        70011, "invalid_scope", lambda t: Obo(t.api.app_id, t.api.secret, t.bruno, ["api://no-such-api/Nope"])),
    "unknown-client": (
        700016, "unauthorized_client", lambda t: Obo(str(uuid.uuid4()), t.api.secret, t.bruno, [GRAPH_USER_READ])),
    "wrong-secret": (
        7000215, "invalid_client", lambda t: Obo(t.api.app_id, "not-the-secret", t.bruno, [GRAPH_USER_READ])),
    "no-service-principal": (
        7000229, "invalid_client", lambda t: Obo(t.no_sp.app_id, t.no_sp.secret, t.bruno, [GRAPH_USER_READ])),
    "app-only-assertion": (
        7000114, "unauthorized_client", lambda t: Obo(t.api.app_id, t.api.secret, t.app_only, [GRAPH_USER_READ])),
    "two-resources": (
        28000, "invalid_request", lambda t: Obo(t.api.app_id, t.api.secret, t.bruno, [GRAPH_USER_READ, t.api.scope])),
}


# -- tests ----------------------------------------------------------------------------------
def test_the_fixtures_are_what_the_cases_claim(emulator: Emulator, tenant: Tenant) -> None:
    """Guards the cases: the 'good' inputs succeed, so each failure below is caused by the one thing changed."""
    assert unverified(tenant.app_only)["aud"] == tenant.api.app_id
    assert "scp" not in unverified(tenant.app_only) and unverified(tenant.app_only)["oid"] == tenant.api.sp_id
    assert unverified(tenant.expired)["exp"] <= time.time()
    assert unverified(tenant.bruno_for_other)["aud"] == tenant.other.app_id
    result = confidential(emulator, tenant.api.app_id, tenant.api.secret).acquire_token_on_behalf_of(
        tenant.bruno, [GRAPH_USER_READ]
    )
    assert "access_token" in result, result.get("error_description")


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("case", CASES)
async def test_aadsts_error_surfaces(emulator: Emulator, tenant: Tenant, case: str, library: str) -> None:
    code, error, build = CASES[case]
    failure = await LIBRARIES[library](emulator, build(tenant))
    assert_surfaces(failure, library, code, error)


def test_wrong_secret_is_http_401_with_entra_body(emulator: Emulator, tenant: Tenant) -> None:
    """The wire shape behind 7000215 (libraries hide the status): 401, WWW-Authenticate, Entra's JSON."""
    response = httpx.post(
        f"{emulator.tenant_authority}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": tenant.api.app_id, "client_secret": "nope",
              "scope": "https://graph.microsoft.com/.default"},
    )
    assert response.status_code == 401
    assert "www-authenticate" in response.headers
    body = response.json()
    assert body["error"] == "invalid_client" and body["error_codes"] == [7000215]
    assert body["error_description"].startswith("AADSTS7000215: ")
    assert {"timestamp", "trace_id", "correlation_id"} <= body.keys()


@pytest.mark.parametrize("library", LIBRARIES)
async def test_consent_required_then_granted(emulator: Emulator, library: str) -> None:
    reg = register_api(emulator, name=f"aadsts consent {library}", redirect_uris=[REDIRECT_URI])
    request = Obo(reg.app_id, reg.secret, user_token(emulator, reg, user_upn("bruno"), REDIRECT_URI), [GRAPH_USER_READ])
    failure = await LIBRARIES[library](emulator, request)
    assert_surfaces(failure, library, 65001, "invalid_grant")
    if library == "msal":
        assert failure.suberror == "consent_required"
    grant_graph_consent(emulator, reg, scope="User.Read")
    # A new client object each time (see MSAL's 60 s cache of identical 400s, tested below).
    assert await LIBRARIES[library](emulator, request) is None


def test_msal_replays_a_cached_400_for_60_seconds(emulator: Emulator) -> None:
    """MSAL's "UI required" cache: the same failing request on the same app object never reaches the server."""
    reg = register_api(emulator, name="aadsts msal cache", redirect_uris=[REDIRECT_URI])
    assertion = user_token(emulator, reg, user_upn("chen"), REDIRECT_URI)
    app = confidential(emulator, reg.app_id, reg.secret)

    def obo_requests() -> int:
        return emulator.stats()["token_requests"].get("urn:ietf:params:oauth:grant-type:jwt-bearer", 0)

    before = obo_requests()
    assert app.acquire_token_on_behalf_of(assertion, [GRAPH_USER_READ])["error_codes"] == [65001]
    grant_graph_consent(emulator, reg, scope="User.Read")
    assert app.acquire_token_on_behalf_of(assertion, [GRAPH_USER_READ])["error_codes"] == [65001]
    assert obo_requests() == before + 1  # the retry was answered from MSAL's cache
    fresh = confidential(emulator, reg.app_id, reg.secret).acquire_token_on_behalf_of(assertion, [GRAPH_USER_READ])
    assert "access_token" in fresh and obo_requests() == before + 2
