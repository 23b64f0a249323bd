"""`obokit emulator serve` in a process of its own (ephemeral loopback ports), as the tenant the run targets.

Profiles: "tenant" (no pre-consent, replication delay, a browser session cookie) and "quick" (pre-consented
admin client, no delay, no session: for working on the rehearsal itself). Both keep the event log.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PROFILES = ("tenant", "quick")
START_TIMEOUT = 120.0


@dataclass(frozen=True)
class Standalone:
    """A running standalone emulator: the .env that describes it, and its values."""

    env_file: Path
    env: dict[str, str]
    profile: str

    @property
    def identity_url(self) -> str:
        return self.env["AZURE_AUTHORITY_HOST"].rstrip("/")


def serve_command(state_dir: Path, profile: str, replication_delay: str | None = None) -> list[str]:
    """`replication_delay`: the profile's default unless given ("0" to tell delays from other failures)."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, not {profile!r}")
    command = [sys.executable, "-m", "obokit.cli", "emulator", "serve", "--state-dir", str(state_dir), "--reset",
               "--profile", profile]
    return command + (["--replication-delay", replication_delay] if replication_delay is not None else [])


@contextmanager
def standalone_emulator(folder: Path, profile: str = "tenant", replication_delay: str | None = None) -> Iterator[Standalone]:
    """Start the emulator with its state in `folder`/emulator; the .env lines it prints go to `folder`/tenant.env."""
    process = subprocess.Popen(serve_command(folder / "emulator", profile, replication_delay), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name="standalone-emulator-output", daemon=True).start()
    try:
        printed: list[str] = []
        while not printed or not printed[-1].startswith("State folder"):
            line = lines.get(timeout=START_TIMEOUT)
            if line is None:
                raise RuntimeError("obokit emulator serve ended before it was ready:\n" + "".join(printed))
            printed.append(line)
        env = dict(line.strip().split("=", 1) for line in printed if line.startswith("  ") and "=" in line)
        env_file = folder / "tenant.env"
        env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
        yield Standalone(env_file, env, profile)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
