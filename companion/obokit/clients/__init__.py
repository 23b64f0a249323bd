"""Clients of the workbook server and of Graph: the MCP clients (FastMCP's and the official SDK's), the headless
browser that signs users in for them, and a Graph SDK client for any Graph endpoint."""
