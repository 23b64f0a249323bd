"""Launching Chromium for the browser tests, and where their screenshots go.

Playwright for Python drives the system browser (Debian's `/usr/bin/chromium`, what CI installs with apt);
where there is none, a Chromium that `playwright install chromium` downloaded, if any (the tests never
download one). Without either the browser tests are skipped, with a reason that says how to get one. Each
test gets a fresh profile folder, and the flags below keep Chromium from calling home (the suite runs
without network anyway).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest



def find_chromium() -> Path | None:
    """$OBOKIT_CHROMIUM, else Chromium on PATH (Debian's), else Playwright's own download, else None."""
    configured = os.environ.get("OBOKIT_CHROMIUM")
    if configured:
        return Path(configured)
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return Path(found)
    downloads = Path(os.environ.get("PLAYWRIGHT_BROWSERS_PATH") or Path.home() / ".cache" / "ms-playwright")
    return next(iter(sorted(downloads.glob("chromium-*/chrome-linux*/chrome"), reverse=True)), None)


CHROMIUM = find_chromium()
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

NO_CHROMIUM = (
    "no Chromium: install Debian's `chromium` (apt-get install chromium, as CI does) or, where its download "
    "is allowed, run `.venv/bin/playwright install chromium`"
)
# CI sets OBOKIT_REQUIRE_CHROMIUM=1: there a missing browser fails the tests instead of skipping them.
needs_chromium = pytest.mark.skipif(
    (CHROMIUM is None or not CHROMIUM.exists()) and not os.environ.get("OBOKIT_REQUIRE_CHROMIUM"), reason=NO_CHROMIUM
)


def chromium_options(profile_dir: Path, **context_options: Any) -> dict[str, Any]:
    """Keyword arguments for `playwright.chromium.launch_persistent_context` with a fresh profile."""
    if CHROMIUM is None:
        pytest.fail(NO_CHROMIUM)
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

