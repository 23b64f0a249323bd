"""Parity snapshots: the shape of real Entra and Graph answers, each field with its public source (README "Parity snapshots").

The helpers of tests/ (tenant_setup, test_secrets_scan, ...) are top-level modules, as pytest imports them;
`python -m tests.parity.record` needs tests/ on the path for the same imports.
"""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
