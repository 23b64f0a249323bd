"""The MCP server the workbook teaches, one concern per module.

* `app` - the FastMCP server and serving it in the kernel (`start_workbook_server`, `build_server`);
* `proxy` - the proxy auth mode: FastMCP's OAuth proxy (`AzureProvider`) and its encrypted stores;
* `verifier` - the stricter token checks obokit adds to FastMCP's (`harden`);
* `middleware`, `tools`, `expenses`, `audit` - who is calling, what they may do, what they did;
* `obo`, `obo_cache` - the On-Behalf-Of exchange and its cache.

The names most notebooks need are importable from here: ``from obokit.server import start_workbook_server``.
"""

from .app import (APP_ROLES, RunningServer, build_server, captured_logs, default_storage_dir, serve, server_socket,
                  start_workbook_server)
from .proxy import (CLIENT_REDIRECT_URIS, REQUIRED_SCOPES, SIGNING_KEY_NAME, STORAGE_SALT, ServerRegistration,
                    persistent_client_store, signing_key, stored_key, workbook_auth)

__all__ = [
    "APP_ROLES", "CLIENT_REDIRECT_URIS", "REQUIRED_SCOPES", "SIGNING_KEY_NAME", "STORAGE_SALT", "RunningServer",
    "ServerRegistration", "build_server", "captured_logs", "default_storage_dir", "persistent_client_store", "serve",
    "server_socket", "signing_key", "start_workbook_server", "stored_key", "workbook_auth",
]
