# Replaces the starter cell of 10-cleanup: the workbook's leftovers, found by name prefix with plain Graph queries.
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.applications.applications_request_builder import ApplicationsRequestBuilder
from msgraph.generated.service_principals.service_principals_request_builder import ServicePrincipalsRequestBuilder


async def left_over(prefix: str) -> list[str] | None:
    """Display names of the applications and service principals whose displayName starts with `prefix`."""
    startswith = f"startswith(displayName, '{prefix.replace(chr(39), chr(39) * 2)}')"
    apps = await graph.applications.get(RequestConfiguration(
        query_parameters=ApplicationsRequestBuilder.ApplicationsRequestBuilderGetQueryParameters(filter=startswith)))
    sps = await graph.service_principals.get(RequestConfiguration(
        query_parameters=ServicePrincipalsRequestBuilder.ServicePrincipalsRequestBuilderGetQueryParameters(filter=startswith)))
    return sorted(o.display_name for o in [*apps.value, *sps.value])


leftovers = await left_over("obokit workbook")
print(leftovers)
