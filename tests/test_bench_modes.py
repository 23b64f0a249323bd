"""The benchmark's auth-mode comparison (benchmarks/obo_tools.py --modes-only) at a tiny size.

As `make bench` runs it: `obokit emulator serve` and each workbook server in their own processes, the callers in
this one; (c) behind FastMCP's OAuth proxy (users signed in through it), (d) in direct mode (users signed in at
Entra with a pre-authorized public client, Entra's token as the bearer). Asserted: both modes answered at every
level without errors, one OBO exchange per user, the per-call split has its parts for both (the proxy's auth layer
with its store lookup and upstream verification, direct mode's with Entra's token only), and the printed rows,
split table. Then the paired section: both servers at once, one session each, warm calls alternating (c),(d) then
(d),(c): every call answered, the pairs recorded in that order with each server's own auth and tool times, the
bootstrap interval ordered, and the direct-vs-proxy target line on the paired result. No timing is asserted: the
printed numbers are for reading.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import call_split  # noqa: E402 - from benchmarks/
import obo_tools  # noqa: E402 - from benchmarks/
import paired  # noqa: E402 - from benchmarks/

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

LEVELS = [1, 3]  # the last level reaches all three users: one exchange each
PAIRS = 4


async def test_the_mode_comparison_runs_both_servers_and_splits_their_calls(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):  # the benchmark sets them in this process; restored after
        monkeypatch.delenv(name, raising=False)
    args = obo_tools.parse_args(["--modes-only", "--duration", "0.3", "--concurrency", ",".join(map(str, LEVELS)),
                                 "--pairs", str(PAIRS), "--pair-warmup", "1"])
    assert (args.implementations, args.no_credentials) == ("cd", True)

    run = await obo_tools.measure(args)

    assert list(run.results) == ["c", "d"] and run.section is None
    assert run.graph_alone_ms is not None and run.graph_alone_ms > 0
    for key, rows in run.results.items():
        assert [result.concurrency for result, _, _ in rows] == LEVELS, key
        for result, _, _ in rows:
            assert result.calls > 0 and result.errors == 0, key  # the mode answered at every level
            assert len(result.in_tool) == result.calls, key  # one tool run per call, timed in the server
            assert len(result.requests) == result.calls, key  # one tools/call request per call
        assert sum(total for _, total, _ in rows) == len(obo_tools.USERS), key  # one exchange per user (OboCache)

    splits = {key: call_split.split(*obo_tools.split_inputs(rows[0][0])) for key, rows in run.results.items()}
    for key, split in splits.items():
        assert split.aligned and split.calls == run.results[key][0][0].calls, key
        for part in (split.end_to_end, split.server, split.client, split.auth, split.mcp_stack, split.tool):
            assert math.isfinite(part), key
        assert 0 < split.auth and split.tool > 0 and split.server < split.end_to_end, key
    assert set(splits["c"].auth_parts) == {call_split.PROXY_JWT, call_split.STORE, call_split.UPSTREAM}
    assert set(splits["d"].auth_parts) == {call_split.ENTRA}

    assert run.paired is not None and run.paired.user == obo_tools.USERS[0]
    pairs = run.paired.paired
    assert (pairs.a, pairs.b, pairs.errors, pairs.warmup) == ("c", "d", 0, 1)  # both answered every call
    assert pairs.first == ["c", "d"] * (PAIRS // 2)  # the order alternates
    assert all(len(pairs.results[key].latencies) == PAIRS for key in "cd") and len(pairs.differences) == PAIRS
    for times in (run.paired.auth_ms, run.paired.tool_ms):  # each server timed each recorded call itself
        assert all(len(times[key]) == PAIRS and min(times[key]) > 0 for key in "cd")
    low, high = pairs.interval()
    assert math.isfinite(low) and low <= high and min(pairs.differences) <= pairs.median <= max(pairs.differences)
    assert 0 <= pairs.b_faster <= PAIRS and 0 < pairs.sign_test_p() <= 1

    capsys.readouterr()
    obo_tools.print_table(run.results, args, run.graph_alone_ms, run.paired)
    printed = capsys.readouterr().out
    for key in "cd":
        label = f"({key}) {obo_tools.IMPLEMENTATIONS[key][0]}"
        assert sum(line.startswith(f"| {label} | {level} |") for line in printed.splitlines() for level in LEVELS) == 2
        assert sum(line.startswith(f"| {label} | ") for line in printed.splitlines()) == 4  # 2 levels, paired, split
    assert "per-call time split" in printed and "method: timestamps" in printed
    assert sum("direct (d) vs proxy (c)" in line for line in printed.splitlines()) == len(LEVELS)
    assert f"paired, interleaved warm calls: (c) and (d) running at the same time" in printed
    lines = printed.splitlines()
    start = lines.index("| server | calls | p50 ms | p95 ms | auth layer p50 ms | tool p50 ms |")
    paired_rows = list(itertools.takewhile(lambda line: line.startswith("| "), lines[start + 2:]))  # after |---|
    for key in "cd":  # its row of the paired table (other tables' rows may show the same call count)
        assert sum(line.startswith(f"| ({key}) {obo_tools.IMPLEMENTATIONS[key][0]} | {PAIRS} |")
                   for line in paired_rows) == 1
    assert "(d) - (c) end to end, per pair: median" in printed and "legend: a pair is" in printed
    target = [line for line in printed.splitlines() if "direct (d) - proxy (c) median" in line]
    assert len(target) == 1 and target[0].startswith(("MET ", "MISS")) and f"paired ({PAIRS} pairs)" in target[0]
    assert not any("direct (d) end-to-end p50" in line for line in printed.splitlines())  # sequential: no target


async def test_alternate_swaps_the_order_each_pair_and_drops_a_pair_with_a_failed_call() -> None:
    calls: list[str] = []

    def call(key: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            calls.append(key)
            if len(calls) == 4:  # the second pair's second call
                raise RuntimeError("refused")
        return run

    result = await paired.alternate({"c": call("c"), "d": call("d")}, pairs=3)
    assert calls == ["c", "d", "d", "c", "c", "d"]
    assert result.errors == 1 and result.first == ["c", "c"]  # the second pair, (d) first, is not recorded
    assert all(len(result.results[key].latencies) == 2 for key in "cd")


def test_the_paired_statistics() -> None:
    assert paired.sign_test(5, 5) == 1.0 and math.isclose(paired.sign_test(10, 0), 2 / 2 ** 10)
    assert paired.sign_test(0, 0) == 1.0
    values = [-3.0, -2.0, -1.0, 0.5, 1.0]
    low, high = paired.median_interval(values)
    assert min(values) <= low <= high <= max(values)
    assert paired.median_interval(values) == (low, high)  # a fixed seed: the same interval for the same pairs
    assert paired.median_interval([2.0] * 7) == (2.0, 2.0)


def test_the_split_subtracts_per_call_and_falls_back_to_medians() -> None:
    """client = end-to-end - server, MCP stack = server - auth - tool, per call when the counts agree."""
    requests = [(0.010, {call_split.AUTH: 0.001, call_split.ENTRA: 0.001}), (0.020, {call_split.AUTH: 0.002})]
    split = call_split.split([0.013, 0.024], requests, [0.006, 0.010])
    assert split.aligned and split.calls == 2
    assert math.isclose(split.client, 3.5) and math.isclose(split.mcp_stack, 5.5)  # medians of (3, 4) and (3, 8)
    assert math.isclose(split.auth, 1.5) and math.isclose(split.tool, 8.0) and math.isclose(split.end_to_end, 18.5)
    assert math.isclose(split.auth_parts[call_split.ENTRA], 0.5)  # a request without the part counts 0
    unaligned = call_split.split([0.013, 0.024, 0.030], requests, [0.006, 0.010])
    assert not unaligned.aligned and math.isclose(unaligned.client, 24 - 15)
