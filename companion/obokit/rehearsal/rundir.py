"""The rehearsal's run folder: what the harness, the scripted browser processes and the scripted person share.

    state.json        current notebook, plan cursors, the account each browser's session signs in
    cookies.txt       the scripted browser's cookie jar (session cookies included), kept across its sign-ins
    person-cookies.txt  the browser the scripted person enters device codes in (another device)
    observed.jsonl    every sign-in and device-code answer, as the scripts saw it
    failures.jsonl    what the scripts refused or could not do (the test fails on any line)
    imports.jsonl     kernels that imported obokit.emulator (`guard`)
    browser.log       stderr of the browser processes

Writers take `lock()` (a directory made atomically: portable, held across processes).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.cookiejar import LWPCookieJar
from pathlib import Path
from typing import Any

LOCK_TIMEOUT = 120.0


class RunDir:
    """One rehearsal's shared folder (see the module docstring)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    @property
    def browser_log(self) -> Path:
        return self.path / "browser.log"

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive access to the state and the cookie jar, across processes."""
        guard = self.path / ".lock"
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                guard.mkdir()
                break
            except FileExistsError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{guard} held for more than {LOCK_TIMEOUT:.0f} s") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            guard.rmdir()

    # -- state (call under lock) -----------------------------------------------------------
    def read_state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}

    def write_state(self, state: dict[str, Any]) -> None:
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=1))
        os.replace(temporary, self.state_file)

    def set_notebook(self, name: str) -> None:
        """The notebook whose kernel is running now: sign-ins and prompts are counted for it."""
        with self.lock():
            state = self.read_state()
            state["notebook"] = name
            self.write_state(state)

    def cookie_jar(self, browser: str = "") -> LWPCookieJar:
        """A browser's cookies as its last sign-in left them (call under lock; `save_cookies` after).

        `browser`: "" for the scripted browser, "person" for the one device codes are entered in.
        """
        file = self.path / f"{browser + '-' if browser else ''}cookies.txt"
        jar = LWPCookieJar(str(file))
        if file.exists():
            jar.load(ignore_discard=True, ignore_expires=True)
        return jar

    @staticmethod
    def save_cookies(jar: LWPCookieJar) -> None:
        """Session cookies too: one browser stays open for the whole run."""
        jar.save(ignore_discard=True, ignore_expires=True)

    # -- records -----------------------------------------------------------------------------
    def append(self, name: str, record: dict[str, Any]) -> None:
        """Add one JSON line to `name` (observed, failures, imports); a single short write, so no lock."""
        with (self.path / f"{name}.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")

    def records(self, name: str) -> list[dict[str, Any]]:
        file = self.path / f"{name}.jsonl"
        if not file.exists():
            return []
        return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]

    def fail(self, who: str, notebook: str | None, message: str) -> None:
        """Note a refusal or breakdown of a script; the rehearsal fails on it."""
        self.append("failures", {"who": who, "notebook": notebook, "message": message})
