"""FastMCP's `AzureProvider`, authenticating to Entra with any `obokit.server.credentials` credential.

FastMCP 4.1.2 signs in upstream and does OBO with a client secret only (its issue #3483 asks for more). Two
extension points let a subclass change that, and this module is the only place that uses them:

* `OAuthProxy._create_upstream_oauth_client()` (private) - the client that redeems a user's sign-in and
  refreshes it at Entra's token endpoint. FastMCP's client speaks `client_secret_basic`, `client_secret_post`
  and `none`; `AssertionUpstreamClient` adds RFC 7523 client assertions (`private_key_jwt`: a certificate, or a
  managed identity's token trusted as a federated credential).
* `AzureProvider.get_obo_credential(user_assertion)` - the azure-identity `OnBehalfOfCredential` that FastMCP's
  `EntraOBOToken` uses in tools; built here with `client_certificate=` or `client_assertion_func=`.

`tests/test_credentials.py` checks these extension points, so a FastMCP upgrade that moves them fails loudly.
"""

from __future__ import annotations

import hashlib
from typing import Any

from azure.identity.aio import OnBehalfOfCredential
from fastmcp.server.auth.oauth_proxy.models import HTTP_TIMEOUT_SECONDS
from fastmcp.server.auth.oauth_proxy.upstream import AsyncOAuth2Client
from fastmcp.server.auth.providers.azure import AzureProvider

from .credentials import ClientSecret, ServerCredential


class AssertionUpstreamClient(AsyncOAuth2Client):
    """FastMCP's upstream token client, authenticating with a client assertion instead of a secret."""

    def __init__(self, client_id: str, credential: ServerCredential, *, token_endpoint: str,
                 timeout: float | None = None) -> None:
        super().__init__(client_id, client_secret=None, token_endpoint_auth_method="private_key_jwt", timeout=timeout)
        self.credential = credential
        self.token_endpoint = token_endpoint

    async def _request_token(self, url: str, data: dict[str, Any]) -> dict[str, Any]:
        await self.credential.prepare()  # the managed identity's token, fetched off the event loop
        return await super()._request_token(url, data)

    def _apply_client_auth(self, data: dict[str, Any], headers: dict[str, str]) -> None:
        data.update(self.credential.form_fields(self.client_id, self.token_endpoint))


class CredentialAzureProvider(AzureProvider):
    """`AzureProvider` whose app proves itself with `credential` (a secret, a certificate or a managed identity)."""

    def __init__(self, *, credential: ServerCredential, **kwargs: Any) -> None:
        secret = credential.value if isinstance(credential, ClientSecret) else None
        super().__init__(client_secret=secret, **kwargs)
        self.credential = credential

    def _create_upstream_oauth_client(self) -> AsyncOAuth2Client:
        if isinstance(self.credential, ClientSecret):
            return super()._create_upstream_oauth_client()
        return AssertionUpstreamClient(self._upstream_client_id, self.credential,
                                       token_endpoint=self._upstream_token_endpoint, timeout=HTTP_TIMEOUT_SECONDS)

    async def get_obo_credential(self, user_assertion: str) -> OnBehalfOfCredential:
        if isinstance(self.credential, ClientSecret):
            return await super().get_obo_credential(user_assertion)
        await self.credential.prepare()
        # FastMCP's own caching, one credential per user token (its token cache then serves repeats).
        key = hashlib.sha256(user_assertion.encode()).hexdigest()
        cached = self._obo_credentials.get(key)
        if cached is not None:
            self._obo_credentials.move_to_end(key)
            return cached
        credential = OnBehalfOfCredential(
            tenant_id=self._tenant_id, client_id=self._upstream_client_id, user_assertion=user_assertion,
            authority=f"https://{self._base_authority}", **self.credential.azure_identity_kwargs(),
        )
        self._obo_credentials[key] = credential
        while len(self._obo_credentials) > self._obo_max_credentials:
            _, evicted = self._obo_credentials.popitem(last=False)
            await evicted.close()
        return credential


__all__ = ["AssertionUpstreamClient", "CredentialAzureProvider"]
