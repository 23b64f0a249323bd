# Replaces the starter cell of 07-scale-out: three replicas, and the analyst's call answered by the new one.
cluster.stop_replicas()
cluster.start_replicas(3)  # new processes in a deployment: same Redis, same keys, same public URL
cluster.use("replica-3")
before = len(cluster.proxy.routes)
async with Client(cluster.mcp_url, auth=analyst) as client:
    answer = (await client.call_tool("whoami")).data
answered_by = {route.replica for route in cluster.proxy.routes[before:]}
print(answer["upn"], "answered by", answered_by)
