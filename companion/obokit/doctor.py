"""`obokit doctor`: is this machine ready to run the workbook, and against what?

Each check is one line, `OK`, `WARN` or `FAIL`, with what was found; `run_doctor()` prints them
and returns the exit code (1 when any line is a FAIL). Network checks use a short timeout and
never hang; on the emulator target the emulator is started for a moment and stopped again.
Secrets are never shown: a secret is reported as set or missing.

    from obokit.doctor import run_doctor
    exit_code = run_doctor()
"""

from __future__ import annotations

import os
import ssl
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from dotenv import dotenv_values

from . import settings

PACKAGES = ("fastmcp", "mcp", "msal", "azure-identity", "msgraph-sdk", "httpx", "python-dotenv", "cryptography",
            "nbclient", "jupyterlab")
DEMO_KEYS = ("DEMO_ADMIN_UPN", "DEMO_ANALYST_UPN", "DEMO_ENGINEER_UPN", "DEMO_FINANCE_GROUP_ID",
             "DEMO_FINANCE_SITE", "DEMO_ENGINEERING_SITE")
TIMEOUT = httpx.Timeout(5.0, connect=3.0)


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    status: str  # "OK", "WARN" or "FAIL"
    name: str
    detail: str

    def __str__(self) -> str:
        return f"{self.status:<4} {self.name}: {self.detail}"


def ok(name: str, detail: str) -> Check:
    return Check("OK", name, detail)


def warn(name: str, detail: str) -> Check:
    return Check("WARN", name, detail)


def fail(name: str, detail: str) -> Check:
    return Check("FAIL", name, detail)


# -- environment ------------------------------------------------------------------------------
def python_version() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info < (3, 11):
        return fail("python", f"{version} at {sys.executable}; the workbook needs 3.11 or newer")
    return ok("python", f"{version} at {sys.executable}")


def pinned_versions(constraints: Path) -> dict[str, str]:
    """`name==version` lines of constraints.txt, names normalised (lower case, '-' for '_')."""
    if not constraints.exists():
        return {}
    pins = {}
    for line in constraints.read_text().splitlines():
        name, sep, version = line.split("#", 1)[0].strip().partition("==")
        if sep:
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def package_versions(pins: dict[str, str]) -> list[Check]:
    """Installed version of each key package, compared with the pin in constraints.txt."""
    checks = []
    for name in PACKAGES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            checks.append(fail(name, "not installed (run `make workbook` to create .venv)"))
            continue
        pinned = pins.get(name)
        if pinned and pinned != version:
            checks.append(warn(name, f"{version} installed, constraints.txt pins {pinned}"))
        else:
            checks.append(ok(name, version))
    return checks


def ca_file(name: str, value: str | None) -> Check:
    """An SSL_CERT_FILE-style variable: unset is fine; set, it must name a readable PEM bundle."""
    if not value:
        return ok(name, "not set (system CAs; the emulator sets it while it runs in-process)")
    path = Path(value)
    if not path.is_file():
        return fail(name, f"{value} does not exist: unset it or restart `obokit emulator serve` and copy its lines")
    try:
        count = ssl.create_default_context(cafile=str(path)).cert_store_stats()["x509_ca"]
    except (ssl.SSLError, OSError, ValueError) as error:
        return fail(name, f"{value} is not a PEM certificate bundle ({error.__class__.__name__})")
    return ok(name, f"{value} ({count} CA certificates)")


def ca_settings(env_file: Path) -> list[Check]:
    """SSL_CERT_FILE and REQUESTS_CA_BUNDLE as the process sees them (and as `.env` sets them)."""
    in_file = {k: v for k, v in dotenv_values(env_file).items() if v} if env_file.exists() else {}
    checks = []
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        exported = os.environ.get(name)
        check = ca_file(name, exported or in_file.get(name))
        if check.status == "OK" and in_file.get(name) and not exported:
            check = warn(name, f"{in_file[name]} is in .env but not in the environment: export it "
                               "(TLS libraries read it from the environment, not from .env)")
        checks.append(check)
    return checks


def ca_verify(env_file: Path) -> str | bool:
    """What a client of this target should trust: the configured CA bundle, else the system's."""
    in_file = dotenv_values(env_file) if env_file.exists() else {}
    return os.environ.get("SSL_CERT_FILE") or in_file.get("SSL_CERT_FILE") or True


# -- the target -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Endpoints:
    kind: str  # "emulator" or "tenant"
    tenant_id: str
    authority: str
    graph_url: str
    ca: str | bool = True  # httpx `verify`


def tenant_target(env: dict[str, str], ca: str | bool) -> tuple[list[Check], Endpoints | None]:
    try:
        tenant = settings.tenant_settings()
    except ValueError as error:
        return [fail("target", f"tenant: {error}")], None
    checks = [ok("target", f"tenant {tenant.tenant_id} at {tenant.authority_host}")]
    missing = [key for key in DEMO_KEYS if not env.get(key)]
    if missing:
        checks.append(fail("demo settings", f"missing in .env: {', '.join(missing)} (see .env.example)"))
    else:
        checks.append(ok("demo settings", "all set"))
    secret = "set" if env.get("MCP_SERVER_CLIENT_SECRET") else "missing"
    registered = "set" if env.get("MCP_SERVER_CLIENT_ID") else "missing (01-app-registration writes it)"
    checks.append(ok("registration", f"MCP_SERVER_CLIENT_ID {registered}, MCP_SERVER_CLIENT_SECRET {secret}"))
    return checks, Endpoints("tenant", tenant.tenant_id, tenant.authority_host, tenant.graph_base_url, ca)


@contextmanager
def emulator_target(state_dir: Path) -> Iterator[tuple[list[Check], Endpoints | None]]:
    """Start the emulator on `state_dir` for the duration of the checks."""
    from .emulator import Emulator

    try:
        emulator = Emulator(state_dir).start()
    except Exception as error:  # a broken state folder, no free port, ...
        yield [fail("target", f"emulator could not start on {state_dir}: {error}")], None
        return
    try:
        bundle = ca_file("emulator CA", emulator.ca_bundle)
        yield ([ok("target", f"emulator (started for this check, state in {state_dir})"), bundle],
               Endpoints("emulator", emulator.tenant_id, emulator.authority, emulator.graph_url, emulator.ca_bundle))
    finally:
        emulator.close()


def reachable(endpoints: Endpoints) -> list[Check]:
    """The authority's OpenID discovery document and Graph, each with a short timeout."""
    discovery = f"{endpoints.authority}/{endpoints.tenant_id}/v2.0/.well-known/openid-configuration"
    checks = []
    try:
        verify = ssl.create_default_context(cafile=endpoints.ca) if isinstance(endpoints.ca, str) else endpoints.ca
    except (OSError, ssl.SSLError) as error:
        return [fail("authority", f"cannot use the CA bundle {endpoints.ca}: {describe(error)}")]
    with httpx.Client(timeout=TIMEOUT, verify=verify) as http:
        try:
            response = http.get(discovery)
            if response.status_code == 200 and "token_endpoint" in response.json():
                checks.append(ok("authority", f"{endpoints.authority}: OpenID configuration of the tenant served"))
            else:
                checks.append(fail("authority", f"{discovery} answered {response.status_code}: check AZURE_TENANT_ID"))
        except (httpx.HTTPError, ValueError) as error:
            checks.append(fail("authority", f"{host_of(endpoints.authority)} unreachable: {describe(error)}"))
        try:
            response = http.get(f"{endpoints.graph_url}/me")
            if response.status_code in (200, 401):
                checks.append(ok("graph", f"{endpoints.graph_url}: answered {response.status_code} (reachable; calls need a token)"))
            else:
                checks.append(warn("graph", f"{endpoints.graph_url}/me answered {response.status_code}"))
        except httpx.HTTPError as error:
            checks.append(fail("graph", f"{host_of(endpoints.graph_url)} unreachable: {describe(error)}"))
    return checks


def host_of(url: str) -> str:
    return urlsplit(url).netloc or url


def describe(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}{': ' + text[:120] if text else ''}"


# -- the notebooks ----------------------------------------------------------------------------
def project_path(name: str) -> Path:
    """`name` in the project folder, else in the checkout obokit is installed from (editable install)."""
    here = settings.project_root() / name
    return here if here.exists() else Path(__file__).resolve().parents[2] / name


def notebooks_dir() -> Path:
    return project_path("notebooks")


def notebooks(kind: str | None, checks: list[Check]) -> Check:
    """Which notebooks will run: all of them in order, or none while an earlier check FAILs."""
    folder = notebooks_dir()
    names = sorted(path.stem for path in folder.glob("[0-9][0-9]-*.ipynb"))
    if not names:
        return warn("notebooks", f"none found in {folder}")
    listed = f"{len(names)} ({names[0]} … {names[-1]})"
    if kind is None or any(check.status == "FAIL" for check in checks):
        return fail("notebooks", f"none of {listed} will run until the FAIL lines above are fixed")
    if kind == "emulator":
        return ok("notebooks", f"all {listed} will run, in order, on the emulator (`make workbook`)")
    return ok("notebooks", f"all {listed} will run in order against the tenant; sign-ins open your browser, "
                           "so run them in JupyterLab (`make lab`)")


# -- the report -------------------------------------------------------------------------------
def collect() -> list[Check]:
    """Every check, in the order they are printed."""
    env = settings.read_env()
    checks = [python_version(), *package_versions(pinned_versions(project_path("constraints.txt")))]
    env_file = settings.env_file()
    checks += ca_settings(env_file)
    try:
        kind = settings.target()
    except ValueError as error:
        return [*checks, fail("target", str(error)), notebooks(None, [])]
    if kind == "tenant":
        target_checks, endpoints = tenant_target(env, ca_verify(env_file))
        checks += [*target_checks, *(reachable(endpoints) if endpoints else [])]
    else:
        with emulator_target(settings.state_dir()) as (target_checks, endpoints):
            checks += [*target_checks, *(reachable(endpoints) if endpoints else [])]
    return [*checks, notebooks(kind, checks)]


def run_doctor(out: Callable[[str], None] = print) -> int:
    """Print the report; 0 when nothing failed, 1 otherwise."""
    checks = collect()
    for check in checks:
        out(str(check))
    failed = sum(check.status == "FAIL" for check in checks)
    warned = sum(check.status == "WARN" for check in checks)
    out(f"doctor: {len(checks)} checks, {failed} FAIL, {warned} WARN")
    return 1 if failed else 0


__all__ = ["Check", "collect", "run_doctor"]
