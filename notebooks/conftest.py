"""nbval set-up for the workbook's notebooks.

`pytest --nbval` runs every notebook in its own kernel, in name order, comparing each cell's
output with the stored one (after `nbval-sanitize.cfg`). The kernels inherit this process's
environment, so this file makes the run deterministic before any kernel starts:

- `OBOKIT_STATE_DIR` points at a fresh temporary folder, so the notebooks share one freshly
  seeded emulator tenant and never touch the repository's `.obokit/` (set the variable
  yourself to reuse a folder, e.g. to run the suite twice on one tenant);
- `OBOKIT_TARGET` defaults to `emulator`, whatever a developer's `.env` says (export
  `OBOKIT_TARGET=tenant` explicitly, with `--nbval-lax`, to check a real tenant);
- a relative `--nbval-sanitize-with` path also works when pytest runs from another folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
_created_state_dir: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _created_state_dir
    if not os.environ.get("OBOKIT_STATE_DIR"):
        _created_state_dir = tempfile.mkdtemp(prefix="obokit-nbval-")
        os.environ["OBOKIT_STATE_DIR"] = _created_state_dir
    os.environ.setdefault("OBOKIT_TARGET", "emulator")
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # keeps debugpy's notice off kernel stderr
    sanitize = getattr(config.option, "nbval_sanitize_with", None)
    if sanitize and not Path(sanitize).exists() and (HERE / Path(sanitize).name).exists():
        config.option.nbval_sanitize_with = str(HERE / Path(sanitize).name)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _created_state_dir is not None:
        shutil.rmtree(_created_state_dir, ignore_errors=True)
