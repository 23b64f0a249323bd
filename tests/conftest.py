"""Shared fixtures: one emulator per test session, the demo users signing in, and a loopback-only guard.

The guard proves that nothing the real libraries do (instance discovery, metadata fetches)
leaks to Microsoft's hosts: any such attempt fails the call and is recorded.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from tenant_setup import user_upn

from obokit.emulator import Emulator

if TYPE_CHECKING:
    from obokit.clients.mcp_client import HeadlessOAuth

blocked_attempts: list[str] = []
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(address: object) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0] if isinstance(address, tuple) else address
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return str(host) == "localhost"


def _guarded_connect(self: socket.socket, address: object) -> None:
    if not _is_local(address):
        blocked_attempts.append(repr(address))
        raise ConnectionRefusedError(f"outbound network blocked by the test suite: {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    if not _is_local(address):
        blocked_attempts.append(repr(address))
        return 111  # ECONNREFUSED
    return _real_connect_ex(self, address)


@pytest.fixture(scope="session", autouse=True)
def loopback_only() -> Iterator[list[str]]:
    """Only loopback connections are allowed for the whole session; yields the blocked attempts."""
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    try:
        yield blocked_attempts
    finally:
        socket.socket.connect = _real_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory, loopback_only: list[str]) -> Iterator[Emulator]:
    """A running emulator with its own state folder, shared by the session."""
    with Emulator(tmp_path_factory.mktemp("emulator-state")).start() as emu:
        yield emu


@pytest.fixture
def fresh_faults(emulator: Emulator) -> Iterator[Emulator]:
    """The session emulator with faults cleared before and after the test."""
    emulator.faults.clear()
    yield emulator
    emulator.faults.clear()


@pytest.fixture(scope="module")
def bruno() -> HeadlessOAuth:
    """Bruno (Task.Read and Task.Write on the workbook server), signing in headlessly; one per module."""
    return _signing_in("bruno")


@pytest.fixture(scope="module")
def chen() -> HeadlessOAuth:
    """Chen (Task.Read only), signing in headlessly; one per module."""
    return _signing_in("chen")


def _signing_in(name: str) -> HeadlessOAuth:
    """fastmcp client auth that signs in as the demo user `name` headlessly (imported late: fastmcp is heavy)."""
    from obokit.clients.mcp_client import HeadlessOAuth

    return HeadlessOAuth(account=user_upn(name))


@pytest.fixture(autouse=True)
def no_network_leak(loopback_only: list[str]) -> Iterator[None]:
    """Fail any test during which something tried to reach a non-loopback address."""
    before = len(loopback_only)
    yield
    assert loopback_only[before:] == [], f"non-loopback connections attempted: {loopback_only[before:]}"


@pytest.fixture
def workbook_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh emulator state folder for notebooks run in kernels started by the test (they inherit this
    environment): the workbook's tests that run the notebooks themselves (twice, exercises)."""
    state_dir = tmp_path / "state"
    monkeypatch.setenv("OBOKIT_STATE_DIR", str(state_dir))
    monkeypatch.setenv("OBOKIT_TARGET", "emulator")
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "1")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    return state_dir
