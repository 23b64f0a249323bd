"""A headless stand-in for the learner's browser: follows redirects and submits sign-in forms.

It drives the same pages a person sees (FastMCP's consent page, the emulator's account
picker), so tests and notebooks exercise the real interactive flow without a browser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
from mcp.shared.auth import AuthorizationCodeResult

APPROVE_VALUES = ("accept", "approve", "allow", "yes")
MAX_STEPS = 20
# A loopback callback, as a desktop MCP client registers one. Nothing listens on it: the headless
# browser stops at the redirect instead of following it.
LOOPBACK_REDIRECT_URI = "http://127.0.0.1:8765/callback"


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    buttons: list[tuple[str, str]] = field(default_factory=list)  # (name, value) of submit buttons
    radios: dict[str, list[str]] = field(default_factory=dict)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(action=a.get("action", ""), method=a.get("method", "get").lower()))
        elif not self.forms:
            return
        elif tag == "input":
            kind, name = a.get("type", "text").lower(), a.get("name")
            if not name:
                return
            if kind == "radio":
                self.forms[-1].radios.setdefault(name, []).append(a.get("value", ""))
                if "checked" in a:
                    self.forms[-1].fields[name] = a.get("value", "")
            elif kind == "submit":
                self.forms[-1].buttons.append((name, a.get("value", "")))
            elif kind != "checkbox" or "checked" in a:
                self.forms[-1].fields[name] = a.get("value", "")
        elif tag == "button" and a.get("name") and a.get("type", "submit") == "submit":
            self.forms[-1].buttons.append((a["name"], a.get("value", "")))


def parse_forms(html: str) -> list[Form]:
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


class _FormPostResult(Exception):
    """Carries the final form_post callback out of `_submit`."""


class SignInError(RuntimeError):
    """The sign-in ended on an error page or an error redirect."""


def code_result(callback_url: str) -> AuthorizationCodeResult:
    """The authorization code (with state and iss) of the redirect a sign-in ended on; `SignInError` if it has none."""
    query = {k: v[0] for k, v in parse_qs(urlsplit(callback_url).query).items()}
    if "code" not in query:
        raise SignInError(f"sign-in returned no code: {query.get('error')}: {query.get('error_description')}")
    return AuthorizationCodeResult(code=query["code"], state=query.get("state"), iss=query.get("iss"))


class HeadlessBrowser:
    """Follows an authorization URL to the client's redirect URI, signing in as `account`.

    Example::

        browser = HeadlessBrowser(account="bruno@obokitdemo.onmicrosoft.com")
        callback_url = await browser.sign_in(authorize_url, redirect_uri="http://localhost:5173/callback")
    """

    def __init__(self, account: str, *, client: httpx.AsyncClient | None = None) -> None:
        self.account = account
        self._client = client
        self.steps: list[str] = []  # "METHOD origin/path -> status" of each page visited, for display
        self._redirect_uri: str | None = None

    async def sign_in(self, url: str, *, redirect_uri: str) -> str:
        """Return the final redirect to `redirect_uri` (with `code` and `state`), without requesting it."""
        self._redirect_uri = redirect_uri
        if self._client is not None:  # the caller's client (and its cookies): the caller closes it
            return await self._walk(self._client, url)
        async with httpx.AsyncClient(timeout=30) as client:
            return await self._walk(client, url)

    async def _walk(self, client: httpx.AsyncClient, url: str) -> str:
        redirect_uri = self._redirect_uri
        assert redirect_uri is not None
        self.steps = []
        response = await client.get(url)
        for _ in range(MAX_STEPS):
            request = response.request
            self.steps.append(f"{request.method} {request.url.copy_with(query=None)} -> {response.status_code}")
            if response.is_redirect:
                location = urljoin(str(response.url), response.headers["location"])
                if location.startswith(redirect_uri):
                    if "error=" in location and "code=" not in location:
                        raise SignInError(f"sign-in failed: {location}")
                    return location
                response = await client.get(location)
                continue
            if response.status_code >= 400:
                raise SignInError(f"sign-in page answered {response.status_code}: {_text(response)}")
            try:
                response = await self._submit(client, response)
            except _FormPostResult as result:
                return str(result)
        raise SignInError(f"no redirect to {redirect_uri} after {MAX_STEPS} steps")

    async def _submit(self, client: httpx.AsyncClient, page: httpx.Response) -> httpx.Response:
        forms = parse_forms(page.text)
        if not forms:
            raise SignInError(f"page at {page.url} has no form to submit: {_text(page)}")
        form = forms[0]
        data = dict(form.fields)
        target = urljoin(str(page.url), form.action or str(page.url))
        if self._redirect_uri and target.startswith(self._redirect_uri):
            # response_mode=form_post: the page posts the result to the client; hand it over as a query.
            raise _FormPostResult(target + ("&" if "?" in target else "?") + urlencode(data))
        for name, options in form.radios.items():
            chosen = next((o for o in options if o.lower() == self.account.lower()), None)
            if chosen is None:
                raise SignInError(f"account {self.account!r} is not offered; choices: {options}")
            data[name] = chosen
        approve = next(((n, v) for n, v in form.buttons if v.lower() in APPROVE_VALUES), None)
        if approve:
            data[approve[0]] = approve[1]
        if form.method == "post":
            return await client.post(target, data=data)
        return await client.get(target, params=data)


def _text(response: httpx.Response) -> str:
    return " ".join(response.text.split())[:300]
