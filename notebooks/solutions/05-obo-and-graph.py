# Solution of "Try it" in 05-obo-and-graph: the caller's groups, read from Graph on their behalf.
@mcp.tool
async def my_groups() -> list[str]:
    """The display names of the caller's groups, read from Microsoft Graph on their behalf."""
    assertion = get_access_token().token
    result = await asyncio.to_thread(lambda: server_app.acquire_token_on_behalf_of(assertion, [GROUP_READ]))
    if "access_token" not in result:
        raise ToolError(f"Entra refused the on-behalf-of exchange: {result['error_description'].splitlines()[0]}")
    async with httpx.AsyncClient(base_url=target.graph_url) as http:
        response = await http.get("/me/memberOf", headers={"Authorization": f"Bearer {result['access_token']}"})
    response.raise_for_status()
    groups = [entry for entry in response.json()["value"] if entry.get("@odata.type") == "#microsoft.graph.group"]
    return sorted(group["displayName"] for group in groups)
