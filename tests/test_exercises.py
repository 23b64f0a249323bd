"""Every notebook closes with a recap and a "try it" exercise whose solution passes and whose starter fails.

The convention (issue 16): a `## Recap` cell of three bullet lines, a `## Try it` cell, one code cell tagged
`exercise-starter` (what the learner edits), one tagged `exercise-check` + `raises-exception` (asserts that fail
until the exercise is solved), and the solution in `notebooks/solutions/<notebook>.py`, which replaces the
starter. The workbook test runs every notebook in order on a fresh emulator tenant, as a learner would: the
untouched starter must make the check raise; then, in the same kernel, the solution runs and the check again,
which must pass.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
from notebook_estimate import cell_source

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SOLUTIONS = NOTEBOOKS / "solutions"
SOLVED_MARK = "Solved"


def tagged(notebook: dict, tag: str) -> list[int]:
    return [i for i, cell in enumerate(notebook["cells"]) if tag in cell.get("metadata", {}).get("tags", [])]


def notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def exercise_problems(notebook: dict, solution: Path) -> list[str]:
    """What is missing from a notebook's closing recap and exercise (empty: nothing)."""
    problems = []
    markdown = [cell_source(c) for c in notebook["cells"] if c["cell_type"] == "markdown"]
    recaps = [text for text in markdown if text.lstrip().startswith("## Recap")]
    if len(recaps) != 1:
        problems.append("no single '## Recap' cell")
    elif len([line for line in recaps[0].splitlines() if line.lstrip().startswith(("- ", "* ", "1", "2", "3"))]) != 3:
        problems.append("the recap is not three lines")
    if not any(text.lstrip().startswith("## Try it") for text in markdown):
        problems.append("no '## Try it' cell")
    starters, checks = tagged(notebook, "exercise-starter"), tagged(notebook, "exercise-check")
    if len(starters) != 1 or len(checks) != 1:
        problems.append(f"{len(starters)} starter and {len(checks)} check cells (one of each expected)")
    elif not starters[0] < checks[0]:
        problems.append("the check comes before the starter")
    elif "raises-exception" not in notebook["cells"][checks[0]]["metadata"]["tags"]:
        problems.append("the check is not tagged raises-exception (it fails until the learner solves it)")
    if not solution.is_file():
        problems.append(f"no solution file {solution.relative_to(NOTEBOOKS.parent)}")
    return problems


def with_solution(notebook: dict, solution: str) -> tuple[dict, int, int]:
    """A copy of `notebook` where, after the (failing) check, the solution runs and then the check once more."""
    nb = copy.deepcopy(notebook)
    check = tagged(nb, "exercise-check")[0]
    again = copy.deepcopy(nb["cells"][check])
    again["metadata"]["tags"] = [t for t in again["metadata"]["tags"] if t != "raises-exception"]
    again["outputs"] = []
    again["id"] = "exercise-check-again"
    solved = {"cell_type": "code", "execution_count": None, "id": "exercise-solution",
              "metadata": {"tags": ["exercise-solution"]}, "outputs": [], "source": solution}
    nb["cells"][check + 1:check + 1] = [solved, again]
    return nb, check, check + 2


def errors(cell: dict) -> list[str]:
    return [f"{o['ename']}: {o['evalue']}" for o in cell.get("outputs", []) if o["output_type"] == "error"]


def printed(cell: dict) -> str:
    return "".join("".join(o["text"]) for o in cell.get("outputs", []) if o["output_type"] == "stream")


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_each_notebook_closes_with_a_recap_and_an_exercise(path: Path) -> None:
    problems = exercise_problems(json.loads(path.read_text()), SOLUTIONS / f"{path.stem}.py")
    assert not problems, f"{path.name}: " + "; ".join(problems)


def test_the_convention_check_can_fail() -> None:
    bare = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# A notebook"}]}
    assert len(exercise_problems(bare, SOLUTIONS / "missing.py")) == 4


def test_every_starter_fails_its_check_and_every_solution_passes_it(workbook_env: Path) -> None:
    """The whole workbook in order (later notebooks need the earlier ones' objects), each exercise tried twice."""
    import nbclient
    import nbformat

    assert os.environ["OBOKIT_STATE_DIR"] == str(workbook_env)
    outcomes = {}
    for path in notebooks():
        notebook = json.loads(path.read_text())
        solution = SOLUTIONS / f"{path.stem}.py"
        assert not exercise_problems(notebook, solution), f"{path.name} has no complete exercise"
        nb, starter_check, solved_check = with_solution(notebook, solution.read_text())
        run = nbformat.reads(json.dumps(nb), as_version=4)
        nbclient.NotebookClient(run, timeout=180, kernel_name="python3",
                                resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
        outcomes[path.stem] = (errors(run.cells[starter_check]), errors(run.cells[solved_check]),
                               printed(run.cells[solved_check]))
    print("\n" + "\n".join(f"{name:26} starter: {(fail or ['passed?!'])[0][:70]}" for name, (fail, _, _) in outcomes.items()))
    assert not [name for name, (fail, _, _) in outcomes.items() if not fail], "an untouched starter passed its check"
    unsolved = {name: after for name, (_, after, _) in outcomes.items() if after}
    assert not unsolved, f"a solution did not pass its check: {unsolved}"
    assert all(SOLVED_MARK in out for _, _, out in outcomes.values()), "a check passed without saying Solved"
