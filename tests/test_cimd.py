"""A client identified by a Client ID Metadata Document (CIMD) URL signs in through the workbook server's proxy.

FastMCP 4.1.2's `AzureProvider` accepts CIMD clients (`enable_cimd=True`), but fetches their documents only
from globally routable addresses over verified HTTPS; its one way around that, `FASTMCP_SSRF_TRUST_PROXY`,
would weaken the server's production settings (and JWKS fetches with them). So the whole scene runs in a
network and mount namespace of its own (`tests/cimd_namespace.py`): a global address on its `lo`, a document
host with a certificate from a CA bind-mounted into that namespace's trust store, the emulator, the workbook
server with its normal settings, and FastMCP's `Client` with `OAuth(client_metadata_url=...)`, the headless
browser answering the consent page. Nothing leaves the namespace (it has no other interface), and this process
opens no connection at all.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from cimd_namespace import CIMD_IP, CIMD_URL, CLIENT_NAME, REDIRECT_URI, RESULT_PREFIX
from tenant_setup import user_upn

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

SCRIPT = Path(__file__).with_name("cimd_namespace.py")
# As root a network + mount namespace is enough; otherwise a user namespace maps us to root inside it.
NAMESPACES = (
    ["unshare", "--net", "--mount", "--propagation", "private"],
    ["unshare", "--user", "--map-root-user", "--net", "--mount", "--propagation", "private"],
)
# What the child must not inherit: the production default is what is tested, and nothing may point elsewhere.
NOT_INHERITED = {"FASTMCP_SSRF_TRUST_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
                 "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy",
                 "NO_PROXY", "no_proxy"}
NOT_REGISTERED = "is not registered with this server"


def namespace_command() -> list[str]:
    """The first `unshare` prefix this machine permits; skip when none is."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    refusals = []
    for prefix in NAMESPACES:
        probe = subprocess.run([*prefix, "true"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return prefix
        refusals.append(f"{' '.join(prefix)}: {probe.stderr.strip()}")
    pytest.skip("creating network and mount namespaces is not permitted here: " + "; ".join(refusals))


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run the namespace once; its JSON result."""
    env = {name: value for name, value in os.environ.items() if name not in NOT_INHERITED}
    folder = tmp_path_factory.mktemp("cimd")
    child = subprocess.run([*namespace_command(), sys.executable, str(SCRIPT), str(folder)], env=env,
                           capture_output=True, text=True, timeout=90)
    lines = [line for line in child.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    assert child.returncode == 0 and lines, f"exit {child.returncode}\n{child.stdout[-2000:]}\n{child.stderr[-4000:]}"
    return json.loads(lines[-1].removeprefix(RESULT_PREFIX))


def test_the_namespace_has_only_lo_and_the_server_keeps_its_production_settings(scene: dict) -> None:
    assert scene["network"]["interfaces"] == ["lo"] and scene["network"]["routes"] == ""
    assert scene["ssrf_trust_proxy"] is False
    # The document host's CA is in the trust store files of the namespace, and so in the emulator's bundle
    # (certifi's + its own CA), the SSL_CERT_FILE of the process while the emulator runs.
    assert os.path.realpath(ssl.get_default_verify_paths().openssl_cafile) in scene["mounted_trust_files"]
    assert any(path.endswith("certifi/cacert.pem") for path in scene["mounted_trust_files"])
    assert scene["ssl_cert_file_is_emulator_bundle"] and scene["cimd_ca_in_ssl_cert_file"]


def test_the_cimd_client_signs_in_through_the_proxy_and_calls_whoami(scene: dict) -> None:
    sign_in = scene["sign_in"]
    assert sign_in["whoami"]["upn"] == user_upn("bruno") and sign_in["whoami"]["name"] == "Bruno Diaz"
    assert sign_in["whoami"]["scp"] == "mcp-access" and "Task.Read" in sign_in["whoami"]["roles"]
    # No dynamic client registration: the client id the proxy knows it by is the document's URL.
    assert sign_in["client_id"] == CIMD_URL
    assert sign_in["redirect_uri"] == REDIRECT_URI
    # The pages a person would see: proxy authorize, FastMCP's consent, the emulator's picker, the proxy callback.
    server, authorize = sign_in["server_url"], f"{sign_in['tenant_authority']}/oauth2/v2.0/authorize"
    assert sign_in["steps"] == [f"GET {server}/authorize", f"GET {server}/consent", f"POST {server}/consent",
                                f"GET {authorize}", f"POST {authorize}", f"GET {server}/auth/callback"]
    # The proxy fetched the document once (then served it from its cache), from the pinned address.
    assert [(fetch["path"], fetch["host"], fetch["port"]) for fetch in sign_in["document_fetches"]] == [
        ("/client-metadata.json", CIMD_IP, 443)]
    assert sign_in["document_fetches"][0]["user_agent"].startswith("python-httpx2/")


def test_the_consent_page_names_the_client_its_domain_and_the_redirect(scene: dict) -> None:
    consent = scene["sign_in"]["consent"]
    assert f"The application {CLIENT_NAME} wants to access the MCP server obokit workbook" in consent["intro"]
    assert consent["badge"] == f"\u2713 Verified domain: {CIMD_IP}"
    assert consent["credentials_sent_to"] == REDIRECT_URI
    assert consent["details"] == {
        "Application Name": CLIENT_NAME,
        # FastMCP 4.1.2 does not pass the document's client_uri to the page.
        "Application Website": "N/A",
        "Application ID": CIMD_URL,
        "Redirect URI": REDIRECT_URI,
        "Requested Scopes": "mcp-access",
    }
    assert consent["buttons"] == ["approve", "deny"]


@pytest.mark.parametrize(
    ("case", "status", "says"),
    [
        ("listed", 302, None),
        # An explicit port in the document is exact; only a port-less loopback URI admits any port.
        ("listed_host_other_port", 400, "does not match CIMD redirect_uris"),
        ("portless_loopback_listed_any_port", 302, None),
        # The document and the proxy's CLIENT_REDIRECT_URIS must both allow the redirect URI.
        ("proxy_allows_document_does_not", 400, "does not match CIMD redirect_uris"),
        ("document_allows_proxy_does_not", 400, "does not match allowed patterns"),
        ("evil", 400, "does not match CIMD redirect_uris"),
    ],
)
def test_redirect_uri_rules(scene: dict, case: str, status: int, says: str | None) -> None:
    answer = scene["authorize"][case]
    assert answer["status"] == status, answer
    if status == 302:
        assert answer["to"] == "/consent"
    else:
        assert answer["error"] == "invalid_request" and says in answer["error_description"]


@pytest.mark.parametrize(
    ("case", "logged"),
    [
        ("loopback_address", "URL resolves to blocked IP address(es): ['127.0.0.1']"),
        ("private_address", "URL resolves to blocked IP address(es): ['10.20.30.40']"),
        ("untrusted_certificate", "CERTIFICATE_VERIFY_FAILED"),
        ("client_id_mismatch", "CIMD client_id mismatch"),
    ],
)
def test_documents_fastmcp_refuses_to_use(scene: dict, case: str, logged: str) -> None:
    answer = scene["authorize"][case]
    # The client only learns that its id is unknown (FastMCP's DCR wording); the reason is in the server log.
    assert answer["status"] == 400 and NOT_REGISTERED in answer["error_description"]
    assert len(answer["log"]) == 1 and logged in answer["log"][0]


def test_a_plain_http_client_id_is_not_taken_for_a_cimd_url(scene: dict) -> None:
    answer = scene["authorize"]["plain_http"]
    # Not https: an unknown DCR client id to FastMCP, no document fetch attempted (nothing logged).
    assert answer["status"] == 400 and NOT_REGISTERED in answer["error_description"] and answer["log"] == []


def test_fastmcp_fetch_verifies_tls_against_the_trust_store_or_ssl_cert_file(scene: dict) -> None:
    fetch = scene["direct_fetch"]
    assert fetch["global"] == "ok"  # trusted through the bind-mounted system bundle (SSL_CERT_FILE unset)
    assert "CERTIFICATE_VERIFY_FAILED" in fetch["untrusted_ca"]
    # Without FASTMCP_SSRF_TRUST_PROXY, httpx2 keeps trust_env: SSL_CERT_FILE is honoured.
    assert fetch["untrusted_ca_in_ssl_cert_file"] == "ok"
