"""The emulator answers as Entra and Graph do where the fidelity audit found it kinder or different.

Each test names its public source (the numbers are those of ../shared/reference/emulator-fidelity-audit.md).
"""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest
from tenant_setup import (
    Registration,
    admin_headers,
    grant_graph_consent,
    register_api,
    run_async,
    user_token,
    user_upn,
)

from obokit.emulator import GRAPH_APP_ID, Emulator
from obokit.clients.headless import HeadlessBrowser, SignInError
from obokit.server.obo import JWT_BEARER, entra_message

pytestmark = pytest.mark.emulator

REDIRECT = "http://localhost/callback"
GRAPH_URL = "https://graph.microsoft.com"
BASE64URL_ID = re.compile(r"^[A-Za-z0-9_-]{43}$")


@pytest.fixture(scope="module")
def api(emulator: Emulator) -> Registration:
    registration = register_api(emulator, name="fidelity api", redirect_uris=[REDIRECT])
    grant_graph_consent(emulator, registration)
    return registration


@pytest.fixture(scope="module")
def bruno_token(emulator: Emulator, api: Registration) -> str:
    return user_token(emulator, api, user_upn("bruno"), REDIRECT)


def token_post(emu: Emulator, form: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{emu.tenant_authority}/oauth2/v2.0/token", data=form)


def obo(emu: Emulator, api: Registration, assertion: str, scope: str) -> httpx.Response:
    return token_post(emu, {"grant_type": JWT_BEARER, "client_id": api.app_id, "client_secret": api.secret,
                            "assertion": assertion, "scope": scope, "requested_token_use": "on_behalf_of"})


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def app_only(emu: Emulator, api: Registration, scope: str) -> httpx.Response:
    return token_post(emu, {"grant_type": "client_credentials", "client_id": api.app_id,
                            "client_secret": api.secret, "scope": scope})


# -- tokens -----------------------------------------------------------------------------------------

def test_idtyp_only_where_entra_puts_it(emulator: Emulator, api: Registration, bruno_token: str) -> None:
    """[16] `idtyp` is an optional claim of custom APIs, and then only in app-only tokens; [18] Graph sets it."""
    assert "idtyp" not in claims(bruno_token)
    assert "idtyp" not in claims(app_only(emulator, api, f"api://{api.app_id}/.default").json()["access_token"])
    with httpx.Client(base_url=emulator.graph_url, headers=admin_headers(emulator)) as graph:
        graph.patch(f"/applications/{api.object_id}",
                    json={"optionalClaims": {"accessToken": [{"name": "idtyp"}]}}).raise_for_status()
    try:
        opted = claims(app_only(emulator, api, f"api://{api.app_id}/.default").json()["access_token"])
        assert opted["idtyp"] == "app"
        assert "idtyp" not in claims(user_token(emulator, api, user_upn("bruno"), REDIRECT))
    finally:
        with httpx.Client(base_url=emulator.graph_url, headers=admin_headers(emulator)) as graph:
            graph.patch(f"/applications/{api.object_id}", json={"optionalClaims": None}).raise_for_status()
    graph_token = obo(emulator, api, bruno_token, f"{GRAPH_URL}/User.Read").json()["access_token"]
    assert claims(graph_token)["idtyp"] == "user"


def test_graph_tokens_fail_standard_signature_validation(emulator: Emulator, api: Registration, bruno_token: str) -> None:
    """[17][19] Graph tokens carry a `nonce` header; their signature covers its SHA-256, so a standard JWT
    library refuses them. Only Graph validates its tokens: a server must never try."""
    graph_token = obo(emulator, api, bruno_token, f"{GRAPH_URL}/User.Read").json()["access_token"]
    header = jwt.get_unverified_header(graph_token)
    assert list(header) == ["typ", "nonce", "alg", "x5t", "kid"]
    jwks = httpx.get(f"{emulator.authority}/{emulator.tenant_id}/discovery/v2.0/keys").json()
    key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == header["kid"])).key
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(graph_token, key, algorithms=["RS256"], audience=GRAPH_URL)
    me = httpx.get(f"{emulator.graph_url}/me", headers={"Authorization": f"Bearer {graph_token}"})
    assert me.status_code == 200, me.text  # Graph itself accepts it
    assert "nonce" not in jwt.get_unverified_header(bruno_token), "tokens for your own API have no nonce"


@pytest.mark.parametrize(("scope", "aud"), [("User.Read", GRAPH_APP_ID), (f"{GRAPH_URL}/User.Read", GRAPH_URL)])
def test_graph_aud_follows_how_the_scope_was_written(emulator: Emulator, api: Registration, bruno_token: str,
                                                     scope: str, aud: str) -> None:
    """[18][32] `User.Read` gives Graph's app id as `aud`, `https://graph.microsoft.com/User.Read` its URL."""
    graph_token = obo(emulator, api, bruno_token, scope).json()["access_token"]
    assert claims(graph_token)["aud"] == aud
    me = httpx.get(f"{emulator.graph_url}/me", headers={"Authorization": f"Bearer {graph_token}"})
    assert me.status_code == 200, me.text


def test_scp_lists_every_consented_scope(emulator: Emulator, api: Registration, bruno_token: str) -> None:
    """[18] asked for User.Read, a real token listed `email Mail.Read profile User.Read openid`."""
    graph_token = obo(emulator, api, bruno_token, f"{GRAPH_URL}/User.Read").json()["access_token"]
    assert set(claims(graph_token)["scp"].split()) == {
        "User.Read", "email", "offline_access", "openid", "profile", "GroupMember.Read.All", "Sites.Read.All"}


def test_client_credentials_answer_has_no_scope(emulator: Emulator, api: Registration) -> None:
    """[6][20] the client-credentials response: token_type, expires_in, ext_expires_in, access_token."""
    body = app_only(emulator, api, f"{GRAPH_URL}/.default").json()
    assert set(body) == {"token_type", "expires_in", "ext_expires_in", "access_token"}


# -- error bodies -----------------------------------------------------------------------------------

def test_app_only_assertion_is_unauthorized_client(emulator: Emulator, api: Registration) -> None:
    """[9] AADSTS7000114's `error` is `unauthorized_client`."""
    assertion = app_only(emulator, api, f"api://{api.app_id}/.default").json()["access_token"]
    body = obo(emulator, api, assertion, f"{GRAPH_URL}/User.Read").json()
    assert (body["error"], body["error_codes"]) == ("unauthorized_client", [7000114])


def test_a_misspelt_scope_of_an_existing_resource_is_650053(emulator: Emulator, api: Registration,
                                                            bruno_token: str) -> None:
    """[30] "asked for scope 'X' that doesn't exist on the resource '00000003-…'", `invalid_client`."""
    response = obo(emulator, api, bruno_token, f"{GRAPH_URL}/User.Reed")
    body = response.json()
    assert response.status_code == 400 and body["error"] == "invalid_client" and body["error_codes"] == [650053]
    assert entra_message(body["error_description"]) == (
        f"AADSTS650053: The application 'fidelity api' asked for scope 'User.Reed' that doesn't exist on the "
        f"resource '{GRAPH_APP_ID}'. Contact the app vendor.")
    unknown_resource = obo(emulator, api, bruno_token, "api://no-such-api/x").json()
    assert unknown_resource["error_codes"] == [70011], "a scope of no known resource stays 70011 [6]"


def test_error_description_parts_are_separated_by_spaces(emulator: Emulator, api: Registration) -> None:
    """[14][15] 2024 raw bodies: "AADSTS…: message Trace ID: … Correlation ID: … Timestamp: …" (no CRLF)."""
    body = token_post(emulator, {"grant_type": "client_credentials", "client_id": api.app_id,
                                 "client_secret": "wrong", "scope": f"{GRAPH_URL}/.default"}).json()
    description = body["error_description"]
    assert "\r" not in description and "\n" not in description
    assert re.fullmatch(r"AADSTS7000215: .+ Trace ID: [0-9a-f-]{36} Correlation ID: [0-9a-f-]{36} "
                        r"Timestamp: \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", description)
    message = entra_message(description)
    assert message.startswith("AADSTS7000215: Invalid client secret") and "Trace ID" not in message
    older = "AADSTS65001: The user has not consented.\r\nTrace ID: x\r\nCorrelation ID: y\r\nTimestamp: z"
    assert entra_message(older) == "AADSTS65001: The user has not consented."


# -- device code --------------------------------------------------------------------------------------

def test_device_code_errors(emulator: Emulator, api: Registration) -> None:
    """[22] /devicecode needs `scope` (900144); pending, unknown and expired codes as Entra names them."""
    devicecode = f"{emulator.tenant_authority}/oauth2/v2.0/devicecode"
    no_scope = httpx.post(devicecode, data={"client_id": api.app_id}).json()
    assert no_scope["error_codes"] == [900144] and "'scope'" in no_scope["error_description"]
    flow = httpx.post(devicecode, data={"client_id": api.app_id, "scope": f"{GRAPH_URL}/User.Read"}).json()

    def poll(code: str) -> dict:
        return token_post(emulator, {"grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                                     "client_id": api.app_id, "client_secret": api.secret, "device_code": code}).json()

    pending = poll(flow["device_code"])
    assert (pending["error"], pending["error_codes"]) == ("authorization_pending", [70016])
    assert entra_message(pending["error_description"]) == (
        "AADSTS70016: OAuth 2.0 device flow error. Authorization is pending. Continue polling.")
    assert poll("not-a-device-code")["error"] == "bad_verification_code"
    emulator.service.device_flows[flow["device_code"]].expires_at = time.time() - 1
    expired = poll(flow["device_code"])
    assert (expired["error"], expired["error_codes"]) == ("expired_token", [70020])


# -- authorization code -------------------------------------------------------------------------------

def authorize_url(emu: Emulator, api: Registration, scope: str, **extra: str) -> str:
    query = {"client_id": api.app_id, "response_type": "code", "redirect_uri": REDIRECT, "scope": scope,
             "state": "s", **extra}
    return f"{emu.tenant_authority}/oauth2/v2.0/authorize?{urlencode(query)}"


def signed_in_code(emu: Emulator, api: Registration, scope: str, **extra: str) -> str:
    callback = run_async(HeadlessBrowser(user_upn("bruno")).sign_in(authorize_url(emu, api, scope, **extra),
                                                                    redirect_uri=REDIRECT))
    return parse_qs(urlsplit(callback).query)["code"][0]


def redeem(emu: Emulator, api: Registration, code: str, **extra: str) -> httpx.Response:
    return token_post(emu, {"grant_type": "authorization_code", "client_id": api.app_id, "client_secret": api.secret,
                            "code": code, "redirect_uri": REDIRECT, **extra})


def test_a_code_redeemed_without_scope_gets_the_authorize_requests_scopes(emulator: Emulator,
                                                                          api: Registration) -> None:
    """[11] `scope` is optional when redeeming a code; 28003 only when the authorize request named several
    resources, so that the token's resource is ambiguous."""
    body = redeem(emulator, api, signed_in_code(emulator, api, f"{api.scope} openid")).json()
    assert claims(body["access_token"])["aud"] == api.app_id and "id_token" in body
    several = f"{api.scope} {GRAPH_URL}/User.Read openid"
    ambiguous = redeem(emulator, api, signed_in_code(emulator, api, several)).json()
    assert ambiguous["error_codes"] == [28003]
    assert "cannot be empty" in ambiguous["error_description"] and "Please specify" in ambiguous["error_description"]


def test_first_consent_creates_the_missing_service_principal(emulator: Emulator) -> None:
    """[34] a user's consent creates the app's service principal in the tenant."""
    reg = register_api(emulator, name="fidelity no sp", redirect_uris=[REDIRECT], service_principal=False)
    with httpx.Client(base_url=emulator.graph_url, headers=admin_headers(emulator)) as graph:
        assert graph.get(f"/servicePrincipals(appId='{reg.app_id}')").status_code == 404
        body = redeem(emulator, reg, signed_in_code(emulator, reg, f"{GRAPH_URL}/User.Read openid")).json()
        assert "access_token" in body, body
        assert graph.get(f"/servicePrincipals(appId='{reg.app_id}')").status_code == 200


def test_resource_must_be_an_identifier_uri_of_the_scopes_app(emulator: Emulator, api: Registration) -> None:
    """RFC 8707 `resource` (the MCP SDK sends it): since March 2026 Entra refuses one that is not an
    identifier URI of the app owning the scopes, AADSTS9010010 `invalid_target` (microsoft/vscode#321249),
    at /authorize by redirect before any sign-in (anthropics/claude-ai-mcp#324) and at /token."""
    wrong = "http://localhost:8000/mcp"
    with pytest.raises(SignInError, match="invalid_target.*AADSTS9010010"):
        signed_in_code(emulator, api, api.scope, resource=wrong)
    with pytest.raises(SignInError, match="AADSTS9010010"):  # Graph scopes match no resource
        signed_in_code(emulator, api, f"{GRAPH_URL}/User.Read", resource=f"api://{api.app_id}")
    code = signed_in_code(emulator, api, api.scope, resource=f"api://{api.app_id}")
    mismatch = redeem(emulator, api, code, scope=api.scope, resource=f"api://{api.app_id}/")
    assert mismatch.status_code == 400 and mismatch.json()["error"] == "invalid_target"
    assert mismatch.json()["error_codes"] == [9010010]
    code = signed_in_code(emulator, api, api.scope, resource=f"api://{api.app_id}")
    assert "access_token" in redeem(emulator, api, code, scope=api.scope, resource=f"api://{api.app_id}").json()


# -- Graph ----------------------------------------------------------------------------------------------

def test_grant_and_assignment_ids_are_base64url(emulator: Emulator) -> None:
    """[29] oauth2PermissionGrant and appRoleAssignment ids are 43-character base64url strings, not GUIDs."""
    api = register_api(emulator, name="fidelity ids", redirect_uris=[REDIRECT])
    grant_id = grant_graph_consent(emulator, api, "User.Read")
    assert BASE64URL_ID.match(grant_id), grant_id
    with httpx.Client(base_url=emulator.graph_url, headers=admin_headers(emulator)) as graph:
        graph.delete(f"/oauth2PermissionGrants/{grant_id}").raise_for_status()
        role = {"id": "5f7a8c43-31c5-4a43-9b0e-4a6d9bd0a001", "value": "Fidelity.Read", "allowedMemberTypes": ["User"],
                "displayName": "r", "description": "r", "isEnabled": True}
        graph.patch(f"/applications/{api.object_id}", json={"appRoles": [role]}).raise_for_status()
        bruno = graph.get(f"/users/{user_upn('bruno')}").raise_for_status().json()
        assignment = graph.post(f"/servicePrincipals/{api.sp_id}/appRoleAssignedTo", json={
            "principalId": bruno["id"], "resourceId": api.sp_id, "appRoleId": role["id"]}).raise_for_status().json()
        assert BASE64URL_ID.match(assignment["id"]), assignment["id"]
        graph.delete(f"/servicePrincipals/{api.sp_id}/appRoleAssignedTo/{assignment['id']}").raise_for_status()


def test_a_bare_application_gets_v2_tokens(emulator: Emulator) -> None:
    """[27] POST /applications with a display name only: `AzureADandPersonalMicrosoftAccount` with
    `requestedAccessTokenVersion: 2`, the only version that audience allows."""
    with httpx.Client(base_url=emulator.graph_url, headers=admin_headers(emulator)) as graph:
        app = graph.post("/applications", json={"displayName": "fidelity bare"}).raise_for_status().json()
        graph.delete(f"/applications/{app['id']}").raise_for_status()
    assert app["signInAudience"] == "AzureADandPersonalMicrosoftAccount"
    assert app["api"]["requestedAccessTokenVersion"] == 2


def test_transitive_member_of_advanced_queries_need_the_header_and_count(emulator: Emulator, api: Registration,
                                                                          bruno_token: str) -> None:
    """[23] a cast or `$filter` on transitiveMemberOf needs `ConsistencyLevel: eventual` AND `$count=true`."""
    graph_token = obo(emulator, api, bruno_token, f"{GRAPH_URL}/GroupMember.Read.All").json()["access_token"]
    bearer = {"Authorization": f"Bearer {graph_token}"}
    eventual = bearer | {"ConsistencyLevel": "eventual"}
    cast = f"{emulator.graph_url}/me/transitiveMemberOf/microsoft.graph.group"
    finance = httpx.get(f"{emulator.graph_url}/groups", headers=bearer,
                        params={"$filter": "displayName eq 'Finance'"}).json()["value"][0]["id"]
    cases = {
        "cast, nothing": httpx.get(cast, headers=bearer),
        "cast, header only": httpx.get(cast, headers=eventual),
        "cast, $count only": httpx.get(cast, headers=bearer, params={"$count": "true"}),
        "$filter, header only": httpx.get(cast, headers=eventual, params={"$filter": f"id eq '{finance}'"}),
    }
    for label, response in cases.items():
        assert response.status_code == 400, label
        assert response.json()["error"]["code"] == "Request_UnsupportedQuery", label
    both = httpx.get(cast, headers=eventual, params={"$filter": f"id eq '{finance}'", "$count": "true"})
    assert both.status_code == 200 and both.json()["@odata.count"] == 1
    plain = httpx.get(f"{emulator.graph_url}/me/transitiveMemberOf", headers=bearer, params={"$count": "true"})
    assert plain.status_code == 200 and "@odata.count" not in plain.json(), "[23] $count alone is ignored"
