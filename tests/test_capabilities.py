"""Every capability of the two source articles is shown as real code in a notebook cell (issue 16, deliverable 1).

`tests/capability_manifest.py` maps each capability to a notebook and the API calls that must appear together in
one of its code cells. The first code cell holding all of them is the one that teaches it; no code cell before it
may use an obokit wrapper named in `not_before` (the taught code comes first, the helper for re-runs after).

    python -m pytest tests/test_capabilities.py
"""

from __future__ import annotations

import ast
import io
import json
import re
import tokenize
from pathlib import Path

import pytest
from capability_manifest import ARTICLES, CAPABILITIES, Call, Capability
from notebook_estimate import cell_source

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
OBOKIT = ROOT / "companion" / "obokit"


# ---------------------------------------------------------------------------------------------------- the checker


STARTER_TAG = "exercise-starter"  # an exercise's unfinished starter: never the cell that teaches a capability


def code_cells(notebook: dict, *, starters: bool = True) -> list[tuple[int, str]]:
    """(index in the notebook, source) of every code cell, in order (without exercise starters if asked)."""
    cells = []
    for index, cell in enumerate(notebook.get("cells", [])):
        if not starters and STARTER_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        if cell.get("cell_type") == "code":
            cells.append((index, cell_source(cell)))
    return cells


def _python(source: str) -> str:
    """The cell as Python: IPython magics and shell escapes become `pass` (same line numbers)."""
    return "\n".join("pass" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def without_comments(source: str) -> str:
    """The cell's source with `#` comments removed (string literals kept)."""
    lines = source.splitlines(keepends=True)
    try:
        comments = [token.start for token in tokenize.generate_tokens(io.StringIO(source).readline)
                    if token.type == tokenize.COMMENT]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return "".join(line for line in lines if not line.lstrip().startswith("#"))
    for row, col in comments:
        line = lines[row - 1]
        lines[row - 1] = line[:col] + ("\n" if line.endswith("\n") else "")
    return "".join(lines)


def _parse(source: str) -> ast.Module | None:
    try:
        return compile(_python(source), "<cell>", "exec", flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except SyntaxError:
        return None


def obokit_imports(cells: list[tuple[int, str]]) -> tuple[set[str], set[str], bool]:
    """Names imported from obokit anywhere in the notebook, the local names of imported obokit modules, and
    whether a `from obokit... import *` occurs."""
    names: set[str] = set()
    modules: set[str] = set()
    star = False
    for _, source in cells:
        tree = _parse(source)
        if tree is None:
            for match in re.finditer(r"^\s*from\s+obokit\S*\s+import\s+\(?([^)\n]*(?:\n[^)]*)*)\)?", source, re.M):
                names.update(n.split(" as ")[-1].strip() for n in match.group(1).replace("\n", ",").split(","))
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "obokit":
                for alias in node.names:
                    if alias.name == "*":
                        star = True
                    else:
                        names.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "obokit":
                        modules.add(alias.asname or alias.name.split(".")[0])
    return names - {""}, modules, star


def _root(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def wrappers_used(source: str, wrappers: tuple[str, ...], imported: tuple[set[str], set[str], bool]) -> set[str]:
    """The obokit wrappers among `wrappers` this cell uses: a name imported from obokit (an import alone is not a
    use), or an attribute of an imported obokit module. Comments and strings do not count."""
    names, modules, star = imported
    wanted = set(wrappers)
    tree = _parse(source)
    used: set[str] = set()
    if tree is None:  # not Python: look for the bare names outside comments and import lines
        code = "\n".join(line for line in without_comments(source).splitlines()
                         if not re.match(r"\s*(from\s+\S+\s+)?import\s", line))
        return {w for w in wanted if (star or w in names) and re.search(rf"(?<![\w.]){re.escape(w)}\b", code)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in wanted and (star or node.id in names):
            used.add(node.id)
        elif isinstance(node, ast.Attribute) and node.attr in wanted and _root(node) in modules | names:
            used.add(node.attr)
    return used


def has_call(source: str, call: Call) -> bool:
    return any(alternative in source for alternative in ((call,) if isinstance(call, str) else call))


def _show(call: Call) -> str:
    return repr(call) if isinstance(call, str) else " or ".join(map(repr, call))


def check(capability: Capability, notebook: dict) -> str | None:
    """None when the notebook shows the capability as required, else what is wrong."""
    where = f"capability {capability.describe()} is not shown as real code in notebook {capability.notebook}"
    cells = code_cells(notebook)
    stripped = [(index, without_comments(source)) for index, source in code_cells(notebook, starters=False)]
    for index, source in stripped:
        if all(has_call(source, call) for call in capability.calls):
            break
    else:
        wanted = ", ".join(_show(call) for call in capability.calls)
        if not stripped:
            return f"{where}: the notebook has no code cell (wanted one cell with all of {wanted})"
        best_index, best = max(stripped, key=lambda cell: sum(has_call(cell[1], call) for call in capability.calls))
        missing = ", ".join(_show(call) for call in capability.calls if not has_call(best, call))
        return (f"{where}: no code cell contains all of {wanted}; "
                f"the closest, cell [{best_index}], lacks {missing}")
    if capability.not_before:
        imported = obokit_imports(cells)
        for earlier_index, earlier in (cell for cell in cells if cell[0] < index):
            if used := wrappers_used(earlier, capability.not_before, imported):
                return (f"{where} before its obokit wrapper: cell [{earlier_index}] uses "
                        f"{', '.join(sorted(used))} before cell [{index}] shows the library code")
    return None


def load(stem: str) -> dict:
    return json.loads((NOTEBOOKS / f"{stem}.ipynb").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------- the manifest holds


@pytest.mark.parametrize("capability", CAPABILITIES, ids=[c.name for c in CAPABILITIES])
def test_capability_is_shown_as_real_code(capability: Capability) -> None:
    path = NOTEBOOKS / f"{capability.notebook}.ipynb"
    if not path.exists():
        pytest.fail(f"capability {capability.describe()} maps to notebook {capability.notebook}, which does not exist")
    if problem := check(capability, load(capability.notebook)):
        pytest.fail(problem)


def test_every_capability_notebook_exists() -> None:
    missing = sorted({c.notebook for c in CAPABILITIES if not (NOTEBOOKS / f"{c.notebook}.ipynb").exists()})
    assert not missing, f"the manifest names notebooks that do not exist: {', '.join(missing)}"


def test_the_manifest_is_well_formed() -> None:
    names = [c.name for c in CAPABILITIES]
    assert len(names) == len(set(names)), "capability names are unique (they are the test ids)"
    assert {c.article for c in CAPABILITIES} == set(ARTICLES), "every entry cites one of the two articles, both cited"
    for c in CAPABILITIES:
        assert c.calls and all(c.calls), f"{c.name}: at least one call, none empty"
        assert all(isinstance(call, str) or (call and all(isinstance(a, str) and a for a in call)) for call in c.calls)
        assert re.fullmatch(r"\d\d[a-z]?-[a-z0-9-]+", c.notebook), f"{c.name}: a notebook stem, not {c.notebook!r}"


def test_not_before_names_real_obokit_wrappers() -> None:
    """A `not_before` name that obokit does not define would never be found, and guard nothing."""
    source = "\n".join(p.read_text(encoding="utf-8") for p in OBOKIT.rglob("*.py"))
    defined = set(re.findall(r"^\s*(?:async\s+def|def|class)\s+(\w+)", source, re.M))
    unknown = sorted({w for c in CAPABILITIES for w in c.not_before} - defined)
    assert not unknown, f"not_before names no obokit function or class defines: {', '.join(unknown)}"


# ------------------------------------------------------------------------------------------- the checker itself


def notebook(*cells: tuple[str, str]) -> dict:
    return {"cells": [{"cell_type": kind, "source": source.splitlines(keepends=True)} for kind, source in cells]}


CONSENT = Capability("admin-consent-grant", "000_64be31a0983f777f.txt", "02-admin-consent",
                     ("oauth2_permission_grants.post(", "OAuth2PermissionGrant(", "AllPrincipals"),
                     ("ensure_admin_consent",))
IMPORTS = ("from msgraph.generated.models.o_auth2_permission_grant import OAuth2PermissionGrant\n"
           "from obokit.tenant.provisioning import ensure_admin_consent, find_service_principal\n")
TAUGHT = ("grant = await graph.oauth2_permission_grants.post(OAuth2PermissionGrant(\n"
          "    client_id=sp.id, consent_type=\"AllPrincipals\", resource_id=graph_sp.id, scope=\"User.Read\"))\n")
WRAPPED = "grant = await ensure_admin_consent(graph, sp, GRAPH_APP_ID, \"User.Read\")\n"


def test_checker_passes_the_taught_cell_before_the_wrapper() -> None:
    nb = notebook(("markdown", "# 02 · Admin consent"), ("code", IMPORTS), ("code", TAUGHT),
                  ("markdown", "From now on, for re-runs:"), ("code", WRAPPED))
    assert check(CONSENT, nb) is None


def test_checker_fails_when_no_cell_has_every_call() -> None:
    only_model = "grant = OAuth2PermissionGrant(consent_type=\"AllPrincipals\")\n"
    problem = check(CONSENT, notebook(("code", IMPORTS), ("code", only_model),
                                      ("markdown", "graph.oauth2_permission_grants.post( in prose is not code")))
    assert problem is not None and "is not shown as real code in notebook 02-admin-consent" in problem
    assert "lacks 'oauth2_permission_grants.post('" in problem


def test_checker_fails_when_the_wrapper_comes_first() -> None:
    problem = check(CONSENT, notebook(("code", IMPORTS), ("code", WRAPPED), ("code", TAUGHT)))
    assert problem is not None and "cell [1] uses ensure_admin_consent before cell [2]" in problem


def test_checker_ignores_comments_and_imports() -> None:
    commented = ("# obokit's ensure_admin_consent does graph.oauth2_permission_grants.post(OAuth2PermissionGrant())\n"
                 "print('AllPrincipals')\n")
    assert check(CONSENT, notebook(("code", IMPORTS), ("code", commented))) is not None  # a comment is not code
    assert check(CONSENT, notebook(("code", IMPORTS), ("code", commented), ("code", TAUGHT))) is None  # nor a use


def test_checker_counts_module_attributes_and_not_local_names() -> None:
    via_module = "from obokit.tenant import provisioning\nawait provisioning.ensure_admin_consent(graph, sp, g, s)\n"
    assert "ensure_admin_consent" in (check(CONSENT, notebook(("code", via_module), ("code", TAUGHT))) or "")
    local = "def ensure_admin_consent(): ...\nensure_admin_consent()\n"  # the notebook's own helper, not obokit's
    assert check(CONSENT, notebook(("code", local), ("code", TAUGHT))) is None


def test_checker_skips_exercise_starters() -> None:
    nb = notebook(("code", IMPORTS), ("code", TAUGHT))
    nb["cells"][1]["metadata"] = {"tags": [STARTER_TAG]}
    assert check(CONSENT, nb) is not None


def test_checker_alternatives_and_magics() -> None:
    obo = Capability("obo-inside-tool", "000_64be31a0983f777f.txt", "05-obo-and-graph",
                     ("@mcp.tool", "get_access_token(", ("acquire_token_on_behalf_of(", "OnBehalfOfCredential(")))
    tool = ("%load_ext autoreload\n@mcp.tool\nasync def whoami() -> str:\n    token = get_access_token()\n"
            "    async with OnBehalfOfCredential(tenant_id=t, client_id=c, client_secret=s,\n"
            "                                    user_assertion=token.token) as credential:\n"
            "        return (await credential.get_token('https://graph.microsoft.com/.default')).token[:3]\n")
    assert check(obo, notebook(("code", tool))) is None
    problem = check(obo, notebook(("code", tool.replace("OnBehalfOfCredential(", "Credential("))))
    assert problem is not None and "'acquire_token_on_behalf_of(' or 'OnBehalfOfCredential('" in problem
