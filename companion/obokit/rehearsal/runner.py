"""Run the whole workbook as a tenant run against a standalone emulator, with nobody at the keyboard.

The kernels get what a learner's machine would have: `OBOKIT_TARGET=tenant` and the .env the emulator
printed (`run_all(target="tenant", env_file=...)`), its CA bundle exported (SSL_CERT_FILE,
REQUESTS_CA_BUNDLE), a home folder of their own (azure-identity's token cache lives there), `BROWSER`
naming the scripted browser, and `IPYTHONDIR` whose startup file is the import guard. The scripted person
reads their output. After each notebook the harness collects the emulator's events, the scripts'
observations and refusals, and the first cell that raised.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nbformat

from ..workbook import _patched_environ, run_all
from . import guard, scripted_browser
from .events import EmulatorEvents, tally_events, tally_observed
from .person import ScriptedPerson
from .report import NotebookResult, Report, cell_error, cell_of
from .rundir import RunDir
from .signin import accounts_from_env
from .standalone import Standalone, standalone_emulator

NOTEBOOKS = Path(__file__).resolve().parents[3] / "notebooks"


def kernel_environment(run_dir: RunDir, emulator: Standalone) -> dict[str, str]:
    """What the kernels (and the browser processes they start) need besides what `run_all` sets."""
    home = run_dir.path / "home"
    home.mkdir(exist_ok=True)
    return {
        "BROWSER": str(scripted_browser.install(run_dir.path)),
        "IPYTHONDIR": str(guard.install(run_dir)),
        "HOME": str(home),
        "SSL_CERT_FILE": emulator.env["SSL_CERT_FILE"],
        "REQUESTS_CA_BUNDLE": emulator.env["REQUESTS_CA_BUNDLE"],
    }


class Collector:
    """`run_all`'s after_notebook: gathers one `NotebookResult` per notebook and moves the plan on."""

    def __init__(self, run_dir: RunDir, report: Report, person: ScriptedPerson, events: EmulatorEvents | None,
                 notebooks: list[Path], admin: str) -> None:
        self.run_dir, self.report, self.person, self.events = run_dir, report, person, events
        self.notebooks, self.admin = notebooks, admin
        self.executed = run_dir.path / "executed"

    def __call__(self, path: Path, error: BaseException | None) -> None:
        self.person.wait()
        name = path.stem
        observed = [r for r in self.run_dir.records("observed") if r.get("notebook") == name]
        tally = (tally_events(self.events.poll(), observed) if self.events is not None else
                 tally_observed(observed, self.admin))
        failures = [f"{f['who']}: {f['message']}" for f in self.run_dir.records("failures") if f.get("notebook") == name]
        executed_file = self.executed / path.name
        executed = nbformat.read(executed_file, as_version=4) if executed_file.exists() else None
        failures += [f"kernel imported {i['module']} in cell {cell_of(executed, i['in'])}: "
                     + " <- ".join(reversed(i["frames"])) for i in self.run_dir.records("imports") if i.get("notebook") == name]
        message = None
        if error is not None:
            last = (str(error).strip().splitlines() or [""])[-1]
            message = (cell_error(executed) if executed is not None else None) or f"{type(error).__name__}: {last}"
        self.report.notebooks.append(NotebookResult(name, message, failures, tally))
        following = self.notebooks.index(path) + 1
        if following < len(self.notebooks):
            self.run_dir.set_notebook(self.notebooks[following].stem)


def rehearse(folder: Path, *, profile: str = "tenant", notebooks_dir: Path = NOTEBOOKS, timeout: int = 300,
             replication_delay: str | None = None, echo: Callable[[str], None] = print) -> Report:
    """Run every notebook of `notebooks_dir` as a tenant run; everything the run writes goes under `folder`.

    `replication_delay` ("LOW[,HIGH]" seconds) overrides the profile's, e.g. "0" to set eventual consistency aside.
    """
    run_dir = RunDir(folder)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    notebooks = sorted(notebooks_dir.glob("*.ipynb"))
    delay = f", replication delay {replication_delay} s" if replication_delay is not None else ""
    report = Report(f"{profile} profile{delay}")
    with standalone_emulator(run_dir.path / "tenant", profile, replication_delay) as emulator:
        emulator.env_file.chmod(0o600)
        accounts = accounts_from_env(emulator.env)
        run_dir.write_state({"notebook": notebooks[0].stem if notebooks else None, "accounts": accounts})
        events = EmulatorEvents(emulator.identity_url, emulator.env.get("SSL_CERT_FILE"))
        if not events.available():
            if profile == "tenant":
                raise RuntimeError(f"the tenant profile has no event log at {events.url}")
            events = None  # an emulator without one: the scripts' own observations
        person = ScriptedPerson(run_dir)
        collect = Collector(run_dir, report, person, events, notebooks, accounts.get("admin", ""))
        with _patched_environ(kernel_environment(run_dir, emulator)):  # the kernels inherit it
            run_all(notebooks_dir, timeout=timeout, save_dir=collect.executed, state_dir=run_dir.path / "state",
                    target="tenant", env_file=emulator.env_file, on_output=person.on_output, after_notebook=collect)
    for line in report.lines():
        echo(line)
    return report
