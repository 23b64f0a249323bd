"""The README's set-up promises stay true: the plain commands behind `make workbook` and `make test`
(for machines without make) are what `make -n` prints, and the dev container runs `make venv`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    block = re.search(r"<!-- make -n: begin -->\n```bash\n(.*?)```\n<!-- make -n: end -->",
                      (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md has the block of plain commands between the make -n markers"
    return block.group(1).strip().splitlines()


def make_commands() -> list[str]:
    """What make would run for `workbook` and `test` from scratch, without the network namespace wrapper."""
    make = shutil.which("make")
    assert make, "GNU make is part of the README's promise"
    # Not as a sub-make of `make test` (whose MAKEFLAGS/MAKELEVEL would add "Entering directory" lines)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    printed = subprocess.run([make, "--no-print-directory", "-n", "-B", "workbook", "test", "NETLESS="], cwd=ROOT,
                             check=True, capture_output=True, text=True, env=env).stdout
    commands = []
    for line in printed.splitlines():
        line = line.strip()
        if line.startswith(("touch ", "echo ")):
            continue  # make's own bookkeeping and messages
        line = re.sub(r"^test -x \S+ \|\| ", "", line)  # "create the venv unless it exists"
        if line not in commands:
            commands.append(line)
    return commands


def test_the_plain_commands_are_what_make_runs() -> None:
    assert readme_commands() == make_commands()


@pytest.mark.parametrize("mutation", [("-rs", "-x"), ("run-all", "run")])
def test_the_comparison_notices_a_change(mutation: tuple[str, str]) -> None:
    changed = [line.replace(*mutation) for line in readme_commands()]
    assert changed != make_commands()


def test_the_dev_container_installs_the_venv_and_forwards_jupyterlab() -> None:
    config = json.loads((ROOT / ".devcontainer" / "devcontainer.json").read_text())
    assert re.search(r"python:.*3\.11", config["image"])
    assert config["postCreateCommand"] == "make venv"
    assert 8888 in config["forwardPorts"]  # JupyterLab's default port (`make lab`)
