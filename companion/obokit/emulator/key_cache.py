"""The emulator's key cache: keys and certificates generated once, copied into every new state folder.

RSA key generation is most of a cold start, so the first emulator keeps its keys in
`OBOKIT_KEY_CACHE` (default `~/.cache/obokit/emulator-keys`; `off` disables it). The cache holds
private keys: it is written owner-only and as a whole set (temp folder, then one rename), and it
is used only if it is ours, not readable by others, and its certificates match their keys.
Anything else is ignored with a warning, and the emulator generates fresh keys.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from ..files import owned_by_me, owner_only, private_dir, write_private

__all__ = ["KEY_FILES", "keep_key_material", "key_cache_dir", "reuse_key_material"]

logger = logging.getLogger("obokit.emulator")
_RENEW_BEFORE = dt.timedelta(days=8)  # a day more than tls.py renews at: never copy soon-renewed files
KEY_FILES = ("tls/ca.pem", "tls/server.pem", "tls/server-key.pem", "keys/signing-current.pem", "keys/signing-next.pem")


def key_cache_dir() -> Path | None:
    """Where the emulator keeps its generated keys and certificates for new state folders
    (`OBOKIT_KEY_CACHE`, default `~/.cache/obokit/emulator-keys`; `off` disables it)."""
    configured = os.environ.get("OBOKIT_KEY_CACHE")
    if configured == "off":
        return None
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "obokit" / "emulator-keys"


def _private_to_us(path: Path, kind: int) -> bool:
    info = os.lstat(path)
    return stat.S_IFMT(info.st_mode) == kind and owner_only(info)


def _public_numbers(pem: bytes, *, private: bool):
    if private:
        key = serialization.load_pem_private_key(pem, password=None, unsafe_skip_rsa_key_validation=True)
        return key.public_key().public_numbers()
    return x509.load_pem_x509_certificate(pem).public_key().public_numbers()


def _problem(cache: Path) -> str | None:
    """Why the cache must not be used (None: it is ours, owner-only, complete, and consistent)."""
    try:
        folders = {cache} | {cache / Path(name).parent for name in KEY_FILES}
        if not all(_private_to_us(folder, stat.S_IFDIR) for folder in folders):
            return "a folder is not owned by this user or is readable by others"
        if not all(_private_to_us(cache / name, stat.S_IFREG) for name in KEY_FILES):
            return "a file is not owned by this user, not a regular file, or readable by others"
        pem = {name: (cache / name).read_bytes() for name in KEY_FILES}
        ca = x509.load_pem_x509_certificate(pem["tls/ca.pem"])
        leaf = x509.load_pem_x509_certificate(pem["tls/server.pem"])
        leaf.verify_directly_issued_by(ca)
        if min(ca.not_valid_after_utc, leaf.not_valid_after_utc) - _RENEW_BEFORE <= dt.datetime.now(dt.timezone.utc):
            return "its certificates expire (soon)"
        if _public_numbers(pem["tls/server.pem"], private=False) != _public_numbers(pem["tls/server-key.pem"], private=True):
            return "the TLS certificate does not match the server key"
        for name in ("keys/signing-current.pem", "keys/signing-next.pem"):
            if _public_numbers(pem[name], private=False) != _public_numbers(pem[name], private=True):
                return f"the certificate in {name} does not match its key"
    except FileNotFoundError:
        return "it is incomplete"
    except (OSError, ValueError, TypeError, InvalidSignature) as exc:
        return f"it cannot be read ({type(exc).__name__})"
    return None


def reuse_key_material(state_dir: Path) -> bool:
    """Seed a state folder that has no keys yet with the cached ones (all of them, or none).

    Returns False if a cache exists but was not used (logged with the reason): the caller then
    generates fresh keys and `keep_key_material(..., replace=True)` replaces the cache.
    """
    cache = key_cache_dir()
    if cache is None or not os.path.lexists(cache) or any((state_dir / n).exists() for n in KEY_FILES):
        return True
    if cache.is_dir() and not cache.is_symlink() and not any(cache.iterdir()):
        return False  # an empty folder made for us (`mktemp -d`): fill it, no warning
    problem = _problem(cache)
    if problem is not None:
        logger.warning("ignoring the emulator key cache %s: %s; generating fresh keys", cache, problem)
        return False
    for name in KEY_FILES:
        write_private(state_dir / name, (cache / name).read_bytes())
    return True


def _discard(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def keep_key_material(state_dir: Path, *, replace: bool = False) -> None:
    """Remember this state folder's keys for the next new one (best effort, owner-only, all at once).

    An existing cache is left alone unless `replace` is set (the last `reuse_key_material` refused
    it) and it belongs to this user; then it is swapped for this state folder's keys.
    """
    cache = key_cache_dir()
    if cache is None or (os.path.lexists(cache) and not replace):
        return
    try:
        private_dir(cache.parent)
        staging = Path(tempfile.mkdtemp(prefix=f".{cache.name}-", dir=cache.parent))  # mode 0700
        try:
            for name in KEY_FILES:
                write_private(staging / name, (state_dir / name).read_bytes())
            if os.path.lexists(cache):
                if not owned_by_me(os.lstat(cache)):
                    return
                stale = Path(tempfile.mkdtemp(prefix=f".{cache.name}-stale-", dir=cache.parent))
                try:
                    os.rename(cache, stale / "old")
                finally:
                    _discard(stale)
            os.rename(staging, cache)  # fails if another process has just put its set there: keep that one
        finally:
            _discard(staging)
    except OSError as exc:
        logger.debug("could not keep the emulator keys in %s: %s", cache, exc)
