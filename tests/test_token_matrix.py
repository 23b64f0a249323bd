"""The JWT attack matrix against the running workbook server (`obokit.server`, FastMCP AzureProvider).

Every hostile token starts from a genuine one the emulator issued; forgeries that need a valid
signature are signed with the emulator's real key (`obokit.token_attacks`), and "another tenant"
also comes from a second emulator. Each case is put in front of the server twice, over raw HTTP:

* behind the proxy: the proxy's reference token for a client whose upstream (Entra) token is the
  hostile one - what the server's token verifier checks on every request;
* presented directly as the bearer: the proxy only honours tokens it issued.

Both answer 401 with `WWW-Authenticate: Bearer error="invalid_token", ... resource_metadata=...`.
The official `mcp` SDK client (its own `OAuthClientProvider`) holding the proxied token is sent
back to sign in, which our user agent refuses: that is how a rejected token surfaces there. A
valid token passes both ways (the positive control), and fastmcp's stock `JWTVerifier` is shown
to accept exactly the cases `obokit.server.verifier.EntraTokenVerifier` closes (the three of the
issue, and `iat` in the future).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit
from pathlib import Path

import httpx
import msal
import pytest
from fastmcp.server.auth.providers.azure import AzureJWTVerifier
from fastmcp.server.auth.providers.jwt import JWTVerifier
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from server_fixtures import make_target, register_workbook_server, registrations, start
from tenant_setup import Registration, register_api, run_async, user_token, user_upn

from obokit.emulator import Emulator
from obokit.clients.sdk_client import TokenFile, connect, sdk_oauth
from obokit.server import RunningServer, start_workbook_server
from obokit.token_attacks import (
    REDIRECT_URI, alg_none, bad_signature, claims_of, forge, hs256_with_public_key, proxied_token,
    register_client, tampered, unknown_kid,
)
from obokit.server.verifier import EntraTokenVerifier, rejection_reason

SERVER_REDIRECT = "http://localhost:8000/auth/callback"
GRAPH_USER_READ = "https://graph.microsoft.com/User.Read"
OTHER_TENANT = str(uuid.uuid5(uuid.NAMESPACE_DNS, "another-tenant.example"))
HOUR = 3600

# case -> the reason obokit's verifier logs, for the cases fastmcp 4.1.2 accepts (None: fastmcp refuses them too)
CASES: dict[str, str | None] = {
    "alg none": None,
    "HS256 signed with the RSA public key": None,
    "unknown kid": None,
    "kid with a path traversal": None,
    "attacker's key under the tenant's kid, with jku/x5u": None,
    "bad signature": None,
    "tampered payload": None,
    "expired": None,
    "nbf in the future": "not valid yet",
    "no exp": "no valid exp claim",
    "iat in the future": "issued in the future",
    "wrong iss (v1 issuer)": None,
    "wrong aud (a Graph token)": None,
    "tid not the issuer's tenant": "is not this server's tenant",
    "another tenant (same signing keys)": None,
    "another tenant (second emulator)": None,
    "missing scope mcp-access": None,
    "app-only token (no scp)": None,
    "unknown crit header": None,
    # validly signed, but claims Entra would never issue (obokit.server.verifier's claim rules)
    "oid not a GUID": "oid is not a GUID",
    "scp as a list": "scp is not a space-separated string",
    "ver 1.0 with the v2 issuer": "does not match the v2 issuer",
    "a 30-day lifetime": "Entra issues none longer",
    "roles as a string": "roles is not a list of strings",
    "idtyp not a token type": "is not a token type Entra issues",
    "a calling app the server does not trust": "is not one this server trusts",
}
FASTMCP_GAPS = {case for case, reason in CASES.items() if reason}


@dataclasses.dataclass
class Matrix:
    server: RunningServer
    registration: Registration
    valid: str = dataclasses.field(repr=False)  # tokens: never in the repr pytest prints on failure
    hostile: dict[str, str] = dataclasses.field(repr=False)
    client_id: str  # one dynamically registered client for every proxied token


def other_emulator_token(emu: Emulator, folder: Path) -> str:
    """A genuine user token from a second emulator: its own tenant state and signing keys.

    It shares the first one's local CA (same TLS folder), so starting it changes no trust.
    """
    folder.mkdir()
    (folder / "tls").symlink_to(emu.state_dir / "tls", target_is_directory=True)
    with Emulator(folder).start() as other:
        reg = register_api(other, name="another tenant's api", redirect_uris=[SERVER_REDIRECT])
        return user_token(other, reg, user_upn("bruno"), SERVER_REDIRECT)


def app_only_token(emu: Emulator, reg: Registration) -> str:
    app = msal.ConfidentialClientApplication(reg.app_id, client_credential=reg.secret,
                                             authority=emu.tenant_authority, instance_discovery=False)
    result = app.acquire_token_for_client([f"api://{reg.app_id}/.default"])
    assert "access_token" in result, result.get("error_description")
    return result["access_token"]


def hostile_tokens(emu: Emulator, reg: Registration, valid: str, folder: Path) -> dict[str, str]:
    keys, now = emu.keys, int(time.time())
    iss = claims_of(valid)["iss"]
    tokens = {
        "alg none": alg_none(valid),
        "HS256 signed with the RSA public key": hs256_with_public_key(keys, valid),
        "unknown kid": unknown_kid(valid),
        "kid with a path traversal": unknown_kid(valid, kid="../../../../etc/passwd"),
        # jku/x5u must be ignored: a fetch of these (non-loopback, TEST-NET-3) URLs would trip the conftest guard
        "attacker's key under the tenant's kid, with jku/x5u": unknown_kid(valid, kid=keys.current.kid, header={
            "jku": "https://203.0.113.7/keys", "x5u": "https://203.0.113.7/cert.pem"}),
        "bad signature": bad_signature(valid),
        "tampered payload": tampered(valid, oid=str(uuid.uuid4()), preferred_username=user_upn("adele")),
        "expired": forge(keys, valid, iat=now - 2 * HOUR, nbf=now - 2 * HOUR, exp=now - HOUR),
        "nbf in the future": forge(keys, valid, nbf=now + HOUR, exp=now + 2 * HOUR),
        "no exp": forge(keys, valid, exp=None),
        "iat in the future": forge(keys, valid, iat=now + HOUR, exp=now + 2 * HOUR),
        "wrong iss (v1 issuer)": forge(keys, valid, iss=f"https://sts.windows.net/{emu.tenant_id}/"),
        "wrong aud (a Graph token)": user_token(emu, dataclasses.replace(reg, scope=GRAPH_USER_READ),
                                                user_upn("bruno"), SERVER_REDIRECT),
        "tid not the issuer's tenant": forge(keys, valid, tid=OTHER_TENANT),
        "another tenant (same signing keys)": forge(keys, valid, tid=OTHER_TENANT,
                                                    iss=iss.replace(emu.tenant_id, OTHER_TENANT)),
        "another tenant (second emulator)": other_emulator_token(emu, folder / "second-emulator"),
        "missing scope mcp-access": forge(keys, valid, scp="User.Read"),
        "app-only token (no scp)": app_only_token(emu, reg),
        "unknown crit header": forge(keys, valid, header={"crit": ["urn:obokit:unknown"], "urn:obokit:unknown": True}),
        "oid not a GUID": forge(keys, valid, oid="admin"),
        "scp as a list": forge(keys, valid, scp=["mcp-access"]),
        "ver 1.0 with the v2 issuer": forge(keys, valid, ver="1.0"),
        "a 30-day lifetime": forge(keys, valid, iat=now, nbf=now, exp=now + 30 * 24 * HOUR),
        "roles as a string": forge(keys, valid, roles="Task.Write"),
        "idtyp not a token type": forge(keys, valid, idtyp="device"),
        "a calling app the server does not trust": forge(keys, valid, azp=str(uuid.uuid4())),
    }
    assert set(tokens) == set(CASES)
    return tokens


@pytest.fixture(scope="module")
def matrix(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    folder = tmp_path_factory.mktemp("token-matrix")
    reg = register_workbook_server(emulator, "token matrix", consent=True)
    valid = user_token(emulator, reg, user_upn("bruno"), SERVER_REDIRECT)
    hostile = hostile_tokens(emulator, reg, valid, folder)
    running = start(emulator, folder, reg, "token-matrix")
    try:
        client_id = run_async(_register(running))
        yield Matrix(running, reg, valid, hostile, client_id)
    finally:
        running.stop()


async def _register(server: RunningServer) -> str:
    async with httpx.AsyncClient(base_url=server.url) as http:
        return await register_client(http)


async def initialize(server: RunningServer, bearer: str) -> httpx.Response:
    """An MCP `initialize` over raw HTTP with `Authorization: Bearer`."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "raw httpx", "version": "0"}}}
    async with httpx.AsyncClient(timeout=15) as http:
        return await http.post(server.mcp_url, json=body, headers={
            "Authorization": f"Bearer {bearer}", "Accept": "application/json, text/event-stream"})


def assert_challenged(server: RunningServer, response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge
    assert f'resource_metadata="{server.url}/.well-known/oauth-protected-resource/mcp"' in challenge


class SignInRefused(Exception):
    """The user agent was sent to sign in again: the server refused the token the client held."""


class NoSignIn:
    """The SDK's redirect/callback handlers for a client that must not need to sign in."""

    redirect_uri = REDIRECT_URI

    def __init__(self) -> None:
        self.sent_to: list[str] = []

    async def open(self, authorization_url: str) -> None:
        self.sent_to.append(authorization_url)
        raise SignInRefused("the server refused the stored token; the SDK asks the user to sign in again")

    async def callback(self) -> None:
        raise SignInRefused("no sign-in")


async def sdk_list_tools(matrix: Matrix, bearer: str, agent: NoSignIn) -> list[str]:
    """The official SDK client holding `bearer` (already registered, already signed in): its tool names."""
    storage = TokenFile(None)
    await storage.set_client_info(OAuthClientInformationFull(
        client_id=matrix.client_id, redirect_uris=[REDIRECT_URI], grant_types=["authorization_code"],
        response_types=["code"], token_endpoint_auth_method="none"))
    await storage.set_tokens(OAuthToken(access_token=bearer, token_type="Bearer", expires_in=HOUR))
    async with connect(matrix.server.mcp_url, sdk_oauth(matrix.server.mcp_url, agent=agent, storage=storage)) as client:
        return [tool.name for tool in (await client.list_tools()).tools]


# -- the positive control -------------------------------------------------------------------
async def test_a_valid_user_token_passes_over_http_and_through_the_sdk(matrix: Matrix) -> None:
    bearer = await proxied_token(matrix.server, matrix.valid, client_id=matrix.client_id)
    response = await initialize(matrix.server, bearer)
    assert response.status_code == 200, response.text
    agent = NoSignIn()
    tools = await sdk_list_tools(matrix, bearer, agent)
    assert agent.sent_to == [] and {"whoami", "check_group_membership"} <= set(tools)
    # The same Entra token presented directly is refused: the proxy honours only the tokens it issued.
    assert_challenged(matrix.server, await initialize(matrix.server, matrix.valid))


# -- the matrix -----------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
async def test_hostile_token_is_refused_over_http(matrix: Matrix, case: str, caplog: pytest.LogCaptureFixture) -> None:
    token = matrix.hostile[case]
    with caplog.at_level(logging.WARNING, logger="obokit.server.verifier"):
        proxied = await initialize(matrix.server, await proxied_token(matrix.server, token, client_id=matrix.client_id))
    assert_challenged(matrix.server, proxied)
    if CASES[case]:
        assert CASES[case] in caplog.text, "obokit's verifier names the reason"
    assert_challenged(matrix.server, await initialize(matrix.server, token))


@pytest.mark.parametrize("case", list(CASES))
async def test_hostile_token_is_an_auth_error_for_the_mcp_sdk_client(matrix: Matrix, case: str) -> None:
    bearer = await proxied_token(matrix.server, matrix.hostile[case], client_id=matrix.client_id)
    agent = NoSignIn()
    with pytest.raises(Exception) as failure:
        await sdk_list_tools(matrix, bearer, agent)
    # The SDK read the 401 challenge, found the proxy through the resource metadata and sent the user to sign in.
    assert [url.split("?")[0] for url in agent.sent_to] == [f"{matrix.server.url}/authorize"]
    assert failure.group_contains(SignInRefused) if isinstance(failure.value, BaseExceptionGroup) \
        else failure.errisinstance(SignInRefused), repr(failure.value)


async def test_fastmcp_alone_accepts_exactly_the_cases_obokit_closes(matrix: Matrix) -> None:
    strict = matrix.server.mcp.auth._token_validator
    assert isinstance(strict, EntraTokenVerifier), "the workbook server runs obokit's verifier"
    stock = JWTVerifier(jwks_uri=strict.jwks_uri, issuer=strict.issuer, audience=strict.audience,
                        algorithm=strict.algorithm, required_scopes=strict.required_scopes)
    assert await stock.verify_token(matrix.valid) is not None and await strict.verify_token(matrix.valid) is not None
    accepted_by_fastmcp = {case for case, token in matrix.hostile.items() if await stock.verify_token(token)}
    accepted_by_obokit = {case for case, token in matrix.hostile.items() if await strict.verify_token(token)}
    assert accepted_by_fastmcp == FASTMCP_GAPS
    assert accepted_by_obokit == set()


# -- the policy itself, at its edges (no server) ----------------------------------------------
NOW = 1_900_000_000
TENANT = "11111111-2222-3333-4444-555555555555"
SERVER_APP = "66666666-7777-8888-9999-000000000000"
BASE = {"iss": f"https://login.microsoftonline.com/{TENANT}/v2.0", "tid": TENANT, "iat": NOW, "nbf": NOW,
        "exp": NOW + HOUR, "scp": "mcp-access Task.Read", "oid": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "sub": "pairwise-subject", "ver": "2.0", "azp": SERVER_APP, "roles": ["Task.Read"]}


@pytest.mark.parametrize(("changes", "header", "reason"), [
    ({}, {}, None),
    ({"nbf": NOW + 60, "iat": NOW + 60}, {}, None),  # within the clock skew
    ({"nbf": NOW + 301}, {}, "not valid yet"),
    ({"iat": NOW + 301}, {}, "issued in the future"),
    ({"exp": str(NOW + HOUR)}, {}, "no valid exp"),
    ({"exp": True}, {}, "no valid exp"),
    ({"tid": None}, {}, "not this server's tenant"),
    ({"iss": f"https://login.microsoftonline.com/{OTHER_TENANT}/v2.0"}, {}, "not this server's tenant"),
    ({"idtyp": "app"}, {}, "app-only"),
    ({"scp": None, "roles": ["mcp-access"]}, {}, "app-only"),
    ({}, {"crit": []}, "critical header"),
    # the shape of each claim relied on, and the claims agreeing with each other
    ({"idtyp": "user"}, {}, None),
    ({"iat": None}, {}, "times out of order"),
    ({"iat": NOW, "exp": NOW}, {}, "times out of order"),
    ({"iat": NOW - 10, "nbf": NOW, "exp": NOW}, {}, "times out of order"),
    ({"exp": NOW + 28 * HOUR}, {}, None),
    ({"exp": NOW + 28 * HOUR + 1}, {}, "Entra issues none longer"),
    ({"tid": "not-a-guid", "iss": "https://login.microsoftonline.com/not-a-guid/v2.0"}, {"tenant": "not-a-guid"}, "not this server's tenant"),
    ({"ver": "1.0"}, {}, "does not match the v2 issuer"),
    ({"ver": None}, {}, "does not match the v2 issuer"),
    ({"iss": f"https://sts.windows.net/{TENANT}/", "azp": None, "appid": SERVER_APP}, {}, "does not match the v1 issuer"),
    ({"iss": f"https://sts.windows.net/{TENANT}/", "ver": "1.0", "azp": None, "appid": SERVER_APP}, {}, None),
    ({"iss": f"https://sts.windows.net/{TENANT}/", "ver": "1.0"}, {}, "no calling application (appid"),
    ({"idtyp": "device"}, {}, "not a token type"),
    ({"scp": ["mcp-access"]}, {}, "scp is not a space-separated string"),
    ({"scp": "mcp-access  Task.Read"}, {}, "scp is not a space-separated string"),
    ({"scp": "mcp-access\nTask.Read"}, {}, "scp is not a space-separated string"),
    ({"oid": "adele"}, {}, "oid is not a GUID"),
    ({"sub": ""}, {}, "no sub claim"),
    ({"roles": "Task.Read"}, {}, "roles is not a list of strings"),
    ({"roles": ["Task.Read", 7]}, {}, "roles is not a list of strings"),
    ({"azp": None}, {}, "no calling application (azp"),
    ({"azp": "vs-code"}, {}, "no calling application (azp"),
    ({"azp": "12345678-1234-1234-1234-123456789012"}, {}, "is not one this server trusts"),
    ({"azp": SERVER_APP.upper()}, {}, None),
])
def test_rejection_reason_at_the_edges(changes: dict, header: dict, reason: str | None) -> None:
    claims = {k: v for k, v in {**BASE, **changes}.items() if v is not None}
    tenant = header.pop("tenant", TENANT)
    found = rejection_reason(header, claims, tenant_id=tenant, now=NOW, trusted_callers=[SERVER_APP])
    assert (found is None) if reason is None else (found is not None and reason in found), found


@pytest.mark.parametrize(("configured", "changes", "accepted"), [
    (TENANT.upper(), {}, True),  # GUIDs compare case-insensitively
    (TENANT, {"tid": TENANT.upper()}, True),
    (TENANT, {"iss": f"https://login.microsoftonline.com/{TENANT.upper()}/v2.0"}, True),
    (TENANT.upper(), {"tid": OTHER_TENANT}, False),
    (TENANT.upper(), {"tid": None}, False),
    (TENANT.upper(), {"iss": f"https://login.microsoftonline.com/{OTHER_TENANT.upper()}/v2.0"}, False),
    (TENANT, {"tid": 12345}, False),
])
def test_tenant_ids_compare_case_insensitively(configured: str, changes: dict, accepted: bool) -> None:
    claims = {k: v for k, v in {**BASE, **changes}.items() if v is not None}
    found = rejection_reason({}, claims, tenant_id=configured, now=NOW)
    assert (found is None) if accepted else (found is not None and "not this server's tenant" in found), found


# -- direct mode: the same verifier, no proxy in front of it -----------------------------------
@pytest.fixture(scope="module")
def direct_server(emulator: Emulator, matrix: Matrix, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The workbook server in direct mode, trusting the calling app of `matrix.valid` (the server's own app)."""
    folder = tmp_path_factory.mktemp("token-matrix-direct")
    running = start_workbook_server(make_target(emulator, folder), name="token-matrix-direct", port=0,
                                    storage_dir=folder / "direct", registration=registrations(matrix.registration),
                                    mode="direct", trusted_callers=[matrix.registration.app_id])
    yield running
    running.stop()


async def test_direct_mode_accepts_the_valid_token_and_refuses_every_hostile_one(matrix: Matrix,
                                                                                 direct_server: RunningServer) -> None:
    assert (await initialize(direct_server, matrix.valid)).status_code == 200, "an Entra token goes straight in"
    for case, token in matrix.hostile.items():
        response = await initialize(direct_server, token)
        assert response.status_code == 401, f"direct mode accepted: {case}"
        assert_challenged(direct_server, response)


async def test_fastmcp_azure_jwt_verifier_alone_accepts_cases_obokit_closes(matrix: Matrix,
                                                                            direct_server: RunningServer) -> None:
    """What direct mode would accept with FastMCP's `AzureJWTVerifier` as it comes (README security table)."""
    strict = direct_server.mcp.auth.token_verifier
    assert isinstance(strict, EntraTokenVerifier)
    stock = AzureJWTVerifier(client_id=matrix.registration.app_id, tenant_id=strict.tenant_id,
                             required_scopes=["mcp-access"], base_authority=urlsplit(strict.jwks_uri).netloc)
    assert await stock.verify_token(matrix.valid) is not None
    accepted = {case for case, token in matrix.hostile.items() if await stock.verify_token(token)}
    assert accepted
    for case in accepted:
        assert await strict.verify_token(matrix.hostile[case]) is None, case
    print(f"\nAzureJWTVerifier alone accepts {len(accepted)} hostile tokens: {sorted(accepted)}")

