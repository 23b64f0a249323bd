"""Run the workbook's notebooks end to end.

Usage::

    python -m obokit.workbook run-all [--notebooks DIR] [--timeout SECONDS] [--kernel NAME]
                                      [--save-dir DIR] [--state-dir DIR] [-x] [--no-prewarm]

``run-all`` executes every ``notebooks/*.ipynb`` in name order with nbclient,
each in a fresh kernel whose working directory is the notebooks folder, and
prints one ``PASS``/``FAIL`` line per notebook with its duration, then a
total. The exit code is 0 when every notebook ran cleanly (or there were no
notebooks yet) and 1 otherwise. Notebooks are never modified in place; use
``--save-dir`` to keep the executed copies. ``--state-dir`` points the kernels'
``OBOKIT_STATE_DIR`` at another emulator state folder (default: the environment's
value, else the repository's ``.obokit/``), e.g. a fresh one for a reproducible run.
The kernels of the next two notebooks are started, and the heavy libraries imported in them,
while the current notebook runs (``Prewarmed``); ``--no-prewarm`` starts each kernel only at its turn.

The run targets the embedded emulator: ``OBOKIT_TARGET=emulator`` is forced
for the kernels (a ``.env`` loaded with python-dotenv does not override it), unless
``--target tenant --env-file PATH`` asks for the tenant that ``PATH`` describes (the kernels get
``OBOKIT_ENV_FILE=PATH``; secrets the notebooks write go there too).
If ``obokit.emulator`` provides ``embedded()`` -- a context manager that starts
the emulator and yields a mapping of environment variables pointing clients
at it -- the emulator is started once for the whole run and those variables
are passed to every kernel; otherwise the notebooks start it themselves.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # companion/obokit/ -> repo root
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _default_notebooks_dir() -> Path:
    here = Path.cwd() / "notebooks"
    return here if here.is_dir() else _PACKAGE_ROOT / "notebooks"


@contextlib.contextmanager
def _embedded_emulator() -> Iterator[Mapping[str, str] | None]:
    import obokit.emulator as emulator

    embedded = getattr(emulator, "embedded", None)
    if embedded is None:
        yield None
        return
    with embedded() as env:
        yield dict(env or {})


@contextlib.contextmanager
def _patched_environ(values: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _short_error(exc: BaseException, limit: int = 40) -> str:
    lines = _ANSI.sub("", str(exc)).strip().splitlines() or [type(exc).__name__]
    if len(lines) > limit:
        lines = ["..."] + lines[-limit:]
    return "\n".join("    " + line for line in lines)


# Run silently in the next notebook's kernel while the current notebook runs (see `Prewarmed`): the
# heavy imports, and msgraph's model registry (its first deserialization imports ~1200 modules, 2 s).
PREWARM_CODE = """
import obokit.kernel, obokit.tenant.target, obokit.display, obokit.tenant.provisioning, obokit.clients.graph, obokit.server
import obokit.clients.mcp_client, msal, httpx, jsonschema
from msgraph.generated.models.user import User
User().get_field_deserializers()
"""


PREWARM_AHEAD = 2  # kernels warming up ahead of the running notebook


class Prewarmed:
    """A fresh kernel started (cwd: the notebook's folder) ahead of its notebook.

    While the previous notebook runs, the kernel boots and silently runs `PREWARM_CODE` (imports): the
    notebook itself still starts in a kernel that has run none of its cells, and its outputs are the
    same; only the wait for the kernel and the imports is overlapped with the previous notebook.
    """

    def __init__(self, path: Path, kernel: str = "python3", code: str = PREWARM_CODE) -> None:
        from jupyter_client.manager import KernelManager

        self.path = path
        self.km = KernelManager(kernel_name=kernel)
        self.km.start_kernel(cwd=str(path.parent))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.up = threading.Thread(target=self._boot, args=(code,), name="obokit-kernel-prewarm", daemon=True)
        self.up.start()

    def _boot(self, code: str) -> None:
        try:
            self.kc.wait_for_ready(timeout=120)
        except RuntimeError:
            return  # nbclient reports the dead kernel when the notebook's turn comes
        if code:  # in a namespace of its own (the notebook sees no name of it); a failure only costs the head start
            self.kc.execute(f"try:\n    exec({code!r}, {{}})\nexcept Exception:\n    pass", silent=True, store_history=False)

    def wait_until_up(self) -> None:
        """Until the kernel answers: its ports are bound, so the next kernel cannot pick the same ones."""
        self.up.join()

    def shutdown(self) -> None:
        self.up.join()
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


OutputHook = Callable[[Path, str], None]


def _watched_client(on_output: OutputHook | None, path: Path, **kwargs: Any) -> Any:
    """An nbclient `NotebookClient` that also hands every stream output's text to `on_output(path, text)`
    as it arrives (e.g. a device-code prompt a scripted person must answer while the cell still runs)."""
    from nbclient import NotebookClient

    class Watched(NotebookClient):
        def output(self, outs, msg, display_id, cell_index):  # type: ignore[no-untyped-def]
            out = super().output(outs, msg, display_id, cell_index)
            if on_output is not None and msg["msg_type"] == "stream":
                on_output(path, str(msg["content"].get("text", "")))
            return out

    return Watched(**kwargs)


def run_notebook(
    path: Path, *, timeout: int = 300, kernel: str = "python3", save_dir: Path | None = None,
    prewarmed: Prewarmed | None = None, on_output: OutputHook | None = None,
) -> BaseException | None:
    """Execute one notebook in a fresh kernel (cwd: its folder); returns the error, or None.

    `prewarmed`: a kernel started for this notebook by `Prewarmed` (shut down here when done).
    `on_output(path, text)`: called with the text of every stdout/stderr output, as it arrives.
    """
    import nbformat

    nb = nbformat.read(path, as_version=4)
    if prewarmed is not None:
        prewarmed.wait_until_up()  # two clients waiting for the same booting kernel at once can hang
    client = _watched_client(
        on_output, path,
        nb=nb,
        timeout=timeout,
        kernel_name=kernel,
        resources={"metadata": {"path": str(path.parent)}},
        km=prewarmed.km if prewarmed is not None else None,
    )
    error: BaseException | None = None
    try:
        client.execute()
    except Exception as exc:  # CellExecutionError, DeadKernelError, timeouts, ...
        error = exc
    finally:
        if prewarmed is not None:
            threading.Thread(target=prewarmed.shutdown, name="obokit-kernel-shutdown", daemon=True).start()
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, save_dir / path.name)
    return error


def run_all(
    notebooks_dir: Path,
    *,
    timeout: int = 300,
    kernel: str = "python3",
    save_dir: Path | None = None,
    fail_fast: bool = False,
    state_dir: Path | None = None,
    prewarm: bool = True,
    target: str = "emulator",
    env_file: Path | None = None,
    on_output: OutputHook | None = None,
    after_notebook: Callable[[Path, BaseException | None], None] | None = None,
) -> int:
    """Run every notebook of `notebooks_dir` in order; 0 if all passed. `target="tenant"` needs `env_file`.

    `on_output(path, text)` sees each stream output as it arrives; `after_notebook(path, error)` runs after each.
    """
    if target not in ("emulator", "tenant"):
        raise ValueError(f"target must be 'emulator' or 'tenant', not {target!r}")
    if target == "tenant" and env_file is None:
        raise ValueError("a tenant run needs the .env file that describes the tenant (--env-file)")
    notebooks = sorted(notebooks_dir.glob("*.ipynb")) if notebooks_dir.is_dir() else []
    if not notebooks:
        print(f"No notebooks yet: nothing to run in {notebooks_dir} (looked for *.ipynb).")
        return 0

    env = {
        "OBOKIT_TARGET": target,
        # Pick this environment's python3 kernel over any user-level kernelspec.
        "JUPYTER_PREFER_ENV_PATH": os.environ.get("JUPYTER_PREFER_ENV_PATH", "1"),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    if state_dir is not None:
        env["OBOKIT_STATE_DIR"] = str(Path(state_dir).resolve())
    if env_file is not None:
        env["OBOKIT_ENV_FILE"] = str(Path(env_file).resolve())
    passed = failed = 0
    started = time.perf_counter()
    with (_embedded_emulator() if target == "emulator" else contextlib.nullcontext({})) as emulator_env:
        if target == "tenant":
            print(f"target: the tenant of {env_file}")
        elif emulator_env is None:
            print("emulator: obokit.emulator.embedded() not available; notebooks start it themselves")
        else:
            env.update(emulator_env)
            print("emulator: started for this run")
        with _patched_environ(env):
            ready: list[Prewarmed] = [Prewarmed(notebooks[0], kernel, code="")] if prewarm else []  # nothing to overlap yet
            for index, path in enumerate(notebooks):
                t0 = time.perf_counter()
                current = ready.pop(0) if ready else None
                # Kernels for the next PREWARM_AHEAD notebooks, each started once the one before it answers
                # (two kernels started at the same moment may pick the same ports).
                while prewarm and len(ready) < PREWARM_AHEAD and index + 1 + len(ready) < len(notebooks):
                    (ready[-1] if ready else current).wait_until_up()
                    ready.append(Prewarmed(notebooks[index + 1 + len(ready)], kernel))
                error = run_notebook(path, timeout=timeout, kernel=kernel, save_dir=save_dir, prewarmed=current,
                                     on_output=on_output)
                seconds = time.perf_counter() - t0
                if error is None:
                    passed += 1
                    print(f"PASS  {path.name}  {seconds:.1f}s", flush=True)
                else:
                    failed += 1
                    print(f"FAIL  {path.name}  {seconds:.1f}s", flush=True)
                    print(_short_error(error), flush=True)
                if after_notebook is not None:
                    after_notebook(path, error)
                if error is not None and fail_fast:
                    break
            for unused in ready:
                unused.shutdown()
    total = time.perf_counter() - started
    skipped = len(notebooks) - passed - failed
    print(f"TOTAL  {len(notebooks)} notebooks  {total:.1f}s")
    summary = f"workbook: {passed} passed, {failed} failed"
    print(summary + (f", {skipped} skipped" if skipped else ""))
    return 0 if failed == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m obokit.workbook", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run-all", help="execute every notebooks/*.ipynb in order against the embedded emulator")
    run.add_argument("--notebooks", type=Path, default=None, help="folder of notebooks (default: ./notebooks)")
    run.add_argument("--timeout", type=int, default=300, help="per-cell timeout in seconds (default: 300)")
    run.add_argument("--kernel", default="python3", help="kernel name (default: python3)")
    run.add_argument("--save-dir", type=Path, default=None, help="write executed copies here")
    run.add_argument("--state-dir", type=Path, default=None, help="emulator state folder for the kernels")
    run.add_argument("-x", "--fail-fast", action="store_true", help="stop at the first failing notebook")
    run.add_argument("--target", choices=("emulator", "tenant"), default="emulator",
                     help="emulator (default), or the tenant that --env-file describes")
    run.add_argument("--env-file", type=Path, default=None, help="the .env of a tenant run (OBOKIT_ENV_FILE)")
    run.add_argument("--no-prewarm", action="store_true",
                     help="start each kernel only when its notebook's turn comes (no overlapped start and imports)")
    args = parser.parse_args(argv)

    if args.command == "run-all":
        return run_all(
            args.notebooks or _default_notebooks_dir(),
            timeout=args.timeout,
            kernel=args.kernel,
            save_dir=args.save_dir,
            fail_fast=args.fail_fast,
            state_dir=args.state_dir,
            prewarm=not args.no_prewarm,
            target=args.target,
            env_file=args.env_file,
        )
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
