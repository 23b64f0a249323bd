"""Starting the workbook server again under the same name (a notebook cell re-run) keeps its URL."""

from __future__ import annotations

from pathlib import Path

import pytest
from server_fixtures import make_target, register_workbook_server, registrations
from tenant_setup import Registration

from obokit.emulator import Emulator
from obokit.server import start_workbook_server


@pytest.fixture(scope="module")
def registration(emulator: Emulator) -> Registration:
    return register_workbook_server(emulator, "server lifecycle test", consent=False)


def test_rerun_with_the_same_name_comes_back_on_the_same_port(
        emulator: Emulator, registration: Registration, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBOKIT_STATE_DIR", str(tmp_path / "state"))  # where server_socket remembers ports
    target = make_target(emulator, tmp_path)

    def start():
        return start_workbook_server(target, name="rerun", storage_dir=tmp_path / "rerun",
                                     registration=registrations(registration))

    first = start()
    try:
        second = start()  # the first one is still registered and serving: it must be stopped first
        try:
            assert not first.running, "the previous server under the same name was stopped"
            assert second.running and second.port == first.port
            assert second.mcp_url == first.mcp_url
        finally:
            second.stop()
    finally:
        first.stop()
