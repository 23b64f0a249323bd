"""HTML pages of the emulator's sign-in experience: account picker, consent, device login, errors."""

from __future__ import annotations

from html import escape
from typing import Any

_STYLE = """
body{font-family:Segoe UI,Helvetica,Arial,sans-serif;background:#f2f2f2;margin:0}
main{max-width:440px;margin:48px auto;background:#fff;padding:32px 40px;box-shadow:0 2px 6px rgba(0,0,0,.2)}
h1{font-size:22px;font-weight:600;margin:8px 0 16px} .brand{color:#737373;font-size:14px}
label.account{display:block;border:1px solid #ddd;padding:10px 12px;margin:6px 0;cursor:pointer}
label.account:hover{background:#f5f5f5} .upn{color:#555;font-size:13px}
ul.scopes{padding-left:18px} button{background:#0067b8;color:#fff;border:0;padding:8px 20px;margin:12px 8px 0 0}
button.secondary{background:#ccc;color:#000} .error{color:#a80000} code{word-break:break-all}
.note{font-size:12px;color:#666;margin-top:18px}
"""


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main><div class='brand'>obokit emulator &middot; Microsoft Entra ID</div>{body}"
        "<p class='note'>This is a local emulator of the Microsoft identity platform for the workbook. "
        "No password is asked: pick a demo account.</p></main></body></html>"
    )


def _account_choices(users: list[dict[str, Any]], hint: str | None, *, first_by_default: bool = True) -> tuple[str, str]:
    """The account radio buttons and the account checked by default ("" if none)."""
    rows, selected = [], ""
    for i, user in enumerate(users):
        upn = user["userPrincipalName"]
        is_checked = (hint and hint.lower() == upn.lower()) or (not hint and first_by_default and i == 0)
        selected = upn if is_checked else selected
        rows.append(
            f"<label class='account'><input type='radio' name='account' value='{escape(upn)}'{' checked' if is_checked else ''}> "
            f"{escape(user['displayName'])}<br><span class='upn'>{escape(upn)}</span></label>"
        )
    return "".join(rows), selected


def sign_in_page(
    *, action: str, txn: str, app_name: str, users: list[dict[str, Any]], scopes: list[str], login_hint: str | None
) -> str:
    scope_items = "".join(f"<li>{escape(s)}</li>" for s in scopes) or "<li>Sign you in</li>"
    choices, selected = _account_choices(users, login_hint)
    body = (
        "<h1>Pick an account</h1>"
        f"<form method='post' action='{escape(action)}' id='signin' data-page='picker' data-selected-account='{escape(selected)}'>"
        f"<input type='hidden' name='txn' value='{escape(txn)}'>"
        f"{choices}"
        f"<h2 style='font-size:16px'>{escape(app_name)} wants to</h2><ul class='scopes'>{scope_items}</ul>"
        "<button type='submit' name='action' value='accept' id='accept'>Accept</button>"
        "<button type='submit' name='action' value='cancel' class='secondary' id='cancel'>Cancel</button>"
        "</form>"
    )
    return _page("Sign in to your account", body)


def device_login_page(
    *, action: str, users: list[dict[str, Any]], message: str = "", session_account: str | None = None,
    user_code: str = "", preselect_first: bool = True,
) -> str:
    """The code and the account on one page; the tenant profile pre-selects only the browser session's account."""
    choices, selected = _account_choices(users, session_account, first_by_default=preselect_first)
    body = (
        "<h1>Enter code</h1>"
        f"<p class='error'>{escape(message)}</p>"
        f"<form method='post' action='{escape(action)}' id='devicelogin' data-page='device-login' "
        f"data-selected-account='{escape(selected)}' data-session-account='{escape(session_account or '')}'>"
        f"<input name='user_code' id='user_code' placeholder='Code' autocomplete='off' value='{escape(user_code)}'>"
        f"{choices}"
        "<button type='submit' name='action' value='accept' id='accept'>Continue</button>"
        "<button type='submit' name='action' value='cancel' class='secondary'>Cancel</button>"
        "</form>"
    )
    return _page("Enter code", body)


def account_picker_page(
    *, action: str, txn: str, app_name: str, client_id: str, users: list[dict[str, Any]], selected: str | None,
    session_account: str | None,
) -> str:
    """Tenant profile: only the account (consent, if needed, is the next page). `data-selected-account` is the
    account a plain submit signs in ("" when none is pre-selected); `data-session-account` the remembered one."""
    choices, checked = _account_choices(users, selected, first_by_default=False)
    body = (
        "<h1>Pick an account</h1>"
        f"<p>to continue to {escape(app_name)}</p>"
        f"<form method='post' action='{escape(action)}' id='signin' data-page='picker' data-client-id='{escape(client_id)}' "
        f"data-selected-account='{escape(checked)}' data-session-account='{escape(session_account or '')}'>"
        f"<input type='hidden' name='txn' value='{escape(txn)}'><input type='hidden' name='step' value='picker'>"
        f"{choices}"
        "<button type='submit' name='action' value='accept' id='accept'>Continue</button>"
        "<button type='submit' name='action' value='cancel' class='secondary' id='cancel'>Cancel</button>"
        "</form>"
    )
    return _page("Sign in to your account", body)


def consent_page(
    *, action: str, txn: str, app_name: str, client_id: str, account: str, permissions: list[tuple[str, str]],
    can_consent_for_org: bool,
) -> str:
    """"Permissions requested" with Accept/Cancel; for a Global Administrator, the "Consent on behalf of your
    organization" checkbox, off by default (entra-docs application-consent-experience.md)."""
    items = "".join(
        f"<li data-scope='{escape(scope)}'>{escape(text)}<br><span class='upn'>{escape(scope)}</span></li>"
        for scope, text in permissions
    )
    org = (
        "<label><input type='checkbox' name='consent_for_org' value='1' id='consent_for_org'> "
        "Consent on behalf of your organization</label>" if can_consent_for_org else ""
    )
    body = (
        "<h1>Permissions requested</h1>"
        f"<p class='upn' id='account'>{escape(account)}</p>"
        f"<form method='post' action='{escape(action)}' id='consent' data-page='consent' data-client-id='{escape(client_id)}' "
        f"data-account='{escape(account)}' data-admin='{'true' if can_consent_for_org else 'false'}'>"
        f"<input type='hidden' name='txn' value='{escape(txn)}'><input type='hidden' name='step' value='consent'>"
        f"<p><strong>{escape(app_name)}</strong> (unverified) would like to:</p><ul class='scopes' id='permissions'>{items}</ul>"
        f"{org}"
        "<p class='note'>Accepting these permissions means that you allow this app to use your data as specified in "
        "their terms of service and privacy statement.</p>"
        "<button type='submit' name='action' value='cancel' class='secondary' id='cancel'>Cancel</button>"
        "<button type='submit' name='action' value='accept' id='accept'>Accept</button>"
        "</form>"
    )
    return _page("Permissions requested", body)


def admin_approval_page(*, action: str, txn: str, client_id: str, account: str, code: int, message: str) -> str:
    """"Need admin approval": no Accept; sign in as someone else, or go back without consent."""
    body = (
        "<h1>Need admin approval</h1>"
        f"<p class='upn' id='account'>{escape(account)}</p>"
        f"<p class='error' id='error'>AADSTS{code}: {escape(message)}</p>"
        f"<form method='post' action='{escape(action)}' id='admin-approval' data-page='admin-approval' "
        f"data-client-id='{escape(client_id)}' data-account='{escape(account)}'>"
        f"<input type='hidden' name='txn' value='{escape(txn)}'><input type='hidden' name='step' value='approval'>"
        "<button type='submit' name='action' value='switch_account' class='secondary' id='switch_account'>"
        "Have an admin account? Sign in with that account</button>"
        "<button type='submit' name='action' value='cancel' class='secondary' id='cancel'>"
        "Return to the application without granting consent</button>"
        "</form>"
    )
    return _page("Need admin approval", body)


def message_page(title: str, message: str) -> str:
    return _page(title, f"<h1>{escape(title)}</h1><p>{escape(message)}</p>")


def error_page(code: int, message: str) -> str:
    body = (
        "<h1>Sorry, but we're having trouble signing you in.</h1>"
        f"<p class='error' id='error'>AADSTS{code}: {escape(message)}</p>"
    )
    return _page("Sign in error", body)


def form_post_page(redirect_uri: str, params: dict[str, str]) -> str:
    """response_mode=form_post: the browser posts the code to the redirect URI."""
    inputs = "".join(
        f"<input type='hidden' name='{escape(k)}' value='{escape(v)}'>" for k, v in params.items()
    )
    return (
        "<!DOCTYPE html><html><head><title>Working...</title></head><body onload='document.forms[0].submit()'>"
        f"<form method='post' action='{escape(redirect_uri)}'>{inputs}"
        "<noscript><button type='submit'>Continue</button></noscript></form></body></html>"
    )
