"""The proxy auth mode: FastMCP's OAuth proxy (`AzureProvider`) in front of the workbook server.

MCP clients register with the proxy (dynamic client registration) and sign in through it; the proxy
signs the users in at Entra with the server's own app registration and hands the clients tokens of
its own. What it needs, for notebooks that want to show it (03-server-in-the-kernel builds it cell by cell):

* `signing_key(target)` - the proxy's JWT signing key, generated once and kept owner-only in the
  target's secrets file (`MCP_PROXY_SIGNING_KEY`), so tokens the proxy issued stay valid across restarts;
* `persistent_client_store(storage_dir, key)` - py-key-value's `FileTreeStore`, encrypted with a key
  derived from the signing key: client registrations and upstream tokens survive a restart (FastMCP's
  in-memory store forgets them, and every client must register and sign in again); reads come from a
  memory cache of the store, so one running server per storage folder;
* `workbook_auth(...)` - the `AzureProvider`, hardened by `obokit.server.verifier`.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Protocol

from cryptography.fernet import Fernet
from dotenv import dotenv_values
from fastmcp.server.auth.jwt_issuer import derive_jwt_key
from fastmcp.server.auth.providers.azure import AzureProvider
from key_value.aio.protocols import AsyncKeyValue
from key_value.aio.stores.filetree import (
    FileTreeStore,
    FileTreeV1CollectionSanitizationStrategy,
    FileTreeV1KeySanitizationStrategy,
)
from key_value.aio.stores.memory import MemoryStore
from key_value.aio.wrappers.encryption import FernetEncryptionWrapper
from key_value.aio.wrappers.passthrough_cache import PassthroughCacheWrapper

from ..tenant.target import Target, write_secret
from .azure_provider import CredentialAzureProvider
from .credentials import ClientSecret, ServerCredential
from .verifier import harden

SIGNING_KEY_NAME = "MCP_PROXY_SIGNING_KEY"
# Salt of the Fernet key that encrypts every OAuth-proxy store (files here, Redis in obokit.scaleout):
# replicas and restarts must derive the same key, or the stores read as empty.
STORAGE_SALT = "obokit-oauth-proxy-storage"
REQUIRED_SCOPES = ["mcp-access"]
# Redirect URIs MCP clients may register through the proxy's dynamic client registration (every
# URI of a registration must match; README "Connecting other MCP clients"):
CLIENT_REDIRECT_URIS = [
    # FastMCP's client, the mcp SDK's, Claude Code: a loopback /callback on any port
    "http://localhost:*/callback",
    "http://127.0.0.1:*/callback",
    # MCP Inspector (port 6274 unless CLIENT_PORT is set): its callback and its debug callback
    "http://localhost:*/oauth/callback",
    "http://localhost:*/oauth/callback/debug",
    "http://127.0.0.1:*/oauth/callback",
    "http://127.0.0.1:*/oauth/callback/debug",
    # VS Code registers all four; it listens on 127.0.0.1:33418/ or, when taken, on any free port.
    # A loopback pattern whose path is "/" admits any path on 127.0.0.1 (RFC 8252 loopback redirect).
    "https://vscode.dev/redirect",
    "https://insiders.vscode.dev/redirect",
    "http://127.0.0.1:*/",
]


class _DropLoopbackNotices(logging.Filter):
    """The in-kernel server is plain http on loopback by design: FastMCP's start-up notices about
    it (non-secure cookies; the provider's ids at INFO) would only add noise to notebook cells."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "non-secure cookies" not in record.getMessage()


logging.getLogger("fastmcp.server.auth.oauth_proxy.proxy").addFilter(_DropLoopbackNotices())
logging.getLogger("fastmcp.server.auth.providers.azure").setLevel(logging.WARNING)


class ServerRegistration(Protocol):
    """What the server needs of `obokit.tenant.provisioning.Registrations`."""

    mcp_server_client_id: str
    mcp_server_client_secret: str


def signing_key(target: Target) -> str:
    """The proxy's JWT signing key from the secrets file; created (owner-only) on first use."""
    return stored_key(target, SIGNING_KEY_NAME)


def stored_key(target: Target, name: str) -> str:
    """A random key kept in the target's secrets file under `name`; created (owner-only) on first use."""
    values = dotenv_values(target.secrets_file) if target.secrets_file.exists() else {}
    key = values.get(name)
    if not key:
        key = secrets.token_urlsafe(32)
        write_secret(target.secrets_file, name, key)
    return key


def persistent_client_store(storage_dir: Path, key: str, *, folder: str = "oauth-proxy") -> AsyncKeyValue:
    """A file-backed, encrypted key-value store for the OAuth proxy (registrations, tokens), read through a memory cache.

    `storage_dir / folder` is created owner-only (0700); obokit.clients.mcp_client keeps its clients' registrations the same way.
    """
    directory = Path(storage_dir) / folder
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    files = FileTreeStore(
        data_directory=directory,
        key_sanitization_strategy=FileTreeV1KeySanitizationStrategy(directory),
        collection_sanitization_strategy=FileTreeV1CollectionSanitizationStrategy(directory),
    )
    fernet_key = derive_jwt_key(high_entropy_material=key, salt=STORAGE_SALT)
    # A store written under another key reads as empty (clients register again) instead of failing.
    encrypted = FernetEncryptionWrapper(key_value=files, fernet=Fernet(fernet_key), raise_on_decryption_error=False)
    # The proxy reads the client and its upstream tokens on every request; from disk that is a dozen
    # worker-thread hops per call. Reads come from memory, writes and deletes go through to disk.
    return PassthroughCacheWrapper(primary_key_value=encrypted, cache_key_value=MemoryStore())


def workbook_auth(target: Target, registration: ServerRegistration, *, base_url: str, storage_dir: Path,
                  client_storage: AsyncKeyValue | None = None,
                  credential: ServerCredential | None = None) -> AzureProvider:
    """Entra in front of the server: FastMCP's OAuth proxy for the app registration of 01.

    `credential` is how the server's app proves itself to Entra (`obokit.server.credentials`); by default the
    registration's client secret.
    """
    key = signing_key(target)
    # harden: fastmcp's JWTVerifier plus the checks it skips (nbf, exp required, tid; obokit.server.verifier).
    return harden(CredentialAzureProvider(
        client_id=registration.mcp_server_client_id,
        credential=credential if credential is not None else ClientSecret(registration.mcp_server_client_secret),
        tenant_id=target.tenant_id,
        base_url=base_url,
        required_scopes=REQUIRED_SCOPES,
        base_authority=target.authority_host,
        allowed_client_redirect_uris=CLIENT_REDIRECT_URIS,
        jwt_signing_key=key,
        client_storage=client_storage if client_storage is not None else persistent_client_store(storage_dir, key),
    ), tenant_id=target.tenant_id)


__all__ = ['CLIENT_REDIRECT_URIS', 'REQUIRED_SCOPES', 'SIGNING_KEY_NAME', 'STORAGE_SALT', 'ServerRegistration', 'persistent_client_store', 'signing_key', 'stored_key', 'workbook_auth']
