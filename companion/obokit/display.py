"""Showing identity data without leaking it: redaction and readable claim tables.

Tokens and secrets never appear whole: `redact` keeps a short prefix, the length and a
hash prefix, so two values can still be compared by eye. Claim tables render as HTML in
Jupyter and as stable plain text elsewhere.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from html import escape
from typing import Any

import jwt

SENSITIVE_CLAIMS = {"aio", "rh", "uti", "nonce", "sid", "xms_cc", "ipaddr"}
TIME_CLAIMS = {"iat", "nbf", "exp", "auth_time"}
DEFAULT_CLAIMS = ("aud", "iss", "scp", "roles", "oid", "tid", "ver", "azp", "appid", "name", "preferred_username", "upn", "idtyp", "exp")


def redact(secret: str, keep: int = 6) -> str:
    """`eyJ0eX…[redacted 1234 chars, sha256:0a1b2c3d]`: enough to tell values apart, never enough to use one."""
    digest = hashlib.sha256(secret.encode()).hexdigest()[:8]
    return f"{secret[:keep]}…[redacted {len(secret)} chars, sha256:{digest}]"


def decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a JWT, without checking the signature: for display only."""
    return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})


def _format(name: str, value: Any) -> str:
    if name in SENSITIVE_CLAIMS:
        return redact(str(value), keep=3)
    if name in TIME_CLAIMS and isinstance(value, int):
        return dt.datetime.fromtimestamp(value, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


class Claims:
    """A token's selected claims as a table (HTML in Jupyter, aligned text otherwise)."""

    def __init__(self, token: str, names: tuple[str, ...] | None = None, title: str = "token") -> None:
        self.header, self.claims = decode_unverified(token)
        wanted = names or DEFAULT_CLAIMS
        self.rows = [(n, _format(n, self.claims[n])) for n in wanted if n in self.claims]
        self.title = title

    def __getitem__(self, name: str) -> Any:
        return self.claims[name]

    def _caption(self) -> str:
        return f"{self.title} (alg {self.header.get('alg')}, signature not shown)"

    def __repr__(self) -> str:
        width = max((len(n) for n, _ in self.rows), default=0)
        lines = [self._caption()] + [f"  {n.ljust(width)}  {v}" for n, v in self.rows]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        body = "".join(f"<tr><th style='text-align:left'>{escape(n)}</th><td><code>{escape(v)}</code></td></tr>" for n, v in self.rows)
        return f"<table class='obokit-claims'><caption>{escape(self._caption())}</caption>{body}</table>"
