"""Files holding secrets: owner-only from the first byte, written atomically; the emulator key cache
is used only when it is ours, private and consistent; public files are replaced, never truncated."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
from pathlib import Path

import pytest

from obokit.emulator import key_cache
from obokit.emulator.key_cache import KEY_FILES, keep_key_material, reuse_key_material
from obokit.emulator.recorder import SeenRequest
from obokit.emulator.signing import KeySet
from obokit.emulator.tls import ensure_tls
from obokit.server.expenses import ExpenseBook
from obokit.files import write_private, write_public
from obokit.clients.sdk_client import TokenFile


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def make_keys(state: Path) -> None:
    """What `Emulator.__init__` does with a state folder: seed from the cache, generate the rest, keep."""
    usable = reuse_key_material(state)
    ensure_tls(state / "tls")
    KeySet(state / "keys")
    keep_key_material(state, replace=not usable)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home-cache" / "obokit" / "emulator-keys"
    monkeypatch.setenv("OBOKIT_KEY_CACHE", str(folder))
    return folder


@pytest.fixture
def filled(cache: Path, tmp_path: Path) -> Path:
    make_keys(tmp_path / "first")
    return cache


# -- write_private / write_public -----------------------------------------------------------------
def test_write_private_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "secret.pem"
    old = os.umask(0)
    try:
        write_private(target, b"one")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"one" and mode(target) == 0o600
    assert mode(target.parent) == 0o700 and mode(target.parent.parent) == 0o700


def test_write_private_replaces_a_loose_file_atomically(tmp_path: Path) -> None:
    target = tmp_path / "secret.json"
    target.write_bytes(b"old")
    target.chmod(0o644)
    before = os.stat(target).st_ino
    write_private(target, b"new")
    assert target.read_bytes() == b"new" and mode(target) == 0o600
    assert os.stat(target).st_ino != before  # a new file renamed over it, not the old one truncated
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.json"]  # no temp file left


def test_write_public_skips_equal_bytes_and_replaces_changed_ones(tmp_path: Path) -> None:
    target = tmp_path / "bundle.pem"
    write_public(target, b"a")
    inode = os.stat(target).st_ino
    write_public(target, b"a")
    assert os.stat(target).st_ino == inode
    write_public(target, b"b")
    assert target.read_bytes() == b"b" and os.stat(target).st_ino != inode and mode(target) == 0o644


def test_ca_bundle_is_not_rewritten_by_a_second_start(tmp_path: Path) -> None:
    first = ensure_tls(tmp_path / "tls")
    inode = os.stat(first.bundle).st_ino
    again = ensure_tls(tmp_path / "tls")
    assert os.stat(again.bundle).st_ino == inode
    assert mode(tmp_path / "tls") == 0o700 and mode(first.server_key) == 0o600


def test_signing_keys_and_their_folder_are_owner_only(tmp_path: Path) -> None:
    KeySet(tmp_path / "keys")
    assert mode(tmp_path / "keys") == 0o700
    assert {mode(p) for p in (tmp_path / "keys").iterdir()} == {0o600}


def test_token_file_and_expense_book_are_owner_only(tmp_path: Path) -> None:
    tokens = TokenFile(tmp_path / "client" / "tokens.json")
    tokens._update("tokens", {"access_token": "x"})
    assert mode(tmp_path / "client" / "tokens.json") == 0o600 and mode(tmp_path / "client") == 0o700
    book = ExpenseBook(tmp_path / "srv" / "expenses.json")
    book.add("oid-1", date="2026-11-02", amount=4.5, category="meals", description="Lunch")
    assert mode(book.path) == 0o600
    assert json.loads(book.path.read_text())["oid-1"][0]["amount"] == 4.5


def test_seen_request_repr_hides_the_bearer_token() -> None:
    seen = SeenRequest(1, "GET", "/v1.0/me", "eyJhbGciOi.secret-token.sig")
    assert "secret-token" not in repr(seen) and "secret-token" not in repr([seen])
    assert seen.bearer == "eyJhbGciOi.secret-token.sig"


# -- the emulator key cache ------------------------------------------------------------------------
def test_key_cache_is_created_owner_only_and_reused(filled: Path, tmp_path: Path) -> None:
    assert mode(filled) == 0o700 and mode(filled.parent) == 0o700  # obokit/ too
    assert {mode(filled / name) for name in KEY_FILES} == {0o600}
    assert [p.name for p in filled.parent.iterdir()] == ["emulator-keys"]  # no staging folder left
    make_keys(tmp_path / "second")
    for name in KEY_FILES:
        assert (tmp_path / "second" / name).read_bytes() == (filled / name).read_bytes()


def test_an_existing_cache_is_not_overwritten(filled: Path, tmp_path: Path) -> None:
    before = {name: (filled / name).read_bytes() for name in KEY_FILES}
    other = tmp_path / "other"
    ensure_tls(other / "tls")
    KeySet(other / "keys")
    keep_key_material(other)  # another process's set: the cache already exists, nothing changes
    assert {name: (filled / name).read_bytes() for name in KEY_FILES} == before


def _loose_folder(cache: Path) -> None:
    cache.chmod(0o755)


def _loose_file(cache: Path) -> None:
    (cache / "tls/server-key.pem").chmod(0o640)


def _mismatched_leaf(cache: Path) -> None:
    shutil.copy(cache / "keys/signing-current.pem", cache / "tls/server-key.pem")
    (cache / "tls/server-key.pem").chmod(0o600)


def _mismatched_signing(cache: Path) -> None:
    current, following = (cache / "keys/signing-current.pem").read_bytes(), (cache / "keys/signing-next.pem").read_bytes()
    key_only = current.split(b"-----BEGIN CERTIFICATE-----")[0]
    cert_only = b"-----BEGIN CERTIFICATE-----" + following.split(b"-----BEGIN CERTIFICATE-----")[1]
    write_private(cache / "keys/signing-current.pem", key_only + cert_only)


def _incomplete(cache: Path) -> None:
    (cache / "keys/signing-next.pem").unlink()


def _symlinked(cache: Path) -> None:
    target = cache.parent / "elsewhere.pem"
    shutil.copy(cache / "tls/server-key.pem", target)
    (cache / "tls/server-key.pem").unlink()
    (cache / "tls/server-key.pem").symlink_to(target)


@pytest.mark.parametrize("spoil", [_loose_folder, _loose_file, _mismatched_leaf, _mismatched_signing,
                                   _incomplete, _symlinked])
def test_a_bad_cache_is_ignored_with_a_warning_and_replaced(
    filled: Path, tmp_path: Path, spoil, caplog: pytest.LogCaptureFixture
) -> None:
    spoil(filled)
    state = tmp_path / "second"
    with caplog.at_level(logging.WARNING, logger="obokit.emulator"):
        assert reuse_key_material(state) is False
    assert str(filled) in caplog.text and "generating fresh keys" in caplog.text
    assert not (state / "tls").exists()  # nothing copied
    make_keys(state)  # fresh keys, and they become the cache
    assert (state / "tls/server-key.pem").read_bytes() == (filled / "tls/server-key.pem").read_bytes()
    assert mode(filled) == 0o700 and {mode(filled / name) for name in KEY_FILES} == {0o600}
    assert reuse_key_material(tmp_path / "third") is True and (tmp_path / "third/tls/server.pem").exists()


def test_a_cache_owned_by_someone_else_is_neither_used_nor_replaced(
    filled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    before = (filled / "tls/server-key.pem").read_bytes()
    real_uid = os.getuid()
    monkeypatch.setattr(key_cache.os, "getuid", lambda: real_uid + 1)  # as if another user owned it
    state = tmp_path / "second"
    with caplog.at_level(logging.WARNING, logger="obokit.emulator"):
        make_keys(state)
    assert "not owned by this user" in caplog.text
    assert (state / "tls/server-key.pem").read_bytes() != before
    assert (filled / "tls/server-key.pem").read_bytes() == before


def test_an_old_loose_key_folder_is_tightened(tmp_path: Path) -> None:
    for name in ("tls", "keys"):
        (tmp_path / name).mkdir(mode=0o755)
        (tmp_path / name).chmod(0o755)
    ensure_tls(tmp_path / "tls")
    KeySet(tmp_path / "keys")
    assert mode(tmp_path / "tls") == mode(tmp_path / "keys") == 0o700


def test_an_empty_cache_folder_is_filled_without_a_warning(
    cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache.mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="obokit.emulator"):
        make_keys(tmp_path / "first")
    assert caplog.text == ""
    assert mode(cache) == 0o700 and {mode(cache / name) for name in KEY_FILES} == {0o600}
