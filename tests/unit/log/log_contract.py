"""The event log's contract, written once and run against every storage backend.

pyeventsourcing style: `EventLogContract` holds the cases and only uses the log's
public API plus a `LogBackend`, which knows how to open a log on its storage, how to
break its commits, what its durability settings are, and how to run a child process
that appends to the same storage. A backend's test module subclasses the contract
and provides the `backend` fixture; see test_log_sqlite.py.
"""

from __future__ import annotations

import abc
import asyncio
import os
import random
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from krakod.log import (
    AppendResult,
    DataDirLock,
    DataDirLocked,
    Event,
    EventLog,
    LogClosed,
    LogError,
    LogLimits,
    NewEvent,
    replay_all,
)

WAIT_S = 10.0  # deadline for anything the tests wait on; never a sleep


class LogBackend(abc.ABC):
    """One storage backend of the event log, as the contract needs it."""

    name: str
    expected_durability: dict[str, object]

    @abc.abstractmethod
    async def open_log(self, *, limits: LogLimits | None = None) -> EventLog:
        """Open (or reopen) the log on this backend's storage; each call sees the same events."""

    @abc.abstractmethod
    def break_commits(self, log: EventLog, error: Exception) -> None:
        """From now on, every commit of `log` fails with `error` (nothing reaches storage)."""

    @abc.abstractmethod
    async def durability_settings(self, log: EventLog) -> dict[str, object]:
        """The settings the log's durability depends on, as the storage reports them."""

    @abc.abstractmethod
    def crash_child_argv(self) -> list[str]:
        """A command that appends to this storage and prints `ack <key> <seq>` per returned append."""

    @property
    @abc.abstractmethod
    def data_dir(self) -> Path:
        """The directory a daemon using this log would lock."""


def new(
    key: str | None = None, *, type_: str = "test.happened", work_unit_id: str | None = None, **payload: Any
) -> NewEvent:
    return NewEvent(type=type_, idempotency_key=key, tenant_id="t1", work_unit_id=work_unit_id, payload=payload)


async def read_all(log: EventLog) -> list[Event]:
    events: list[Event] = []
    await replay_all(log, events.append)
    return events


def assert_gap_free(events: Sequence[Event]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


class EventLogContract:
    """Cases every backend of the event log must pass. Subclasses provide `backend`."""

    @pytest.fixture
    async def log(self, backend: LogBackend) -> AsyncIterator[EventLog]:
        opened = await backend.open_log()
        try:
            yield opened
        finally:
            await opened.close()

    # -- sequence and idempotency ------------------------------------------------

    async def test_seq_starts_at_one_and_has_no_gaps(self, log: EventLog) -> None:
        for n in range(5):
            await log.append(new(f"k{n}"))
        results = await log.append_many([new(f"b{n}") for n in range(5)])
        assert [r.event.seq for r in results if r.event] == [6, 7, 8, 9, 10]
        assert log.last_seq == 10
        assert_gap_free(await read_all(log))

    async def test_an_existing_key_returns_the_first_event_and_appends_nothing(self, log: EventLog) -> None:
        first = await log.append(new("claim:wu1:1", node="a"))
        second = await log.append(new("claim:wu1:1", node="b"))
        assert first.created and not second.created and second.duplicate
        assert second.event == first.event
        assert second.event is not None and second.event.payload == {"node": "a"}
        assert [e.idempotency_key for e in await read_all(log)] == ["claim:wu1:1"]

    async def test_a_key_repeated_within_one_batch_is_appended_once(self, log: EventLog) -> None:
        results = await log.append_many([new("k", n=1), new("other"), new("k", n=2)])
        assert [r.created for r in results] == [True, True, False]
        assert results[2].event == results[0].event
        assert len(await read_all(log)) == 2

    async def test_concurrent_appends_of_one_key_append_it_once(self, log: EventLog) -> None:
        results = await asyncio.gather(*(log.append(new("same", n=n)) for n in range(50)))
        assert sum(r.created for r in results) == 1
        assert len({r.event for r in results}) == 1
        assert len(await read_all(log)) == 1

    async def test_an_event_without_key_is_keyed_by_its_id(self, log: EventLog) -> None:
        event = new()
        first = await log.append(event)
        again = await log.append(event)
        assert first.event is not None and first.event.idempotency_key == f"event:{event.event_id}"
        assert not again.created and again.event == first.event
        assert await log.get_by_key(f"event:{event.event_id}") == first.event

    async def test_the_envelope_is_stored_as_given_and_stamped(self, log: EventLog) -> None:
        given = NewEvent(
            type="workunit.completed",
            idempotency_key="done:wu9",
            tenant_id="acme",
            execution_session_id="s1",
            work_unit_id="wu9",
            source="agentd:n1",
            payload={"b": [1, 2.5, None], "a": "é"},
        )
        result = await log.append(given)
        stored = await log.get_by_key("done:wu9")
        assert stored == result.event
        assert stored is not None
        assert (stored.event_id, stored.type, stored.tenant_id, stored.execution_session_id) == (
            given.event_id,
            "workunit.completed",
            "acme",
            "s1",
        )
        assert (stored.work_unit_id, stored.source, stored.payload) == ("wu9", "agentd:n1", given.payload)
        assert stored.payload_json == '{"a":"é","b":[1,2.5,null]}'  # canonical: sorted keys, no spaces
        assert stored.ts.tzinfo is not None and stored.ts_us > 0

    async def test_a_payload_that_is_not_json_fails_only_its_own_call(self, log: EventLog) -> None:
        with pytest.raises(TypeError):
            await log.append(new("bad", value=object()))
        assert (await log.append(new("good"))).created
        assert log.failed is None
        assert [e.idempotency_key for e in await read_all(log)] == ["good"]

    # -- group commit ------------------------------------------------------------

    async def test_concurrent_appenders_are_committed_in_shared_transactions(self, log: EventLog) -> None:
        transactions: list[list[int]] = []
        log.add_commit_listener(lambda events: transactions.append([e.seq for e in events]))
        appenders, per_appender = 40, 10

        async def appender(index: int) -> list[AppendResult]:
            return [await log.append(new(f"a{index}:{n}")) for n in range(per_appender)]

        results = [r for rs in await asyncio.gather(*(appender(i) for i in range(appenders))) for r in rs]
        total = appenders * per_appender
        assert all(r.created for r in results)
        seqs = sorted(r.event.seq for r in results if r.event)
        assert seqs == list(range(1, total + 1))
        # Each transaction is reported once, in seq order, and together they cover every append.
        assert [s for t in transactions for s in t] == seqs
        assert len(transactions) < total
        assert_gap_free(await read_all(log))

    async def test_append_returns_only_after_its_transaction_committed(self, log: EventLog) -> None:
        committed: set[int] = set()
        staged_before_commit: list[bool] = []
        log.add_stager(lambda event: staged_before_commit.append(event.seq > log.last_seq))
        log.add_commit_listener(lambda events: committed.update(e.seq for e in events))

        async def appender(index: int) -> None:
            for n in range(5):
                result = await log.append(new(f"c{index}:{n}"))
                assert result.event is not None
                assert result.event.seq in committed and result.event.seq <= log.last_seq
                got = await log.get_by_key(f"c{index}:{n}")
                assert got == result.event, (got, result.event)

        await asyncio.gather(*(appender(i) for i in range(20)))
        assert staged_before_commit and all(staged_before_commit)

    async def test_a_duplicate_of_an_event_being_committed_returns_after_that_commit(self, backend: LogBackend) -> None:
        # Small decision steps: the second "dup" is decided while the first may still be
        # committing, and must not hand out an event that is not durable yet.
        log = await backend.open_log(limits=LogLimits(max_decide_events=20))
        committed: set[int] = set()
        log.add_commit_listener(lambda events: committed.update(e.seq for e in events))
        try:
            filler = [log.append_many([new(f"f{i}:{n}") for n in range(20)]) for i in range(10)]
            results = await asyncio.gather(log.append(new("dup")), *filler, log.append(new("dup")))
            first, dup = results[0], results[-1]
            assert isinstance(first, AppendResult) and isinstance(dup, AppendResult)
            assert first.created and not dup.created and dup.event == first.event
            assert dup.event is not None and dup.event.seq in committed
        finally:
            await log.close()

    async def test_a_small_pipeline_under_pressure_commits_everything(self, backend: LogBackend) -> None:
        limits = LogLimits(
            queue_max_requests=3,
            max_batch_events=5,
            max_request_events=10,
            max_decide_events=2,
            max_uncommitted_events=4,
        )
        log = await backend.open_log(limits=limits)
        try:
            rng = random.Random(7)
            keys = [f"p{rng.randrange(150)}" for _ in range(300)]
            calls = [keys[i : i + rng.randint(1, 4)] for i in range(0, len(keys), 4)]
            results = await asyncio.gather(*(log.append_many([new(k) for k in call]) for call in calls))
            by_key: dict[str, Event] = {}
            for call, call_results in zip(calls, results, strict=True):
                for key, result in zip(call, call_results, strict=True):
                    assert result.event is not None
                    assert by_key.setdefault(key, result.event) == result.event
            events = await read_all(log)
            assert_gap_free(events)
            assert {e.idempotency_key: e for e in events} == by_key
        finally:
            await log.close()

    # -- guards and stagers ------------------------------------------------------

    async def test_a_refusing_guard_appends_nothing(self, log: EventLog) -> None:
        result = await log.append(new("k"), guard=lambda _event: "unit is cancelled")
        assert result == AppendResult(None, created=False, refused="unit is cancelled")
        assert not result.duplicate
        assert await read_all(log) == []
        assert log.last_seq == 0
        assert (await log.append(new("k"), guard=lambda _event: None)).created

    async def test_guards_see_events_staged_earlier_in_the_same_batch(self, log: EventLog) -> None:
        claimed: dict[str, str] = {}

        def stage(event: Event) -> None:
            if event.type == "workunit.claimed":
                claimed[event.work_unit_id or ""] = event.payload["node"]

        def unclaimed(event: NewEvent) -> str | None:
            holder = claimed.get(event.work_unit_id or "")
            return None if holder is None else f"claimed by {holder}"

        log.add_stager(stage)
        claims = [
            NewEvent(
                type="workunit.claimed", idempotency_key=f"claim:wu1:{node}", work_unit_id="wu1", payload={"node": node}
            )
            for node in ("n1", "n2", "n3")
        ]
        in_one_batch = await log.append_many(claims, guards=[unclaimed] * 3)
        assert [r.created for r in in_one_batch] == [True, False, False]
        assert in_one_batch[1].refused == "claimed by n1"
        # Concurrent callers race through the same serialization point.
        others = [
            NewEvent(
                type="workunit.claimed",
                idempotency_key=f"claim:wu2:n{n}",
                work_unit_id="wu2",
                payload={"node": f"n{n}"},
            )
            for n in range(30)
        ]
        raced = await asyncio.gather(*(log.append(e, guard=unclaimed) for e in others))
        assert sum(r.created for r in raced) == 1
        assert len([e for e in await read_all(log) if e.work_unit_id == "wu2"]) == 1

    async def test_stagers_see_every_event_once_in_seq_order_before_the_next_is_decided(self, log: EventLog) -> None:
        seen: list[int] = []
        decided_after: list[tuple[str, int]] = []
        log.add_stager(lambda event: seen.append(event.seq))
        log.add_stager(lambda event: seen.append(-event.seq))  # stagers run in registration order

        def guard(event: NewEvent) -> None:
            decided_after.append((event.idempotency_key or "", len(seen)))

        results = await asyncio.gather(
            *(log.append_many([new(f"s{i}:{n}") for n in range(3)], guards=[guard] * 3) for i in range(20))
        )
        seqs = sorted(r.event.seq for rs in results for r in rs if r.event)
        assert seen == [s for seq in seqs for s in (seq, -seq)]
        # When the n-th event is decided, exactly the n-1 before it have been staged.
        assert [count for _key, count in decided_after] == [2 * n for n in range(len(seqs))]

    # -- reading -----------------------------------------------------------------

    async def test_read_returns_ranges_with_limits_and_filters(self, log: EventLog) -> None:
        for n in range(1, 31):
            await log.append(new(f"r{n}", type_="a" if n % 3 else "b", work_unit_id=f"wu{n % 2}"))
        assert [e.seq for e in await log.read(0, 5)] == [1, 2, 3, 4, 5]
        assert [e.seq for e in await log.read(27, 100)] == [28, 29, 30]
        assert await log.read(30, 10) == []
        assert [e.seq for e in await log.read(0, 100, types=["b"])] == list(range(3, 31, 3))
        assert [e.seq for e in await log.read(10, 3, types=["b"])] == [12, 15, 18]
        assert [e.seq for e in await log.read(0, 4, work_unit_id="wu1")] == [1, 3, 5, 7]
        assert [e.seq for e in await log.read(0, 100, types=["b"], work_unit_id="wu0")] == [6, 12, 18, 24, 30]
        assert [e.seq for e in await log.read(0, 100, types=["a", "b"])] == list(range(1, 31))
        assert await log.get_by_key("missing") is None

    async def test_follow_wakes_on_new_commits_and_ends_when_the_log_closes(self, backend: LogBackend) -> None:
        log = await backend.open_log()
        await log.append_many([new(f"old{n}") for n in range(3)])
        batches: asyncio.Queue[list[int]] = asyncio.Queue(maxsize=100)
        filtered: asyncio.Queue[list[int]] = asyncio.Queue(maxsize=100)
        reads = 0
        read = log.read

        async def counting_read(*args: Any, **kwargs: Any) -> list[Event]:
            nonlocal reads
            reads += 1
            return await read(*args, **kwargs)

        log.read = counting_read  # type: ignore[method-assign]

        async def follow(into: asyncio.Queue[list[int]], types: list[str] | None) -> None:
            async for batch in log.follow(1, types=types, batch_limit=2):
                await into.put([e.seq for e in batch])

        everything = asyncio.create_task(follow(batches, None))
        only_b = asyncio.create_task(follow(filtered, ["b"]))
        try:
            assert await asyncio.wait_for(batches.get(), WAIT_S) == [2, 3]
            await log.append(new("new", type_="a"))
            assert await asyncio.wait_for(batches.get(), WAIT_S) == [4]
            await log.append_many([new("n5", type_="b"), new("n6", type_="a"), new("n7", type_="b")])
            assert await asyncio.wait_for(batches.get(), WAIT_S) == [5, 6]
            assert await asyncio.wait_for(batches.get(), WAIT_S) == [7]
            assert await asyncio.wait_for(filtered.get(), WAIT_S) == [5, 7]
            # Woken by commits, not by a timer: a handful of reads per commit, however long it took.
            assert reads <= 16
        finally:
            await log.close()
        await asyncio.wait_for(asyncio.gather(everything, only_b), WAIT_S)  # both iterations end
        assert batches.empty() and filtered.empty()

    # -- lifecycle ---------------------------------------------------------------

    async def test_durability_settings_are_the_verified_ones(self, backend: LogBackend, log: EventLog) -> None:
        assert await backend.durability_settings(log) == backend.expected_durability

    async def test_append_after_close_raises_log_closed(self, backend: LogBackend) -> None:
        log = await backend.open_log()
        await log.append(new("before"))
        await log.close()
        await log.close()  # twice is fine
        with pytest.raises(LogClosed):
            await log.append(new("after"))
        with pytest.raises(LogClosed):
            await log.read()
        assert not await log.wait_for_commit(log.last_seq, timeout_s=WAIT_S)

    async def test_concurrent_closes_all_wait_for_the_same_shutdown(self, backend: LogBackend) -> None:
        log = await backend.open_log()
        pending = asyncio.create_task(log.append_many([new(f"c{n}") for n in range(50)]))
        await asyncio.sleep(0)  # one turn of the loop: the append reaches the queue
        await asyncio.gather(log.close(), log.close(), log.close())
        assert all(r.created for r in await pending)
        with pytest.raises(LogClosed):
            await log.append(new("after"))

    async def test_close_commits_what_was_queued_before_it(self, backend: LogBackend) -> None:
        log = await backend.open_log()
        appends = [asyncio.create_task(log.append(new(f"q{n}"))) for n in range(200)]
        await asyncio.sleep(0)  # one turn of the loop: each task runs up to its enqueue (no waiting on time)
        await log.close()
        results = await asyncio.gather(*appends)
        assert all(r.created for r in results)
        reopened = await backend.open_log()
        try:
            assert len(await read_all(reopened)) == 200
        finally:
            await reopened.close()

    async def test_reopening_keeps_seq_and_keys(self, backend: LogBackend) -> None:
        log = await backend.open_log()
        first = await log.append(new("kept"))
        await log.append_many([new(f"x{n}") for n in range(4)])
        await log.close()
        log = await backend.open_log()
        try:
            assert log.last_seq == 5
            again = await log.append(new("kept"))
            assert not again.created and again.event == first.event
            assert (await log.append(new("next"))).event == await log.get_by_key("next")
            assert log.last_seq == 6
        finally:
            await log.close()

    async def test_every_acknowledged_append_survives_sigkill_mid_stream(self, backend: LogBackend) -> None:
        child = await asyncio.create_subprocess_exec(
            *backend.crash_child_argv(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        acked: dict[str, int] = {}
        assert child.stdout is not None
        try:
            async with asyncio.timeout(WAIT_S * 3):
                while len(acked) < 2_000:
                    line = await child.stdout.readline()
                    assert line, f"child ended early: {(await child.stderr.read()).decode() if child.stderr else ''}"
                    _ack, key, seq = line.decode().split()
                    acked[key] = int(seq)
        finally:
            child.send_signal(signal.SIGKILL)  # mid-stream: its appenders are still running
            await child.wait()
        assert child.returncode == -signal.SIGKILL
        log = await backend.open_log()
        try:
            events = await read_all(log)
            assert_gap_free(events)
            stored = {e.idempotency_key: e.seq for e in events}
            assert {key: stored.get(key) for key in acked} == acked
            # Appending resumes right after the last durable event, and the old keys still dedupe.
            resumed = await log.append(new("after-crash"))
            assert resumed.event is not None and resumed.event.seq == len(events) + 1
            key = next(iter(acked))
            assert not (await log.append(new(key))).created
        finally:
            await log.close()

    async def test_a_failed_commit_closes_the_log_for_good(self, backend: LogBackend) -> None:
        log = await backend.open_log()
        try:
            await log.append(new("durable"))
            backend.break_commits(log, LogError("disk full (injected)"))
            # Several batches in flight: the failed one and every one decided after it fail.
            results = await asyncio.gather(
                *(log.append_many([new(f"lost{i}:{n}") for n in range(30)]) for i in range(20)),
                return_exceptions=True,
            )
            assert results and all(isinstance(r, LogClosed) for r in results)
            assert isinstance(log.failed, LogError)
            with pytest.raises(LogClosed):
                await log.append(new("later"))
            assert log.last_seq == 1
        finally:
            await log.close()
        reopened = await backend.open_log()
        try:
            assert [e.idempotency_key for e in await read_all(reopened)] == ["durable"]
            assert (await reopened.append(new("lost0:0"))).event is not None
        finally:
            await reopened.close()

    async def test_a_second_holder_of_the_data_dir_is_refused_clearly(self, backend: LogBackend) -> None:
        first = DataDirLock(backend.data_dir)
        first.acquire()
        try:
            with pytest.raises(DataDirLocked, match=rf"in use by another krakod \(pid {os.getpid()}\)"):
                DataDirLock(backend.data_dir).acquire()
        finally:
            first.release()
        second = DataDirLock(backend.data_dir)
        second.acquire()  # free again once released
        second.release()


def crash_child_argv(db_path: Path) -> list[str]:
    """The SQLite crash child, for backends built on EventLog(path)."""
    return [sys.executable, str(Path(__file__).with_name("crash_appender.py")), str(db_path)]
