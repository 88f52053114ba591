"""Billing, wallets, replay verification and LLM budgets through the daemon's gRPC surface."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from krako.v1 import admin_pb2, admin_pb2_grpc, agent_pb2, common_pb2, gateway_pb2, gateway_pb2_grpc

from krakod.budgets import BudgetConfig
from krakod.server import Daemon
from tests.conftest import make_config
from tests.integration.test_dispatch import echo_spec, submit, wait_terminal
from tests.support.scripted_agent import ScriptedAgent


async def caught_up(daemon: Daemon) -> None:
    assert await daemon.projections.wait_for_position(daemon.log.last_seq, timeout_s=15)


async def ledger(channel) -> list[dict]:
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    page = await admin.ListLedger(admin_pb2.ListLedgerRequest(limit=10_000))
    return [json.loads(line.line_json) for line in page.lines]


async def test_completed_units_are_billed_once_and_replay_is_identical(daemon, channel):
    agent = ScriptedAgent(f"127.0.0.1:{daemon.port}", "biller")

    def two_cpu_seconds(offer: agent_pb2.Offer) -> agent_pb2.Result:
        result = ScriptedAgent.echo_result(offer)
        result.cpu_time_us = 2_000_000  # $0.001 at the default $0.0005 per CPU second
        return result

    agent.result_for = two_cpu_seconds
    await agent.start()
    ids = await submit(channel, *[echo_spec(tenant_id="acme") for _ in range(5)])
    for unit_id in ids:
        await wait_terminal(channel, unit_id)
    # An agent resend of an accepted result must not add a line.
    agent.send(results=[two_cpu_seconds(o) for o in agent.offers])
    await agent.wait_until(lambda: len(agent.acks) >= 10)
    await caught_up(daemon)
    lines = await ledger(channel)
    assert lines, "completed units must produce ledger lines"
    billed_units = {line["work_unit_id"] for line in lines if line["line_type"] == "workunit_cpu"}
    assert billed_units == set(ids)
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    assert list((await admin.CheckBilling(admin_pb2.CheckBillingRequest())).findings) == []
    replay = await admin.VerifyReplay(admin_pb2.VerifyReplayRequest())
    assert replay.identical and len(replay.digests) >= 2
    wallets = {w.tenant_id: w for w in (await admin.ListWallets(admin_pb2.ListWalletsRequest())).wallets}
    assert Decimal(wallets["acme"].debited_usd) == Decimal("0.005000")  # 5 units x 2 s x $0.0005, once each
    await agent.close()


async def test_a_top_up_sent_twice_credits_once(daemon, channel):
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    request = admin_pb2.CreditWalletRequest(tenant_id="acme", amount_usd="25.000000", client_key="invoice-7")
    first = await admin.CreditWallet(request)
    again = await admin.CreditWallet(request)
    assert not first.duplicate and again.duplicate and again.seq == first.seq
    assert again.wallet.credited_usd == "25.000000"


@pytest.mark.parametrize(
    ("amount", "key", "message"),
    [
        pytest.param("-5", "k1", "greater than 0", id="a negative amount"),
        pytest.param("abc", "k1", "amount_usd", id="an amount that is not a number"),
        pytest.param("1.0000001", "k1", "more than 6 decimal places", id="sub-micro-dollar precision"),
        pytest.param("5", "", "client_key", id="a missing client key"),
    ],
)
async def test_a_bad_top_up_is_refused_and_appends_nothing(daemon, channel, amount, key, message):
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    before = daemon.log.last_seq
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await admin.CreditWallet(admin_pb2.CreditWalletRequest(tenant_id="acme", amount_usd=amount, client_key=key))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.details()
    assert daemon.log.last_seq == before


def llm_result(offer: agent_pb2.Offer) -> agent_pb2.Result:
    return agent_pb2.Result(
        work_unit_id=offer.work_unit_id,
        attempt=offer.attempt,
        success=True,
        output_json='{"text": "ok"}',
        duration_us=5000,
        cpu_time_us=100,
        llm=agent_pb2.LlmInvocation(
            provider="stub",
            model="stub-small",
            tier="small",
            tokens_in=40,
            tokens_out=60,
            total_tokens=100,
            latency_ms=5,
            usage_reported=True,
            estimated_cost_usd="0.000200",
        ),
    )


def llm_spec(**fields: object) -> common_pb2.WorkUnitSpec:
    return common_pb2.WorkUnitSpec(
        kind="llm_pod",
        input_json=json.dumps({"prompt": "hello"}),
        tenant_id="acme",
        llm=common_pb2.LlmSpec(tier="small", max_tokens=100),
        **fields,
    )  # type: ignore[arg-type]


@pytest.fixture
async def tight_budget(tmp_path: Path):
    # Worst case per unit: (ceil(5/4)=2 + 100) tokens at $0.002/1k = $0.000204; the limit covers 3 of them.
    config = make_config(tmp_path / "data", budget=BudgetConfig(credit_limit_usd=Decimal("0.000700")))
    d = Daemon(config)
    await d.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{d.port}")
    yield d, channel
    await channel.close()
    await d.stop()


async def test_llm_units_reserve_before_dispatch_and_those_over_budget_never_reach_a_pod(tight_budget):
    d, channel = tight_budget
    cpu_only = ScriptedAgent(f"127.0.0.1:{d.port}", "cpu-only", kinds=("cpu",))
    pod = ScriptedAgent(f"127.0.0.1:{d.port}", "pod", kinds=("llm_pod",), llm_tiers=("small",), auto_run=False)
    await cpu_only.start()
    await pod.start()
    ids = await submit(channel, *[llm_spec() for _ in range(5)])
    await pod.wait_until(lambda: sum(dec.granted for dec in pod.decisions) == 3)
    finals = {}
    gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
    for unit_id in ids:
        unit = (await gateway.GetWorkUnit(gateway_pb2.GetWorkUnitRequest(work_unit_id=unit_id))).work_unit
        finals[unit_id] = unit.state
    rejected = [u for u, s in finals.items() if s == common_pb2.WORK_UNIT_STATE_REJECTED]
    assert len(rejected) == 2
    for unit_id in rejected:
        unit = await wait_terminal(channel, unit_id) if False else None
        events = [e.type for e in await d.log.read(0, 100, work_unit_id=unit_id)]
        assert "budget.exceeded" in events and "workunit.scheduled" not in events
    assert not cpu_only.offers, "an llm unit never goes to a CPU-only node"
    assert {o.work_unit_id for o in pod.offers}.isdisjoint(rejected), "nothing over budget is sent to a pod"
    # Run the admitted ones: each reservation settles to the actual cost.
    for offer in pod.offers:
        pod.send(results=[llm_result(offer)])
    admitted = [u for u in ids if u not in rejected]
    for unit_id in admitted:
        assert (await wait_terminal(channel, unit_id)).state == common_pb2.WORK_UNIT_STATE_COMPLETED
    deadline_seq = d.log.last_seq
    settled = [e for e in await d.log.read(0, 1000, types=["budget.settled"])]
    while len(settled) < 3:
        await d.log.wait_for_commit(deadline_seq, timeout_s=10)
        deadline_seq = d.log.last_seq
        settled = await d.log.read(0, 1000, types=["budget.settled"])
    assert sorted(e.work_unit_id for e in settled) == sorted(admitted)
    assert all(e.payload["amount_usd"] == "0.000200" for e in settled)
    assert d.budgets.snapshot("acme")["reserved"] == "0.000000", "no reservation may leak"
    await caught_up(d)
    lines = await ledger(channel)
    assert len([line for line in lines if line["line_type"] == "llm_tokens"]) == 3
    await pod.close()
    await cpu_only.close()
