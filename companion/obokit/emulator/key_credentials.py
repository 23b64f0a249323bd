"""Certificate credentials (`keyCredentials`) of an application: what Graph stores and shows for a PATCH, and the
lookup by thumbprint that the token endpoint makes.

Graph's rules (keycredential.md, applications-how-to-add-certificate.md in microsoft-graph-docs-contrib):
`key` is the base64 DER certificate and is read back only with `$select=keyCredentials` on one object (`null`
otherwise); `customKeyIdentifier` defaults to the certificate's SHA-1 thumbprint, shown as hex
("52ED9B50...", msgraph-sdk-java#1823; `az ad app credential list --cert`); `type`/`usage` are
`AsymmetricX509Cert`/`Verify`. PATCH replaces the whole collection.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from .errors import GraphError
from .ids import stable_id

KEY_TYPE = "AsymmetricX509Cert"
USAGES = ("Sign", "Verify")
_STAMP = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class RegisteredKey:
    """A certificate registered on an app, with the dates of its key credential."""

    credential: dict[str, Any]
    cert: x509.Certificate

    @property
    def start(self) -> dt.datetime:
        return _parse_time(self.credential.get("startDateTime")) or self.cert.not_valid_before_utc

    @property
    def end(self) -> dt.datetime:
        return _parse_time(self.credential.get("endDateTime")) or self.cert.not_valid_after_utc

    def valid_at(self, when: dt.datetime) -> bool:
        return self.start <= when <= self.end


def _parse_time(value: Any) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def load_certificate(key: Any) -> x509.Certificate | None:
    """The certificate in a `key` value (base64 DER), or None if it is not one."""
    try:
        return x509.load_der_x509_certificate(base64.b64decode(str(key), validate=True))
    except (ValueError, binascii.Error):
        return None


def _bad_request(message: str) -> GraphError:
    return GraphError(400, "Request_BadRequest", message)


def _new_credential(app_id: str, requested: dict[str, Any]) -> dict[str, Any]:
    cert = load_certificate(requested.get("key"))
    if cert is None:  # entra-docs (servicePrincipal keyCredentials how-to): the message for a key that is no certificate
        raise _bad_request("Invalid certificate: Key value is invalid certificate")
    der = cert.public_bytes(serialization.Encoding.DER)
    thumbprint = cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - Graph's thumbprint is SHA-1
    start = requested.get("startDateTime") or cert.not_valid_before_utc.strftime(_STAMP)
    end = requested.get("endDateTime") or cert.not_valid_after_utc.strftime(_STAMP)
    end_at = _parse_time(end)
    if end_at is None or end_at > cert.not_valid_after_utc:  # AAD Graph's 400 (Azure/azure-rest-api-specs#11985)
        raise _bad_request("Key credential end date is invalid.")
    return {
        "customKeyIdentifier": requested.get("customKeyIdentifier") or thumbprint,
        "displayName": requested.get("displayName") or cert.subject.rfc4514_string(),
        "endDateTime": end,
        "key": None,
        "keyId": requested.get("keyId") or stable_id("key-credential", app_id, thumbprint),
        "startDateTime": start,
        "type": KEY_TYPE,
        "usage": requested.get("usage"),
        "_key": base64.b64encode(der).decode(),
    }


def replace_credentials(app: dict[str, Any], requested: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The app's new `keyCredentials` for a PATCH (or POST) that sets them; Graph's 400 for a bad entry.

    An entry without `key` keeps the stored credential of the same `keyId` (what a read gives back)."""
    existing = {c.get("keyId"): c for c in app.get("keyCredentials") or []}
    result = []
    for entry in requested:
        if entry.get("usage") not in USAGES:  # msgraph-sdk-java#1823 quotes Graph's message
            raise _bad_request('The value for the property "usage" in one of your credentials is invalid. '
                               "Acceptable values are Sign, Verify.")
        if entry.get("type") != KEY_TYPE:  # no capture found: worded like the "usage" message
            raise _bad_request('The value for the property "type" in one of your credentials is invalid. '
                               f"Acceptable values are {KEY_TYPE}.")
        if entry.get("key"):
            result.append(_new_credential(app["appId"], entry))
        elif entry.get("keyId") in existing:
            result.append(existing[entry["keyId"]])
        else:
            raise _bad_request("Invalid certificate: Key value is invalid certificate")
    return result


def shown(credentials: list[dict[str, Any]], with_key: bool) -> list[dict[str, Any]]:
    """The credentials as Graph reads them: `key` only when asked for with `$select` on one object."""
    return [{**c, "key": c.get("_key") if with_key else None} for c in credentials]


def find_key(app: dict[str, Any], *, sha1: bytes | None = None, sha256: bytes | None = None) -> RegisteredKey | None:
    """The app's `Verify` certificate with this SHA-1 or SHA-256 thumbprint."""
    for credential in app.get("keyCredentials") or []:
        if credential.get("type") != KEY_TYPE or credential.get("usage") != "Verify":
            continue
        cert = load_certificate(credential.get("_key"))
        if cert is None:
            continue
        if (sha256 and cert.fingerprint(hashes.SHA256()) == sha256) or (
            sha1 and cert.fingerprint(hashes.SHA1()) == sha1  # noqa: S303 - x5t is SHA-1 by definition
        ):
            return RegisteredKey(credential, cert)
    return None
