"""A throwaway Redis for the workbook and the tests: Debian's `redis-server` on an ephemeral loopback port.

    from obokit.redis_server import redis_server

    with redis_server() as url:          # redis://:<password>@127.0.0.1:<port>/0
        store = RedisStore(url=url)      # py-key-value's Redis store

`start_redis()` writes a config file (owner-only, it holds the password) into a fresh temporary folder and starts
`redis-server` with it: loopback only, a random password, no persistence (`save ""`, `appendonly no`), so nothing
outlives `stop()`, which also removes the folder. The port is picked by binding port 0 and releasing it; should
another process take it in between, Redis exits at once and the start is retried on another port.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from .kernel import bind_loopback

DEBIAN_BINARY = "/usr/bin/redis-server"
INSTALL_HINT = (
    "redis-server is not installed. Install Redis and re-run: `sudo apt-get install redis-server` (Debian, "
    "Ubuntu; what CI does), `brew install redis` (macOS) or `conda install -c conda-forge redis` (conda env). "
    "Set OBOKIT_REDIS_SERVER to the binary if it is not on PATH."
)

__all__ = ["INSTALL_HINT", "RedisNotInstalled", "RedisServer", "redis_server", "redis_server_binary", "start_redis"]


class RedisNotInstalled(RuntimeError):
    """No `redis-server` binary was found."""


def redis_server_binary() -> str:
    """Path of `redis-server` ($OBOKIT_REDIS_SERVER, else PATH, else /usr/bin); RedisNotInstalled if missing."""
    candidates = [os.environ.get("OBOKIT_REDIS_SERVER"), shutil.which("redis-server"), DEBIAN_BINARY]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise RedisNotInstalled(INSTALL_HINT)


@dataclass
class RedisServer:
    """A running `redis-server` child process; `url` includes the password (do not print it)."""

    process: subprocess.Popen[bytes]
    port: int
    password: str = field(repr=False)
    directory: Path

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
        with self.client() as client:
            return str(client.info("server")["redis_version"])

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


def _launch(binary: str, directory: Path, password: str, timeout: float) -> RedisServer | None:
    """One attempt on a fresh port; None if Redis exited (the port was taken meanwhile)."""
    port = _free_port()
    config = directory / "redis.conf"
    config.touch(mode=0o600)
    config.write_text(
        f"port {port}\nbind 127.0.0.1\nprotected-mode yes\nrequirepass {password}\n"
        f'save ""\nappendonly no\ndir {directory}\nlogfile {directory / "redis.log"}\n'
        "loglevel warning\ndaemonize no\n"
    )
    process = subprocess.Popen([binary, str(config)], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(process=process, port=port, password=password, directory=directory)
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
    raise TimeoutError(f"redis-server did not answer within {timeout} s:\n{_log_tail(directory)}")


def _log_tail(directory: Path) -> str:
    log = directory / "redis.log"
    return log.read_text(errors="replace")[-2000:] if log.exists() else ""


def start_redis(*, timeout: float = 10, attempts: int = 3) -> RedisServer:
    """Start `redis-server` on a free loopback port with a random password; stop it with `.stop()`."""
    binary = redis_server_binary()
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
    raise RuntimeError(f"redis-server exited at start-up {attempts} times:\n{log}")


@contextmanager
def redis_server(*, timeout: float = 10) -> Iterator[str]:
    """A fresh Redis for the duration of the block; yields its URL (with the password)."""
    server = start_redis(timeout=timeout)
    try:
        yield server.url
    finally:
        server.stop()
