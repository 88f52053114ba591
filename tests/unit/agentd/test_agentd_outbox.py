"""The on-disk outbox: durable across reopen, group-committed, exclusive per node."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from krako.v1 import agent_pb2

from agentd.outbox import Outbox, OutboxError


def result(unit: str, attempt: int = 1) -> agent_pb2.Result:
    return agent_pb2.Result(work_unit_id=unit, attempt=attempt, success=True, output_json='"ok"')


async def test_results_survive_a_reopen_until_deleted(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = await Outbox.open(path)
    await asyncio.gather(*(outbox.put(result(f"u-{index}")) for index in range(50)))
    await outbox.put(result("u-0", attempt=2))
    await outbox.delete([("u-1", 1), ("never-stored", 1)])
    await outbox.close()
    await outbox.close()  # safe twice

    reopened = await Outbox.open(path)
    try:
        assert len(reopened) == 50
        assert ("u-1", 1) not in reopened.keys() and ("u-0", 2) in reopened.keys()
        loaded = {(stored.work_unit_id, stored.attempt): stored for stored in await reopened.load_all()}
        assert loaded[("u-7", 1)] == result("u-7")
    finally:
        await reopened.close()


async def test_wait_empty_returns_once_everything_is_acknowledged(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.sqlite3")
    try:
        await outbox.put(result("u"))
        waiter = asyncio.create_task(outbox.wait_empty())
        await outbox.delete([("u", 1)])
        await asyncio.wait_for(waiter, 5)
    finally:
        await outbox.close()


async def test_a_second_agent_on_the_same_outbox_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    first = await Outbox.open(path)
    try:
        with pytest.raises(OutboxError, match="another agentd is using"):
            await Outbox.open(path)
    finally:
        await first.close()
    second = await Outbox.open(path)  # the lock went with the first
    await second.close()
