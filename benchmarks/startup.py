"""Start-up times: the embedded emulator and the workbook's MCP server in this process (as in a kernel).

    .venv/bin/python benchmarks/startup.py [--repeat 3]

Emulator: `import obokit.emulator`, then `Emulator(state).start()` for a new state folder without
cached keys (RSA generation), a new folder with the key cache (`~/.cache/obokit/emulator-keys`),
and the same folder again. Server: `start_workbook_server(...)` in a background thread, until it
accepts requests. Best of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

T0 = time.perf_counter()
import obokit.emulator  # noqa: E402 - timed

IMPORT_EMULATOR = time.perf_counter() - T0
T1 = time.perf_counter()
import obokit.server  # noqa: E402 - timed

IMPORT_SERVER = time.perf_counter() - T1

from obo_tools import bench_target, machine, provision  # noqa: E402 - same folder

from obokit.emulator import Emulator  # noqa: E402


def best(repeat: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(repeat))


def emulator_start(folder: Path, key_cache: str | None) -> float:
    saved = os.environ.get("OBOKIT_KEY_CACHE")
    if key_cache is not None:
        os.environ["OBOKIT_KEY_CACHE"] = key_cache
    try:
        t0 = time.perf_counter()
        emu = Emulator(folder).start()
        seconds = time.perf_counter() - t0
        emu.close()
    finally:
        if saved is None:
            os.environ.pop("OBOKIT_KEY_CACHE", None)
        else:
            os.environ["OBOKIT_KEY_CACHE"] = saved
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"import obokit.emulator            {IMPORT_EMULATOR:6.2f} s (first import in this process)")
    print(f"import obokit.server              {IMPORT_SERVER:6.2f} s (after the emulator's)")
    with tempfile.TemporaryDirectory(prefix="obokit-startup-") as tmp:
        root = Path(tmp)
        counter = iter(range(1000))
        cold = best(args.repeat, lambda: emulator_start(root / f"cold{next(counter)}", "off"))
        cached = best(args.repeat, lambda: emulator_start(root / f"new{next(counter)}", None))
        again = best(args.repeat, lambda: emulator_start(root / "new0", None))
        print(f"emulator start, new state, no key cache   {cold:6.2f} s")
        print(f"emulator start, new state, key cache      {cached:6.2f} s")
        print(f"emulator start, existing state            {again:6.2f} s")
        emu = Emulator(root / "server-state").start()
        try:
            reg = provision(emu)
            target = bench_target(emu.authority, emu.graph_url, root)

            def server_start() -> float:
                t0 = time.perf_counter()
                server = obokit.server.start_workbook_server(target, name="startup", storage_dir=root / "srv",
                                                             registration=reg)
                seconds = time.perf_counter() - t0
                server.stop()
                return seconds

            first = server_start()
            print(f"server start in this process, first      {first:6.2f} s")
            print(f"server start in this process, again      {best(args.repeat, server_start):6.2f} s")
        finally:
            emu.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
