"""One browser sign-in of the rehearsal: who it is for, the pages walked, who the pages signed in.

Called by the scripted browser under the run folder's lock (it reads and writes the plan cursor, the
session and the cookie jar). The pages are walked by `obokit.clients.headless.HeadlessBrowser`; every response is
noted on the way (`PageLog`), and `read_walk` tells from them what a person would have seen: account
pickers rendered by the identity host, its consent pages, the account picked, or none (an automatic sign-in
by the session cookie, or by `login_hint`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import httpx

from ..clients.headless import APPROVE_VALUES, Form, HeadlessBrowser, SignInError, parse_forms
from .plan import ROLES, plan_for
from .rundir import RunDir

AUTHORIZE_PATH = "/oauth2/v2.0/authorize"  # the identity host's, as opposed to a FastMCP proxy's /authorize
ACCOUNT_FIELD = "account"  # the sign-in page's account choice
AADSTS = re.compile(r"AADSTS\d+:[^<]*")


@dataclass
class Page:
    """One response seen on the way: what was asked, what came back."""

    method: str
    url: str
    status: int
    location: str | None = None
    forms: list[Form] = field(default_factory=list)
    sent: dict[str, str] = field(default_factory=dict)  # the form fields of a POST
    error: str | None = None  # an AADSTS message shown on the page


class PageLog:
    """An httpx response hook that keeps a `Page` for every response of the walk."""

    def __init__(self) -> None:
        self.pages: list[Page] = []

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        request = response.request
        sent = dict(parse_qsl(request.content.decode(errors="replace"))) if request.method == "POST" else {}
        location = urljoin(str(response.url), response.headers["location"]) if response.is_redirect else None
        html = "html" in response.headers.get("content-type", "")
        shown = AADSTS.search(response.text) if html else None
        self.pages.append(Page(request.method, str(request.url), response.status_code, location,
                               parse_forms(response.text) if html else [], sent, shown[0] if shown else None))


@dataclass
class Walk:
    """What the identity host showed and did during one sign-in."""

    identity: str | None = None  # origin of the identity host
    server: str | None = None  # origin of the redirect URI the identity host answers to (the server's URL)
    hint: str | None = None  # login_hint the identity host got
    pickers: int = 0  # sign-in pages offering accounts
    consents: int = 0  # pages with a form but no account to choose (consent)
    approvals: list[str] = field(default_factory=list)  # "Need admin approval" pages: a form one cannot accept
    picked: str | None = None  # the account chosen on a picker
    form_post: bool = False  # the last page posts the answer to the client's redirect URI


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else None


def read_walk(pages: list[Page], redirect_uri: str) -> Walk:
    """What a person would have seen of the identity host in `pages`."""
    walk = Walk()
    for page in pages:
        if urlsplit(page.url).path.endswith(AUTHORIZE_PATH) and page.method == "GET":
            query = dict(parse_qsl(urlsplit(page.url).query))
            walk.identity, walk.server = _origin(page.url), _origin(query.get("redirect_uri", ""))
            walk.hint = query.get("login_hint") or walk.hint
        if walk.identity is None or not page.url.startswith(walk.identity):
            continue
        if page.method == "POST" and page.sent.get(ACCOUNT_FIELD):
            walk.picked = page.sent[ACCOUNT_FIELD]
        form = page.forms[0] if page.forms else None
        if form is None:
            continue
        action = urljoin(page.url, form.action or page.url)
        if action.startswith(redirect_uri):
            walk.form_post = True
        elif ACCOUNT_FIELD in form.radios:
            walk.pickers += 1
        elif not any(value.lower() in APPROVE_VALUES for _, value in form.buttons):
            walk.approvals.append(page.error or f"a page at {page.url.split('?')[0]} offers nothing to accept")
        elif action.startswith(walk.identity):
            walk.consents += 1
    return walk


@dataclass
class Outcome:
    """One sign-in as the scripted browser saw it; `failure` says why the code was not handed over."""

    notebook: str | None
    expected: str | None
    hinted: bool
    client: str | None = None  # client_id of the URL the kernel opened (at a FastMCP proxy: its registration)
    signed_in: str | None = None
    walk: Walk = field(default_factory=Walk)
    callback_url: str | None = None  # what to deliver to the redirect URI (None: an error redirect)
    failure: str | None = None

    @property
    def form_post(self) -> bool:
        return self.walk.form_post

    def record(self) -> dict[str, Any]:
        walk = asdict(self.walk)
        return {"kind": "sign_in", "notebook": self.notebook, "expected": self.expected, "hinted": self.hinted,
                "account": self.signed_in, "server": walk["server"], "client": self.client,
                "identity": walk["identity"],
                "rendered": walk["pickers"], "consents": walk["consents"], "approvals": len(walk["approvals"]),
                "auto": self.signed_in is not None and walk["picked"] is None, "ok": self.failure is None}


def _expected(state: dict[str, Any], url: str) -> tuple[str | None, bool, str | None]:
    """(account, from login_hint?, why none) for the sign-in of `url`; consumes a plan entry if unhinted."""
    hint = dict(parse_qsl(urlsplit(url).query)).get("login_hint")
    if hint:
        return hint, True, None
    notebook = state.get("notebook") or "?"
    cursors = state.setdefault("sign_in_cursor", {})
    index = cursors.get(notebook, 0)
    cursors[notebook] = index + 1
    role = plan_for(notebook).sign_in(index)
    if role is None:
        return None, False, f"unhinted sign-in #{index + 1} in {notebook}: the plan names nobody for it"
    return state.get("accounts", {}).get(role) or role, False, None


async def walk_sign_in(run_dir: RunDir, url: str, redirect_uri: str) -> Outcome:
    """Walk the pages of `url` for its planned account (call under `run_dir.lock()`)."""
    state = run_dir.read_state()
    expected, hinted, why = _expected(state, url)
    client_id = dict(parse_qsl(urlsplit(url).query)).get("client_id")
    outcome = Outcome(state.get("notebook"), expected, hinted, client=client_id, failure=why)
    if expected is None:
        run_dir.write_state(state)
        return outcome
    jar, log = run_dir.cookie_jar(), PageLog()
    async with httpx.AsyncClient(cookies=jar, timeout=30, event_hooks={"response": [log]}) as client:
        try:
            outcome.callback_url = await HeadlessBrowser(expected, client=client).sign_in(url, redirect_uri=redirect_uri)
        except SignInError as error:
            last = log.pages[-1] if log.pages else None
            if last is not None and last.location and last.location.startswith(redirect_uri):
                outcome.callback_url = last.location  # an error redirect: the client must see it, as in a browser
            else:
                outcome.failure = f"the sign-in stopped: {error}"
    run_dir.save_cookies(jar)
    outcome.walk = walk = read_walk(log.pages, redirect_uri)
    sessions = state.setdefault("sessions", {})
    outcome.signed_in = walk.picked or walk.hint or (sessions.get(walk.identity) if walk.identity else None)
    if walk.identity and outcome.signed_in:
        sessions[walk.identity] = outcome.signed_in
    outcome.failure = outcome.failure or refusal(walk, expected, outcome.signed_in)
    if outcome.failure is not None:
        outcome.callback_url = None
    run_dir.write_state(state)
    return outcome


def refusal(walk: Walk, expected: str, signed_in: str | None) -> str | None:
    """Why the code of this walk must not reach the client (None: it may)."""
    if walk.approvals:
        return f"'Need admin approval' for {signed_in or expected}: {walk.approvals[0]}"
    if walk.hint and walk.hint.lower() != expected.lower():
        return f"the identity host was asked for {walk.hint}, but this sign-in is for {expected}"
    if walk.identity and (signed_in or "").lower() != expected.lower():
        return (f"the page signed in {signed_in or 'an account this browser never chose'} without showing an "
                f"account picker (session cookie), but this sign-in is for {expected}")
    return None


def accounts_from_env(env: dict[str, str]) -> dict[str, str]:
    """{role: UPN} from a tenant .env's DEMO_*_UPN keys."""
    return {role: env[key] for role, key in ROLES.items() if env.get(key)}
