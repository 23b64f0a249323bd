"""Failures the other conformance tests do not cover, each surfaced by a real library with Entra's or Graph's shape.

tests/test_aadsts_errors.py covers 65001, 500131, 50013, 500133, 70011, 700016, 7000215, 7000229, 7000114
and 28000 through MSAL and azure-identity; tests/test_graph_sdk.py covers Graph 403/404 on a site,
`Request_UnsupportedQuery`, 401 invalid audience and the SDK's retry of a 429. Here: the Conditional
Access claims challenge (50076), an empty scope at code redemption (28003), a 429 the caller sees with its
`Retry-After`, a Graph 403 `Authorization_RequestDenied` for a missing delegated permission and a 401 for an
expired Graph token.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import msal
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import OnBehalfOfCredential
from azure.identity.aio import ClientSecretCredential
from azure.identity.aio import OnBehalfOfCredential as AsyncOnBehalfOfCredential
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_http.middleware.options import RetryHandlerOption
from msgraph.generated.models.o_data_errors.o_data_error import ODataError

from obokit.emulator import GRAPH_APP_ID, Emulator, user_id
from obokit.clients.graph import graph_client
from obokit.clients.headless import HeadlessBrowser
from tenant_setup import Registration, consented_api, grant_graph_consent, register_api, run_async, user_token, user_upn

pytestmark = [pytest.mark.filterwarnings("ignore:This class is deprecated:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:GetQueryParameters is deprecated:DeprecationWarning")]

REDIRECT_URI = "http://localhost:8768/callback"
GRAPH_USER_READ = "https://graph.microsoft.com/User.Read"


def confidential(emu: Emulator, reg: Registration) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        reg.app_id, client_credential=reg.secret, authority=emu.tenant_authority, instance_discovery=False
    )


def app_only_graph_token(emu: Emulator) -> str:
    """A Graph token of the seeded automation app (client credentials through MSAL)."""
    client_id, secret = emu.automation_credentials()
    app = msal.ConfidentialClientApplication(client_id, client_credential=secret,
                                             authority=emu.tenant_authority, instance_discovery=False)
    return app.acquire_token_for_client(["https://graph.microsoft.com/.default"])["access_token"]


@pytest.fixture(scope="module")
def api(emulator: Emulator) -> Registration:
    return consented_api(emulator, "faithful failures api", REDIRECT_URI)


@pytest.fixture(scope="module")
def bruno(emulator: Emulator, api: Registration) -> str:
    return user_token(emulator, api, user_upn("bruno"), REDIRECT_URI)


# -- AADSTS50076: Conditional Access asks for MFA, with a claims challenge -----------------------
def test_mfa_policy_is_a_claims_challenge_through_msal_then_cleared(emulator: Emulator, api: Registration, bruno: str) -> None:
    assert emulator.service is not None
    policy = emulator.service.conditional_access.require_mfa(user_id("bruno"), GRAPH_APP_ID)
    try:
        result = confidential(emulator, api).acquire_token_on_behalf_of(bruno, [GRAPH_USER_READ])
    finally:
        emulator.service.conditional_access.remove(policy)
    # `invalid_grant` + `suberror` + `claims`: the newest real capture (MSAL.js#5491, 2023)
    assert result["error"] == "invalid_grant" and result["suberror"] == "basic_action" and result["error_codes"] == [50076]
    assert result["error_description"].startswith(
        f"AADSTS50076: Due to a configuration change made by your administrator, or because you moved to a new "
        f"location, you must use multi-factor authentication to access '{GRAPH_APP_ID}'. Trace ID: ")
    challenge = json.loads(result["claims"])  # what the middle tier hands back to the client
    assert challenge == {"access_token": {"capolids": {"essential": True, "values": [policy]}}}
    after = confidential(emulator, api).acquire_token_on_behalf_of(bruno, [GRAPH_USER_READ])
    assert "access_token" in after, after.get("error_description")


def test_mfa_policy_applies_to_its_user_and_resource_only(emulator: Emulator, api: Registration, bruno: str) -> None:
    assert emulator.service is not None
    others = [emulator.service.conditional_access.require_mfa(user_id("chen"), GRAPH_APP_ID),
              emulator.service.conditional_access.require_mfa(user_id("bruno"), api.app_id)]
    try:
        result = confidential(emulator, api).acquire_token_on_behalf_of(bruno, [GRAPH_USER_READ])
    finally:
        for policy in others:
            emulator.service.conditional_access.remove(policy)
    assert "access_token" in result, result.get("error_description")


def test_emulator_reset_drops_mfa_policies(tmp_path: Path) -> None:
    emu = Emulator(tmp_path / "state").start()
    try:
        assert emu.service is not None
        policies, sign_in = emu.service.conditional_access, {"oid": user_id("bruno"), "amr": ["pwd"]}
        policies.require_mfa(user_id("bruno"), GRAPH_APP_ID)
        with pytest.raises(Exception, match="AADSTS50076"):
            policies.check(sign_in, GRAPH_APP_ID)
        emu.reset()
        assert policies.check(sign_in, GRAPH_APP_ID) is None
    finally:
        emu.close()


@pytest.mark.parametrize("flavour", ["sync", "aio"])
async def test_mfa_policy_through_azure_identity(emulator: Emulator, api: Registration, bruno: str, flavour: str) -> None:
    assert emulator.service is not None
    policy = emulator.service.conditional_access.require_mfa(user_id("bruno"), GRAPH_APP_ID)
    try:
        with pytest.raises(ClientAuthenticationError) as caught:
            if flavour == "sync":
                OnBehalfOfCredential(
                    emulator.tenant_id, api.app_id, client_secret=api.secret, user_assertion=bruno,
                    authority=emulator.authority, disable_instance_discovery=True,
                ).get_token(GRAPH_USER_READ)
            else:
                async with AsyncOnBehalfOfCredential(
                    emulator.tenant_id, api.app_id, client_secret=api.secret, user_assertion=bruno,
                    authority=emulator.authority,
                ) as credential:
                    await credential.get_token(GRAPH_USER_READ)
    finally:
        emulator.service.conditional_access.remove(policy)
    assert "AADSTS50076: Due to a configuration change" in str(caught.value)


# -- AADSTS28003: an authorization code redeemed without a scope ---------------------------------
def test_code_redeemed_without_scope_is_28003_only_when_ambiguous(emulator: Emulator, api: Registration) -> None:
    """A hand-written code exchange that drops `scope` (MSAL always sends one) gets the authorize request's
    scopes (MSAL-Python#125); only when those named two resources is it 400 invalid_request 28003."""
    app = confidential(emulator, api)
    for scopes, ok in (([api.scope], True), ([api.scope, GRAPH_USER_READ], False)):
        flow = app.initiate_auth_code_flow(scopes, redirect_uri=REDIRECT_URI, response_mode="form_post")
        callback = run_async(HeadlessBrowser(account=user_upn("chen")).sign_in(flow["auth_uri"], redirect_uri=REDIRECT_URI))
        code = dict(parse_qsl(urlsplit(callback).query))["code"]
        response = httpx.post(f"{emulator.tenant_authority}/oauth2/v2.0/token", data={
            "grant_type": "authorization_code", "client_id": api.app_id, "client_secret": api.secret, "code": code,
            "redirect_uri": REDIRECT_URI, "code_verifier": flow["code_verifier"]})
        body = response.json()
        if ok:
            assert response.status_code == 200 and "access_token" in body, body
            continue
        assert response.status_code == 400
        assert body["error"] == "invalid_request" and body["error_codes"] == [28003]
        assert body["error_description"].startswith(
            "AADSTS28003: Provided value for the input parameter scope cannot be empty when requesting an access "
            "token using the provided authorization code. Please specify a valid scope.")


# -- Graph 429 with Retry-After, as the caller sees it -------------------------------------------
def test_throttled_graph_call_is_429_with_retry_after(fresh_faults: Emulator) -> None:
    token = app_only_graph_token(fresh_faults)
    fresh_faults.faults.throttle("graph", count=1, retry_after=7)
    response = httpx.get(f"{fresh_faults.graph_url}/users",
                         headers={"Authorization": f"Bearer {token}", "client-request-id": "trace-me"})
    assert response.status_code == 429 and response.headers["retry-after"] == "7"
    error = response.json()["error"]
    assert error["code"] == "TooManyRequests" and error["message"] == "Please retry again later."
    assert error["innerError"]["code"] == "429" and error["innerError"]["status"] == "429"
    # Like every Graph error: the ids a support case asks for, and the caller's own id echoed.
    assert error["innerError"]["request-id"] == response.headers["request-id"]
    assert error["innerError"]["client-request-id"] == "trace-me" and error["innerError"]["date"]
    retried = httpx.get(f"{fresh_faults.graph_url}/users", headers={"Authorization": f"Bearer {token}"})
    assert retried.status_code == 200, "only the configured number of calls is throttled"


async def test_msgraph_sdk_without_retries_raises_the_429(fresh_faults: Emulator) -> None:
    client_id, secret = fresh_faults.automation_credentials()
    async with ClientSecretCredential(fresh_faults.tenant_id, client_id, secret, authority=fresh_faults.authority,
                                      disable_instance_discovery=True) as credential:
        client = graph_client(credential, base_url=fresh_faults.graph_url)
        await client.service_principals_with_app_id(GRAPH_APP_ID).get()  # the token is acquired before the fault
        fresh_faults.faults.throttle("graph", count=1, retry_after=5)
        config = RequestConfiguration(options=[RetryHandlerOption(max_retries=0, should_retry=False)])
        with pytest.raises(ODataError) as caught:
            await client.service_principals_with_app_id(GRAPH_APP_ID).get(request_configuration=config)
    assert caught.value.response_status_code == 429
    assert caught.value.error.code == "TooManyRequests"
    assert caught.value.response_headers["retry-after"] == "5"


# -- Graph 403 Authorization_RequestDenied and 401 for an expired token ---------------------------
async def test_delegated_call_without_the_permission_is_403(emulator: Emulator) -> None:
    """Consent for User.Read only: /users needs User.ReadBasic.All or more."""
    reg = register_api(emulator, name="faithful failures user.read only", redirect_uris=[REDIRECT_URI])
    grant_graph_consent(emulator, reg, scope="User.Read")
    assertion = user_token(emulator, reg, user_upn("bruno"), REDIRECT_URI)
    async with AsyncOnBehalfOfCredential(emulator.tenant_id, reg.app_id, client_secret=reg.secret,
                                         user_assertion=assertion, authority=emulator.authority) as credential:
        client = graph_client(credential, base_url=emulator.graph_url, scopes=["https://graph.microsoft.com/.default"])
        assert (await client.me.get()).user_principal_name == user_upn("bruno")
        with pytest.raises(ODataError) as caught:
            await client.users.get()
    assert caught.value.response_status_code == 403
    assert caught.value.error.code == "Authorization_RequestDenied"
    assert caught.value.error.message == "Insufficient privileges to complete the operation."


def test_expired_graph_token_is_401_lifetime_validation(emulator: Emulator) -> None:
    assert emulator.service is not None
    saved, emulator.service.tokens.lifetime = emulator.service.tokens.lifetime, 1
    try:
        token = app_only_graph_token(emulator)
    finally:
        emulator.service.tokens.lifetime = saved
    time.sleep(2.1)
    response = httpx.get(f"{emulator.graph_url}/users", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "InvalidAuthenticationToken"
    assert error["message"] == "Lifetime validation failed, the token is expired."
    assert {"date", "request-id", "client-request-id"} <= error["innerError"].keys()


# -- every failure above and in the other conformance tests has a troubleshooting row -----------
DOCUMENTED = ["AADSTS65001", "AADSTS500131", "AADSTS50013", "AADSTS500133", "AADSTS70011", "AADSTS7000215",
              "AADSTS700016", "AADSTS7000229", "AADSTS7000114", "AADSTS28000", "AADSTS28003", "AADSTS50076",
              "403 accessDenied", "404 itemNotFound", "Request_UnsupportedQuery", "403 Authorization_RequestDenied",
              "Invalid audience", "Lifetime validation failed", "429 TooManyRequests"]


def test_readme_troubleshooting_has_a_row_per_failure() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Troubleshooting", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and line.count(" | ") >= 2]
    missing = [case for case in DOCUMENTED if not any(case in row for row in rows)]
    assert missing == []
    assert all(len([c for c in row.split(" | ") if c.strip(" |")]) == 3 for row in rows), "what you see | why | fix"
