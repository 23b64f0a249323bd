# Solution of "Try it" in 04-tokens: a token is for the MCP server when its audience is the server's client id
# and its delegated scopes (scp, space-separated) include mcp-access.
def for_this_server(access_token: str) -> bool:
    """True when the token is for the MCP server's mcp-access scope (claims read, not verified)."""
    claims = Claims(access_token).claims
    return claims.get("aud") == regs.mcp_server_client_id and "mcp-access" in str(claims.get("scp", "")).split()
