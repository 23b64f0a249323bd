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


def _account_choices(users: list[dict[str, Any]], hint: str | None) -> str:
    rows = []
    for i, user in enumerate(users):
        upn = user["userPrincipalName"]
        checked = " checked" if (hint and hint.lower() == upn.lower()) or (not hint and i == 0) else ""
        rows.append(
            f"<label class='account'><input type='radio' name='account' value='{escape(upn)}'{checked}> "
            f"{escape(user['displayName'])}<br><span class='upn'>{escape(upn)}</span></label>"
        )
    return "".join(rows)


def sign_in_page(
    *, action: str, txn: str, app_name: str, users: list[dict[str, Any]], scopes: list[str], login_hint: str | None
) -> str:
    scope_items = "".join(f"<li>{escape(s)}</li>" for s in scopes) or "<li>Sign you in</li>"
    body = (
        "<h1>Pick an account</h1>"
        f"<form method='post' action='{escape(action)}' id='signin'>"
        f"<input type='hidden' name='txn' value='{escape(txn)}'>"
        f"{_account_choices(users, login_hint)}"
        f"<h2 style='font-size:16px'>{escape(app_name)} wants to</h2><ul class='scopes'>{scope_items}</ul>"
        "<button type='submit' name='action' value='accept' id='accept'>Accept</button>"
        "<button type='submit' name='action' value='cancel' class='secondary' id='cancel'>Cancel</button>"
        "</form>"
    )
    return _page("Sign in to your account", body)


def device_login_page(*, action: str, users: list[dict[str, Any]], message: str = "") -> str:
    body = (
        "<h1>Enter code</h1>"
        f"<p class='error'>{escape(message)}</p>"
        f"<form method='post' action='{escape(action)}' id='devicelogin'>"
        "<input name='user_code' id='user_code' placeholder='Code' autocomplete='off'>"
        f"{_account_choices(users, None)}"
        "<button type='submit' name='action' value='accept' id='accept'>Continue</button>"
        "<button type='submit' name='action' value='cancel' class='secondary'>Cancel</button>"
        "</form>"
    )
    return _page("Enter code", body)


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
