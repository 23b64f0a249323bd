"""A CIMD client signs in through the workbook server's OAuth proxy: run inside its own network and mount namespace.

`tests/test_cimd.py` runs this file as `unshare --net --mount --propagation private python cimd_namespace.py`.
FastMCP fetches a Client ID Metadata Document only from a globally routable address, over HTTPS verified by
the trust store, so this namespace gives it one that never leaves the machine:

* `lo` up, plus the global address `CIMD_IP` (and the private `PRIVATE_IP`) on it; the namespace has no
  other interface and no route out;
* a local CA ("public" for this namespace) issues the certificate of `CIMD_IP`, and the trust store files
  are bind-mounted (this mount namespace only) with the original bundle plus that CA: certifi's `cacert.pem`,
  which the emulator copies into the bundle it exports as `SSL_CERT_FILE`, and the system bundle OpenSSL
  reads when `SSL_CERT_FILE` is unset;
* `https://CIMD_IP/client-metadata.json` serves the document; the emulator and the workbook server run
  with their normal settings (`FASTMCP_SSRF_TRUST_PROXY` unset); FastMCP's `Client` with
  `OAuth(client_metadata_url=...)` signs in as Bruno and calls `whoami`.

Usage: `python cimd_namespace.py [FOLDER]` (keys, certificates, emulator state; default: a temporary folder).
Prints one line `CIMD-RESULT {json}`: what happened, for the test to assert on. Never tokens.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import re
import secrets
import ssl
import subprocess
import sys
import tempfile
from html import unescape
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit

import certifi
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

CIMD_IP = "1.2.3.4"  # globally routable (ipaddress: is_global), but only ever on this namespace's lo
PRIVATE_IP = "10.20.30.40"  # RFC 1918: FastMCP must refuse a document there
CIMD_URL = f"https://{CIMD_IP}/client-metadata.json"
UNTRUSTED_PORT = 8443  # the same address, a certificate from a CA no trust store knows
CALLBACK_PORT = 8765  # the client's loopback redirect URI (nothing listens: the headless browser stops there)
REDIRECT_URI = f"http://127.0.0.1:{CALLBACK_PORT}/callback"
CLIENT_NAME = "obokit CIMD test client"
RESULT_PREFIX = "CIMD-RESULT "


def document(client_id: str, redirect_uris: list[str], name: str = CLIENT_NAME) -> dict:
    """A client metadata document (draft-ietf-oauth-client-id-metadata-document): a public client."""
    return {"client_id": client_id, "client_name": name, "client_uri": "https://github.com/obokit",
            "redirect_uris": redirect_uris, "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"], "token_endpoint_auth_method": "none"}


DOCUMENTS = {
    "/client-metadata.json": document(CIMD_URL, [REDIRECT_URI]),
    # Listed in its own document but not among the proxy's CLIENT_REDIRECT_URIS: both must allow it.
    "/web-client.json": document(f"https://{CIMD_IP}/web-client.json", ["https://cimd-client.example/callback"]),
    # A loopback redirect URI without a port: any port (RFC 8252 section 7.3).
    "/any-port.json": document(f"https://{CIMD_IP}/any-port.json", ["http://127.0.0.1/callback"]),
    # A document whose client_id is another URL than the one it is served from.
    "/impostor.json": document(CIMD_URL, [REDIRECT_URI], name="impostor"),
}


# -- the namespace ------------------------------------------------------------------------------
def run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True)


def set_up_network() -> dict:
    run("ip", "link", "set", "lo", "up")
    # A dummy interface needs the `dummy` kernel module, which containers often lack; an address on lo is
    # local all the same (the kernel routes it through the local table).
    for address in (CIMD_IP, PRIVATE_IP):
        run("ip", "addr", "add", f"{address}/32", "dev", "lo")
    links = subprocess.run(["ip", "-o", "link"], check=True, capture_output=True, text=True).stdout
    routes = subprocess.run(["ip", "route"], check=True, capture_output=True, text=True).stdout
    return {"interfaces": [line.split(":")[1].strip() for line in links.splitlines()], "routes": routes.strip()}


def trust_store_files() -> list[str]:
    """The CA files the TLS clients here read: certifi's (httpx; the emulator's SSL_CERT_FILE bundle is built
    from it) and OpenSSL's compiled-in file (httpcore2/_ssl.py when SSL_CERT_FILE is unset)."""
    openssl = ssl.get_default_verify_paths().openssl_cafile
    files = [os.path.realpath(certifi.where())]
    if os.path.isfile(openssl):
        files.append(os.path.realpath(openssl))
    return list(dict.fromkeys(files))


def trust(ca_pem: bytes, folder: Path) -> list[str]:
    """Bind-mount `file + ca_pem` over each trust store file, in this mount namespace only."""
    run("mount", "--make-rprivate", "/")  # unshare's default; said again so nothing leaks to the host
    mounted = []
    for index, path in enumerate(trust_store_files()):
        bundle = folder / f"trust-{index}.pem"
        bundle.write_bytes(Path(path).read_bytes().rstrip(b"\n") + b"\n" + ca_pem)
        run("mount", "--bind", str(bundle), path)
        mounted.append(path)
    return mounted


def write_certificate(folder: Path, name: str, ca_name: str, hosts: list[str]) -> tuple[bytes, str, str]:
    from obokit.emulator.tls import issue_certificate

    ca, cert, key = issue_certificate(ca_name, hosts)
    (folder / f"{name}.pem").write_bytes(cert)
    (folder / f"{name}-key.pem").write_bytes(key)
    (folder / f"{name}-key.pem").chmod(0o600)
    return ca, str(folder / f"{name}.pem"), str(folder / f"{name}-key.pem")


# -- the document host --------------------------------------------------------------------------
def document_app(fetches: list[dict], port: int) -> Starlette:
    async def serve(request: Request) -> JSONResponse:
        fetches.append({"port": port, "path": request.url.path, "host": request.headers.get("host"),
                        "user_agent": request.headers.get("user-agent", "")})
        doc = DOCUMENTS[request.url.path]
        if port == UNTRUSTED_PORT:
            doc = doc | {"client_id": doc["client_id"].replace(CIMD_IP, f"{CIMD_IP}:{UNTRUSTED_PORT}")}
        return JSONResponse(doc)

    return Starlette(routes=[Route(path, serve) for path in DOCUMENTS])


def serve_documents(folder: Path, fetches: list[dict]):
    from obokit.kernel import bind_loopback, serve_in_background

    hosts = [CIMD_IP, "127.0.0.1", PRIVATE_IP]
    ca, cert, key = write_certificate(folder, "cimd-host", "obokit CIMD test public CA", hosts)
    rogue_ca, rogue_cert, rogue_key = write_certificate(folder, "rogue-host", "a CA nobody trusts", [CIMD_IP])
    trusted = serve_in_background({"cimd": document_app(fetches, 443)}, name="cimd-host",
                                  sockets={"cimd": bind_loopback("0.0.0.0", 443)}, ssl_certfile=cert, ssl_keyfile=key)
    untrusted = serve_in_background({"cimd": document_app(fetches, UNTRUSTED_PORT)}, name="cimd-rogue-host",
                                    sockets={"cimd": bind_loopback(CIMD_IP, UNTRUSTED_PORT)},
                                    ssl_certfile=rogue_cert, ssl_keyfile=rogue_key)
    return ca, rogue_ca, [trusted, untrusted]


# -- what FastMCP logs about CIMD ---------------------------------------------------------------
class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


# -- the consent page, as the headless browser saw it ------------------------------------------
def consent_page(html: str) -> dict:
    def text(fragment: str) -> str:
        return " ".join(unescape(re.sub(r"<[^>]+>", " ", fragment)).split())

    def block(pattern: str) -> str:
        found = re.search(pattern, html, re.S)
        return text(found.group(1)) if found else ""

    row = r'<div class="detail-label">(.*?):</div>\s*<div class="detail-value">(.*?)</div>'
    details = dict(re.findall(row, html, re.S))
    return {
        "intro": block(r'<div class="info-box">(.*?)</div>'),
        "badge": block(r'<div class="cimd-badge">(.*?)</div>'),
        "credentials_sent_to": block(r'<div class="redirect-section">.*?<div class="value">(.*?)</div>'),
        "details": {label: text(value) for label, value in details.items()},
        "buttons": re.findall(r'<button[^>]*value="(\w+)"', html),
    }


def recording_oauth(account: str):
    """`HeadlessOAuth` with FastMCP's CIMD option, keeping the consent page the headless browser answered."""
    from obokit.clients.headless import HeadlessBrowser, code_result
    from obokit.clients.mcp_client import HeadlessOAuth

    class RecordingOAuth(HeadlessOAuth):
        consent_html: str | None = None

        async def redirect_handler(self, authorization_url: str) -> None:
            async def keep_consent(response: httpx.Response) -> None:
                if response.request.method == "GET" and response.url.path == "/consent":
                    await response.aread()
                    self.consent_html = response.text

            async with httpx.AsyncClient(timeout=30, event_hooks={"response": [keep_consent]}) as client:
                browser = HeadlessBrowser(account=self.account, client=client)
                try:
                    self.last_callback_url = await browser.sign_in(authorization_url, redirect_uri=self.redirect_uri)
                finally:
                    self.last_sign_in_steps = browser.steps
            self._result = code_result(self.last_callback_url)

    return RecordingOAuth(account=account, client_metadata_url=CIMD_URL, client_name=CLIENT_NAME,
                          callback_host="127.0.0.1", callback_port=CALLBACK_PORT)


def authorize(server_url: str, client_id: str, redirect_uri: str) -> dict:
    """One GET /authorize at the proxy, as a client would start a sign-in; where it answers."""
    challenge = base64.urlsafe_b64encode(hashlib.sha256(secrets.token_bytes(32)).digest()).rstrip(b"=").decode()
    query = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "state": "s",
             "code_challenge": challenge, "code_challenge_method": "S256"}
    response = httpx.get(f"{server_url}/authorize?{urlencode(query)}", timeout=30)
    location = response.headers.get("location", "")
    try:
        body = response.json()
    except ValueError:
        body = {"text": " ".join(response.text.split())[:200]}
    return {"status": response.status_code, "to": urlsplit(urljoin(server_url, location)).path if location else None,
            "error": body.get("error"), "error_description": body.get("error_description")}


async def fetch_directly(url: str) -> str:
    """FastMCP's own SSRF-safe fetch, outside any server: 'ok' or the error it raised."""
    from fastmcp.server.auth.ssrf import ssrf_safe_fetch

    try:
        await ssrf_safe_fetch(url, require_path=True)
        return "ok"
    except Exception as error:  # noqa: BLE001 - reported, the test asserts on it
        return f"{type(error).__name__}: {error}"


async def sign_in_and_call(server_url: str, account: str) -> dict:
    from fastmcp import Client

    auth = recording_oauth(account)
    async with Client(f"{server_url}/mcp", auth=auth) as client:
        whoami = await client.call_tool("whoami", {})
    client_info = auth.context.client_info
    return {
        "whoami": whoami.structured_content,
        "client_id": client_info.client_id if client_info else None,
        "redirect_uri": auth.redirect_uri,
        "steps": [step.rsplit(" -> ", 1)[0] for step in auth.last_sign_in_steps],
        "consent": consent_page(auth.consent_html or ""),
    }


def trust_checks(rogue_ca: bytes, folder: Path) -> dict:
    """FastMCP's fetch on its own, before the emulator exports SSL_CERT_FILE: which certificates it accepts."""
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE"):
        os.environ.pop(name, None)  # so httpcore2 reads OpenSSL's compiled-in CA file
    rogue_url = f"https://{CIMD_IP}:{UNTRUSTED_PORT}/client-metadata.json"
    checks = {"global": asyncio.run(fetch_directly(CIMD_URL)), "untrusted_ca": asyncio.run(fetch_directly(rogue_url))}
    # Without FASTMCP_SSRF_TRUST_PROXY the fetch keeps httpx2's trust_env: SSL_CERT_FILE counts.
    (folder / "with-rogue-ca.pem").write_bytes(Path(certifi.where()).read_bytes() + rogue_ca)
    os.environ["SSL_CERT_FILE"] = str(folder / "with-rogue-ca.pem")
    checks["untrusted_ca_in_ssl_cert_file"] = asyncio.run(fetch_directly(rogue_url))
    del os.environ["SSL_CERT_FILE"]
    return checks


def authorize_checks(server_url: str, log: Collect) -> dict:
    """GET /authorize for client ids and redirect URIs the proxy must accept or refuse; what it logged each time."""
    other_port = f"http://127.0.0.1:{CALLBACK_PORT + 1}/callback"
    checks = {
        "listed": (CIMD_URL, REDIRECT_URI),
        "listed_host_other_port": (CIMD_URL, other_port),
        "proxy_allows_document_does_not": (CIMD_URL, f"http://localhost:{CALLBACK_PORT}/callback"),
        "evil": (CIMD_URL, "https://evil.example/cb"),
        "portless_loopback_listed_any_port": (f"https://{CIMD_IP}/any-port.json", other_port),
        "document_allows_proxy_does_not": (f"https://{CIMD_IP}/web-client.json", "https://cimd-client.example/callback"),
        "client_id_mismatch": (f"https://{CIMD_IP}/impostor.json", REDIRECT_URI),
        "loopback_address": ("https://127.0.0.1/client-metadata.json", REDIRECT_URI),
        "private_address": (f"https://{PRIVATE_IP}/client-metadata.json", REDIRECT_URI),
        "untrusted_certificate": (f"https://{CIMD_IP}:{UNTRUSTED_PORT}/client-metadata.json", REDIRECT_URI),
        "plain_http": (f"http://{CIMD_IP}/client-metadata.json", REDIRECT_URI),
    }
    answers = {}
    for name, (client_id, redirect_uri) in checks.items():
        before = len(log.messages)
        answers[name] = authorize(server_url, client_id, redirect_uri) | {"log": log.messages[before:]}
    return answers


def with_the_workbook_server(folder: Path, ca: bytes, result: dict) -> None:
    """The emulator and the workbook server (proxy mode, normal settings); the CIMD client signs in."""
    import fastmcp
    from server_fixtures import register_workbook_server, start
    from tenant_setup import user_upn

    from obokit.emulator import Emulator

    result["ssrf_trust_proxy"] = fastmcp.settings.ssrf_trust_proxy
    cimd_log = Collect()
    logging.getLogger("fastmcp.server.auth.cimd").addHandler(cimd_log)
    with Emulator(folder / "emulator").start() as emu:
        bundle = os.environ["SSL_CERT_FILE"]  # the emulator's: certifi's file (as mounted here) + its own CA
        result["ssl_cert_file_is_emulator_bundle"] = bundle == emu.ca_bundle
        result["cimd_ca_in_ssl_cert_file"] = ca.strip() in Path(bundle).read_bytes()
        server = start(emu, folder, register_workbook_server(emu, "cimd test server", consent=True), "cimd")
        try:
            before = len(result["fetches"])
            result["sign_in"] = asyncio.run(sign_in_and_call(server.url, user_upn("bruno"))) | {
                "document_fetches": result["fetches"][before:], "server_url": server.url,
                "tenant_authority": emu.tenant_authority}
            result["authorize"] = authorize_checks(server.url, cimd_log)
        finally:
            server.stop()


def main(folder: Path) -> None:
    result: dict = {"uid": os.getuid(), "network": set_up_network(), "fetches": []}
    ca, rogue_ca, hosts = serve_documents(folder, result["fetches"])
    # Before the emulator copies certifi's file into its bundle: the document host's CA joins the trust store.
    result["mounted_trust_files"] = trust(ca, folder)
    try:
        result["direct_fetch"] = trust_checks(rogue_ca, folder)
        with_the_workbook_server(folder, ca, result)
    finally:
        for host in hosts:
            host.stop()
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1:  # the test's temporary folder
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory(prefix="obokit-cimd-") as temporary:
            main(Path(temporary))
