"""The whole workbook, twice in a row on one tenant, converges on the same directory objects.

Each notebook runs in a fresh kernel (nbclient, as `make workbook` does) against one freshly
seeded emulator state folder: 00..07, then a snapshot of what the workbook created, then 08 and a
check that nothing is left; and the same again. The second round must pass as well, end with the
same objects (one of each registration, secret, grant and role assignment) and clean up as fully.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from obokit.emulator.store import Store
from obokit.provisioning import GRAPH_APP_ID, MCP_SERVER_APP, TASK_API_APP, TASK_CLIENT_APP
from obokit.workbook import run_notebook

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CLEANUP = NOTEBOOKS / "08-cleanup.ipynb"
PREFIX = "obokit workbook"

pytestmark = [pytest.mark.slow, pytest.mark.emulator, pytest.mark.timeout(900)]

EXPECTED_AFTER_06 = {
    "applications": [(MCP_SERVER_APP, 1), (TASK_API_APP, 1), (TASK_CLIENT_APP, 0)],  # (name, live secrets)
    "service principals": [MCP_SERVER_APP, TASK_API_APP, TASK_CLIENT_APP],
    "admin grants": [
        (MCP_SERVER_APP, "Microsoft Graph",
         ("GroupMember.Read.All", "Sites.Read.All", "User.Read", "email", "offline_access", "openid", "profile")),
        (TASK_API_APP, "Microsoft Graph", ("User.Read",)),
    ],
    "role assignments": sorted(
        (api, user, role)
        for api in (MCP_SERVER_APP, TASK_API_APP)
        for user, role in (("Bruno Diaz", "Task.Read"), ("Bruno Diaz", "Task.Write"), ("Chen Li", "Task.Read"))
    ),
}


def snapshot(state_dir: Path) -> dict[str, Any]:
    """The workbook's objects in the emulator's directory, without ids (those change on re-creation)."""
    store = Store(state_dir / "emulator.sqlite3")
    try:
        sps = {sp["id"]: sp["displayName"] for sp in store.all("servicePrincipals")}
        ours = {oid for oid, name in sps.items() if name.startswith(PREFIX)}
        users = {u["id"]: u["displayName"] for u in store.all("users")}
        apps = sorted((a["displayName"], len(a.get("passwordCredentials", [])))
                      for a in store.all("applications") if (a.get("displayName") or "").startswith(PREFIX))
        grants = [g for g in store.all("oauth2PermissionGrants") if {g["clientId"], g["resourceId"]} & ours]
        roles = {}
        for sp in store.all("servicePrincipals"):
            app = store.find_one("applications", appId=sp["appId"]) or {}
            roles.update({r["id"]: r["value"] for r in app.get("appRoles", [])})
        return {
            "applications": apps,
            "service principals": sorted(sps[i] for i in ours),
            "admin grants": sorted((sps[g["clientId"]], sps[g["resourceId"]], tuple(sorted(g["scope"].split())))
                                   for g in grants if g["consentType"] == "AllPrincipals"),
            "user grants": sorted((sps[g["clientId"]], sps[g["resourceId"]], users.get(g["principalId"]),
                                   tuple(sorted(g["scope"].split())))
                                  for g in grants if g["consentType"] == "Principal"),
            "role assignments": sorted((sps[a["resourceId"]], a["principalDisplayName"], roles.get(a["appRoleId"]))
                                       for a in store.all("appRoleAssignments") if a["resourceId"] in ours),
        }
    finally:
        store.close()


def run_round(notebooks: list[Path], state_dir: Path) -> dict[str, Any]:
    for path in notebooks:
        error = run_notebook(path, timeout=120)
        assert error is None, f"{path.name} failed:\n{str(error)[-3000:]}"
    after_06 = snapshot(state_dir)
    error = run_notebook(CLEANUP, timeout=120)
    assert error is None, f"{CLEANUP.name} failed:\n{str(error)[-3000:]}"
    after_cleanup = snapshot(state_dir)
    assert after_cleanup == {"applications": [], "service principals": [], "admin grants": [], "user grants": [],
                        "role assignments": []}, "08-cleanup left objects behind"
    return after_06


def test_workbook_runs_twice_to_the_same_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebooks = sorted(p for p in NOTEBOOKS.glob("*.ipynb") if p != CLEANUP)
    assert CLEANUP.exists() and notebooks, "the workbook's notebooks are missing"
    state_dir = tmp_path / "state"
    monkeypatch.setenv("OBOKIT_STATE_DIR", str(state_dir))  # the kernels inherit this environment
    monkeypatch.setenv("OBOKIT_TARGET", "emulator")
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "1")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")

    first = run_round(notebooks, state_dir)
    assert {k: v for k, v in first.items() if k != "user grants"} == EXPECTED_AFTER_06
    assert all(resource == "Microsoft Graph" or client.startswith(PREFIX) for client, resource, *_ in first["user grants"])

    second = run_round(notebooks, state_dir)
    assert second == first, "the second run of the workbook ended with different objects"


def test_snapshot_sees_graph_by_its_app_id(tmp_path: Path) -> None:
    """The snapshot names Microsoft Graph's seeded service principal (a guard for the expectations above)."""
    from obokit.emulator import Emulator

    Emulator(tmp_path).close()  # seeds the state folder
    store = Store(tmp_path / "emulator.sqlite3")
    try:
        assert store.find_one("servicePrincipals", appId=GRAPH_APP_ID)["displayName"] == "Microsoft Graph"
    finally:
        store.close()
    assert snapshot(tmp_path)["service principals"] == []
