"""`obokit cleanup`: list, then remove, what the workbook created in the target tenant.

The workbook's objects are the applications named in `obokit.tenant.provisioning.WORKBOOK_APPS` (what
01-app-registration creates) and everything hanging off them: their service principals, the
delegated permission grants those service principals hold (admin and user consent), the app
role assignments made to them, and their client secrets. `plan()` lists them without changing
anything (the default dry run); `remove()` deletes them with provisioning's
`remove_workbook_objects` and drops the registrations' keys from the secrets file.

    from obokit.tenant.cleanup import run_cleanup
    exit_code = run_cleanup(yes=False)   # dry run: prints what would be removed
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from msgraph import GraphServiceClient

from ..clients.graph import graph_client
from .provisioning import (
    WORKBOOK_APPS,
    delegated_grants,
    find_applications,
    find_service_principal,
    forget_secrets,
    remove_workbook_objects,
)
from .target import Target, connect, disconnect


@dataclass(frozen=True)
class Item:
    """One directory object the clean-up removes."""

    kind: str  # "application", "service principal", "delegated grant", "app role assignment", "client secret"
    description: str

    def __str__(self) -> str:
        return f"{self.kind:<20} {self.description}"


async def _pages(builder: Any) -> list[Any]:
    page = await builder.get()
    items = list(page.value or []) if page else []
    while page is not None and page.odata_next_link:
        page = await builder.with_url(page.odata_next_link).get()
        items.extend(page.value or [])
    return items


async def plan(graph: GraphServiceClient, names: tuple[str, ...] | list[str] = WORKBOOK_APPS) -> list[Item]:
    """What `remove()` would delete, in the order it deletes it; changes nothing."""
    items: list[Item] = []
    resources: dict[str, str] = {}
    for name in names:
        for app in await find_applications(graph, name):
            sp = await find_service_principal(graph, app.app_id)
            if sp is not None:
                for grant in await delegated_grants(graph, sp.id):
                    if grant.resource_id not in resources:
                        resource = await graph.service_principals.by_service_principal_id(grant.resource_id).get()
                        resources[grant.resource_id] = resource.display_name if resource else grant.resource_id
                    items.append(Item("delegated grant", f"{name!r} -> {resources[grant.resource_id]!r} "
                                                         f"({grant.consent_type}: {grant.scope})"))
                roles = {str(role.id): role.value for role in sp.app_roles or []}
                assigned_to = graph.service_principals.by_service_principal_id(sp.id).app_role_assigned_to
                for assignment in await _pages(assigned_to):
                    role = roles.get(str(assignment.app_role_id), "default access")
                    items.append(Item("app role assignment", f"{role} of {name!r} for {assignment.principal_display_name}"))
                items.append(Item("service principal", f"{name!r} (appId {app.app_id})"))
            for credential in app.password_credentials or []:
                items.append(Item("client secret", f"{credential.display_name!r} of {name!r}"))
            items.append(Item("application", f"{name!r} (appId {app.app_id})"))
    return items


async def remove(graph: GraphServiceClient, target: Target) -> tuple[dict[str, int], list[str]]:
    """Delete the workbook's objects; returns the counts removed and the secrets-file keys dropped."""
    removed = await remove_workbook_objects(graph, WORKBOOK_APPS)
    forgotten = await asyncio.to_thread(forget_secrets, target.secrets_file)
    return removed, forgotten


async def _cleanup(target: Target, yes: bool, out: Callable[[str], None]) -> int:
    graph = graph_client(target.admin_credential(), base_url=target.graph_url)
    items = await plan(graph)
    if not items:
        out("Nothing of the workbook is left in this tenant.")
        return 0
    out(f"{'Removing' if yes else 'Dry run: nothing is removed. Would remove'} {len(items)} objects:")
    for item in items:
        out(f"  {item}")
    if not yes:
        out("Run `obokit cleanup --yes` to remove them.")
        return 0
    removed, forgotten = await remove(graph, target)
    out("removed: " + ", ".join(f"{count} {kind}" for kind, count in removed.items()))
    if forgotten:
        out(f"dropped from {target.secrets_file.name}: {', '.join(forgotten)}")
    left = await plan(graph)
    if left:
        out(f"FAIL: {len(left)} objects are still there: " + "; ".join(map(str, left)))
        return 1
    out("Nothing of the workbook is left in this tenant.")
    return 0


def run_cleanup(*, yes: bool = False, out: Callable[[str], None] = print) -> int:
    """Dry run (default) or removal (`yes=True`) against the configured target; returns an exit code."""
    target = connect()
    where = "the emulator" if target.is_emulator else f"tenant {target.tenant_id}"
    out(f"Target: {where} (Graph {target.graph_url})")
    try:
        return asyncio.run(_cleanup(target, yes, out))
    finally:
        disconnect()


__all__ = ["Item", "plan", "remove", "run_cleanup"]
