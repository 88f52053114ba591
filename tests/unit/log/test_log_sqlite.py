"""The log contract on the SQLite (WAL) backend, plus what is specific to SQLite."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from log_contract import EventLogContract, LogBackend, crash_child_argv, new, read_all

from krakod.log import LOG_FILE_NAME, EventLog, LogError, LogLimits
from krakod.log.store import SqliteEventStore


class SqliteBackend(LogBackend):
    name = "sqlite"
    expected_durability = {"journal_mode": "wal", "synchronous": 2}  # 2 = FULL

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.db_path = directory / LOG_FILE_NAME

    @property
    def data_dir(self) -> Path:
        return self.directory

    async def open_log(self, *, limits: LogLimits | None = None) -> EventLog:
        log = EventLog(self.db_path, limits=limits)
        await log.open()
        return log

    def break_commits(self, log: EventLog, error: Exception) -> None:
        def fail(events: object) -> None:
            raise error

        log._store.insert = fail  # type: ignore[method-assign]  # the one place commits happen

    async def durability_settings(self, log: EventLog) -> dict[str, object]:
        # Ask the writer's own connection: it is the one whose commits must be durable.
        def read() -> dict[str, object]:
            conn = log._store.conn
            return {
                "journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0],
                "synchronous": conn.execute("PRAGMA synchronous").fetchone()[0],
            }

        return await asyncio.get_running_loop().run_in_executor(log._executor, read)

    def crash_child_argv(self) -> list[str]:
        return crash_child_argv(self.db_path)


class TestSqliteEventLog(EventLogContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> SqliteBackend:
        return SqliteBackend(tmp_path)

    # -- specific to SQLite ------------------------------------------------------

    def test_a_synchronous_mode_that_does_not_exist_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(LogError, match="synchronous must be one of"):
            SqliteEventStore(tmp_path / "x.sqlite", synchronous="SOMETIMES").open()

    async def test_normal_synchronous_is_set_when_asked(self, tmp_path: Path) -> None:
        log = EventLog(tmp_path / LOG_FILE_NAME, synchronous="NORMAL")
        await log.open()
        try:
            assert await SqliteBackend(tmp_path).durability_settings(log) == {"journal_mode": "wal", "synchronous": 1}
        finally:
            await log.close()

    async def test_large_batches_are_split_into_statements_in_one_transaction(self, backend: SqliteBackend) -> None:
        # 1,300 rows: full 512-row statements and power-of-two remainders, one commit.
        log = await backend.open_log(limits=LogLimits(max_request_events=2_000))
        transactions: list[int] = []
        log.add_commit_listener(lambda events: transactions.append(len(events)))
        try:
            results = await log.append_many([new(f"big{n}") for n in range(1_300)])
            assert all(r.created for r in results)
            assert transactions == [1_300]
            events = await read_all(log)
            assert [e.idempotency_key for e in events] == [f"big{n}" for n in range(1_300)]
        finally:
            await log.close()

    async def test_a_clean_close_leaves_no_write_ahead_log(self, backend: SqliteBackend) -> None:
        log = await backend.open_log()
        await log.append(new("k"))
        await log.close()
        wal = backend.db_path.with_name(LOG_FILE_NAME + "-wal")
        assert not wal.exists() or wal.stat().st_size == 0
        with sqlite3.connect(backend.db_path) as conn:
            assert conn.execute("SELECT idempotency_key FROM events").fetchall() == [("k",)]
