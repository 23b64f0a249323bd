"""The emulator's answers compared with parity snapshots of the real Entra ID and Microsoft Graph.

Each snapshot in snapshots/ describes a real answer's shape with a public source for every asserted
field; the scenario of the same name (scenarios.py) makes the request on the session's emulator.
A difference fails the test with one line per field. The mutation tests prove that the comparison
can fail; the record test runs `python -m tests.parity.record` against a standalone emulator.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from obokit.cli import demo_lines
from obokit.emulator import Emulator
from tenant_setup import admin_headers

from . import record
from .compare import asserted_fields, compare
from .scenarios import SCENARIOS, Answer, Levers, World, run, target_from_env

SNAPSHOTS = record.SNAPSHOT_DIR
NAMES = sorted(p.stem for p in SNAPSHOTS.glob("*.json"))


@pytest.fixture(scope="module")
def world(emulator: Emulator) -> Iterator[World]:
    """The session emulator as a parity target, described by the same .env lines a standalone one prints."""
    env = dict(line.split("=", 1) for line in emulator.env_lines() + demo_lines())
    headers = admin_headers(emulator)
    world = World(target_from_env(env, kind="emulator"), lambda: headers, Levers(emulator))
    yield world
    world.close()


@pytest.mark.parametrize("name", NAMES)
def test_emulator_answer_has_the_real_shape(world: World, name: str) -> None:
    differences = compare(record.load(name), run(name, world))
    assert not differences, f"{name} differs from the real service:\n  " + "\n  ".join(differences)


def test_there_are_at_least_25_snapshots_each_with_its_scenario() -> None:
    assert len(NAMES) >= 25
    assert set(NAMES) == set(SCENARIOS), "every snapshot needs a scenario of the same name and vice versa"


@pytest.mark.parametrize("name", NAMES)
def test_every_asserted_field_cites_a_source(name: str) -> None:
    snapshot = record.load(name)
    assert snapshot["name"] == name and snapshot.get("about") and snapshot.get("request")
    fields = list(asserted_fields(snapshot))
    assert fields, "a snapshot asserts something"
    unsourced = [label for label, spec in fields if not str(spec.get("source", "")).strip()]
    assert not unsourced, f"fields without a source: {unsourced}"
    known = {"type", "equals", "pattern", "includes", "key_set", "min_items", "absent", "source"}
    assert all(set(spec) <= known for _, spec in fields), "only the documented spec keys (compare.py)"


def test_committed_snapshots_pass_the_record_scan() -> None:
    assert record.scan(SNAPSHOTS.glob("*.json")) == []


# -- the comparison can fail: real emulator answers, changed one way each ------------------------------
def _parent(answer: Answer, path: str) -> tuple[dict | list, str | int]:
    *parents, last = path.split("/")
    node = answer
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    return node, int(last) if isinstance(node, list) else last


def _drop(path: str) -> Callable[[Answer], None]:
    def mutate(answer: Answer) -> None:
        node, key = _parent(answer, path)
        del node[key]
    return mutate


def _set(path: str, value: object) -> Callable[[Answer], None]:
    def mutate(answer: Answer) -> None:
        node, key = _parent(answer, path)
        node[key] = value
    return mutate


MUTATIONS = {
    "65001 without error_codes": ("token-obo-65001-consent-required", _drop("body/error_codes")),
    "65001 error_codes changed": ("token-obo-65001-consent-required", _set("body/error_codes", [65002])),
    "65001 as HTTP 401": ("token-obo-65001-consent-required", _set("status", 401)),
    "65001 error as a number": ("token-obo-65001-consent-required", _set("body/error", 400)),
    "7000215 without Content-Type": ("token-7000215-wrong-secret", _drop("headers/content-type")),
    "403 with another Graph code": ("graph-403-site-access-denied", _set("body/error/code", "Forbidden")),
    "403 innerError date with a Z": ("graph-403-site-access-denied", _set("body/error/innerError/date", "2026-12-06T10:00:00Z")),
    "/me without userPrincipalName": ("graph-200-me-default-properties", _drop("body/userPrincipalName")),
    "/me with an extra property": ("graph-200-me-default-properties", _set("body/accountEnabled", True)),
    "JWKS key without kid": ("jwks-tenant", _drop("body/keys/0/kid")),
    "discovery without Cache-Control": ("discovery-v2-tenant", _drop("headers/cache-control")),
    "OBO token_type as a number": ("token-obo-success", _set("body/token_type", 1)),
    "OBO with a refresh_token": ("token-obo-success", _set("body/refresh_token", "0.AXYZ")),
    "v2 token for another audience": ("claims-v2-delegated-api-token", _set("body/payload/aud", "{other_app_id}")),
    "addPassword as 201": ("graph-200-add-password", _set("status", 201)),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_comparison_fails_when_the_answer_changes(world: World, mutation: str) -> None:
    """Against the real emulator answer, the mutated one has at least one difference the original has not."""
    name, mutate = MUTATIONS[mutation]
    snapshot, answer = record.load(name), run(name, world)
    mutated = copy.deepcopy(answer)
    mutate(mutated)
    new = set(compare(snapshot, mutated)) - set(compare(snapshot, answer))
    assert new, f"{mutation}: the comparison did not notice"


# -- record mode -------------------------------------------------------------------------------------
@pytest.fixture
def standalone_emulator(tmp_path: Path) -> Iterator[Path]:
    """`obokit emulator serve` in its own process (ephemeral loopback ports); yields the .env file it describes."""
    process = subprocess.Popen([sys.executable, "-m", "obokit.cli", "emulator", "serve", "--state-dir", str(tmp_path / "state")],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            if line.startswith("State folder:"):
                break
            lines.append(line.strip())
        env_file = tmp_path / "standalone.env"
        env_file.write_text("\n".join(line for line in lines if "=" in line) + "\n")
        yield env_file
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_record_mode_against_a_standalone_emulator(standalone_emulator: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "recorded"
    assert record.main(["--record", "--env", str(standalone_emulator), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "differences against the committed snapshots" in printed and "scan: clean" in printed
    lever_scenarios = {name for name, s in SCENARIOS.items() if s.needs}
    written = {p.stem for p in out.glob("*.json")}
    assert written == set(NAMES) - lever_scenarios
    assert all(f"SKIP {name}" in printed for name in lever_scenarios)
    assert record.scan(out.glob("*.json")) == []
    recorded = record.load("token-obo-65001-consent-required", out)
    committed = record.load("token-obo-65001-consent-required")
    assert recorded["body"]["error_codes"] == committed["body"]["error_codes"], "a passing field keeps its committed source"


def test_record_scan_finds_a_planted_token_or_secret(world: World, tmp_path: Path) -> None:
    """The scan fails a recording that holds a JWT, a bearer header, a password or a secret of the run."""
    token = world.user_token(world.api)
    planted = {"jwt": f'{{"v": "{token}"}}', "bearer": '{"h": "Bearer abcdefghijklmnopqrstuvwxyz0123"}',
               "password": '{"password": "hunter2hunter2"}', "secret": f'{{"s": "{world.api.secret}"}}',
               "tenant": f'{{"t": "{world.target.tenant_id}"}}'}
    for kind, text in planted.items():
        (tmp_path / f"{kind}.json").write_text(text)
        assert record.scan([tmp_path / f"{kind}.json"], known=[world.api.secret, world.target.tenant_id]), kind
