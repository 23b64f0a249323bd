"""Cold OBO exchanges per server credential: client secret (the baseline), certificate, managed identity via FIC.

The section "cold OBO exchange per credential" of `benchmarks/obo_tools.py` (`--credentials-only` runs it alone).
In the callers' process, against the same `obokit emulator serve` and identity latency as the rest of the benchmark,
each credential makes `--credential-exchanges` On-Behalf-Of exchanges with `raw_obo_exchange` (what the server's
`OboCache` calls on a miss; no OboCache, MSAL or azure-identity cache is involved, and the emulator's count of
exchanges answered proves that each one reached /token), first one at a time (p50 and p95), then
`--credential-concurrency` at a time while a ticker on the same event loop records how late it wakes (loop lag).
The rows share one httpx connection pool, warmed before the first row, as the server's pool is.

* secret: `ClientSecret`, the app's password (the baseline of the ratios);
* certificate: `ClientCertificate`, registered through Graph (`keyCredentials`); a PS256 assertion, reused while valid;
* managed identity: `ManagedIdentityAssertion` (MSAL's managed identity client), the app trusting the identity through
  a federated identity credential; IDENTITY_ENDPOINT / IDENTITY_HEADER, as `obokit emulator serve` printed them, are
  set in this process during its rows only. The endpoint's requests are read from the emulator's stats;
* managed identity, short-lived: the same, but each token is treated as living `--mi-lifetime` seconds (no refresh
  margin) and fetched by a new MSAL client (no MSAL cache between fetches), so the credential refreshes it during
  the row and every refresh reaches the endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import msal
import requests
from cryptography.hazmat.primitives import serialization

from obokit.clients.headless import HeadlessBrowser
from obokit.emulator import TENANT_ID, Emulator
from obokit.emulator.managed_identity import app_service_environment
from obokit.obo_bench import LoadResult, LoopLag, exchanges_since, load, obo_exchanges
from obokit.server.credentials import (
    TOKEN_EXCHANGE_AUDIENCE,
    ClientCertificate,
    ClientSecret,
    ManagedIdentityAssertion,
    ServerCredential,
    msal_managed_identity_fetch,
    self_signed_certificate,
)
from obokit.server.obo import check, raw_obo_exchange

SCOPES = ["https://graph.microsoft.com/GroupMember.Read.All"]  # what check_group_membership asks for
LAG_TARGET_MS = 5.0
BASELINE = "secret"


@dataclass
class FetchLog:
    """A `ManagedIdentityAssertion.fetch` that records each successful fetch's lifetime as the credential uses it:
    from the fetch's start until `refresh_margin` seconds before the token expires.

    `lifetime` (seconds) makes every token count as living `refresh_margin + lifetime` from when it arrived,
    the way a platform with short-lived tokens would answer; None keeps the endpoint's expiry.
    """

    fetch: Callable[[], dict[str, Any]]
    refresh_margin: float
    lifetime: float | None = None
    windows: list[tuple[float, float]] = field(default_factory=list)  # (fetch started, assertion refreshed from)

    def __call__(self) -> dict[str, Any]:
        started = time.time()
        result = self.fetch()
        if "access_token" in result:
            if self.lifetime is not None:
                result = {**result, "expires_on": time.time() + self.refresh_margin + self.lifetime}
            expires = float(result["expires_on"]) if "expires_on" in result else time.time() + float(result["expires_in"])
            self.windows.append((started, expires - self.refresh_margin))
        return result

    @property
    def max_calls_per_lifetime(self) -> int:
        """The most fetches that started within one assertion's lifetime (1 when every refresh waited for the expiry)."""
        return max((sum(start <= s < end for s, _ in self.windows) for start, end in self.windows), default=0)

    @property
    def lifetime_s(self) -> float:
        """The shortest lifetime of a fetched assertion, as the credential used it."""
        return min((end - start for start, end in self.windows), default=float("nan"))


@dataclass
class ManagedIdentityCount:
    endpoint_calls: int  # requests the emulator's managed identity endpoint answered during the row
    fetches: int  # ManagedIdentityAssertion.fetches
    lifetimes: int  # assertion lifetimes the row used (one per successful fetch)
    max_per_lifetime: int
    lifetime_s: float

    @property
    def met(self) -> bool:
        """At most one endpoint call per assertion lifetime: no endpoint call outside a fetch, no two fetches in one."""
        return 0 < self.endpoint_calls <= self.fetches and self.max_per_lifetime <= 1


@dataclass
class CredentialRow:
    key: str
    label: str
    one_at_a_time: LoadResult
    concurrent: LoadResult
    lag_ms: float  # the loop's largest lag over both phases (wall clock)
    busy_lag_ms: float  # the same, counting only the time this process was on a CPU (LoopLag.max_busy_ms)
    answered: int  # OBO exchanges the emulator answered during the row
    managed_identity: ManagedIdentityCount | None = None

    @property
    def exchanges(self) -> int:
        return self.one_at_a_time.calls + self.concurrent.calls

    @property
    def errors(self) -> int:
        return self.one_at_a_time.errors + self.concurrent.errors


@dataclass
class CredentialSection:
    rows: list[CredentialRow]
    identity_ms: float
    concurrency: int
    seconds: float  # the section's wall time, set-up included

    def row(self, key: str) -> CredentialRow:
        return next(r for r in self.rows if r.key == key)


def der_base64(certificate: ClientCertificate) -> str:
    return base64.b64encode(certificate.certificate.public_bytes(serialization.Encoding.DER)).decode()


def register_credentials(emu: Any, graph: httpx.Client, client_id: str) -> ClientCertificate:
    """A new certificate on the app (`keyCredentials`) and a federated credential trusting the managed identity."""
    app = graph.get("/applications", params={"$filter": f"appId eq '{client_id}'"}).raise_for_status().json()["value"][0]
    certificate = ClientCertificate.from_pem(self_signed_certificate("obokit benchmark server"))
    graph.patch(f"/applications/{app['id']}", json={"keyCredentials": [
        {"type": "AsymmetricX509Cert", "usage": "Verify", "key": der_base64(certificate)}]}).raise_for_status()
    graph.post(f"/applications/{app['id']}/federatedIdentityCredentials", json={
        "name": "managed-identity", "issuer": f"{emu.authority}/{TENANT_ID}/v2.0",
        "subject": Emulator.managed_identity.principal_id, "audiences": [TOKEN_EXCHANGE_AUDIENCE]}).raise_for_status()
    return certificate


async def user_assertions(emu: Any, client_id: str, secret: str, upns: Sequence[str], redirect_uri: str) -> list[str]:
    """An access token for the app's own API (`mcp-access`) per user: MSAL's auth code flow, headless browser."""
    return await entra_tokens(emu, client_id, f"api://{client_id}/mcp-access", upns, redirect_uri, secret=secret)


async def entra_tokens(emu: Any, client_id: str, scope: str, upns: Sequence[str], redirect_uri: str, *,
                       secret: str | None = None) -> list[str]:
    """An Entra access token for `scope` per user, MSAL's auth code flow signed in by the headless browser: the
    app `client_id` as a confidential client (`secret`) or, without one, as a public client (a pre-authorized MCP
    client of a direct-mode server; a loopback `redirect_uri`, never bound)."""
    session = requests.Session()
    session.verify = emu.ca_bundle
    common = {"authority": emu.tenant_authority, "instance_discovery": False, "http_client": session}
    app: msal.ClientApplication
    if secret is not None:
        app = await asyncio.to_thread(msal.ConfidentialClientApplication, client_id, client_credential=secret, **common)
    else:
        app = await asyncio.to_thread(msal.PublicClientApplication, client_id, **common)
    tokens = []
    async with httpx.AsyncClient(verify=emu.tls, timeout=30) as browser:
        for upn in upns:
            flow = app.initiate_auth_code_flow([scope], redirect_uri=redirect_uri,
                                               response_mode="form_post")
            callback = await HeadlessBrowser(account=upn, client=browser).sign_in(flow["auth_uri"], redirect_uri=redirect_uri)
            result = await asyncio.to_thread(app.acquire_token_by_auth_code_flow, flow,
                                             dict(parse_qsl(urlsplit(callback).query)))
            tokens.append(str(check(result)["access_token"]))
            browser.cookies.clear()  # the next user signs in afresh
    return tokens


def identity_calls(emu: Any) -> int:
    return int(emu.stats()["managed_identity"]["requests"])


async def run_row(key: str, label: str, credential: ServerCredential, *, emu: Any, client_id: str,
                  assertions: Sequence[str], http: httpx.AsyncClient, count: int, concurrency: int,
                  fetch_log: FetchLog | None = None) -> CredentialRow:
    """`count` exchanges one at a time, then `count` with `concurrency` at a time, the loop's lag measured in both."""
    target = SimpleNamespace(tenant_authority=emu.tenant_authority)
    turn = itertools.count()

    async def exchange(_worker: int) -> None:
        await raw_obo_exchange(target, client_id, credential, assertions[next(turn) % len(assertions)], SCOPES, http=http)

    before, calls_before = obo_exchanges(emu), identity_calls(emu)
    async with LoopLag() as lag_one:
        one = await load(exchange, concurrency=1, calls=count)
    async with LoopLag() as lag_many:
        many = await load(exchange, concurrency=concurrency, calls=count)
    answered = sum(exchanges_since(emu, before).values())
    counted = None
    if isinstance(credential, ManagedIdentityAssertion) and fetch_log is not None:
        counted = ManagedIdentityCount(identity_calls(emu) - calls_before, credential.fetches, len(fetch_log.windows),
                                       fetch_log.max_calls_per_lifetime, fetch_log.lifetime_s)
    return CredentialRow(key, label, one, many, max(lag_one.max_ms, lag_many.max_ms),
                         max(lag_one.max_busy_ms, lag_many.max_busy_ms), answered, counted)


def credentials(secret: str, certificate: ClientCertificate,
                short_lifetime: float) -> list[tuple[str, str, ServerCredential, FetchLog | None]]:
    """(key, label, credential, fetch log) of each row, the baseline first."""
    mi_client_id = Emulator.managed_identity.client_id
    margin = ManagedIdentityAssertion.refresh_margin  # the dataclass default: 300 s
    kept = FetchLog(msal_managed_identity_fetch(mi_client_id), margin)
    # Short-lived tokens with no refresh margin: each lives `short_lifetime` seconds, then the next is fetched.
    fresh = FetchLog(lambda: msal_managed_identity_fetch(mi_client_id)(), 0, lifetime=short_lifetime)
    return [
        (BASELINE, "client secret", ClientSecret(secret), None),
        ("certificate", "certificate (PS256 assertion)", certificate, None),
        ("managed identity", "managed identity via FIC", ManagedIdentityAssertion(mi_client_id, fetch=kept), kept),
        ("managed identity, short-lived", f"managed identity via FIC, {short_lifetime:g} s assertions",
         ManagedIdentityAssertion(mi_client_id, fetch=fresh, refresh_margin=0), fresh),
    ]


async def run_section(emu: Any, graph: httpx.Client, client_id: str, secret: str, upns: Sequence[str],
                      redirect_uri: str, args: argparse.Namespace) -> CredentialSection:
    """Register the certificate and the federated credential, sign the users in, run every credential's row."""
    started = time.perf_counter()
    emu.faults(clear=True)  # set-up without the injected latency
    certificate = await asyncio.to_thread(register_credentials, emu, graph, client_id)
    assertions = await user_assertions(emu, client_id, secret, upns, redirect_uri)
    rows = []
    emu.latency(args.identity_ms, args.graph_ms)
    try:
        async with httpx.AsyncClient(verify=emu.tls, timeout=30) as http:
            baseline = ClientSecret(secret)
            target = SimpleNamespace(tenant_authority=emu.tenant_authority)
            await asyncio.gather(*(raw_obo_exchange(target, client_id, baseline, assertions[i % len(assertions)],
                                                    SCOPES, http=http)
                                   for i in range(args.credential_concurrency)))  # open the pool's connections
            for key, label, credential, fetch_log in credentials(secret, certificate, args.mi_lifetime):
                with identity_environment(emu, isinstance(credential, ManagedIdentityAssertion)):
                    rows.append(await run_row(key, label, credential, emu=emu, client_id=client_id,
                                              assertions=assertions, http=http, count=args.credential_exchanges,
                                              concurrency=args.credential_concurrency, fetch_log=fetch_log))
                print(f"  {label:44} p50 {rows[-1].one_at_a_time.p50_ms:6.1f} ms  max loop lag "
                      f"{rows[-1].busy_lag_ms:5.1f} ms on CPU, {rows[-1].lag_ms:5.1f} ms wall clock", flush=True)
    finally:
        emu.faults(clear=True)
    return CredentialSection(rows, args.identity_ms, args.credential_concurrency, time.perf_counter() - started)


def identity_environment(emu: Any, needed: bool) -> contextlib.AbstractContextManager[Any]:
    """IDENTITY_ENDPOINT / IDENTITY_HEADER of the emulator, in this process, for a managed identity's row only."""
    if not needed:
        return contextlib.nullcontext()
    env = emu.managed_identity_env
    return app_service_environment(env["IDENTITY_ENDPOINT"], env["IDENTITY_HEADER"])


def print_section(section: CredentialSection) -> bool:
    """The section's table, ratios and targets; True when every target is met."""
    base = section.row(BASELINE).one_at_a_time.p50_ms
    n = section.concurrency
    print(f"\ncold OBO exchange per credential (raw_obo_exchange, no cache; identity latency {section.identity_ms:g} ms; "
          f"one at a time, then {n} at a time; {section.seconds:.1f} s with set-up)\n")
    print(f"| credential | exchanges | p50 ms | p95 ms | p50 vs {BASELINE} | p50 ms, {n} at a time | "
          "max loop lag ms, on CPU | max loop lag ms, wall clock | answered by /token |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in section.rows:
        one = row.one_at_a_time
        print(f"| {row.label} | {row.exchanges} | {one.p50_ms:.1f} | {one.p95_ms:.1f} | {one.p50_ms / base:.2f}x | "
              f"{row.concurrent.p50_ms:.1f} | {row.busy_lag_ms:.1f} | {row.lag_ms:.1f} | {row.answered}"
              + (f" ({row.errors} errors)" if row.errors else "") + " |")
    print("\np50/p95: one exchange at a time; loop lag: the largest delay of a 1 ms ticker on the same event loop, "
          f"one at a time and {n} at a time;\non CPU: only the part of it this process spent on a CPU (its work, its "
          "threads holding the GIL); the rest of the wall clock is\nthe machine running other processes (the emulator, "
          "other users).")
    checks: dict[str, bool] = {}
    for row in section.rows:
        mi = row.managed_identity
        if mi is not None:
            print(f"{row.label}: {mi.endpoint_calls} managed identity endpoint call(s) (emulator stats), "
                  f"{mi.fetches} fetch(es), {mi.lifetimes} assertion lifetime(s) of {mi.lifetime_s:,.2f} s, "
                  f"at most {mi.max_per_lifetime} fetch(es) within one lifetime")
            checks[f"{row.label}: <= 1 managed identity endpoint call per assertion lifetime "
                   f"({mi.endpoint_calls} call(s) over {mi.lifetimes} lifetime(s))"] = mi.met
    for row in section.rows:
        checks[f"{row.label}: max event-loop lag {row.busy_lag_ms:.1f} ms < {LAG_TARGET_MS:g} ms "
               f"(on CPU; {row.lag_ms:.1f} ms wall clock)"] = row.busy_lag_ms < LAG_TARGET_MS
        checks[f"{row.label}: every exchange reached /token ({row.answered} of {row.exchanges}, 0 errors)"] = (
            row.answered == row.exchanges and row.errors == 0)
    print()
    for text, passed in checks.items():
        print(f"{'MET ' if passed else 'MISS'}  {text}")
    return all(checks.values())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--credentials-only", action="store_true",
                        help="run only the section 'cold OBO exchange per credential'")
    parser.add_argument("--no-credentials", action="store_true", help="skip that section")
    parser.add_argument("--credential-exchanges", type=int, default=60,
                        help="cold exchanges per credential, one at a time and again concurrently (default 60)")
    parser.add_argument("--credential-concurrency", type=int, default=10,
                        help="exchanges at a time in the loop-lag phase (default 10)")
    parser.add_argument("--mi-lifetime", type=float, default=0.25,
                        help="the short-lived managed identity row's assertion lifetime, seconds (default 0.25)")


__all__ = ["CredentialRow", "CredentialSection", "FetchLog", "add_arguments", "entra_tokens", "print_section", "run_section"]
