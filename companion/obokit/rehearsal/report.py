"""The rehearsal's result: one row per notebook, the run's totals, and the two rules the run must keep."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .events import Tally
from .plan import plan_for


@dataclass
class NotebookResult:
    """How one notebook went: its error (None if every cell ran), what the scripts refused, the counts."""

    name: str
    error: str | None
    failures: list[str] = field(default_factory=list)  # script refusals and forbidden imports
    tally: Tally = field(default_factory=Tally)

    @property
    def passed(self) -> bool:
        return self.error is None and not self.failures


@dataclass
class Report:
    profile: str  # e.g. "tenant profile"
    notebooks: list[NotebookResult] = field(default_factory=list)

    @property
    def admin_device_codes(self) -> int:
        return sum(n.tally.admin_device_codes for n in self.notebooks)

    def repeated_sign_ins(self) -> dict[tuple[str, str], int]:
        """(account, server URL) pairs whose sign-in page was rendered more than once in the run for the same
        client, beyond the repeats a notebook's plan declares (`NotebookPlan.expected_repeats`): a server started
        later on a port an earlier one had freed gets a client registration of its own, and is another server."""
        allowed = {n.name: plan_for(n.name).expected_repeats for n in self.notebooks}
        seen: Counter = Counter()
        repeated = {}
        for n in self.notebooks:  # a repeat is excused by the notebook where the page shows again
            for a, server, client in n.tally.sign_ins:
                key = (a.lower(), server, client)
                seen[key] += 1
                if seen[key] > 1:
                    if allowed[n.name] > 0:
                        allowed[n.name] -= 1
                    else:
                        repeated[key[:2]] = seen[key]
        return repeated

    @property
    def ok(self) -> bool:
        return (all(n.passed for n in self.notebooks) and self.admin_device_codes == 1
                and not self.repeated_sign_ins())

    def lines(self) -> list[str]:
        """The table, the failures and the two rules, as printed."""
        head = (f"{'notebook':26} {'result':6} {'device codes':12} {'pages':5} {'auto':4} {'consents':8}  "
                "sign-ins (account @ server)")
        out = [f"rehearsal on the emulator's {self.profile} (counts from: "
               f"{', '.join(sorted({n.tally.source for n in self.notebooks})) or '-'})", head]
        for n in self.notebooks:
            t = n.tally
            pairs = [f"{a} @ {s}" for a, s, _ in t.sign_ins] + [f"{a} @ {s} (auto)" for a, s, _ in t.auto_sign_ins]
            codes = f"{t.device_codes} ({t.admin_device_codes} admin)"
            out.append(f"{n.name:26} {'PASS' if n.passed else 'FAIL':6} {codes:12} {t.pages:5} {t.auto:4} {t.consents:8}  "
                       + ("; ".join(pairs) or "-"))
        for n in self.notebooks:
            for problem in ([n.error] if n.error else []) + n.failures:
                out.append(f"  {n.name}: {problem}")
            if n.tally.note:
                out.append(f"  {n.name} (note): {n.tally.note}")
            if n.tally.approvals:
                out.append(f"  {n.name} (note): {n.tally.approvals} 'Need admin approval' page(s)")
        repeated = self.repeated_sign_ins()
        out.append(f"admin device-code prompts in the run: {self.admin_device_codes} (must be 1)")
        for n in self.notebooks:
            if plan_for(n.name).expected_repeats:
                out.append(f"  {n.name} (expected): {plan_for(n.name).expected_repeats} repeated sign-in page(s): "
                           f"{plan_for(n.name).why_repeats}")
        out.append("sign-in pages rendered twice for the same (account, server URL, client): "
                   + (", ".join(f"{a} @ {s} x{c}" for (a, s), c in repeated.items()) or "none"))
        out.append("REHEARSAL PASSED" if self.ok else "REHEARSAL FAILED")
        return out


def cell_error(executed: Any) -> str | None:
    """'cell N: Ename: value' of the first cell of an executed notebook (nbformat) that raised."""
    for index, cell in enumerate(executed.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                value = " ".join(str(output.get("evalue", "")).split())
                return f"cell {index}: {output.get('ename')}: {value[:600]}"
    return None


def cell_of(executed: Any, execution_count: int | None) -> str:
    """The index of the cell that ran as In[`execution_count`] in an executed notebook ("?" if unknown)."""
    for index, cell in enumerate(executed.cells if executed is not None else []):
        if execution_count is not None and cell.get("execution_count") == execution_count:
            return str(index)
    return f"? (In[{execution_count}])"
