# Replaces the starter cell of 09-proxy-vs-direct: a direct server's verifier that trusts VS Code only.
from fastmcp.server.auth.providers.azure import AzureJWTVerifier
from obokit.server.verifier import EntraTokenVerifier

stock = AzureJWTVerifier(client_id=regs.mcp_server_client_id, tenant_id=target.tenant_id,
                         required_scopes=["mcp-access"], base_authority=target.authority_host)
only_vs_code = [VS_CODE_CLIENT_ID]
strict = EntraTokenVerifier.like(stock, tenant_id=target.tenant_id, trusted_callers=only_vs_code)
verdict = await strict.verify_token(entra_token)
print("the task client's token:", "refused" if verdict is None else f"accepted (azp {verdict.claims['azp']})")
