"""The workbook in JupyterLab, in a real browser: notebook 00 renders (mermaid diagram) and runs without errors.

JupyterLab starts on `notebooks/` on an ephemeral loopback port with a generated token; its
runtime, config, data and IPython folders and the emulator's state are temporary, autosave is
off, and the test checks that the notebook file is left exactly as it was.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from browser_support import TIMEOUT_MS, Screenshots, chromium_options, needs_chromium
from playwright.sync_api import Page, expect, sync_playwright

pytestmark = needs_chromium

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
WELCOME = "00-welcome.ipynb"
# User settings for this lab only: no news/update popup over the screenshots, and no autosave,
# so running the cells never writes to the repository's notebook.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
}
# The notebook open in the lab's main area, through the app object --expose-app-in-browser gives.
NOTEBOOK_JS = "window.jupyterapp.shell.currentWidget"


@dataclass
class Lab:
    url: str
    token: str = field(repr=False)


def _write_settings(config_dir: Path) -> None:
    for plugin, values in LAB_SETTINGS.items():
        package, name = plugin.rsplit("/", 1)
        target = config_dir / "lab" / "user-settings" / package / f"{name}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))


def _wait_until_serving(runtime_dir: Path, process: subprocess.Popen, token: str, log: Path) -> str:
    """The lab's base URL once /api/status answers (the port is read from its jpserver-*.json)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited ({process.returncode}):\n{_log_tail(log, token)}")
        for info_file in runtime_dir.glob("jpserver-*.json"):
            url = json.loads(info_file.read_text())["url"].rstrip("/")
            try:
                if httpx.get(f"{url}/api/status", headers={"Authorization": f"token {token}"}).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    raise TimeoutError(f"JupyterLab did not answer within 60 s:\n{_log_tail(log, token)}")


def _log_tail(log: Path, token: str) -> str:
    return "\n".join(log.read_text(errors="replace").replace(token, "<token>").splitlines()[-30:])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """JupyterLab serving notebooks/ on 127.0.0.1:<ephemeral>, shut down through its API afterwards."""
    home = tmp_path_factory.mktemp("jupyterlab")
    dirs = {name: home / name for name in ("runtime", "config", "data", "ipython", "obokit-state")}
    for folder in dirs.values():
        folder.mkdir()
    _write_settings(dirs["config"])
    token = secrets.token_urlsafe(24)
    env = os.environ | {
        "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
        "JUPYTER_CONFIG_DIR": str(dirs["config"]),
        "JUPYTER_DATA_DIR": str(dirs["data"]),
        "IPYTHONDIR": str(dirs["ipython"]),
        "OBOKIT_STATE_DIR": str(dirs["obokit-state"]),  # the kernel's emulator: a fresh tenant
        "OBOKIT_TARGET": "emulator",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",  # keeps debugpy's notice off the kernel's stderr
    }
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--expose-app-in-browser",
        "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0", f"--ServerApp.root_dir={NOTEBOOKS}",
        f"--IdentityProvider.token={token}",
        # Checkpoints (JupyterLab makes one when a notebook is opened) go to the temporary folder.
        f"--FileCheckpoints.checkpoint_dir={home / 'checkpoints'}",
    ]
    log = home / "jupyterlab.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=home)
    url = None
    try:
        url = _wait_until_serving(dirs["runtime"], process, token, log)
        yield Lab(url, token)
    finally:
        stopped_cleanly = _shut_down(process, url, token)
    assert stopped_cleanly, f"JupyterLab did not stop through /api/shutdown:\n{_log_tail(log, token)}"


def _shut_down(process: subprocess.Popen, url: str | None, token: str) -> bool:
    """Ask the server to stop (it shuts its kernels down too); signal it only if it does not.

    Returns whether it stopped by itself with exit status 0.
    """
    if url is not None and process.poll() is None:
        try:
            httpx.post(f"{url}/api/shutdown", headers={"Authorization": f"token {token}"}, timeout=10)
        except httpx.TransportError:
            pass
    try:
        return process.wait(timeout=20) == 0
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return False


def _menu(page: Page, menu: str, item: str) -> None:
    page.get_by_role("menuitem", name=menu, exact=True).click()
    page.get_by_role("menuitem", name=item, exact=True).click()


def _code_cells(page: Page) -> list[dict]:
    """Execution count and output types of each code cell, from the notebook's model."""
    return page.evaluate(
        f"""() => Array.from({NOTEBOOK_JS}.content.model.cells)
            .filter(cell => cell.type === 'code')
            .map(cell => ({{count: cell.executionCount, tags: cell.getMetadata('tags') || [],
                            outputs: Array.from({{length: cell.outputs.length}}, (_, i) => cell.outputs.get(i).type)}}))"""
    )


def _watch_workbook_folder() -> dict[str, bytes | None]:
    watched = [NOTEBOOKS / WELCOME, NOTEBOOKS / ".ipynb_checkpoints", NOTEBOOKS / ".virtual_documents"]
    return {p.name: (p.read_bytes() if p.is_file() else b"<dir>" if p.exists() else None) for p in watched}


def test_welcome_notebook_renders_and_runs_in_jupyterlab(lab: Lab, tmp_path: Path) -> None:
    shots = Screenshots("lab")
    before = _watch_workbook_folder()
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(**chromium_options(tmp_path / "chromium-profile"))
        context.set_default_timeout(TIMEOUT_MS)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.goto(f"{lab.url}/lab/tree/{WELCOME}?reset&token={lab.token}")
            notebook = page.locator(".jp-NotebookPanel")
            # The first load fetches JupyterLab's bundles and starts the kernel: allow a minute.
            expect(notebook.get_by_role("heading", name="00 · Welcome")).to_be_visible(timeout=60_000)
            page.wait_for_function(f"{NOTEBOOK_JS}?.sessionContext?.session?.kernel?.status === 'idle'",
                                   timeout=60_000)
            # The sequence diagram of the Markdown cell: JupyterLab renders mermaid to an SVG image.
            diagram = notebook.locator(".jp-RenderedMermaid img").first
            diagram.scroll_into_view_if_needed()
            expect(diagram).to_be_visible()
            svg = diagram.evaluate("img => img.complete && img.naturalWidth > 0 ? decodeURIComponent(img.src) : ''")
            assert svg.startswith("data:image/svg+xml,") and "<svg" in svg
            assert all(actor in svg for actor in ("MCP client", "Microsoft Entra ID", "Microsoft Graph"))
            page.screenshot(path=shots.path("opened-with-mermaid"))

            # Start from a clean slate, so the execution counts checked below are this run's.
            _menu(page, "Edit", "Clear Outputs of All Cells")
            assert all(cell["count"] is None and not cell["outputs"] for cell in _code_cells(page))
            page.get_by_role("menuitem", name="Run", exact=True).click()
            run_all = page.get_by_role("menuitem", name="Run All Cells", exact=True)
            expect(run_all).to_be_visible()
            page.screenshot(path=shots.path("run-menu"))
            run_all.click()

            page.wait_for_function(
                f"""() => {{
                    const nb = {NOTEBOOK_JS};
                    const cells = Array.from(nb.content.model.cells).filter(c => c.type === 'code');
                    // the exercise's check cell fails until the learner solves it (tagged raises-exception,
                    // which JupyterLab's Run All honours as nbval and nbclient do)
                    const failed = cells.some(c => !(c.getMetadata('tags') || []).includes('raises-exception')
                        && Array.from({{length: c.outputs.length}}, (_, i) => c.outputs.get(i).type).includes('error'));
                    // Run All stops at a failing cell: the cells after it never get a count.
                    return nb.sessionContext.session.kernel.status === 'idle'
                        && (failed || cells.every(c => c.executionCount !== null));
                }}""",
                timeout=60_000,
            )
            cells = _code_cells(page)
            assert not [cell for cell in cells if "error" in cell["outputs"] and "exercise-check" not in cell["tags"]], cells
            assert [cell["outputs"] for cell in cells if "exercise-check" in cell["tags"]] == [["error"]], \
                "the untouched exercise fails its check, and Run All went on past it"
            outputs = notebook.locator(".jp-OutputArea-output")
            doctor = outputs.get_by_text("doctor: all checks passed")
            doctor.scroll_into_view_if_needed()
            expect(doctor).to_be_visible()
            page.screenshot(path=shots.path("ran-all-cells"))
            stderr = notebook.locator('[data-mime-type="application/vnd.jupyter.stderr"]')
            stderr_texts = stderr.all_inner_texts()
            expect(outputs.get_by_text("target: emulator")).to_have_count(1)
        finally:
            context.close()

    assert [cell["count"] for cell in cells] == list(range(1, len(cells) + 1))  # one run, in order
    # no traceback, no warning: only the exercise's check, whose traceback JupyterLab renders as stderr
    assert len(stderr_texts) == 1 and "AssertionError" in stderr_texts[0], stderr_texts
    assert _watch_workbook_folder() == before, "JupyterLab wrote to notebooks/"
    assert all(shot.stat().st_size > 0 for shot in shots.taken)
