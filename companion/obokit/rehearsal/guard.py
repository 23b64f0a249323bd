"""Notes every kernel of the run that imports `obokit.emulator`: a tenant run must never need it.

`install(run_dir)` makes an IPython folder whose startup file (run by every kernel that gets
`IPYTHONDIR=<that folder>`, before any cell) puts an import watcher first on `sys.meta_path`. It changes
nothing about the import: it appends to imports.jsonl the notebook running (from state.json), the code
cell's `In[]` number and the frames that asked, and the notebook goes on, so one run shows every case.
"""

from __future__ import annotations

from pathlib import Path

from .rundir import RunDir

FORBIDDEN = "obokit.emulator"

_STARTUP = '''\
# Written by obokit.rehearsal.guard: note any import of {forbidden!r} in this kernel.
def _obokit_rehearsal_watch():
    import importlib.abc, json, re, sys, traceback

    run_dir = {run_dir!r}

    class Watch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == {forbidden!r} and name not in sys.modules:
                try:
                    with open(run_dir + "/state.json") as f:
                        notebook = json.load(f).get("notebook")
                except (OSError, ValueError):
                    notebook = None
                shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
                stack = [frame for frame in traceback.extract_stack()[:-1] if "importlib" not in frame.filename]
                cell = next((i for i, frame in enumerate(stack) if re.search(r"ipykernel_\\d+", frame.filename)),
                            len(stack) - 5)
                frames = [f"{{frame.filename}}:{{frame.lineno}} {{frame.name}}" for frame in stack[max(cell, 0):]]
                count = getattr(shell, "execution_count", None)  # while a cell runs: its In[] number + 1
                record = {{"notebook": notebook, "module": name, "in": count - 1 if count else None,
                          "frames": frames[-5:]}}
                with open(run_dir + "/imports.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\\n")
            return None

    sys.meta_path.insert(0, Watch())


_obokit_rehearsal_watch()
del _obokit_rehearsal_watch
'''


def install(run_dir: RunDir) -> Path:
    """An IPython folder for the kernels (`IPYTHONDIR`) whose startup file watches for the forbidden import."""
    ipython_dir = run_dir.path / "ipython"
    startup = ipython_dir / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "00-obokit-rehearsal-guard.py").write_text(_STARTUP.format(forbidden=FORBIDDEN, run_dir=str(run_dir.path)))
    return ipython_dir
