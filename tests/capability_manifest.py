"""Every capability the two source articles show, mapped to the notebook whose cells must show it as real code.

Issue 16, deliverable 1: each capability appears once as real library code in a cell (msgraph-sdk request builders
and models, FastMCP server/middleware/tool, MSAL/azure-identity, httpx), written for the notebook, before any
`obokit` helper wraps it for re-runs. `tests/test_capabilities.py` checks this list against `notebooks/`.

A `Capability` is met when one code cell of `notebooks/<notebook>.ipynb` contains every entry of `calls` (comments
do not count, string literals do), and no code cell before that one uses an obokit wrapper named in `not_before`
(a name imported from `obokit` and used; the import itself does not count).

An entry of `calls` is a literal substring, or a tuple of alternatives of which one must appear. The strings are
library API names (request builders, models, hooks, keyword arguments), never variable names, so that any
reasonable cell showing the capability contains them.

The two articles (as stored in the project's seed folder, cited by file name and line below):

- `000_64be31a0983f777f.txt`: "Using on-behalf-of flow for Entra-based MCP servers" (January 2026): app
  registration with the Graph SDK, admin consent, FastMCP's `AzureProvider`, a user-id middleware, OBO with MSAL
  inside a tool, a Graph group-membership check.
- `003_44dba34627c6f78c.txt`: "Securing MCP Tools with Azure AD On-Behalf-Of (OBO)" (Saima Khan, September
  2025): two app registrations, `JWTVerifier`, `ErrorHandlingMiddleware`, a role-filtering middleware, an
  unverified `jwt.decode` role check, a raw OBO POST, a SharePoint site check, an MSAL client with a persisted
  token cache sending its own bearer token.

Entries marked "(prose)" cite something the article states but shows no code for; the workbook shows it in code.
"""

from __future__ import annotations

from dataclasses import dataclass

ENTRA_MCP_OBO = "000_64be31a0983f777f.txt"  # "Using on-behalf-of flow for Entra-based MCP servers"
SECURING_MCP_OBO = "003_44dba34627c6f78c.txt"  # "Securing MCP Tools with Azure AD On-Behalf-Of (OBO)"
ARTICLES = {
    ENTRA_MCP_OBO: "Using on-behalf-of flow for Entra-based MCP servers",
    SECURING_MCP_OBO: "Securing MCP Tools with Azure AD On-Behalf-Of (OBO)",
}

Call = str | tuple[str, ...]  # a literal substring, or alternatives of which one must appear

TRANSITIVE_MEMBER_OF = ("transitiveMemberOf", "transitive_member_of")  # raw URL path, or the msgraph-sdk builder
OBO_EXCHANGE = ("acquire_token_on_behalf_of(", "OnBehalfOfCredential(")  # MSAL, or azure-identity
SERVER_WRAPPERS = ("build_server", "start_workbook_server")  # obokit's whole server, tools and middleware included


@dataclass(frozen=True)
class Capability:
    name: str  # unique, used as the test id
    article: str  # seed file name (a key of ARTICLES)
    notebook: str  # notebook stem, e.g. "02-admin-consent"
    calls: tuple[Call, ...]  # all must appear in one single code cell of the notebook
    not_before: tuple[str, ...] = ()  # obokit wrappers no code cell before that cell may use

    def describe(self) -> str:
        return f"{self.name} ({ARTICLES.get(self.article, self.article)}, {self.article})"


CAPABILITIES: list[Capability] = [
    # ------------------------------------------------------------------ 01 · app registration (Graph SDK)
    # 000 L37-63: "request_app = Application(... app = await graph_client.applications.post(request_app)"
    # 003 L94: "Create an App Registration (e.g., FastMCP-OBO-Server)"
    Capability("register-application", ENTRA_MCP_OBO, "01-app-registration",
               ("applications.post(", "Application("), ("ensure_application",)),
    # 000 L39: 'sign_in_audience="AzureADMyOrg",  # Single tenant'
    Capability("single-tenant-audience", ENTRA_MCP_OBO, "01-app-registration",
               ("sign_in_audience", "AzureADMyOrg"), ("ensure_application",)),
    # 000 L40-46: "web=WebApplication(redirect_uris=['http://localhost:8000/auth/callback',
    # 'https://vscode.dev/redirect', ..."
    # 003 L86: "Under Authentication, add a Redirect URI (e.g., http://localhost:8100/auth/callback)"
    Capability("redirect-uris", ENTRA_MCP_OBO, "01-app-registration",
               ("WebApplication(", "redirect_uris"), ("ensure_application", "ensure_redirect_uri")),
    # 000 L48-59: "api=ApiApplication(oauth2_permission_scopes=[PermissionScope(... value='mcp-access', type='User'"
    # 003 L95-98: "Go to Expose an API ... Add a custom scope — name it access_as_user"
    Capability("expose-api-scope", ENTRA_MCP_OBO, "01-app-registration",
               ("ApiApplication(", "oauth2_permission_scopes", "PermissionScope("), ("ensure_application",)),
    # 000 L60: "requested_access_token_version=2,  # Required by FastMCP"
    Capability("v2-access-tokens", ENTRA_MCP_OBO, "01-app-registration",
               ("requested_access_token_version",), ("ensure_application",)),
    # 000 L65-66: "await graph_client.applications.by_application_id(app.id).patch(
    #   Application(identifier_uris=[f'api://{app.app_id}']))"
    # 003 L97: "Set an Application ID URI (e.g., api://<client-id>)"
    Capability("identifier-uri", ENTRA_MCP_OBO, "01-app-registration",
               (".patch(", "identifier_uris", "api://"), ("ensure_identifier_uri",)),
    # 000 L72-73: "request_principal = ServicePrincipal(app_id=app.app_id, ...)
    #   await graph_client.service_principals.post(request_principal)"
    Capability("service-principal", ENTRA_MCP_OBO, "01-app-registration",
               ("service_principals.post(", "ServicePrincipal("), ("ensure_service_principal",)),
    # 000 L77-79: "...by_application_id(app.id).add_password.post(
    #   AddPasswordPostRequestBody(password_credential=PasswordCredential(display_name='FastMCPSecret')))"
    # 003 L104-106: "Generate a client secret — this is required for the MCP Server to authenticate itself
    #   during the OBO token exchange flow"
    Capability("client-secret", ENTRA_MCP_OBO, "01-app-registration",
               ("add_password.post(", "AddPasswordPostRequestBody(", "PasswordCredential("), ("rotate_secret",)),
    # 003 L121: "ensure that app roles are defined in your backend app registration"
    Capability("app-roles", SECURING_MCP_OBO, "01-app-registration",
               ("AppRole(", "allowed_member_types", "app_roles"), ("ensure_application",)),
    # 003 L121: "... and assigned to users accordingly"
    Capability("app-role-assignment", SECURING_MCP_OBO, "01-app-registration",
               ("app_role_assigned_to.post(", "AppRoleAssignment("), ("ensure_role_assignment",)),
    # 003 L82-84: "Go to API Permissions: Add delegated permission to access the backend API (access_as_user scope)"
    # 003 L100-102: "Go to API Permissions: Add delegated permissions to Microsoft Graph → Sites.Read.All"
    Capability("api-permissions", SECURING_MCP_OBO, "01-app-registration",
               ("required_resource_access", "RequiredResourceAccess(", "resource_access=")),
    # 003 L72-86: "Frontend App Registration (Client CLI / Interface) ... Create another App Registration
    # (e.g., FastMCP-OBO-Client) ... add a Redirect URI". The workbook's client is a public client (no secret).
    Capability("client-registration", SECURING_MCP_OBO, "01-app-registration",
               ("PublicClientApplication(", "redirect_uris")),
    # 003 L108-112: "Under Expose an API → Authorized client applications, add the client ID of the frontend app"
    Capability("authorized-client-applications", SECURING_MCP_OBO, "01-app-registration",
               ("PreAuthorizedApplication(", "pre_authorized_applications", "delegated_permission_ids")),
    # ------------------------------------------------------------------ 02 · admin consent
    # 000 L89: "server_principal = await graph_client.service_principals_with_app_id(app.app_id).get()"
    # 000 L95: "resource_principal = await graph_client.service_principals_with_app_id(grant.resource_app_id).get()"
    Capability("graph-service-principal-lookup", ENTRA_MCP_OBO, "02-admin-consent",
               (("service_principals_with_app_id(", "service_principals.get("),), ("find_service_principal",)),
    # 000 L97-102: "await graph_client.oauth2_permission_grants.post(OAuth2PermissionGrant(client_id=...,
    # consent_type='AllPrincipals', resource_id=resource_principal.id, scope=desired_scope))"
    Capability("admin-consent-grant", ENTRA_MCP_OBO, "02-admin-consent",
               ("oauth2_permission_grants.post(", "OAuth2PermissionGrant(", "AllPrincipals"),
               ("ensure_admin_consent",)),
    # 003 L410-411: "Only request the delegated Microsoft Graph permissions your tools require. For example,
    # Sites.Read.All"; 000 L93: 'scopes=["User.Read", "email", "offline_access", "openid", "profile"]'
    Capability("least-privilege-scopes", SECURING_MCP_OBO, "02-admin-consent",
               ("GroupMember.Read.All", "Sites.Read.All")),
    # ------------------------------------------------------------------ 03 · the server in the kernel
    # 000 L112-119: "auth = AzureProvider(client_id=..., client_secret=..., tenant_id=..., base_url=...,
    # required_scopes=['mcp-access'], client_storage=...)"
    Capability("azure-provider", ENTRA_MCP_OBO, "03-server-in-the-kernel",
               ("AzureProvider(", "required_scopes", "base_url"), ("workbook_auth", *SERVER_WRAPPERS)),
    # 000 L144-146: 'mcp = FastMCP("Expenses Tracker", auth=auth, middleware=[UserAuthMiddleware()])'
    # 003 L155: 'mcp = FastMCP("MCP Server with AUTH", auth=bearer_auth)'
    Capability("fastmcp-server-with-auth", ENTRA_MCP_OBO, "03-server-in-the-kernel",
               ("FastMCP(", "auth="), SERVER_WRAPPERS),
    # 000 L152-158: "@mcp.tool async def add_user_expense(..., ctx: Context):"
    Capability("first-tool", ENTRA_MCP_OBO, "03-server-in-the-kernel",
               ("@mcp.tool",), ("register_tools", *SERVER_WRAPPERS)),
    # 000 L121-134: "class UserAuthMiddleware(Middleware): ... token = get_access_token() ...
    # return token.claims.get('oid') ... context.fastmcp_context.set_state('user_id', user_id)"
    Capability("user-id-middleware", ENTRA_MCP_OBO, "03-server-in-the-kernel",
               ("(Middleware)", "get_access_token(", "set_state(", "oid"), ("CallerContext", *SERVER_WRAPPERS)),
    # 000 L142-146: "When we initialize the FastMCP server, we set the auth provider and include that middleware"
    Capability("middleware-registered", ENTRA_MCP_OBO, "03-server-in-the-kernel",
               (("middleware=", "add_middleware("),), ("CallerContext", *SERVER_WRAPPERS)),
    # 000 L150-162: "Inside each tool, we can grab the user id from the state ... user_id = ctx.get_state('user_id')"
    Capability("tool-reads-user-id", ENTRA_MCP_OBO, "03-server-in-the-kernel",
               ("@mcp.tool", "get_state("), ("current_caller", "register_tools", *SERVER_WRAPPERS)),
    # 003 L226-232: 'mcp.run(transport="streamable-http", host="0.0.0.0", port=8400)' (in a kernel: not mcp.run,
    # which blocks, but FastMCP's ASGI app or its async runner)
    Capability("serve-over-http", SECURING_MCP_OBO, "03-server-in-the-kernel",
               (("http_app(", "run_http_async(", "mcp.run(", "run_async("),), ("serve", "start_workbook_server")),
    # (prose) 000 L148: "The server will return a 401 if a valid token isn't provided, and that 401 will prompt
    # the MCP client to kick off the MCP authorization flow."
    Capability("unauthenticated-401", ENTRA_MCP_OBO, "03-server-in-the-kernel",
               (("www-authenticate", "WWW-Authenticate"),)),
    # (prose) 000 L15: "Protected resource metadata (PRM): Implemented on the MCP server"
    Capability("protected-resource-metadata", ENTRA_MCP_OBO, "03-server-in-the-kernel",
               (("resource_metadata", "oauth-protected-resource"),)),
    # (prose) 000 L16, L20, L25: "Authorization server metadata" / "Dynamic Client Registration (DCR)" / "FastMCP
    # SDK implements DCR on top of Entra using an OAuth proxy pattern"
    Capability("proxy-metadata-and-dcr", ENTRA_MCP_OBO, "03-server-in-the-kernel",
               ("oauth-authorization-server", "registration_endpoint")),
    # 003 L383-390: "async with client: tools = await client.list_tools() ... await client.call_tool("
    Capability("mcp-client-lists-and-calls", SECURING_MCP_OBO, "03-server-in-the-kernel",
               ("Client(", "list_tools(", "call_tool(")),
    # ------------------------------------------------------------------ 03b · deep dive: hostile tokens
    # 003 L138, L151-154: "bearer_auth = JWTVerifier(jwks_uri=f'https://login.microsoftonline.com/{TENANT_ID}/
    # discovery/v2.0/keys', issuer=ISSUER)"; L412-413: "Always validate tokens for issuer, audience, and expiration"
    Capability("jwt-verifier", SECURING_MCP_OBO, "03b-hostile-tokens",
               ("JWTVerifier(", "verify_token("), ("EntraTokenVerifier", "harden")),
    # ------------------------------------------------------------------ 04 · tokens (the client side)
    # 003 L328-358: "app = ConfidentialClientApplication(...) auth_url = app.get_authorization_request_url(...)
    # result = app.acquire_token_by_authorization_code(code=server.auth_code, ...)"
    Capability("msal-authorization-code", SECURING_MCP_OBO, "04-tokens",
               (("initiate_auth_code_flow(", "get_authorization_request_url("),
                ("acquire_token_by_auth_code_flow(", "acquire_token_by_authorization_code("))),
    # 003 L334-337: "accounts = app.get_accounts() ... result = app.acquire_token_silent(scopes, account=accounts[0])"
    Capability("msal-silent", SECURING_MCP_OBO, "05b-performance",
               ("get_accounts(", "acquire_token_silent(")),
    # 003 L322-327, L368-369: "cache = SerializableTokenCache() ... cache.deserialize(open(CACHE_PATH).read())
    # ... f.write(cache.serialize())"
    Capability("msal-persisted-cache", SECURING_MCP_OBO, "05b-performance",
               ("SerializableTokenCache(", "serialize()", "deserialize(")),
    # 003 L376-379: 'headers = {"Authorization": f"Bearer {token}"} client = MCPClient(transport=
    # StreamableHttpTransport(url=MCP_URL, headers=headers))'
    Capability("client-sends-own-bearer", SECURING_MCP_OBO, "04-tokens",
               ("Client(", ("BearerAuth(", "StreamableHttpTransport("))),
    # ------------------------------------------------------------------ 05 · OBO and Graph
    # 003 L163-174: 'data = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", ... "assertion":
    # original_token, ... "requested_token_use": "on_behalf_of"} response = requests.post(obo_url, data=data)'
    Capability("raw-obo-request", SECURING_MCP_OBO, "05-obo-and-graph",
               ("urn:ietf:params:oauth:grant-type:jwt-bearer", "requested_token_use", "assertion"),
               ("raw_obo_exchange", "raw_exchange")),
    # 000 L176-181: "confidential_client = ConfidentialClientApplication(client_id=..., client_credential=...,
    # authority=..., token_cache=TokenCache())"
    Capability("msal-confidential-client", ENTRA_MCP_OBO, "05-obo-and-graph",
               ("ConfidentialClientApplication(", "client_credential="), ("confidential_client",)),
    # 000 L185-189: "graph_resource_access_token = confidential_client.acquire_token_on_behalf_of(
    # user_assertion=access_token.token, scopes=['https://graph.microsoft.com/.default'])"
    Capability("msal-obo", ENTRA_MCP_OBO, "05-obo-and-graph",
               ("acquire_token_on_behalf_of(",), ("msal_obo", "msal_obo_async", "msal_exchange")),
    # 000 L183-185: "Inside the tool that requires OBO ... access_token = get_access_token()"
    # 003 L205-210: "# Step 1: Get user token from request ... # Step 2: Perform OBO token exchange"
    Capability("obo-inside-tool", ENTRA_MCP_OBO, "05-obo-and-graph",
               ("@mcp.tool", "get_access_token(", OBO_EXCHANGE),
               ("OboCache", "GraphApi", "on_behalf_of", "cached_on_behalf_of", "raw_obo_exchange")),
    # 000 L191: "check whether the logged in user is a member of a particular Entra group, and restrict tool
    # usage if not"
    Capability("refuse-non-members", ENTRA_MCP_OBO, "05-obo-and-graph",
               ("@mcp.tool", TRANSITIVE_MEMBER_OF, "ToolError("), ("GraphApi", "graph_refusal", "refusal")),
    # 000 L193-203: '".../v1.0/me/transitiveMemberOf/microsoft.graph.group" f"?$filter=id eq ...&$count=true"
    # ... "ConsistencyLevel": "eventual" ... membership_count = data.get("@odata.count", 0)'
    Capability("membership-query", ENTRA_MCP_OBO, "05-obo-and-graph",
               (TRANSITIVE_MEMBER_OF, "ConsistencyLevel", ("$count", "count=True"), ("@odata.count", "odata_count")),
               ("consistency_eventual",)),
    # 003 L215-224: 'url = f"https://graph.microsoft.com/v1.0/sites/...:/sites/{site_name}" ... elif
    # response.status_code in [403, 404]: return f"Access denied to site'
    Capability("sharepoint-site-access", SECURING_MCP_OBO, "05-obo-and-graph",
               (("/sites/", "sites.by_site_id("), ("403", "status_code"))),
    # ------------------------------------------------------------------ 05b · deep dive: performance
    # 003 L408-409: "OBO tokens are short-lived by design. Avoid caching them long-term; perform token exchange
    # per tool execution." against 000 L180: "token_cache=TokenCache()" (MSAL's cache, which serves OBO tokens)
    Capability("obo-token-caching", SECURING_MCP_OBO, "05b-performance",
               ("acquire_token_on_behalf_of(", ("acquire_token_silent(", "token_cache")), ("OboCache",)),
    # 003 L163, L174: "async def exchange_token(...): ... response = requests.post(obo_url, data=data)" (a
    # blocking call inside an async tool)
    Capability("blocking-obo-in-async-tool", SECURING_MCP_OBO, "05b-performance",
               ("requests.post(",), ("requests_per_call",)),
    # ------------------------------------------------------------------ 06 · two tiers
    # 003 L121: "Tier-1 security: App Role-based filtering using a custom AuthorizationMiddleware";
    # L139, L157-158: "mcp.add_middleware(AuthorizationMiddleware(auth_context))"
    Capability("role-middleware", SECURING_MCP_OBO, "06-two-tiers",
               ("(Middleware)", "on_list_tools", "on_call_tool", "roles"), ("AppRoleGate",)),
    # 003 L182, L198: '@mcp.tool(tags={"write"})' / '@mcp.tool(tags={"read"})'
    Capability("tagged-tools", SECURING_MCP_OBO, "06-two-tiers",
               ("@mcp.tool(", "tags=")),
    # 003 L186-196: 'token_info = jwt.decode(access_token.token, options={"verify_signature": False}) role_access
    # = any(role for role in token_info.get("roles", []) if role in ("Task.All", "Task.Write"))'; also L300
    Capability("unverified-jwt-decode", SECURING_MCP_OBO, "06-two-tiers",
               ("jwt.decode(", "verify_signature")),
    # 003 L137, L156: "mcp.add_middleware(ErrorHandlingMiddleware(include_traceback=True, transform_errors=True))"
    Capability("error-handling-middleware", SECURING_MCP_OBO, "06-two-tiers",
               ("ErrorHandlingMiddleware(", "include_traceback")),
    # ------------------------------------------------------------------ 07 · deep dive: scale-out
    # 000 L118: "client_storage=oauth_client_store, # in-memory or Cosmos DB"; L25: "storing OAuth client
    # information in a designated database (like in-memory or Cosmos DB)"
    Capability("shared-client-storage", ENTRA_MCP_OBO, "07-scale-out",
               ("client_storage=", "RedisStore("), ("shared_client_store", "start_scale_out", "start_replica")),
    # ------------------------------------------------------------------ 08 · secretless
    # (prose) 000 L81: "Ideally, I would like to move away from secrets, as Entra now has support for using
    # federated identity credentials for Entra app registrations instead"
    Capability("federated-identity-credential", ENTRA_MCP_OBO, "08-secretless",
               ("federated_identity_credentials", "FederatedIdentityCredential(")),
    # ------------------------------------------------------------------ 09 · deep dive: proxy vs direct
    # 000 L212: "auth_update.py: Updates the app registration's redirect URIs after deployment, adding the
    # deployed server URL."
    Capability("redirect-uri-update", ENTRA_MCP_OBO, "09-proxy-vs-direct",
               (".patch(", "redirect_uris"), ("ensure_redirect_uri",)),
    # 003 L150-155: "bearer_auth = JWTVerifier(...) mcp = FastMCP('MCP Server with AUTH', auth=bearer_auth)" (a
    # resource server only: clients bring an Entra token, no OAuth proxy)
    Capability("bearer-only-server", SECURING_MCP_OBO, "09-proxy-vs-direct",
               ("FastMCP(", ("JWTVerifier(", "TokenVerifier")), ("start_workbook_server",)),
    # ------------------------------------------------------------------ 10 · clean-up
    # the inverse of 000 L211: "auth_init.py: Creates the Entra app registration, service principal, client
    # secret, and grants admin consent for OBO flow."
    Capability("delete-consent-grants", ENTRA_MCP_OBO, "10-cleanup",
               ("oauth2_permission_grants.by_o_auth2_permission_grant_id(", ".delete()"),
               ("remove_workbook_objects",)),
    Capability("delete-applications", ENTRA_MCP_OBO, "10-cleanup",
               ("applications.by_application_id(", ".delete()"), ("remove_workbook_objects",)),
]
