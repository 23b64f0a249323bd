"""The scripted person at the keyboard: reads device-code prompts in the kernels' output and enters the codes.

Hooked to `obokit.workbook.run_all(on_output=...)`. A prompt is the text Entra (and the emulator) put in the
device-code answer, printed by azure-identity or by a notebook: "To sign in, use a web browser to open the
page URL and enter the code CODE to authenticate." The person opens URL in a browser of its own, kept for the
whole run (the device-code flow is for signing in on another device; it also keeps the one account the
emulator's session remembers in the scripted browser as the sign-ins left it), types the code, picks the
account the notebook's plan names for that prompt, and accepts whatever consent follows. The answer runs on
a thread of its own: `on_output` is called on nbclient's event loop, which must not wait for HTTP.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from urllib.parse import urljoin

import httpx

from ..clients.headless import APPROVE_VALUES, parse_forms
from .plan import plan_for
from .rundir import RunDir
from .signin import AADSTS, ACCOUNT_FIELD

PROMPT = re.compile(r"open the page (?P<url>\S+) and enter the code (?P<code>\S+) to authenticate")
CODE_FIELD = "user_code"
MAX_PAGES = 8
BROWSER = "person"  # the person's own cookie jar (`RunDir.cookie_jar`)
SESSIONS = "person_sessions"  # and the account its session signs in, per identity host, in state.json


class ScriptedPerson:
    """Answers device-code prompts seen in the kernels' output (`on_output`), as the plan says."""

    def __init__(self, run_dir: RunDir) -> None:
        self.run_dir = run_dir
        self._seen: set[str] = set()
        self._prompts: dict[str, int] = {}  # notebook -> prompts answered so far
        self._tail: dict[Path, str] = {}  # the end of each notebook's output: a prompt may come in two pieces
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def on_output(self, path: Path, text: str) -> None:
        """`run_all`'s hook: look for a prompt in `text` and answer each new code once, in the background."""
        with self._lock:
            tail = self._tail.get(path, "") + text
            self._tail[path] = tail[-2000:]
            for match in PROMPT.finditer(tail):
                url, code = match["url"], match["code"].rstrip(".")
                if code in self._seen:
                    continue
                self._seen.add(code)
                notebook = path.stem
                index = self._prompts.get(notebook, 0)
                self._prompts[notebook] = index + 1
                thread = threading.Thread(target=self.answer, args=(notebook, index, url, code),
                                          name=f"scripted-person-{code}", daemon=True)
                self._threads.append(thread)
                thread.start()

    def wait(self, timeout: float = 60) -> None:
        """Until every answer started so far is done."""
        for thread in list(self._threads):
            thread.join(timeout)

    def answer(self, notebook: str, index: int, url: str, code: str) -> None:
        """Enter `code` at `url` as the account the plan names for the `index`-th prompt of `notebook`."""
        role = plan_for(notebook).device_code(index)
        record = {"kind": "device_code", "notebook": notebook, "role": role, "rendered": 0, "consents": 0}
        try:
            with self.run_dir.lock():
                state = self.run_dir.read_state()
                account = state.get("accounts", {}).get(role, role)
                record["account"] = account
                signed_in = self._enter_code(url, code, account, record, state.setdefault(SESSIONS, {}))
                if signed_in:
                    state[SESSIONS][record["identity"]] = signed_in
                    self.run_dir.write_state(state)
            if signed_in is None or signed_in.lower() != account.lower():
                raise RuntimeError(f"the verification page signed in {signed_in or 'nobody we chose'}, not {account}")
            record["ok"] = True
        except Exception as exc:  # noqa: BLE001 - any breakdown is the rehearsal's failure, with its reason
            record["ok"] = False
            self.run_dir.fail("person", notebook, f"device code #{index + 1} ({role}): {type(exc).__name__}: {exc}")
        finally:
            self.run_dir.append("observed", record)

    def _enter_code(self, url: str, code: str, account: str, record: dict, sessions: dict[str, str]) -> str | None:
        """Fill in the verification page(s); returns the account picked (else the session's), notes pages seen."""
        jar = self.run_dir.cookie_jar(BROWSER)
        picked = None
        with httpx.Client(cookies=jar, timeout=30, follow_redirects=True) as client:
            page = client.get(url)
            record["identity"] = f"{page.url.scheme}://{page.url.netloc.decode()}"
            for _ in range(MAX_PAGES):
                if page.status_code >= 400:
                    shown = " ".join(page.text.split())[:200]
                    raise RuntimeError(f"the verification page answered {page.status_code}: {shown}")
                forms = parse_forms(page.text)
                if not forms:
                    break
                form = forms[0]
                data = dict(form.fields)
                if CODE_FIELD in data:
                    data[CODE_FIELD] = code
                if ACCOUNT_FIELD in form.radios:
                    record["rendered"] += 1
                    if account not in form.radios[ACCOUNT_FIELD]:
                        raise RuntimeError(f"{account} is not offered on the verification page")
                    data[ACCOUNT_FIELD] = picked = account
                elif CODE_FIELD not in data:
                    record["consents"] += 1
                approve = next(((n, v) for n, v in form.buttons if v.lower() in APPROVE_VALUES), None)
                if approve is None:  # "Need admin approval": nothing to accept
                    record["approvals"] = record.get("approvals", 0) + 1
                    shown = AADSTS.search(page.text)
                    raise RuntimeError(f"'Need admin approval' for {account}: {shown[0] if shown else 'no way to accept'}")
                data[approve[0]] = approve[1]
                target = urljoin(str(page.url), form.action or str(page.url))
                page = client.post(target, data=data) if form.method == "post" else client.get(target, params=data)
            else:
                raise RuntimeError(f"still a form to fill after {MAX_PAGES} pages")
        self.run_dir.save_cookies(jar)
        return picked or sessions.get(record["identity"])
