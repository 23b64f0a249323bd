"""Per-notebook counts of the run: device-code prompts, rendered sign-in pages, automatic sign-ins, consent pages.

The counts come from the standalone emulator's event log, `GET /_emulator/events?since=N` on the identity
host (`{"events": [{"seq", "kind", "client_id", "account", ...}], "last_seq": N}`), read after each notebook.
The log names no redirect URI, so the (account, server URL) of each sign-in comes from the scripted
browser's observations; where the log and the observations disagree on the number of sign-in pages, the
row says so. Without the route, every count comes from the observations (`Tally.source`).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

import httpx

GRAPH_CLI_CLIENT_ID = "14d82eec-204b-4c2f-b7e8-296a70dab67e"  # the admin's device-code client (obokit.tenant.target)
EVENTS_PATH = "/_emulator/events"


@dataclass
class Tally:
    """One notebook's counts."""

    device_codes: int = 0
    admin_device_codes: int = 0
    pages: int = 0  # account pickers rendered at /authorize
    auto: int = 0  # sign-ins by the browser session (or login_hint) without a page
    consents: int = 0  # consent pages (at /authorize or after a device code)
    approvals: int = 0  # "Need admin approval" pages
    # (account, server URL, client id) of each rendered page, and of each sign-in without one
    sign_ins: list[tuple[str, str, str]] = field(default_factory=list)
    auto_sign_ins: list[tuple[str, str, str]] = field(default_factory=list)
    source: str = "scripts"
    note: str | None = None


def _sign_ins(observed: list[dict[str, Any]], tally: Tally) -> None:
    for record in observed:
        if record.get("kind") != "sign_in":
            continue
        pair = (str(record.get("account") or "?"), str(record.get("server") or "?"), str(record.get("client") or "?"))
        if record.get("rendered"):
            tally.sign_ins.extend([pair] * record["rendered"])
        elif record.get("auto"):
            tally.auto_sign_ins.append(pair)


def tally_observed(observed: list[dict[str, Any]], admin: str) -> Tally:
    """Counts from what the scripted browser and person saw (one notebook's observed.jsonl lines)."""
    tally = Tally(source="scripts")
    for record in observed:
        tally.consents += record.get("consents", 0)
        tally.approvals += record.get("approvals", 0)
        if record.get("kind") == "device_code":
            tally.device_codes += 1
            tally.admin_device_codes += int(str(record.get("account", "")).lower() == admin.lower())
        else:
            tally.pages += record.get("rendered", 0)
            tally.auto += int(bool(record.get("auto")))
    _sign_ins(observed, tally)
    return tally


def tally_events(events: list[dict[str, Any]], observed: list[dict[str, Any]]) -> Tally:
    """Counts from the emulator's event log; the (account, server URL) pairs from the observations."""
    kinds = [event.get("kind") for event in events]
    tally = Tally(
        device_codes=kinds.count("device_code"),
        admin_device_codes=sum(1 for e in events
                               if e.get("kind") == "device_code" and e.get("client_id") == GRAPH_CLI_CLIENT_ID),
        pages=kinds.count("picker"), auto=kinds.count("auto_sign_in"), consents=kinds.count("consent_page"),
        approvals=kinds.count("admin_approval_page"), source="emulator",
    )
    _sign_ins(observed, tally)
    if len(tally.sign_ins) != tally.pages:
        tally.note = f"the emulator rendered {tally.pages} sign-in page(s), the browser saw {len(tally.sign_ins)}"
    return tally


class EmulatorEvents:
    """The standalone emulator's event log, read in pieces: `poll()` returns what is new since the last call."""

    def __init__(self, identity_url: str, ca_bundle: str | None) -> None:
        self.url = identity_url.rstrip("/") + EVENTS_PATH
        self.verify: Any = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True
        self.since = 0

    def _get(self) -> httpx.Response:
        return httpx.get(self.url, params={"since": self.since}, verify=self.verify, timeout=10)

    def available(self) -> bool:
        return self._get().status_code == 200

    def poll(self) -> list[dict[str, Any]]:
        response = self._get()
        response.raise_for_status()
        body = response.json()
        events = body["events"]
        self.since = max([self.since, body.get("last_seq", 0), *(e["seq"] for e in events)])
        return events
