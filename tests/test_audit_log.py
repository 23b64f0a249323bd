"""The audit log's file is written off the event loop, and nothing recorded is lost; the role gate's
tool cache follows tool changes, and a tool call no longer lists every tool. A failed append is
reported (never as written), a cancelled call is audited "cancelled", and a record right after close
never starts a second writer.

The log is exercised on its own, then in a real workbook server (FastMCP + AzureProvider) against the
session emulator, with a real `fastmcp.Client` signed in headlessly. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import mcp.types
import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError
from fastmcp.server.middleware import Middleware, MiddlewareContext
from server_fixtures import RECEIPT, register_workbook_server, serve

from obokit.server.audit import AuditLog, AuditWriteError
from obokit.emulator import Emulator
from obokit.clients.mcp_client import HeadlessOAuth
from obokit.server.middleware import AppRoleGate, AuditTrail
from obokit.server import RunningServer


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def entry(i: int) -> dict:
    return {"oid": f"oid-{i}", "upn": f"user{i}@example.test", "tool": "whoami", "outcome": "ok"}


async def test_the_file_is_written_by_another_thread_before_arecord_returns(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    await log.arecord(**entry(0))
    assert [line["oid"] for line in lines(log.path)] == ["oid-0"], "the entry is in the file when arecord returns"
    assert log.writer_thread_id is not None and log.writer_thread_id != threading.get_ident(), "not the loop's thread"
    await asyncio.gather(*(log.arecord(**entry(i)) for i in range(1, 200)))
    assert sorted(int(line["oid"][4:]) for line in lines(log.path)) == list(range(200))
    log.close()


def test_queued_entries_are_written_on_close(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(500):
        log.record(**entry(i))  # returns at once; the writer thread appends
    log.close()
    assert [line["oid"] for line in lines(log.path)] == [f"oid-{i}" for i in range(500)]
    log.record(**entry(500))  # a closed log starts a new writer when it is used again
    assert log.flush() and len(lines(log.path)) == 501
    log.close()


def test_memory_keeps_the_last_entries_and_the_file_all_of_them(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", keep=10)
    for i in range(25):
        log.record(**entry(i))
    assert [e.oid for e in log.entries] == [f"oid-{i}" for i in range(15, 25)]
    assert log.flush() and len(lines(log.path)) == 25
    log.clear()
    assert len(log) == 0 and len(lines(log.path)) == 25, "clear forgets the memory, never the file"
    log.close()


async def test_a_failed_append_fails_its_waiters_and_flush(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the audit folder should be")
    log = AuditLog(blocker / "audit.jsonl")
    with pytest.raises(AuditWriteError):
        await log.arecord(**entry(0))
    assert log.last_error is not None and not log.flush(), "a failed append is never reported as written"
    assert [e.oid for e in log.entries] == ["oid-0"], "the entry is still kept in memory"
    blocker.unlink()
    await log.arecord(**entry(1))
    assert log.last_error is None and log.flush() and [line["oid"] for line in lines(log.path)] == ["oid-1"]
    log.close()


def test_a_record_right_after_close_is_taken_by_the_same_writer(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(3000):
        log.record(**entry(i))
    writer = log._writer
    log.close(timeout=0)  # does not wait: the writer may still be appending
    log.record(**entry(3000))
    assert log._writer is None or log._writer is writer, "never a second writer next to a running one"
    assert log.flush() and [line["oid"] for line in lines(log.path)] == [f"oid-{i}" for i in range(3001)]
    log.close()


def call_context(tool: str) -> MiddlewareContext:
    return MiddlewareContext(message=mcp.types.CallToolRequestParams(name=tool, arguments={}), method="tools/call")


async def test_a_cancelled_call_is_audited_as_cancelled(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    started = asyncio.Event()

    async def hangs(context: MiddlewareContext) -> None:
        started.set()
        await asyncio.Event().wait()

    call = asyncio.create_task(AuditTrail(log).on_call_tool(call_context("whoami"), hangs))
    await started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert log.flush() and [line["outcome"] for line in lines(log.path)] == ["cancelled"]
    log.close()


async def test_an_unwritable_audit_file_keeps_the_answer_and_logs_an_error(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    log = AuditLog(blocker / "audit.jsonl")

    async def answers(context: MiddlewareContext) -> str:
        return "the answer"

    with caplog.at_level("ERROR", logger="obokit.server.middleware"):
        assert await AuditTrail(log).on_call_tool(call_context("whoami"), answers) == "the answer"
    assert [e.outcome for e in log.entries] == ["ok"] and not log.flush()
    assert any("AUDIT ENTRY NOT WRITTEN" in r.getMessage() for r in caplog.records if r.name == "obokit.server.middleware")
    log.close()


async def test_the_role_gate_refuses_a_call_without_a_server_context() -> None:
    async def runs(context: MiddlewareContext) -> str:
        raise AssertionError("the tool must not run")

    with pytest.raises(ToolError, match="unknown tool: whoami"):
        await AppRoleGate().on_call_tool(call_context("whoami"), runs)


class CountListings(Middleware):
    """Counts the `tools/list` runs through the server's middleware."""

    def __init__(self) -> None:
        self.listings = 0

    async def on_list_tools(self, context, call_next):  # type: ignore[no-untyped-def]
        self.listings += 1
        return await call_next(context)


@pytest.fixture(scope="module")
def server(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("audit-server")
    yield from serve(emulator, folder, register_workbook_server(emulator, "audit log test", consent=True), "audit")


async def test_server_audits_off_its_loop_and_calls_list_no_tools(server: RunningServer, chen: HeadlessOAuth) -> None:
    counter = CountListings()
    server.mcp.add_middleware(counter)
    async with Client(server.mcp_url, auth=chen) as client:
        await client.call_tool("add_expense", RECEIPT)  # the client lists the tools once, for their output schemas
        listed = counter.listings
        for _ in range(3):
            await client.call_tool("add_expense", RECEIPT)
        assert counter.listings == listed, "a tools/call with arguments does not run a tools/list on the server"
    written = lines(server.storage_dir / "audit.jsonl")
    assert [line["tool"] for line in written[-4:]] == ["add_expense"] * 4, "each answered call is already in the file"
    assert server.audit_log.writer_thread_id not in (None, server.handle._thread.ident), "not the server's loop thread"


async def test_role_gate_follows_tools_added_after_the_first_call(server: RunningServer, chen: HeadlessOAuth) -> None:
    async with Client(server.mcp_url, auth=chen) as client:
        await client.call_tool("whoami")  # the gate has cached the tools registered so far

        @server.mcp.tool(tags={"Task.Write"})
        def close_books() -> str:
            """Close the books (needs Task.Write)."""
            return "closed"

        with pytest.raises(ToolError, match="requires the app role Task.Write"):
            await client.call_tool("close_books")
        server.mcp.local_provider.remove_tool("close_books")

        @server.mcp.tool(tags=set())
        def close_books() -> str:  # noqa: F811 - the same name, now open to everyone
            """Close the books."""
            return "closed"

        assert (await client.call_tool("close_books")).data == "closed", "a replaced tool's new tags apply"
