"""The program `BROWSER` names in the rehearsal's kernels: it signs in over HTTP, as the plan says.

`webbrowser.open(url)` runs it with the URL as its only argument and waits for it to exit, and FastMCP
opens the browser before its callback listener is up; so it starts a detached copy of itself (`--drive`)
and exits at once. The copy walks the pages with `obokit.clients.headless.HeadlessBrowser` (FastMCP's consent page,
the sign-in page, Entra's consent page) with the run's cookie jar, so a session cookie of an earlier sign-in
is sent like a real browser sends it, then delivers the final redirect to the client's loopback listener,
retrying until it answers.

Who the sign-in is for: the `login_hint` of the URL opened, else the next entry of the notebook's plan
(`obokit.rehearsal.plan`). When the pages sign in anyone else (the session signed the last account in
without asking) the code is not delivered: the listener gets `error=access_denied` instead, so the notebook
fails at once, and a line in failures.jsonl says why.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

from .rundir import RunDir

DELIVERY_DEADLINE = 90.0  # seconds the final redirect is retried while nobody listens
WRAPPER_NAME = "obokit-scripted-browser"


def install(run_dir: Path, python: str = sys.executable) -> Path:
    """Write the one-executable wrapper that `BROWSER` names (webbrowser passes no arguments but the URL)."""
    wrapper = Path(run_dir) / WRAPPER_NAME
    wrapper.write_text(f'#!/bin/sh\nexec "{python}" -m obokit.rehearsal.scripted_browser --run-dir "{run_dir}" "$1"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return wrapper


def detach(run_dir: RunDir, url: str) -> None:
    """Start the driving copy in a session of its own and return (webbrowser is waiting for us to exit)."""
    with run_dir.browser_log.open("a") as log:
        subprocess.Popen(
            [sys.executable, "-m", "obokit.rehearsal.scripted_browser", "--run-dir", str(run_dir.path), "--drive", url],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True,
        )


def _query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


async def drive(run_dir: RunDir, url: str) -> None:
    """Sign in for whoever this authorization request is for, then hand the answer to the redirect URI."""
    from .signin import Outcome, walk_sign_in

    opened = _query(url)
    redirect_uri, state = opened.get("redirect_uri", ""), opened.get("state")
    try:
        with run_dir.lock():
            outcome = await walk_sign_in(run_dir, url, redirect_uri)
    except Exception as exc:  # noqa: BLE001 - the client must get an answer, and the test the reason
        outcome = Outcome(run_dir.read_state().get("notebook"), None, False, failure=f"{type(exc).__name__}: {exc}")
    run_dir.append("observed", outcome.record())
    if outcome.failure:
        run_dir.fail("browser", outcome.notebook, outcome.failure)
    answer = outcome.callback_url or _error_redirect(redirect_uri, state, outcome.failure or "no answer")
    if await deliver(answer, form_post=outcome.form_post) is None:
        run_dir.fail("browser", outcome.notebook, f"nobody listened on {redirect_uri} for {DELIVERY_DEADLINE:.0f} s")


def _error_redirect(redirect_uri: str, state: str | None, why: str) -> str:
    params = {"error": "access_denied", "error_description": f"scripted browser: {why}"}
    if state is not None:
        params["state"] = state
    return f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{urlencode(params)}"


async def deliver(callback_url: str, *, form_post: bool, deadline: float = DELIVERY_DEADLINE) -> int | None:
    """GET (or, for response_mode=form_post, POST) the callback until its listener answers; its status."""
    import httpx

    parts = urlsplit(callback_url)
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            try:
                if form_post:
                    base = parts._replace(query="").geturl()
                    response = await client.post(base, data=dict(parse_qsl(parts.query)))
                else:
                    response = await client.get(callback_url)
                return response.status_code
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
                if loop.time() > give_up:
                    return None
                await asyncio.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m obokit.rehearsal.scripted_browser")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--drive", action="store_true", help="(internal) the detached copy that signs in")
    parser.add_argument("url")
    args = parser.parse_args(argv)
    run_dir = RunDir(args.run_dir)
    if args.drive:
        asyncio.run(drive(run_dir, args.url))
    else:
        detach(run_dir, args.url)
    return 0


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main())
