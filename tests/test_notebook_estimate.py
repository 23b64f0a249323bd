"""The learner-time estimator (tests/notebook_estimate.py) and what it says of the workbook."""

from __future__ import annotations

import json

import pytest
from notebook_estimate import NOTEBOOKS, estimate, estimate_all, report


def notebook(*cells: tuple[str, str]) -> dict:
    return {"cells": [{"cell_type": kind, "source": source.splitlines(keepends=True)} for kind, source in cells]}


def test_the_rule_words_cells_and_lines() -> None:
    prose = " ".join(["word"] * 400)  # 2 minutes at 200 words per minute
    e = estimate(notebook(("markdown", prose), ("code", "a = 1\n\nb = 2\n"), ("code", "print(a)"), ("raw", "x y z")))
    assert (e.words, e.code_cells, e.code_lines) == (400, 2, 3)
    assert e.minutes == pytest.approx(2 + 2 + 3 * 3 / 60)


def test_a_deep_dive_says_so_in_its_first_cell() -> None:
    assert estimate(notebook(("markdown", "# 09 · Deep dive: proxies"), ("code", "x"))).deep_dive
    assert not estimate(notebook(("markdown", "# 03 · A server"), ("markdown", "no deep dive here"))).deep_dive


def test_the_workbook_estimate_covers_every_notebook(capsys: pytest.CaptureFixture[str]) -> None:
    estimates = estimate_all()
    assert [e.name for e in estimates] == sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert all(e.minutes > 0 for e in estimates)
    assert {e.name for e in estimates if e.deep_dive} >= {"09-proxy-vs-direct"}
    with capsys.disabled():
        print("\n" + report(estimates))


CORE_PATH_MINUTES = 150  # issue 16: a one-day workshop's morning and early afternoon, with breaks


def test_the_core_path_fits_its_budget() -> None:
    estimates = estimate_all()
    core = {e.name: round(e.minutes, 1) for e in estimates if not e.deep_dive}
    assert sum(core.values()) <= CORE_PATH_MINUTES, f"core path {sum(core.values()):.0f} min: {core}"
    assert {e.name for e in estimates if e.deep_dive} >= {"07-scale-out", "09-proxy-vs-direct"}


def test_no_code_cell_is_longer_than_twenty_lines() -> None:
    for path in NOTEBOOKS.glob("*.ipynb"):
        for index, cell in enumerate(json.loads(path.read_text())["cells"]):
            lines = [line for line in "".join(cell["source"]).splitlines() if line.strip()]
            assert cell["cell_type"] != "code" or len(lines) <= 20, f"{path.name} cell {index}: {len(lines)} lines"



def test_no_cell_uses_nbval_comments() -> None:
    """nbval's markers are cell tags (nbval-ignore-output, raises-exception), never comments a learner reads."""
    for path in NOTEBOOKS.glob("*.ipynb"):
        for cell in json.loads(path.read_text())["cells"]:
            assert "NBVAL" not in "".join(cell["source"]), f"{path.name}: an NBVAL comment"
