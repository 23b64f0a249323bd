"""The tenant profile's interactive pages: account picker with a browser session, consent, "Need admin approval".

/authorize, as Entra documents it: without `prompt` it will "sign in the sole current user, show the account
picker if there are multiple users, or show the login page if there are no users signed in"; `prompt=login`
negates single sign-on; `prompt=select_account` "interrupts single sign-on providing account selection";
`prompt=none` answers `login_required` or `consent_required` by redirect instead of a page; `prompt=consent` shows the
consent page even when consent exists; `login_hint` pre-fills the sign-in page for that account
(entra-docs v2-oauth2-auth-code-flow.md). The browser session remembers one account (the last one signed in),
so a hint naming it signs it in silently and a hint naming anyone else shows the picker, pre-selected for the
hinted account (the emulator asks no password, so its picker is its sign-in page).

Form fields (every form posts `txn` and `step` back as hidden fields; the buttons are `action`):
    picker   (step=picker):   account=<UPN radio>, action=accept|cancel
    consent  (step=consent):  consent_for_org=1 (checkbox, Global Administrators only), action=accept|cancel
    approval (step=approval): action=switch_account|cancel
/devicelogin takes user_code, account and action=accept|cancel first, then the same consent and approval forms.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from . import consent, errors, pages
from .errors import EntraError
from .grants import CODE_LIFETIME
from .ids import TENANT_ID, stable_id
from .session import remember

if TYPE_CHECKING:
    from .identity import IdentityApp

AUTHORIZE = f"/{TENANT_ID}/oauth2/v2.0/authorize"
DEVICELOGIN = "/devicelogin"


def _declined() -> EntraError:
    return EntraError(65004, "access_denied", "User declined to consent to access the app.")


class TenantSignIn:
    """/authorize and /devicelogin for the tenant profile (the quick profile keeps identity.py's own)."""

    def __init__(self, identity: "IdentityApp") -> None:
        self.identity = identity
        self.events = identity.events
        self.sessions = identity.sessions

    @property
    def directory(self):
        return self.identity.directory

    def _users(self) -> list[dict[str, Any]]:
        return sorted(self.identity.store.all("users"), key=lambda u: u["userPrincipalName"])

    # -- /authorize -----------------------------------------------------------------------
    async def start(self, request: Request, txn: str, pending: dict[str, Any]) -> Response:
        """The first page of a sign-in, or none: the session's account goes straight on to consent."""
        prompt, hint = pending.get("prompt"), pending.get("login_hint")
        session_id = None if prompt == "login" else self.sessions.user_id(request)
        session_user = self.directory.user(session_id) if session_id else None
        session_upn = session_user["userPrincipalName"] if session_user else None
        if prompt in ("login", "select_account"):
            return self._picker(txn, pending, hint, session_upn)
        if hint and not (session_upn and session_upn.lower() == hint.lower()):
            session_user = None
        if session_user is not None:
            self.events.record("auto_sign_in", pending["client_id"], session_upn, "authorize")
            return await self._signed_in(txn, pending, session_user)
        if prompt == "none":
            self.identity.pending.pop(txn, None)
            return self._error(pending, errors.login_required())
        return self._picker(txn, pending, hint, session_upn)

    def _picker(self, txn: str, pending: dict[str, Any], selected: str | None, session_upn: str | None) -> Response:
        app = self.directory.require_app(pending["client_id"])
        self.events.record("picker", pending["client_id"], selected, "authorize")
        return HTMLResponse(pages.account_picker_page(
            action=AUTHORIZE, txn=txn, app_name=app["displayName"], client_id=app["appId"], users=self._users(),
            selected=selected, session_account=session_upn))

    async def submit(self, request: Request, form: dict[str, str]) -> Response:
        txn = str(form.get("txn", ""))
        pending = self.identity.pending.get(txn)
        if pending is None or pending.get("kind") == "device" or time.time() - pending["created"] > CODE_LIFETIME:
            self.identity.pending.pop(txn, None)
            raise EntraError(9002313, "invalid_request", "Invalid request. The sign-in session has expired; start again.")
        step, action = form.get("step") or "picker", form.get("action")
        if step == "picker":
            if action != "accept":
                return self._error(self.identity.pending.pop(txn), _declined())
            user = self.directory.user_by_upn(str(form.get("account", "")))
            if user is None:
                raise EntraError(50034, "invalid_request", "The user account does not exist in this directory.")
            response = await self._signed_in(txn, pending, user)
            return remember(response, self.sessions.start(user["id"]))
        user = self.directory.user(pending.get("user_id") or "")
        if user is None:
            raise EntraError(9002313, "invalid_request", "Invalid request. Pick an account first.")
        if step == "approval" and action == "switch_account":
            pending.pop("user_id", None)
            return self._picker(txn, pending, None, self._session_upn(request))
        if step != "consent" or action != "accept":
            return self._error(self.identity.pending.pop(txn), _declined())
        app = self.directory.require_app(pending["client_id"])
        missing = consent.needed(self.directory, app, pending["scope"], user, force=pending.get("prompt") == "consent")
        if not consent.is_admin(user) and consent.admin_only(missing):
            return self._approval(txn, app, user, AUTHORIZE)
        for_org = form.get("consent_for_org") in ("1", "on", "true") and consent.is_admin(user)
        consented = await self._record(app, user, missing, for_org, "authorize")
        return self.identity.code_response(self.identity.pending.pop(txn), user, consented)

    def _session_upn(self, request: Request) -> str | None:
        user = self.directory.user(self.sessions.user_id(request) or "")
        return user["userPrincipalName"] if user else None

    async def _signed_in(self, txn: str, pending: dict[str, Any], user: dict[str, Any]) -> Response:
        """The account is known: consent page, "Need admin approval", or the code."""
        pending["user_id"] = user["id"]
        app = self.directory.require_app(pending["client_id"])
        try:
            missing = consent.needed(self.directory, app, pending["scope"], user, force=pending.get("prompt") == "consent")
        except EntraError as exc:
            return self._error(self.identity.pending.pop(txn), exc)
        if not missing:
            if self.directory.sp(app["appId"]) is None:  # no consent to give, but a first sign-in creates the SP
                await self._record(app, user, [], False, None)
            return self.identity.code_response(self.identity.pending.pop(txn), user, {})
        if pending.get("prompt") == "none":  # OIDC Core 3.1.2.6 `consent_required`, with AADSTS65001 as Entra words it
            exc = errors.consent_required(app["appId"], app["displayName"])
            exc.error = "consent_required"
            return self._error(self.identity.pending.pop(txn), exc)
        if not consent.is_admin(user) and consent.admin_only(missing):
            return self._approval(txn, app, user, AUTHORIZE)
        return self._consent(txn, app, user, missing, AUTHORIZE, "authorize")

    def _error(self, pending: dict[str, Any], exc: EntraError) -> Response:
        return self.identity.redirect_error(pending["redirect_uri"], pending["state"], exc.error, exc)

    # -- shared pages ---------------------------------------------------------------------
    def _consent(self, txn, app, user, missing, action: str, flow: str) -> Response:
        self.events.record("consent_page", app["appId"], user["userPrincipalName"], flow)
        return HTMLResponse(pages.consent_page(
            action=action, txn=txn, app_name=app["displayName"], client_id=app["appId"],
            account=user["userPrincipalName"], permissions=[p for m in missing for p in m.shown()],
            can_consent_for_org=consent.is_admin(user)))

    def _approval(self, txn, app, user, action: str) -> Response:
        self.events.record("admin_approval_page", app["appId"], user["userPrincipalName"],
                           "device_code" if action == DEVICELOGIN else "authorize")
        exc = errors.admin_approval_required(app["displayName"])
        return HTMLResponse(pages.admin_approval_page(
            action=action, txn=txn, client_id=app["appId"], account=user["userPrincipalName"], code=exc.code,
            message=exc.message))

    async def _record(self, app, user, missing, for_org: bool, flow: str | None) -> dict[str, list[str]]:
        client_sp, consented, created = await consent.record(self.identity.store, app, user, missing, for_org=for_org)
        if created and self.identity.replication is not None:  # the sign-in that created it uses it at once
            self.identity.replication.settle("servicePrincipals", client_sp["id"])
        if flow is not None:
            self.events.record("consent_granted", app["appId"], user["userPrincipalName"],
                               "AllPrincipals" if for_org else "Principal")
        return consented

    # -- /devicelogin ---------------------------------------------------------------------
    def device_page(self, request: Request, message: str = "", user_code: str = "", status: int = 200) -> Response:
        self.events.record("device_login_page", None, self._session_upn(request), "device_code")
        return HTMLResponse(pages.device_login_page(
            action=DEVICELOGIN, users=self._users(), message=message, session_account=self._session_upn(request),
            user_code=user_code, preselect_first=False), status_code=status)

    async def device_submit(self, request: Request, form: dict[str, str]) -> Response:
        try:
            return await self._device_submit(request, form)
        except EntraError as exc:  # e.g. the client app is gone, or `.default` with nothing registered
            return HTMLResponse(pages.error_page(exc.code, exc.message), status_code=400)

    async def _device_submit(self, request: Request, form: dict[str, str]) -> Response:
        step = form.get("step")
        if step in ("consent", "approval"):
            return await self._device_consent(request, form, step)
        service = self.identity.service
        flow = service.device_flow_by_user_code(str(form.get("user_code", "")))
        if flow is None:
            return self.device_page(request, "That code didn't work.", status=400)
        if form.get("action") != "accept":
            flow.declined = True
            return HTMLResponse(pages.message_page("Sign-in cancelled", "You can close this window."))
        user = self.directory.user_by_upn(str(form.get("account", "")))
        if user is None:
            return self.device_page(request, "Pick an account.", user_code=flow.user_code, status=400)
        sid = self.sessions.start(user["id"])
        app = self.directory.require_app(flow.client_id)
        missing = consent.needed(self.directory, app, flow.scope, user)
        if not missing:
            flow.user_id = user["id"]
            return remember(self._device_done(user), sid)
        txn = stable_id("device-txn", time.time_ns(), flow.user_code)
        self.identity.pending[txn] = {"kind": "device", "user_code": flow.user_code, "user_id": user["id"],
                                      "client_id": flow.client_id, "created": time.time()}
        if not consent.is_admin(user) and consent.admin_only(missing):
            # On a device code page too (pnp/cli-microsoft365#534: "AADSTS90094: The grant requires admin
            # permission."). The polling client keeps waiting: what it is told is not public.
            return remember(self._approval(txn, app, user, DEVICELOGIN), sid)
        return remember(self._consent(txn, app, user, missing, DEVICELOGIN, "device_code"), sid)

    async def _device_consent(self, request: Request, form: dict[str, str], step: str) -> Response:
        pending = self.identity.pending.get(str(form.get("txn", "")))
        if pending is None or pending.get("kind") != "device":
            return self.device_page(request, "That sign-in has expired. Enter the code again.", status=400)
        self.identity.pending.pop(str(form.get("txn", "")), None)
        flow = self.identity.service.device_flow_by_user_code(pending["user_code"])
        if flow is None or time.time() - pending["created"] > CODE_LIFETIME:
            return self.device_page(request, "That sign-in has expired. Enter the code again.", status=400)
        action = form.get("action")
        if step == "approval" and action == "switch_account":
            return self.device_page(request, user_code=flow.user_code)
        if step != "consent" or action != "accept":
            flow.declined = True
            return HTMLResponse(pages.message_page("Sign-in cancelled", "You can close this window."))
        user = self.directory.user(pending["user_id"])
        app = self.directory.require_app(flow.client_id)
        missing = consent.needed(self.directory, app, flow.scope, user)
        if not consent.is_admin(user) and consent.admin_only(missing):
            flow.declined = True
            return HTMLResponse(pages.message_page("Need admin approval", "Only an administrator can grant these permissions."))
        for_org = form.get("consent_for_org") in ("1", "on", "true") and consent.is_admin(user)
        flow.consented = await self._record(app, user, missing, for_org, "device_code")
        flow.user_id = user["id"]
        return self._device_done(user)

    @staticmethod
    def _device_done(user: dict[str, Any]) -> Response:
        return HTMLResponse(pages.message_page(
            "You're signed in", f"Signed in as {user['userPrincipalName']}. You can close this window."))
