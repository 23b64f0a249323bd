"""Conformance of the emulator's identity side with the real MSAL (no mocks).

Every flow the workbook relies on is driven through `msal` exactly as an app would use it against
login.microsoftonline.com: auth code + PKCE (signed in by the headless browser), refresh, On-Behalf-Of,
client credentials and device code. Access tokens are verified with the emulator's JWKS over HTTPS.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import jwt
import msal
import pytest

from obokit.emulator import Emulator
from obokit.clients.headless import HeadlessBrowser, parse_forms
from tenant_setup import consented_api, register_api, Registration, run_async, user_upn

REDIRECT_URI = "http://localhost:8765/callback"
GRAPH = "https://graph.microsoft.com"
GRAPH_USER_READ = f"{GRAPH}/User.Read"


# -- helpers --------------------------------------------------------------------------------
def confidential(emu: Emulator, client_id: str, secret: str) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        client_id, client_credential=secret, authority=emu.tenant_authority, instance_discovery=False
    )


def sign_in(
    app: msal.ClientApplication, scopes: list[str], upn: str, *, response_mode: str = "form_post"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Auth code + PKCE: MSAL builds the URL, the headless browser signs in, MSAL redeems. Returns (flow, result)."""
    flow = app.initiate_auth_code_flow(scopes, redirect_uri=REDIRECT_URI, login_hint=upn, response_mode=response_mode)
    callback = run_async(HeadlessBrowser(account=upn).sign_in(flow["auth_uri"], redirect_uri=REDIRECT_URI))
    auth_response = dict(parse_qsl(urlsplit(callback).query))
    snapshot = dict(flow)  # MSAL consumes the flow; keep what the tests inspect
    return snapshot, app.acquire_token_by_auth_code_flow(flow, auth_response)


def unverified(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def jwks_client(emu: Emulator) -> jwt.PyJWKClient:
    return jwt.PyJWKClient(
        f"{emu.tenant_authority}/discovery/v2.0/keys", ssl_context=ssl.create_default_context(cafile=emu.ca_bundle)
    )


def verify(emu: Emulator, token: str, *, audience: str, issuer: str) -> dict[str, Any]:
    key = jwks_client(emu).get_signing_key_from_jwt(token)
    return jwt.decode(
        token, key.key, algorithms=["RS256"], audience=audience, issuer=issuer,
        options={"require": ["exp", "nbf", "iat", "aud", "iss"]},
    )


def assert_ok(result: dict[str, Any]) -> None:
    assert "access_token" in result, f"{result.get('error')}: {result.get('error_description')}"


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api(emulator: Emulator) -> Registration:
    """The MCP server's registration: v2 tokens, a redirect URI, admin consent for Graph."""
    return consented_api(emulator, "msal conformance api", REDIRECT_URI)


@pytest.fixture(scope="module")
def bruno_login(emulator: Emulator, api: Registration) -> tuple[msal.ConfidentialClientApplication, dict, dict]:
    app = confidential(emulator, api.app_id, api.secret)
    flow, result = sign_in(app, [api.scope], user_upn("bruno"))
    assert_ok(result)
    return app, flow, result


# -- unit: the headless browser's form parser -----------------------------------------------
def test_parse_forms_reads_fields_radios_and_buttons() -> None:
    html = (
        "<p>before</p><form method='POST' action='/x'>"
        "<input type='hidden' name='txn' value='t1'><input name='nameless-type' value='v'>"
        "<input type='radio' name='account' value='a@x'><input type='radio' name='account' value='b@x' checked>"
        "<input type='checkbox' name='remember' value='1'><input type='checkbox' name='keep' value='1' checked>"
        "<input type='text' value='no name'>"
        "<button type='submit' name='action' value='accept'>OK</button><button type='button' name='x'>no</button>"
        "</form><form action='/second'><input type='submit' name='go' value='yes'></form>"
    )
    first, second = parse_forms(html)
    assert (first.action, first.method) == ("/x", "post")
    assert first.fields == {"txn": "t1", "nameless-type": "v", "account": "b@x", "keep": "1"}
    assert first.radios == {"account": ["a@x", "b@x"]}
    assert first.buttons == [("action", "accept")]
    assert (second.action, second.method, second.buttons) == ("/second", "get", [("go", "yes")])
    assert parse_forms("<input name='orphan'>") == []


# -- authorization code + PKCE --------------------------------------------------------------
def test_auth_code_pkce_gives_v2_token_for_the_chosen_user(emulator: Emulator, api: Registration, bruno_login) -> None:
    _app, flow, result = bruno_login
    assert flow["code_verifier"] and "code_challenge=" in flow["auth_uri"]
    assert "code_challenge_method=S256" in flow["auth_uri"] and "response_mode=form_post" in flow["auth_uri"]
    # The id token echoes the (hashed) nonce MSAL sent; MSAL itself already refused any mismatch.
    assert result["id_token_claims"]["nonce"] == hashlib.sha256(flow["nonce"].encode()).hexdigest()
    assert result["id_token_claims"]["aud"] == api.app_id
    assert result["id_token_claims"]["preferred_username"] == user_upn("bruno")
    info = json.loads(base64.urlsafe_b64decode(result["client_info"] + "=="))
    assert info["utid"] == emulator.tenant_id and info["uid"] == result["id_token_claims"]["oid"]
    assert result.get("refresh_token")

    claims = verify(
        emulator, result["access_token"], audience=api.app_id, issuer=f"{emulator.authority}/{emulator.tenant_id}/v2.0"
    )
    assert claims["ver"] == "2.0" and claims["tid"] == emulator.tenant_id
    assert claims["scp"] == "mcp-access"
    assert claims["azp"] == api.app_id and claims["azpacr"] == "1"
    assert claims["oid"] == result["id_token_claims"]["oid"]
    assert claims["preferred_username"] == user_upn("bruno")
    assert claims["nbf"] <= time.time() < claims["exp"]
    assert "upn" not in claims and "appid" not in claims  # v1-only claims


def test_msal_rejects_an_id_token_with_the_wrong_nonce(emulator: Emulator, api: Registration) -> None:
    app = confidential(emulator, api.app_id, api.secret)
    flow = app.initiate_auth_code_flow([api.scope], redirect_uri=REDIRECT_URI, response_mode="form_post")
    callback = run_async(HeadlessBrowser(account=user_upn("chen")).sign_in(flow["auth_uri"], redirect_uri=REDIRECT_URI))
    flow["nonce"] = "not-the-nonce-that-was-sent"
    with pytest.raises(RuntimeError, match="nonce"):
        app.acquire_token_by_auth_code_flow(flow, dict(parse_qsl(urlsplit(callback).query)))


@pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended")
def test_unset_token_version_gives_v1_tokens(emulator: Emulator) -> None:
    reg = register_api(emulator, name="msal v1 api", redirect_uris=[REDIRECT_URI], token_version=None)
    # response_mode=query here (the others use form_post): both ways back to the app work.
    _flow, result = sign_in(
        confidential(emulator, reg.app_id, reg.secret), [reg.scope], user_upn("chen"), response_mode="query"
    )
    assert_ok(result)
    claims = verify(
        emulator, result["access_token"], audience=f"api://{reg.app_id}", issuer=f"https://sts.windows.net/{emulator.tenant_id}/"
    )
    assert claims["ver"] == "1.0"
    assert claims["appid"] == reg.app_id and claims["upn"] == user_upn("chen")
    assert jwt.get_unverified_header(result["access_token"]).get("x5t")
    with pytest.raises(jwt.InvalidIssuerError):  # what fastmcp's v2-only verifier runs into
        verify(emulator, result["access_token"], audience=f"api://{reg.app_id}",
               issuer=f"{emulator.authority}/{emulator.tenant_id}/v2.0")


# -- refresh --------------------------------------------------------------------------------
def test_silent_force_refresh_redeems_the_refresh_token(emulator: Emulator, api: Registration, bruno_login) -> None:
    app, _flow, first = bruno_login
    (account,) = app.get_accounts(username=user_upn("bruno"))
    cached = app.acquire_token_silent([api.scope], account=account)
    assert cached["access_token"] == first["access_token"]  # served from MSAL's cache
    before = emulator.stats()["token_requests"].get("refresh_token", 0)
    refreshed = app.acquire_token_silent([api.scope], account=account, force_refresh=True)
    assert_ok(refreshed)
    assert emulator.stats()["token_requests"].get("refresh_token", 0) == before + 1
    assert refreshed["access_token"] != first["access_token"]
    assert unverified(refreshed["access_token"])["oid"] == unverified(first["access_token"])["oid"]


# -- On-Behalf-Of ---------------------------------------------------------------------------
def test_obo_for_graph_then_call_me(emulator: Emulator, api: Registration, bruno_login) -> None:
    _app, _flow, login = bruno_login
    middle_tier = confidential(emulator, api.app_id, api.secret)
    result = middle_tier.acquire_token_on_behalf_of(login["access_token"], [GRAPH_USER_READ])
    assert_ok(result)
    # A Graph token is Graph's to validate: its `nonce` header makes a standard signature check fail
    # (tests/test_fidelity.py); read its claims unverified.
    assert "nonce" in jwt.get_unverified_header(result["access_token"])
    claims = unverified(result["access_token"])
    assert claims["iss"] == f"https://sts.windows.net/{emulator.tenant_id}/" and claims["aud"] == GRAPH
    assert claims["ver"] == "1.0" and claims["appid"] == api.app_id
    assert "User.Read" in claims["scp"].split()
    assert claims["upn"] == user_upn("bruno")
    assert claims["oid"] == unverified(login["access_token"])["oid"]

    me = httpx.get(f"{emulator.graph_url}/me", headers={"Authorization": f"Bearer {result['access_token']}"})
    assert me.status_code == 200, me.text
    assert me.json()["userPrincipalName"] == user_upn("bruno")
    assert me.json()["id"] == claims["oid"]


def test_obo_token_is_not_accepted_by_graph_when_it_is_the_apis_own_token(emulator: Emulator, bruno_login) -> None:
    """Token passthrough: the MCP token (aud = the API) is refused by Graph."""
    _app, _flow, login = bruno_login
    me = httpx.get(f"{emulator.graph_url}/me", headers={"Authorization": f"Bearer {login['access_token']}"})
    assert me.status_code == 401
    assert me.json()["error"]["code"] == "InvalidAuthenticationToken"


# -- client credentials ---------------------------------------------------------------------
def test_client_credentials_has_roles_and_no_user(emulator: Emulator) -> None:
    client_id, secret = emulator.automation_credentials()
    result = confidential(emulator, client_id, secret).acquire_token_for_client([f"{GRAPH}/.default"])
    assert_ok(result)
    assert "refresh_token" not in result and "id_token" not in result
    claims = unverified(result["access_token"])  # a Graph token: Graph's to validate
    assert claims["iss"] == f"https://sts.windows.net/{emulator.tenant_id}/" and claims["aud"] == GRAPH
    assert claims["roles"] and all(isinstance(r, str) for r in claims["roles"])
    assert claims["idtyp"] == "app" and "scp" not in claims and claims["appid"] == client_id


# -- device code ----------------------------------------------------------------------------
def test_device_code_with_the_graph_cli_public_client(emulator: Emulator) -> None:
    app = msal.PublicClientApplication(
        emulator.graph_cli_client_id, authority=emulator.tenant_authority, instance_discovery=False
    )
    flow = app.initiate_device_flow(scopes=[GRAPH_USER_READ])
    assert "user_code" in flow, flow
    assert flow["verification_uri"] == f"{emulator.authority}/devicelogin"
    approve = httpx.post(
        f"{emulator.authority}/devicelogin",
        data={"user_code": flow["user_code"], "account": user_upn("chen"), "action": "accept"},
    )
    assert approve.status_code == 200, approve.text
    started = time.monotonic()
    result = app.acquire_token_by_device_flow(flow)
    assert time.monotonic() - started < 4  # approved first, so no polling wait
    assert_ok(result)
    assert result["id_token_claims"]["preferred_username"] == user_upn("chen")
    claims = unverified(result["access_token"])
    assert claims["aud"] == GRAPH and claims["upn"] == user_upn("chen")
    assert claims["appid"] == emulator.graph_cli_client_id and claims["appidacr"] == "0"
    assert app.get_accounts(username=user_upn("chen"))


def test_device_code_declined_surfaces_authorization_declined(emulator: Emulator) -> None:
    app = msal.PublicClientApplication(
        emulator.graph_cli_client_id, authority=emulator.tenant_authority, instance_discovery=False
    )
    flow = app.initiate_device_flow(scopes=[GRAPH_USER_READ])
    httpx.post(f"{emulator.authority}/devicelogin", data={"user_code": flow["user_code"], "action": "cancel"})
    result = app.acquire_token_by_device_flow(flow)
    assert result.get("error") == "authorization_declined"


# -- no traffic left the machine ------------------------------------------------------------
