"""Deterministic identifiers for the demo tenant.

Every object the emulator creates gets a GUID derived from a namespace and a stable
name (seeded objects) or a persisted sequence number (objects created at run time).
A reset therefore replays the same ids, which keeps notebook outputs stable.
"""

from __future__ import annotations

import base64
import uuid

NAMESPACE = uuid.UUID("5b0c3f6e-6a51-4c2e-9a57-0b6b0e1f0c11")

TENANT_ID = str(uuid.uuid5(NAMESPACE, "tenant"))
TENANT_DOMAIN = "obokitdemo.onmicrosoft.com"
TENANT_NAME = "OBOkit Demo"
SHAREPOINT_HOST = "obokitdemo.sharepoint.com"

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GRAPH_RESOURCE = "https://graph.microsoft.com"
# The public client id of "Microsoft Graph Command Line Tools", used by learners to sign in as admin.
GRAPH_CLI_APP_ID = "14d82eec-204b-4c2f-b7e8-296a70dab67e"
# Visual Studio Code's first-party app: its Microsoft sign-in (pre-authorized on MCP servers, microsoft/vscode#283453)
VS_CODE_APP_ID = "aebc6443-996d-45c2-90f0-388ff96faa56"


def stable_id(*parts: object) -> str:
    """A GUID that is always the same for the same parts."""
    return str(uuid.uuid5(NAMESPACE, "/".join(str(p) for p in parts)))


def stable_key_id(*parts: object) -> str:
    """A 43-character base64url id, always the same for the same parts: the form of Graph's ids for
    oauth2PermissionGrants and appRoleAssignments (serviceprincipal-post-approleassignedto.md)."""
    raw = uuid.uuid5(NAMESPACE, "/".join(map(str, parts))).bytes + uuid.uuid5(NAMESPACE, "/".join(map(str, (*parts, 2)))).bytes
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# The demo tenant's user-assigned managed identity, as Azure shows one: a client id (its service principal's
# appId), a principal (object) id (the service principal's id) and an Azure resource id (`az identity show`).
MANAGED_IDENTITY_NAME = "obokit-mcp-identity"
MANAGED_IDENTITY_CLIENT_ID = stable_id("managed-identity", "client", MANAGED_IDENTITY_NAME)
MANAGED_IDENTITY_PRINCIPAL_ID = stable_id("managed-identity", "principal", MANAGED_IDENTITY_NAME)
SUBSCRIPTION_ID = stable_id("subscription")
MANAGED_IDENTITY_RESOURCE_ID = (
    f"/subscriptions/{SUBSCRIPTION_ID}/resourcegroups/obokit-demo/providers/"
    f"Microsoft.ManagedIdentity/userAssignedIdentities/{MANAGED_IDENTITY_NAME}"
)
