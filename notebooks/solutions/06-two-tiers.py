# Solution of "Try it" in 06-two-tiers: the gate learns the role, and the tool is tagged with it.
gate.roles.add("Task.Admin")

@mcp.tool(tags={"Task.Admin"})
async def close_month() -> str:
    """Close the expense month (for Task.Admin only)."""
    return "month closed"
