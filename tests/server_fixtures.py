"""The workbook server (`obokit.server`) for tests: its registration, its target, and serving it from a fixture.

Shared by every test module that runs the real server against the session emulator. A module's
fixture stays a few lines: `yield from serve_consented(emulator, folder, "my test", "my-server")`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
from tenant_setup import Registration, admin_headers, grant_graph_consent, register_api, user_upn

from obokit.emulator import Emulator, group_id, user_id
from obokit.emulator.ids import SHAREPOINT_HOST
from obokit.tenant.provisioning import Registrations
from obokit.server import RunningServer, start_workbook_server
from obokit.tenant.target import DemoDirectory, Target

FINANCE_SITE = f"{SHAREPOINT_HOST}:/sites/finance"
ENGINEERING_SITE = f"{SHAREPOINT_HOST}:/sites/engineering"
RECEIPT = {"date": "2026-11-02", "amount": 42.5, "category": "travel", "description": "Train to Lyon"}


def make_target(emu: Emulator, folder: Path) -> Target:
    """The workbook's target for `emu`, with the demo directory and a secrets file in `folder`."""
    return Target(
        kind="emulator", tenant_id=emu.tenant_id, authority=emu.authority, graph_url=emu.graph_url,
        demo=DemoDirectory(admin=user_upn("adele"), analyst=user_upn("bruno"), engineer=user_upn("chen"),
                           finance_group_id=group_id("finance"), finance_site=FINANCE_SITE,
                           engineering_site=ENGINEERING_SITE),
        secrets_file=folder / "workbook.env", emulator=emu,
    )


def register_workbook_server(emu: Emulator, name: str, *, consent: bool, also_readers: Iterable[str] = ()) -> Registration:
    """The registration of 01 in miniature: mcp-access, v2 tokens, two app roles assigned as in the workbook.

    bruno gets Task.Read and Task.Write, chen Task.Read, and each of `also_readers` Task.Read too.
    """
    role_ids = {"Task.Read": str(uuid.uuid4()), "Task.Write": str(uuid.uuid4())}
    roles = [{"id": rid, "value": value, "displayName": value, "description": value,
              "allowedMemberTypes": ["User"], "isEnabled": True} for value, rid in role_ids.items()]
    reg = register_api(emu, name=name, redirect_uris=["http://localhost:8000/auth/callback"], app_roles=roles)
    assign = f"{emu.graph_url}/servicePrincipals/{reg.sp_id}/appRoleAssignedTo"
    headers = admin_headers(emu)
    assignments = [("bruno", "Task.Read"), ("bruno", "Task.Write"), ("chen", "Task.Read")]
    for person, role in [*assignments, *((reader, "Task.Read") for reader in also_readers)]:
        body = {"principalId": user_id(person), "resourceId": reg.sp_id, "appRoleId": role_ids[role]}
        httpx.post(assign, headers=headers, json=body).raise_for_status()
    if consent:
        grant_graph_consent(emu, reg)
    return reg


def registrations(reg: Registration) -> Registrations:
    """The server's client id and secret as `obokit.server` takes them (what 01 writes to the secrets file)."""
    return Registrations(mcp_server_client_id=reg.app_id, mcp_server_client_secret=reg.secret)


def start(emu: Emulator, folder: Path, reg: Registration, name: str, port: int = 0) -> RunningServer:
    """Start the workbook server for `reg` in the background; its storage is `folder / name`."""
    return start_workbook_server(make_target(emu, folder), name=name, port=port, storage_dir=folder / name,
                                 registration=registrations(reg))


def serve(emu: Emulator, folder: Path, reg: Registration, name: str) -> Iterator[RunningServer]:
    """`start`, for a fixture to `yield from`: the server is stopped when the fixture ends."""
    running = start(emu, folder, reg, name)
    try:
        yield running
    finally:
        running.stop()


def serve_consented(emu: Emulator, folder: Path, label: str, name: str) -> Iterator[RunningServer]:
    """`serve` a fresh registration `label` (roles assigned, admin consent for Graph) as server `name`."""
    yield from serve(emu, folder, register_workbook_server(emu, label, consent=True), name)
