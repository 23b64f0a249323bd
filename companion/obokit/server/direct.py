"""The direct auth mode: the server as a pure resource server, with Entra as the clients' authorization server.

No OAuth proxy: the protected resource metadata (RFC 9728) names the tenant's v2 issuer as the authorization
server, MCP clients sign in at Entra themselves and send Entra's access token for the server's scope, and the server
only validates it (FastMCP's `RemoteAuthProvider` with `AzureJWTVerifier`, made stricter by
`obokit.server.verifier.EntraTokenVerifier`). The server keeps nothing of its clients: no registrations, no tokens.

Which clients can connect is decided in Entra: those pre-authorized on the server's scope
(`api.preAuthorizedApplications` of its app registration: the workbook's own client app, VS Code), whose users never
see a consent prompt, and which the server lists as trusted callers (the `azp` of their tokens). Entra has no dynamic
client registration, and compares the RFC 8707 `resource` that spec-following MCP clients send (the server's URL)
with the app's Application ID URIs, which must be on a verified domain (https): on localhost only clients that do
not send `resource` (MSAL, VS Code's Microsoft sign-in) get a token (others get AADSTS9010010).
"""

from __future__ import annotations

from collections.abc import Collection

from fastmcp.server.auth import RemoteAuthProvider
from fastmcp.server.auth.providers.azure import AzureJWTVerifier
from pydantic import AnyHttpUrl

from ..tenant.target import Target
from .proxy import REQUIRED_SCOPES, ServerRegistration
from .verifier import EntraTokenVerifier

# Visual Studio Code's first-party application id: it signs in to Entra with its own Microsoft authentication
# (learn.microsoft.com "Secure an MCP server with Entra ID"; pamelafox/azure-cosmosdb-identity-aware-mcp-server).
VS_CODE_CLIENT_ID = "aebc6443-996d-45c2-90f0-388ff96faa56"


def direct_auth(target: Target, registration: ServerRegistration, *, base_url: str,
                trusted_callers: Collection[str]) -> RemoteAuthProvider:
    """Entra as the authorization server of the server at `base_url`; tokens only from `trusted_callers` (app ids)."""
    stock = AzureJWTVerifier(client_id=registration.mcp_server_client_id, tenant_id=target.tenant_id,
                             required_scopes=REQUIRED_SCOPES, base_authority=target.authority_host)
    verifier = EntraTokenVerifier.like(stock, tenant_id=target.tenant_id, trusted_callers=trusted_callers)
    return RemoteAuthProvider(
        token_verifier=verifier,
        authorization_servers=[AnyHttpUrl(f"{target.tenant_authority}/v2.0")],
        base_url=base_url,
        scopes_supported=stock.scopes_supported,  # api://{appId}/mcp-access: what clients ask Entra for
        resource_name="obokit workbook server",
    )


__all__ = ["VS_CODE_CLIENT_ID", "direct_auth"]
