"""Certificate credentials, through the real libraries (no mocks): Graph `keyCredentials` and RFC 7523 client
assertions at /token, signed by MSAL (RS256 + `x5t` with a thumbprint; PS256 + `x5t#S256` with the public
certificate) and azure-identity (sync: MSAL's RS256; aio: its own PS256), for client credentials, auth code,
refresh and On-Behalf-Of, and the AADSTS errors Entra answers when an assertion is wrong.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import msal
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import CertificateCredential, OnBehalfOfCredential
from azure.identity.aio import CertificateCredential as AsyncCertificateCredential
from azure.identity.aio import OnBehalfOfCredential as AsyncOnBehalfOfCredential
from azure.identity.aio import ClientSecretCredential as AsyncClientSecretCredential
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from msgraph.generated.models.application import Application
from msgraph.generated.models.key_credential import KeyCredential

from obokit.clients.graph import graph_client
from obokit.emulator import Emulator
from tenant_setup import Registration, admin_headers, consented_api, msal_sign_in, register_api, user_token, user_upn

pytestmark = [
    pytest.mark.emulator,
    # the SDK instantiates its own deprecated per-builder configuration classes; not ours to fix.
    pytest.mark.filterwarnings("ignore:This class is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:GetQueryParameters is deprecated:DeprecationWarning"),
]

REDIRECT_URI = "http://localhost:8767/callback"
GRAPH_USER_READ = "https://graph.microsoft.com/User.Read"
DELAY = (0.6, 1.0)  # the tenant profile's replication delay here (as tests/test_tenant_profile.py)


# -- certificates -----------------------------------------------------------------------------
@dataclass
class Cert:
    """A short-lived self-signed certificate and its key; the repr leaves the key out."""

    key: rsa.RSAPrivateKey = field(repr=False)
    cert: x509.Certificate

    @property
    def key_pem(self) -> str:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode()

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def der_b64(self) -> str:
        return base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()

    @property
    def sha1(self) -> str:
        return self.cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - the thumbprint Entra shows

    @property
    def sha256(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex().upper()

    def pem_bundle(self) -> bytes:
        """Key and certificate in one PEM, as azure-identity's `certificate_data` takes them."""
        return (self.key_pem + self.cert_pem).encode()


def make_cert(name: str = "obokit test", *, valid_from: float = -300, valid_for: float = 86400) -> Cert:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(seconds=valid_from))
        .not_valid_after(now + dt.timedelta(seconds=valid_from + valid_for))
        .sign(key, hashes.SHA256())
    )
    return Cert(key, cert)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def patch_keys(emu: Emulator, reg: Registration, credentials: list[dict[str, Any]]) -> httpx.Response:
    with httpx.Client(base_url=emu.graph_url, headers=admin_headers(emu)) as graph:
        return graph.patch(f"/applications/{reg.object_id}", json={"keyCredentials": credentials})


def key_credential(cert: Cert, **extra: Any) -> dict[str, Any]:
    return {"type": "AsymmetricX509Cert", "usage": "Verify", "key": cert.der_b64, **extra}


def register_with_cert(emu: Emulator, name: str, cert: Cert) -> Registration:
    reg = consented_api(emu, name, REDIRECT_URI)
    assert patch_keys(emu, reg, [key_credential(cert)]).status_code == 204
    return reg


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def confidential(emu: Emulator, reg: Registration, credential: Any) -> msal.ConfidentialClientApplication:
    """A new MSAL client each time: MSAL answers a repeated request that failed with 400 from its own cache."""
    return msal.ConfidentialClientApplication(reg.app_id, client_credential=credential,
                                              authority=emu.tenant_authority, instance_discovery=False)


def thumbprint_credential(cert: Cert, signing_key: Cert | None = None) -> dict[str, str]:
    return {"private_key": (signing_key or cert).key_pem, "thumbprint": cert.sha1}


def certificate_credential(cert: Cert) -> dict[str, str]:
    return {"private_key": cert.key_pem, "public_certificate": cert.cert_pem}


def token_endpoint(emu: Emulator) -> str:
    return f"{emu.tenant_authority}/oauth2/v2.0/token"


def signed_assertion(emu: Emulator, reg: Registration, cert: Cert, *, header: dict[str, Any] | None = None,
                     **claims: Any) -> str:
    """A client assertion signed like MSAL's (RS256, `x5t`), with claims overridden by `claims`."""
    now = int(time.time())
    payload = {"aud": token_endpoint(emu), "iss": reg.app_id, "sub": reg.app_id, "jti": str(uuid.uuid4()),
               "iat": now, "nbf": now, "exp": now + 600, **claims}
    headers = {"x5t": b64url(cert.cert.fingerprint(hashes.SHA1()))} if header is None else header  # noqa: S303
    return jwt.encode(payload, cert.key, algorithm="RS256", headers=headers)


def app_token(emu: Emulator, reg: Registration, credential: Any) -> dict[str, Any]:
    return confidential(emu, reg, credential).acquire_token_for_client([f"api://{reg.app_id}/.default"])


def code(result: dict[str, Any]) -> int | None:
    return (result.get("error_codes") or [None])[0]


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cert() -> Cert:
    return make_cert("obokit certificate api")


@pytest.fixture(scope="module")
def api(emulator: Emulator, cert: Cert) -> Registration:
    """A v2 API with admin consent for Graph, a secret and the module's certificate."""
    return register_with_cert(emulator, "certificate api", cert)


@pytest.fixture(scope="module")
def stranger() -> Cert:
    """A certificate registered nowhere."""
    return make_cert("unregistered")


@pytest.fixture(scope="module")
def adele_assertion(emulator: Emulator, api: Registration) -> str:
    return user_token(emulator, api, user_upn("adele"), REDIRECT_URI)


# -- Graph keyCredentials -------------------------------------------------------------------------
def test_graph_shows_the_certificate_and_its_key_only_when_selected(emulator: Emulator, api: Registration,
                                                                    cert: Cert) -> None:
    with httpx.Client(base_url=emulator.graph_url, headers=admin_headers(emulator)) as graph:
        (shown,) = graph.get(f"/applications/{api.object_id}").raise_for_status().json()["keyCredentials"]
        selected = graph.get(f"/applications/{api.object_id}", params={"$select": "keyCredentials"}).json()
        listed = graph.get("/applications", params={"$filter": f"appId eq '{api.app_id}'"}).json()["value"][0]
    assert shown["customKeyIdentifier"] == cert.sha1  # the SHA-1 thumbprint in hex, as Graph shows it
    assert uuid.UUID(shown["keyId"]) and shown["key"] is None
    assert (shown["type"], shown["usage"], shown["displayName"]) == ("AsymmetricX509Cert", "Verify", "CN=obokit certificate api")
    assert shown["startDateTime"] == cert.cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert shown["endDateTime"] == cert.cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert selected["keyCredentials"][0]["key"] == cert.der_b64  # only with $select on one object
    assert listed["keyCredentials"][0]["key"] is None


def test_graph_refuses_bad_key_credentials(emulator: Emulator, api: Registration, cert: Cert) -> None:
    not_a_cert = patch_keys(emulator, api, [key_credential(cert, key=base64.b64encode(b"not a certificate").decode())])
    assert not_a_cert.status_code == 400
    assert not_a_cert.json()["error"]["message"] == "Invalid certificate: Key value is invalid certificate"
    bad_usage = patch_keys(emulator, api, [key_credential(cert, usage="Encrypt")])
    assert bad_usage.status_code == 400 and '"usage"' in bad_usage.json()["error"]["message"]
    too_long = patch_keys(emulator, api, [key_credential(cert, endDateTime="2099-01-01T00:00:00Z")])
    assert too_long.json()["error"]["message"] == "Key credential end date is invalid."
    assert "access_token" in app_token(emulator, api, thumbprint_credential(cert))  # nothing was changed


async def test_msgraph_sdk_adds_a_certificate(emulator: Emulator) -> None:
    reg = register_api(emulator, name="msgraph-sdk certificate api")
    cert = make_cert("sdk added")
    client_id, secret = emulator.automation_credentials()
    async with AsyncClientSecretCredential(emulator.tenant_id, client_id, secret, authority=emulator.authority,
                                           disable_instance_discovery=True) as credential:
        client = graph_client(credential, base_url=emulator.graph_url)
        body = Application(key_credentials=[KeyCredential(
            type="AsymmetricX509Cert", usage="Verify", key=cert.cert.public_bytes(serialization.Encoding.DER),
            display_name="CN=sdk added")])
        await client.applications.by_application_id(reg.object_id).patch(body)
        app = await client.applications.by_application_id(reg.object_id).get()
    (added,) = app.key_credentials
    assert added.display_name == "CN=sdk added" and added.key is None and added.key_id is not None
    assert "access_token" in app_token(emulator, reg, certificate_credential(cert))


# -- MSAL ---------------------------------------------------------------------------------------
def test_msal_thumbprint_client_credentials(emulator: Emulator, api: Registration, cert: Cert) -> None:
    result = app_token(emulator, api, thumbprint_credential(cert))
    assert "access_token" in result, result.get("error_description")
    claims = claims_of(result["access_token"])
    assert claims["azp"] == api.app_id and claims["azpacr"] == "2"  # "1" is a secret, "2" a certificate
    assert claims["ver"] == "2.0" and claims["aud"] == api.app_id


def test_a_secret_still_gives_azpacr_1(emulator: Emulator, api: Registration) -> None:
    claims = claims_of(app_token(emulator, api, api.secret)["access_token"])
    assert claims["azpacr"] == "1"


def test_msal_public_certificate_obo_calls_graph(emulator: Emulator, api: Registration, cert: Cert,
                                                 adele_assertion: str) -> None:
    result = confidential(emulator, api, certificate_credential(cert)).acquire_token_on_behalf_of(
        adele_assertion, [GRAPH_USER_READ])
    assert "access_token" in result, result.get("error_description")
    claims = claims_of(result["access_token"])
    assert claims["appid"] == api.app_id and claims["appidacr"] == "2" and claims["upn"] == user_upn("adele")
    me = httpx.get(f"{emulator.graph_url}/me", headers={"Authorization": f"Bearer {result['access_token']}"})
    assert me.status_code == 200 and me.json()["userPrincipalName"] == user_upn("adele")


def test_msal_auth_code_then_refresh_with_one_reused_assertion(emulator: Emulator, api: Registration,
                                                               cert: Cert) -> None:
    """MSAL signs one assertion and sends it again for 9 minutes (its AutoRefresher): Entra accepts a repeated
    `jti`, so the emulator does too, and the refresh below goes through with the sign-in's assertion."""
    app = confidential(emulator, api, certificate_credential(cert))
    first = msal_sign_in(app, api.scope, user_upn("bruno"), REDIRECT_URI)
    assert claims_of(first["access_token"])["azpacr"] == "2"
    (account,) = app.get_accounts(username=user_upn("bruno"))
    before = emulator.stats()["token_requests"].get("refresh_token", 0)
    refreshed = app.acquire_token_silent([api.scope], account=account, force_refresh=True)
    assert refreshed and "access_token" in refreshed, (refreshed or {}).get("error_description")
    assert emulator.stats()["token_requests"].get("refresh_token", 0) == before + 1
    assert claims_of(refreshed["access_token"])["azpacr"] == "2"


def test_msal_unknown_certificate_names_the_thumbprint_it_sent(emulator: Emulator, api: Registration,
                                                               stranger: Cert) -> None:
    by_thumbprint = app_token(emulator, api, thumbprint_credential(stranger))  # RS256 + x5t (SHA-1)
    assert code(by_thumbprint) == 700027 and by_thumbprint["error"] == "invalid_client"
    assert "[Reason - The key was not found." in by_thumbprint["error_description"]
    assert f"Thumbprint of key used by client: '{stranger.sha1}'" in by_thumbprint["error_description"]
    by_certificate = app_token(emulator, api, certificate_credential(stranger))  # PS256 + x5t#S256, preferred
    assert f"Thumbprint of key used by client: '{stranger.sha256}'" in by_certificate["error_description"]


def test_msal_signature_by_another_key_is_700027(emulator: Emulator, api: Registration, cert: Cert,
                                                 stranger: Cert) -> None:
    result = app_token(emulator, api, thumbprint_credential(cert, signing_key=stranger))
    assert code(result) == 700027
    assert "Key was found, but use of the key to verify the signature failed." in result["error_description"]
    assert f"Found key 'Start={cert.cert.not_valid_before_utc:%m/%d/%Y %H:%M:%S}" in result["error_description"]


@pytest.mark.parametrize(
    ("claims", "header", "expected", "text"),
    [
        ({"exp": -600, "nbf": -1200}, None, 700024, "Client assertion is not within its valid time range."),
        ({"nbf": 3600, "exp": 4200}, None, 700024, "assertion valid from"),
        ({"sub": "someone-else"}, None, 700021, "doesn't match 'client_id' parameter"),
        ({"aud": "https://login.microsoftonline.com/common/oauth2/v2.0/token"}, None, 700023,
         "audience claim does not match Realm issuer"),
        ({}, {}, 50027, "No certificate thumbprint specified in token header."),
    ],
    ids=["expired", "not-yet-valid", "sub-mismatch", "wrong-aud", "no-thumbprint"],
)
def test_msal_surfaces_assertion_errors(emulator: Emulator, api: Registration, cert: Cert, claims: dict[str, Any],
                                        header: dict[str, Any] | None, expected: int, text: str) -> None:
    now = int(time.time())
    claims = {k: now + v if k in ("exp", "nbf") else v for k, v in claims.items()}  # exp/nbf: seconds from now
    assertion = signed_assertion(emulator, api, cert, header=header, **claims)
    result = app_token(emulator, api, {"client_assertion": lambda: assertion})
    assert code(result) == expected and result["error"] == "invalid_client", result.get("error_description")
    assert text in result["error_description"]


def test_the_v1_token_endpoint_and_the_tenant_domain_are_audiences_too(emulator: Emulator, api: Registration,
                                                                      cert: Cert) -> None:
    for aud in (f"{emulator.authority}/{emulator.tenant_domain}/oauth2/v2.0/token",
                f"{emulator.tenant_authority}/oauth2/token"):
        assertion = signed_assertion(emulator, api, cert, aud=aud)
        result = app_token(emulator, api, {"client_assertion": lambda a=assertion: a})
        assert "access_token" in result, result.get("error_description")


def test_an_expired_key_credential_is_refused(emulator: Emulator) -> None:
    old = make_cert("expired", valid_from=-2 * 86400, valid_for=86400)
    reg = register_with_cert(emulator, "expired certificate api", old)
    result = app_token(emulator, reg, thumbprint_credential(old))
    assert code(result) == 700027 and "[Reason - The key used is expired." in result["error_description"]


# -- azure-identity -------------------------------------------------------------------------------
def test_sync_certificate_credential(emulator: Emulator, api: Registration, cert: Cert) -> None:
    credential = CertificateCredential(emulator.tenant_id, api.app_id, certificate_data=cert.pem_bundle(),
                                       authority=emulator.authority, disable_instance_discovery=True)
    claims = claims_of(credential.get_token(f"api://{api.app_id}/.default").token)
    assert claims["azp"] == api.app_id and claims["azpacr"] == "2"


async def test_async_certificate_credential(emulator: Emulator, api: Registration, cert: Cert) -> None:
    async with AsyncCertificateCredential(emulator.tenant_id, api.app_id, certificate_data=cert.pem_bundle(),
                                          authority=emulator.authority) as credential:
        token = await credential.get_token(f"api://{api.app_id}/.default")
    assert claims_of(token.token)["azpacr"] == "2"


def test_sync_obo_credential_with_a_certificate(emulator: Emulator, api: Registration, cert: Cert,
                                                adele_assertion: str) -> None:
    credential = OnBehalfOfCredential(emulator.tenant_id, api.app_id, client_certificate=cert.pem_bundle(),
                                      user_assertion=adele_assertion, authority=emulator.authority,
                                      disable_instance_discovery=True)
    claims = claims_of(credential.get_token(GRAPH_USER_READ).token)
    assert claims["appidacr"] == "2" and claims["upn"] == user_upn("adele")


async def test_async_obo_credential_with_a_certificate(emulator: Emulator, api: Registration, cert: Cert,
                                                       adele_assertion: str) -> None:
    async with AsyncOnBehalfOfCredential(emulator.tenant_id, api.app_id, client_certificate=cert.pem_bundle(),
                                         user_assertion=adele_assertion, authority=emulator.authority) as credential:
        token = await credential.get_token(GRAPH_USER_READ)
    claims = claims_of(token.token)
    assert claims["appidacr"] == "2" and claims["upn"] == user_upn("adele")


def test_sync_credential_failure_carries_the_sha1_thumbprint(emulator: Emulator, api: Registration,
                                                             stranger: Cert) -> None:
    credential = CertificateCredential(emulator.tenant_id, api.app_id, certificate_data=stranger.pem_bundle(),
                                       authority=emulator.authority, disable_instance_discovery=True)
    with pytest.raises(ClientAuthenticationError, match="AADSTS700027") as failure:
        credential.get_token(f"api://{api.app_id}/.default")
    assert stranger.sha1 in str(failure.value)  # through MSAL: RS256 + x5t


async def test_async_credential_failure_carries_the_sha256_thumbprint(emulator: Emulator, api: Registration,
                                                                      stranger: Cert) -> None:
    async with AsyncCertificateCredential(emulator.tenant_id, api.app_id, certificate_data=stranger.pem_bundle(),
                                          authority=emulator.authority) as credential:
        with pytest.raises(ClientAuthenticationError, match="AADSTS700027") as failure:
            await credential.get_token(f"api://{api.app_id}/.default")
    assert stranger.sha256 in str(failure.value)  # its own PS256 + x5t#S256


# -- replication (the tenant profile) ---------------------------------------------------------------
@pytest.fixture(scope="module")
def tenant_emu(tmp_path_factory: pytest.TempPathFactory, emulator: Emulator) -> Iterator[Emulator]:
    """A tenant-profile emulator (also used by tests/test_federated_credentials.py), started after the session's
    emulator, so stopping it hands the CA variables back to that one."""
    with Emulator(tmp_path_factory.mktemp("tenant"), profile="tenant", replication_delay=DELAY).start() as emu:
        yield emu


def eventually(get: Callable[[], dict[str, Any]], timeout: float = 4.0) -> dict[str, Any]:
    """Repeat a token request until it succeeds (within the replication window); its result."""
    deadline = time.monotonic() + timeout
    while "access_token" not in (result := get()):
        assert time.monotonic() < deadline, result.get("error_description")
        time.sleep(0.05)
    return result


def test_a_new_certificate_is_unknown_until_it_replicates(tenant_emu: Emulator) -> None:
    reg = register_api(tenant_emu, name="replicating certificate api")
    tenant_emu.replication.settle_all()  # setup done; the certificate below is under test
    cert = make_cert("replicating")
    assert patch_keys(tenant_emu, reg, [key_credential(cert)]).status_code == 204
    assert code(app_token(tenant_emu, reg, thumbprint_credential(cert))) == 700027
    result = eventually(lambda: app_token(tenant_emu, reg, thumbprint_credential(cert)))
    assert claims_of(result["access_token"])["azpacr"] == "2"
