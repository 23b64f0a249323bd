"""`python -m obokit.rehearsal [--profile tenant|quick] [--keep] [--replication-delay S]`: the rehearsal by hand.

Prints one line per notebook (PASS/FAIL, device-code prompts, sign-in pages rendered, automatic sign-ins,
consent pages, the (account, server URL) sign-ins), then every failure; exit code 0 when the run passed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from .runner import NOTEBOOKS, rehearse
from .standalone import PROFILES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m obokit.rehearsal", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=PROFILES, default="tenant", help="the standalone emulator's profile")
    parser.add_argument("--keep", action="store_true", help="keep the run folder (logs, executed notebooks, state)")
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS, help="folder of notebooks (default: the workbook's)")
    parser.add_argument("--timeout", type=int, default=300, help="per-cell timeout in seconds (default: 300)")
    parser.add_argument("--replication-delay", default=None, metavar="LOW[,HIGH]",
                        help="the emulator's replication delay instead of the profile's (0: set it aside)")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="obokit-rehearsal-"))
    try:
        report = rehearse(folder, profile=args.profile, notebooks_dir=args.notebooks, timeout=args.timeout,
                          replication_delay=args.replication_delay)
    finally:
        if args.keep:
            print(f"run folder kept: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
