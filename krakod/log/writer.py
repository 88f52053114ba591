"""The async front of the event log: one writer doing group commit, pipelined.

Every append goes through a bounded intake to the writer, which has two stages
running as two tasks on the event loop:

- the *decider* takes whatever is queued (up to `max_batch_events`), looks the
  idempotency keys up, decides each event in order and stages it;
- the *committer* commits everything decided so far (up to `max_batch_events`)
  as one SQLite transaction on the writer thread.

So batch N+1 is decided while batch N's INSERT and fsync run. A caller's
`append` returns only after the transaction holding its events committed, and
results are delivered strictly in decision order (a duplicate of an event still
being committed returns after that event's commit).

Deciding an event, in order:
1. its idempotency key exists (committed, being committed, or earlier in this
   batch): the existing event is returned and nothing is appended;
2. its guard (a synchronous callable, optional) refuses it: nothing is appended;
3. otherwise it gets the next seq and is *staged*: every registered stager is
   called with it before the next event is decided, so guards of later events
   see the effect of earlier ones. This makes the writer the one serialization
   point for decisions such as "grant this claim only if the attempt is still
   open" without any lock.

Stagers see events before their commit completes, and with pipelining they may
see a later batch before an earlier one committed. A failed commit therefore
leaves them ahead of the log: every batch decided after it fails too (its seqs
continue the failed batch), the log is closed for good (`LogClosed`), and the
daemon must stop and rebuild its state from the log on restart. A guard or
stager that raises closes the log the same way.

Payloads are encoded to canonical JSON inside `append`/`append_many`, in the
caller: a payload that is not JSON-serializable raises there (TypeError,
ValueError or RecursionError) and affects nobody else.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiosqlite

from krakod.log.store import SqliteEventStore, SqliteKeyReader, build_read_query, configure_connection, row_to_event
from krakod.log.types import AppendResult, DataDirLocked, Event, LogClosed, LogError, NewEvent, canonical_json

_T = TypeVar("_T")

log = logging.getLogger(__name__)

Guard = Callable[[NewEvent], str | None]  # returns None to accept, or the reason to refuse
Stager = Callable[[Event], None]
CommitListener = Callable[[Sequence[Event]], None]

LOG_FILE_NAME = "events.sqlite"
LOCK_FILE_NAME = "krakod.lock"


@dataclass(frozen=True, slots=True)
class LogLimits:
    queue_max_requests: int = 10_000  # appends waiting for the writer; callers wait beyond this
    max_batch_events: int = 2_000  # events committed in one transaction (one request may exceed it)
    # Events decided in one step. Smaller than a transaction so that the first part of a burst
    # is committing while the rest is decided; the committer merges what was decided meanwhile.
    max_decide_events: int = 256
    max_request_events: int = 5_000  # events in one append_many call
    # Decided but not yet committed events: bounds the pipeline (and the memory of staged keys).
    max_uncommitted_events: int = 4_000


class _Request:
    """One append_many call on its way through the writer."""

    __slots__ = ("decided", "events", "future", "guards", "keys", "payloads")

    def __init__(
        self,
        events: Sequence[NewEvent],
        keys: Sequence[str],
        payloads: Sequence[str],
        guards: Sequence[Guard | None] | None,
        future: asyncio.Future[list[AppendResult]],
        decided: asyncio.Future[list[AppendResult]] | None = None,
    ) -> None:
        self.events = events
        self.keys = keys
        self.payloads = payloads
        self.guards = guards
        self.future = future
        self.decided = decided  # set when the caller only waits for the decision (durable=False)


class _Decided:
    """A decided batch waiting for its commit: results to deliver, events to insert."""

    __slots__ = ("outcomes", "requests", "staged")

    def __init__(self, requests: list[_Request], outcomes: list[list[AppendResult]], staged: list[Event]) -> None:
        self.requests = requests
        self.outcomes = outcomes
        self.staged = staged


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
        self._keys = SqliteKeyReader(self.path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="krako-log-writer")
        self._key_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="krako-log-keys")
        self._reader: aiosqlite.Connection | None = None
        self._stagers: list[Stager] = []
        self._commit_listeners: list[CommitListener] = []
        self._committed = asyncio.Event()
        self._last_seq = 0  # highest committed seq
        self._accepting = False
        self._closing = False
        self._closed = False
        self._failed_event = asyncio.Event()  # set once, when a commit failed and the log closed for good
        self._failure: BaseException | None = None
        # Intake: requests waiting for the decider, bounded by queue_max_requests.
        self._intake: deque[_Request] = deque()
        self._intake_ready = asyncio.Event()
        self._space_waiters: deque[asyncio.Future[None]] = deque()
        self._callers_waiting_for_space = 0
        # Between the stages: decided batches waiting for the committer.
        self._decided: deque[_Decided] = deque()
        self._decided_ready = asyncio.Event()
        self._decided_seq = 0  # highest staged seq
        self._uncommitted_events = 0
        self._room = asyncio.Event()  # set by the committer whenever it frees pipeline room
        # Keys staged but possibly invisible to the key reader's snapshot, and keys of
        # commits that any lookup starting from now on will see (evicted by the decider).
        self._staged_keys: dict[str, Event] = {}
        self._visible_keys: list[str] = []
        self._decider_task: asyncio.Task[None] | None = None
        self._committer_task: asyncio.Task[None] | None = None
        self._close_started: asyncio.Future[None] | None = None

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._store.open)
        try:
            self._last_seq = await loop.run_in_executor(self._executor, self._store.last_seq)
            await loop.run_in_executor(self._key_executor, self._keys.open)
            self._reader = await aiosqlite.connect(self.path)
            await self._reader.execute("PRAGMA busy_timeout=5000")
            await self._reader.execute("PRAGMA query_only=1")
        except Exception as exc:
            await loop.run_in_executor(self._key_executor, self._keys.close)
            await loop.run_in_executor(self._executor, self._store.close)
            if self._reader is not None:
                await self._reader.close()
                self._reader = None
            raise LogError(f"opening readers of {self.path}: {exc}") from exc
        self._decided_seq = self._last_seq
        self._accepting = True
        self._decider_task = asyncio.create_task(self._decide_loop(), name="krako-log-decider")
        self._committer_task = asyncio.create_task(self._commit_loop(), name="krako-log-committer")

    async def close(self) -> None:
        """Stop intake, commit what is queued, close the database. Safe to call twice, or concurrently."""
        if self._closed or (self._decider_task is None and self._reader is None):
            return
        if self._close_started is not None:
            await asyncio.shield(self._close_started)
            return
        self._close_started = asyncio.get_running_loop().create_future()
        try:
            await self._close()
        finally:
            self._close_started.set_result(None)

    async def _close(self) -> None:
        self._accepting = False
        self._closing = True
        self._intake_ready.set()
        for task in (self._decider_task, self._committer_task):
            if task is not None:
                with contextlib.suppress(Exception):
                    await task
        self._decider_task = self._committer_task = None
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._key_executor, self._keys.close)
        await loop.run_in_executor(self._executor, self._store.close)
        self._key_executor.shutdown(wait=True)
        self._executor.shutdown(wait=True)
        self._closed = True
        self._wake_subscribers()

    @property
    def last_seq(self) -> int:
        """Highest committed seq."""
        return self._last_seq

    @property
    def failed(self) -> BaseException | None:
        return self._failure

    async def wait_failed(self) -> BaseException:
        """Return once the log has failed (a commit or a guard raised); the owner should then stop."""
        await self._failed_event.wait()
        assert self._failure is not None
        return self._failure

    def add_stager(self, stager: Stager) -> None:
        self._stagers.append(stager)

    def add_commit_listener(self, listener: CommitListener) -> None:
        """Called on the event loop once per committed transaction, with its events in seq order."""
        self._commit_listeners.append(listener)

    # -- appending -------------------------------------------------------------

    async def append(self, event: NewEvent, *, guard: Guard | None = None) -> AppendResult:
        """Append one event; `append_many` of one event, without its per-call overhead."""
        if self._failure is not None or not self._accepting:
            self._check_accepting()
        key = event.idempotency_key if event.idempotency_key is not None else f"event:{event.event_id}"
        future: asyncio.Future[list[AppendResult]] = asyncio.get_running_loop().create_future()
        request = _Request(
            (event,), (key,), (canonical_json(event.payload),), None if guard is None else (guard,), future
        )
        if self._space_waiters or len(self._intake) >= self.limits.queue_max_requests:
            await self._wait_for_space(request)
        else:
            self._intake.append(request)
            if not self._intake_ready.is_set():
                self._intake_ready.set()
        return (await future)[0]

    async def append_many(
        self, events: Sequence[NewEvent], *, guards: Sequence[Guard | None] | None = None, durable: bool = True
    ) -> list[AppendResult]:
        """Append events in order; they commit together in one transaction.

        durable=False returns as soon as the events are *decided* (seq assigned, guards and
        stagers run), before their commit. Use it only for actions that are safe to take on
        a decision that a failed commit would undo — a failed commit closes the log and the
        daemon stops — such as sending an offer, which grants nothing until a claim commits.
        """
        if not events:
            return []
        if len(events) > self.limits.max_request_events:
            raise ValueError(f"append_many takes at most {self.limits.max_request_events} events")
        if guards is not None and len(guards) != len(events):
            raise ValueError("guards must match events one to one")
        if self._failure is not None or not self._accepting:
            self._check_accepting()
        # Encoded here, in the caller: a bad payload fails this call only, not the writer.
        keys = [e.idempotency_key if e.idempotency_key is not None else f"event:{e.event_id}" for e in events]
        payloads = [canonical_json(e.payload) for e in events]
        if guards is not None and not any(guards):
            guards = None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[AppendResult]] = loop.create_future()
        decided: asyncio.Future[list[AppendResult]] | None = None
        if not durable:
            decided = loop.create_future()
            # Nobody awaits the commit: retrieve its outcome so a failure is not reported as unhandled.
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
        request = _Request(events, keys, payloads, guards, future, decided)
        if self._space_waiters or len(self._intake) >= self.limits.queue_max_requests:
            await self._wait_for_space(request)
        else:
            self._intake.append(request)
            if not self._intake_ready.is_set():
                self._intake_ready.set()
        return await (decided if decided is not None else future)

    async def _wait_for_space(self, request: _Request) -> None:
        """Queue behind earlier waiters until the intake has room, then enqueue the request."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._space_waiters.append(waiter)
        # Counted until enqueued, so that close() drains callers admitted before it began.
        self._callers_waiting_for_space += 1
        try:
            await waiter
            self._check_failed()
            self._intake.append(request)
        finally:
            self._callers_waiting_for_space -= 1
            if not waiter.done():
                waiter.cancel()
                self._space_waiters.remove(waiter)
            self._intake_ready.set()

    def _release_space_waiters(self) -> None:
        room = self.limits.queue_max_requests - len(self._intake)
        while room > 0 and self._space_waiters:
            waiter = self._space_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                room -= 1

    def _check_failed(self) -> None:
        if self._failure is not None:
            raise LogClosed(f"event log failed earlier: {self._failure}")

    def _check_accepting(self) -> None:
        self._check_failed()
        if not self._accepting:
            raise LogClosed("event log is closed")

    # -- the writer: decider stage ----------------------------------------------

    async def _decide_loop(self) -> None:
        loop = asyncio.get_running_loop()
        batch: list[_Request] = []
        try:
            while self._failure is None:
                if not self._intake:
                    if self._closing and self._callers_waiting_for_space == 0:
                        break
                    self._intake_ready.clear()
                    await self._intake_ready.wait()
                    continue
                if self._uncommitted_events >= self.limits.max_uncommitted_events:
                    # Pipeline full: wait for a commit; meanwhile the next batch grows.
                    self._room.clear()
                    await self._room.wait()
                    continue
                batch = self._take_intake()
                self._release_space_waiters()
                found = await self._lookup_keys(loop, batch)
                if self._failure is not None:
                    break
                self._stage(batch, found)
                batch = []
        except BaseException as exc:  # a guard or stager failed: every waiter must hear of it
            self._fail(exc, batch)
            if not isinstance(exc, Exception):
                raise
        finally:
            if self._failure is not None:
                self._fail(self._failure, batch)
            # The committer drains what was decided, then stops.
            self._decided_ready.set()

    def _take_intake(self) -> list[_Request]:
        return _take_up_to(self._intake, lambda request: len(request.events), self.limits.max_decide_events)

    async def _lookup_keys(self, loop: asyncio.AbstractEventLoop, batch: list[_Request]) -> dict[str, Event]:
        """Committed events for the batch's keys that are not staged in memory.

        Keys of commits finished before this lookup starts are visible to it, so they
        leave the in-memory map now; keys of commits still running stay in it.
        """
        staged = self._staged_keys
        for key in self._visible_keys:
            staged.pop(key, None)
        self._visible_keys = []
        unknown = [key for request in batch for key in request.keys if key not in staged]
        if not unknown:
            return {}
        return await loop.run_in_executor(self._key_executor, self._keys.find_by_keys, unknown)

    def _stage(self, batch: list[_Request], found: dict[str, Event]) -> None:
        known = self._staged_keys
        if found:
            # Committed events found by the lookup join the map until the next decision
            # step, so that one dict answers for committed, in-flight and earlier-in-batch keys.
            known.update(found)
            self._visible_keys.extend(found)
        stagers = self._stagers
        seq = self._decided_seq
        ts_us = time.time_ns() // 1_000
        staged: list[Event] = []
        outcomes: list[list[AppendResult]] = []
        for request in batch:
            results: list[AppendResult] = []
            events = request.events
            guards = request.guards
            payloads = request.payloads
            for index, key in enumerate(request.keys):
                first = known.get(key)
                if first is not None:
                    results.append(AppendResult(first, False))
                    continue
                new = events[index]
                if guards is not None:
                    guard = guards[index]
                    reason = None if guard is None else guard(new)
                    if reason is not None:
                        results.append(AppendResult(None, False, reason))
                        continue
                seq += 1
                event = Event(
                    seq,
                    new.event_id,
                    new.type,
                    key,
                    ts_us,
                    new.tenant_id,
                    new.execution_session_id,
                    new.work_unit_id,
                    new.source,
                    payloads[index],
                    new.payload,
                )
                known[key] = event
                staged.append(event)
                for stager in stagers:
                    stager(event)
                results.append(AppendResult(event, True))
            outcomes.append(results)
            if request.decided is not None and not request.decided.done():
                request.decided.set_result(results)
        self._decided_seq = seq
        self._uncommitted_events += len(staged)
        self._decided.append(_Decided(batch, outcomes, staged))
        self._decided_ready.set()

    # -- the writer: committer stage --------------------------------------------

    async def _commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._failure is None:
            if not self._decided:
                if self._decider_task is None or self._decider_task.done():
                    return
                self._decided_ready.clear()
                await self._decided_ready.wait()
                continue
            taken = self._take_decided()
            staged = [event for decided in taken for event in decided.staged]
            try:
                if staged:
                    await loop.run_in_executor(self._executor, self._store.insert, staged)
            except BaseException as exc:  # every waiter must hear of it
                self._fail(exc, [r for decided in taken for r in decided.requests])
                if not isinstance(exc, Exception):
                    raise
                return
            self._committed_batches(taken, staged)

    def _take_decided(self) -> list[_Decided]:
        return _take_up_to(self._decided, lambda batch: len(batch.staged), self.limits.max_batch_events)

    def _committed_batches(self, taken: list[_Decided], staged: list[Event]) -> None:
        if staged:
            self._last_seq = staged[-1].seq
            self._uncommitted_events -= len(staged)
            self._visible_keys.extend(event.idempotency_key for event in staged)
            self._room.set()
        for decided in taken:
            for request, results in zip(decided.requests, decided.outcomes, strict=True):
                if not request.future.done():
                    request.future.set_result(results)
        if staged:
            for listener in self._commit_listeners:
                try:
                    listener(staged)
                except Exception:
                    log.exception("commit listener %r failed", listener)
            self._wake_subscribers()

    def _fail(self, exc: BaseException, in_hand: Iterable[_Request]) -> None:
        """Close the log for good and fail every append that has not committed."""
        if self._failure is None:
            self._failure = exc
            log.critical("event log failed; the log is closed: %s", exc)
        self._failed_event.set()
        self._accepting = False
        closed = LogClosed(f"event log failed: {self._failure}")
        pending: list[_Request] = list(in_hand)
        pending.extend(r for decided in self._decided for r in decided.requests)
        pending.extend(self._intake)
        self._decided.clear()
        self._intake.clear()
        for request in pending:
            if not request.future.done():
                request.future.set_exception(closed)
            if request.decided is not None and not request.decided.done():
                request.decided.set_exception(closed)
        while self._space_waiters:
            waiter = self._space_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the waiter re-checks and raises LogClosed
        self._room.set()
        self._intake_ready.set()
        self._decided_ready.set()
        self._wake_subscribers()

    # -- reading ---------------------------------------------------------------

    def _wake_subscribers(self) -> None:
        woken, self._committed = self._committed, asyncio.Event()
        woken.set()

    async def wait_for_commit(self, after_seq: int, timeout_s: float | None = None) -> bool:
        """Wait until the log holds an event beyond after_seq. False on timeout or close."""
        while self._last_seq <= after_seq:
            if self._closed or self._failure is not None:
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
            # One call on the reader's thread runs the statement to its end, so no other
            # query on this connection runs inside its read transaction (and its snapshot).
            rows = await self._reader.execute_fetchall(sql, params)
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
        # execute_fetchall, not fetchone: a statement left unfinished would keep its read
        # transaction open, and later reads on this connection would see that old snapshot.
        try:
            rows = await self._reader.execute_fetchall(sql, (key,))
        except Exception as exc:
            raise LogError(f"looking up idempotency key {key!r}: {exc}") from exc
        return None if not rows else row_to_event(next(iter(rows)))


def _take_up_to(queue: deque[_T], size_of: Callable[[_T], int], limit: int) -> list[_T]:
    """The first item, then more while their sizes add up to at most `limit` (a request is never split)."""
    taken = [queue.popleft()]
    size = size_of(taken[0])
    while queue and size + size_of(queue[0]) <= limit:
        item = queue.popleft()
        taken.append(item)
        size += size_of(item)
    return taken


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
