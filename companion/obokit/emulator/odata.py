"""The small part of OData query syntax Graph clients send: $filter, $select, $top, $count."""

from __future__ import annotations

import re
from typing import Any

from .errors import GraphError

_EQ = re.compile(r"^\s*([A-Za-z_][\w/]*)\s+eq\s+'((?:[^']|'')*)'\s*$")
_IN = re.compile(r"^\s*([A-Za-z_][\w/]*)\s+in\s+\(((?:\s*'(?:[^']|'')*'\s*,?)+)\)\s*$")
_STARTSWITH = re.compile(r"^\s*startswith\(\s*([A-Za-z_][\w/]*)\s*,\s*'((?:[^']|'')*)'\s*\)\s*$", re.IGNORECASE)
_AND = re.compile(r"\s+and\s+", re.IGNORECASE)


def _field(obj: dict[str, Any], path: str) -> Any:
    value: Any = obj
    for part in path.split("/"):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _clause(text: str):
    if m := _EQ.match(text):
        name, literal = m.group(1), m.group(2).replace("''", "'")
        return lambda o: str(_field(o, name)).lower() == literal.lower() if _field(o, name) is not None else False
    if m := _IN.match(text):
        name = m.group(1)
        values = {v.replace("''", "'").lower() for v in re.findall(r"'((?:[^']|'')*)'", m.group(2))}
        return lambda o: str(_field(o, name)).lower() in values
    if m := _STARTSWITH.match(text):
        name, prefix = m.group(1), m.group(2).replace("''", "'").lower()
        return lambda o: str(_field(o, name) or "").lower().startswith(prefix)
    raise GraphError(400, "Request_UnsupportedQuery", f"Unsupported or invalid query filter clause specified for property '{text.strip()}'.")


def apply_filter(items: list[dict[str, Any]], expression: str | None) -> list[dict[str, Any]]:
    """Keep the items matching `eq`, `in` and `startswith` clauses joined by `and`."""
    if not expression:
        return items
    predicates = [_clause(part) for part in _AND.split(expression)]
    return [item for item in items if all(p(item) for p in predicates)]


def apply_select(item: dict[str, Any], select: str | None) -> dict[str, Any]:
    if not select:
        return item
    wanted = {s.strip() for s in select.split(",") if s.strip()}
    return {k: v for k, v in item.items() if k in wanted or k.startswith("@odata") or k == "id"}


def parse_top(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or not 1 <= int(value) <= 999:
        raise GraphError(400, "Request_BadRequest", f"Invalid page size specified: '{value}'. Must be between 1 and 999 inclusive.")
    return int(value)
