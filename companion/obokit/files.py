"""Owner-only files: secrets (keys, tokens, client secrets) are never readable by others, even briefly."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["private_dir", "write_private", "write_public"]


def private_dir(path: Path, *, tighten: bool = False) -> Path:
    """Create `path` and its missing parents with mode 0700. An existing folder keeps its mode,
    unless `tighten` is set and it is this user's: then it becomes 0700 too."""
    if tighten and path.is_dir():
        info = path.stat()
        if info.st_uid == os.getuid() and info.st_mode & 0o077:
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
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
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
