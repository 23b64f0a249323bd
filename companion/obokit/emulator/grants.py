"""The /token endpoint's grants: authorization_code (+PKCE), refresh_token, client_credentials,
device_code and the On-Behalf-Of jwt-bearer grant, with Entra's checks and AADSTS errors."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import jwt

from . import errors
from .client_assertions import ClientAssertions
from .conditional_access import ConditionalAccess
from .directory import Directory, ScopeRequest
from .errors import EntraError
from .ids import GRAPH_APP_ID, TENANT_ID
from .store import Store
from .tokens import (
    V1_ISSUER,
    Subject,
    TokenFactory,
    client_info,
    new_refresh_token,
    refresh_token_key,
    response_scope,
    v2_issuer,
)

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
CODE_LIFETIME = 600
REFRESH_LIFETIME = 90 * 24 * 3600


@dataclass
class PendingCode:
    client_id: str
    redirect_uri: str
    user_id: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    expires_at: float
    redeemed: bool = False
    consented: dict[str, list[str]] = field(default_factory=dict)  # resource SP id -> scopes consented in this sign-in


@dataclass
class DeviceFlow:
    client_id: str
    scope: str
    user_code: str
    expires_at: float
    user_id: str | None = None
    declined: bool = False
    consented: dict[str, list[str]] = field(default_factory=dict)  # as PendingCode.consented


@dataclass
class Stats:
    """Counts of token requests, so tests and benchmarks can see how many exchanges happened."""

    by_grant: Counter[str] = field(default_factory=Counter)
    obo_by_user_scope: Counter[tuple[str, str]] = field(default_factory=Counter)

    def snapshot(self) -> dict[str, Any]:
        return {
            "token_requests": dict(self.by_grant),
            "obo_exchanges": [
                {"user": user, "scope": scope, "count": count}
                for (user, scope), count in sorted(self.obo_by_user_scope.items())
            ],
        }

    def clear(self) -> None:
        self.by_grant.clear()
        self.obo_by_user_scope.clear()


def _subject(user: dict[str, Any] | None, app: dict[str, Any], sp: dict[str, Any], acr: str) -> Subject:
    return Subject(user, app, sp, acr != "0", client_acr=acr)


def pkce_s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class TokenService:
    """Validates token requests and issues tokens."""

    def __init__(self, store: Store, directory: Directory, tokens: TokenFactory) -> None:
        self.store = store
        self.directory = directory
        self.tokens = tokens
        self.codes: dict[str, PendingCode] = {}
        self.device_flows: dict[str, DeviceFlow] = {}
        self.stats = Stats()
        self.conditional_access = ConditionalAccess()
        self.assertions = ClientAssertions(tokens.keys, tokens.authority)

    # -- entry point ----------------------------------------------------------------------
    async def handle(self, form: dict[str, str], authorization: str | None) -> dict[str, Any]:
        grant_type = form.get("grant_type")
        if not grant_type:
            raise errors.missing_parameter("grant_type")
        self.stats.by_grant[grant_type] += 1
        client_id, secret = self._client_credentials(form, authorization)
        if not client_id:
            raise errors.missing_parameter("client_id")
        app, sp = self.directory.require_client(client_id)
        acr = self._authenticate(app, secret, form)
        handler = {
            "authorization_code": self._authorization_code,
            "refresh_token": self._refresh_token,
            "client_credentials": self._client_credentials_grant,
            DEVICE_CODE: self._device_code,
            JWT_BEARER: self._on_behalf_of,
        }.get(grant_type)
        if handler is None:
            raise EntraError(
                70003, "unsupported_grant_type", f"The app requested an unsupported grant type '{grant_type}'."
            )
        return await handler(form, app, sp, acr)

    def _authenticate(self, app: dict[str, Any], secret: str | None, form: dict[str, str]) -> str:
        """The client's acr: "2" for a client assertion, "1" for a secret, "0" for a public client without one."""
        if form.get("client_assertion") or form.get("client_assertion_type"):
            return self.assertions.authenticate(app, form)
        self.directory.check_client_secret(app, secret)
        return "1" if secret is not None else "0"

    @staticmethod
    def _client_credentials(form: dict[str, str], authorization: str | None) -> tuple[str | None, str | None]:
        """client_secret_basic (not form-encoded, as fastmcp sends it) or client_secret_post."""
        if authorization and authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:]).decode()
                client_id, _, secret = decoded.partition(":")
                return unquote(client_id), unquote(secret)
            except (ValueError, UnicodeDecodeError):
                raise EntraError(
                    7000216, "invalid_client", "'client_assertion', 'client_secret' or 'request' is required."
                ) from None
        return form.get("client_id"), form.get("client_secret")

    # -- issuing --------------------------------------------------------------------------
    async def issue(
        self,
        subject: Subject,
        scopes: ScopeRequest,
        *,
        nonce: str | None = None,
        want_client_info: bool = False,
        refresh_scope: str | None = None,
        consented: dict[str, list[str]] | None = None,
    ) -> dict[str, Any]:
        if scopes.resource_sp is None:  # only OIDC scopes: Entra answers with a Graph token
            scopes = self.directory.resolve_scopes(" ".join(["User.Read", *scopes.oidc]))
        assert scopes.resource_sp is not None
        user = subject.user
        if user is not None:
            principals = [user["id"], *self.directory.user_group_ids(user["id"])]
            extra = (consented or {}).get(scopes.resource_sp["id"], [])
            scp = self.directory.effective_scopes(subject.client_app, subject.client_sp, scopes, user["id"], extra)
        else:
            principals, scp = [subject.client_sp["id"]], []
        roles = self.directory.assigned_roles(principals, scopes.resource_sp)
        access_token, lifetime = self.tokens.access_token(subject, scopes, scp=scp, roles=roles)
        body: dict[str, Any] = {"token_type": "Bearer"}
        if user is not None:  # a client-credentials answer has no `scope` (entra-docs v2-oauth2-client-creds-grant-flow.md)
            body["scope"] = response_scope(scopes, scp)
        body.update(expires_in=lifetime, ext_expires_in=lifetime, access_token=access_token)
        if user is not None:
            if "offline_access" in scopes.oidc:
                body["refresh_token"] = await self._store_refresh_token(subject, refresh_scope or scopes.raw)
            if "openid" in scopes.oidc:
                body["id_token"] = self.tokens.id_token(user, subject.client_app["appId"], nonce, scopes.oidc)
            if want_client_info:
                body["client_info"] = client_info(user["id"])
        return body

    async def _store_refresh_token(self, subject: Subject, scope: str) -> str:
        assert subject.user is not None
        token, key = new_refresh_token()
        now = time.time()
        await self.store.put(
            "refreshTokens",
            {
                "id": key,
                "clientId": subject.client_app["appId"],
                "userId": subject.user["id"],
                "scope": scope,
                "issuedAt": now,
                "expiresAt": now + REFRESH_LIFETIME,
            },
        )
        return token

    def _require_consent(self, subject: Subject, scopes: ScopeRequest, consented: dict[str, list[str]] | None = None) -> None:
        user_id = subject.user["id"] if subject.user else None
        extra = (consented or {}).get((scopes.resource_sp or {}).get("id", ""), [])
        if self.directory.missing_consent(subject.client_app, subject.client_sp, scopes, user_id, extra):
            raise errors.consent_required(subject.client_app["appId"], subject.client_app["displayName"])

    # -- grants ---------------------------------------------------------------------------
    async def _authorization_code(self, form, app, sp, acr) -> dict[str, Any]:
        code = form.get("code")
        if not code:
            raise errors.missing_parameter("code")
        pending = self.codes.get(code)
        if pending is None or pending.client_id != app["appId"]:
            raise EntraError(
                9002313, "invalid_grant", "Invalid request. Request is malformed or invalid. - [The code is invalid.]"
            )
        if pending.redeemed:
            raise EntraError(
                54005,
                "invalid_grant",
                "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use "
                "an existing refresh token.",
            )
        if time.time() > pending.expires_at:
            raise EntraError(70008, "invalid_grant", "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.")
        if form.get("redirect_uri") != pending.redirect_uri:
            raise EntraError(
                50148 if pending.code_challenge else 70002,
                "invalid_grant",
                "The redirect_uri in the token request does not match the one used in the authorization request.",
            )
        if pending.code_challenge:
            verifier = form.get("code_verifier")
            expected = pkce_s256(verifier) if verifier and pending.code_challenge_method == "S256" else verifier
            if expected != pending.code_challenge:
                raise EntraError(
                    501481, "invalid_grant", "The Code_Verifier doesn't match the code_challenge supplied in the authorization request."
                )
        pending.redeemed = True
        scopes = self._redemption_scopes(form.get("scope"), pending, app)
        self.directory.check_resource(form.get("resource"), scopes)
        user = self.directory.user(pending.user_id)
        subject = _subject(user, app, sp, acr)
        self._require_consent(subject, scopes, pending.consented)
        return await self.issue(
            subject, scopes, nonce=pending.nonce, want_client_info=form.get("client_info") == "1",
            consented=pending.consented,
        )

    def _redemption_scopes(self, scope: str | None, pending: PendingCode, app: dict[str, Any]) -> ScopeRequest:
        """`scope` is optional when a code is redeemed: the authorize request's scopes apply (entra-docs
        v2-oauth2-auth-code-flow.md; MSAL-Python#125). If those named several resources, one must be chosen:
        AADSTS28003 (text of SecureAuthCorp/oauth2c#130)."""
        if (scope or "").strip():
            return self.directory.resolve_scopes(scope, app["displayName"])
        try:
            return self.directory.resolve_scopes(pending.scope, app["displayName"])
        except EntraError as exc:
            if exc.code != 28000:
                raise
            raise EntraError(
                28003,
                "invalid_request",
                "Provided value for the input parameter scope cannot be empty when requesting an access token "
                "using the provided authorization code. Please specify a valid scope.",
            ) from None

    async def _refresh_token(self, form, app, sp, acr) -> dict[str, Any]:
        token = form.get("refresh_token")
        if not token:
            raise errors.missing_parameter("refresh_token")
        record = self.store.get("refreshTokens", refresh_token_key(token))
        if record is None or record["clientId"] != app["appId"]:
            raise EntraError(9002313, "invalid_grant", "Invalid request. Request is malformed or invalid. - [The refresh token is invalid.]")
        if time.time() > record["expiresAt"]:
            raise EntraError(700082, "invalid_grant", "The refresh token has expired due to inactivity.")
        scopes = self.directory.resolve_scopes(form.get("scope") or record["scope"], app["displayName"])
        self.directory.check_resource(form.get("resource"), scopes)
        if not scopes.oidc:
            scopes.oidc.append("offline_access")
        subject = _subject(self.directory.user(record["userId"]), app, sp, acr)
        self._require_consent(subject, scopes)
        return await self.issue(subject, scopes, want_client_info=form.get("client_info") == "1")

    async def _client_credentials_grant(self, form, app, sp, acr) -> dict[str, Any]:
        if acr == "0":
            raise errors.missing_credential()
        scope = form.get("scope") or ""
        scopes = self.directory.resolve_scopes(scope, app["displayName"])
        if not scopes.default or scopes.values or scopes.resource_sp is None:
            raise EntraError(
                1002012,
                "invalid_scope",
                f"The provided value for scope {scope} is not valid. Client credential flows must have a "
                "scope value with /.default suffixed to the resource identifier (application ID URI).",
            )
        return await self.issue(_subject(None, app, sp, acr), scopes)

    async def _device_code(self, form, app, sp, acr) -> dict[str, Any]:
        device_code = form.get("device_code") or form.get("code")
        if not device_code:
            raise errors.missing_parameter("device_code")
        flow = self.device_flows.get(device_code)
        # Errors of entra-docs v2-oauth2-device-code.md; texts of 70016 and 70020 as captured in
        # MicrosoftDocs/azure-docs#33126 and Azure/azure-cli#22251 (the AADSTS codes of the other two are not public).
        if flow is None or flow.client_id != app["appId"]:
            raise EntraError(70000, "bad_verification_code", "The provided value for the input parameter 'device_code' is not valid.")
        if time.time() > flow.expires_at:
            raise EntraError(70020, "expired_token", "The provided value for the input parameter 'device_code' is not valid. This device code has expired.")
        if flow.declined:
            raise EntraError(70000, "authorization_declined", "The user declined the request.")
        if flow.user_id is None:
            raise EntraError(70016, "authorization_pending", "OAuth 2.0 device flow error. Authorization is pending. Continue polling.")
        del self.device_flows[device_code]
        scopes = self.directory.resolve_scopes(flow.scope, app["displayName"])
        subject = _subject(self.directory.user(flow.user_id), app, sp, acr)
        self._require_consent(subject, scopes, flow.consented)
        return await self.issue(subject, scopes, want_client_info=form.get("client_info") == "1", consented=flow.consented)

    def _verify_assertion(self, assertion: str) -> dict[str, Any]:
        """Signature, issuer and lifetime checks of an OBO assertion (50027, 50013, 500133)."""
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise errors.malformed_jwt() from None
        try:
            if header.get("alg") != "RS256":
                raise jwt.InvalidAlgorithmError("alg")
            claims = jwt.decode(
                assertion,
                self._key_for(header),
                algorithms=["RS256"],
                options={"verify_aud": False, "verify_exp": False, "verify_nbf": False, "require": ["exp"]},
            )
        except (jwt.PyJWTError, KeyError) as exc:
            # As Entra words it (Azure/azure-sdk-for-java#25109, MSAL.NET#2604): the thumbprint in hex
            reason = "The key was not found." if isinstance(exc, KeyError) else (
                "The provided signature value did not match the expected signature value.")
            raise EntraError(
                50013,
                "invalid_grant",
                f"Assertion failed signature validation. [Reason - {reason}, Thumbprint of key used by client: "
                f"'{errors.hex_thumbprint(header.get('kid', ''))}']",
            ) from None
        if claims.get("iss") not in (v2_issuer(self.tokens.authority), V1_ISSUER):
            raise EntraError(50013, "invalid_grant", "Assertion failed signature validation. [Reason - The issuer is not trusted.]")
        now = int(time.time())
        if claims["exp"] <= now or claims.get("nbf", 0) > now + 300:
            raise EntraError(
                500133,
                "invalid_grant",
                "Assertion is not within its valid time range. Ensure that the access token is not expired "
                "before using it for user assertion, or request a new token. "
                f"Current time: {time.strftime('%Y-%m-%dT%H:%M:%S.0000000Z', time.gmtime(now))}, "
                f"expiry time of assertion {time.strftime('%Y-%m-%dT%H:%M:%S.0000000Z', time.gmtime(unverified.get('exp', 0)))}.",
            )
        return claims

    def _key_for(self, header: dict[str, Any]):
        keys = {k.kid: k for k in (self.tokens.keys.current, self.tokens.keys.next)}
        return keys[header["kid"]].private_key.public_key()

    async def _on_behalf_of(self, form, app, sp, acr) -> dict[str, Any]:
        for name in ("assertion", "requested_token_use", "scope"):
            if not form.get(name):
                raise errors.missing_parameter(name)
        if form["requested_token_use"] != "on_behalf_of":
            raise EntraError(
                900144, "invalid_request", "The request body must contain the following parameter: 'requested_token_use'."
            )
        if acr == "0":
            raise errors.missing_credential()
        claims = self._verify_assertion(form["assertion"])
        audiences = {app["appId"], *app.get("identifierUris", [])}
        if claims.get("aud") not in audiences:
            raise EntraError(
                500131,
                "invalid_grant",
                f"Assertion audience does not match the Client app presenting the assertion. The audience in "
                f"the assertion was '{claims.get('aud')}' and the expected audience is '{app['appId']}' or one "
                f"of the Application Uris of this application with App ID '{app['appId']}'({app['displayName']}). "
                "The downstream client must request a token for the expected audience (the application that "
                "made the OBO request) and this application should use that token as the assertion.",
            )
        user = self.directory.user(claims.get("oid", ""))
        if "scp" not in claims or claims.get("idtyp") == "app" or user is None:
            raise EntraError(  # `unauthorized_client`: MSAL.NET#2130
                7000114,
                "unauthorized_client",
                f"Application '{app['appId']}' is not allowed to make application on-behalf-of calls.",
            )
        scopes = self.directory.resolve_scopes(form["scope"], app["displayName"])
        subject = _subject(user, app, sp, acr)
        self._require_consent(subject, scopes)
        self.conditional_access.check(claims, (scopes.resource_sp or {}).get("appId", GRAPH_APP_ID))
        self.stats.obo_by_user_scope[(user["id"], form["scope"])] += 1
        return await self.issue(subject, scopes, want_client_info=form.get("client_info") == "1")

    # -- authorize / device helpers -------------------------------------------------------
    def new_code(self, pending: PendingCode) -> str:
        code = "1.A" + secrets.token_urlsafe(48)
        self.codes[code] = pending
        self._expire_old()
        return code

    def new_device_flow(self, client_id: str, scope: str, lifetime: int = 900) -> tuple[str, DeviceFlow]:
        device_code = "DAQABAAEAAA" + secrets.token_urlsafe(48)
        alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
        user_code = "".join(secrets.choice(alphabet) for _ in range(9))
        flow = DeviceFlow(client_id, scope, user_code, time.time() + lifetime)
        self.device_flows[device_code] = flow
        return device_code, flow

    def device_flow_by_user_code(self, user_code: str) -> DeviceFlow | None:
        user_code = user_code.strip().upper()
        for flow in self.device_flows.values():
            if flow.user_code == user_code and time.time() <= flow.expires_at:
                return flow
        return None

    def _expire_old(self) -> None:
        now = time.time()
        for code in [c for c, p in self.codes.items() if p.expires_at < now - CODE_LIFETIME]:
            del self.codes[code]


__all__ = ["TokenService", "PendingCode", "DeviceFlow", "Stats", "CODE_LIFETIME", "TENANT_ID"]
