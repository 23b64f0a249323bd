"""An emulator of the Microsoft Entra ID and Microsoft Graph endpoints the workbook uses."""

from .emulator import Emulator
from .ids import GRAPH_APP_ID, GRAPH_CLI_APP_ID, SHAREPOINT_HOST, TENANT_DOMAIN, TENANT_ID
from .seed import group_id, user_id

__all__ = ["Emulator", "TENANT_ID", "TENANT_DOMAIN", "SHAREPOINT_HOST", "GRAPH_APP_ID", "GRAPH_CLI_APP_ID", "user_id", "group_id"]
