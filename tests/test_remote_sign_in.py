"""A tenant sign-in from a kernel whose browser is not where the learner is: the link is printed, the answer is caught."""

from __future__ import annotations

import socket
import threading

import httpx
import pytest

from obokit.tenant.target import _browser_sign_in


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_authorize_link_is_printed_and_the_forwarded_answer_is_caught(monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BROWSER", "true")  # a kernel with no browser to open: `true` does nothing
    redirect = f"http://localhost:{free_port()}/auth/callback"
    authorize = "https://login.microsoftonline.com/t/oauth2/v2.0/authorize?client_id=c&state=s"
    result: dict[str, str] = {}
    sign_in = threading.Thread(target=lambda: result.update(url=_browser_sign_in(authorize, redirect, timeout=20)))
    sign_in.start()
    for _ in range(100):  # the learner opens the printed link; Entra redirects through the forwarded port
        if authorize in capsys.readouterr().out:
            break
        threading.Event().wait(0.05)
    else:
        pytest.fail("the authorize link was not printed")
    assert httpx.get(f"{redirect}?code=abc&state=s").status_code == 200
    sign_in.join(10)
    assert result["url"] == f"{redirect}?code=abc&state=s"
