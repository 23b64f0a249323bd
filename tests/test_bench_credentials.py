"""The benchmark's section "cold OBO exchange per credential" (benchmarks/obo_credentials.py) at a tiny size.

As `make bench --credentials-only` runs it: `obokit emulator serve` in its own process, the exchanges in this one.
Asserted: the rows and their structure, that every exchange reached /token (no cache answered), and that the
managed identity endpoint was called at most once per assertion lifetime, also with assertions short-lived enough to
be refreshed during the row. No timing is asserted: the benchmark's printed numbers are for reading, not for CI.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import obo_credentials  # noqa: E402 - from benchmarks/
import obo_tools  # noqa: E402 - from benchmarks/

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

ENV_NAMES = ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT")
EXCHANGES, CONCURRENCY = 4, 2
ROWS = ["secret", "certificate", "managed identity", "managed identity, short-lived"]


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[obo_tools.EmulatorProcess]:
    emu = obo_tools.EmulatorProcess(tmp_path / "emulator")
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):  # as the benchmark sets them; restored after the test
        monkeypatch.setenv(name, emu.ca_bundle)
    try:
        yield emu
    finally:
        emu.stop()


async def test_the_credentials_section_runs_and_calls_the_identity_endpoint_once_per_lifetime(
        served: obo_tools.EmulatorProcess, capsys: pytest.CaptureFixture[str]) -> None:
    before = {name: os.environ.get(name) for name in ENV_NAMES}
    # 30 ms at the identity provider: 4 exchanges one at a time outlast several 0.02 s assertion lifetimes.
    args = obo_tools.parse_args(["--credentials-only", "--identity-ms", "30", "--credential-exchanges", str(EXCHANGES),
                                 "--credential-concurrency", str(CONCURRENCY), "--mi-lifetime", "0.02"])
    reg = obo_tools.provision(served)
    section = await obo_tools.credentials_section(served, reg, args)

    assert {name: os.environ.get(name) for name in ENV_NAMES} == before  # set only during the managed identity rows
    assert [row.key for row in section.rows] == ROWS and section.concurrency == CONCURRENCY
    for row in section.rows:
        assert (row.one_at_a_time.concurrency, row.concurrent.concurrency) == (1, CONCURRENCY)
        assert row.exchanges == row.answered == 2 * EXCHANGES and row.errors == 0, row.label  # no cache answered
        assert row.one_at_a_time.p50_ms > 0 and row.one_at_a_time.p95_ms >= row.one_at_a_time.p50_ms
        assert 0 <= row.busy_lag_ms and 0 <= row.lag_ms
        assert (row.managed_identity is None) == (not row.key.startswith("managed identity"))

    kept = section.row("managed identity").managed_identity
    assert kept is not None and kept.met
    assert (kept.endpoint_calls, kept.fetches, kept.lifetimes, kept.max_per_lifetime) == (1, 1, 1, 1)
    short = section.row("managed identity, short-lived").managed_identity
    assert short is not None and short.met
    assert short.fetches >= 2 and short.endpoint_calls == short.fetches == short.lifetimes  # refreshed in the row
    assert short.max_per_lifetime == 1 and 0.02 <= short.lifetime_s < 1  # from the fetch's start

    capsys.readouterr()
    obo_credentials.print_section(section)
    printed = capsys.readouterr().out
    assert "cold OBO exchange per credential" in printed
    targets = [line for line in printed.splitlines() if line.startswith(("MET ", "MISS"))]
    assert len(targets) == 2 + 2 * len(ROWS)  # calls per lifetime (2 rows); lag and /token (every row)
    assert sum("managed identity endpoint call per assertion lifetime" in t and t.startswith("MET ")
               for t in targets) == 2
    assert sum("max event-loop lag" in t and "< 5 ms" in t for t in targets) == len(ROWS)


def test_fetch_log_counts_a_second_fetch_within_one_lifetime() -> None:
    """The measure catches what it is for: two fetches inside one assertion's lifetime."""
    log = obo_credentials.FetchLog(lambda: {"access_token": "t", "expires_in": 3600}, refresh_margin=300)
    log()
    assert log.max_calls_per_lifetime == 1 and 3299 < log.lifetime_s < 3301
    log()
    assert log.max_calls_per_lifetime == 2
    short = obo_credentials.FetchLog(lambda: {"access_token": "t", "expires_in": 3600}, refresh_margin=300, lifetime=0)
    short()
    short()
    assert short.max_calls_per_lifetime == 1  # each lifetime ended before the next fetch started
