"""`obokit.tenant.consistency.until_replicated`: retries exactly the answers of a replica that lags behind, visibly."""

from __future__ import annotations

import pytest
from azure.core.exceptions import ClientAuthenticationError

from obokit.tenant.consistency import NotReplicated, until_replicated
from obokit.server.obo import OboError


def answers(*outcomes):
    """An attempt that gives `outcomes` one by one (raising the exceptions), counting its calls."""
    calls = []

    def attempt():
        calls.append(1)
        outcome = outcomes[len(calls) - 1]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return attempt, calls


def entra(code: int) -> dict:
    return {"error": "invalid_grant", "error_codes": [code], "error_description": f"AADSTS{code}: ..."}


@pytest.mark.parametrize("lagging", [
    entra(65001), entra(700016), entra(7000229), entra(7000215),
    OboError(entra(65001), status=400),
    ClientAuthenticationError("AADSTS7000215: Invalid client secret provided."),
])
async def test_a_lagging_replica_is_retried_until_the_write_shows(lagging, capsys) -> None:
    attempt, calls = answers(lagging, {"access_token": "t"})
    assert await until_replicated(attempt, what="the grant", first_wait=0.01) == {"access_token": "t"}
    assert len(calls) == 2
    out = capsys.readouterr().out
    assert "the grant: not replicated yet (AADSTS" in out and "the grant: in place after 2 attempts" in out


async def test_other_answers_come_back_at_once(capsys) -> None:
    attempt, calls = answers(entra(50013))
    assert (await until_replicated(attempt, what="x", first_wait=0.01))["error_codes"] == [50013]
    attempt, calls = answers(ValueError("a bug"))
    with pytest.raises(ValueError):
        await until_replicated(attempt, what="x", first_wait=0.01)
    assert len(calls) == 1 and capsys.readouterr().out == ""


async def test_ready_adds_a_condition_and_async_attempts_work() -> None:
    tokens = iter([{"roles": []}, {"roles": ["Task.Write"]}])

    async def sign_in():
        return next(tokens)

    token = await until_replicated(sign_in, what="the role", ready=lambda t: "Task.Write" in t["roles"], first_wait=0.01)
    assert token == {"roles": ["Task.Write"]}


async def test_it_gives_up_after_the_timeout() -> None:
    attempt, calls = answers(*[entra(65001)] * 50)
    with pytest.raises(NotReplicated, match="the grant: still not replicated after 0 s .AADSTS65001"):
        await until_replicated(attempt, what="the grant", timeout=0.05, first_wait=0.02, max_wait=0.02)
    assert 1 < len(calls) < 10
