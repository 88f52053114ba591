"""Coalescing of outgoing messages and the reconnect backoff."""

from __future__ import annotations

import asyncio
import random

from krako.v1 import agent_pb2

from agentd.backoff import Backoff
from agentd.batching import Outgoing, coalesce


def claims(count: int) -> list[agent_pb2.Claim]:
    return [agent_pb2.Claim(work_unit_id=f"u-{index}", attempt=1) for index in range(count)]


def test_ready_items_share_requests_up_to_max_batch_per_field() -> None:
    results = [agent_pb2.Result(work_unit_id="r", attempt=1, success=True)]
    heartbeats = [agent_pb2.Heartbeat(in_flight=1), agent_pb2.Heartbeat(in_flight=2)]
    requests = coalesce([*claims(5), *results, *heartbeats], max_batch=2)

    assert [len(request.claims) for request in requests] == [2, 2, 1]
    assert len(requests[-1].results) == 1
    assert [request.heartbeat.in_flight for request in requests if request.HasField("heartbeat")] == [2]


def test_a_request_stays_under_the_byte_bound() -> None:
    big = [agent_pb2.Result(work_unit_id=f"u-{index}", output_json="x" * 1000) for index in range(10)]
    requests = coalesce(big, max_batch=500, max_bytes=3000)
    assert all(request.ByteSize() <= 3100 for request in requests)
    assert sum(len(request.results) for request in requests) == 10


async def test_a_producer_blocked_on_a_full_queue_is_released_when_the_connection_closes() -> None:
    outgoing = Outgoing(maxsize=1)
    assert await outgoing.put(claims(1)[0])
    blocked = asyncio.create_task(outgoing.put(claims(2)[1]))
    outgoing.close()
    await asyncio.wait_for(blocked, 5)  # released (queued into the dead queue or dropped), never stuck
    assert await outgoing.put(claims(1)[0]) is False


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    backoff = Backoff(base_s=0.2, cap_s=10.0, rng=random.Random(7))
    delays = [backoff.next_delay_s() for _ in range(12)]
    ceilings = [min(10.0, 0.2 * 2**attempt) for attempt in range(12)]

    assert all(ceiling / 2 <= delay <= ceiling for delay, ceiling in zip(delays, ceilings, strict=True))
    assert backoff.failures == 12
    backoff.reset()
    assert backoff.next_delay_s() <= 0.2
