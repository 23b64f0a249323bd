"""A Microsoft Graph SDK client pointed at any Graph endpoint (the real one or the emulator).

`GraphServiceClient(credentials=...)` always talks to https://graph.microsoft.com and derives
the token scope from the request host. To point the SDK at another base URL, build the adapter
yourself, and pass the scopes explicitly: without them kiota would ask for
`https://127.0.0.1/.default`, a scope Entra rejects.

Example::

    from azure.identity.aio import ClientSecretCredential
    credential = ClientSecretCredential(tenant_id, client_id, secret, authority=authority)
    client = graph_client(credential, base_url="https://127.0.0.1:8444/v1.0")
    me = await client.me.get()
"""

from __future__ import annotations

from typing import Any, TypeVar

from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.headers_collection import HeadersCollection
# kiota's provider, not msgraph_core's: with kiota-abstractions 1.16 the latter rejects its own
# default allowed hosts ("Allowed host value cannot contain 'https://' ...").
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from msgraph import GraphRequestAdapter, GraphServiceClient

GRAPH_DEFAULT_SCOPES = ["https://graph.microsoft.com/.default"]
Q = TypeVar("Q")


def graph_client(credential: Any, *, base_url: str, scopes: list[str] | None = None) -> GraphServiceClient:
    """A `GraphServiceClient` whose requests go to `base_url` (e.g. https://127.0.0.1:PORT/v1.0).

    `credential` is an azure-identity credential (the `azure.identity.aio` ones fit the SDK's
    async pipeline best). `scopes` defaults to Graph's `.default`; the token's audience is still
    Microsoft Graph, whichever host serves the requests.
    """
    provider = AzureIdentityAuthenticationProvider(credential, scopes=list(scopes or GRAPH_DEFAULT_SCOPES))
    adapter = GraphRequestAdapter(provider)
    adapter.base_url = base_url.rstrip("/")
    return GraphServiceClient(request_adapter=adapter)


def consistency_eventual(query_parameters: Q | None = None) -> RequestConfiguration[Q]:
    """A request configuration with `ConsistencyLevel: eventual`, which Graph's advanced queries need.

    `$filter`/`$orderby`/`$search` on membership lists and `$count` require the header; the SDK
    never adds it. Without it Graph answers 400 `Request_UnsupportedQuery` (or silently drops
    `@odata.count`).

    Example::

        params = GraphGroupRequestBuilder.GraphGroupRequestBuilderGetQueryParameters(
            filter=f"id eq '{group_id}'", count=True)
        page = await client.me.transitive_member_of.graph_group.get(
            request_configuration=consistency_eventual(params))
    """
    headers = HeadersCollection()
    headers.add("ConsistencyLevel", "eventual")
    return RequestConfiguration(headers=headers, query_parameters=query_parameters)


__all__ = ["graph_client", "consistency_eventual", "GRAPH_DEFAULT_SCOPES"]
