"""The workbook server's lifecycle: a re-run under the same name keeps its URL; shutdown closes every part."""

from __future__ import annotations

from pathlib import Path

import pytest
from server_fixtures import make_target, register_workbook_server, registrations
from tenant_setup import Registration

from obokit.emulator import Emulator
from obokit.kernel import bind_loopback, ephemeral_port_range
from obokit.server import start_workbook_server
from obokit.server.app import server_socket


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


def test_a_remembered_port_lies_below_the_ephemeral_range_and_is_given_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outgoing connections borrow ports from the ephemeral range; a server's remembered port must not be one
    of them, or a second run of the workbook finds it taken and its clients register again (seen in CI)."""
    monkeypatch.setenv("OBOKIT_STATE_DIR", str(tmp_path / "state"))
    low, _ = ephemeral_port_range()
    first = server_socket("lasting")
    port = first.getsockname()[1]
    first.close()
    assert port < low, f"port {port} is in the ephemeral range starting at {low}"
    again = server_socket("lasting")
    try:
        assert again.getsockname()[1] == port
        squatter = server_socket("other")  # another name gets another port
        assert squatter.getsockname()[1] != port
        squatter.close()
    finally:
        again.close()
    taken = bind_loopback("127.0.0.1", port)  # something else now listens there: a new port, remembered
    try:
        moved = server_socket("lasting")
        new_port = moved.getsockname()[1]
        moved.close()
        assert new_port != port and new_port < low
        assert (tmp_path / "state" / "mcp-servers" / "lasting.port").read_text() == str(new_port)
    finally:
        taken.close()


def test_shutdown_closes_everything_even_when_one_step_fails(
        emulator: Emulator, registration: Registration, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    running = start_workbook_server(make_target(emulator, tmp_path), name="failing-close", port=0,
                                    storage_dir=tmp_path / "failing-close", registration=registrations(registration))
    cache = running.mcp.obo_cache
    try:
        running.handle.run(_open_pool(cache))  # the OBO cache's connection pool, as after a first tool call

        async def fails() -> None:
            raise RuntimeError("closing the OBO credentials failed")

        monkeypatch.setattr(running.mcp.auth, "close_obo_credentials", fails)
        running.audit_log.record(oid="o", upn="u@example.test", tool="whoami", outcome="ok")
    finally:
        running.stop()
    assert cache._http is None, "the OBO cache's pool was closed after the failing step"
    assert running.audit_log._writer is None and len((tmp_path / "failing-close" / "audit.jsonl").read_text().splitlines()) == 1


async def _open_pool(cache) -> None:  # type: ignore[no-untyped-def]
    cache._pool()


def test_captured_logs_waits_for_a_line_the_server_writes_after_answering() -> None:
    """A server thread logs after its answer: `until` keeps that line in the capture instead of a later cell."""
    import logging
    import threading

    from obokit.server import captured_logs

    late = threading.Timer(0.2, lambda: logging.getLogger("fastmcp.test").info("Auth error returned: x"))
    with captured_logs("fastmcp", until="Auth error returned") as lines:
        late.start()
    assert lines == ["INFO Auth error returned: x"]
    with pytest.raises(TimeoutError, match="no log message containing 'never'"):
        with captured_logs("fastmcp", until="never", timeout=0.1):
            pass
