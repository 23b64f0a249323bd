"""No secret leaves the secrets file: committed files (notebooks with their outputs, fixtures, docs) and the
logs the server writes during a run hold no client secret, no JWT and no `secretText` value.

The scanner looks for three shapes (plus the exact secret values known to a run):
- a JWT: three base64url segments, header and payload starting `eyJ` (JSON objects);
- an Entra client secret (`abc8Q~…`, 40 characters), the emulator's seeded `aut~…` secret, or a
  `…SECRET=value` line in env format;
- a `secretText` / `secret_text` property with a value.
The planted-secret tests prove that it does fail.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError
from server_fixtures import RECEIPT, register_workbook_server, start

from obokit.display import redact
from obokit.emulator import Emulator, group_id
from obokit.clients.mcp_client import HeadlessOAuth
from obokit.tenant.provisioning import forget_secrets
from obokit.tenant.target import write_secret
from tenant_setup import user_upn

ROOT = Path(__file__).resolve().parents[1]
PATTERNS = {
    "JWT": re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}"),
    "Entra client secret": re.compile(r"(?<![\w~.-])[\w~.-]{3}\dQ~[\w~.-]{31,37}(?![\w~.-])"),
    "seeded automation secret": re.compile(r"aut~[\w-]{30,}"),
    "secret in env format": re.compile(r"(?m)^[A-Z_]*SECRET[A-Z_]*=[^\s\"'<$]{8,}\s*$"),
    "secretText value": re.compile(r"secret_?text[\"']?\s*[:=]\s*[\"']([^\"'\s]{4,})", re.IGNORECASE),
}
BINARY_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".ico", ".sqlite3", ".whl", ".gz", ".zip", ".pdf"}


@dataclass(frozen=True)
class Finding:
    where: str
    kind: str
    value: str  # redacted, so a failing test never prints the secret

    def __str__(self) -> str:
        return f"{self.where}: {self.kind} {self.value}"


def scan_text(text: str, where: str, known: Iterable[str] = ()) -> list[Finding]:
    """Every secret-shaped value in `text`, and every occurrence of a `known` secret value."""
    found = [Finding(where, kind, redact(m.group(0), keep=4)) for kind, rx in PATTERNS.items() for m in rx.finditer(text)]
    found += [Finding(where, "known secret value", redact(value, keep=3)) for value in known if value and value in text]
    return found


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)


def readable_text(path: Path) -> str | None:
    """The file's text; for JSON (notebooks, JSON Lines) also its decoded strings, where escaping hides shapes."""
    if path.suffix.lower() in BINARY_SUFFIXES or not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None
    documents = [text] if path.suffix in (".ipynb", ".json") else text.splitlines() if path.suffix == ".jsonl" else []
    decoded = []
    for document in documents:
        try:
            parsed = json.loads(document)
        except ValueError:
            continue
        if isinstance(parsed, dict) and "cells" in parsed:  # a notebook: join each cell's source and output lines
            decoded += ["".join(c.get("source", [])) for c in parsed["cells"]]
            decoded += ["".join(o.get("text", [])) for c in parsed["cells"] for o in c.get("outputs", [])]
            decoded += ["".join(v) if isinstance(v, list) else str(v)
                        for c in parsed["cells"] for o in c.get("outputs", []) for v in o.get("data", {}).values()]
        decoded += list(_strings(parsed))
    return "\n".join([text, *decoded])


def scan_files(paths: Iterable[Path], known: Iterable[str] = ()) -> list[Finding]:
    known = list(known)
    findings: list[Finding] = []
    for path in paths:
        text = readable_text(path)
        if text is not None:
            where = str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
            findings += list(dict.fromkeys(scan_text(text, where, known)))
    return findings


def committed_files() -> list[Path]:
    """What git tracks (notebooks with outputs, tests and their fixtures, docs), or the same folders without git."""
    if shutil.which("git") and (ROOT / ".git").exists():
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        return [ROOT / name for name in listed.decode().split("\0") if name]
    folders = ("notebooks", "tests", "companion", ".ci")
    return [p for folder in folders for p in (ROOT / folder).rglob("*") if "__pycache__" not in p.parts] + \
        [p for p in ROOT.iterdir() if p.is_file()]


# -- the scanner can fail ------------------------------------------------------------------------
def planted(tmp_path: Path) -> dict[str, str]:
    token = jwt.encode({"aud": "api://x", "oid": "00000000-0000-0000-0000-000000000001", "scp": "mcp-access"},
                       "k" * 32, algorithm="HS256")
    return {
        "JWT": token,
        "Entra client secret": "Abc8Q~" + "x7_Y.z-9" * 4 + "Qw",
        "seeded automation secret": "aut~" + "Zq3_" * 10,
        "secret in env format": "MCP_SERVER_CLIENT_SECRET=" + "s3cr3t-" * 3,
        "secretText value": json.dumps({"hint": "Abc", "secret" + "Text": "not-a-real-secret-value"}),  # split: this file is scanned too
    }


@pytest.mark.parametrize("kind", ["JWT", "Entra client secret", "seeded automation secret", "secret in env format",
                                  "secretText value"])
def test_scanner_finds_a_planted_secret(tmp_path: Path, kind: str) -> None:
    notebook = {"cells": [{"cell_type": "code", "source": ["print(x)"],
                           "outputs": [{"output_type": "stream", "name": "stdout", "text": [planted(tmp_path)[kind] + "\n"]}]}]}
    path = tmp_path / "leaky.ipynb"
    path.write_text(json.dumps(notebook, indent=1))
    findings = scan_files([path])
    assert [f.kind for f in findings if f.kind == kind] == [kind]
    assert all(planted(tmp_path)[kind] not in str(f) for f in findings), "a finding never shows the secret"


def test_scanner_finds_a_known_value_in_a_log_and_accepts_redacted_forms(tmp_path: Path) -> None:
    secret, token = "plain-value-without-a-known-shape", planted(tmp_path)["JWT"]
    log = tmp_path / "server.log"
    log.write_text(f"INFO using {redact(token)} and hint Abc… ({redact(secret)})\nsecretText: null\n")
    assert scan_files([log], known=[secret]) == []
    log.write_text(f"DEBUG form client_secret={secret}\n")
    assert [f.kind for f in scan_files([log], known=[secret])] == ["known secret value"]


# -- committed files -----------------------------------------------------------------------------
def test_committed_files_hold_no_secrets() -> None:
    files = committed_files()
    assert any(p.suffix == ".ipynb" for p in files), "the notebooks (with their outputs) are scanned"
    findings = scan_files(files)
    assert findings == [], "\n".join(map(str, findings))


# -- the secrets file ----------------------------------------------------------------------------
def test_secrets_file_is_owner_only_even_if_it_existed(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("OBOKIT_TARGET=emulator\n")
    path.chmod(0o644)
    write_secret(path, "MCP_SERVER_CLIENT_SECRET", "value-1")
    write_secret(path, "MCP_SERVER_CLIENT_SECRET", "value-2")
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text().splitlines() == ["OBOKIT_TARGET=emulator", "MCP_SERVER_CLIENT_SECRET=value-2"]


def test_forgetting_secrets_leaves_the_env_file_owner_only(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("OBOKIT_TARGET=emulator\nMCP_SERVER_CLIENT_SECRET=value-1\n")
    path.chmod(0o644)
    assert forget_secrets(path, ("MCP_SERVER_CLIENT_SECRET",)) == ["MCP_SERVER_CLIENT_SECRET"]
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text() == "OBOKIT_TARGET=emulator\n"


@pytest.mark.skipif(not (shutil.which("git") and (ROOT / ".git").exists()), reason="needs the git checkout")
@pytest.mark.parametrize("path", [".env", ".obokit/workbook.env", ".obokit/emulator.sqlite3", ".obokit/keys/signing.pem"])
def test_secret_locations_are_ignored_by_git(path: str) -> None:
    result = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
    assert result.returncode == 0, f"{path} is not git-ignored"
    assert ".env.example" not in subprocess.run(["git", "check-ignore", ".env.example"], cwd=ROOT,
                                                capture_output=True, text=True).stdout


# -- what a run writes ---------------------------------------------------------------------------
class LogCapture(logging.Handler):
    """Every record at DEBUG and above of the root logger and of loggers that do not propagate."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.attached: list[tuple[logging.Logger, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.levelname} {self.format(record)}")

    def attach(self, *names: str) -> None:
        for name in names:
            logger = logging.getLogger(name)
            if self not in logger.handlers:
                self.attached.append((logger, logger.level))
                logger.addHandler(self)
                logger.setLevel(logging.DEBUG)

    def detach(self) -> None:
        for logger, level in reversed(self.attached):
            logger.removeHandler(self)
            logger.setLevel(level)


@pytest.fixture
def captured() -> Iterator[LogCapture]:
    capture = LogCapture()
    capture.attach("", "fastmcp", "uvicorn", "uvicorn.error")  # fastmcp and uvicorn keep their records to themselves
    try:
        yield capture
    finally:
        capture.detach()


async def test_a_server_run_writes_no_secret_to_its_logs(emulator: Emulator, tmp_path: Path, captured: LogCapture) -> None:
    """A workbook server run (sign-in, OBO, Graph, a refused OBO): its log records and files hold no secret."""
    consented = register_workbook_server(emulator, "secrets scan server", consent=True)
    unconsented = register_workbook_server(emulator, "secrets scan no consent", consent=False)
    runs = [start(emulator, tmp_path, consented, "consented"), start(emulator, tmp_path, unconsented, "unconsented")]
    captured.attach("uvicorn", "uvicorn.error")  # uvicorn re-configures its loggers when it starts
    refusals = []
    try:
        for running in runs:
            async with Client(running.mcp_url, auth=HeadlessOAuth(account=user_upn("bruno"))) as client:
                await client.call_tool("whoami")
                await client.call_tool("add_expense", RECEIPT)
                try:
                    await client.call_tool("check_group_membership", {"group_id": group_id("finance")})
                except ToolError as refusal:
                    refusals.append(str(refusal))
    finally:
        for running in runs:
            running.stop()
    assert len(refusals) == 1 and "AADSTS65001" in refusals[0], "only the server without consent is refused"
    assert any("oauth2/v2.0/token" in line for line in captured.lines), "the run's log records were captured"
    log_file = tmp_path / "run.log"
    log_file.write_text("\n".join(captured.lines))
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "workbook.env"]
    assert any(p.name == "audit.jsonl" for p in written)
    known = [consented.secret, unconsented.secret, emulator.automation_credentials()[1]]
    findings = scan_files([log_file, *written], known=known)
    assert findings == [], "\n".join(map(str, findings))
    assert os.stat(tmp_path / "workbook.env").st_mode & 0o077 == 0
