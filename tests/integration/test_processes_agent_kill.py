"""An agent SIGKILLed mid-unit (issue 3): its units complete exactly once on another agent after lease expiry.

Real krakod and agentd processes, with a short lease so the test stays quick. Agent A claims four
idempotent `sleep_ms` units and is killed with SIGKILL while running them; agent B joins afterwards.
The log must show, per unit: one expired claim (attempt 1, on A) and one completion (attempt 2, on B).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from krako.v1 import common_pb2, events_pb2

from clients.client import KrakoClient, make_spec
from clients.processes import start_agentd, start_krakod

pytestmark = pytest.mark.slow

UNITS = 4
RUN_MS = 3000  # long enough that A is still running every unit when it is killed
TIMING = ("--lease-ms", "2000", "--node-ttl-ms", "2000", "--heartbeat-interval-ms", "200")
WAIT_S = 60.0


def follow(client: KrakoClient, types: list[str], timeout_s: float) -> Iterator[common_pb2.Event]:
    """The log's events of these types from seq 0 on, following new commits; fails at the deadline."""
    request = events_pb2.SubscribeEventsRequest(after_seq=0, types=types)
    try:
        for batch in client.events.SubscribeEvents(request, timeout=timeout_s):
            yield from batch.events
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise AssertionError(f"gave up waiting for {types} after {timeout_s} s") from None
        raise


def unit_events(client: KrakoClient, unit_id: str) -> list[tuple[str, dict]]:
    page = client.read_events(after_seq=0, limit=5000, work_unit_id=unit_id)
    assert page.events, unit_id
    return [(e.type, json.loads(e.payload_json)) for e in page.events]


def test_units_of_an_agent_killed_mid_unit_complete_exactly_once_on_another_agent(tmp_path: Path, procs):
    krakod = start_krakod(tmp_path / "krakod", *TIMING)
    procs.append(krakod)
    agent_a = start_agentd(krakod.address, "agent-a", tmp_path / "agent-a", concurrency=UNITS)
    procs.append(agent_a)

    with KrakoClient(krakod.address) as client:
        specs = [
            make_spec(kind="cpu", handler="sleep_ms", input={"ms": RUN_MS}, key=f"sleepy-{i}", idempotent=True)
            for i in range(UNITS)
        ]
        unit_ids = {r.work_unit_id for r in client.submit_many(specs)}
        assert len(unit_ids) == UNITS

        claimed_by_a: set[str] = set()
        for event in follow(client, ["workunit.claimed"], WAIT_S):
            payload = json.loads(event.payload_json)
            assert payload["node_id"] == "agent-a" and payload["attempt"] == 1, payload
            claimed_by_a.add(event.work_unit_id)
            if claimed_by_a == unit_ids:
                break

        agent_a.kill()
        # Nothing of A's may have finished: the test is about units killed mid-run.
        early = client.read_events(after_seq=0, limit=5000, types=["workunit.completed", "workunit.failed"])
        assert not early.events, f"A finished units before it was killed: {[e.work_unit_id for e in early.events]}"

        procs.append(start_agentd(krakod.address, "agent-b", tmp_path / "agent-b", concurrency=UNITS))

        finished: set[str] = set()
        for event in follow(client, ["workunit.completed", "workunit.failed"], WAIT_S):
            assert event.type == "workunit.completed", (event.work_unit_id, event.payload_json)
            finished.add(event.work_unit_id)
            if finished == unit_ids:
                break

        for unit_id in sorted(unit_ids):
            unit = client.get(unit_id)
            assert unit.state == common_pb2.WORK_UNIT_STATE_COMPLETED, unit
            assert (unit.node_id, unit.attempt) == ("agent-b", 2), unit
            assert json.loads(unit.output_json) == {"slept_ms": RUN_MS}

            events = unit_events(client, unit_id)
            types = Counter(t for t, _ in events)
            assert types["workunit.claim.expired"] == 1, types
            assert types["workunit.completed"] == 1, types
            expired = next(p for t, p in events if t == "workunit.claim.expired")
            assert (expired["node_id"], expired["attempt"]) == ("agent-a", 1), expired
            claims = [(p["node_id"], p["attempt"]) for t, p in events if t == "workunit.claimed"]
            assert claims == [("agent-a", 1), ("agent-b", 2)], claims
            completed = next(p for t, p in events if t == "workunit.completed")
            assert (completed["node_id"], completed["attempt"]) == ("agent-b", 2), completed
