# Solution of "Try it" in 03-server-in-the-kernel: a second tool that reads the caller's app roles.
@mcp.tool
def my_roles() -> list[str]:
    """The caller's app roles."""
    return list(get_access_token().claims.get("roles") or [])
