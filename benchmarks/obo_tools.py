"""Benchmark: an MCP tool that does OBO + one Graph call, three OBO implementations and two auth modes, 1/10/50 callers.

    .venv/bin/python benchmarks/obo_tools.py            # or: make bench
    .venv/bin/python benchmarks/obo_tools.py --identity-ms 30 --graph-ms 30 --duration 3 --concurrency 1,10,50
    .venv/bin/python benchmarks/obo_tools.py --credentials-only     # only: cold OBO exchange per credential
    .venv/bin/python benchmarks/obo_tools.py --modes-only           # only: (c) proxy vs (d) direct, paired, the split

Starts the embedded emulator with injected latency (identity provider and Graph), one workbook
MCP server (FastMCP + AzureProvider, the real tools) per implementation, signs the demo users in
with FastMCP's OAuth client, and drives `check_group_membership` (OBO for GroupMember.Read.All, then
`GET /me/transitiveMemberOf/...`) with N concurrent callers spread over the users:

  (a) `requests.post` OBO per call inside the async tool (second source article)
  (b) MSAL `acquire_token_on_behalf_of` per call inside the async tool (first source article)
  (c) ours: `obokit.server.obo_cache.OboCache` (async, cached per user token and scopes, coalesced)
  (d) ours in direct mode: the same server as a pure resource server (`mode="direct"`), no OAuth proxy; the users
      sign in at Entra with a public client pre-authorized on the server's scope (MSAL, headless browser) and send
      Entra's access token as a bearer

Prints calls/s, p50/p95 latency and the OBO exchanges the emulator answered, then the ratios
(c)/(a), (c)/(b) and (d)/(c) and the targets. The rows are measured one after the other; (d) against (c) is also
measured paired and interleaved (`paired.py`, `--pairs`): both servers running at once, one caller alternating warm
calls of the same tool for the same user, (c),(d) then (d),(c), and the direct-vs-proxy target is on the median of
the paired differences and its bootstrap interval. Then where a warm call of (c) and (d) spends its time
(client, auth layer, MCP stack, tool: `call_split.py`, timestamps taken in the server child). As in
production, each part is its own process: the emulator (`obokit emulator serve`), the MCP server under
test (this script with `--serve`), and the callers (this process). In one process the three would share one GIL and measure mostly each other.

Then the section "cold OBO exchange per credential" (`obo_credentials.py`, in this process against the same
emulator): p50/p95 of uncached exchanges with a client secret, a certificate and a managed identity via a federated
credential, the managed identity endpoint's calls per assertion lifetime, and the event loop's largest lag.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import platform
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msal
import psutil
from fastmcp import Client, FastMCP

from obokit.emulator import GRAPH_APP_ID, SHAREPOINT_HOST, TENANT_DOMAIN, TENANT_ID, Emulator, group_id, user_id
from obokit.clients.mcp_client import HeadlessOAuth
from obokit.obo_bench import (
    LoadResult,
    bearer_token,
    drive,
    exchanges_since,
    load,
    msal_per_call,
    obo_exchanges,
    requests_per_call,
)
from obokit.tenant.provisioning import Registrations
from obokit.server import start_workbook_server
from obokit.tenant.target import DemoDirectory, Target
from obokit.server.obo import raw_obo_exchange
from obokit.server.tools import GROUP_SCOPES, GraphApi

import call_split  # same folder (the script's directory is on sys.path)
import obo_credentials
import paired as paired_calls

USERS = ("adele", "bruno", "chen")
REDIRECT_URI = "http://localhost:8000/auth/callback"  # the server app's (the OAuth proxy's callback)
CLIENT_REDIRECT_URI = "http://localhost:8765"  # the direct-mode client's loopback redirect (never bound)
TOOL, GRAPH_SCOPES = "check_group_membership", "User.Read openid profile offline_access GroupMember.Read.All"
# key: (label, OBO token source factory (None: the server's OboCache), auth mode)
IMPLEMENTATIONS: dict[str, tuple[str, Callable[[Target, Registrations], Any] | None, str]] = {
    "a": ("requests.post per call", requests_per_call, "proxy"),
    "b": ("MSAL OBO per call", msal_per_call, "proxy"),
    "c": ("obokit OboCache", None, "proxy"),
    "d": ("direct mode, OboCache", None, "direct"),
}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    return f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, {platform.system()}"


def admin_graph(emu: Any) -> httpx.Client:
    """Raw Graph calls as the emulator's seeded automation app (app-only)."""
    client_id, secret = emu.automation_credentials()
    admin = msal.ConfidentialClientApplication(client_id, client_credential=secret, authority=emu.tenant_authority,
                                               instance_discovery=False)
    bearer = admin.acquire_token_for_client(["https://graph.microsoft.com/.default"])["access_token"]
    return httpx.Client(base_url=emu.graph_url, headers={"Authorization": f"Bearer {bearer}"})


def provision(emu: Any) -> Registrations:
    """A server app (scope mcp-access, role Task.Read for every demo user, Graph consent), raw Graph calls."""
    role = str(uuid.uuid4())
    with admin_graph(emu) as graph:
        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            return graph.post(path, json=body).raise_for_status().json()

        app = post("/applications", {
            "displayName": "obokit benchmark server", "signInAudience": "AzureADMyOrg",
            "web": {"redirectUris": [REDIRECT_URI]},
            "api": {"requestedAccessTokenVersion": 2, "oauth2PermissionScopes": [
                {"id": str(uuid.uuid4()), "value": "mcp-access", "type": "User", "isEnabled": True,
                 "adminConsentDisplayName": "mcp-access", "adminConsentDescription": "mcp-access"}]},
            "appRoles": [{"id": role, "value": "Task.Read", "displayName": "Task.Read", "description": "Task.Read",
                          "allowedMemberTypes": ["User"], "isEnabled": True}]})
        graph.patch(f"/applications/{app['id']}", json={"identifierUris": [f"api://{app['appId']}"]}).raise_for_status()
        app_secret = post(f"/applications/{app['id']}/addPassword", {"passwordCredential": {"displayName": "bench"}})["secretText"]
        sp = post("/servicePrincipals", {"appId": app["appId"]})
        graph_sp = graph.get(f"/servicePrincipals(appId='{GRAPH_APP_ID}')").raise_for_status().json()
        post("/oauth2PermissionGrants", {"clientId": sp["id"], "consentType": "AllPrincipals",
                                         "resourceId": graph_sp["id"], "scope": GRAPH_SCOPES})
        for name in USERS:
            post(f"/servicePrincipals/{sp['id']}/appRoleAssignedTo",
                 {"principalId": user_id(name), "resourceId": sp["id"], "appRoleId": role})
    return Registrations(mcp_server_client_id=app["appId"], mcp_server_client_secret=app_secret)


def direct_client(emu: Any, reg: Registrations) -> str:
    """A public client app pre-authorized on the server's scope (`api.preAuthorizedApplications`): the users of
    the direct-mode server (d) sign in with it at Entra, without a consent prompt; its app id."""
    with admin_graph(emu) as graph:
        client = graph.post("/applications", json={
            "displayName": "obokit benchmark client", "isFallbackPublicClient": True,
            "publicClient": {"redirectUris": ["http://localhost"]}}).raise_for_status().json()
        graph.post("/servicePrincipals", json={"appId": client["appId"]}).raise_for_status()
        server = graph.get("/applications", params={"$filter": f"appId eq '{reg.mcp_server_client_id}'"}
                           ).raise_for_status().json()["value"][0]
        scope_ids = [scope["id"] for scope in server["api"]["oauth2PermissionScopes"]]
        graph.patch(f"/applications/{server['id']}", json={"api": {**server["api"], "preAuthorizedApplications": [
            {"appId": client["appId"], "delegatedPermissionIds": scope_ids}]}}).raise_for_status()
    return str(client["appId"])


def bench_target(authority: str, graph_url: str, folder: Path) -> Target:
    domain = TENANT_DOMAIN
    return Target(kind="emulator", tenant_id=TENANT_ID, authority=authority, graph_url=graph_url,
                  demo=DemoDirectory(admin=f"adele@{domain}", analyst=f"bruno@{domain}", engineer=f"chen@{domain}",
                                     finance_group_id=group_id("finance"),
                                     finance_site=f"{SHAREPOINT_HOST}:/sites/finance",
                                     engineering_site=f"{SHAREPOINT_HOST}:/sites/engineering"),
                  secrets_file=folder / "bench.env")


class EmulatorProcess:
    """`obokit emulator serve` in a child process; faults and counters through its control endpoints."""

    def __init__(self, state: Path) -> None:
        seeded = Emulator(state)  # seeds the state folder (and its keys) here, so the credentials can be read
        self.automation = seeded.automation_credentials()
        seeded.close()
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "obokit.cli", "emulator", "serve", "--state-dir", str(state)],
                                     stdout=subprocess.PIPE, text=True)
        env: dict[str, str] = {}
        for line in self.proc.stdout or []:
            if "=" in line:
                key, value = line.strip().removeprefix("export ").split("=", 1)
                env[key] = value
            if line.startswith("State folder"):
                break
        self.ready_s = time.perf_counter() - t0
        self.authority, self.graph_url = env["AZURE_AUTHORITY_HOST"], env["GRAPH_BASE_URL"]
        self.ca_bundle = env["SSL_CERT_FILE"]
        self.tls = ssl.create_default_context(cafile=self.ca_bundle)
        self.tenant_authority = f"{self.authority}/{TENANT_ID}"
        self.tenant_domain = TENANT_DOMAIN
        # The `export` lines: only the credentials section sets them, in this process, for its managed identity rows.
        self.managed_identity_env = {name: env[name] for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER")}

    def automation_credentials(self) -> tuple[str, str]:
        return self.automation

    def faults(self, **spec: Any) -> None:
        httpx.post(f"{self.authority}/_emulator/faults", json=spec, verify=self.tls).raise_for_status()

    def latency(self, identity_ms: float, graph_ms: float) -> None:
        self.faults(family="identity", latency_ms=identity_ms)
        self.faults(family="graph", latency_ms=graph_ms)

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.authority}/_emulator/stats", verify=self.tls).raise_for_status().json()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class ServerProcess:
    """The workbook MCP server with implementation `key`, served by this script (`--serve`) in a child."""

    def __init__(self, key: str, emu: EmulatorProcess, reg: Registrations, folder: Path, profile: str | None = None,
                 trusted_caller: str = "") -> None:
        env = {**os.environ, "BENCH_AUTHORITY": emu.authority, "BENCH_GRAPH_URL": emu.graph_url,
               "BENCH_CLIENT_ID": reg.mcp_server_client_id, "BENCH_CLIENT_SECRET": reg.mcp_server_client_secret,
               "BENCH_TRUSTED_CALLER": trusted_caller,
               "BENCH_FOLDER": str(folder / key), "BENCH_PROFILE": profile or "", "SSL_CERT_FILE": emu.ca_bundle, "REQUESTS_CA_BUNDLE": emu.ca_bundle}
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", key], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        ready = (self.proc.stdout.readline() if self.proc.stdout else "").split()
        if not ready or ready[0] != "READY":
            raise RuntimeError(f"the benchmark server ({key}) did not start")
        self.ready_s = time.perf_counter() - t0
        self.mcp_url, self.start_s = ready[1], float(ready[2])

    def times(self, *, requests: int = 0, in_tool: int = 0) -> dict[str, Any]:
        """Since the last ask, measured in the server: "in_tool", the seconds each tool call spent in `GraphApi.get`
        (OBO + Graph); "requests", (server seconds, {auth part: seconds}) of each tools/call request (`call_split`).

        The server records a request just *after* sending its response, so the client can ask before the last
        record exists: `requests` / `in_tool` are the counts the caller made, which the server waits for (5 s at most).
        """
        return dict(self.ask(f"times {requests} {in_tool}"))

    def ask(self, command: str) -> Any:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(f"{command}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()  # the child stops its server when its stdin closes
        self.proc.wait(15)


def serve_child(key: str) -> int:
    """`--serve KEY`: serve the workbook server with implementation KEY until stdin closes."""
    folder = Path(os.environ["BENCH_FOLDER"])
    folder.mkdir(parents=True, exist_ok=True)
    target = bench_target(os.environ["BENCH_AUTHORITY"], os.environ["BENCH_GRAPH_URL"], folder)
    reg = Registrations(mcp_server_client_id=os.environ["BENCH_CLIENT_ID"],
                        mcp_server_client_secret=os.environ["BENCH_CLIENT_SECRET"])
    _, factory, mode = IMPLEMENTATIONS[key]
    inside: list[float] = []  # seconds spent in GraphApi.get (OBO token + the Graph request) per call
    timed_get = GraphApi.get

    async def get(self: GraphApi, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await timed_get(self, *args, **kwargs)
        finally:
            inside.append(time.perf_counter() - t0)

    GraphApi.get = get  # type: ignore[method-assign]  # instrumentation of this benchmark process only
    timer, http_app = call_split.CallTimer(), FastMCP.http_app
    FastMCP.http_app = lambda self, *a, **kw: timer.wrap(http_app(self, *a, **kw))  # type: ignore[method-assign]
    trusted = [os.environ["BENCH_TRUSTED_CALLER"]] if mode == "direct" else []
    t0 = time.perf_counter()
    server = start_workbook_server(target, name=f"bench-{key}", storage_dir=folder, registration=reg,
                                   obo=factory(target, reg) if factory else None, mode=mode, trusted_callers=trusted)
    timer.instrument_auth(server.mcp.auth)  # before any request: nothing was served yet
    profile = os.environ.get("BENCH_PROFILE")
    profiler = cProfile.Profile() if profile else None
    loop = server.handle.loop
    print(f"READY {server.mcp_url} {time.perf_counter() - t0:.3f}", flush=True)
    for line in sys.stdin:  # "times": the in-tool and request times since the last ask; "profile on|off"
        if line.startswith("profile") and profiler is not None and loop is not None:
            # cProfile follows one thread: switch it on and off on the server's loop thread.
            switch = profiler.enable if line.split()[1] == "on" else profiler.disable
            asyncio.run_coroutine_threadsafe(_call(switch), loop).result(5)
            print("[]", flush=True)
            continue
        expected = [int(n) for n in line.split()[1:3]] or [0, 0]
        deadline = time.monotonic() + 5
        while (len(timer.requests) < expected[0] or len(inside) < expected[1]) and time.monotonic() < deadline:
            time.sleep(0.005)  # this thread only reads stdin; the server's loop runs on its own thread
        print(json.dumps({"in_tool": inside[:], "requests": timer.take()}), flush=True)
        inside.clear()
    server.stop()
    if profiler is not None:
        profiler.dump_stats(f"{profile}.{key}")
    return 0


async def _call(function: Callable[[], Any]) -> None:
    function()


def in_tool_p50(result: LoadResult) -> float:
    """p50 of the time spent inside the tool on OBO + the Graph request (server side), ms."""
    return LoadResult(result.concurrency, 1.0, result.in_tool).p50_ms


async def user_tokens(key: str, server: ServerProcess, emu: EmulatorProcess, reg: Registrations,
                      direct_client_id: str, users: Sequence[str] = USERS) -> list[str]:
    """The bearer token each user's load client sends: the proxy's (FastMCP's OAuth client signs in through it) or,
    in direct mode, Entra's for the server's scope (the pre-authorized public client `direct_client_id`, MSAL)."""
    upns = [f"{name}@{TENANT_DOMAIN}" for name in users]
    if IMPLEMENTATIONS[key][2] == "direct":
        return await obo_credentials.entra_tokens(emu, direct_client_id, f"api://{reg.mcp_server_client_id}/mcp-access",
                                                  upns, CLIENT_REDIRECT_URI)
    return [await bearer_token(server.mcp_url, HeadlessOAuth(account=upn)) for upn in upns]


@contextlib.asynccontextmanager
async def signed_in(key: str, emu: EmulatorProcess, reg: Registrations, folder: Path, *, direct_client_id: str = "",
                    users: Sequence[str] = USERS, profile: str | None = None, server: ServerProcess | None = None,
                    ) -> AsyncIterator[tuple[ServerProcess, list[Client]]]:
    """This implementation's server, started (or `server`, already started), with one open MCP client per user in
    `users` (signed in, the MCP path warmed with `whoami`, no OBO); on exit the clients close, the server stops and the
    injected latency is cleared."""
    emu.faults(clear=True)  # sign-in without the injected latency: it is not what is measured
    if server is None:
        server = ServerProcess(key, emu, reg, folder, profile=profile, trusted_caller=direct_client_id)
    try:
        tokens = await user_tokens(key, server, emu, reg, direct_client_id, users)
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(Client(server.mcp_url, auth=token)) for token in tokens]
            for client in clients:
                await client.call_tool("whoami")  # warm the MCP path (no OBO)
            yield server, clients
    finally:
        emu.faults(clear=True)
        server.stop()


async def run_implementation(key: str, emu: EmulatorProcess, reg: Registrations, folder: Path,
                             args: argparse.Namespace, direct_client_id: str = "",
                             ) -> tuple[list[tuple[LoadResult, int, int]], ServerProcess]:
    """Start this implementation's server, sign the users in, drive every concurrency level."""
    label = IMPLEMENTATIONS[key][0]
    rows = []
    async with signed_in(key, emu, reg, folder, direct_client_id=direct_client_id, profile=args.profile
                         ) as (server, clients):
        emu.latency(args.identity_ms, args.graph_ms)
        arguments = {"group_id": group_id("finance")}
        processes = {"callers": psutil.Process(), "server": psutil.Process(server.proc.pid),
                     "emulator": psutil.Process(emu.proc.pid)}
        server.times(requests=len(clients))  # forget the warm-up (one whoami per client)
        if args.profile:
            server.ask("profile on")
        for level in args.concurrency:
            before, cpu = obo_exchanges(emu), {name: sum(p.cpu_times()[:2]) for name, p in processes.items()}
            result = await drive(clients, TOOL, arguments, concurrency=level, duration=args.duration)
            times = server.times(requests=result.calls, in_tool=result.calls)
            result.in_tool = times["in_tool"]
            result.requests = [(float(s), parts) for s, parts in times["requests"]]
            new = exchanges_since(emu, before)
            rows.append((result, sum(new.values()), max(new.values(), default=0)))
            per_call = {name: 1000 * (sum(p.cpu_times()[:2]) - cpu[name]) / max(result.calls, 1) for name, p in processes.items()}
            result.cpu_ms = per_call  # type: ignore[attr-defined]  # CPU per call of each process, ms
            print(f"  ({key}) {label:24} {level:3d} callers: {result.calls_per_s:7.1f} calls/s  "
                  f"p50 {result.p50_ms:7.1f} ms  p95 {result.p95_ms:7.1f} ms  in-tool p50 {in_tool_p50(result):6.1f} ms  "
                  f"exchanges {sum(new.values()):4d}  "
                  f"CPU ms/call " + " ".join(f"{n} {v:.1f}" for n, v in per_call.items())
                  + (f"  errors {result.errors}" if result.errors else ""), flush=True)
        if args.profile:
            server.ask("profile off")
    return rows, server


@dataclass
class PairedRun:
    """The paired section's result: the alternated calls and, per server, its auth-layer and tool time per recorded
    call (ms, timed in the server, in call order)."""

    paired: paired_calls.Paired
    auth_ms: dict[str, list[float]]
    tool_ms: dict[str, list[float]]
    user: str


async def run_paired(emu: EmulatorProcess, reg: Registrations, folder: Path, args: argparse.Namespace,
                     direct_client_id: str) -> PairedRun:
    """(c) and (d) at the same time, one session each for the first user: `args.pair_warmup` warm-up pairs (the
    OBO exchange of each server's first call among them), then `args.pairs` pairs of warm calls, order alternating."""
    user = USERS[0]
    arguments = {"group_id": group_id("finance")}
    folder = folder / "paired"
    started = await asyncio.gather(*(asyncio.to_thread(ServerProcess, key, emu, reg, folder, trusted_caller=direct_client_id)
                                     for key in "cd"))  # both at once: a server's start is mostly its imports
    async with contextlib.AsyncExitStack() as stack:
        for server in started:
            stack.callback(server.stop)  # also when the other's sign-in fails (a second stop does nothing)
        servers, clients = {}, {}
        for key, server in zip("cd", started):
            servers[key], (clients[key],) = await stack.enter_async_context(
                signed_in(key, emu, reg, folder, direct_client_id=direct_client_id, users=[user], server=server))
        emu.latency(args.identity_ms, args.graph_ms)
        calls = {key: lambda client=client: client.call_tool(TOOL, arguments) for key, client in clients.items()}
        await paired_calls.alternate(calls, pairs=args.pair_warmup)
        for server in servers.values():  # forget the warm-up: signed_in's whoami, then the warm-up pairs
            server.times(requests=1 + args.pair_warmup, in_tool=args.pair_warmup)
        result = await paired_calls.alternate(calls, pairs=args.pairs)
        result.warmup = args.pair_warmup
        times = {key: server.times(requests=args.pairs, in_tool=args.pairs) for key, server in servers.items()}
    auth_ms = {key: [1000 * parts.get(call_split.AUTH, 0.0) for _, parts in t["requests"]] for key, t in times.items()}
    tool_ms = {key: [1000 * s for s in t["in_tool"]] for key, t in times.items()}
    print(f"  paired (c),(d): {result.pairs} pairs in {result.seconds:.1f} s, p50 (c) {result.results['c'].p50_ms:.1f} ms, "
          f"(d) {result.results['d'].p50_ms:.1f} ms, median (d) - (c) {result.median:+.2f} ms"
          + (f"  errors {result.errors}" if result.errors else ""), flush=True)
    return PairedRun(result, auth_ms, tool_ms, user)


def print_table(results: dict[str, list[tuple[LoadResult, int, int]]], args: argparse.Namespace,
                graph_alone_ms: float | None = None, paired: PairedRun | None = None) -> bool:
    print()
    print("| implementation | callers | calls/s | p50 ms | p95 ms | in-tool p50 ms | OBO exchanges | server CPU ms/call |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for key, rows in results.items():
        for result, total, _ in rows:
            print(f"| ({key}) {IMPLEMENTATIONS[key][0]} | {result.concurrency} | {result.calls_per_s:.1f} | "
                  f"{result.p50_ms:.1f} | {result.p95_ms:.1f} | {in_tool_p50(result):.1f} | {total} | "
                  f"{getattr(result, 'cpu_ms', {}).get('server', float('nan')):.1f} |")
    print("\nin-tool: time inside the tool for the OBO token + the Graph request, measured in the server;"
          "\nserver CPU: user + system CPU of the server process per completed call.")
    checks: dict[str, bool] = {}
    if all(k in results for k in "abc"):
        checks.update(implementation_checks(results, args))
    for key in "cd":
        if key in results:
            checks.update(cache_checks(key, results[key], args))
    if all(k in results for k in "cd"):
        checks.update(mode_checks(results, args, paired))
    splits = {key: (f"({key}) {IMPLEMENTATIONS[key][0]}", call_split.split(*split_inputs(results[key][0][0])))
              for key in "cd" if key in results}
    if splits:
        call_split.print_split(splits, graph_ms=args.graph_ms, graph_alone_ms=graph_alone_ms)
    print()
    for text, passed in checks.items():
        print(f"{'MET ' if passed else 'MISS'}  {text}")
    return all(checks.values())


def split_inputs(result: LoadResult) -> tuple[list[float], list[tuple[float, dict[str, float]]], list[float]]:
    return result.latencies, result.requests, result.in_tool


def implementation_checks(results: dict[str, list[tuple[LoadResult, int, int]]],
                          args: argparse.Namespace) -> dict[str, bool]:
    """(c) against the blocking (a) and (b): the ratios per level, the throughput targets at the last level."""
    print()
    for i, level in enumerate(args.concurrency):
        a, b, c = (results[k][i][0] for k in "abc")
        print(f"{level:3d} callers: throughput (c)/(a) = {c.calls_per_s / a.calls_per_s:5.1f}x   "
              f"(c)/(b) = {c.calls_per_s / b.calls_per_s:5.1f}x   p50 (a) {a.p50_ms:.0f} ms, (b) {b.p50_ms:.0f} ms, "
              f"(c) {c.p50_ms:.0f} ms")
    a, b, c = (results[k][-1][0] for k in "abc")
    return {
        f"at {args.concurrency[-1]} callers (c) >= 10x (a) throughput": c.calls_per_s >= 10 * a.calls_per_s,
        f"at {args.concurrency[-1]} callers (c) >= 5x (b) throughput": c.calls_per_s >= 5 * b.calls_per_s,
    }


def cache_checks(key: str, rows: list[tuple[LoadResult, int, int]], args: argparse.Namespace) -> dict[str, bool]:
    """An OboCache server's targets: a warm call near the Graph latency, one exchange per (user, scope)."""
    warm = rows[0][0]
    return {
        f"warm ({key}), {warm.concurrency} caller: in-tool p50 (OBO + Graph) {in_tool_p50(warm):.1f} ms <= Graph latency + 5 ms":
            in_tool_p50(warm) <= args.graph_ms + 5,
        f"warm ({key}), {warm.concurrency} caller: end-to-end p50 {warm.p50_ms:.1f} ms <= Graph latency + 5 ms":
            warm.p50_ms <= args.graph_ms + 5,
        f"({key}) OBO exchanges per (user, scope) over the whole run = 1": max(m for _, _, m in rows) == 1
            and sum(t for _, t, _ in rows) == min(max(args.concurrency), len(USERS)),  # the users that called
    }


def mode_checks(results: dict[str, list[tuple[LoadResult, int, int]]], args: argparse.Namespace,
                paired: PairedRun | None = None) -> dict[str, bool]:
    """(d) the direct-mode server against (c) behind the OAuth proxy: per level (measured one after the other, for
    reading), then the paired section and the warm target on it: the median paired difference (d) - (c) and its whole
    95% interval below 0."""
    print("\nsequential rows (measured one after the other: machine drift between them is in these ratios):")
    for i, level in enumerate(args.concurrency):
        c, d = (results[k][i][0] for k in "cd")
        print(f"{level:3d} callers: direct (d) vs proxy (c): throughput (d)/(c) = {d.calls_per_s / c.calls_per_s:5.2f}x   "
              f"p50 (c) {c.p50_ms:.1f} ms, (d) {d.p50_ms:.1f} ms, (d)/(c) = {d.p50_ms / c.p50_ms:.2f}   "
              f"p95 (c) {c.p95_ms:.1f} ms, (d) {d.p95_ms:.1f} ms")
    if paired is None:
        print("(no paired section, --pairs 0: no direct-vs-proxy target)")
        return {}
    p = paired.paired
    paired_calls.print_paired(p, {k: f"({k}) {IMPLEMENTATIONS[k][0]}" for k in "cd"}, user=paired.user,
                              auth_ms=paired.auth_ms, tool_ms=paired.tool_ms)
    lo, hi = p.interval()
    c, d = (p.results[k] for k in "cd")
    return {f"warm, paired ({p.pairs} pairs): direct (d) - proxy (c) median {p.median:+.2f} ms, 95% interval "
            f"[{lo:+.2f}, {hi:+.2f}] ms, below 0 (p50 (c) {c.p50_ms:.1f} ms, (d) {d.p50_ms:.1f} ms; "
            f"(d) faster in {p.b_faster}/{p.pairs} pairs)": p.pairs > 0 and hi < 0}


async def graph_round_trip(emu: EmulatorProcess, reg: Registrations, args: argparse.Namespace, calls: int = 20) -> float:
    """p50 (ms) of the tool's Graph request alone, from this process with a warm connection and the injected latency:
    a user's Graph token by one OBO exchange, then `calls` requests one at a time."""
    emu.faults(clear=True)
    assertion = (await obo_credentials.user_assertions(emu, reg.mcp_server_client_id, reg.mcp_server_client_secret,
                                                       [f"{USERS[0]}@{TENANT_DOMAIN}"], REDIRECT_URI))[0]
    async with httpx.AsyncClient(verify=emu.tls, timeout=30) as http:
        token = (await raw_obo_exchange(emu, reg.mcp_server_client_id, reg.mcp_server_client_secret, assertion,
                                        GROUP_SCOPES, http=http))["access_token"]
        group = group_id("finance")
        request = {"url": f"{emu.graph_url}/me/transitiveMemberOf/microsoft.graph.group",
                   "params": {"$filter": f"id eq '{group}'", "$count": "true", "$select": "id,displayName"},
                   "headers": {"ConsistencyLevel": "eventual", "Authorization": f"Bearer {token}"}}
        (await http.get(**request)).raise_for_status()  # the connection, before the latency
        emu.latency(args.identity_ms, args.graph_ms)
        try:
            result = await load(lambda _: http.get(**request), concurrency=1, calls=calls)
        finally:
            emu.faults(clear=True)
    return result.p50_ms


@dataclass
class Run:
    """What one benchmark run measured (`measure`), before it is printed."""

    results: dict[str, list[tuple[LoadResult, int, int]]]  # per implementation: (result, exchanges, max per key) per level
    servers: dict[str, ServerProcess]
    walls: dict[str, float]  # seconds per implementation (server start, sign-in, every level), "Graph round trip alone"
    emulator_ready_s: float
    graph_alone_ms: float | None = None
    section: obo_credentials.CredentialSection | None = None
    paired: PairedRun | None = None


async def measure(args: argparse.Namespace) -> Run:
    """Start the emulator, run the implementations `args` asks for (and the credentials section), stop it."""
    implementations = "" if args.credentials_only else args.implementations
    with tempfile.TemporaryDirectory(prefix="obokit-bench-") as tmp:
        folder = Path(tmp)
        emu = EmulatorProcess(Path(args.state_dir) if args.state_dir else folder / "emulator")
        os.environ["SSL_CERT_FILE"] = os.environ["REQUESTS_CA_BUNDLE"] = emu.ca_bundle
        run = Run({}, {}, {}, emu.ready_s)
        try:
            reg = await asyncio.to_thread(provision, emu)
            client_id = await asyncio.to_thread(direct_client, emu, reg) if "d" in implementations else ""
            for key in implementations:
                t0 = time.perf_counter()
                run.results[key], run.servers[key] = await run_implementation(key, emu, reg, folder, args, client_id)
                run.walls[key] = time.perf_counter() - t0
            if "c" in run.results and "d" in run.results and args.pairs > 0:
                t0 = time.perf_counter()
                run.paired = await run_paired(emu, reg, folder, args, client_id)
                run.walls["paired (c)/(d)"] = time.perf_counter() - t0
            if "c" in run.results or "d" in run.results:
                t0 = time.perf_counter()
                run.graph_alone_ms = await graph_round_trip(emu, reg, args)
                run.walls["Graph round trip alone"] = time.perf_counter() - t0
            if not args.no_credentials:
                print("\ncold OBO exchange per credential:", flush=True)
                run.section = await credentials_section(emu, reg, args)
        finally:
            emu.stop()
    return run


async def main_async(args: argparse.Namespace) -> int:
    print(f"machine: {machine()}")
    print(f"latency: identity {args.identity_ms:g} ms, Graph {args.graph_ms:g} ms; {args.duration:g} s per level; "
          f"callers {args.concurrency} over {len(USERS)} users; tool {TOOL} (OBO + 1 Graph call)")
    run = await measure(args)
    print(f"\nprocess start until ready (imports included): emulator {run.emulator_ready_s:.2f} s; "
          + ", ".join(f"server ({k}) {s.ready_s:.2f} s (start_workbook_server {s.start_s:.2f} s)"
                      for k, s in run.servers.items()))
    if run.walls:
        print("wall time (server start, sign-in, every level): "
              + ", ".join(f"({k}) {w:.1f} s" if len(k) == 1 else f"{k} {w:.1f} s" for k, w in run.walls.items()))
    ok = print_table(run.results, args, run.graph_alone_ms, run.paired) if run.results else True
    if run.section is not None:
        ok = obo_credentials.print_section(run.section) and ok
    return 0 if ok or not args.strict else 1


async def credentials_section(emu: EmulatorProcess, reg: Registrations,
                              args: argparse.Namespace) -> obo_credentials.CredentialSection:
    """The section "cold OBO exchange per credential", in this process, for the server app `reg`."""
    with admin_graph(emu) as graph:
        return await obo_credentials.run_section(
            emu, graph, reg.mcp_server_client_id, reg.mcp_server_client_secret,
            [f"{name}@{TENANT_DOMAIN}" for name in USERS], REDIRECT_URI, args)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--identity-ms", type=float, default=30, help="injected identity provider latency (default 30)")
    parser.add_argument("--graph-ms", type=float, default=30, help="injected Graph latency (default 30)")
    parser.add_argument("--duration", type=float, default=3, help="seconds per implementation and level (default 3)")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10, 50],
                        help="comma-separated caller counts (default 1,10,50)")
    parser.add_argument("--implementations", default="abcd", help="which of a, b, c, d to run (default abcd)")
    parser.add_argument("--modes-only", action="store_true",
                        help="only the auth modes: (c) behind the OAuth proxy and (d) direct, with the per-call split "
                             "(= --implementations cd --no-credentials)")
    parser.add_argument("--pairs", type=int, default=160,
                        help="paired section: warm (c),(d) call pairs with both servers running, order alternating "
                             "(default 160; 0 skips it and the direct-vs-proxy target)")
    parser.add_argument("--pair-warmup", type=int, default=10, help="paired section: warm-up pairs (default 10)")
    parser.add_argument("--state-dir", default=None, help="emulator state folder to reuse (default: a fresh one)")
    parser.add_argument("--profile", metavar="PATH", default=None,
                        help="cProfile the server's event-loop thread during the measured calls; stats in PATH.<a|b|c|d>")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    obo_credentials.add_arguments(parser)
    parser.add_argument("--serve", metavar="KEY", help=argparse.SUPPRESS)  # internal: the server child
    args = parser.parse_args(argv)
    if args.modes_only:
        args.implementations, args.no_credentials = "cd", True
    return args


if __name__ == "__main__":
    options = parse_args()
    sys.exit(serve_child(options.serve) if options.serve else asyncio.run(main_async(options)))
