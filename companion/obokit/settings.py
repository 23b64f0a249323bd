"""Where obokit keeps its state, and which target (emulator or a real tenant) the workbook uses.

Nothing set means the embedded emulator. A `.env` file (or environment variables) with
`OBOKIT_TARGET=tenant` and the tenant's values points the same notebooks at Entra and Graph.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from urllib.parse import urlsplit

from dotenv import dotenv_values
from msal.authority import WELL_KNOWN_AUTHORITY_HOSTS

ENV_FILE_NAME = ".env"


def project_root(start: Path | None = None) -> Path:
    """The nearest folder upwards that holds a pyproject.toml or .git (else the current folder)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").exists() or (folder / ".git").exists():
            return folder
    return here


def state_dir() -> Path:
    """The local state folder (gitignored): emulator database, keys, certificates."""
    configured = os.environ.get("OBOKIT_STATE_DIR")
    return Path(configured) if configured else project_root() / ".obokit"


@dataclass(frozen=True)
class TenantSettings:
    """A real tenant's coordinates, read from `.env` or the environment."""

    tenant_id: str
    authority_host: str = "https://login.microsoftonline.com"
    graph_base_url: str = "https://graph.microsoft.com/v1.0"


def env_file() -> Path:
    """The `.env` the workbook reads and writes its secrets to: `$OBOKIT_ENV_FILE`, else the project's `.env`."""
    configured = os.environ.get("OBOKIT_ENV_FILE")
    return Path(configured) if configured else project_root() / ENV_FILE_NAME


def read_env(path: Path | None = None) -> dict[str, str]:
    """Environment variables overlaid on the `.env` file (`env_file()`; the environment wins)."""
    path = path or env_file()
    values = {k: v for k, v in dotenv_values(path).items() if v is not None} if path.exists() else {}
    values.update({k: v for k, v in os.environ.items()
                   if k.startswith(("OBOKIT_", "AZURE_", "GRAPH_", "MCP_", "DEMO_", "TASK_", "MANAGED_IDENTITY_"))})
    return values


def target() -> str:
    """"emulator" (the default) or "tenant"."""
    value = read_env().get("OBOKIT_TARGET", "emulator").strip().lower()
    if value not in ("emulator", "tenant"):
        raise ValueError(f"OBOKIT_TARGET must be 'emulator' or 'tenant', not {value!r}")
    return value


def tenant_settings() -> TenantSettings:
    """The real tenant's settings; raises with the missing key's name when `.env` is incomplete."""
    env = read_env()
    if not env.get("AZURE_TENANT_ID"):
        raise ValueError("OBOKIT_TARGET=tenant needs AZURE_TENANT_ID in .env or the environment")
    return TenantSettings(
        tenant_id=env["AZURE_TENANT_ID"],
        authority_host=env.get("AZURE_AUTHORITY_HOST", TenantSettings.authority_host).rstrip("/"),
        graph_base_url=env.get("GRAPH_BASE_URL", TenantSettings.graph_base_url).rstrip("/"),
    )


def is_microsoft_cloud(authority: str) -> bool:
    """Whether `authority` (`https://host[/tenant]`) is a Microsoft Entra cloud host that MSAL knows.

    Only those have an instance-discovery endpoint: MSAL's `instance_discovery` and azure-identity's
    `disable_instance_discovery` follow this, never the kind of target (a tenant `.env` may point anywhere).
    """
    return (urlsplit(authority).hostname or "").lower() in WELL_KNOWN_AUTHORITY_HOSTS
