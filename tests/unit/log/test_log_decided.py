"""append_many(durable=False): the caller hears the decision before the commit, and the commit follows."""

from __future__ import annotations

from pathlib import Path

from krakod.log import EventLog, NewEvent


async def test_a_decided_append_returns_seqs_and_refusals_and_is_committed_after(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.sqlite")
    await log.open()
    try:
        results = await log.append_many(
            [NewEvent(type="a", idempotency_key="k1"), NewEvent(type="b", idempotency_key="k2")],
            guards=[None, lambda new: "no"],
            durable=False,
        )
        assert results[0].created and results[0].event is not None and results[0].event.seq == 1
        assert results[1].refused == "no" and results[1].event is None
        assert await log.wait_for_commit(0, timeout_s=10)
        assert [e.idempotency_key for e in await log.read(0, 10)] == ["k1"]
    finally:
        await log.close()


async def test_a_decided_duplicate_returns_the_first_event(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.sqlite")
    await log.open()
    try:
        first = await log.append(NewEvent(type="a", idempotency_key="same"))
        again = await log.append_many([NewEvent(type="a", idempotency_key="same")], durable=False)
        assert not again[0].created and again[0].event == first.event
    finally:
        await log.close()


async def test_a_failed_log_wakes_its_owner_and_its_commit_waiters(tmp_path: Path) -> None:
    import asyncio

    log = EventLog(tmp_path / "events.sqlite")
    await log.open()
    owner = asyncio.create_task(log.wait_failed())
    waiter = asyncio.create_task(log.wait_for_commit(log.last_seq))

    def broken_stager(event: object) -> None:
        raise RuntimeError("stager bug")

    log.add_stager(broken_stager)
    try:
        await log.append(NewEvent(type="a"))
    except Exception:
        pass  # the append fails with the log
    assert isinstance(await asyncio.wait_for(owner, 10), RuntimeError)
    assert await asyncio.wait_for(waiter, 10) is False
    await log.close()
