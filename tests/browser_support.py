"""Launching Debian's Chromium for the browser tests, and where their screenshots go.

Playwright for Python drives the system browser (`/usr/bin/chromium`, installed with apt);
Playwright's own browser downloads are never used. Each test gets a fresh profile folder, and
the flags below keep Chromium from calling home (the suite runs without network anyway).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "browser"
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Chromium runs outside the suite's in-process loopback guard (tests/conftest.py): send every
    # non-loopback request to a closed loopback port, so nothing leaves the machine even where the
    # suite runs with network (loopback bypasses the proxy implicitly).
    "--proxy-server=http://127.0.0.1:9",
]
TIMEOUT_MS = 20_000  # per Playwright action or wait

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; CI installs it)"
)


def chromium_options(profile_dir: Path, **context_options: Any) -> dict[str, Any]:
    """Keyword arguments for `playwright.chromium.launch_persistent_context` with a fresh profile."""
    profile_dir.mkdir(parents=True, exist_ok=True)
    return {
        "user_data_dir": str(profile_dir),
        "executable_path": str(CHROMIUM),
        "headless": True,
        "args": CHROMIUM_ARGS,
        "viewport": {"width": 1280, "height": 900},
        **context_options,
    }


class Screenshots:
    """Numbered screenshot paths under test-artifacts/browser/: `shots.path("consent")` -> signin-01-consent.png.

    Screenshots of an earlier run of the same test are removed first, so the folder shows one run.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.taken: list[Path] = []
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for old in ARTIFACTS.glob(f"{prefix}-*.png"):
            old.unlink()

    def path(self, step: str) -> str:
        shot = ARTIFACTS / f"{self.prefix}-{len(self.taken) + 1:02d}-{step}.png"
        self.taken.append(shot)
        return str(shot)

