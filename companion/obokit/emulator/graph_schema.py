"""Property types of the request bodies the Graph host accepts, checked the way Graph's OData reader does.

A wrongly typed property is a 400 `BadRequest` with OData's message (e.g. "An unexpected 'StartArray' node
was found ... A 'PrimitiveValue' node was expected."), so nothing malformed is ever stored and no later
token request trips over it. Only the properties the emulator reads are described; others pass through.
"""

from __future__ import annotations

import json
import re
from typing import Any, Union

from .errors import GraphError

# A type is "Edm.String" / "Edm.Boolean" / "Edm.Int32" / "Edm.Guid", a nested object schema (dict),
# or a collection of either ([type]). Object schemas list required properties under "!required".
Type = Union[str, dict, list]
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
S, B, I, G = "Edm.String", "Edm.Boolean", "Edm.Int32", "Edm.Guid"

PERMISSION_SCOPE = {"!required": ["id"], "id": G, "value": S, "type": S, "isEnabled": B, "adminConsentDisplayName": S,
                    "adminConsentDescription": S, "userConsentDisplayName": S, "userConsentDescription": S}
APP_ROLE = {"!required": ["id"], "id": G, "value": S, "displayName": S, "description": S, "allowedMemberTypes": [S],
            "isEnabled": B, "origin": S}
PRE_AUTHORIZED = {"appId": S, "delegatedPermissionIds": [S], "permissionIds": [S]}
REDIRECTS = {"redirectUris": [S]}
KEY_CREDENTIAL = {"customKeyIdentifier": S, "displayName": S, "endDateTime": S, "startDateTime": S, "key": S,
                  "keyId": G, "type": S, "usage": S}
FEDERATED_CREDENTIAL = {"name": S, "issuer": S, "subject": S, "description": S, "audiences": [S]}
APPLICATION = {
    "displayName": S, "description": S, "notes": S, "signInAudience": S, "identifierUris": [S],
    "isFallbackPublicClient": B, "tags": [S], "appRoles": [APP_ROLE],
    "api": {"requestedAccessTokenVersion": I, "acceptMappedClaims": B, "knownClientApplications": [S],
            "oauth2PermissionScopes": [PERMISSION_SCOPE], "preAuthorizedApplications": [PRE_AUTHORIZED]},
    "web": {"redirectUris": [S], "homePageUrl": S, "logoutUrl": S,
            "implicitGrantSettings": {"enableIdTokenIssuance": B, "enableAccessTokenIssuance": B}},
    "spa": REDIRECTS, "publicClient": REDIRECTS,
    "requiredResourceAccess": [{"resourceAppId": S, "resourceAccess": [{"id": S, "type": S}]}],
    "keyCredentials": [KEY_CREDENTIAL],
}
PASSWORD = {"passwordCredential": {"displayName": S, "startDateTime": S, "endDateTime": S}}
REMOVE_PASSWORD = {"keyId": S}
SERVICE_PRINCIPAL = {"appId": S, "appRoleAssignmentRequired": B, "accountEnabled": B, "tags": [S]}
PERMISSION_GRANT = {"clientId": S, "consentType": S, "principalId": S, "resourceId": S, "scope": S}
APP_ROLE_ASSIGNMENT = {"principalId": S, "resourceId": S, "appRoleId": S}


def _node(value: Any) -> str:
    return "StartArray" if isinstance(value, list) else "StartObject" if isinstance(value, dict) else "PrimitiveValue"


def _unexpected(value: Any, expected: str) -> GraphError:
    return GraphError(400, "BadRequest", f"An unexpected '{_node(value)}' node was found when reading from the JSON "
                                         f"reader. A '{expected}' node was expected.")


def _type_name(kind: Type) -> str:
    if isinstance(kind, list):
        return f"Collection({_type_name(kind[0])})"
    return kind if isinstance(kind, str) else "microsoft.graph.complexType"


def _check_primitive(name: str, value: Any, kind: str) -> None:
    if isinstance(value, (list, dict)):
        raise _unexpected(value, "PrimitiveValue")
    ok = {S: isinstance(value, str), B: isinstance(value, bool),
          I: isinstance(value, int) and not isinstance(value, bool) and -2**31 <= value < 2**31,
          G: isinstance(value, str) and bool(_GUID.match(value))}[kind]
    if not ok:
        raise GraphError(400, "BadRequest", f"Cannot convert the literal '{json.dumps(value)}' to the expected type '{kind}'.")


def _check(name: str, value: Any, kind: Type) -> None:
    if value is None:
        if isinstance(kind, str):
            return
        expected = _type_name(kind)
        raise GraphError(400, "BadRequest", f"A null value was found for the property named '{name}', which has the "
                                            f"expected type '{expected}[Nullable=False]'. The expected type "
                                            f"'{expected}[Nullable=False]' does not allow null values.")
    if isinstance(kind, list):
        if not isinstance(value, list):
            raise _unexpected(value, "StartArray")
        for item in value:
            _check(name, item, kind[0])
    elif isinstance(kind, dict):
        validate(value, kind, name)
    else:
        _check_primitive(name, value, kind)


def validate(body: Any, schema: dict[str, Type], resource: str = "request") -> dict[str, Any]:
    """`body` if its known properties have the schema's types; Graph's 400 otherwise."""
    if not isinstance(body, dict):
        raise _unexpected(body, "StartObject")
    for name in schema.get("!required", []):
        if body.get(name) is None:
            raise GraphError(400, "Request_BadRequest", f"Invalid value specified for property '{name}' of resource '{resource}'.")
    for name, value in body.items():
        kind = schema.get(name)
        if kind is not None and name != "!required":
            _check(name, value, kind)
    return body
