"""Waiting for Entra's directory to catch up with a write: one bounded, visible retry.

Entra ID and Microsoft Graph are eventually consistent. Right after an app, a service principal, a
secret, a consent grant or an app role assignment is created, other replicas of the token endpoint and
of Graph may not know it yet, for seconds, sometimes minutes (e.g. a service principal for an app created
a moment before: 400 "The appId '…' of the service principal does not reference a valid application
object.", learn.microsoft.com/answers/questions/5883620; Terraform's azurerm provider retries new role
assignments for minutes, terraform-provider-azurerm#1647). Meanwhile they answer as if it did not exist:

    AADSTS700016  the application was not found in the directory
    AADSTS7000229 the application has no service principal
    AADSTS7000222 the app's first secret is not usable yet ("keys are expired")
    AADSTS7000215 the (new) client secret is invalid
    AADSTS700027  the new certificate is unknown ("The key was not found")
    AADSTS70021   no federated identity credential matches yet (Microsoft's workload identity federation docs:
                  a new federated credential takes a few minutes to propagate)
    AADSTS65001   no consent
    Graph 404     Request_ResourceNotFound
    Graph 400     NoBackingApplicationObject (a service principal for a new app)

and a token issued too early lacks a role just assigned. `until_replicated(attempt, what=...)` runs
`attempt()` again on exactly those answers, waiting a little longer each time, for at most `timeout`
seconds, and prints what it is waiting for. Any other answer is returned (or raised) at once.

Each attempt must build a new client: MSAL answers a request identical to one that failed with HTTP 400
from its cache for 60 seconds, without asking Entra again.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar

__all__ = ["REPLICATION_CODES", "NotReplicated", "until_replicated"]

T = TypeVar("T")

REPLICATION_CODES = {
    700016: "the application",
    7000229: "the service principal",
    7000222: "the first client secret",
    7000215: "the new client secret",
    700027: "the new certificate",
    70021: "the new federated identity credential",
    700211: "the new federated identity credential",
    700212: "the new federated identity credential",
    700213: "the new federated identity credential",
    65001: "the consent grant",
}
_AADSTS = re.compile(r"AADSTS(\d+)")


class NotReplicated(TimeoutError):
    """The directory did not show the write within the timeout."""


def _pending_code(outcome: Any, lagging: Collection[int]) -> str | None:
    """`AADSTS…`/`Graph 404` if `outcome` (a result or an exception) is an answer of a replica that lags behind."""
    if isinstance(outcome, dict):  # MSAL's result dicts
        codes = [c for c in outcome.get("error_codes") or [] if c in lagging]
        return f"AADSTS{codes[0]}" if codes else None
    if isinstance(outcome, BaseException):
        code = getattr(outcome, "code", None)  # obokit.server.obo.OboError
        if isinstance(code, int) and code in lagging:
            return f"AADSTS{code}"
        status = getattr(outcome, "response_status_code", None)  # msgraph-sdk's ODataError
        if status == 404:
            return "Graph 404"
        message = f"{outcome} {getattr(getattr(outcome, 'error', None), 'message', '') or ''}"
        if status == 400 and "does not reference a valid application object" in message:
            return "Graph 400 NoBackingApplicationObject"
        found = [int(c) for c in _AADSTS.findall(str(outcome)) if int(c) in lagging]
        return f"AADSTS{found[0]}" if found else None
    return None


async def until_replicated(
    attempt: Callable[[], T] | Callable[[], Awaitable[T]],
    *,
    what: str,
    ready: Callable[[T], bool] | None = None,
    timeout: float = 120,
    first_wait: float = 1,
    max_wait: float = 10,
    lagging_codes: Collection[int] = tuple(REPLICATION_CODES),
) -> T:
    """`attempt()` until Entra and Graph know about `what`; its first answer that is not a replica lagging behind.

    `attempt` may be sync (run in a worker thread) or async, and should build its clients itself. `ready(result)`
    adds a condition of your own (e.g. "the token has the new role"). `lagging_codes`: the AADSTS codes to wait
    out (all of `REPLICATION_CODES` by default; fewer when one of them is the answer you expect). Raises
    `NotReplicated` after `timeout`.
    """
    deadline, wait, tries = time.monotonic() + timeout, first_wait, 0
    while True:
        tries += 1
        try:
            result: Any = await attempt() if inspect.iscoroutinefunction(attempt) else await asyncio.to_thread(attempt)
            if inspect.isawaitable(result):  # e.g. `lambda: graph.applications.by_application_id(i).get()`
                result = await result
            outcome: Any = result
        except Exception as error:  # noqa: BLE001 - classified below; anything else is re-raised
            outcome = error
        lagging = _pending_code(outcome, lagging_codes)
        if lagging is None and not isinstance(outcome, BaseException) and ready is not None and not ready(outcome):
            lagging = "not ready"
        if lagging is None:
            if tries > 1:
                print(f"{what}: in place after {tries} attempts")
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        if time.monotonic() + wait > deadline:
            raise NotReplicated(f"{what}: still not replicated after {timeout:.0f} s ({lagging})")
        print(f"{what}: not replicated yet ({lagging}); trying again in {wait:.0f} s")
        await asyncio.sleep(wait)
        wait = min(wait * 2, max_wait)
