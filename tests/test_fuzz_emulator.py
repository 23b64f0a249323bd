"""Malformed requests get Entra- or Graph-shaped 4xx answers from the emulator, never a 500 or a traceback.

Hypothesis drives the token endpoint (random forms, grant types, missing fields, garbage assertions, huge and
unicode values, odd content types and Basic headers), /authorize query strings and forms, and the Graph host
(random paths, OData query options, JSON bodies, bad bearer tokens). A private emulator is used, because
the Graph fuzzing calls write endpoints with an admin token. Each strategy is bounded (`EXAMPLES`).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import msal
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from obokit.emulator import GRAPH_APP_ID, Emulator, group_id, user_id
from tenant_setup import consented_api, user_token, user_upn

# CI runs a fixed, reproducible sample; OBOKIT_FUZZ_EXAMPLES=5000 explores with random seeds.
EXAMPLES = int(os.environ.get("OBOKIT_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize="OBOKIT_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
counts: dict[str, int] = {}


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory, loopback_only: list[str]) -> Iterator[Emulator]:
    emulator = Emulator(tmp_path_factory.mktemp("fuzz-emulator")).start()
    try:
        yield emulator
    finally:
        emulator.close()
        print(f"\nfuzz examples per endpoint: {counts}")


@pytest.fixture(scope="module")
def http(emu: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(verify=ssl.create_default_context(cafile=emu.ca_bundle), timeout=30, follow_redirects=False) as client:
        yield client


@pytest.fixture(scope="module")
def admin_token(emu: Emulator) -> str:
    client_id, secret = emu.automation_credentials()
    app = msal.ConfidentialClientApplication(client_id, client_credential=secret, authority=emu.tenant_authority,
                                             instance_discovery=False)
    return app.acquire_token_for_client(["https://graph.microsoft.com/.default"])["access_token"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- building blocks ------------------------------------------------------------------------------
nasty_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=20),
    st.sampled_from(["", " ", "\x00", "%", "%zz", "'", "''", "\\", "..", "/", "null", "None", "{}", "[]", "é", "😀",
                     "\u202e", "a" * 5000]),
)
garbage_jwt = st.one_of(
    st.sampled_from(["eyJ", "eyJ.eyJ.", "a.b.c", "...", "eyJhbGciOiJub25lIn0.e30.", "eyJhbGciOiJIUzI1NiJ9.e30.x"]),
    st.builds(lambda h, p, s: ".".join([b64url(h), b64url(p), b64url(s)]),
              st.one_of(st.binary(max_size=40), st.sampled_from([b'{"alg":"RS256","kid":"nope"}', b'{"alg":"none"}',
                                                                  b'{"alg":"RS256"}', b"[]", b"null", b'"x"'])),
              st.one_of(st.binary(max_size=60), st.sampled_from([b"{}", b'{"exp":"soon"}', b'{"exp":1e400}', b"[1]"])),
              st.binary(max_size=40)),
)
GRANT_TYPES = ["authorization_code", "refresh_token", "client_credentials", "password", "implicit",
               "urn:ietf:params:oauth:grant-type:jwt-bearer", "urn:ietf:params:oauth:grant-type:device_code",
               "urn:ietf:params:oauth:grant-type:saml1_1-bearer", ""]


def client_ids(emu: Emulator) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from([emu.automation_credentials()[0], Emulator.graph_cli_client_id, GRAPH_APP_ID,
                                      str(uuid.uuid4()), "not-a-guid"]), nasty_text)


def values(emu: Emulator) -> st.SearchStrategy[str]:
    return st.one_of(nasty_text, garbage_jwt, client_ids(emu), st.sampled_from(GRANT_TYPES), st.sampled_from([
        "https://graph.microsoft.com/.default", "https://graph.microsoft.com/User.Read openid offline_access",
        "api://x/.default", "openid", "/", "a/b/c", ".default", f"{GRAPH_APP_ID}/.default", "on_behalf_of", "1"]))


def assert_entra_error(response: httpx.Response) -> None:
    assert response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    assert "Traceback" not in response.text
    if response.status_code >= 400:
        body = response.json()
        assert body["error"] and body["error_description"].startswith("AADSTS") and body["error_codes"]


def assert_graph_error(response: httpx.Response) -> None:
    assert response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    assert "Traceback" not in response.text
    if response.status_code >= 400 and response.status_code != 429:
        error = response.json()["error"]
        assert isinstance(error["code"], str) and error["code"] and isinstance(error["message"], str)
        assert {"date", "request-id", "client-request-id"} <= error["innerError"].keys()


def tally(name: str) -> None:
    counts[name] = counts.get(name, 0) + 1


# -- identity: /token -----------------------------------------------------------------------------
FORM_KEYS = ["grant_type", "client_id", "client_secret", "scope", "assertion", "requested_token_use", "code",
             "redirect_uri", "code_verifier", "refresh_token", "device_code", "client_info", "claims",
             "client_assertion", "client_assertion_type", "resource"]


def test_token_endpoint_fuzz(emu: Emulator, http: httpx.Client) -> None:
    huge = st.just("A" * 100_000)
    forms = st.dictionaries(st.one_of(st.sampled_from(FORM_KEYS), nasty_text), st.one_of(values(emu), huge), max_size=8)
    basic = st.one_of(st.none(), st.builds(lambda raw: "Basic " + base64.b64encode(raw).decode(), st.binary(max_size=40)),
                      st.sampled_from(["Basic", "Basic !!!", "Basic =", "Bearer x", "basic " + "A" * 3000]))
    tenants = st.one_of(st.just(emu.tenant_id), st.sampled_from(["common", "organizations", emu.tenant_domain]), st.just("x"))

    @FUZZ
    @given(form=forms, authorization=basic, tenant=tenants)
    def check(form: dict[str, str], authorization: str | None, tenant: str) -> None:
        tally("token (form)")
        headers = {"Authorization": authorization.strip()} if authorization and authorization.strip() else {}
        response = http.post(f"{emu.authority}/{tenant}/oauth2/v2.0/token", data=form, headers=headers)
        assert_entra_error(response)
        assert response.status_code != 200 or "access_token" in response.json()

    check()


def test_token_grants_fuzz(emu: Emulator, http: httpx.Client) -> None:
    """A registered, consented client with its real secret: every grant handler runs on random fields."""
    api = consented_api(emu, "fuzz middle tier", "http://localhost/callback")
    user = user_token(emu, api, user_upn("bruno"), "http://localhost/callback")
    app_only = http.post(f"{emu.tenant_authority}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": api.app_id, "client_secret": api.secret,
        "scope": f"api://{api.app_id}/.default"}).json()["access_token"]
    named = {"<api>": api.app_id, "<secret>": api.secret, "<user token>": user, "<app token>": app_only,
             "<user token, bad signature>": user.rsplit(".", 1)[0] + ".AAAA", "<api scope>": api.scope,
             "<code-like>": "1.A" + "x" * 60, "<refresh-like>": "0.A" + "y" * 60}
    anything = st.one_of(st.sampled_from(sorted(named)), values(emu))
    client = {"client_id": st.just("<api>"), "client_secret": st.just("<secret>")}
    optional = {key: anything for key in FORM_KEYS[3:]}
    grant_forms = st.one_of(
        st.fixed_dictionaries({"grant_type": st.sampled_from(GRANT_TYPES), **client}, optional=optional),
        st.fixed_dictionaries({  # On-Behalf-Of with its required fields, so the assertion checks run
            "grant_type": st.just("urn:ietf:params:oauth:grant-type:jwt-bearer"), **client,
            "requested_token_use": st.sampled_from(["on_behalf_of", "on_behalf_of", "x"]),
            "assertion": st.one_of(st.sampled_from(["<user token>", "<app token>", "<user token, bad signature>"]), garbage_jwt),
            "scope": st.one_of(st.sampled_from(["https://graph.microsoft.com/User.Read", "https://graph.microsoft.com/.default",
                                                "User.Read offline_access openid", "<api scope>", "https://graph.microsoft.com/Nope"]),
                               values(emu)),
        }, optional={"client_info": st.sampled_from(["1", "0", ""]), "claims": values(emu)}),
    )

    @FUZZ
    @given(form=grant_forms)
    def check(form: dict[str, str]) -> None:
        tally("token (grants, authenticated)")
        data = {key: named.get(value, value) for key, value in form.items()}
        response = http.post(f"{emu.tenant_authority}/oauth2/v2.0/token", data=data)
        assert_entra_error(response)

    check()


def test_token_endpoint_raw_bodies(emu: Emulator, http: httpx.Client) -> None:
    content_types = st.sampled_from(["application/x-www-form-urlencoded", "application/json", "text/plain",
                                     "multipart/form-data", "multipart/form-data; boundary=xyz", "", "application/x-www-form-urlencoded; charset=latin-1"])

    @FUZZ
    @given(body=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode),
                          st.sampled_from([b"grant_type=%ff%fe", b"a=1&a=2&grant_type", b"=&=&&", b"%", b"--xyz\r\n"])),
           content_type=content_types)
    def check(body: bytes, content_type: str) -> None:
        tally("token (raw body)")
        response = http.post(f"{emu.tenant_authority}/oauth2/v2.0/token", content=body,
                             headers={"Content-Type": content_type} if content_type else {})
        assert_entra_error(response)

    check()


def test_other_identity_endpoints_fuzz(emu: Emulator, http: httpx.Client) -> None:
    """/devicecode and /devicelogin forms, and discovery / JWKS under any tenant segment."""
    tenants = st.one_of(st.sampled_from([emu.tenant_id, "common", "organizations", emu.tenant_domain, "consumers"]),
                        # "." and ".." are resolved away by the client, leaving a path that does not exist (404)
                        nasty_text.filter(lambda t: t.strip(".") and "/" not in t and "?" not in t and "#" not in t))
    forms = st.dictionaries(st.sampled_from(["client_id", "scope", "user_code", "action", "account", "claims"]),
                            st.one_of(values(emu), st.sampled_from(["accept", "decline", "ABCDEFGHJ"])), max_size=5)

    @FUZZ
    @given(tenant=tenants, form=forms, which=st.sampled_from(["devicecode", "devicelogin", "discovery", "jwks", "v1"]))
    def check(tenant: str, form: dict[str, str], which: str) -> None:
        tally("identity (device code, discovery)")
        base = f"{emu.authority}/{quote(tenant, safe='')}"
        if which == "devicecode":
            assert_entra_error(http.post(f"{base}/oauth2/v2.0/devicecode", data=form))
            return
        response = {
            "devicelogin": lambda: http.post(f"{emu.authority}/devicelogin", data=form),
            "discovery": lambda: http.get(f"{base}/v2.0/.well-known/openid-configuration"),
            "jwks": lambda: http.get(f"{base}/discovery/v2.0/keys"),
            "v1": lambda: http.get(f"{base}/.well-known/openid-configuration"),
        }[which]()
        assert response.status_code < 500 and "Traceback" not in response.text, response.text[:300]
        if which in ("discovery", "v1") and response.status_code == 400:
            assert response.json()["error_codes"] == [90002]

    check()


# -- identity: /authorize -------------------------------------------------------------------------
AUTHORIZE_KEYS = ["client_id", "redirect_uri", "response_type", "scope", "state", "nonce", "code_challenge",
                  "code_challenge_method", "response_mode", "prompt", "login_hint", "claims"]


def test_authorize_fuzz(emu: Emulator, http: httpx.Client) -> None:
    redirect = st.sampled_from(["http://localhost/callback", "http://localhost:1234/callback", "https://evil.example/cb",
                                "javascript:alert(1)", "", "http://[::1/x", "http://localhost:99999/"])
    query = st.dictionaries(st.one_of(st.sampled_from(AUTHORIZE_KEYS), nasty_text),
                            st.one_of(values(emu), redirect, st.sampled_from(["code", "token", "S256", "plain", "form_post"])),
                            max_size=9)

    @FUZZ
    @given(params=query, method=st.sampled_from(["GET", "POST"]))
    def check(params: dict[str, str], method: str) -> None:
        tally(f"authorize ({method})")
        url = f"{emu.tenant_authority}/oauth2/v2.0/authorize"
        response = http.get(url, params=params) if method == "GET" else http.post(url, data=params)
        assert response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
        assert "Traceback" not in response.text
        if response.status_code == 400:
            assert "AADSTS" in response.text  # Entra's own error page

    check()


# -- Graph -----------------------------------------------------------------------------------------
SEGMENTS = ["applications", "servicePrincipals", "users", "me", "groups", "sites", "oauth2PermissionGrants",
            "appRoleAssignedTo", "addPassword", "removePassword", "transitiveMemberOf", "memberOf", "members",
            "microsoft.graph.group", "graph.group", "$count", "root", "contoso.sharepoint.com:", ":/sites/finance:",
            f"applications(appId='{GRAPH_APP_ID}')", "servicePrincipals(appId='x')", "(appId='')", "servicePrincipals(appId=",
            user_id("bruno"), group_id("finance"), str(uuid.uuid4()), "%2F", "..", "%00", "é"]
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
GRAPH_FIELDS = ["displayName", "appId", "identifierUris", "api", "appRoles", "web", "passwordCredential", "keyId",
                "clientId", "consentType", "resourceId", "principalId", "scope", "appRoleId", "signInAudience",
                "requiredResourceAccess", "publicClient", "spa", "@odata.type"]
json_bodies = st.one_of(st.dictionaries(st.sampled_from(GRAPH_FIELDS), json_values, max_size=5), json_values)


# Named variants of the admin token, so a failing example never prints a usable token.
TOKEN_VARIANTS = {
    "<admin>": lambda t: t,
    "<admin, no signature>": lambda t: t.rsplit(".", 1)[0] + ".",
    "<admin, two segments>": lambda t: t.rsplit(".", 1)[0],
    "<admin, bad signature>": lambda t: t.rsplit(".", 1)[0] + ".AAAA",
    "<admin, truncated>": lambda t: t[:-3],
}
bearer_tokens = st.one_of(st.sampled_from(sorted(TOKEN_VARIANTS)), st.just("<user>"), st.just("<user>"), st.none(), garbage_jwt,
                          nasty_text.filter(lambda s: s.isascii() and s.isprintable()))


@pytest.fixture(scope="module")
def user_graph_token(emu: Emulator) -> str:
    """Bruno's delegated Graph token (OBO through MSAL), so /me, memberships and sites are reached too."""
    api = consented_api(emu, "fuzz graph caller", "http://localhost/callback")
    app = msal.ConfidentialClientApplication(api.app_id, client_credential=api.secret, authority=emu.tenant_authority,
                                             instance_discovery=False)
    assertion = user_token(emu, api, user_upn("bruno"), "http://localhost/callback")
    return app.acquire_token_on_behalf_of(assertion, ["https://graph.microsoft.com/.default"])["access_token"]


def test_graph_fuzz(emu: Emulator, http: httpx.Client, admin_token: str, user_graph_token: str) -> None:
    paths = st.lists(st.one_of(st.sampled_from(SEGMENTS), nasty_text.filter(lambda s: "/" not in s and "?" not in s
                                                                            and "#" not in s)), min_size=0, max_size=4)
    query = st.dictionaries(st.sampled_from(["$filter", "$select", "$top", "$count", "$search", "$orderby", "$expand",
                                             "$skiptoken", "foo"]),
                            st.one_of(nasty_text, st.sampled_from(["id eq 'x'", "appId eq ''''", "id in ('a','b')",
                                                                   "startswith(displayName,'a')", "0", "-1", "1000",
                                                                   "true", "id eq", "x and y", "displayName,id"])),
                            max_size=4)
    headers = st.dictionaries(st.sampled_from(["ConsistencyLevel", "client-request-id", "Content-Type", "Prefer"]),
                              st.sampled_from(["eventual", "x", "", "application/json", "text/plain"]), max_size=3)

    @FUZZ
    @given(method=st.sampled_from(["GET", "POST", "PATCH", "DELETE", "PUT"]), segments=paths, params=query,
           extra=headers, token=bearer_tokens,
           body=st.one_of(st.none(), json_bodies.map(json.dumps), st.binary(max_size=60).map(lambda b: b.decode("latin-1"))),
           version=st.sampled_from(["v1.0", "v1.0", "beta", "v2.0", ""]))
    def check(method, segments, params, extra, token, body, version) -> None:
        tally("graph")
        origin = emu.graph_url.rsplit("/", 1)[0]
        path = [quote(segment, safe="$:(),'=@") for segment in ([version] if version else []) + segments]
        url = "/".join([origin, *path])
        request_headers = {k: v for k, v in extra.items() if v.isascii()}
        if token is not None:
            token = user_graph_token if token == "<user>" else TOKEN_VARIANTS[token](admin_token) if token in TOKEN_VARIANTS else token
            request_headers["Authorization"] = f"Bearer {token}".strip()
        response = http.request(method, url, params=params, headers=request_headers,
                                content=body.encode("utf-8", "surrogatepass") if body is not None else None)
        assert_graph_error(response)

    check()


# -- Graph writes: typed bodies against real objects, then the identity side must still work -------
NESTED_FIELDS = ["api", "web", "publicClient", "spa", "passwordCredential", "appRoles", "oauth2PermissionScopes",
                 "preAuthorizedApplications", "redirectUris", "requestedAccessTokenVersion", "value", "id", "isEnabled",
                 "allowedMemberTypes", "delegatedPermissionIds", "knownClientApplications", "displayName", "endDateTime"]
typed_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=12),
              st.sampled_from(["api://x", "AzureADMyOrg", "User", "AllPrincipals", "Principal", str(uuid.uuid4())])),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(NESTED_FIELDS), children, max_size=3),
    max_leaves=10,
)
WRITE_ENDPOINTS = ["POST /applications", "PATCH /applications/{app}", "PATCH /applications(appId='{appId}')",
                   "POST /applications/{app}/addPassword", "POST /applications/{app}/removePassword",
                   "POST /servicePrincipals", "POST /oauth2PermissionGrants", "PATCH /oauth2PermissionGrants/{grant}",
                   "POST /servicePrincipals/{sp}/appRoleAssignedTo"]


def test_graph_write_fuzz(emu: Emulator, http: httpx.Client, admin_token: str) -> None:
    """Wrongly typed properties are refused with a Graph 400; what is stored never breaks a later token request."""
    graph = lambda method, path, **kw: http.request(method, emu.graph_url + path, headers={"Authorization": f"Bearer {admin_token}"}, **kw)  # noqa: E731
    app = graph("POST", "/applications", json={"displayName": "fuzz target", "identifierUris": []}).raise_for_status().json()
    secret = graph("POST", f"/applications/{app['id']}/addPassword", json={}).raise_for_status().json()["secretText"]
    sp = graph("POST", "/servicePrincipals", json={"appId": app["appId"]}).raise_for_status().json()
    graph_sp = graph("GET", f"/servicePrincipals(appId='{GRAPH_APP_ID}')").raise_for_status().json()
    grant = graph("POST", "/oauth2PermissionGrants", json={"clientId": sp["id"], "consentType": "AllPrincipals",
                                                          "resourceId": graph_sp["id"], "scope": "User.Read"}).raise_for_status().json()
    ids = {"app": app["id"], "appId": app["appId"], "sp": sp["id"], "grant": grant["id"]}
    field_names = st.sampled_from(GRAPH_FIELDS + NESTED_FIELDS)
    bodies = st.one_of(st.dictionaries(field_names, typed_values, max_size=4), typed_values)

    @FUZZ
    @given(endpoint=st.sampled_from(WRITE_ENDPOINTS), body=bodies)
    def check(endpoint: str, body: object) -> None:
        tally("graph (writes)")
        method, path = endpoint.split(" ")
        if isinstance(body, dict) and method == "PATCH" and "passwordCredentials" in body:
            body.pop("passwordCredentials")
        assert_graph_error(graph(method, path.format(**ids), json=body))
        assert_graph_error(graph("GET", f"/applications/{app['id']}"))
        token = http.post(f"{emu.tenant_authority}/oauth2/v2.0/token", data={
            "grant_type": "client_credentials", "client_id": app["appId"], "client_secret": secret,
            "scope": "https://graph.microsoft.com/.default"})
        assert_entra_error(token)
        for scope in (f"api://{app['appId']}/.default", "https://graph.microsoft.com/User.Read openid"):
            assert_entra_error(http.post(f"{emu.tenant_authority}/oauth2/v2.0/devicecode",
                                         data={"client_id": app["appId"], "scope": scope}))
            assert http.get(f"{emu.tenant_authority}/oauth2/v2.0/authorize", params={
                "client_id": app["appId"], "redirect_uri": "http://localhost/callback", "response_type": "code",
                "scope": scope}).status_code < 500

    check()


# -- what the fuzzing found (regressions) ----------------------------------------------------------
def test_form_that_does_not_parse_is_aadsts9002313(emu: Emulator, http: httpx.Client) -> None:
    """Was a plain-text 400 "Missing boundary in multipart." from Starlette."""
    response = http.post(f"{emu.tenant_authority}/oauth2/v2.0/token", content=b"", headers={"Content-Type": "multipart/form-data"})
    assert response.status_code == 400 and response.json()["error_codes"] == [9002313]


@pytest.mark.parametrize(("body", "message"), [
    ({"api": []}, "An unexpected 'StartArray' node was found when reading from the JSON reader. A 'StartObject' node was expected."),
    ({"identifierUris": "api://x"}, "An unexpected 'PrimitiveValue' node was found when reading from the JSON reader. A 'StartArray' node was expected."),
    ({"appRoles": [{"value": "Task.Read"}]}, "Invalid value specified for property 'id' of resource 'appRoles'."),
    ({"web": None}, "A null value was found for the property named 'web', which has the expected type"),
    ({"api": {"requestedAccessTokenVersion": "2"}}, "Cannot convert the literal '\"2\"' to the expected type 'Edm.Int32'."),
])
def test_wrongly_typed_property_is_a_graph_400_and_not_stored(emu: Emulator, http: httpx.Client, admin_token: str,
                                                               body: dict, message: str) -> None:
    """Was a 500 (AttributeError), or a stored value that broke every later token request for the app."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    app = http.post(f"{emu.graph_url}/applications", headers=headers, json={"displayName": "typed"}).raise_for_status().json()
    response = http.patch(f"{emu.graph_url}/applications/{app['id']}", headers=headers, json=body)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(message)
    stored = http.get(f"{emu.graph_url}/applications/{app['id']}", headers=headers).json()
    assert isinstance(stored["api"], dict) and isinstance(stored["identifierUris"], list) and stored["appRoles"] == []


def test_fuzz_covered_every_endpoint() -> None:
    """Runs last in this module: every strategy actually produced its examples."""
    assert counts.get("token (form)", 0) >= EXAMPLES and counts.get("graph", 0) >= EXAMPLES
    assert counts.get("token (raw body)", 0) >= EXAMPLES and counts.get("graph (writes)", 0) >= EXAMPLES
    assert counts.get("authorize (GET)", 0) + counts.get("authorize (POST)", 0) >= EXAMPLES
    assert counts.get("identity (device code, discovery)", 0) >= EXAMPLES
    assert counts.get("token (grants, authenticated)", 0) >= EXAMPLES
