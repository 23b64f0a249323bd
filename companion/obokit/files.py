"""Owner-only files: secrets (keys, tokens, client secrets) are never readable by others, even briefly.

File owners and modes are POSIX. Where they do not exist (Windows: no `os.getuid`, `os.fchmod` before Python
3.13, modes that only toggle read-only), nothing here fails: the files are written all the same, and one
warning says that only the folder's own access rights (on Windows, the user profile's ACL) protect them.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

__all__ = ["owned_by_me", "owner_only", "permissions_enforced", "private_dir", "write_private", "write_public"]

logger = logging.getLogger("obokit")
_warned = False


def permissions_enforced() -> bool:
    """True where file owners and POSIX modes exist and are enforced (Linux, macOS); False on Windows.

    Where False, warns once per process that owner-only files cannot be enforced.
    """
    global _warned
    if sys.platform != "win32" and hasattr(os, "getuid") and hasattr(os, "fchmod"):
        return True
    if not _warned:
        _warned = True
        logger.warning("file owners and modes are not enforced on this platform (%s): obokit's secrets, keys and "
                       "tokens are protected only by the access rights of the folders they are in", sys.platform)
    return False


def owned_by_me(info: os.stat_result) -> bool:
    """Whether a file or folder (its `os.stat`) belongs to this user; always True where owners are unknown."""
    return not permissions_enforced() or info.st_uid == os.getuid()


def owner_only(info: os.stat_result) -> bool:
    """Whether a file or folder is this user's and unreadable by others; True where that cannot be known."""
    return not permissions_enforced() or (info.st_uid == os.getuid() and info.st_mode & 0o077 == 0)


def private_dir(path: Path, *, tighten: bool = False) -> Path:
    """Create `path` and its missing parents with mode 0700. An existing folder keeps its mode,
    unless `tighten` is set and it is this user's: then it becomes 0700 too."""
    if tighten and path.is_dir() and not owner_only(info := path.stat()) and owned_by_me(info):
        os.chmod(path, 0o700)
    missing = [folder for folder in (path, *path.parents) if not folder.exists()]
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue  # created meanwhile by someone else: theirs to set
        os.chmod(folder, 0o700)  # exactly 0700, whatever the umask
    return path


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    # O_BINARY (Windows only): without it the C runtime turns every \n written into \r\n
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            if permissions_enforced():
                os.fchmod(handle.fileno(), mode)  # exactly `mode`, whatever the umask
            handle.write(data)  # no fsync: these files are cheap to recreate, and it is on hot paths
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_private(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` as an owner-only (0600) file, atomically (temp file + `os.replace`).

    The parent folder is created 0700 if missing. Readers see the old or the new content, never a
    partial file, and the secret is never in a file anyone else can read.
    """
    path = Path(path)
    private_dir(path.parent)
    _write_atomic(path, data, 0o600)


def write_public(path: Path | str, data: bytes) -> None:
    """Replace `path` atomically with `data` (mode 0644) unless it already holds exactly these bytes."""
    path = Path(path)
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    _write_atomic(path, data, 0o644)
