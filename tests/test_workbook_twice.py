"""Every notebook run twice on one tenant leaves exactly one of each object; the clean-up removes exactly those.

The notebooks run in fresh kernels (nbclient, as `make workbook` does) against one freshly seeded
emulator state folder, found by glob (the clean-up notebook is the one named `*cleanup*`):

1. every notebook but the clean-up, then a count of the emulator's directory;
2. the same notebooks again on the same state, *without* cleaning up in between, and a second
   count: still one application, service principal, grant and role assignment of each kind, one
   live secret per confidential app (rotated: a new key id, never a second secret), the same object
   ids (found and updated, not deleted and re-created), no collection grown by a single object,
   and no MCP client registered again with a server's OAuth proxy (the notebooks' clients keep their
   registration per server URL and account, and the servers come back at their URL);
3. the clean-up, twice: it removes exactly what the workbook created (the directory is back to
   the seeded tenant), and a second run finds nothing to remove.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from dotenv import dotenv_values

from obokit.emulator.seed import demo_tenant
from obokit.emulator.store import Store
from obokit.tenant.provisioning import GRAPH_APP_ID, MCP_SERVER_APP, SECRET_KEYS, TASK_API_APP, TASK_CLIENT_APP
from obokit.workbook import run_notebook

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PREFIX = "obokit workbook"
# Directory objects (what Graph lists). Refresh tokens are the emulator's private sign-in state,
# one per sign-in as in Entra, and not objects anybody could clean up.
DIRECTORY = ("applications", "servicePrincipals", "oauth2PermissionGrants", "appRoleAssignments", "users", "groups", "sites")

pytestmark = [pytest.mark.slow, pytest.mark.emulator, pytest.mark.timeout(1200)]

ROLE_ASSIGNMENTS = sorted(
    (api, user, role)
    for api in (MCP_SERVER_APP, TASK_API_APP)
    for user, role in (("Bruno Diaz", "Task.Read"), ("Bruno Diaz", "Task.Write"), ("Chen Li", "Task.Read"))
)
EXPECTED = {  # after the workbook, before its clean-up: exactly these, however often it ran
    "applications": [MCP_SERVER_APP, TASK_API_APP, TASK_CLIENT_APP],
    # 08-secretless replaces the server's secret by a certificate and a federated credential (a managed identity)
    "live secrets": {MCP_SERVER_APP: 0, TASK_API_APP: 1, TASK_CLIENT_APP: 0},
    "certificates": {MCP_SERVER_APP: 1, TASK_API_APP: 0, TASK_CLIENT_APP: 0},
    "federated credentials": {MCP_SERVER_APP: 1, TASK_API_APP: 0, TASK_CLIENT_APP: 0},
    "service principals": [MCP_SERVER_APP, TASK_API_APP, TASK_CLIENT_APP],
    "admin grants": [
        (MCP_SERVER_APP, "Microsoft Graph",
         ("GroupMember.Read.All", "Sites.Read.All", "User.Read", "email", "offline_access", "openid", "profile")),
        (TASK_API_APP, "Microsoft Graph", ("User.Read",)),
    ],
    "role assignments": ROLE_ASSIGNMENTS,
}


def cleanup_notebook() -> Path:
    found = sorted(NOTEBOOKS.glob("*cleanup*.ipynb"))
    assert len(found) == 1, f"expected one clean-up notebook, found {[p.name for p in found]}"
    return found[0]


def read_store(state_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Every directory object of the emulator's state, by collection and id."""
    store = Store(state_dir / "emulator.sqlite3")
    try:
        return {collection: {o["id"]: o for o in store.all(collection)} for collection in DIRECTORY}
    finally:
        store.close()


def workbook_view(state: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The workbook's objects by name (counts are in the lists), and their ids for identity checks."""
    sps = {i: sp["displayName"] for i, sp in state["servicePrincipals"].items()}
    ours = {i for i, name in sps.items() if name.startswith(PREFIX)}
    users = {i: u["displayName"] for i, u in state["users"].items()}
    apps = [a for a in state["applications"].values() if (a.get("displayName") or "").startswith(PREFIX)]
    grants = [g for g in state["oauth2PermissionGrants"].values() if {g["clientId"], g["resourceId"]} & ours]
    assignments = [a for a in state["appRoleAssignments"].values() if a["resourceId"] in ours or a["principalId"] in ours]
    roles = {r["id"]: r["value"] for a in state["applications"].values() for r in a.get("appRoles", [])}
    return {
        "applications": sorted(a["displayName"] for a in apps),
        "live secrets": {a["displayName"]: len(a.get("passwordCredentials", [])) for a in apps},
        "certificates": {a["displayName"]: len(a.get("keyCredentials", [])) for a in apps},
        "federated credentials": {a["displayName"]: len(a.get("_federatedIdentityCredentials", [])) for a in apps},
        "service principals": sorted(sps[i] for i in ours),
        "admin grants": sorted((sps[g["clientId"]], sps[g["resourceId"]], tuple(sorted(g["scope"].split())))
                               for g in grants if g["consentType"] == "AllPrincipals"),
        "user grants": sorted((sps[g["clientId"]], sps[g["resourceId"]], users.get(g["principalId"]),
                               tuple(sorted(g["scope"].split())))
                              for g in grants if g["consentType"] == "Principal"),
        "role assignments": sorted((sps[a["resourceId"]], a["principalDisplayName"], roles.get(a["appRoleId"]))
                                   for a in assignments),
        # not compared with EXPECTED: ids, to tell "found again" from "deleted and re-created"
        "_ids": {
            "applications": sorted(a["id"] for a in apps),
            "service principals": sorted(ours),
            "role assignments": sorted(a["id"] for a in assignments),
        },
        "_secret key ids": sorted(c["keyId"] for a in apps for c in a.get("passwordCredentials", [])),
    }


def seeded_ids() -> dict[str, set[str]]:
    """The ids of the freshly seeded demo tenant's directory objects, by collection."""
    ids: dict[str, set[str]] = {c: set() for c in DIRECTORY}
    for collection, obj in demo_tenant()[0]:
        if collection in ids:
            ids[collection].add(obj["id"])
    return ids


def proxy_clients(state_dir: Path) -> dict[str, int]:
    """MCP clients registered (DCR) in each workbook server's persistent OAuth proxy store."""
    servers = state_dir / "mcp-servers"
    return {str(d.parent.parent.relative_to(servers)): len(list(d.glob("*.json")))
            for d in sorted(servers.glob("**/oauth-proxy/*oauth_proxy_clients*")) if d.is_dir()}


def server_ports(state_dir: Path) -> dict[str, str]:
    """The port each workbook server remembers (obokit.server.app.server_socket): a server that had to move
    makes its clients register again, by design."""
    return {p.stem: p.read_text() for p in (state_dir / "mcp-servers").glob("*.port")}


def counts(state: dict[str, dict[str, dict[str, Any]]]) -> dict[str, int]:
    return {collection: len(objects) for collection, objects in state.items()}


def run(path: Path) -> None:
    error = run_notebook(path, timeout=120)
    assert error is None, f"{path.name} failed:\n{str(error)[-3000:]}"


def test_every_notebook_twice_leaves_one_of_each_and_cleanup_removes_exactly_them(workbook_env: Path) -> None:
    state_dir = workbook_env
    cleanup = cleanup_notebook()
    notebooks = sorted(p for p in NOTEBOOKS.glob("*.ipynb") if p != cleanup)
    assert len(notebooks) >= 7, "the workbook's notebooks are missing"

    for path in notebooks:
        run(path)
    first = read_store(state_dir)
    clients_once = proxy_clients(state_dir)
    ports_once = server_ports(state_dir)
    once = workbook_view(first)
    assert {k: v for k, v in once.items() if k in EXPECTED} == EXPECTED
    assert all(resource == "Microsoft Graph" or client.startswith(PREFIX) for client, resource, *_ in once["user grants"])

    for path in notebooks:  # again, on the same tenant, without the clean-up in between
        run(path)
    second = read_store(state_dir)
    twice = workbook_view(second)
    assert {k: v for k, v in twice.items() if k in EXPECTED} == EXPECTED, "a second run piled up objects"
    assert twice["user grants"] == once["user grants"]
    assert counts(second) == counts(first), "a second run grew a directory collection"
    assert twice["_ids"] == once["_ids"], "a second run re-created objects instead of finding them"
    assert len(twice["_secret key ids"]) == 1 and not set(twice["_secret key ids"]) & set(once["_secret key ids"]), \
        "each run rotates the task API's secret: a new key id replaces the old one (08 removes the server's)"
    clients_twice = proxy_clients(state_dir)
    print(f"\nDCR clients in the servers' proxy stores after one run: {clients_once}, after two: {clients_twice}")
    assert clients_once and all(clients_once.values()), "the notebooks' clients registered with the workbook servers"
    moved = {name: (port, server_ports(state_dir).get(name)) for name, port in ports_once.items()
             if server_ports(state_dir).get(name) != port}
    assert clients_twice == clients_once, \
        f"a second run registered MCP clients with the OAuth proxies again (servers that changed port: {moved})"
    stored = Counter(line.split("=", 1)[0] for line in (state_dir / "workbook.env").read_text().splitlines() if "=" in line)
    expected_lines = {**dict.fromkeys(SECRET_KEYS, 1), "MCP_SERVER_CLIENT_SECRET": 0}  # 08 forgets the removed secret
    assert {key: stored[key] for key in SECRET_KEYS} == expected_lines, "one line per key in the secrets file"

    run(cleanup)
    cleaned = read_store(state_dir)
    assert {c: set(objects) for c, objects in cleaned.items()} == seeded_ids(), "the clean-up must leave exactly the seeded tenant"
    removed = {c: set(second[c]) - set(cleaned[c]) for c in DIRECTORY}
    assert {c: len(ids) for c, ids in removed.items() if ids} == {
        "applications": 3, "servicePrincipals": 3, "appRoleAssignments": 6,
        "oauth2PermissionGrants": 2 + len(twice["user grants"]),
    }
    assert dotenv_values(state_dir / "workbook.env").keys().isdisjoint(SECRET_KEYS), "the clean-up forgets the secrets"

    run(cleanup)  # nothing left to remove: it still runs, and changes nothing
    assert read_store(state_dir) == cleaned


def test_the_view_names_what_it_counts(tmp_path: Path) -> None:
    """A guard for the expectations above: the seeded tenant has Microsoft Graph and no workbook objects."""
    from obokit.emulator import Emulator

    Emulator(tmp_path).close()  # seeds the state folder
    state = read_store(tmp_path)
    assert any(sp["appId"] == GRAPH_APP_ID and sp["displayName"] == "Microsoft Graph" for sp in state["servicePrincipals"].values())
    view = workbook_view(state)
    assert view["applications"] == view["service principals"] == view["role assignments"] == []
    assert counts(state) == {c: len(ids) for c, ids in seeded_ids().items()}
