"""obokit.workbook's pre-warmed kernels: the imports ran before the notebook, nothing else of them shows."""

from __future__ import annotations

from pathlib import Path

import nbformat

from obokit.workbook import Prewarmed, run_notebook


def test_a_prewarmed_kernel_runs_the_notebook_as_a_fresh_one(tmp_path: Path) -> None:
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import sys, os\nprint('msal' in sys.modules, os.getcwd() == %r)" % str(tmp_path)),
        nbformat.v4.new_code_cell("print(len(Out), 'User' in dir())"),
    ])
    path = tmp_path / "probe.ipynb"
    nbformat.write(notebook, path)
    error = run_notebook(path, timeout=120, save_dir=tmp_path / "out",
                         prewarmed=Prewarmed(path, code="import msal\nfrom msal import TokenCache as User"))
    assert error is None
    ran = nbformat.read(tmp_path / "out" / "probe.ipynb", as_version=4)
    outputs = [[o.get("text") for o in cell.outputs] for cell in ran.cells]
    # The prewarm's import is there (so is its cwd), yet it left no name, no output, no execution count behind.
    assert outputs == [["True True\n"], ["0 False\n"]]
    assert [cell.execution_count for cell in ran.cells] == [1, 2]
