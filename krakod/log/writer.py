"""The async front of the event log: one writer task doing group commit.

Every append goes through a bounded queue to a single writer task. The writer
takes whatever is queued (up to `max_batch_events`), decides each event in
order, and commits all new events as one SQLite transaction; a caller's
`append` returns only after that transaction committed.

Deciding an event, in order:
1. its idempotency key exists (committed, or earlier in this batch): the
   existing event is returned and nothing is appended;
2. its guard (a synchronous callable, optional) refuses it: nothing is appended;
3. otherwise it gets the next seq and is *staged*: every registered stager is
   called with it before the next event is decided, so guards of later events
   see the effect of earlier ones. This makes the writer the one serialization
   point for decisions such as "grant this claim only if the attempt is still
   open" without any lock.

Stagers see events before their commit completes. A failed commit therefore
leaves them ahead of the log, and the log is closed for good (`LogClosed`):
the daemon must stop and rebuild its state from the log on restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from krakod.log.store import SqliteEventStore, build_read_query, configure_connection, row_to_event
from krakod.log.types import AppendResult, DataDirLocked, Event, LogClosed, LogError, NewEvent

log = logging.getLogger(__name__)

Guard = Callable[[NewEvent], str | None]  # returns None to accept, or the reason to refuse
Stager = Callable[[Event], None]
CommitListener = Callable[[Sequence[Event]], None]

LOG_FILE_NAME = "events.sqlite"
LOCK_FILE_NAME = "krakod.lock"


@dataclass(frozen=True, slots=True)
class LogLimits:
    queue_max_requests: int = 10_000  # appends waiting for the writer; callers wait beyond this
    max_batch_events: int = 2_000  # events committed in one transaction
    max_request_events: int = 5_000  # events in one append_many call


@dataclass(slots=True)
class _Request:
    events: Sequence[NewEvent]
    guards: Sequence[Guard | None]
    future: asyncio.Future[list[AppendResult]]


class DataDirLock:
    """An exclusive flock on DATA_DIR/krakod.lock, held while krakod runs."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / LOCK_FILE_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirLocked(
                f"data dir {self.path.parent} is in use by another krakod (pid {holder}); "
                "stop it or choose another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class EventLog:
    """Append-only event log with group commit, idempotency and tail notification."""

    def __init__(self, path: Path, *, synchronous: str = "FULL", limits: LogLimits | None = None) -> None:
        self.path = Path(path)
        self.limits = limits or LogLimits()
        self._store = SqliteEventStore(self.path, synchronous=synchronous)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="krako-log-writer")
        self._queue: asyncio.Queue[_Request | None] = asyncio.Queue(maxsize=self.limits.queue_max_requests)
        self._reader: aiosqlite.Connection | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._stagers: list[Stager] = []
        self._commit_listeners: list[CommitListener] = []
        self._committed = asyncio.Event()
        self._last_seq = 0
        self._accepting = False
        self._failure: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._store.open)
        self._last_seq = await loop.run_in_executor(self._executor, self._store.last_seq)
        try:
            self._reader = await aiosqlite.connect(self.path)
            await self._reader.execute("PRAGMA busy_timeout=5000")
            await self._reader.execute("PRAGMA query_only=1")
        except Exception as exc:
            await loop.run_in_executor(self._executor, self._store.close)
            raise LogError(f"opening reader of {self.path}: {exc}") from exc
        self._accepting = True
        self._writer_task = asyncio.create_task(self._write_loop(), name="krako-log-writer")

    async def close(self) -> None:
        """Stop intake, commit what is queued, close the database. Safe to call twice."""
        if self._writer_task is None and self._reader is None:
            return
        self._accepting = False
        if self._writer_task is not None:
            if not self._writer_task.done():
                await self._queue.put(None)  # sentinel: everything before it gets committed
            with contextlib.suppress(Exception):
                await self._writer_task
            self._writer_task = None
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._store.close)
        self._executor.shutdown(wait=True)
        self._wake_subscribers()

    @property
    def last_seq(self) -> int:
        """Highest committed seq."""
        return self._last_seq

    @property
    def failed(self) -> BaseException | None:
        return self._failure

    def add_stager(self, stager: Stager) -> None:
        self._stagers.append(stager)

    def add_commit_listener(self, listener: CommitListener) -> None:
        self._commit_listeners.append(listener)

    # -- appending -------------------------------------------------------------

    async def append(self, event: NewEvent, *, guard: Guard | None = None) -> AppendResult:
        return (await self.append_many([event], guards=[guard]))[0]

    async def append_many(
        self, events: Sequence[NewEvent], *, guards: Sequence[Guard | None] | None = None
    ) -> list[AppendResult]:
        """Append events in order; they commit together in one transaction."""
        if not events:
            return []
        if len(events) > self.limits.max_request_events:
            raise ValueError(f"append_many takes at most {self.limits.max_request_events} events")
        if guards is not None and len(guards) != len(events):
            raise ValueError("guards must match events one to one")
        self._check_accepting()
        future: asyncio.Future[list[AppendResult]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Request(events, guards or [None] * len(events), future))
        return await future

    def _check_accepting(self) -> None:
        if self._failure is not None:
            raise LogClosed(f"event log failed earlier: {self._failure}")
        if not self._accepting:
            raise LogClosed("event log is closed")

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        stop = False
        while not stop:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            size = len(first.events)
            while size < self.limits.max_batch_events and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stop = True
                    break
                batch.append(item)
                size += len(item.events)
            try:
                await self._commit_batch(loop, batch)
            except BaseException as exc:  # noqa: BLE001 - every waiter must hear of it
                self._fail(exc, batch)
                return

    async def _commit_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Request]) -> None:
        keys = [e.key() for r in batch for e in r.events]
        existing = await loop.run_in_executor(self._executor, self._store.find_by_keys, keys)
        ts_us = time.time_ns() // 1_000
        staged: list[Event] = []
        outcomes: list[list[AppendResult]] = []
        seq = self._last_seq
        for request in batch:
            results: list[AppendResult] = []
            for new, guard in zip(request.events, request.guards, strict=True):
                key = new.key()
                first = existing.get(key)
                if first is not None:
                    results.append(AppendResult(first, created=False))
                    continue
                reason = guard(new) if guard is not None else None
                if reason is not None:
                    results.append(AppendResult(None, created=False, refused=reason))
                    continue
                seq += 1
                event = new.to_event(seq, ts_us)
                existing[key] = event
                staged.append(event)
                for stager in self._stagers:
                    stager(event)
                results.append(AppendResult(event, created=True))
            outcomes.append(results)
        await loop.run_in_executor(self._executor, self._store.insert, staged)
        if staged:
            self._last_seq = seq
        for request, results in zip(batch, outcomes, strict=True):
            if not request.future.done():
                request.future.set_result(results)
        if staged:
            for listener in self._commit_listeners:
                try:
                    listener(staged)
                except Exception:
                    log.exception("commit listener %r failed", listener)
            self._wake_subscribers()

    def _fail(self, exc: BaseException, batch: list[_Request]) -> None:
        self._failure = exc
        self._accepting = False
        log.critical("event log commit failed; the log is closed: %s", exc)
        closed = LogClosed(f"commit failed: {exc}")
        for request in batch:
            if not request.future.done():
                request.future.set_exception(closed)
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None and not item.future.done():
                item.future.set_exception(closed)
        self._wake_subscribers()

    # -- reading ---------------------------------------------------------------

    def _wake_subscribers(self) -> None:
        woken, self._committed = self._committed, asyncio.Event()
        woken.set()

    async def wait_for_commit(self, after_seq: int, timeout_s: float | None = None) -> bool:
        """Wait until the log holds an event beyond after_seq. False on timeout or close."""
        while self._last_seq <= after_seq:
            if not self._accepting and self._writer_task is None:
                return False
            try:
                await asyncio.wait_for(self._committed.wait(), timeout_s)
            except TimeoutError:
                return False
        return True

    async def read(
        self,
        after_seq: int = 0,
        limit: int = 1000,
        *,
        types: Iterable[str] | None = None,
        work_unit_id: str | None = None,
    ) -> list[Event]:
        """Committed events with seq > after_seq, in seq order, at most `limit` of them."""
        if self._reader is None:
            raise LogClosed("event log is closed")
        sql, params = build_read_query(after_seq, limit, types, work_unit_id)
        try:
            async with self._reader.execute(sql, params) as cursor:
                rows = await cursor.fetchall()
        except Exception as exc:
            raise LogError(f"reading events after seq {after_seq}: {exc}") from exc
        return [row_to_event(r) for r in rows]

    async def follow(
        self,
        after_seq: int = 0,
        *,
        types: Iterable[str] | None = None,
        work_unit_id: str | None = None,
        batch_limit: int = 1000,
    ) -> AsyncIterator[list[Event]]:
        """Yield batches of events after after_seq, then follow new commits until the log closes."""
        type_list = list(types or ())
        position = after_seq
        while True:
            # Everything up to `visible` is committed before the read starts, so the read sees it.
            visible = self._last_seq
            events = await self.read(position, batch_limit, types=type_list, work_unit_id=work_unit_id)
            if events:
                position = events[-1].seq
                yield events
                continue
            # Nothing matched up to `visible`: skip ahead so a filtered reader does not re-scan.
            position = max(position, visible)
            if not await self.wait_for_commit(position):
                return

    async def get_by_key(self, key: str) -> Event | None:
        if self._reader is None:
            raise LogClosed("event log is closed")
        sql = (
            "SELECT seq, event_id, type, idempotency_key, ts_us, tenant_id, execution_session_id, "
            "work_unit_id, source, payload FROM events WHERE idempotency_key = ?"
        )
        async with self._reader.execute(sql, (key,)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else row_to_event(row)


async def replay_all(log: EventLog, handler: Callable[[Event], None], *, batch: int = 5000) -> int:
    """Feed every committed event to handler in seq order; returns the last seq seen."""
    position = 0
    while True:
        events = await log.read(position, batch)
        if not events:
            return position
        for event in events:
            handler(event)
        position = events[-1].seq


__all__ = [
    "DataDirLock",
    "EventLog",
    "Guard",
    "LogLimits",
    "Stager",
    "configure_connection",
    "replay_all",
]
