"""Dispatch against scripted agents on the real agent stream: claims, fencing, timeouts, retries, cancel."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from krako.v1 import agent_pb2, common_pb2, gateway_pb2, gateway_pb2_grpc

from krakod.log import DataDirLocked
from krakod.server import Daemon
from tests.conftest import make_config
from tests.support.scripted_agent import ScriptedAgent

DONE = {common_pb2.WORK_UNIT_STATE_COMPLETED, common_pb2.WORK_UNIT_STATE_FAILED, common_pb2.WORK_UNIT_STATE_CANCELLED}


def echo_spec(**fields: object) -> common_pb2.WorkUnitSpec:
    return common_pb2.WorkUnitSpec(kind="cpu", handler="echo", input_json='{"n": 1}', **fields)  # type: ignore[arg-type]


async def submit(channel, *specs: common_pb2.WorkUnitSpec) -> list[str]:
    gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
    response = await gateway.SubmitWorkUnits(gateway_pb2.SubmitWorkUnitsRequest(specs=list(specs)))
    return [r.work_unit_id for r in response.results]


async def wait_terminal(channel, unit_id: str) -> common_pb2.WorkUnit:
    gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
    async for update in gateway.WatchWorkUnit(gateway_pb2.WatchWorkUnitRequest(work_unit_id=unit_id)):
        if update.work_unit.state in DONE:
            return update.work_unit
    raise AssertionError("watch ended before the unit was terminal")


async def events_of(daemon: Daemon, unit_id: str) -> list[tuple[str, dict]]:
    return [(e.type, e.payload) for e in await daemon.log.read(0, 1000, work_unit_id=unit_id)]


@pytest.fixture
async def fanout_daemon(tmp_path: Path):
    d = Daemon(make_config(tmp_path / "data", multi_agent_fanout=5))
    await d.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{d.port}")
    yield d, channel
    await channel.close()
    await d.stop()


async def test_five_agents_racing_for_every_unit_execute_each_exactly_once(fanout_daemon):
    d, channel = fanout_daemon
    agents = [ScriptedAgent(f"127.0.0.1:{d.port}", f"racer-{i}", concurrency=64) for i in range(5)]
    for agent in agents:
        await agent.start()
    ids = []
    for _ in range(2):  # 1,000 units in two batches of 500; p1 so a backlog of 1,000 is never throttled
        ids += await submit(channel, *[echo_spec(priority=common_pb2.PRIORITY_P1) for _ in range(500)])
    for unit_id in ids:
        assert (await wait_terminal(channel, unit_id)).state == common_pb2.WORK_UNIT_STATE_COMPLETED
    events = await d.log.read(0, 10_000)
    claims = Counter(e.work_unit_id for e in events if e.type == "workunit.claimed")
    completions = Counter(e.work_unit_id for e in events if e.type == "workunit.completed")
    offers = [e.payload for e in events if e.type == "workunit.scheduled"]
    assert set(claims) == set(ids) and set(claims.values()) == {1}
    assert set(completions) == set(ids) and set(completions.values()) == {1}
    assert any(len(o["offered_to"]) > 1 for o in offers), "multi-agent mode must offer units to several agents"
    executed = Counter(u for a in agents for u in a.executed)
    assert set(executed.values()) == {1}, "a unit was executed by more than one agent"
    denials = sum(1 for a in agents for dec in a.decisions if not dec.granted)
    assert denials > 0, "losers of a race must be told they lost"
    for agent in agents:
        await agent.close()


async def test_a_partitioned_agents_late_result_is_fenced(daemon, channel):
    address = f"127.0.0.1:{daemon.port}"
    silent = ScriptedAgent(address, "partitioned", auto_run=False, auto_heartbeat=False)
    await silent.start()
    [unit_id] = await submit(channel, echo_spec(idempotent=True))
    await silent.wait_until(lambda: any(dec.granted for dec in silent.decisions))
    offer = silent.offers[0]
    # The agent goes silent: no heartbeats. Its lease expires and another agent gets attempt 2.
    healthy = ScriptedAgent(address, "healthy")
    await healthy.start()
    final = await wait_terminal(channel, unit_id)
    assert final.state == common_pb2.WORK_UNIT_STATE_COMPLETED
    assert final.attempt == 2 and final.node_id == "healthy"
    await silent.close()
    # The partition heals: the old agent reconnects and delivers its attempt-1 result from its outbox.
    back = ScriptedAgent(address, "partitioned", auto_run=False)
    await back.start()
    back.send(results=[ScriptedAgent.echo_result(offer)])
    await back.wait_until(lambda: bool(back.acks))
    assert not back.acks[0].accepted and "fenced" in back.acks[0].reason
    types = [t for t, _ in await events_of(daemon, unit_id)]
    assert types.count("workunit.completed") == 1
    assert types.count("workunit.claim.expired") == 1
    completed = [p for t, p in await events_of(daemon, unit_id) if t == "workunit.completed"]
    assert completed[0]["node_id"] == "healthy" and completed[0]["attempt"] == 2
    gone = [e.payload for e in await daemon.log.read(0, 1000, types=["node.unavailable"])]
    assert {"node_id": "partitioned", "reason": "heartbeat_ttl"}.items() <= gone[0].items(), "silence past the TTL"
    await back.close()
    await healthy.close()


async def test_an_offer_not_claimed_in_time_goes_to_another_node(daemon, channel):
    address = f"127.0.0.1:{daemon.port}"
    lazy = ScriptedAgent(address, "a-lazy", auto_claim=False)  # sorts first: it is offered the unit first
    await lazy.start()
    [unit_id] = await submit(channel, echo_spec())
    await lazy.wait_until(lambda: bool(lazy.offers))
    busy = ScriptedAgent(address, "b-busy")
    await busy.start()
    final = await wait_terminal(channel, unit_id)
    assert final.node_id == "b-busy"
    types = [t for t, _ in await events_of(daemon, unit_id)]
    assert types[:3] == ["workunit.submitted", "workunit.scheduled", "workunit.requeued"]
    assert types.count("workunit.claimed") == 1
    await lazy.close()
    await busy.close()


async def test_a_deferred_unit_is_placed_when_a_node_joins(daemon, channel):
    [unit_id] = await submit(channel, echo_spec())
    deadline = asyncio.get_running_loop().time() + 10
    while "workunit.scheduling.deferred" not in [t for t, _ in await events_of(daemon, unit_id)]:
        assert asyncio.get_running_loop().time() < deadline, "no deferral was logged"
        await daemon.log.wait_for_commit(daemon.log.last_seq, timeout_s=1)
    deferred = [p for t, p in await events_of(daemon, unit_id) if t == "workunit.scheduling.deferred"]
    assert deferred[0]["candidates"] == 0
    agent = ScriptedAgent(f"127.0.0.1:{daemon.port}", "late-joiner")
    await agent.start()
    assert (await wait_terminal(channel, unit_id)).node_id == "late-joiner"
    await agent.close()


async def test_cancelling_a_running_unit_reaches_its_agent(daemon, channel):
    agent = ScriptedAgent(f"127.0.0.1:{daemon.port}", "runner", auto_run=False)
    await agent.start()
    [unit_id] = await submit(channel, echo_spec())
    await agent.wait_until(lambda: any(dec.granted for dec in agent.decisions))
    gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
    await gateway.CancelWorkUnit(gateway_pb2.CancelWorkUnitRequest(work_unit_id=unit_id, reason="changed my mind"))
    await agent.wait_until(lambda: bool(agent.stops))
    assert agent.stops[0].work_unit_id == unit_id
    assert (await wait_terminal(channel, unit_id)).state == common_pb2.WORK_UNIT_STATE_CANCELLED
    agent.send(results=[ScriptedAgent.echo_result(agent.offers[0])])
    await agent.wait_until(lambda: bool(agent.acks))
    assert not agent.acks[0].accepted
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await gateway.CancelWorkUnit(gateway_pb2.CancelWorkUnitRequest(work_unit_id=unit_id))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await agent.close()


def failing(offer: agent_pb2.Offer) -> agent_pb2.Result:
    return agent_pb2.Result(
        work_unit_id=offer.work_unit_id,
        attempt=offer.attempt,
        success=False,
        error_code="EXECUTION_ERROR",
        error_message="boom",
        retryable=True,
    )


async def test_a_retryable_failure_of_an_idempotent_unit_is_retried_until_attempts_run_out(daemon, channel):
    agent = ScriptedAgent(f"127.0.0.1:{daemon.port}", "flaky")
    agent.result_for = failing
    await agent.start()
    [unit_id] = await submit(channel, echo_spec(idempotent=True, max_attempts=3))
    final = await wait_terminal(channel, unit_id)
    assert final.state == common_pb2.WORK_UNIT_STATE_FAILED and final.attempt == 3
    types = [t for t, _ in await events_of(daemon, unit_id)]
    assert types.count("workunit.failed") == 3
    assert types.count("workunit.retry.scheduled") == 2
    await agent.close()


async def test_a_unit_that_is_not_idempotent_is_not_retried(daemon, channel):
    agent = ScriptedAgent(f"127.0.0.1:{daemon.port}", "flaky")
    agent.result_for = failing
    await agent.start()
    [unit_id] = await submit(channel, echo_spec(max_attempts=3))
    final = await wait_terminal(channel, unit_id)
    assert final.state == common_pb2.WORK_UNIT_STATE_FAILED and final.attempt == 1
    failed = [p for t, p in await events_of(daemon, unit_id) if t == "workunit.failed"]
    assert failed[0]["final"] is True and failed[0]["retry_reason"] == "not_idempotent"
    dropped = [p for t, p in await events_of(daemon, unit_id) if t == "workunit.retry.dropped"]
    assert dropped == [{"attempt": 1, "reason": "not_idempotent"}]
    await agent.close()


async def test_a_client_key_seen_before_returns_the_first_unit(daemon, channel):
    first = await submit(channel, echo_spec(client_key="order-1"))
    again = await submit(channel, echo_spec(client_key="order-1"), echo_spec(client_key="order-1"))
    assert again == first * 2
    submitted = [e for e in await daemon.log.read(0, 100) if e.type == "workunit.submitted"]
    assert len(submitted) == 1


async def test_watch_streams_the_lifecycle_in_order(daemon, channel):
    agent = ScriptedAgent(f"127.0.0.1:{daemon.port}", "watcher")
    await agent.start()
    [unit_id] = await submit(channel, echo_spec())
    gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
    seen = [
        (u.event.type, u.work_unit.state)
        async for u in gateway.WatchWorkUnit(gateway_pb2.WatchWorkUnitRequest(work_unit_id=unit_id))
    ]
    assert [t for t, _ in seen] == [
        "workunit.submitted",
        "workunit.scheduled",
        "workunit.claimed",
        "workunit.completed",
    ]
    assert seen[-1][1] == common_pb2.WORK_UNIT_STATE_COMPLETED
    unit = (await gateway.GetWorkUnit(gateway_pb2.GetWorkUnitRequest(work_unit_id=unit_id))).work_unit
    assert json.loads(unit.output_json) == {"n": 1}
    await agent.close()


async def test_health_and_reflection_are_served(daemon, channel):
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service="krako.v1.GatewayService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name async for r in responses for s in r.list_services_response.service}
    assert {
        "krako.v1.GatewayService",
        "krako.v1.AgentService",
        "krako.v1.EventService",
        "krako.v1.AdminService",
        "grpc.health.v1.Health",
    } <= names


async def test_a_second_daemon_on_the_same_data_dir_is_refused(daemon, tmp_path):
    other = Daemon(make_config(daemon.data_dir))
    with pytest.raises(DataDirLocked, match="in use by another krakod"):
        await other.start()


async def test_state_survives_a_restart_and_pending_units_run_after_it(tmp_path):
    config = make_config(tmp_path / "data")
    first = Daemon(config)
    await first.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{first.port}")
    agent = ScriptedAgent(f"127.0.0.1:{first.port}", "n1")
    await agent.start()
    [done_id] = await submit(channel, echo_spec())
    await wait_terminal(channel, done_id)
    await agent.close()
    await channel.close()
    [pending_id] = [u.work_unit_id for u in first.units if u.work_unit_id != done_id] or [None]
    assert pending_id is None
    gateway_channel = grpc.aio.insecure_channel(f"127.0.0.1:{first.port}")
    [pending_id] = await submit(gateway_channel, echo_spec())
    await gateway_channel.close()
    await first.stop()

    second = Daemon(config)
    await second.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{second.port}")
    gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
    unit = (await gateway.GetWorkUnit(gateway_pb2.GetWorkUnitRequest(work_unit_id=done_id))).work_unit
    assert unit.state == common_pb2.WORK_UNIT_STATE_COMPLETED
    agent = ScriptedAgent(f"127.0.0.1:{second.port}", "n2")
    await agent.start()
    assert (await wait_terminal(channel, pending_id)).node_id == "n2"
    await agent.close()
    await channel.close()
    await second.stop()


async def test_units_nothing_fits_do_not_block_the_units_behind_them(daemon, channel):
    agent = ScriptedAgent(f"127.0.0.1:{daemon.port}", "earthling", region="earth")
    await agent.start()
    stranded = await submit(channel, *[echo_spec(region="mars", region_required=True) for _ in range(300)])
    [runnable] = await submit(channel, echo_spec())
    assert (await wait_terminal(channel, runnable)).node_id == "earthling"
    deferred = [e for e in await daemon.log.read(0, 5000, types=["workunit.scheduling.deferred"])]
    assert {e.work_unit_id for e in deferred} <= set(stranded) and deferred
    martian = ScriptedAgent(f"127.0.0.1:{daemon.port}", "martian", region="mars", concurrency=64)
    await martian.start()
    for unit_id in stranded[:5]:
        assert (await wait_terminal(channel, unit_id)).node_id == "martian"
    await martian.close()
    await agent.close()


async def test_a_unit_runs_only_after_its_dependencies_completed(daemon, channel):
    agent = ScriptedAgent(f"127.0.0.1:{daemon.port}", "dag", auto_run=False)
    await agent.start()
    [first] = await submit(channel, echo_spec())
    [second] = await submit(channel, echo_spec(depends_on=[first]))
    await agent.wait_until(lambda: any(d.granted and d.work_unit_id == first for d in agent.decisions))
    assert all(o.work_unit_id != second for o in agent.offers), "offered before its dependency finished"
    agent.send(results=[ScriptedAgent.echo_result(agent.offers[0])])
    await agent.wait_until(lambda: any(o.work_unit_id == second for o in agent.offers))
    offer = next(o for o in agent.offers if o.work_unit_id == second)
    await agent.wait_until(lambda: any(d.granted and d.work_unit_id == second for d in agent.decisions))
    agent.send(results=[ScriptedAgent.echo_result(offer)])
    assert (await wait_terminal(channel, second)).state == common_pb2.WORK_UNIT_STATE_COMPLETED
    await agent.close()


async def test_a_unit_whose_dependency_failed_is_rejected_and_never_offered(daemon, channel):
    agent = ScriptedAgent(f"127.0.0.1:{daemon.port}", "dag")
    agent.result_for = failing
    await agent.start()
    [first] = await submit(channel, echo_spec())
    [second] = await submit(channel, echo_spec(depends_on=[first]))
    assert (await wait_terminal(channel, first)).state == common_pb2.WORK_UNIT_STATE_FAILED
    final = await wait_terminal_or_rejected(channel, second)
    assert final.state == common_pb2.WORK_UNIT_STATE_REJECTED and final.error_code == "DEPENDENCY_FAILED"
    assert all(o.work_unit_id != second for o in agent.offers)
    await agent.close()


async def wait_terminal_or_rejected(channel, unit_id: str) -> common_pb2.WorkUnit:
    gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
    async for update in gateway.WatchWorkUnit(gateway_pb2.WatchWorkUnitRequest(work_unit_id=unit_id)):
        if update.work_unit.state in DONE | {common_pb2.WORK_UNIT_STATE_REJECTED}:
            return update.work_unit
    raise AssertionError("watch ended before the unit was terminal")


async def test_a_drain_outlives_a_restart_until_it_is_lifted(tmp_path):
    from krako.v1 import admin_pb2, admin_pb2_grpc

    config = make_config(tmp_path / "data")
    first = Daemon(config)
    await first.start()
    agent = ScriptedAgent(f"127.0.0.1:{first.port}", "worker")
    await agent.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{first.port}")
    await admin_pb2_grpc.AdminServiceStub(channel).DrainNode(admin_pb2.DrainNodeRequest(node_id="worker"))
    await agent.wait_until(lambda: agent.drained)
    await channel.close()
    await agent.close()
    await first.stop()

    second = Daemon(config)
    await second.start()
    agent = ScriptedAgent(f"127.0.0.1:{second.port}", "worker")
    await agent.start()
    await agent.wait_until(lambda: agent.drained)  # told again after the restart
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{second.port}")
    [unit_id] = await submit(channel, echo_spec())
    assert second.dispatcher.registry["worker"].draining and not agent.offers
    await admin_pb2_grpc.AdminServiceStub(channel).DrainNode(admin_pb2.DrainNodeRequest(node_id="worker", undo=True))
    assert (await wait_terminal(channel, unit_id)).node_id == "worker"
    await channel.close()
    await agent.close()
    await second.stop()


async def test_a_node_that_reports_free_slots_in_a_heartbeat_gets_the_waiting_work(daemon, channel):
    agent = ScriptedAgent(f"127.0.0.1:{daemon.port}", "busy-then-free", concurrency=1, auto_heartbeat=False)
    await agent.start()
    agent.send(heartbeat=agent_pb2.Heartbeat(in_flight=1, utilization=1.0))  # its own count: full
    deadline = asyncio.get_running_loop().time() + 10
    while daemon.dispatcher.registry["busy-then-free"].available_slots:
        assert asyncio.get_running_loop().time() < deadline, "the heartbeat never reached the registry"
        await asyncio.sleep(0.01)  # poll with a deadline for the heartbeat to be processed
    [unit_id] = await submit(channel, echo_spec())
    agent.send(heartbeat=agent_pb2.Heartbeat(in_flight=0, utilization=0.0))  # free again: nothing else happens
    final = await asyncio.wait_for(wait_terminal(channel, unit_id), timeout=15)
    assert final.node_id == "busy-then-free"
    await agent.close()
