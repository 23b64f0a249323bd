"""One scenario per parity snapshot: the request the snapshot describes, made on a target, and the answer.

The target is a `World`: the session's emulator in the tests, or whatever a `.env` names when recording
(`python -m tests.parity.record`). Requests are raw HTTP (httpx), so the status and headers are the
server's own. Values that differ between targets (tenant id, authority, Graph URL, the demo users, the
app ids of this run) become placeholders such as `{tenant_id}` or `{api_app_id}` in every answer, and
secrets met on the way become `{secret}`: snapshots are written in those terms.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from obokit.display import decode_unverified
from obokit.emulator import GRAPH_APP_ID, Emulator
from obokit.emulator.grants import pkce_s256
from obokit.clients.headless import code_result
from obokit.tenant.target import GRAPH_CLI_CLIENT_ID, DemoDirectory, Target
from tenant_setup import GRAPH_SCOPES_FOR_TOOLS, Registration, run_async
from test_aadsts_errors import tamper

Answer = dict[str, Any]  # {"status": int | None, "headers": {name: value}, "body": JSON, text or a decoded token}
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
GRAPH = "https://graph.microsoft.com"
GRAPH_USER_READ = f"{GRAPH}/User.Read"
# Registered on the parity apps. Nothing listens here on the emulator; on a tenant your browser comes back to it.
REDIRECT_URI = "http://localhost:8770/callback"


def target_from_env(env: dict[str, str], kind: str) -> Target:
    """An obokit `Target` from `.env` keys (AZURE_TENANT_ID, AZURE_AUTHORITY_HOST, GRAPH_BASE_URL, DEMO_*)."""
    demo = DemoDirectory(**{f.name: env.get(f"DEMO_{f.name.upper()}_UPN") or env[f"DEMO_{f.name.upper()}"]
                            for f in fields(DemoDirectory)})
    return Target(kind=kind, tenant_id=env["AZURE_TENANT_ID"], authority=env["AZURE_AUTHORITY_HOST"].rstrip("/"),
                  graph_url=env["GRAPH_BASE_URL"].rstrip("/"), demo=demo, secrets_file=Path(os.devnull))


def http_answer(response: httpx.Response) -> Answer:
    is_json = "json" in response.headers.get("content-type", "")
    return {"status": response.status_code, "headers": {k.lower(): v for k, v in response.headers.items()},
            "body": response.json() if is_json else response.text}


def token_answer(token: str) -> Answer:
    header, payload = decode_unverified(token)
    return {"status": None, "headers": {}, "body": {"header": header, "payload": payload}}


class Levers:
    """What only an in-process emulator lets a scenario do: an MFA policy, short token lifetimes, expiring a device code."""

    def __init__(self, emulator: Emulator) -> None:
        assert emulator.service is not None
        self.service = emulator.service

    @contextmanager
    def mfa_required(self, user_id: str) -> Iterator[None]:
        policy = self.service.conditional_access.require_mfa(user_id, GRAPH_APP_ID)
        try:
            yield
        finally:
            self.service.conditional_access.remove(policy)

    @contextmanager
    def short_lived_tokens(self, seconds: int = 1) -> Iterator[None]:
        saved, self.service.tokens.lifetime = self.service.tokens.lifetime, seconds
        try:
            yield
        finally:
            self.service.tokens.lifetime = saved

    def expire_device_code(self, device_code: str) -> None:
        self.service.device_flows[device_code].expires_at = 0


class World:
    """One run on one target: the apps it registers (deleted by `close`), users' tokens and answers, each made once."""

    def __init__(self, target: Target, admin_headers: Callable[[], dict[str, str]], levers: Levers | None = None) -> None:
        self.target, self.levers, self._admin_headers = target, levers, admin_headers
        self.http = httpx.Client(timeout=60)
        self.token_url = f"{target.tenant_authority}/oauth2/v2.0/token"
        self.created: list[str] = []  # application object ids
        self.secrets: list[str] = []  # every secret met: masked in answers, looked for by the record scan
        demo = target.demo
        self.placeholders = {target.tenant_id: "{tenant_id}", target.authority: "{authority}",
                             target.graph_url: "{graph_url}", demo.admin.split("@")[-1]: "{tenant_domain}",
                             demo.admin: "{admin_upn}", demo.analyst: "{analyst_upn}", demo.engineer: "{engineer_upn}",
                             demo.finance_group_id: "{finance_group_id}"}
        self._made: dict[Any, Any] = {}

    def once(self, key: Any, make: Callable[[], Any]) -> Any:
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]

    def mask(self, value: Any) -> Any:
        """`value` with this target's values replaced by placeholders and secrets by `{secret}`."""
        if isinstance(value, dict):
            return {k: self.mask(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.mask(v) for v in value]
        if isinstance(value, str):
            known = {**self.placeholders, **{s: "{secret}" for s in self.secrets if s}}
            for raw in sorted(known, key=len, reverse=True):
                value = value.replace(raw, known[raw])
        return value

    def close(self) -> None:
        """Delete the apps this run registered (their service principals, grants and assignments go with them)."""
        if "admin" in self.__dict__:  # no admin sign-in just to close
            for object_id in self.created:
                self.admin.delete(f"/applications/{object_id}")
            self.admin.close()
        self.http.close()

    # -- the admin's Graph calls ------------------------------------------------------------
    @cached_property
    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.target.graph_url, headers=self._admin_headers(), timeout=60)

    def _retrying(self, send: Callable[[], httpx.Response], attempts: int = 6) -> httpx.Response:
        """A write a tenant may refuse for a few seconds after the object it names was created (replication)."""
        for attempt in range(attempts):
            response = send()
            if response.is_success or response.status_code not in (400, 404) or attempt == attempts - 1:
                return response.raise_for_status()
            time.sleep(2 * (attempt + 1))
        raise AssertionError("unreachable")

    def register(self, key: str, *, service_principal: bool = True, consent: str | None = None) -> Registration:
        """An app with the `mcp-access` scope (v2 tokens), api://{appId}, a `Task.Read` role and a secret."""
        scope = {"id": str(uuid.uuid4()), "value": "mcp-access", "type": "User", "isEnabled": True,
                 "adminConsentDisplayName": "mcp-access", "adminConsentDescription": "mcp-access"}
        role = {"id": str(uuid.uuid4()), "value": "Task.Read", "displayName": "Task.Read", "description": "Task.Read",
                "allowedMemberTypes": ["User"], "isEnabled": True}
        app = self.admin.post("/applications", json={
            "displayName": f"obokit parity {key}", "signInAudience": "AzureADMyOrg", "appRoles": [role],
            "web": {"redirectUris": [REDIRECT_URI]}, "api": {"requestedAccessTokenVersion": 2, "oauth2PermissionScopes": [scope]},
        }).raise_for_status().json()
        self.created.append(app["id"])
        self.placeholders[app["appId"]] = f"{{{key}_app_id}}"
        uri = {"identifierUris": [f"api://{app['appId']}"]}
        self._retrying(lambda: self.admin.patch(f"/applications/{app['id']}", json=uri))
        password = {"passwordCredential": {"displayName": "obokit parity"}}
        added = self._retrying(lambda: self.admin.post(f"/applications/{app['id']}/addPassword", json=password))
        secret = added.json()["secretText"]
        self.secrets.append(secret)
        sp_id = ""
        if service_principal:
            sp_id = self._retrying(lambda: self.admin.post("/servicePrincipals", json={"appId": app["appId"]})).json()["id"]
        registration = Registration(app["appId"], app["id"], sp_id, secret, f"api://{app['appId']}/mcp-access")
        if consent:
            self.grant(registration, consent).raise_for_status()
        if service_principal and not self.target.is_emulator:
            self._until_usable(registration)
        return registration

    def _until_usable(self, registration: Registration, seconds: float = 120) -> None:
        """Wait until a tenant accepts the new app's secret (700016/7000215 while it replicates)."""
        deadline = time.time() + seconds
        while self.client_credentials(registration.app_id, registration.secret, f"{GRAPH}/.default").status_code != 200:
            if time.time() > deadline:
                raise TimeoutError(f"the tenant still refuses the new app {registration.app_id}")
            time.sleep(5)

    @cached_property
    def graph_sp_id(self) -> str:
        return self.admin.get(f"/servicePrincipals(appId='{GRAPH_APP_ID}')").raise_for_status().json()["id"]

    def grant(self, registration: Registration, scope: str) -> httpx.Response:
        """Admin consent (AllPrincipals) for `scope` on Microsoft Graph."""
        return self.admin.post("/oauth2PermissionGrants", json={
            "clientId": registration.sp_id, "consentType": "AllPrincipals", "resourceId": self.graph_sp_id, "scope": scope})

    def assign_role(self, registration: Registration, who: str) -> httpx.Response:
        sp = self.admin.get(f"/servicePrincipals/{registration.sp_id}").raise_for_status().json()
        role_id = next(r["id"] for r in sp["appRoles"] if r["value"] == "Task.Read")
        return self.admin.post(f"/servicePrincipals/{registration.sp_id}/appRoleAssignedTo", json={
            "principalId": self.user_id(who), "resourceId": registration.sp_id, "appRoleId": role_id})

    def user_id(self, who: str) -> str:
        upn = getattr(self.target.demo, who)
        return self.once(("oid", who), lambda: self.admin.get(f"/users/{upn}").raise_for_status().json()["id"])

    @cached_property
    def api(self) -> Registration:
        """The middle tier: consented for the workbook tools' Graph scopes."""
        return self.register("api", consent=GRAPH_SCOPES_FOR_TOOLS)

    @cached_property
    def other(self) -> Registration:
        """Another API of the tenant, with no consent for Graph."""
        return self.register("other")

    @cached_property
    def scratch(self) -> Registration:
        return self.register("scratch")

    @cached_property
    def no_sp(self) -> Registration:
        return self.register("no_sp", service_principal=False)

    # -- identity endpoints -----------------------------------------------------------------
    def token(self, **form: str) -> httpx.Response:
        return self.http.post(self.token_url, data=form)

    def client_credentials(self, client_id: str, secret: str | None, scope: str) -> httpx.Response:
        form = {"grant_type": "client_credentials", "client_id": client_id, "scope": scope}
        return self.token(**form, **({"client_secret": secret} if secret is not None else {}))

    def obo(self, registration: Registration, assertion: str, scope: str) -> httpx.Response:
        return self.token(grant_type=JWT_BEARER, client_id=registration.app_id, client_secret=registration.secret,
                          assertion=assertion, scope=scope, requested_token_use="on_behalf_of")

    def sign_in(self, registration: Registration, who: str = "analyst") -> httpx.Response:
        """Authorization code + PKCE: the target's browser signs `who` in; the code is redeemed by raw HTTP."""
        verifier = secrets.token_urlsafe(48)
        query = {"client_id": registration.app_id, "response_type": "code", "redirect_uri": REDIRECT_URI,
                 "scope": f"{registration.scope} openid profile offline_access", "state": secrets.token_urlsafe(8),
                 "code_challenge": pkce_s256(verifier), "code_challenge_method": "S256"}
        authorize = f"{self.target.tenant_authority}/oauth2/v2.0/authorize?{urlencode(query)}"
        callback = run_async(self.target.sign_in(authorize, redirect_uri=REDIRECT_URI, account=getattr(self.target.demo, who)))
        return self.token(grant_type="authorization_code", client_id=registration.app_id, client_secret=registration.secret,
                          code=code_result(callback).code, redirect_uri=REDIRECT_URI, code_verifier=verifier,
                          scope=query["scope"], client_info="1")

    def signed_in(self, registration: Registration, who: str = "analyst") -> httpx.Response:
        return self.once(("sign-in", registration.app_id, who), lambda: self.sign_in(registration, who).raise_for_status())

    def user_token(self, registration: Registration, who: str = "analyst") -> str:
        return self.signed_in(registration, who).json()["access_token"]

    def app_token(self, registration: Registration, scope: str | None = None) -> str:
        scope = scope or f"api://{registration.app_id}/.default"
        return self.once(("app", registration.app_id, scope), lambda: self.client_credentials(
            registration.app_id, registration.secret, scope).raise_for_status().json()["access_token"])

    def graph_token(self, who: str = "analyst") -> str:
        """`who`'s Graph token, exchanged On-Behalf-Of by the middle tier (`.default`: every consented scope)."""
        return self.once(("graph", who), lambda: self.obo(self.api, self.user_token(self.api, who), f"{GRAPH}/.default")
                         .raise_for_status().json()["access_token"])

    def devicecode(self, scope: str | None = "User.Read openid profile offline_access") -> httpx.Response:
        form = {"client_id": GRAPH_CLI_CLIENT_ID, **({"scope": scope} if scope else {})}
        return self.http.post(f"{self.target.tenant_authority}/oauth2/v2.0/devicecode", data=form)

    def device_token(self, device_code: str) -> httpx.Response:
        return self.token(grant_type=DEVICE_CODE, client_id=GRAPH_CLI_CLIENT_ID, device_code=device_code)

    # -- Graph ------------------------------------------------------------------------------
    def graph_get(self, path: str, token: str, **headers: str) -> httpx.Response:
        return self.http.get(f"{self.target.graph_url}{path}", headers={"Authorization": f"Bearer {token}", **headers})

    def membership_filter(self, *, count: bool) -> str:
        group = self.target.demo.finance_group_id
        return f"/me/transitiveMemberOf/microsoft.graph.group?$filter=id eq '{group}'" + ("&$count=true" if count else "")


# -- the scenarios ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scenario:
    make: Callable[[World], Answer]
    needs: str | None = None  # a lever only the in-process emulator has: without it the scenario cannot run


SCENARIOS: dict[str, Scenario] = {}


def run(name: str, world: World) -> Answer:
    """The target's (masked) answer for snapshot `name`, made once per world."""
    return world.once(("answer", name), lambda: world.mask(SCENARIOS[name].make(world)))


def scenario(name: str, needs: str | None = None) -> Callable[[Callable[[World], Answer]], Callable[[World], Answer]]:
    def register(make: Callable[[World], Answer]) -> Callable[[World], Answer]:
        SCENARIOS[name] = Scenario(make, needs)
        return make
    return register


HTTP_SCENARIOS: dict[str, Callable[[World], httpx.Response]] = {
    # /token, On-Behalf-Of
    "token-obo-success": lambda w: w.obo(w.api, w.user_token(w.api), GRAPH_USER_READ),
    "token-obo-65001-consent-required": lambda w: w.obo(w.other, w.user_token(w.other), GRAPH_USER_READ),
    "token-obo-500131-audience-mismatch": lambda w: w.obo(w.api, w.user_token(w.other), GRAPH_USER_READ),
    "token-obo-50013-bad-signature": lambda w: w.obo(w.api, tamper(w.user_token(w.api)), GRAPH_USER_READ),
    "token-obo-650053-misspelt-scope": lambda w: w.obo(w.api, w.user_token(w.api), f"{GRAPH}/User.Reed"),
    "token-obo-7000114-app-only-assertion": lambda w: w.obo(w.api, w.app_token(w.api), GRAPH_USER_READ),
    "token-obo-28000-two-resources": lambda w: w.obo(w.api, w.user_token(w.api), f"{GRAPH_USER_READ} {w.api.scope}"),
    # /token, client credentials and authorization code
    "token-client-credentials-success": lambda w: w.client_credentials(w.api.app_id, w.api.secret, f"{GRAPH}/.default"),
    "token-7000215-wrong-secret": lambda w: w.client_credentials(w.api.app_id, "not-the-secret", f"{GRAPH}/.default"),
    "token-7000218-no-secret": lambda w: w.client_credentials(w.api.app_id, None, f"{GRAPH}/.default"),
    "token-700016-unknown-client": lambda w: w.client_credentials(str(uuid.uuid4()), "not-a-secret", f"{GRAPH}/.default"),
    "token-7000229-no-service-principal": lambda w: w.client_credentials(w.no_sp.app_id, w.no_sp.secret, f"{GRAPH}/.default"),
    "token-70011-unknown-resource": lambda w: w.client_credentials(
        w.api.app_id, w.api.secret, "https://foo.microsoft.com/.default"),
    "token-auth-code-success": lambda w: w.signed_in(w.api),
    # device code
    "devicecode-success": lambda w: w.devicecode(),
    "devicecode-900144-no-scope": lambda w: w.devicecode(scope=None),
    "token-device-code-pending": lambda w: w.device_token(w.devicecode().json()["device_code"]),
    "token-device-code-unknown": lambda w: w.device_token("DAQABAAEAAADparityUnknownDeviceCode" + "x" * 40),
    # /authorize, discovery
    "authorize-50011-redirect-mismatch": lambda w: w.http.get(f"{w.target.tenant_authority}/oauth2/v2.0/authorize", params={
        "client_id": w.api.app_id, "response_type": "code", "redirect_uri": "https://parity.invalid/callback",
        "scope": w.api.scope}),
    "discovery-v2-tenant": lambda w: w.http.get(f"{w.target.tenant_authority}/v2.0/.well-known/openid-configuration"),
    "jwks-tenant": lambda w: w.http.get(f"{w.target.tenant_authority}/discovery/v2.0/keys"),
    "jwks-common": lambda w: w.http.get(f"{w.target.authority}/common/discovery/v2.0/keys"),
    # Graph
    "graph-401-invalid-audience": lambda w: w.graph_get("/me", w.user_token(w.api)),
    "graph-403-site-access-denied": lambda w: w.graph_get(f"/sites/{w.target.demo.engineering_site}", w.graph_token()),
    "graph-404-site-not-found": lambda w: w.graph_get(
        f"/sites/{w.target.demo.finance_site.split(':')[0]}:/sites/obokit-parity-no-such-site", w.graph_token()),
    "graph-400-count-segment-no-header": lambda w: w.graph_get("/me/transitiveMemberOf/$count", w.graph_token()),
    "graph-400-search-no-header": lambda w: w.graph_get('/me/transitiveMemberOf?$search="displayName:Fin"', w.graph_token()),
    "graph-400-filter-no-header": lambda w: w.graph_get(w.membership_filter(count=True), w.graph_token()),
    "graph-400-filter-without-count": lambda w: w.graph_get(
        w.membership_filter(count=False), w.graph_token(), ConsistencyLevel="eventual"),
    "graph-200-count-ignored-no-header": lambda w: w.graph_get("/me/transitiveMemberOf?$count=true", w.graph_token()),
    "graph-200-me-default-properties": lambda w: w.graph_get("/me", w.graph_token()),
    "graph-400-me-app-only": lambda w: w.graph_get("/me", w.app_token(w.api, f"{GRAPH}/.default")),
    "graph-201-post-oauth2-permission-grant": lambda w: w.grant(w.scratch, "User.Read"),
    "graph-201-post-app-role-assignment": lambda w: w.assign_role(w.api, "analyst"),
}
TOKEN_SCENARIOS: dict[str, Callable[[World], str]] = {
    "claims-v2-delegated-api-token": lambda w: w.user_token(w.api),
    "claims-graph-obo-token": lambda w: w.obo(w.api, w.user_token(w.api), GRAPH_USER_READ).json()["access_token"],
    "claims-graph-unprefixed-scope": lambda w: w.obo(w.api, w.user_token(w.api), "User.Read").json()["access_token"],
}
for _name, _request in HTTP_SCENARIOS.items():
    scenario(_name)(lambda w, request=_request: http_answer(request(w)))
for _name, _token in TOKEN_SCENARIOS.items():
    scenario(_name)(lambda w, token=_token: token_answer(token(w)))


@scenario("token-device-code-success")
def device_code_success(w: World) -> Answer:
    """The device code flow to its end: approved as the admin (headlessly on the emulator, by you on a tenant)."""
    flow = w.devicecode().raise_for_status().json()
    if not w.target.is_emulator:
        print(flow["message"], flush=True)
    w.target.approve_device_code(flow, account=w.target.demo.admin)
    deadline = time.time() + flow["expires_in"]
    while (response := w.device_token(flow["device_code"])).status_code == 400 and time.time() < deadline \
            and response.json().get("error") == "authorization_pending":
        time.sleep(flow["interval"])
    return http_answer(response)


@scenario("token-device-code-expired", needs="expiring a device code")
def device_code_expired(w: World) -> Answer:
    device_code = w.devicecode().raise_for_status().json()["device_code"]
    w.levers.expire_device_code(device_code)
    return http_answer(w.device_token(device_code))


@scenario("token-obo-500133-expired-assertion", needs="short token lifetimes")
def expired_assertion(w: World) -> Answer:
    with w.levers.short_lived_tokens(1):
        assertion = w.sign_in(w.api).raise_for_status().json()["access_token"]
    time.sleep(max(0.0, decode_unverified(assertion)[1]["exp"] + 1 - time.time()))
    return http_answer(w.obo(w.api, assertion, GRAPH_USER_READ))


@scenario("token-obo-50076-claims-challenge", needs="a Conditional Access policy")
def mfa_claims_challenge(w: World) -> Answer:
    assertion = w.user_token(w.api)
    with w.levers.mfa_required(w.user_id("analyst")):
        return http_answer(w.obo(w.api, assertion, GRAPH_USER_READ))


@scenario("graph-201-post-application")
def post_application(w: World) -> Answer:
    """A bare POST /applications: the defaults Graph fills in (signInAudience, requestedAccessTokenVersion)."""
    response = w.admin.post("/applications", json={"displayName": "obokit parity defaults"})
    if response.is_success:
        w.created.append(response.json()["id"])
    return http_answer(response)


@scenario("graph-200-add-password")
def add_password(w: World) -> Answer:
    response = w.admin.post(f"/applications/{w.other.object_id}/addPassword",
                            json={"passwordCredential": {"displayName": "obokit parity"}})
    if response.is_success:
        w.secrets.append(response.json()["secretText"])
    return http_answer(response)
