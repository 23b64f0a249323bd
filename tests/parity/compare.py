"""Compare a live answer with a parity snapshot; every mismatch is one readable line.

An answer is `{"status": int | None, "headers": {lower-case name: value}, "body": JSON | text}`
(for a token: `body = {"header": ..., "payload": ...}`). A snapshot asserts fields of it:

    "status":  {"equals": 400, "source": "..."}
    "headers": {"content-type": {"pattern": "^application/json", "source": "..."}}
    "body":    {"error/innerError/date": {"pattern": "...", "source": "..."},   # "/" walks objects,
                "keys/*/kty": {"equals": "RSA", "source": "..."},              # "*" every list item,
                "$": {"key_set": [...], "source": "..."}}                      # "$" the whole body

A field's spec (or a list of specs, each with its own source) may hold: `type` (a JSON type name or a
list of them), `equals`, `pattern` (a regular expression searched in a string), `includes` (values
an array or a space-separated string must hold), `key_set` (an object's exact keys), `min_items`,
or `absent: true`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from obokit.display import redact

JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object",
              type(None): "null"}
SENSITIVE_NAME = re.compile(r"token|secret|password|device_code|client_info", re.IGNORECASE)
JWT_SHAPE = re.compile(r"eyJ[\w-]+\.[\w-]+\.")


def json_type(value: Any) -> str:
    return JSON_TYPES.get(type(value), type(value).__name__)


def specs_of(field: dict | list) -> list[dict]:
    return field if isinstance(field, list) else [field]


def shown(label: str, value: Any, limit: int = 240) -> str:
    """A value as a difference line may print it: tokens and secrets redacted, long text cut."""
    text = value if isinstance(value, str) else json.dumps(value)
    if isinstance(value, str) and (SENSITIVE_NAME.search(label) or JWT_SHAPE.search(value)):
        return redact(value, keep=4)
    return repr(text[:limit] + "…" if len(text) > limit else text) if isinstance(value, str) else text[:limit]


def resolve(body: Any, path: str) -> Iterator[tuple[str, bool, Any]]:
    """(concrete path, present, value) for each place `path` names in `body`."""
    if path == "$":
        yield path, True, body
        return
    places: list[tuple[str, bool, Any]] = [("", True, body)]
    for segment in path.split("/"):
        found = []
        for where, present, value in places:
            if not present:
                found.append((where, False, None))
            elif segment == "*" and isinstance(value, list):
                found += [(f"{where}/{i}", True, item) for i, item in enumerate(value)]
            elif isinstance(value, dict) and segment in value:
                found.append((f"{where}/{segment}", True, value[segment]))
            else:
                found.append((f"{where}/{segment}", False, None))
        places = found
    yield from ((where.lstrip("/"), present, value) for where, present, value in places)


def check(label: str, present: bool, value: Any, field: dict | list) -> list[str]:
    """The differences between one place of an answer and its spec(s)."""
    out: list[str] = []
    for spec in specs_of(field):
        if spec.get("absent"):
            if present:
                out.append(f"{label}: expected absent, got {shown(label, value)}")
            continue
        if not present:
            return [f"{label}: missing"]
        out += _check_value(label, value, spec)
    return out


def _check_value(label: str, value: Any, spec: dict) -> list[str]:
    kinds = specs_of(spec.get("type", []))
    if kinds and json_type(value) not in kinds and not ("number" in kinds and json_type(value) == "integer"):
        return [f"{label}: expected type {'/'.join(kinds)}, got {json_type(value)} {shown(label, value)}"]
    out = []
    if "equals" in spec and value != spec["equals"]:
        out.append(f"{label}: expected {json.dumps(spec['equals'])}, got {shown(label, value)}")
    if "pattern" in spec and not (isinstance(value, str) and re.search(spec["pattern"], value)):
        out.append(f"{label}: does not match /{spec['pattern']}/: {shown(label, value)}")
    if "includes" in spec:
        items = value.split() if isinstance(value, str) else value if isinstance(value, list) else []
        lacking = [item for item in spec["includes"] if item not in items]
        if lacking:
            out.append(f"{label}: lacks {json.dumps(lacking)}: {shown(label, value)}")
    if "key_set" in spec:
        keys = set(value) if isinstance(value, dict) else set()
        missing, extra = sorted(set(spec["key_set"]) - keys), sorted(keys - set(spec["key_set"]))
        if missing or extra:
            out.append(f"{label}: keys differ: missing {missing}, unexpected {extra}")
    if "min_items" in spec and not (isinstance(value, list) and len(value) >= spec["min_items"]):
        out.append(f"{label}: expected at least {spec['min_items']} items, got {shown(label, value)}")
    return out


def compare(snapshot: dict, answer: dict) -> list[str]:
    """Every way `answer` departs from `snapshot` (empty: the answer has the snapshot's shape)."""
    out = []
    if "status" in snapshot:
        out += check("status", answer.get("status") is not None, answer.get("status"), snapshot["status"])
    headers = {name.lower(): value for name, value in (answer.get("headers") or {}).items()}
    for name, field in snapshot.get("headers", {}).items():
        out += check(f"header {name}", name in headers, headers.get(name), field)
    for path, field in snapshot.get("body", {}).items():
        for where, present, value in resolve(answer.get("body"), path):
            out += check(f"body {where}", present, value, field)
    return out


def asserted_fields(snapshot: dict) -> Iterator[tuple[str, dict]]:
    """(label, spec) for every assertion of a snapshot, e.g. to check that each one cites a source."""
    if "status" in snapshot:
        yield from (("status", spec) for spec in specs_of(snapshot["status"]))
    for section in ("headers", "body"):
        for name, field in snapshot.get(section, {}).items():
            yield from ((f"{section} {name}", spec) for spec in specs_of(field))
