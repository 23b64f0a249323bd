# Solution of "Try it" in 02-admin-consent: widen a delegated grant with a PATCH, then read it back.
wanted = "User.Read GroupMember.Read.All"
await graph.oauth2_permission_grants.by_o_auth2_permission_grant_id(task_api_grant.id).patch(
    OAuth2PermissionGrant(scope=wanted))
# read it back (on a tenant the write may take a moment to reach the replica that answers)
fresh = await until_replicated(
    lambda: graph.oauth2_permission_grants.by_o_auth2_permission_grant_id(task_api_grant.id).get(),
    what="the widened grant", ready=lambda g: set(g.scope.split()) == set(wanted.split()))
task_api_scopes = set(fresh.scope.split())
print("task API -> Graph:", fresh.consent_type, "|", fresh.scope)
