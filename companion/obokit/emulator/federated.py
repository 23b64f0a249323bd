"""Federated identity credentials of an application: the records Graph keeps and checks.

They live inside the application record (under an internal field, so an application read never shows them, as
Graph's navigation property is not part of the application), which makes them replicate with it: a new credential
is unknown to the token endpoint until the application's new version reaches the replica (replication.py).

Graph's rules (federatedidentitycredential.md, application-post-federatedidentitycredentials.md): `name` is unique
in the app, at most 120 characters, URL friendly and immutable; `issuer`, `subject` (600 characters each) and
`audiences` (one value, 600 characters) are required; issuer + subject is unique in the app; 20 per app.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import GraphError
from .tokens import TOKEN_EXCHANGE_AUDIENCE  # the audience Entra documents for its own exchange

FIELD = "_federatedIdentityCredentials"
MAX_PER_APP = 20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,119}$")  # "URL friendly": the unreserved characters of RFC 3986
_LIMIT = 600
RESOURCE = "FederatedIdentityCredential"


def federated_credentials(app: dict[str, Any]) -> list[dict[str, Any]]:
    return list(app.get(FIELD) or [])


def _invalid(prop: str) -> GraphError:
    # The form of Graph's other property errors; Graph's own messages for these cases are not public.
    return GraphError(400, "Request_BadRequest", f"Invalid value specified for property '{prop}' of resource '{RESOURCE}'.")


def _check_fields(record: dict[str, Any]) -> None:
    for prop in ("issuer", "subject"):
        if not isinstance(record.get(prop), str) or not record[prop].strip() or len(record[prop]) > _LIMIT:
            raise _invalid(prop)
    audiences = record.get("audiences")
    if not isinstance(audiences, list) or len(audiences) != 1 or not audiences[0] or len(audiences[0]) > _LIMIT:
        raise _invalid("audiences")
    if len(record.get("description") or "") > _LIMIT:
        raise _invalid("description")


def _check_unique(credentials: list[dict[str, Any]], record: dict[str, Any]) -> None:
    for other in credentials:
        if other["id"] == record["id"]:
            continue
        if other["name"] == record["name"]:  # azure-workload-identity pkg/cloud: Graph's code and message
            raise GraphError(409, "Request_MultipleObjectsWithSameKeyValue",
                             f"FederatedIdentityCredential with name {record['name']} already exists.")
        if (other["issuer"], other["subject"]) == (record["issuer"], record["subject"]):  # text not public
            raise GraphError(409, "Request_MultipleObjectsWithSameKeyValue",
                             f"{RESOURCE} with the same issuer and subject already exists.")


def add_credential(app: dict[str, Any], body: dict[str, Any], credential_id: str) -> dict[str, Any]:
    """Validate a POST body and add the new credential to `app` (in place); returns it."""
    credentials = federated_credentials(app)
    name = body.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise _invalid("name")
    if len(credentials) >= MAX_PER_APP:  # the limit is documented, Graph's message for it is not public
        raise GraphError(400, "Request_BadRequest",
                         f"The application already has the maximum of {MAX_PER_APP} federated identity credentials.")
    record = {
        "id": credential_id,
        "name": name,
        "issuer": body.get("issuer"),
        "subject": body.get("subject"),
        "description": body.get("description"),
        "audiences": body.get("audiences") or [TOKEN_EXCHANGE_AUDIENCE],
    }
    _check_fields(record)
    _check_unique(credentials, record)
    app[FIELD] = [*credentials, record]
    return record


def update_credential(app: dict[str, Any], credential: dict[str, Any], body: dict[str, Any]) -> None:
    """Apply a PATCH body to one of `app`'s credentials (in place); the name cannot change."""
    if "name" in body and body["name"] != credential["name"]:
        raise _invalid("name")
    updated = {**credential, **{k: body[k] for k in ("issuer", "subject", "description", "audiences") if k in body}}
    _check_fields(updated)
    _check_unique(federated_credentials(app), updated)
    app[FIELD] = [updated if c["id"] == credential["id"] else c for c in federated_credentials(app)]


def remove_credential(app: dict[str, Any], credential: dict[str, Any]) -> None:
    app[FIELD] = [c for c in federated_credentials(app) if c["id"] != credential["id"]]


def find_credential(app: dict[str, Any], *, credential_id: str | None = None, name: str | None = None) -> dict[str, Any] | None:
    """By id, or by name (Graph's alternate key: `federatedIdentityCredentials(name='...')`)."""
    for credential in federated_credentials(app):
        if (credential_id and credential["id"] == credential_id) or (name and credential["name"] == name):
            return credential
    return None
