"""Who each sign-in of the rehearsal is for: the script the scripted browser and person follow.

A browser sign-in is for the account its authorization request names (`login_hint`, in the URL the kernel
opened): `Target.sign_in` adds one. FastMCP's own `OAuth` client names nobody (its proxy forwards no
`login_hint`), so for those sign-ins the notebook's plan below says who, in the order they happen:
`sign_ins` first, then `every` for any further one. A sign-in with no hint and nothing left in the plan is
refused: the browser does not guess.

A device-code prompt names nobody either: `device_codes` says, in order, who enters the code; any further
prompt is answered by the admin (the workbook's own device-code sign-in), and the run's count of admin
prompts shows whether there was more than one.

Roles are "admin", "analyst" and "engineer" (the DEMO_*_UPN accounts of the tenant's .env).
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES = {"admin": "DEMO_ADMIN_UPN", "analyst": "DEMO_ANALYST_UPN", "engineer": "DEMO_ENGINEER_UPN"}
DEVICE_CODE_DEFAULT = "admin"


@dataclass(frozen=True)
class NotebookPlan:
    """The roles of one notebook's sign-ins without `login_hint`, and of its device-code prompts, in order."""

    sign_ins: tuple[str, ...] = ()
    every: str | None = None  # after `sign_ins`: every further unhinted sign-in is for this role
    device_codes: tuple[str, ...] = ()
    # Sign-in pages a demonstration shows twice on purpose (same account, server and client), with the reason
    expected_repeats: int = 0
    why_repeats: str = ""

    def sign_in(self, index: int) -> str | None:
        """The role of the `index`-th (0-based) unhinted sign-in, or None when the plan has none."""
        return self.sign_ins[index] if index < len(self.sign_ins) else self.every

    def device_code(self, index: int) -> str:
        return self.device_codes[index] if index < len(self.device_codes) else DEVICE_CODE_DEFAULT


# Keys are notebook names without ".ipynb"; a notebook missing here signs in nobody without a hint.
PLAN: dict[str, NotebookPlan] = {
    # FastMCP client sign-ins: the analyst to the minimal server, then to the workbook server.
    "03-server-in-the-kernel": NotebookPlan(every="analyst"),
    # The analyst to the hardened server, to a server that forgets its clients (twice: the point of that
    # section), and to the v1-token server.
    "03b-hostile-tokens": NotebookPlan(
        every="analyst", expected_repeats=1,
        why_repeats="the v1-token server refuses every token, so FastMCP's client signs in again: the pitfall shown"),
    "04-tokens": NotebookPlan(every="analyst"),
    # The analyst, then the engineer, on the finance-tool server written in 05's cells; again both on the
    # traced server (the analyst's call succeeds, the engineer's meets AADSTS65001).
    "05-obo-and-graph": NotebookPlan(sign_ins=("analyst", "engineer", "analyst", "engineer")),
    # The analyst (FastMCP's EntraOBOToken server); the engineer (the workbook server, where the analyst kept
    # 04's tokens); the analyst, then the engineer, on the blocking server.
    "05b-performance": NotebookPlan(
        sign_ins=("analyst", "engineer", "analyst", "engineer"), expected_repeats=1,
        why_repeats="05 ends with the engineer signed in, and a browser session stands for one account (the "
                    "emulator's, like a browser signed in to one account only): the analyst's MSAL sign-in, hinted, "
                    "shows the page again"),
    # The two people (analyst, engineer) on the workbook server with the role gate written in the notebook.
    "06-two-tiers": NotebookPlan(sign_ins=("analyst", "engineer")),
    "07-scale-out": NotebookPlan(every="analyst"),
    # The analyst's MSAL sign-in names her (login_hint); FastMCP's client, after the restart without a secret, may
    # sign in again (on the emulator a new kernel keeps no client tokens).
    "08-secretless": NotebookPlan(every="analyst"),
    # The analyst's FastMCP sign-ins to the proxy server (before and after its restart); MSAL's sign-in names her.
    "09-proxy-vs-direct": NotebookPlan(every="analyst"),
}


def plan_for(notebook: str) -> NotebookPlan:
    return PLAN.get(notebook, NotebookPlan())
