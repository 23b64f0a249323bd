"""The `obokit` command line, run as a subprocess: `doctor`, `cleanup` and `emulator serve`.

Each test gives the command a clean environment (no OBOKIT_/AZURE_/DEMO_ settings, no CA
variables), its own emulator state folder (OBOKIT_STATE_DIR) and a working folder without a
`.env`, so nothing of the developer's setup leaks in. The clean-up is checked against the
emulator's own store after the command has exited.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from server_fixtures import register_workbook_server
from tenant_setup import Registration, register_api

from obokit.emulator import Emulator
from obokit.tenant.provisioning import MCP_SERVER_APP, TASK_API_APP

ENTRY_POINT = Path(sys.executable).with_name("obokit")
COMMAND = [str(ENTRY_POINT)] if ENTRY_POINT.exists() else [sys.executable, "-m", "obokit.cli"]
OWN_PREFIXES = ("OBOKIT_", "AZURE_", "GRAPH_", "MCP_", "DEMO_")


def clean_env(state_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(OWN_PREFIXES) and k not in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")}
    return {**env, "OBOKIT_STATE_DIR": str(state_dir), **extra}


def obokit(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def statuses(output: str) -> dict[str, str]:
    """`{check name: status}` of the doctor's lines ("OK   name: detail")."""
    found = {}
    for line in output.splitlines():
        status, _, rest = line.partition(" ")
        if status in ("OK", "WARN", "FAIL"):
            found[rest.strip().split(":", 1)[0]] = status
    return found


# -- doctor -----------------------------------------------------------------------------------
def test_doctor_is_all_ok_on_a_healthy_emulator_setup(tmp_path: Path) -> None:
    result = obokit("doctor", cwd=tmp_path, env=clean_env(tmp_path / "state"))
    assert result.returncode == 0, result.stdout + result.stderr
    checks = statuses(result.stdout)
    assert "FAIL" not in checks.values()
    for name in ("python", "fastmcp", "mcp", "msal", "azure-identity", "msgraph-sdk", "SSL_CERT_FILE", "target",
                 "emulator CA", "authority", "graph", "notebooks"):
        assert checks.get(name) == "OK", (name, result.stdout)
    assert "OK   target: emulator" in result.stdout
    assert "OK   notebooks: all" in result.stdout and "00-welcome" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1].startswith(f"doctor: {len(checks)} checks, 0 FAIL")


def test_doctor_fails_for_a_tenant_target_without_settings(tmp_path: Path) -> None:
    result = obokit("doctor", cwd=tmp_path, env=clean_env(tmp_path / "state", OBOKIT_TARGET="tenant"))
    assert result.returncode == 1
    checks = statuses(result.stdout)
    assert checks["target"] == "FAIL" and "AZURE_TENANT_ID" in result.stdout
    assert checks["notebooks"] == "FAIL"
    assert checks["python"] == "OK"  # the rest of the report is still there


def test_doctor_fails_fast_on_an_unreachable_tenant_and_a_missing_ca_bundle(tmp_path: Path) -> None:
    port = closed_port()
    env = clean_env(
        tmp_path / "state", OBOKIT_TARGET="tenant", AZURE_TENANT_ID="00000000-0000-0000-0000-000000000001",
        AZURE_AUTHORITY_HOST=f"https://127.0.0.1:{port}", GRAPH_BASE_URL=f"https://127.0.0.1:{port}/v1.0",
        REQUESTS_CA_BUNDLE=str(tmp_path / "missing.pem"),
    )
    (tmp_path / ".env").write_text("".join(f"{line}\n" for line in demo_lines()))
    result = obokit("doctor", cwd=tmp_path, env=env)
    assert result.returncode == 1
    checks = statuses(result.stdout)
    assert checks["demo settings"] == "OK"  # read from .env
    assert checks["REQUESTS_CA_BUNDLE"] == "FAIL"
    assert checks["authority"] == "FAIL" and checks["graph"] == "FAIL" and "unreachable" in result.stdout
    assert checks["notebooks"] == "FAIL"


def demo_lines() -> list[str]:
    from obokit.cli import demo_lines as lines

    return lines()


# -- emulator serve ---------------------------------------------------------------------------
@contextmanager
def serving(tmp_path: Path, *options: str) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """`obokit emulator serve [options]` in the background; yields the process and the lines it printed first."""
    process = subprocess.Popen([*COMMAND, "emulator", "serve", *options, "--state-dir", str(tmp_path / "served")],
                               cwd=tmp_path, env=clean_env(tmp_path / "state"), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()  # type: ignore[union-attr]
    printed: list[str] = []
    try:
        while not printed or not printed[-1].startswith("State folder"):
            printed.append(lines.get(timeout=60).rstrip("\n"))
        yield process, printed
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """`obokit emulator serve` in the background; yields the process and the lines it printed first."""
    with serving(tmp_path) as running:
        yield running


def test_emulator_serve_prints_env_lines_doctor_accepts_them_and_sigterm_stops_it(
    served: tuple[subprocess.Popen[str], list[str]], tmp_path: Path
) -> None:
    process, printed = served
    env_lines = [line.strip() for line in printed if line.startswith("  ")]
    keys = [line.split("=", 1)[0] for line in env_lines]
    assert keys[:4] == ["OBOKIT_TARGET", "AZURE_TENANT_ID", "AZURE_AUTHORITY_HOST", "GRAPH_BASE_URL"]
    assert {"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "DEMO_ANALYST_UPN", "DEMO_FINANCE_SITE"} <= set(keys)
    assert not any("SECRET" in key for key in keys)

    # The printed lines, as a learner would paste them into .env (and export the CA bundle).
    (tmp_path / ".env").write_text("\n".join(env_lines) + "\n")
    bundle = dict(line.split("=", 1) for line in env_lines)["SSL_CERT_FILE"]
    result = obokit("doctor", cwd=tmp_path, env=clean_env(tmp_path / "state", SSL_CERT_FILE=bundle, REQUESTS_CA_BUNDLE=bundle))
    assert result.returncode == 0, result.stdout
    checks = statuses(result.stdout)
    assert checks["target"] == checks["authority"] == checks["graph"] == checks["notebooks"] == "OK"
    assert "OK   target: tenant" in result.stdout

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0


# -- cleanup ----------------------------------------------------------------------------------
@pytest.fixture
def provisioned(tmp_path: Path) -> tuple[Path, Registration]:
    """A state folder holding the workbook's server app (roles, consent) and task API, like 01 + 02 leave it."""
    state = tmp_path / "state"
    emulator = Emulator(state).start()
    try:
        server = register_workbook_server(emulator, MCP_SERVER_APP, consent=True)
        register_api(emulator, name=TASK_API_APP)
        register_api(emulator, name="not the workbook's")
    finally:
        emulator.close()
    (state / "workbook.env").write_text(f"MCP_SERVER_CLIENT_ID={server.app_id}\nMCP_SERVER_CLIENT_SECRET={server.secret}\n"
                                        "MCP_PROXY_SIGNING_KEY=kept\n")
    return state, server


def directory(state: Path) -> dict[str, int]:
    """What the emulator's store holds of the workbook (read after the command exited)."""
    emulator = Emulator(state)
    try:
        store = emulator.store
        apps = [a for name in (MCP_SERVER_APP, TASK_API_APP) for a in store.find("applications", displayName=name)]
        sps = [s for a in apps for s in store.find("servicePrincipals", appId=a["appId"])]
        sp_ids = {s["id"] for s in sps}
        return {
            "applications": len(apps),
            "service principals": len(sps),
            "grants": sum(g["clientId"] in sp_ids for g in store.all("oauth2PermissionGrants")),
            "role assignments": sum(r["resourceId"] in sp_ids for r in store.all("appRoleAssignments")),
            "other apps": len(store.find("applications", displayName="not the workbook's")),
        }
    finally:
        emulator.close()


def test_cleanup_dry_run_lists_and_keeps_then_yes_removes(provisioned: tuple[Path, Registration], tmp_path: Path) -> None:
    state, server = provisioned
    before = directory(state)
    assert before == {"applications": 2, "service principals": 2, "grants": 1, "role assignments": 3, "other apps": 1}

    dry = obokit("cleanup", cwd=tmp_path, env=clean_env(state))
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "Dry run: nothing is removed" in dry.stdout
    listed = [line.strip() for line in dry.stdout.splitlines() if line.startswith("  ")]
    kinds = [line.split("  ", 1)[0] for line in listed]
    assert kinds.count("application") == 2 and kinds.count("service principal") == 2
    assert kinds.count("app role assignment") == 3 and kinds.count("delegated grant") == 1
    assert kinds.count("client secret") == 2
    assert any("Task.Write" in line and "Bruno Diaz" in line for line in listed)
    assert "not the workbook's" not in dry.stdout
    assert server.secret not in dry.stdout + dry.stderr
    assert directory(state) == before  # nothing removed

    done = obokit("cleanup", "--yes", cwd=tmp_path, env=clean_env(state))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "removed: 1 grants, 3 role assignments, 2 secrets, 2 service principals, 2 applications" in done.stdout
    assert "Nothing of the workbook is left" in done.stdout
    assert server.secret not in done.stdout + done.stderr
    assert directory(state) == {"applications": 0, "service principals": 0, "grants": 0, "role assignments": 0,
                                "other apps": 1}
    secrets_file = (state / "workbook.env").read_text()
    assert "MCP_SERVER_CLIENT_SECRET" not in secrets_file and "MCP_PROXY_SIGNING_KEY=kept" in secrets_file

    again = obokit("cleanup", cwd=tmp_path, env=clean_env(state))
    assert again.returncode == 0 and "Nothing of the workbook is left" in again.stdout
