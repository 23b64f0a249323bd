"""The emulator itself: life cycle, persistence, environment, discovery, faults and Graph query rules."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
import uuid

import httpx
import jwt
import pytest

from obokit.emulator import Emulator, group_id, user_id
from tenant_setup import admin_headers, register_api, user_token, user_upn


def test_discovery_document_is_entra_shaped(emulator: Emulator) -> None:
    doc = httpx.get(f"{emulator.tenant_authority}/v2.0/.well-known/openid-configuration").json()
    assert doc["issuer"] == f"{emulator.authority}/{emulator.tenant_id}/v2.0"
    assert doc["token_endpoint"] == f"{emulator.tenant_authority}/oauth2/v2.0/token"
    # Entra does not advertise PKCE methods: the reason MCP clients need FastMCP's proxy.
    assert "code_challenge_methods_supported" not in doc


def test_jwks_publishes_current_and_next_key(emulator: Emulator) -> None:
    keys = httpx.get(f"{emulator.tenant_authority}/discovery/v2.0/keys").json()["keys"]
    assert len(keys) == 2
    assert {k["kty"] for k in keys} == {"RSA"}
    assert all(k["kid"] == k["x5t"] and k["issuer"].endswith("/v2.0") for k in keys)


def test_unknown_tenant_is_refused(emulator: Emulator) -> None:
    response = httpx.get(f"{emulator.authority}/not-a-tenant/v2.0/.well-known/openid-configuration")
    assert response.status_code == 400
    assert response.json()["error_codes"] == [90002]


def test_authorize_shows_error_page_for_unknown_client(emulator: Emulator) -> None:
    response = httpx.get(
        f"{emulator.tenant_authority}/oauth2/v2.0/authorize",
        params={"client_id": "11111111-2222-3333-4444-555555555555", "response_type": "code",
                "redirect_uri": "http://localhost/cb", "scope": "openid"},
    )
    assert response.status_code == 400
    assert "AADSTS700016" in response.text


def test_authorize_refuses_unregistered_redirect_but_allows_any_loopback_port(emulator: Emulator) -> None:
    reg = register_api(emulator, redirect_uris=["http://localhost/callback"])
    params = {"client_id": reg.app_id, "response_type": "code", "scope": reg.scope}
    wrong = httpx.get(f"{emulator.tenant_authority}/oauth2/v2.0/authorize",
                      params={**params, "redirect_uri": "https://evil.example/callback"})
    assert wrong.status_code == 400 and "AADSTS50011" in wrong.text
    loopback = httpx.get(f"{emulator.tenant_authority}/oauth2/v2.0/authorize",
                         params={**params, "redirect_uri": "http://localhost:53123/callback"})
    assert loopback.status_code == 200 and "Pick an account" in loopback.text


def test_graph_requires_a_token(emulator: Emulator) -> None:
    response = httpx.get(f"{emulator.graph_url}/me")
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "InvalidAuthenticationToken"
    assert error["message"] == "Access token is empty."
    assert set(error["innerError"]) >= {"date", "request-id", "client-request-id"}


def test_me_with_an_app_only_token_is_a_bad_request(emulator: Emulator) -> None:
    response = httpx.get(f"{emulator.graph_url}/me", headers=admin_headers(emulator))
    assert response.status_code == 400


def test_group_members_show_nesting(emulator: Emulator) -> None:
    members = httpx.get(f"{emulator.graph_url}/groups/{group_id('all-staff')}/members",
                        headers=admin_headers(emulator)).json()["value"]
    assert {m["displayName"] for m in members} == {"Finance", "Engineering"}


def test_patch_identifier_uri_on_unverified_domain_is_rejected(emulator: Emulator) -> None:
    reg = register_api(emulator)
    response = httpx.patch(f"{emulator.graph_url}/applications/{reg.object_id}", headers=admin_headers(emulator),
                           json={"identifierUris": ["https://myapi.example.com"]})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "HostNameNotOnVerifiedDomain"


def test_graph_faults_latency_errors_and_throttling(fresh_faults: Emulator) -> None:
    emu, headers = fresh_faults, admin_headers(fresh_faults)
    emu.faults.set_latency("graph", 150)
    started = time.perf_counter()
    assert httpx.get(f"{emu.graph_url}/users", headers=headers).status_code == 200
    assert time.perf_counter() - started >= 0.15
    emu.faults.set_latency("graph", 0)

    emu.faults.fail("graph", count=2, status=503)
    statuses = [httpx.get(f"{emu.graph_url}/users", headers=headers).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]

    emu.faults.throttle("graph", count=1, retry_after=7)
    throttled = httpx.get(f"{emu.graph_url}/users", headers=headers)
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "7"
    assert throttled.json()["error"]["code"] == "TooManyRequests"


def test_identity_faults_use_entra_error_shape(fresh_faults: Emulator) -> None:
    fresh_faults.faults.fail("identity", count=1, status=503)
    response = httpx.post(f"{fresh_faults.tenant_authority}/oauth2/v2.0/token", data={"grant_type": "client_credentials"})
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    with pytest.raises(ValueError):
        fresh_faults.faults.fail("nonsense")


def test_state_survives_restart_and_reset_replays_ids(tmp_path) -> None:
    before = dict(os.environ)
    first = Emulator(tmp_path).start()
    assert os.environ["SSL_CERT_FILE"] == first.ca_bundle == os.environ["REQUESTS_CA_BUNDLE"]
    reg = register_api(first, name="survivor")
    kid = first.keys.current.kid
    first.close()
    assert {k: os.environ.get(k) for k in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")} == {
        k: before.get(k) for k in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
    }

    second = Emulator(tmp_path)
    started = time.perf_counter()
    second.start()
    start_seconds = time.perf_counter() - started
    try:
        assert second.keys.current.kid == kid  # keys and certificates are reused, not regenerated
        apps = httpx.get(f"{second.graph_url}/applications", headers=admin_headers(second)).json()["value"]
        assert [a["appId"] for a in apps] == [reg.app_id]
        second.reset()
        assert httpx.get(f"{second.graph_url}/applications", headers=admin_headers(second)).json()["value"] == []
        again = register_api(second, name="survivor")
        assert again.app_id == reg.app_id  # deterministic ids after a reset
    finally:
        second.close()
    assert start_seconds < 5  # generous bound; the real figure is reported by the benchmark


def test_standalone_cli_serves_and_stops(tmp_path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "obokit.cli", "emulator", "serve", "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        lines = [process.stdout.readline() for _ in range(7)]  # type: ignore[union-attr]
        authority = next(line.split("=", 1)[1].strip() for line in lines if "AZURE_AUTHORITY_HOST=" in line)
        bundle = next(line.split("=", 1)[1].strip() for line in lines if "SSL_CERT_FILE=" in line)
        health = httpx.get(f"{authority}/_emulator/health", verify=ssl.create_default_context(cafile=bundle)).json()
        assert health["status"] == "ok"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_roles_claim_follows_app_role_assignments_including_groups(emulator: Emulator) -> None:
    read_id, write_id = str(uuid.uuid4()), str(uuid.uuid4())
    roles = [
        {"id": rid, "value": value, "displayName": value, "description": value,
         "allowedMemberTypes": ["User"], "isEnabled": True}
        for rid, value in ((read_id, "Task.Read"), (write_id, "Task.Write"))
    ]
    reg = register_api(emulator, name="roles api", redirect_uris=["http://localhost/callback"], app_roles=roles)
    headers = admin_headers(emulator)
    assign = f"{emulator.graph_url}/servicePrincipals/{reg.sp_id}/appRoleAssignedTo"
    # Bruno directly; Chen only through the Engineering group.
    for principal, role in ((user_id("bruno"), write_id), (group_id("engineering"), read_id)):
        response = httpx.post(assign, headers=headers, json={"principalId": principal, "resourceId": reg.sp_id, "appRoleId": role})
        assert response.status_code == 201
    duplicate = httpx.post(assign, headers=headers, json={"principalId": user_id("bruno"), "resourceId": reg.sp_id, "appRoleId": write_id})
    assert duplicate.status_code == 409

    def roles_of(upn: str) -> list[str] | None:
        claims = jwt.decode(user_token(emulator, reg, upn, "http://localhost/callback"), options={"verify_signature": False})
        return claims.get("roles")

    assert roles_of(user_upn("bruno")) == ["Task.Write"]
    assert roles_of(user_upn("chen")) == ["Task.Read"]
    assert roles_of(user_upn("adele")) is None
