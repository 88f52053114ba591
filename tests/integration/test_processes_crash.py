"""Nothing acknowledged is lost (DESIGN §2.5): SIGKILL krakod during a burst of keyed submissions.

Real krakod and agentd processes. A client thread submits keyed `echo` units in batches and records
which keys were acknowledged (the RPC returned). When enough are acknowledged the test SIGKILLs krakod,
restarts it on the same data dir and port (the agents reconnect by themselves), resubmits every key and
checks the log: each acknowledged key kept its unit, each key was submitted once, each unit completed once.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import grpc
import pytest
from krako.v1 import common_pb2, events_pb2

from clients.client import KrakoClient, KrakoError, make_spec
from clients.processes import Krakod, start_agentd, start_krakod

pytestmark = pytest.mark.slow

UNITS = 600
BATCH = 20
KILL_AFTER_ACKS = 200
WAIT_S = 90.0


def read_all_events(client: KrakoClient, types: tuple[str, ...] = ()) -> list[common_pb2.Event]:
    events: list[common_pb2.Event] = []
    after = 0
    while True:
        page = client.read_events(after_seq=after, limit=5000, types=types)
        events.extend(page.events)
        if not page.events or page.events[-1].seq >= page.last_seq:
            return events
        after = page.events[-1].seq


def wait_for_completions(client: KrakoClient, unit_ids: set[str], timeout_s: float) -> dict[str, str]:
    """Follow the log until every unit is terminal; return unit id -> terminal event type."""
    request = events_pb2.SubscribeEventsRequest(after_seq=0, types=["workunit.completed", "workunit.failed"])
    seen: dict[str, str] = {}
    try:
        for batch in client.events.SubscribeEvents(request, timeout=timeout_s):
            for event in batch.events:
                if event.work_unit_id in unit_ids:
                    seen.setdefault(event.work_unit_id, event.type)
            if len(seen) == len(unit_ids):
                return seen
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    missing = len(unit_ids) - len(seen)
    nodes = [(n.node_id, n.connected, n.concurrency, n.available_slots) for n in client.nodes()]
    raise AssertionError(
        f"{missing} of {len(unit_ids)} units never finished within {timeout_s} s; "
        f"nodes (id, connected, concurrency, available_slots): {nodes}"
    )


def spec(i: int) -> common_pb2.WorkUnitSpec:
    return make_spec(kind="cpu", handler="echo", input={"i": i}, key=f"k{i}")


def wait_registered(client: KrakoClient, node_ids: set[str], timeout_s: float = 30.0) -> None:
    request = events_pb2.SubscribeEventsRequest(after_seq=0, types=["node.registered"])
    seen: set[str] = set()
    try:
        for batch in client.events.SubscribeEvents(request, timeout=timeout_s):
            seen.update(json.loads(e.payload_json)["node_id"] for e in batch.events)
            if node_ids <= seen:
                return
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    raise AssertionError(f"agents {sorted(node_ids - seen)} did not register within {timeout_s} s")


@pytest.mark.parametrize(
    "agents",
    [
        # The agents are executing units when krakod dies: claims and results are in flight across the crash.
        "connected before the burst",
        # The burst starts at once, so krakod often dies before the agents connect and they first
        # register with the restarted krakod while the keys are being resubmitted.
        "still connecting",
    ],
)
def test_acknowledged_submissions_survive_sigkill_of_krakod_and_run_exactly_once(tmp_path: Path, procs, agents):
    data_dir = tmp_path / "krakod"
    first: Krakod = start_krakod(data_dir)
    procs.append(first)
    names = {"agent-1", "agent-2"}
    for name in sorted(names):
        procs.append(start_agentd(first.address, name, tmp_path / name, concurrency=8))
    if agents == "connected before the burst":
        with KrakoClient(first.address) as client:
            wait_registered(client, names)

    acked: dict[str, str] = {}  # client key -> work_unit_id, for every acknowledged key
    enough_acked = threading.Event()
    submitter_done = threading.Event()
    failures: list[BaseException] = []

    def submit_burst() -> None:
        try:
            with KrakoClient(first.address, timeout_s=30) as client:
                for start in range(0, UNITS, BATCH):
                    indexes = range(start, start + BATCH)
                    try:
                        results = client.submit_many([spec(i) for i in indexes])
                    except KrakoError:
                        return  # krakod is gone: this batch was not acknowledged
                    for i, result in zip(indexes, results, strict=True):
                        acked[f"k{i}"] = result.work_unit_id
                    if len(acked) >= KILL_AFTER_ACKS:
                        enough_acked.set()
        except BaseException as exc:  # surfaced in the test thread
            failures.append(exc)
        finally:
            enough_acked.set()
            submitter_done.set()

    submitter = threading.Thread(target=submit_burst, name="submitter", daemon=True)
    submitter.start()
    assert enough_acked.wait(60), "the submitter made no progress"
    first.kill()
    assert submitter_done.wait(60), "the submitter did not notice that krakod died"
    submitter.join(10)
    assert not failures, failures
    assert len(acked) >= KILL_AFTER_ACKS, f"only {len(acked)} keys acknowledged before krakod died"
    assert len(acked) < UNITS, "krakod was killed after the whole burst: the crash was not mid-burst"

    restarted = start_krakod(data_dir, port=first.port)
    procs.append(restarted)
    with KrakoClient(restarted.address, timeout_s=60) as client:
        ids: dict[str, str] = {}
        duplicates: dict[str, bool] = {}
        for start in range(0, UNITS, BATCH):
            indexes = range(start, start + BATCH)
            for i, result in zip(indexes, client.submit_many([spec(i) for i in indexes]), strict=True):
                ids[f"k{i}"] = result.work_unit_id
                duplicates[f"k{i}"] = result.duplicate

        changed = {key: (before, ids[key]) for key, before in acked.items() if ids[key] != before}
        assert not changed, f"acknowledged keys got a new unit after the crash: {list(changed.items())[:5]}"
        not_duplicate = [key for key in acked if not duplicates[key]]
        assert not not_duplicate, f"acknowledged keys were not recognised as duplicates: {not_duplicate[:10]}"
        assert len(set(ids.values())) == UNITS, "two keys share a unit"

        unit_ids = set(ids.values())
        outcomes = wait_for_completions(client, unit_ids, WAIT_S)
        failed = {u: t for u, t in outcomes.items() if t != "workunit.completed"}
        assert not failed, f"{len(failed)} units failed: {list(failed)[:5]}"
        states = Counter(client.get(u).state for u in unit_ids)
        assert states == Counter({common_pb2.WORK_UNIT_STATE_COMPLETED: UNITS}), states

        events = read_all_events(client, types=("workunit.submitted", "workunit.claimed", "workunit.completed"))

    submitted_keys = Counter(json.loads(e.payload_json)["client_key"] for e in events if e.type == "workunit.submitted")
    assert set(submitted_keys) == set(ids), "the log's submissions do not match the keys sent"
    multi = {k: n for k, n in submitted_keys.items() if n != 1}
    assert not multi, f"keys submitted more than once in the log: {list(multi.items())[:10]}"
    submitted_units = {e.work_unit_id for e in events if e.type == "workunit.submitted"}
    assert submitted_units == unit_ids

    completions = Counter(e.work_unit_id for e in events if e.type == "workunit.completed")
    assert set(completions) == unit_ids
    assert set(completions.values()) == {1}, {u: n for u, n in completions.items() if n != 1}

    claims = Counter(
        (e.work_unit_id, json.loads(e.payload_json)["attempt"]) for e in events if e.type == "workunit.claimed"
    )
    double_claims = {k: n for k, n in claims.items() if n != 1}
    assert not double_claims, f"attempts claimed twice: {list(double_claims.items())[:10]}"
    assert {unit for unit, _ in claims} == unit_ids
