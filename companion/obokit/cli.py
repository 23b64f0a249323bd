"""The `obokit` command line: the standalone emulator and server, a readiness check, and the clean-up.

    obokit emulator serve [--profile quick|tenant] [--replication-delay LOW[,HIGH]] [--state-dir DIR]
                          [--identity-port N] [--graph-port N] [--reset]
    obokit emulator reset [--profile quick|tenant] [--state-dir DIR]
    obokit serve [--port N] [--mode proxy|direct] [--credential secret|certificate|managed-identity]
    obokit doctor              # OK/WARN/FAIL per line; exit code 1 when something FAILs
    obokit cleanup [--yes]     # lists the workbook's objects in the target; --yes removes them

`serve`, `doctor` and `cleanup` use the target of `.env` (the emulator unless OBOKIT_TARGET=tenant) and
the state folder of OBOKIT_STATE_DIR (default ./.obokit).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path


def demo_lines() -> list[str]:
    """The seeded demo directory as the DEMO_* keys a tenant target reads (see .env.example)."""
    from .emulator import SHAREPOINT_HOST, TENANT_DOMAIN, group_id

    return [
        f"DEMO_ADMIN_UPN=adele@{TENANT_DOMAIN}",
        f"DEMO_ANALYST_UPN=bruno@{TENANT_DOMAIN}",
        f"DEMO_ENGINEER_UPN=chen@{TENANT_DOMAIN}",
        f"DEMO_FINANCE_GROUP_ID={group_id('finance')}",
        f"DEMO_FINANCE_SITE={SHAREPOINT_HOST}:/sites/finance",
        f"DEMO_ENGINEERING_SITE={SHAREPOINT_HOST}:/sites/engineering",
    ]


def replication_delay(text: str) -> tuple[float, float]:
    """`--replication-delay` as (low, high) seconds: "3" is a fixed delay, "2,5" a random one per write."""
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not seconds: {text!r} (expected LOW or LOW,HIGH)") from None
    if len(parts) not in (1, 2) or not 0 <= parts[0] <= parts[-1]:
        raise argparse.ArgumentTypeError(f"expected LOW or LOW,HIGH with 0 <= LOW <= HIGH, not {text!r}")
    return parts[0], parts[-1]


def _serve(args: argparse.Namespace) -> int:
    from .emulator import Emulator

    emulator = Emulator(args.state_dir, profile=args.profile, replication_delay=args.replication_delay)
    if args.reset:
        emulator.reset()
    emulator.start(identity_port=args.identity_port, graph_port=args.graph_port)
    low, high = emulator.replication_delay
    print(f"obokit emulator running, profile {emulator.profile} (replication delay {low:g}-{high:g} s). "
          "Put these lines in .env (or export them) to point clients at it:")
    for line in emulator.env_lines() + demo_lines():
        print(f"  {line}")
    identity = emulator.managed_identity
    # Not .env lines: with these two set, azure-identity's DefaultAzureCredential takes the managed identity.
    print(f"Managed identity endpoint of {identity.name} (client id {identity.client_id}), for the process that "
          "uses it; the header changes at every start:")
    for name, value in emulator.managed_identity_environment().items():
        print(f"export {name}={value}")
    print(f"State folder: {emulator.state_dir}. Stop with Ctrl+C.", flush=True)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    while not stopped.wait(0.5):
        if emulator.server is None or not emulator.server.running:
            print("emulator stopped unexpectedly", file=sys.stderr)
            return 1
    emulator.close()
    return 0


def _reset(args: argparse.Namespace) -> int:
    from .emulator import Emulator

    emulator = Emulator(args.state_dir, profile=args.profile)
    emulator.reset()
    emulator.close()
    print(f"Emulator state in {emulator.state_dir} reset to the demo tenant ({emulator.profile} profile).")
    return 0


def _serve_workbook(args: argparse.Namespace) -> int:
    from .serve import run

    return run(port=args.port, mode=args.mode, credential=args.credential, trusted_callers=args.trusted_caller)


def _doctor(args: argparse.Namespace) -> int:
    from .doctor import run_doctor

    return run_doctor()


def _cleanup(args: argparse.Namespace) -> int:
    from .tenant.cleanup import run_cleanup

    return run_cleanup(yes=args.yes)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="obokit", description="Companion tools of the Entra OBO workbook.")
    commands = parser.add_subparsers(dest="command", required=True)
    emulator = commands.add_parser("emulator", help="the embedded Entra + Graph emulator")
    actions = emulator.add_subparsers(dest="action", required=True)
    serve = actions.add_parser("serve", help="run the emulator until interrupted")
    serve.add_argument("--profile", choices=("quick", "tenant"), default="quick",
                       help="quick: pre-consented admin client, no delays (default); tenant: a fresh tenant's "
                            "defaults (consent pages, replication delay, browser session)")
    serve.add_argument("--replication-delay", type=replication_delay, default=None, metavar="LOW[,HIGH]",
                       help="seconds before a directory write is visible to tokens and Graph reads "
                            "(default: 2,5 for tenant, 0 for quick)")
    serve.add_argument("--state-dir", type=Path, default=None,
                       help="state folder (default: ./.obokit; ./.obokit/tenant-profile for --profile tenant)")
    serve.add_argument("--identity-port", type=int, default=0, help="identity port (default: any free port)")
    serve.add_argument("--graph-port", type=int, default=0, help="Graph port (default: any free port)")
    serve.add_argument("--reset", action="store_true", help="start from a freshly seeded demo tenant")
    serve.set_defaults(handler=_serve)
    reset = actions.add_parser("reset", help="reset the state to the seeded demo tenant")
    reset.add_argument("--profile", choices=("quick", "tenant"), default="quick")
    reset.add_argument("--state-dir", type=Path, default=None)
    reset.set_defaults(handler=_reset)
    workbook = commands.add_parser("serve", help="run the workbook's MCP server (streamable HTTP at /mcp) until interrupted")
    workbook.add_argument("--port", type=int, default=8000, help="port on localhost (default: 8000; 0: any free port)")
    workbook.add_argument("--mode", choices=("proxy", "direct"), default="proxy",
                          help="proxy: FastMCP's OAuth proxy in front of Entra (default); direct: a resource server, "
                               "clients sign in at Entra themselves")
    workbook.add_argument("--credential", choices=("secret", "certificate", "managed-identity"), default=None,
                          help="how the server's app proves itself to Entra (default: the secret of 01 if the "
                               "secrets file has one, else the certificate of 08)")
    workbook.add_argument("--trusted-caller", action="append", default=[], metavar="APP_ID",
                          help="direct mode: a client app id whose tokens the server accepts (repeatable; "
                               "default: VS Code's)")
    workbook.set_defaults(handler=_serve_workbook)
    doctor = commands.add_parser("doctor", help="check Python, packages, CA trust, the target and the notebooks")
    doctor.set_defaults(handler=_doctor)
    cleanup = commands.add_parser("cleanup", help="remove what the workbook created in the target (dry run by default)")
    cleanup.add_argument("--yes", action="store_true", help="really delete (default: only list what would go)")
    cleanup.set_defaults(handler=_cleanup)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
