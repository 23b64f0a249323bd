"""The tenant branch under test: the whole workbook with OBOKIT_TARGET=tenant, a scripted browser and person.

The slow test runs every notebook against a standalone emulator of the tenant-like profile
(`obokit.rehearsal`) and requires: every cell ran, no script refused a sign-in, no kernel imported
obokit.emulator, exactly one admin device-code prompt in the run, and no sign-in page rendered twice for
the same (account, server URL). The per-notebook table is printed (`pytest -s` shows it; on failure it is
in the assertion message).

The fast tests check the scripts themselves on an in-process emulator of the tenant profile: the browser
refuses the session's automatic sign-in of someone else, the BROWSER program returns at once and retries
the final redirect until the listener answers, and the person enters a printed device code.
"""

from __future__ import annotations

import os
import time
import webbrowser
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import msal
import pytest
from tenant_setup import register_api, user_upn

from obokit.emulator import GRAPH_CLI_APP_ID, Emulator
from obokit.rehearsal import scripted_browser
from obokit.rehearsal.person import ScriptedPerson
from obokit.rehearsal.plan import PLAN, NotebookPlan
from obokit.rehearsal.runner import rehearse
from obokit.rehearsal.rundir import RunDir
from obokit.rehearsal.signin import walk_sign_in

# The standalone emulator's profile for the whole-workbook run ("quick" only to work on the rehearsal itself).
PROFILE = os.environ.get("OBOKIT_REHEARSAL_PROFILE", "tenant")
ACCOUNTS = {"admin": user_upn("adele"), "analyst": user_upn("bruno"), "engineer": user_upn("chen")}


@pytest.fixture(scope="module")
def tenant_emulator(tmp_path_factory: pytest.TempPathFactory, loopback_only: list[str]) -> Iterator[Emulator]:
    """The tenant profile in-process (session cookie, consent pages), without replication delay."""
    with Emulator(tmp_path_factory.mktemp("tenant-profile"), profile="tenant", replication_delay=0).start() as emu:
        yield emu


@pytest.fixture(scope="module")
def app(tenant_emulator: Emulator) -> tuple[msal.ConfidentialClientApplication, str]:
    """A web app exposing a user-consentable scope, redirect URI http://localhost (any port); and that scope."""
    reg = register_api(tenant_emulator, name="rehearsal test app", redirect_uris=["http://localhost"])
    client = msal.ConfidentialClientApplication(reg.app_id, client_credential=reg.secret,
                                                authority=tenant_emulator.tenant_authority, instance_discovery=False)
    return client, reg.scope


def signed_in(result: dict[str, Any]) -> str | None:
    """Who an MSAL result is for (None: no token)."""
    return result.get("id_token_claims", {}).get("preferred_username")


def run_dir_for(folder: Path, notebook: str) -> RunDir:
    run_dir = RunDir(folder)
    run_dir.write_state({"notebook": notebook, "accounts": ACCOUNTS})
    return run_dir


async def test_the_browser_refuses_a_session_that_signs_in_someone_else(
    tenant_emulator: Emulator, app: tuple[msal.ConfidentialClientApplication, str], tmp_path: Path
) -> None:
    client, scope = app
    redirect_uri = "http://localhost:8765"  # never listened on: walk_sign_in stops before the delivery
    run_dir = run_dir_for(tmp_path, "06-two-tiers")  # its plan: the analyst, then the engineer

    async def sign_in(**hint: str):
        url = client.initiate_auth_code_flow([scope], redirect_uri=redirect_uri, response_mode="form_post",
                                             **hint)["auth_uri"]
        with run_dir.lock():
            return await walk_sign_in(run_dir, url, redirect_uri)

    first = await sign_in()
    assert first.failure is None, first.failure
    assert (first.signed_in, first.walk.pickers, first.walk.consents) == (ACCOUNTS["analyst"], 1, 1)
    assert "code=" in (first.callback_url or "") and first.form_post

    seq = tenant_emulator.events.last_seq
    second = await sign_in()  # for the engineer, but the session cookie signs the analyst in
    assert second.callback_url is None and second.walk.pickers == 0
    assert second.failure and ACCOUNTS["analyst"] in second.failure and ACCOUNTS["engineer"] in second.failure
    assert [(e["kind"], e["account"]) for e in tenant_emulator.events.since(seq)] == [("auto_sign_in", ACCOUNTS["analyst"])]

    third = await sign_in(login_hint=ACCOUNTS["engineer"])  # a hint: the picker, pre-selected for the engineer
    assert third.failure is None and (third.signed_in, third.walk.pickers, third.hinted) == (ACCOUNTS["engineer"], 1, True)


class _Catch(BaseHTTPRequestHandler):
    """A one-shot redirect URI listener: keeps the form_post body."""

    caught: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        type(self).caught.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_the_browser_program_returns_at_once_and_waits_for_a_late_listener(
    tenant_emulator: Emulator, app: tuple[msal.ConfidentialClientApplication, str], tmp_path: Path
) -> None:
    client, scope = app
    listener = HTTPServer(("127.0.0.1", 0), _Catch, bind_and_activate=False)
    listener.server_bind()  # the port is ours, but nobody accepts yet: connections are refused
    redirect_uri = f"http://localhost:{listener.server_address[1]}"
    run_dir_for(tmp_path, "04-tokens")
    flow = client.initiate_auth_code_flow([scope], redirect_uri=redirect_uri, response_mode="form_post",
                                          login_hint=ACCOUNTS["analyst"])
    started = time.monotonic()
    # What webbrowser.open does with BROWSER=<wrapper>: run it with the URL and wait for it to exit.
    assert webbrowser.GenericBrowser(str(scripted_browser.install(tmp_path))).open(flow["auth_uri"])
    assert time.monotonic() - started < 10
    time.sleep(1.5)  # the listener comes up late, as FastMCP's does
    listener.server_activate()
    listener.timeout = 60
    _Catch.caught = []
    with listener:
        listener.handle_request()
    assert _Catch.caught, "the browser never delivered the redirect"
    result = client.acquire_token_by_auth_code_flow(flow, dict(parse_qsl(_Catch.caught[0])))
    assert signed_in(result) == ACCOUNTS["analyst"], result.get("error_description")
    assert RunDir(tmp_path).records("failures") == []


def test_the_person_enters_a_printed_device_code(
        tenant_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No notebook has a device code for a demo user any more: a plan of this test's own names the engineer.
    monkeypatch.setitem(PLAN, "device-code-demo", NotebookPlan(device_codes=("engineer",)))
    run_dir = run_dir_for(tmp_path, "device-code-demo")
    public = msal.PublicClientApplication(GRAPH_CLI_APP_ID, authority=tenant_emulator.tenant_authority,
                                          instance_discovery=False)
    flow = public.initiate_device_flow(["https://graph.microsoft.com/User.Read"])
    person = ScriptedPerson(run_dir)
    notebook = tmp_path / "device-code-demo.ipynb"
    message = flow["message"]
    person.on_output(notebook, "before the prompt\n" + message[:40])  # a prompt may arrive in pieces
    person.on_output(notebook, message[40:] + "\n")
    person.on_output(notebook, message + "\n")  # printed twice: entered once
    # Entered before MSAL polls: a poll 5 s after the last request can meet the emulator closing that idle
    # keep-alive connection (uvicorn's 5 s default, the device code's interval is 5 s too).
    person.wait()
    result = public.acquire_token_by_device_flow(flow)
    assert signed_in(result) == ACCOUNTS["engineer"], result.get("error_description")
    [answer] = run_dir.records("observed")
    assert (answer["kind"], answer["account"], answer["ok"]) == ("device_code", ACCOUNTS["engineer"], True)
    assert answer["consents"] == 1  # a fresh tenant: the engineer consents to User.Read for the Graph CLI client
    assert run_dir.records("failures") == []


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_the_workbook_rehearsed_on_a_tenant_like_emulator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines: list[str] = []
    report = rehearse(tmp_path / "run", profile=PROFILE, echo=lines.append)
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    table = "\n".join(lines)
    assert [n.name for n in report.notebooks if not n.passed] == [], table
    assert report.admin_device_codes == 1, table
    assert report.repeated_sign_ins() == {}, table
