"""How long a learner needs for a notebook: reading its prose, running and reading its code.

The rule (issue 16): words of prose (markdown cells) at 200 per minute, plus one minute per code cell, plus three
seconds per non-blank line of code. Outputs are not counted: a learner reads them while the minute per cell runs.

    python tests/notebook_estimate.py            # a line per notebook, the core path and the deep dives
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
WORDS_PER_MINUTE = 200
MINUTES_PER_CODE_CELL = 1.0
SECONDS_PER_CODE_LINE = 3.0
DEEP_DIVE_MARK = re.compile(r"\bdeep dive\b", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z0-9][\w'’.-]*")


@dataclass(frozen=True)
class Estimate:
    name: str
    words: int
    code_cells: int
    code_lines: int
    deep_dive: bool

    @property
    def minutes(self) -> float:
        return (self.words / WORDS_PER_MINUTE + self.code_cells * MINUTES_PER_CODE_CELL
                + self.code_lines * SECONDS_PER_CODE_LINE / 60)


def cell_source(cell: dict) -> str:
    """A cell's source as one string (notebooks store it as a list of lines or a string)."""
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def estimate(notebook: dict, name: str = "") -> Estimate:
    """The estimate of one notebook (its JSON as a dict). A deep dive says so in its first cell."""
    cells = notebook.get("cells", [])
    prose = [cell_source(c) for c in cells if c.get("cell_type") == "markdown"]
    code = [cell_source(c) for c in cells if c.get("cell_type") == "code"]
    words = sum(len(_WORD.findall(text)) for text in prose)
    lines = sum(1 for text in code for line in text.splitlines() if line.strip())
    first = cell_source(cells[0]) if cells else ""
    return Estimate(name, words, len(code), lines, bool(DEEP_DIVE_MARK.search(first)))


def estimate_all(folder: Path = NOTEBOOKS) -> list[Estimate]:
    return [estimate(json.loads(p.read_text()), p.stem) for p in sorted(folder.glob("*.ipynb"))]


def report(estimates: list[Estimate]) -> str:
    lines = [f"{e.name:24} {e.minutes:6.1f} min  ({e.words} words, {e.code_cells} code cells, {e.code_lines} code lines)"
             f"{'  deep dive' if e.deep_dive else ''}" for e in estimates]
    core = sum(e.minutes for e in estimates if not e.deep_dive)
    deep = sum(e.minutes for e in estimates if e.deep_dive)
    lines.append(f"core path {core:.0f} min, deep dives {deep:.0f} min, all {core + deep:.0f} min")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(estimate_all(Path(sys.argv[1]) if len(sys.argv) > 1 else NOTEBOOKS)))
