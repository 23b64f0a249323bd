"""environment.yml stays in step with the pinned requirements.

constraints.txt is the lock (`make lock`); pyproject.toml lists the top-level dependencies as ranges;
environment.yml is what a conda user installs. Every pip pin in environment.yml must be the lock's version,
and every top-level dependency of pyproject.toml must be pinned there (with its extras), so a conda
environment gets the same tested versions as `pip install -c constraints.txt -e .`.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def lock() -> dict[str, str]:
    """constraints.txt as {canonical name: version}."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version.strip()
    return pins


def environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def environment_pip() -> list[Requirement]:
    """The pip section of environment.yml, without the editable install of obokit itself."""
    sections = [d["pip"] for d in environment()["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(sections) == 1, "environment.yml has one pip: section"
    return [Requirement(line) for line in sections[0] if not line.startswith("-e")]


def top_level() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(line) for line in project["dependencies"]]


def pinned(requirement: Requirement) -> str | None:
    """The version of an exact `==` pin, else None."""
    specs = list(requirement.specifier)
    return specs[0].version if len(specs) == 1 and specs[0].operator == "==" else None


def test_the_files_parse() -> None:
    assert len(lock()) > 50 and environment_pip() and top_level()
    assert "-e ." in next(d["pip"] for d in environment()["dependencies"] if isinstance(d, dict))


def test_every_pip_pin_in_environment_yml_is_the_locked_version() -> None:
    locked = lock()
    wrong = []
    for requirement in environment_pip():
        name = canonicalize_name(requirement.name)
        if pinned(requirement) is None:
            wrong.append(f"{requirement}: not an exact == pin")
        elif name not in locked:
            wrong.append(f"{requirement}: not in constraints.txt")
        elif pinned(requirement) != locked[name]:
            wrong.append(f"{requirement}: constraints.txt has {locked[name]}")
    assert not wrong, "environment.yml differs from constraints.txt:\n  " + "\n  ".join(wrong)


def test_every_top_level_dependency_is_pinned_in_environment_yml() -> None:
    locked = lock()
    in_env = {canonicalize_name(r.name): r for r in environment_pip()}
    missing = []
    for requirement in top_level():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} (pyproject.toml) is not in constraints.txt: run make lock"
        env = in_env.get(name)
        extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        wanted = f"{requirement.name}{extras}=={locked[name]}"
        if env is None or not requirement.extras <= env.extras:
            missing.append(wanted)
    assert not missing, "add to environment.yml's pip: section:\n      - " + "\n      - ".join(missing)


def test_locked_versions_satisfy_pyproject_ranges() -> None:
    locked = lock()
    outside = [f"{r} (locked {locked[canonicalize_name(r.name)]})" for r in top_level()
               if not r.specifier.contains(locked[canonicalize_name(r.name)], prereleases=True)]
    assert not outside, f"constraints.txt is outside pyproject.toml's ranges: {outside}"


def test_python_version_of_the_environment_meets_requires_python() -> None:
    requires = SpecifierSet(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
    pythons = [d for d in environment()["dependencies"] if isinstance(d, str) and re.match(r"python\b", d)]
    assert len(pythons) == 1, pythons
    version = pythons[0].split("=", 1)[1].lstrip("=")
    assert requires.contains(Version(version)), f"environment.yml {pythons[0]} vs requires-python {requires}"


@pytest.mark.parametrize("line", ["fastmcp[azure]==4.1.2", "py-key-value-aio[redis]==0.4.6"])
def test_pin_parsing_keeps_extras(line: str) -> None:
    """A guard for the checks above: extras and the version survive parsing."""
    requirement = Requirement(line)
    assert requirement.extras and pinned(requirement) == line.rsplit("==", 1)[1]
