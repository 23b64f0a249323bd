"""nbval set-up for the workbook's notebooks.

`pytest --nbval` runs every notebook in its own kernel, in name order, comparing each cell's
output with the stored one (after `nbval-sanitize.cfg`). The kernels inherit this process's
environment, so this file makes the run deterministic before any kernel starts:

- `OBOKIT_STATE_DIR` points at a fresh temporary folder, so the notebooks share one freshly
  seeded emulator tenant and never touch the repository's `.obokit/` (set the variable
  yourself to reuse a folder, e.g. to run the suite twice on one tenant);
- `OBOKIT_TARGET` defaults to `emulator`, whatever a developer's `.env` says (export
  `OBOKIT_TARGET=tenant` explicitly, with `--nbval-lax`, to check a real tenant);
- a relative `--nbval-sanitize-with` path also works when pytest runs from another folder;
- a cell whose outputs differ gets what it actually printed (stderr and text, tokens masked) in its report:
  nbval itself only names the unexpected output fields, which leaves a rare CI failure undiagnosable.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
_TOKEN_LIKE = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")  # a JWT: never into a report
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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    outcome = yield
    report = outcome.get_result()
    outputs = getattr(item, "test_outputs", None)
    if report.when == "call" and report.failed and outputs:
        shown = []
        for output in outputs:
            text = output.get("text") or "".join(output.get("data", {}).get("text/plain", ""))
            if text:
                shown.append(f"[{output.get('name') or output.get('output_type')}] {_TOKEN_LIKE.sub('<jwt>', text)[:2000]}")
        report.sections.append(("what the cell printed", "\n".join(shown)))
