"""obokit.trace: the hops of a run, recorded by httpx event hooks and redacted as they are recorded.

Against the session emulator, with real tokens and secrets: a token request and its answer keep only the
grant type, the scopes and the audience of the token; the workbook server's tool call records
MCP -> Entra (OBO) -> Graph; without admin consent the diagram ends at Entra's 400 AADSTS65001, no Graph hop.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastmcp import Client
from server_fixtures import make_target, register_workbook_server, registrations
from tenant_setup import user_upn

from obokit.clients.mcp_client import HeadlessOAuth
from obokit.emulator import Emulator, group_id
from obokit.server import RunningServer, start_workbook_server
from obokit.server.obo import JWT_BEARER
from obokit.trace import Trace

JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+")
FINANCE = group_id("finance")


def recorded_text(trace: Trace) -> str:
    """Everything a trace holds, as text: its events and its diagram."""
    return repr(trace.events) + "\n" + trace.mermaid_text(everything=True)


def fake_assertion() -> str:
    """A well-formed user token the emulator refuses (signed with a key of its own)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    return jwt.encode({"aud": "api://someone", "iat": now, "exp": now + 600, "sub": "x"}, key, algorithm="RS256")


async def test_token_requests_are_recorded_without_tokens_or_secrets(emulator: Emulator) -> None:
    trace = Trace()
    client_id, secret = emulator.automation_credentials()
    assertion = fake_assertion()
    token_url = f"{emulator.tenant_authority}/oauth2/v2.0/token"
    async with httpx.AsyncClient(event_hooks=trace.event_hooks("entra")) as http:
        granted = await http.post(token_url, data={"grant_type": "client_credentials", "client_id": client_id,
                                                   "client_secret": secret, "scope": "https://graph.microsoft.com/.default"})
        refused = await http.post(token_url, data={
            "grant_type": JWT_BEARER, "client_id": client_id, "client_secret": secret, "assertion": assertion,
            "scope": "https://graph.microsoft.com/User.Read", "requested_token_use": "on_behalf_of"})
    async with httpx.AsyncClient(event_hooks=trace.event_hooks("graph")) as http:
        me = await http.get(f"{emulator.graph_url}/applications?$filter=appId eq '{client_id}'&$select=id",
                            headers={"Authorization": f"Bearer {granted.json()['access_token']}"})
    assert granted.status_code == 200 and refused.status_code >= 400 and me.status_code == 200
    text = recorded_text(trace)
    for value in (secret, assertion, granted.json()["access_token"], client_id):
        assert value not in text
    assert not JWT.search(text) and "client_secret" not in text and "assertion" not in text

    request, answer, obo, refusal, graph, graph_answer = trace.events
    assert request.details == {"grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default"}
    assert answer.status == 200 and answer.details["aud"] in ("https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000")
    assert obo.details == {"grant_type": JWT_BEARER, "requested_token_use": "on_behalf_of",
                           "scope": "https://graph.microsoft.com/User.Read"}
    assert refusal.status == refused.status_code and refusal.details["aadsts"].startswith("AADSTS")
    assert graph.path.endswith("/applications?$filter&$select") and graph.details == {"bearer_aud": answer.details["aud"]}
    assert graph_answer.status == 200


def serve_traced(emulator: Emulator, folder: Path, *, consent: bool, name: str) -> Iterator[RunningServer]:
    reg = register_workbook_server(emulator, f"trace test {name}", consent=consent)
    server = start_workbook_server(make_target(emulator, folder), name=name, port=0, storage_dir=folder / name,
                                   registration=registrations(reg), trace=Trace())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def consented(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from serve_traced(emulator, tmp_path_factory.mktemp("trace"), consent=True, name="traced-consented")


@pytest.fixture(scope="module")
def unconsented(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from serve_traced(emulator, tmp_path_factory.mktemp("trace"), consent=False, name="traced-unconsented")


async def traced_group_check(server: RunningServer) -> tuple[Trace, object]:
    trace = server.trace
    assert trace is not None
    async with Client(trace.mcp_transport(server.mcp_url), auth=HeadlessOAuth(account=user_upn("bruno"))) as client:
        trace.clear()  # the sign-in and the session set-up are not part of the diagram
        result = await client.call_tool("check_group_membership", {"group_id": FINANCE}, raise_on_error=False)
    return trace, result


def shape(trace: Trace) -> list[tuple[str, str, int | None]]:
    return [(e.kind, e.role, e.status) for e in trace.hops()]


async def test_a_tool_call_records_mcp_obo_and_graph(consented: RunningServer) -> None:
    trace, result = await traced_group_check(consented)
    assert not result.is_error and result.structured_content["member"] is True
    assert shape(trace) == [("request", "mcp", None), ("request", "entra", None), ("response", "entra", 200),
                            ("request", "graph", None), ("response", "graph", 200), ("response", "mcp", 200)]
    call, obo, token, graph, _, answer = trace.hops()
    assert (call.details["rpc"], call.details["tool"]) == ("tools/call", "check_group_membership")
    assert call.details["bearer_aud"] != token.details["aud"]  # the client's token is for the MCP server
    assert obo.details["grant_type"] == JWT_BEARER and obo.details["scope"] == "https://graph.microsoft.com/GroupMember.Read.All"
    assert token.details["aud"] == graph.details["bearer_aud"] and "GroupMember.Read.All" in token.details["scp"]
    assert graph.method == "GET" and graph.path.endswith("/me/transitiveMemberOf/microsoft.graph.group?$filter&$count&$select")
    assert answer.details["is_error"] == "false"
    text = recorded_text(trace)
    assert not JWT.search(text) and "assertion" not in text


async def test_without_consent_the_diagram_stops_at_entra(consented: RunningServer, unconsented: RunningServer) -> None:
    trace, result = await traced_group_check(unconsented)
    assert result.is_error and "AADSTS65001" in result.content[0].text
    assert shape(trace) == [("request", "mcp", None), ("request", "entra", None), ("response", "entra", 400),
                            ("response", "mcp", 200)]
    assert trace.hops()[2].details == {"error": "invalid_grant", "aadsts": "AADSTS65001"}
    failure = trace.mermaid_text("without consent")
    assert "E-->>S: 400 invalid_grant AADSTS65001" in failure and "S->>G" not in failure
    assert "S-->>C: 200 tool error (isError)" in failure

    success_trace, _ = await traced_group_check(consented)
    success = success_trace.mermaid_text("with consent")
    assert "S->>G: GET " in success and "G-->>S: 200" in success and "AADSTS" not in success
    assert "E-->>S: 200 access token, aud=" in success and "S-->>C: 200 tool result" in success
    assert success.splitlines()[:6] == failure.splitlines()[:6]  # the same participants, drawn the same way
    assert ";" not in success.replace("#59;", "") and not JWT.search(success + failure)
    assert success_trace.mermaid("with consent")._repr_markdown_() == f"```mermaid\n{success}\n```"
