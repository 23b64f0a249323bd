"""Run the parity scenarios against a target, report how it differs from the committed snapshots, and re-record.

    .venv/bin/python -m tests.parity.record --env PATH                       # report only
    .venv/bin/python -m tests.parity.record --env PATH --record --out DIR    # also write sanitised snapshots

PATH is a `.env` as in the README's "Running against your own tenant" (OBOKIT_TARGET=tenant,
AZURE_TENANT_ID, AZURE_AUTHORITY_HOST, GRAPH_BASE_URL, DEMO_*), or the lines `obokit emulator serve`
prints. The admin signs in with the device code flow (Microsoft Graph Command Line Tools) and the demo
users in your browser; a standalone emulator approves both headlessly. Scenarios that need a lever only
the in-process emulator has (an MFA policy, an expired token) are skipped.

A recorded snapshot keeps every committed field the target still satisfies (with its source) and
records the rest as shapes only: JSON types, and values only for stable codes (error, error_codes,
Graph's code, token_type, ...), never a token, secret, id, UPN or trace id. The written files are then
scanned for JWTs, bearer tokens, passwords, client secrets, GUIDs and this run's own values; any finding
fails the run (exit code 2). `--out tests/parity/snapshots` replaces the committed snapshots.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
from dotenv import dotenv_values

from obokit.emulator import GRAPH_APP_ID
from obokit.tenant.target import ADMIN_SCOPES, GRAPH_CLI_CLIENT_ID
from obokit.workbook import _patched_environ
from test_secrets_scan import scan_text

from .compare import check, compare, json_type, resolve, specs_of
from .scenarios import SCENARIOS, Answer, World, run, target_from_env

SNAPSHOT_DIR = Path(__file__).parent / "snapshots"
STABLE_KEYS = {"error", "error_codes", "suberror", "code", "token_type", "ver", "typ", "alg", "kty", "use", "e",
               "consentType", "principalType", "signInAudience", "requestedAccessTokenVersion"}
RECORDED_HEADERS = {"content-type", "cache-control", "pragma", "access-control-allow-origin"}  # values kept as sent
EXTRA_PATTERNS = {
    "bearer token": re.compile(r"Bearer\s+[\w~.+/=-]{16,}"),
    "password": re.compile(r"[\"']password[\"']\s*:\s*[\"'][^\"']+", re.IGNORECASE),
    "GUID": re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"),
}
PUBLIC_GUIDS = {GRAPH_APP_ID, GRAPH_CLI_CLIENT_ID, "00000000-0000-0000-0000-000000000000"}


def load(name: str, folder: Path = SNAPSHOT_DIR) -> dict[str, Any]:
    return json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))


def dump(snapshot: dict[str, Any], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(snapshot, indent=2, ensure_ascii=False) + "\n"
    (folder / f"{snapshot['name']}.json").write_text(text, encoding="utf-8")


def shape(body: Any, path: str = "") -> dict[str, dict[str, Any]]:
    """A spec per leaf of `body`: its JSON type, plus its value where the key is a stable code."""
    if isinstance(body, dict) and body:
        return {p: s for key, value in body.items() for p, s in shape(value, f"{path}/{key}".lstrip("/")).items()}
    if isinstance(body, list) and body and all(isinstance(item, dict) for item in body):
        return {p: s for item in body for p, s in shape(item, f"{path}/*").items()}
    spec: dict[str, Any] = {"type": json_type(body)}
    if path.rsplit("/", 1)[-1] in STABLE_KEYS:
        spec["equals"] = body
    return {path or "$": spec}


def recorded(committed: dict[str, Any], answer: Answer, origin: str) -> dict[str, Any]:
    """The snapshot of `answer`: the committed specs it satisfies as they were, the rest recorded from it."""
    snapshot = {k: committed[k] for k in ("name", "about", "request") if k in committed} | {"recorded": origin}

    def merged(field: Any, places: list[tuple[str, bool, Any]], fresh: dict[str, Any]) -> Any:
        if field is None:
            return {**fresh, "source": origin}
        specs = specs_of(field)
        kept = [spec for spec in specs if not any(check("", found, value, spec) for _, found, value in places)]
        if len(kept) == len(specs):
            return field
        said = "; ".join(spec["source"] for spec in specs if spec not in kept)
        new = {**fresh, "source": f"{origin}; the committed snapshot said: {said}"}
        return [*kept, new] if kept else new

    if answer.get("status") is not None:
        snapshot["status"] = merged(committed.get("status"), [("", True, answer["status"])], {"equals": answer["status"]})
    headers = {k.lower(): v for k, v in (answer.get("headers") or {}).items()}
    snapshot["headers"] = {
        name: merged(committed.get("headers", {}).get(name), [("", name in headers, headers.get(name))],
                     {"equals": headers[name]} if name in RECORDED_HEADERS & set(headers)
                     else {"type": "string"} if name in headers else {"absent": True})
        for name in sorted(set(committed.get("headers", {})) | (RECORDED_HEADERS & set(headers)))}
    fresh = shape(answer.get("body"))
    body: dict[str, Any] = {}
    for path, field in committed.get("body", {}).items():
        places = list(resolve(answer.get("body"), path))
        present = [value for _, found, value in places if found]
        spec = fresh.pop(path, None) or ({"type": json_type(present[0])} if present else {"absent": True})
        body[path] = merged(field, places, spec)
    snapshot["body"] = body | {path: {**spec, "source": origin} for path, spec in fresh.items()}
    if "not_asserted" in committed:
        snapshot["not_asserted"] = committed["not_asserted"]
    return snapshot


def scan(paths: Iterable[Path], known: Iterable[str] = ()) -> list[str]:
    """Findings in written snapshots: JWTs, client secrets and secretText values (test_secrets_scan), bearer
    tokens, passwords, GUIDs other than Microsoft's public app ids, and `known` values of the run."""
    known = [value for value in known if value]
    findings = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        findings += [str(finding) for finding in scan_text(text, path.name, known)]
        findings += [f"{path.name}: {kind} {match.group(0)[:8]}…" for kind, rx in EXTRA_PATTERNS.items()
                     for match in rx.finditer(text) if match.group(0).lower() not in PUBLIC_GUIDS]
    return findings


def is_standalone_emulator(env: dict[str, str]) -> bool:
    """Whether the authority is an obokit emulator serving this tenant (it answers /_emulator/health)."""
    try:
        health = httpx.get(f"{env['AZURE_AUTHORITY_HOST'].rstrip('/')}/_emulator/health", timeout=5)
        return health.status_code == 200 and health.json().get("tenant") == env["AZURE_TENANT_ID"]
    except (httpx.HTTPError, ValueError):
        return False


def ca_trust(env: dict[str, str]) -> contextlib.AbstractContextManager[None]:
    """SSL_CERT_FILE / REQUESTS_CA_BUNDLE of the .env (a standalone emulator's CA) while the run lasts."""
    return _patched_environ({name: env[name] for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE") if env.get(name)})


def attempt(name: str, world: World) -> Answer | str:
    """The answer, or why there is none (a missing lever, or the error the scenario raised)."""
    needs = SCENARIOS[name].needs
    if needs and world.levers is None:
        return f"SKIP {name}: needs {needs}, which only the in-process emulator has"
    try:
        return run(name, world)
    except Exception as exc:  # noqa: BLE001 - one failing scenario must not stop the report
        return f"ERROR {name}: {type(exc).__name__}: {str(exc)[:300]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.parity.record", description=__doc__.split("\n")[0])
    parser.add_argument("--env", type=Path, required=True, help="the .env that describes the target")
    parser.add_argument("--record", action="store_true", help="write sanitised snapshots to --out")
    parser.add_argument("--out", type=Path, help="folder for --record (tests/parity/snapshots replaces the committed ones)")
    parser.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), metavar="NAME", help="run only these scenarios")
    args = parser.parse_args(argv)
    if args.record and not args.out:
        parser.error("--record needs --out")
    env = {k: v for k, v in dotenv_values(args.env).items() if v is not None}
    with ca_trust(env):
        kind = "emulator" if is_standalone_emulator(env) else "tenant"
        target = target_from_env(env, kind)
        world = World(target, lambda: {"Authorization": f"Bearer {target.admin_credential().get_token(*ADMIN_SCOPES).token}"})
        try:
            results = {name: attempt(name, world) for name in args.only or sorted(SCENARIOS)}
        finally:
            world.close()
    where = "a standalone emulator" if kind == "emulator" else "a tenant"
    origin = f"recorded {dt.date.today().isoformat()} from {where} by tests/parity/record.py"
    print(f"Parity scenarios against the {kind} at {target.authority}: differences against the committed snapshots")
    counts = {"PASS": 0, "DIFF": 0, "SKIP": 0, "ERROR": 0}
    for name, result in results.items():
        if isinstance(result, str):
            counts[result.split()[0]] += 1
            print(result)
            continue
        differences = compare(load(name), result)
        counts["DIFF" if differences else "PASS"] += 1
        print(f"{'DIFF' if differences else 'PASS'} {name}", *(f"\n  {line}" for line in differences), sep="")
        if args.record:
            dump(recorded(load(name), result, origin), args.out)
    findings: list[str] = []
    if args.record:
        known = [*world.secrets, *(raw for raw in world.placeholders if raw not in (target.authority, target.graph_url))]
        findings = scan(sorted(args.out.glob("*.json")), known)
        print(f"scan: {'clean' if not findings else f'{len(findings)} finding(s)'} ({args.out})", *findings, sep="\n  ")
    print(", ".join(f"{count} {label}" for label, count in counts.items()))
    return 2 if findings else 1 if counts["ERROR"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
