"""The tenant profile: a fresh tenant's defaults, driven through the real libraries and the HTML pages.

Nothing is pre-consented (the admin consents for the organization on the first sign-in; a non-admin asking for
admin-only scopes is refused with AADSTS90094), directory writes replicate late (AADSTS700016, 7000229,
7000222/7000215, 65001, a token without a just-assigned role, Graph 404), and the sign-in page remembers the
browser's last account (ESTSAUTH cookie). The pages are driven with plain httpx, as a scripted browser would.
"""

from __future__ import annotations

import re
import signal
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import httpx
import jwt
import msal
import pytest
from azure.identity import DeviceCodeCredential
from tenant_setup import admin_headers, run_async, user_upn

from obokit.emulator import GRAPH_APP_ID, GRAPH_CLI_APP_ID, Emulator
from obokit.emulator.replication import Replication
from obokit.emulator.store import Store
from obokit.clients.headless import HeadlessBrowser, parse_forms

# The redirects are read as a browser sees them (response_mode=query), which MSAL warns about.
pytestmark = [pytest.mark.emulator, pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended")]

GRAPH = "https://graph.microsoft.com"
ADMIN_SCOPES = [f"{GRAPH}/{s}" for s in ("Application.ReadWrite.All", "DelegatedPermissionGrant.ReadWrite.All",
                                          "AppRoleAssignment.ReadWrite.All", "Directory.Read.All")]
REDIRECT = "http://localhost:8400"  # Graph CLI registers http://localhost (any loopback port)
DELAY = (0.6, 1.0)  # wide enough that an immediate check lands inside it on a busy machine


# -- fixtures and helpers -------------------------------------------------------------------
@pytest.fixture(scope="module")
def tenant_emu(tmp_path_factory: pytest.TempPathFactory, emulator: Emulator) -> Iterator[Emulator]:
    """Started after the session's quick emulator, so stopping it hands the CA variables back to that one."""
    with Emulator(tmp_path_factory.mktemp("tenant-profile"), profile="tenant", replication_delay=DELAY).start() as emu:
        yield emu


@pytest.fixture
def emu(tenant_emu: Emulator) -> Emulator:
    """The tenant-profile emulator, back to its fresh seed (no sessions, nothing pending)."""
    tenant_emu.reset()
    return tenant_emu


def claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def wait_for(check: Callable[[], Any], timeout: float = 4.0) -> Any:
    """Poll `check` until it returns something truthy (replication delays are under a second here)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            assert result, "condition not met within the replication window"
            return result
        time.sleep(0.05)


def data(page: httpx.Response, name: str) -> str | None:
    """A `data-*` attribute of the page's form (what a scripted browser reads)."""
    found = re.search(rf"<form [^>]*data-{name}='([^']*)'", page.text)
    return found.group(1) if found else None


class Browser:
    """A cookie-keeping HTTP client that submits the emulator's forms like a person would."""

    def __init__(self, emu: Emulator) -> None:
        self.client = httpx.Client(timeout=30)

    def get(self, url: str) -> httpx.Response:
        return self.client.get(url)

    def submit(self, page: httpx.Response, **fields: str) -> httpx.Response:
        form = parse_forms(page.text)[0]
        return self.client.post(urljoin(str(page.url), form.action), data={**form.fields, **fields})

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def browser(emu: Emulator) -> Iterator[Browser]:
    b = Browser(emu)
    yield b
    b.close()


def graph_cli(emu: Emulator) -> msal.PublicClientApplication:
    return msal.PublicClientApplication(GRAPH_CLI_APP_ID, authority=emu.tenant_authority, instance_discovery=False)


def redirect_query(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 302, (response.status_code, response.text[:300])
    location = response.headers["location"]
    assert location.startswith(REDIRECT), location
    return dict(parse_qsl(urlsplit(location).query))


def kinds(emu: Emulator, since: int) -> list[str]:
    return [e["kind"] for e in emu.events.since(since)]


def graph_sp_id(emu: Emulator) -> str:
    return emu.store.find_one("servicePrincipals", appId=GRAPH_APP_ID)["id"]


def consent_graph_cli(emu: Emulator, scope: str) -> None:
    """Admin consent for the Graph CLI client through Graph, made visible at once (setup, not under test)."""
    cli_sp = emu.store.find_one("servicePrincipals", appId=GRAPH_CLI_APP_ID)
    with httpx.Client(base_url=emu.graph_url, headers=admin_headers(emu)) as graph:
        graph.post("/oauth2PermissionGrants", json={"clientId": cli_sp["id"], "consentType": "AllPrincipals",
                                                    "resourceId": graph_sp_id(emu), "scope": scope}).raise_for_status()
    emu.replication.settle_all()


def new_app(graph: httpx.Client, name: str, **extra: Any) -> dict[str, Any]:
    body = {"displayName": name, "signInAudience": "AzureADMyOrg", **extra}
    return graph.post("/applications", json=body).raise_for_status().json()


def token_error(emu: Emulator, client_id: str, secret: str) -> dict[str, Any]:
    """client_credentials with a new MSAL client each time: MSAL answers a repeated request that failed with
    400 from its own cache for a while (the reason obokit.tenant.consistency builds a new client per attempt)."""
    app = msal.ConfidentialClientApplication(client_id, client_credential=secret, authority=emu.tenant_authority,
                                             instance_discovery=False)
    return app.acquire_token_for_client([f"{GRAPH}/.default"])


def code(result: dict[str, Any]) -> int | None:
    return (result.get("error_codes") or [None])[0]


# -- the seed -------------------------------------------------------------------------------
def test_nothing_is_pre_consented_and_the_profile_sticks_to_its_state_folder(tmp_path: Path) -> None:
    tenant = Emulator(tmp_path, profile="tenant")
    assert tenant.store.find("oauth2PermissionGrants") == []
    assert tenant.replication_delay == (2.0, 5.0)
    tenant.close()
    quick = Emulator(tmp_path)  # another profile on the same folder: that profile's fresh seed
    assert quick.profile == "quick" and quick.replication is None
    cli_sp = quick.store.find_one("servicePrincipals", appId=GRAPH_CLI_APP_ID)
    assert quick.store.find("oauth2PermissionGrants", clientId=cli_sp["id"])  # the quick shortcut
    quick.close()
    again = Emulator(tmp_path, profile="tenant")
    assert again.store.find("oauth2PermissionGrants") == []
    again.close()
    with pytest.raises(ValueError):
        Emulator(tmp_path, profile="prod")


def test_replica_view_shows_writes_after_their_delay(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    replication = Replication(store, (0.2, 0.3))
    view = replication.view()
    obj = {"id": "a1", "appId": "x", "displayName": "v1"}
    run_async(store.put("applications", obj))
    assert store.get("applications", "a1") and view.get("applications", "a1") is None
    assert view.find("applications", appId="x") == [] and replication.pending() == 1
    wait_for(lambda: view.get("applications", "a1"))
    run_async(store.put("applications", {**obj, "displayName": "v2"}))
    assert view.get("applications", "a1")["displayName"] == "v1"  # an update lags too
    wait_for(lambda: view.get("applications", "a1")["displayName"] == "v2")
    run_async(store.put("applications", {**obj, "displayName": "v3"}))
    run_async(store.delete("applications", "a1"))
    assert view.get("applications", "a1") is None and replication.pending() == 0  # deletions are immediate
    store.close()


# -- consent: the admin's first sign-in -----------------------------------------------------
def test_device_code_credential_admin_consents_for_the_organization(emu: Emulator, browser: Browser) -> None:
    since = emu.events.last_seq
    pages: list[httpx.Response] = []

    def person(verification_uri: str, user_code: str, expires_on: Any) -> None:
        page = browser.client.post(verification_uri, data={"user_code": user_code, "account": user_upn("adele"),
                                                           "action": "accept"})
        assert data(page, "page") == "consent" and data(page, "admin") == "true"
        assert data(page, "account") == user_upn("adele")
        assert "Consent on behalf of your organization" in page.text and "name='consent_for_org'" in page.text
        pages.append(page)
        done = browser.submit(page, consent_for_org="1", action="accept")
        assert "You&#x27;re signed in" in done.text

    credential = DeviceCodeCredential(GRAPH_CLI_APP_ID, tenant_id=emu.tenant_id, authority=emu.authority,
                                      disable_instance_discovery=True, prompt_callback=person)
    token = credential.get_token(*ADMIN_SCOPES)
    shown = {s.split("'")[0] for s in pages[0].text.split("data-scope='")[1:]}
    assert set(ADMIN_SCOPES) <= shown and {"openid", "profile", "offline_access"} <= shown
    scp = claims(token.token)["scp"].split()
    assert {"Application.ReadWrite.All", "Directory.Read.All"} <= set(scp) and "User.Read" not in scp
    assert kinds(emu, since) == ["device_code", "consent_page", "consent_granted"]
    assert emu.events.since(since)[-1]["detail"] == "AllPrincipals"

    # The org-wide grant replicates; then everyone's sign-in for those scopes needs no consent page.
    cli_sp = emu.store.find_one("servicePrincipals", appId=GRAPH_CLI_APP_ID)
    grant = emu.store.find_one("oauth2PermissionGrants", clientId=cli_sp["id"], consentType="AllPrincipals")
    assert grant["principalId"] is None and set(grant["scope"].split()) >= {"Application.ReadWrite.All", "openid"}
    graph = httpx.Client(base_url=emu.graph_url, headers={"Authorization": f"Bearer {token.token}"})
    assert graph.get(f"/oauth2PermissionGrants/{grant['id']}").status_code == 404  # not replicated yet
    wait_for(lambda: graph.get(f"/oauth2PermissionGrants/{grant['id']}").status_code == 200)
    app = graph_cli(emu)
    flow = app.initiate_device_flow(scopes=ADMIN_SCOPES)
    page = httpx.post(flow["verification_uri"], data={"user_code": flow["user_code"], "account": user_upn("adele"),
                                                      "action": "accept"})
    assert "You&#x27;re signed in" in page.text  # consented: no second consent page
    assert "access_token" in app.acquire_token_by_device_flow(flow)
    graph.close()

    # The device-code sign-in left a browser session: the device page and /authorize now know Adele.
    device_page = browser.get(f"{emu.authority}/devicelogin")
    assert data(device_page, "session-account") == data(device_page, "selected-account") == user_upn("adele")
    assert data(httpx.get(f"{emu.authority}/devicelogin"), "selected-account") == ""  # another browser: no one
    since = emu.events.last_seq
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT)  # no login_hint, no prompt
    page = browser.get(flow["auth_uri"])
    assert data(page, "page") == "consent" and data(page, "account") == user_upn("adele")  # signed in as Adele
    assert kinds(emu, since) == ["auto_sign_in", "consent_page"]


def test_without_the_org_checkbox_the_admin_consents_only_for_herself(emu: Emulator, browser: Browser) -> None:
    app = graph_cli(emu)
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT)
    picker = browser.get(flow["auth_uri"])
    assert data(picker, "page") == "picker" and data(picker, "selected-account") == ""
    page = browser.submit(picker, account=user_upn("adele"), action="accept")
    assert data(page, "page") == "consent"
    result = app.acquire_token_by_auth_code_flow(flow, redirect_query(browser.submit(page, action="accept")))
    assert "User.Read" in result["scope"].split()
    grant = emu.store.find_one("oauth2PermissionGrants", consentType="Principal")
    assert grant["principalId"] == emu.store.find_one("users", userPrincipalName=user_upn("adele"))["id"]


def test_a_non_admin_is_refused_admin_scopes_by_device_code(emu: Emulator, browser: Browser) -> None:
    app = graph_cli(emu)
    flow = app.initiate_device_flow(scopes=ADMIN_SCOPES)
    page = browser.client.post(flow["verification_uri"], data={"user_code": flow["user_code"],
                                                               "account": user_upn("bruno"), "action": "accept"})
    assert data(page, "page") == "admin-approval" and "Need admin approval" in page.text
    assert "AADSTS90094: Microsoft Graph Command Line Tools needs permission to access resources in your " \
           "organization that only an admin can grant." in page.text
    assert "consent_for_org" not in page.text and "value='accept'" not in page.text
    browser.submit(page, action="cancel")
    assert app.acquire_token_by_device_flow(flow)["error"] == "authorization_declined"
    assert emu.store.find("oauth2PermissionGrants") == []


def test_a_non_admin_is_refused_admin_scopes_at_authorize(emu: Emulator, browser: Browser) -> None:
    app = graph_cli(emu)
    flow = app.initiate_auth_code_flow(ADMIN_SCOPES, redirect_uri=REDIRECT, login_hint=user_upn("chen"))
    picker = browser.get(flow["auth_uri"])
    assert data(picker, "selected-account") == user_upn("chen")
    page = browser.submit(picker, account=user_upn("chen"), action="accept")
    assert data(page, "page") == "admin-approval" and "AADSTS90094" in page.text
    again = browser.submit(page, action="switch_account")  # "Have an admin account? Sign in with that account"
    assert data(again, "page") == "picker"
    refused = browser.submit(browser.submit(again, account=user_upn("chen"), action="accept"), action="cancel")
    answer = redirect_query(refused)
    assert answer["error"] == "access_denied" and "AADSTS65004" in answer["error_description"]


def test_delegated_tokens_carry_only_what_was_consented_and_graph_enforces_it(emu: Emulator, browser: Browser) -> None:
    app = graph_cli(emu)
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT, login_hint=user_upn("bruno"))
    page = browser.submit(browser.get(flow["auth_uri"]), account=user_upn("bruno"), action="accept")
    assert data(page, "page") == "consent" and data(page, "admin") == "false" and "consent_for_org" not in page.text
    result = app.acquire_token_by_auth_code_flow(flow, redirect_query(browser.submit(page, action="accept")))
    scp = set(claims(result["access_token"])["scp"].split())
    assert scp == {"User.Read", "openid", "profile", "offline_access"}
    headers = {"Authorization": f"Bearer {result['access_token']}"}
    assert httpx.get(f"{emu.graph_url}/me", headers=headers).status_code == 200
    denied = httpx.get(f"{emu.graph_url}/applications", headers=headers)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "Authorization_RequestDenied"
    # A scope nobody consented to: the refresh token cannot get it (65001), interaction is needed.
    refused = app.acquire_token_silent_with_error(["Directory.Read.All"], account=app.get_accounts()[0])
    assert code(refused) == 65001 and refused["suberror"] == "consent_required"


# -- replication delay ----------------------------------------------------------------------
def test_a_new_app_is_unknown_then_lacks_its_service_principal_then_its_secret(emu: Emulator) -> None:
    with httpx.Client(base_url=emu.graph_url, headers=admin_headers(emu)) as graph:
        app = new_app(graph, "replication app")
        assert code(token_error(emu, app["appId"], "x")) == 700016
        assert graph.get(f"/applications/{app['id']}").status_code == 404  # Graph reads lag as well
        assert graph.get(f"/applications/{app['id']}").json()["error"]["code"] == "Request_ResourceNotFound"
        graph.patch(f"/applications/{app['id']}", json={"notes": "writes see it"}).raise_for_status()
        wait_for(lambda: graph.get(f"/applications/{app['id']}").status_code == 200)
        assert code(token_error(emu, app["appId"], "x")) == 7000229  # no service principal (yet)
        sp = graph.post("/servicePrincipals", json={"appId": app["appId"]}).raise_for_status().json()  # writes see the app
        graph.post("/oauth2PermissionGrants", json={"clientId": sp["id"], "consentType": "AllPrincipals",  # and the SP
                                                    "resourceId": graph_sp_id(emu), "scope": "User.Read"}).raise_for_status()
        assert code(token_error(emu, app["appId"], "x")) == 7000229
        wait_for(lambda: graph.get(f"/servicePrincipals(appId='{app['appId']}')").status_code == 200)
        first = graph.post(f"/applications/{app['id']}/addPassword", json={}).raise_for_status().json()["secretText"]
        # No secret of the app has replicated: Entra calls the keys expired (7000222) while a new one spreads.
        assert code(token_error(emu, app["appId"], first)) == 7000222
        wait_for(lambda: "access_token" in token_error(emu, app["appId"], first))
        second = graph.post(f"/applications/{app['id']}/addPassword", json={}).raise_for_status().json()["secretText"]
        assert code(token_error(emu, app["appId"], second)) == 7000215  # the replica knows only the first
        assert "access_token" in token_error(emu, app["appId"], first)
        wait_for(lambda: "access_token" in token_error(emu, app["appId"], second))


def test_a_new_grant_gives_65001_and_a_new_assignment_no_role_until_they_replicate(emu: Emulator) -> None:
    redirect = "http://localhost:8401/callback"
    with httpx.Client(base_url=emu.graph_url, headers=admin_headers(emu)) as graph:
        app = new_app(graph, "replication api", web={"redirectUris": [redirect]}, api={
            "requestedAccessTokenVersion": 2, "oauth2PermissionScopes": [
                {"id": str(uuid.uuid4()), "value": "access", "type": "User", "isEnabled": True}]})
        graph.patch(f"/applications/{app['id']}", json={"identifierUris": [f"api://{app['appId']}"]}).raise_for_status()
        secret = graph.post(f"/applications/{app['id']}/addPassword", json={}).raise_for_status().json()["secretText"]
        sp = graph.post("/servicePrincipals", json={"appId": app["appId"]}).raise_for_status().json()
        emu.replication.settle_all()  # setup done; what follows is under test

        # Bruno signs in to the app's own API (the headless browser walks the picker and the consent page).
        client = msal.ConfidentialClientApplication(app["appId"], client_credential=secret,
                                                    authority=emu.tenant_authority, instance_discovery=False)
        flow = client.initiate_auth_code_flow([f"api://{app['appId']}/access"], redirect_uri=redirect)
        callback = run_async(HeadlessBrowser(user_upn("bruno")).sign_in(flow["auth_uri"], redirect_uri=redirect))
        assertion = client.acquire_token_by_auth_code_flow(flow, dict(parse_qsl(urlsplit(callback).query)))["access_token"]

        def obo() -> dict[str, Any]:
            fresh = msal.ConfidentialClientApplication(app["appId"], client_credential=secret,
                                                       authority=emu.tenant_authority, instance_discovery=False)
            return fresh.acquire_token_on_behalf_of(assertion, [f"{GRAPH}/User.Read"])

        assert code(obo()) == 65001
        graph.post("/oauth2PermissionGrants", json={"clientId": sp["id"], "consentType": "AllPrincipals",
                                                    "resourceId": graph_sp_id(emu), "scope": "User.Read"}).raise_for_status()
        assert code(obo()) == 65001  # the grant exists, the token endpoint does not know it yet
        wait_for(lambda: "access_token" in obo())

        role = next(r["id"] for r in emu.store.find_one("servicePrincipals", appId=GRAPH_APP_ID)["appRoles"]
                    if r["value"] == "User.Read.All")
        graph.post(f"/servicePrincipals/{graph_sp_id(emu)}/appRoleAssignedTo", json={
            "principalId": sp["id"], "resourceId": graph_sp_id(emu), "appRoleId": role}).raise_for_status()
        early = token_error(emu, app["appId"], secret)
        assert "roles" not in claims(early["access_token"])  # issued, without the role
        wait_for(lambda: claims(token_error(emu, app["appId"], secret)["access_token"]).get("roles") == ["User.Read.All"])


# -- the browser session --------------------------------------------------------------------
def test_the_session_signs_the_last_account_in_again_without_a_picker(emu: Emulator, browser: Browser) -> None:
    consent_graph_cli(emu, "User.Read Directory.Read.All openid profile offline_access")
    app = graph_cli(emu)
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT)
    picker = browser.get(flow["auth_uri"])
    assert data(picker, "session-account") == ""
    answer = browser.submit(picker, account=user_upn("adele"), action="accept")
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("ESTSAUTH=") and "HttpOnly" in cookie and "Secure" in cookie and "Path=/" in cookie
    assert user_upn("adele") not in cookie and "adele" not in cookie.lower()  # opaque
    assert "access_token" in app.acquire_token_by_auth_code_flow(flow, redirect_query(answer))

    since = emu.events.last_seq
    again = graph_cli(emu)
    flow = again.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT)
    result = again.acquire_token_by_auth_code_flow(flow, redirect_query(browser.get(flow["auth_uri"])))
    assert result["id_token_claims"]["preferred_username"] == user_upn("adele")
    assert kinds(emu, since) == ["auto_sign_in"]

    # prompt=select_account always shows the picker (the session's account is marked, none pre-selected).
    flow = again.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT, prompt="select_account")
    picker = browser.get(flow["auth_uri"])
    assert data(picker, "page") == "picker" and data(picker, "session-account") == user_upn("adele")
    # login_hint for someone else: the picker, pre-selected for that account.
    flow = again.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT, login_hint=user_upn("bruno"))
    picker = browser.get(flow["auth_uri"])
    assert data(picker, "selected-account") == user_upn("bruno") and data(picker, "session-account") == user_upn("adele")
    # login_hint for the session's account: signed in silently.
    flow = again.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT, login_hint=user_upn("adele").upper())
    assert "code" in redirect_query(browser.get(flow["auth_uri"]))
    # prompt=login ignores the session.
    flow = again.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT, prompt="login")
    picker = browser.get(flow["auth_uri"])
    assert data(picker, "page") == "picker" and data(picker, "session-account") == ""
    assert kinds(emu, since).count("picker") == 3


def test_a_silent_sign_in_still_shows_the_consent_page_and_prompt_none_needs_a_session(
        emu: Emulator, browser: Browser) -> None:
    consent_graph_cli(emu, "User.Read openid profile offline_access")
    app = graph_cli(emu)
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT, prompt="none")
    answer = redirect_query(browser.get(flow["auth_uri"]))
    assert answer["error"] == "login_required" and "AADSTS50058" in answer["error_description"]
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT)
    redirect_query(browser.submit(browser.get(flow["auth_uri"]), account=user_upn("bruno"), action="accept"))

    flow = app.initiate_auth_code_flow(["Sites.Read.All"], redirect_uri=REDIRECT)  # not consented yet
    page = browser.get(flow["auth_uri"])
    assert data(page, "page") == "consent" and data(page, "account") == user_upn("bruno")
    flow = app.initiate_auth_code_flow(["Sites.Read.All"], redirect_uri=REDIRECT, prompt="none")
    assert redirect_query(browser.get(flow["auth_uri"]))["error"] == "consent_required"


def test_sign_out_ends_the_session(emu: Emulator, browser: Browser) -> None:
    consent_graph_cli(emu, "User.Read openid profile offline_access")
    app = graph_cli(emu)
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT)
    redirect_query(browser.submit(browser.get(flow["auth_uri"]), account=user_upn("chen"), action="accept"))
    browser.get(f"{emu.tenant_authority}/oauth2/v2.0/logout")
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT)
    assert data(browser.get(flow["auth_uri"]), "page") == "picker"


# -- the control route and the command line -------------------------------------------------
def test_events_route_counts_prompts_without_tokens(emu: Emulator) -> None:
    since = httpx.get(f"{emu.authority}/_emulator/events").json()["last_seq"]
    flow = graph_cli(emu).initiate_device_flow(scopes=["User.Read"])
    body = httpx.get(f"{emu.authority}/_emulator/events", params={"since": since}).json()
    assert [e["kind"] for e in body["events"]] == ["device_code"] and body["last_seq"] == since + 1
    assert set(body["events"][0]) == {"seq", "at", "kind", "client_id", "account", "detail"}
    assert flow["device_code"] not in str(body) and flow["user_code"] not in str(body)
    health = httpx.get(f"{emu.authority}/_emulator/health").json()
    assert health["profile"] == "tenant" and health["replication_delay"] == list(DELAY)


def test_quick_profile_records_events_and_keeps_its_shortcut(emulator: Emulator) -> None:
    since = emulator.events.last_seq
    app = msal.PublicClientApplication(GRAPH_CLI_APP_ID, authority=emulator.tenant_authority, instance_discovery=False)
    flow = app.initiate_device_flow(scopes=ADMIN_SCOPES)
    httpx.post(flow["verification_uri"], data={"user_code": flow["user_code"], "account": user_upn("adele"),
                                               "action": "accept"}).raise_for_status()
    assert "access_token" in app.acquire_token_by_device_flow(flow)  # pre-consented: no consent page
    assert kinds(emulator, since) == ["device_code"]
    assert httpx.get(f"{emulator.authority}/_emulator/health").json()["profile"] == "quick"


def test_cli_serves_the_tenant_profile(tmp_path: Path) -> None:
    from test_cli import serving

    with serving(tmp_path, "--profile", "tenant", "--replication-delay", "0.2,0.4") as (process, printed):
        assert "profile tenant (replication delay 0.2-0.4 s)" in printed[0]
        env = dict(line.strip().split("=", 1) for line in printed if line.startswith("  "))
        health = httpx.get(f"{env['AZURE_AUTHORITY_HOST']}/_emulator/health",
                           verify=ssl.create_default_context(cafile=env["SSL_CERT_FILE"])).json()
        assert health["profile"] == "tenant" and health["replication_delay"] == [0.2, 0.4]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
