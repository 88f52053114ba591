"""The on-disk outbox: every result is durable here before it is sent, until it is acknowledged.

One SQLite file per node id in the state dir (WAL, ``synchronous=FULL``, verified), keyed
by (work_unit_id, attempt). All SQLite work happens on one dedicated thread, fed by one
writer task that commits whatever is queued as one transaction (group commit), so a burst
of results costs one fsync, not one each. A lock file keeps a second agent with the same
node id and state dir from sharing (and corrupting the meaning of) the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from krako.v1 import agent_pb2

logger = logging.getLogger(__name__)

AttemptKey = tuple[str, int]

QUEUE_MAX_OPERATIONS = 10_000
TRANSACTION_MAX_OPERATIONS = 1_000
BUSY_TIMEOUT_MS = 5_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    work_unit_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    result BLOB NOT NULL,
    created_unix_ms INTEGER NOT NULL,
    PRIMARY KEY (work_unit_id, attempt)
) WITHOUT ROWID
"""


class OutboxError(Exception):
    """The outbox could not be opened or written; the message says what was being done."""


def key_of(result: agent_pb2.Result) -> AttemptKey:
    return (result.work_unit_id, result.attempt)


@dataclass
class _Operation:
    put: agent_pb2.Result | None
    delete: list[AttemptKey]
    done: asyncio.Future[None] | None  # None: nobody waits for the commit


class Outbox:
    """Durable results awaiting a ResultAck. Use ``await Outbox.open(path)``."""

    def __init__(self, path: Path, connection: sqlite3.Connection, thread: ThreadPoolExecutor, lock: IO[str]) -> None:
        self.path = path
        self._connection = connection
        self._thread = thread
        self._lock_file = lock
        self._keys: set[AttemptKey] = set()
        self._queue: asyncio.Queue[_Operation] = asyncio.Queue(maxsize=QUEUE_MAX_OPERATIONS)
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self._empty = asyncio.Event()

    @classmethod
    async def open(cls, path: Path) -> Outbox:
        """Open (creating) the outbox at ``path``; OutboxError if locked or unusable."""
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = _lock(path)
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentd-outbox")
        loop = asyncio.get_running_loop()
        try:
            connection = await loop.run_in_executor(thread, _connect, path)
            outbox = cls(path, connection, thread, lock)
            outbox._keys = set(await loop.run_in_executor(thread, _keys, connection))
            outbox._note_size()
        except BaseException:
            thread.shutdown(wait=False)
            lock.close()
            raise
        outbox._writer = asyncio.create_task(outbox._write_loop(), name="agentd-outbox-writer")
        return outbox

    def keys(self) -> set[AttemptKey]:
        """Attempts whose results are stored and not yet acknowledged."""
        return set(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    async def wait_empty(self) -> None:
        """Return once every stored result has been acknowledged."""
        await self._empty.wait()

    def _note_size(self) -> None:
        if self._keys:
            self._empty.clear()
        else:
            self._empty.set()

    async def put(self, result: agent_pb2.Result) -> None:
        """Store ``result``; returns once it is committed to disk."""
        await self._submit(_Operation(put=result, delete=[], done=asyncio.get_running_loop().create_future()))

    async def delete(self, keys: Iterable[AttemptKey]) -> None:
        """Forget acknowledged results (unknown keys are ignored)."""
        keys = [key for key in keys if key in self._keys]
        if not keys:
            return
        await self._submit(_Operation(put=None, delete=keys, done=asyncio.get_running_loop().create_future()))

    async def forget(self, keys: Iterable[AttemptKey]) -> None:
        """Queue the deletion of acknowledged results without waiting for its commit.

        The stream reader uses this so an ack never stalls the grants and offers behind it;
        losing a queued deletion in a crash only means a duplicate resend, which is safe.
        Waits only while the writer's queue is full.
        """
        keys = [key for key in keys if key in self._keys]
        if keys and not self._closed:
            await self._queue.put(_Operation(put=None, delete=keys, done=None))

    async def load_all(self) -> list[agent_pb2.Result]:
        """Every stored result, oldest first (what is resent after a reconnect)."""
        blobs = await asyncio.get_running_loop().run_in_executor(self._thread, _blobs, self._connection)
        return [agent_pb2.Result.FromString(blob) for blob in blobs]

    async def close(self) -> None:
        """Finish queued writes, close the database, release the lock. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            await self._queue.join()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        await asyncio.get_running_loop().run_in_executor(self._thread, self._connection.close)
        self._thread.shutdown(wait=True)
        self._lock_file.close()

    async def _submit(self, operation: _Operation) -> None:
        if self._closed:
            raise OutboxError(f"outbox {self.path} is closed")
        await self._queue.put(operation)
        if operation.done is not None:
            await operation.done

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < TRANSACTION_MAX_OPERATIONS and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await loop.run_in_executor(self._thread, _apply, self._connection, batch)
            except Exception as error:  # the waiting callers get the error, the writer keeps going
                failure = OutboxError(f"writing the outbox {self.path} failed: {error}")
                logger.error("%s", failure)
                for operation in batch:
                    if operation.done is not None and not operation.done.done():
                        operation.done.set_exception(failure)
            else:
                # Keys change only once committed, even when the caller stopped waiting.
                for operation in batch:
                    if operation.put is not None:
                        self._keys.add(key_of(operation.put))
                    self._keys.difference_update(operation.delete)
                    if operation.done is not None and not operation.done.done():
                        operation.done.set_result(None)
                self._note_size()
            for _ in batch:
                self._queue.task_done()


def _lock(path: Path) -> IO[str]:
    lock_path = path.with_suffix(path.suffix + ".lock")
    lock = open(lock_path, "a+")
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        lock.close()
        raise OutboxError(
            f"another agentd is using {path}; give each agent on a host its own --node-id or --state-dir"
        ) from error
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def _connect(path: Path) -> sqlite3.Connection:
    try:
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        connection.execute("PRAGMA synchronous=FULL")
        synchronous = connection.execute("PRAGMA synchronous").fetchone()[0]
        connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        connection.execute(_SCHEMA)
    except sqlite3.Error as error:
        raise OutboxError(f"cannot open the outbox {path}: {error}") from error
    # Verify rather than assume: a result acknowledged as "stored" must survive power loss.
    if str(mode).lower() != "wal" or synchronous != 2:
        connection.close()
        raise OutboxError(f"outbox {path}: expected journal_mode=wal synchronous=FULL, got {mode} {synchronous}")
    return connection


def _keys(connection: sqlite3.Connection) -> list[AttemptKey]:
    return [(row[0], int(row[1])) for row in connection.execute("SELECT work_unit_id, attempt FROM outbox")]


def _blobs(connection: sqlite3.Connection) -> list[bytes]:
    return [row[0] for row in connection.execute("SELECT result FROM outbox ORDER BY created_unix_ms, work_unit_id")]


def _apply(connection: sqlite3.Connection, batch: list[_Operation]) -> None:
    now_ms = int(time.time() * 1000)
    try:
        connection.execute("BEGIN IMMEDIATE")
        for operation in batch:
            if operation.put is not None:
                connection.execute(
                    "INSERT OR REPLACE INTO outbox (work_unit_id, attempt, result, created_unix_ms)"
                    " VALUES (?, ?, ?, ?)",
                    (operation.put.work_unit_id, operation.put.attempt, operation.put.SerializeToString(), now_ms),
                )
            if operation.delete:
                connection.executemany("DELETE FROM outbox WHERE work_unit_id = ? AND attempt = ?", operation.delete)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
