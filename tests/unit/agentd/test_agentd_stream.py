"""The agent against a scripted daemon on a real gRPC port: the protocol of docs/agent-protocol.md."""

from __future__ import annotations

import asyncio
import json
import socket

import grpc
import pytest
from agentd_fakes import WAIT_S, DaemonServer, FakeDaemon, StartAgent, offer
from krako.v1 import agent_pb2

from agentd.executors.llm import LlmSettings
from agentd.stream import AgentRejected, ConnectionGaveUp


async def test_hello_is_first_and_heartbeats_carry_real_measurements(
    daemon_server: DaemonServer, start_agent: StartAgent
) -> None:
    daemon = FakeDaemon()
    port = await daemon_server.start(daemon)
    await start_agent(port, region="eu-west", kinds=("cpu", "llm_pod"), concurrency=3, token="secret-token")

    await daemon.wait_for(lambda: len(daemon.heartbeats) >= 2)

    assert daemon.requests[0].HasField("hello")
    hello = daemon.hellos[0]
    assert (hello.node_id, hello.region, list(hello.kinds), hello.concurrency) == (
        "node-1", "eu-west", ["cpu", "llm_pod"], 3,
    )  # fmt: skip
    assert hello.version
    assert {"echo", "sleep_ms", "sha256", "burn_ms"} <= set(hello.handlers)
    assert hello.llm_provider == "stub" and list(hello.llm_tiers) == ["small", "medium", "large"]
    assert hello.llm_max_concurrency > 0 and hello.stability_class == "community"
    assert daemon.metadata[0]["authorization"] == "Bearer secret-token"
    heartbeat = daemon.heartbeats[-1]
    assert heartbeat.memory_available_bytes > 0
    assert heartbeat.sent_unix_ms > 0
    assert heartbeat.cpu_load >= 0.0
    assert (heartbeat.in_flight, heartbeat.utilization, list(heartbeat.running)) == (0, 0.0, [])


async def test_offer_claim_grant_started_result_ack(daemon_server: DaemonServer, start_agent: StartAgent) -> None:
    daemon = FakeDaemon()
    port = await daemon_server.start(daemon)
    agent, _ = await start_agent(port)

    await daemon.offer(offer("unit-1", "echo", '{"b": 2, "a": [1]}'))
    await daemon.wait_for(lambda: daemon.results_for("unit-1"))
    assert agent.outbox is not None
    await asyncio.wait_for(agent.outbox.wait_empty(), WAIT_S)

    assert [(c.work_unit_id, c.attempt) for c in daemon.items("claims")] == [("unit-1", 1)]
    assert daemon.items("started") == [], "a unit that finishes at once is reported by its result alone"
    result = daemon.results_for("unit-1")[0]
    assert result.success and result.output_json == '{"b": 2, "a": [1]}'
    assert result.attempt == 1 and result.duration_us > 0


async def test_a_unit_still_running_is_announced_as_started_before_its_result(
    daemon_server: DaemonServer, start_agent: StartAgent
) -> None:
    daemon = FakeDaemon()
    port = await daemon_server.start(daemon)
    await start_agent(port)

    await daemon.offer(offer("unit-slow", "sleep_ms", '{"ms": 400}'))
    await daemon.wait_for(lambda: daemon.results_for("unit-slow"))
    kinds = [("started" if r.started else "result") for r in daemon.requests if r.started or r.results]
    assert kinds == ["started", "result"]


async def test_a_heartbeat_lists_the_running_attempt(daemon_server: DaemonServer, start_agent: StartAgent) -> None:
    daemon = FakeDaemon()
    port = await daemon_server.start(daemon)
    await start_agent(port)

    await daemon.offer(offer("unit-sleep", "sleep_ms", '{"ms": 60000}'))
    heartbeat = await daemon.wait_for(
        lambda: next((h for h in daemon.heartbeats if [r.work_unit_id for r in h.running] == ["unit-sleep"]), None)
    )
    assert heartbeat.in_flight == 1 and heartbeat.utilization == pytest.approx(0.5)
    await daemon.send(agent_pb2.ConnectResponse(stops=[agent_pb2.StopUnit(work_unit_id="unit-sleep", attempt=1)]))


async def test_ready_claims_leave_in_one_batch_and_only_up_to_capacity(
    daemon_server: DaemonServer, start_agent: StartAgent
) -> None:
    daemon = FakeDaemon(auto_grant=False)
    port = await daemon_server.start(daemon)
    await start_agent(port, concurrency=3)

    await daemon.offer(*(offer(f"unit-{index}") for index in range(5)))
    await daemon.wait_for(lambda: daemon.items("claims"))

    claim_requests = [request for request in daemon.requests if request.claims]
    assert len(claim_requests) == 1
    assert [claim.work_unit_id for claim in claim_requests[0].claims] == ["unit-0", "unit-1", "unit-2"]


async def test_a_denied_claim_is_not_executed(daemon_server: DaemonServer, start_agent: StartAgent) -> None:
    daemon = FakeDaemon(auto_grant=False)
    port = await daemon_server.start(daemon)
    await start_agent(port, concurrency=1)

    await daemon.offer(offer("unit-lost"))
    await daemon.wait_for(lambda: daemon.items("claims"))
    await daemon.send(
        agent_pb2.ConnectResponse(
            claim_decisions=[agent_pb2.ClaimDecision(work_unit_id="unit-lost", attempt=1, granted=False, reason="won")]
        )
    )
    # The denial freed the only slot: a second offer is claimed, granted and run.
    await daemon.offer(offer("unit-won"))
    await daemon.wait_for(lambda: len(daemon.items("claims")) == 2)
    await daemon.send(
        agent_pb2.ConnectResponse(
            claim_decisions=[agent_pb2.ClaimDecision(work_unit_id="unit-won", attempt=1, granted=True)]
        )
    )
    await daemon.wait_for(lambda: daemon.results_for("unit-won"))

    assert [r.work_unit_id for r in daemon.items("results")] == ["unit-won"]
    assert daemon.results_for("unit-lost") == []


async def test_stop_cancels_a_running_burn_and_frees_its_worker(
    daemon_server: DaemonServer, start_agent: StartAgent
) -> None:
    daemon = FakeDaemon()
    port = await daemon_server.start(daemon)
    agent, _ = await start_agent(port, concurrency=1)

    await daemon.offer(offer("unit-burn", "burn_ms", '{"ms": 600000}'))
    await daemon.wait_for(lambda: daemon.items("started"))
    await daemon.send(agent_pb2.ConnectResponse(stops=[agent_pb2.StopUnit(work_unit_id="unit-burn", attempt=1)]))
    assert agent.work is not None
    assert await agent.work.wait_idle(WAIT_S)

    # With one worker, this unit can only run once the burn's thread has really stopped.
    await daemon.offer(offer("unit-after", "echo", '"next"'))
    await daemon.wait_for(lambda: daemon.results_for("unit-after"))
    assert daemon.results_for("unit-burn") == []


async def test_run_timeout_reports_a_retryable_timeout(daemon_server: DaemonServer, start_agent: StartAgent) -> None:
    daemon = FakeDaemon()
    port = await daemon_server.start(daemon)
    await start_agent(port)

    await daemon.offer(offer("unit-slow", "burn_ms", '{"ms": 600000}', run_timeout_ms=100))
    (result,) = await daemon.wait_for(lambda: daemon.results_for("unit-slow"))

    assert (result.success, result.error_code, result.retryable) == (False, "TIMEOUT", True)


async def test_drain_stops_claiming_but_stays_connected(daemon_server: DaemonServer, start_agent: StartAgent) -> None:
    daemon = FakeDaemon()
    port = await daemon_server.start(daemon)
    await start_agent(port)

    await daemon.send(agent_pb2.ConnectResponse(drain=agent_pb2.Drain(reason="maintenance"), offers=[offer("unit-x")]))
    heartbeats_before = len(daemon.heartbeats)
    await daemon.wait_for(lambda: len(daemon.heartbeats) >= heartbeats_before + 2)

    assert daemon.items("claims") == []
    assert daemon.attempts == 1


async def test_reconnect_resends_hello_with_running_and_the_outbox(
    daemon_server: DaemonServer, start_agent: StartAgent
) -> None:
    silent = FakeDaemon(auto_ack=False)
    port = await daemon_server.start(silent)
    agent, _ = await start_agent(port)
    await silent.offer(offer("unit-r", "sha256", json.dumps({"data": "abc"})))
    await silent.wait_for(lambda: silent.results_for("unit-r"))
    assert agent.outbox is not None and agent.outbox.keys() == {("unit-r", 1)}

    await daemon_server.stop_all()
    restarted = FakeDaemon()
    await daemon_server.start(restarted, port=port)

    (resent,) = await restarted.wait_for(lambda: restarted.results_for("unit-r"))
    await asyncio.wait_for(agent.outbox.wait_empty(), WAIT_S)
    assert [(ref.work_unit_id, ref.attempt) for ref in restarted.hellos[0].running] == [("unit-r", 1)]
    assert (
        json.loads(resent.output_json)["sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


async def test_outbox_survives_an_agent_restart(daemon_server: DaemonServer, start_agent: StartAgent) -> None:
    silent = FakeDaemon(auto_ack=False)
    port = await daemon_server.start(silent)
    first, first_task = await start_agent(port)
    await silent.offer(offer("unit-d", "echo", '{"keep": true}'))
    await silent.wait_for(lambda: silent.results_for("unit-d"))
    await first.shutdown()
    await first_task

    await daemon_server.stop_all()
    acking = FakeDaemon()
    second, _ = await start_agent(await daemon_server.start(acking))

    (resent,) = await acking.wait_for(lambda: acking.results_for("unit-d"))
    assert second.outbox is not None
    await asyncio.wait_for(second.outbox.wait_empty(), WAIT_S)
    assert [(ref.work_unit_id, ref.attempt) for ref in acking.hellos[0].running] == [("unit-d", 1)]
    assert resent.success and resent.output_json == '{"keep": true}'


async def test_reconnects_with_backoff_then_gives_up_after_the_bound(
    daemon_server: DaemonServer, start_agent: StartAgent
) -> None:
    daemon = FakeDaemon(refuse_with=grpc.StatusCode.UNAVAILABLE)
    port = await daemon_server.start(daemon)
    _, task = await start_agent(port, max_connect_attempts=3)

    with pytest.raises(ConnectionGaveUp):
        await asyncio.wait_for(task, WAIT_S)
    assert daemon.attempts == 3


async def test_gives_up_when_nothing_listens(start_agent: StartAgent) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago and nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _, task = await start_agent(port, max_connect_attempts=2)

    with pytest.raises(ConnectionGaveUp):
        await asyncio.wait_for(task, WAIT_S)


async def test_a_refused_token_stops_the_agent_with_a_clear_error(
    daemon_server: DaemonServer, start_agent: StartAgent
) -> None:
    daemon = FakeDaemon(refuse_with=grpc.StatusCode.UNAUTHENTICATED)
    port = await daemon_server.start(daemon)
    _, task = await start_agent(port, token="wrong")

    with pytest.raises(AgentRejected, match="UNAUTHENTICATED"):
        await asyncio.wait_for(task, WAIT_S)
    assert daemon.attempts == 1


async def test_each_kind_has_its_own_capacity_and_unserved_kinds_are_ignored(
    daemon_server: DaemonServer, start_agent: StartAgent
) -> None:
    daemon = FakeDaemon(auto_grant=False)
    port = await daemon_server.start(daemon)
    await start_agent(port, kinds=("cpu", "llm_pod"), concurrency=1, llm=LlmSettings(max_concurrency=1))
    cpu_only_port = await daemon_server.start(cpu_only := FakeDaemon(auto_grant=False))
    await start_agent(cpu_only_port, node_id="node-cpu")  # shares the state dir: one outbox per node id

    llm_input = json.dumps({"prompt": "hi"})
    await daemon.offer(
        offer("cpu-1"), offer("cpu-2"), offer("llm-1", "chat", llm_input, kind="llm_pod"),
        offer("llm-2", "chat", llm_input, kind="llm_pod"),
    )  # fmt: skip
    await cpu_only.offer(offer("llm-x", "chat", llm_input, kind="llm_pod"), offer("cpu-x"))

    await daemon.wait_for(lambda: len(daemon.items("claims")) == 2)
    await cpu_only.wait_for(lambda: cpu_only.items("claims"))
    assert [claim.work_unit_id for claim in daemon.items("claims")] == ["cpu-1", "llm-1"]
    assert [claim.work_unit_id for claim in cpu_only.items("claims")] == ["cpu-x"]
