"""The workbook server's example data: each user's expenses, validated before they are stored.

The MCP tools in `obokit.server.tools` are thin: they check who is calling and hand over to an
`ExpenseBook`, which keeps one list per user (keyed by the caller's Entra object id, `oid`,
never by a name that can change) and refuses bad input with a message a person can act on.

Example::

    book = ExpenseBook()
    book.add("b7e…", date="2026-11-02", amount=42.5, category="travel", description="Train to Lyon")
    book.list("b7e…")          # [{'id': 'EXP-…', 'date': '2026-11-02', 'amount': 42.5, ...}]
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import threading
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from ..display import redact
from ..files import write_private

CATEGORIES = ("travel", "meals", "lodging", "equipment", "training", "other")
MAX_AMOUNT = Decimal("10000")
MAX_DESCRIPTION = 200
EARLIEST = dt.date(2000, 1, 1)
EXPENSE_ID = re.compile(r"^EXP-[0-9A-F]{6}$")
TOKEN_LIKE = re.compile(r"eyJ[\w-]{4,}\.")


class InvalidExpense(ValueError):
    """The input breaks a rule; the message says which one and how to fix it."""


def shown(value: object, limit: int = 60) -> str:
    """`repr(value)` cut to `limit` characters, and a pasted token redacted, so an error message (which
    the audit log keeps) never echoes a huge input or a credential."""
    if TOKEN_LIKE.search(str(value)):
        return redact(str(value))
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(str(value))} characters)"


def parse_date(value: str, *, today: dt.date | None = None) -> dt.date:
    """An ISO date (YYYY-MM-DD) that is not in the future."""
    try:
        day = dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise InvalidExpense(f"date must be an ISO date such as 2026-11-02, not {shown(value)}") from None
    if day > (today or dt.date.today()):
        raise InvalidExpense(f"date {day.isoformat()} is in the future; expenses are recorded after they happen")
    if day < EARLIEST:
        raise InvalidExpense(f"date {day.isoformat()} is before {EARLIEST.isoformat()}; check the year")
    return day


def parse_amount(value: float | int | str) -> Decimal:
    """A positive amount with at most two decimals, below `MAX_AMOUNT`."""
    if isinstance(value, bool):
        raise InvalidExpense("amount must be a number such as 42.50")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidExpense(f"amount must be a number such as 42.50, not {shown(value)}") from None
    if not amount.is_finite() or amount <= 0:
        raise InvalidExpense(f"amount must be greater than zero, not {value}")
    if amount.as_tuple().exponent < -2:  # type: ignore[operator]
        raise InvalidExpense(f"amount {value} has more than two decimals")
    if amount > MAX_AMOUNT:
        raise InvalidExpense(f"amount {value} is above the {MAX_AMOUNT} limit; split it or ask finance")
    return amount.quantize(Decimal("0.01"))


def parse_category(value: str) -> str:
    category = str(value).strip().lower()
    if category not in CATEGORIES:
        raise InvalidExpense(f"category {shown(value)} is not one of: {', '.join(CATEGORIES)}")
    return category


def parse_description(value: str) -> str:
    text = " ".join(str(value).split())
    if not text:
        raise InvalidExpense("description must not be empty")
    if len(text) > MAX_DESCRIPTION:
        raise InvalidExpense(f"description is {len(text)} characters long; keep it under {MAX_DESCRIPTION}")
    return text


def parse_expense_id(value: str) -> str:
    """An expense id as `list_expenses` shows it: EXP- and six hexadecimal digits (any case)."""
    expense_id = str(value).strip().upper()
    if not EXPENSE_ID.match(expense_id):
        raise InvalidExpense(f"expense_id must look like EXP-1A2B3C (see list_expenses), not {shown(value)}")
    return expense_id


class ExpenseBook:
    """Expenses per user (by `oid`), in memory or in a JSON file when `path` is given.

    An expense's id is derived from its owner and content, so submitting the same expense
    twice returns the first one instead of a duplicate (and a notebook re-run stays the same).
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._by_user: dict[str, list[dict[str, Any]]] = {}
        if path is not None and path.exists():
            self._by_user = json.loads(path.read_text())

    def add(self, oid: str, *, date: str, amount: float | int | str, category: str, description: str,
            submitted_by: str = "") -> dict[str, Any]:
        """Validate and store one expense of user `oid`; returns the stored record."""
        day, money = parse_date(date), parse_amount(amount)
        category, text = parse_category(category), parse_description(description)
        key = "|".join((oid, day.isoformat(), str(money), category, text.lower()))
        expense_id = "EXP-" + hashlib.sha256(key.encode()).hexdigest()[:6].upper()
        with self._lock:
            mine = self._by_user.setdefault(oid, [])
            for existing in mine:
                if existing["id"] == expense_id:
                    return dict(existing)
            record = {"id": expense_id, "date": day.isoformat(), "amount": float(money), "category": category,
                      "description": text, "status": "submitted", "submitted_by": submitted_by}
            mine.append(record)
            self._save()
        return dict(record)

    def list(self, oid: str) -> list[dict[str, Any]]:
        """The user's expenses, oldest date first."""
        with self._lock:
            return sorted((dict(e) for e in self._by_user.get(oid, [])), key=lambda e: (e["date"], e["id"]))

    def approve(self, expense_id: str, *, approver_oid: str, approver: str) -> dict[str, Any]:
        """Mark someone else's expense approved (approving it again changes nothing)."""
        wanted = parse_expense_id(expense_id)
        with self._lock:
            for owner, expenses in self._by_user.items():
                for expense in expenses:
                    if expense["id"] != wanted:
                        continue
                    if owner == approver_oid:
                        raise InvalidExpense(f"{wanted} is your own expense; someone else has to approve it")
                    if expense["status"] != "approved":
                        expense.update(status="approved", approved_by=approver)
                        self._save()
                    return dict(expense)
        raise InvalidExpense(f"there is no expense {wanted}; the submitter sees its id in list_expenses")

    def _save(self) -> None:
        if self.path is None:
            return
        write_private(self.path, json.dumps(self._by_user, indent=1).encode())
