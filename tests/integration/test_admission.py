"""Admission control as the gateway enforces it, driven by the controller's events in the log."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from krako.v1 import admin_pb2, admin_pb2_grpc, common_pb2, gateway_pb2, gateway_pb2_grpc

from krakod.capacity import CapacityConfig
from krakod.config import CapacityOptions
from krakod.server import Daemon
from tests.conftest import make_config
from tests.integration.test_dispatch import wait_terminal
from tests.support.scripted_agent import ScriptedAgent


async def wait_for_mode(daemon: Daemon, mode: str, timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    position = 0
    while True:
        for event in await daemon.log.read(position, 1000, types=["capacity.admission.mode.changed"]):
            position = event.seq
            if event.payload["to"] == mode:
                return
        remaining = deadline - asyncio.get_running_loop().time()
        assert remaining > 0, f"admission mode never became {mode}"
        await daemon.log.wait_for_commit(daemon.log.last_seq, timeout_s=remaining)


@pytest.fixture
async def critical_daemon(tmp_path: Path):
    options = CapacityOptions(
        controller=CapacityConfig(window_s=0.2, cooldown_after_scale_up_s=1, cooldown_after_scale_down_s=1),
        simulate_pressure="critical",
    )
    d = Daemon(make_config(tmp_path / "data", capacity=options))
    await d.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{d.port}")
    yield d, channel
    await channel.close()
    await d.stop()


def spec(priority: int) -> common_pb2.WorkUnitSpec:
    return common_pb2.WorkUnitSpec(kind="cpu", handler="echo", input_json="1", priority=priority)


async def test_critical_mode_admits_p0_only_and_still_accepts_results(critical_daemon):
    d, channel = critical_daemon
    agent = ScriptedAgent(f"127.0.0.1:{d.port}", "worker")
    await agent.start()
    await wait_for_mode(d, "CRITICAL")
    gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
    for priority in (common_pb2.PRIORITY_P1, common_pb2.PRIORITY_P2, common_pb2.PRIORITY_P3):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await gateway.SubmitWorkUnit(gateway_pb2.SubmitWorkUnitRequest(spec=spec(priority)))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "CRITICAL" in info.value.details() and "critical_admits_p0_only" in info.value.details()
    rejected = await d.log.read(0, 1000, types=["workunit.rejected"])
    assert len(rejected) == 3 and all(e.payload["rule"] == "critical_admits_p0_only" for e in rejected)
    admitted = await gateway.SubmitWorkUnit(gateway_pb2.SubmitWorkUnitRequest(spec=spec(common_pb2.PRIORITY_P0)))
    final = await wait_terminal(channel, admitted.work_unit_id)
    assert final.state == common_pb2.WORK_UNIT_STATE_COMPLETED, "results and claims are never throttled"
    capacity = await admin_pb2_grpc.AdminServiceStub(channel).GetCapacity(admin_pb2.GetCapacityRequest())
    assert capacity.mode == "CRITICAL" and capacity.replicas > 1
    await agent.close()


async def test_the_admission_mode_survives_a_restart(critical_daemon, tmp_path):
    d, _ = critical_daemon
    await wait_for_mode(d, "CRITICAL")
    await d.stop()
    again = Daemon(make_config(d.data_dir))  # no simulated pressure now: the mode comes from the log
    await again.start()
    try:
        assert again.capacity.view.mode().value == "CRITICAL"
    finally:
        await again.stop()
