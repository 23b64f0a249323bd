"""Paired, interleaved comparison of two servers' warm calls (benchmarks/obo_tools.py: (c) proxy against (d) direct).

Measured one after the other, two servers' p50s also differ by whatever the shared machine did meanwhile (other jobs,
frequency, caches): on a 2-core machine that drift is larger than the proxy's extra auth work (under 1 ms per call).
Here both servers run at the same time, one caller keeps one MCP session open to each, and `alternate` calls the same
tool for the same user on each in turn: pair i is (a, b) for even i and (b, a) for odd i, so slow drift lands on both
members of a pair and neither server is always the first (a warmer cache, a just-woken CPU). What is compared is each
pair's difference b - a:

* the median of the paired differences, with a 95% percentile-bootstrap interval (resampling the pairs, stdlib
  `random` with a fixed seed, so a run's interval is reproducible from its pairs);
* the share of pairs where b was faster, with a two-sided exact sign test (binomial, p = 0.5);
* the median difference separately for the pairs where a went first and where b went first (an order effect shows
  as these two disagreeing; alternating cancels it in the overall median).
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from obokit.obo_bench import LoadResult

RESAMPLES = 2000
CONFIDENCE = 0.95


@dataclass
class Paired:
    """Two keys' latencies (seconds) in pair order: pair i is (`results[a].latencies[i]`, `results[b].latencies[i]`)."""

    a: str
    b: str
    results: dict[str, LoadResult]
    first: list[str] = field(default_factory=list)  # which key was called first in each pair
    warmup: int = 0  # warm-up pairs before these (set by the caller, for the printout)
    errors: int = 0  # calls that raised (their pair is not recorded)
    seconds: float = 0.0  # wall time of the warm-up and the pairs

    @property
    def pairs(self) -> int:
        return len(self.first)

    @property
    def differences(self) -> list[float]:
        """b - a per pair, ms."""
        return [1000 * (y - x) for x, y in zip(self.results[self.a].latencies, self.results[self.b].latencies)]

    @property
    def median(self) -> float:
        return statistics.median(self.differences) if self.first else math.nan

    def interval(self, resamples: int = RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float]:
        """A percentile-bootstrap interval of the median difference (ms): the pairs resampled with replacement."""
        return median_interval(self.differences, resamples=resamples, confidence=confidence, seed=seed)

    @property
    def b_faster(self) -> int:
        """The pairs where b's call took less time than a's."""
        return sum(d < 0 for d in self.differences)

    def sign_test_p(self) -> float:
        return sign_test(self.b_faster, sum(d > 0 for d in self.differences))

    def median_when_first(self, key: str) -> float:
        """The median difference over the pairs in which `key` was called first (ms)."""
        chosen = [d for d, k in zip(self.differences, self.first) if k == key]
        return statistics.median(chosen) if chosen else math.nan


def median_interval(values: list[float], *, resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
                    seed: int = 0) -> tuple[float, float]:
    """The `confidence` percentile-bootstrap interval of the median of `values`."""
    if not values:
        return math.nan, math.nan
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    tail = (1 - confidence) / 2
    return medians[int(tail * resamples)], medians[min(resamples - 1, math.ceil((1 - tail) * resamples) - 1)]


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test: the chance of a split at least this uneven if either side wins with p = 0.5."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


async def alternate(calls: dict[str, Callable[[], Awaitable[Any]]], *, pairs: int) -> Paired:
    """Call the two `calls` in turn, one at a time, `pairs` pairs: the first key goes first in even pairs, the second
    in odd ones. A call that raises counts as an error and its pair is not recorded. (A warm-up is one more call of
    this, its result dropped: the caller then forgets the servers' own records of it.)"""
    a, b = calls
    result = Paired(a, b, {a: LoadResult(1, 0.0), b: LoadResult(1, 0.0)})
    started = time.perf_counter()
    for i in range(pairs):
        order = (a, b) if i % 2 == 0 else (b, a)
        taken: dict[str, float] = {}
        for key in order:
            t0 = time.perf_counter()
            try:
                await calls[key]()
            except Exception:  # noqa: BLE001 - counted, the run goes on
                result.errors += 1
                continue
            taken[key] = time.perf_counter() - t0
        if len(taken) == 2:
            for key in (a, b):
                result.results[key].latencies.append(taken[key])
            result.first.append(order[0])
    result.seconds = time.perf_counter() - started
    for load in result.results.values():
        load.seconds = result.seconds
    return result


def _per_pair(paired: Paired, values: dict[str, list[float]] | None) -> list[float] | None:
    """b - a of a per-call server measurement (ms, in call order), when each server recorded one per pair."""
    if not values or not len(values.get(paired.a, [])) == len(values.get(paired.b, [])) == paired.pairs:
        return None
    return [y - x for x, y in zip(values[paired.a], values[paired.b])]


def print_paired(paired: Paired, labels: dict[str, str], *, user: str, auth_ms: dict[str, list[float]] | None = None,
                 tool_ms: dict[str, list[float]] | None = None) -> None:
    """The section: one row per server, the paired statistics, the legend. `auth_ms`, `tool_ms`: each server's
    auth-layer and tool time per recorded call (ms, from its own timestamps), in call order."""
    a, b = paired.a, paired.b
    lo, hi = paired.interval()
    print(f"\npaired, interleaved warm calls: ({a}) and ({b}) running at the same time, one MCP session to each for "
          f"{user}, {paired.pairs} pairs after {paired.warmup} warm-up pairs, order alternating ({a},{b}), ({b},{a}), ... "
          f"({paired.seconds:.1f} s):\n")
    print("| server | calls | p50 ms | p95 ms | auth layer p50 ms | tool p50 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for key in (a, b):
        result = paired.results[key]
        auth, tool = (f"{statistics.median(v[key]):.2f}" if v and v.get(key) else "-" for v in (auth_ms, tool_ms))
        print(f"| {labels[key]} | {result.calls} | {result.p50_ms:.1f} | {result.p95_ms:.1f} | {auth} | {tool} |")
    share = paired.b_faster / paired.pairs if paired.pairs else math.nan
    print(f"\n({b}) - ({a}) end to end, per pair: median {paired.median:+.2f} ms, 95% interval [{lo:+.2f}, {hi:+.2f}] ms; "
          f"({b}) faster in {paired.b_faster}/{paired.pairs} pairs ({share:.0%}), sign test p = {paired.sign_test_p():.2g}")
    print(f"  by order: ({a}) first {paired.median_when_first(a):+.2f} ms, ({b}) first {paired.median_when_first(b):+.2f} ms;"
          f" difference of the p50s {paired.results[b].p50_ms - paired.results[a].p50_ms:+.2f} ms"
          + (f"; errors {paired.errors}" if paired.errors else ""))
    auth, tool = _per_pair(paired, auth_ms), _per_pair(paired, tool_ms)
    if auth is not None:
        print(f"  auth layer alone, per pair: median {statistics.median(auth):+.2f} ms")
    if tool is not None:
        rest = [d - t for d, t in zip(paired.differences, tool)]
        rest_lo, rest_hi = median_interval(rest)
        print(f"  end to end without the tool (OBO hit + Graph), per pair: median {statistics.median(rest):+.2f} ms, "
              f"95% interval [{rest_lo:+.2f}, {rest_hi:+.2f}] ms")
    print(f"\nlegend: a pair is one warm call to each server, back to back from one caller process, so drift of the"
          f"\nshared machine hits both; a negative difference means ({b}) answered faster. The interval resamples the"
          f"\npairs ({RESAMPLES} bootstrap medians, the middle {CONFIDENCE:.0%}); the sign test asks whether ({b}) wins more"
          f"\npairs than a coin would. 'by order' splits the pairs by which server went first (alternating cancels a"
          f"\nfirst-call advantage). auth layer: the auth provider's verify_token, tool: GraphApi.get, both timed in each"
          f"\nserver (call_split.py); taking the tool out removes the Graph round trip's jitter (the emulator's injected"
          f"\nlatency), which the mode cannot change. The target is on the end-to-end line.")


__all__ = ["Paired", "alternate", "median_interval", "print_paired", "sign_test"]
