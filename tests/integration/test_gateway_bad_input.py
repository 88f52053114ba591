"""Bad input gets a clear gRPC status and changes nothing in the log (DESIGN §2.6)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import grpc
import pytest
from krako.v1 import common_pb2, events_pb2, events_pb2_grpc, gateway_pb2, gateway_pb2_grpc

from krakod.config import AuthConfig, Config, ConfigError
from krakod.server import Daemon
from tests.conftest import make_config

# A fresh krakod's log holds one event: the billing.pricing.updated fact of its configuration.
STARTUP_EVENTS = 1
OK = dict(kind="cpu", handler="echo", input_json='{"x": 1}')


def spec(**overrides: object) -> common_pb2.WorkUnitSpec:
    return common_pb2.WorkUnitSpec(**{**OK, **overrides})  # type: ignore[arg-type]


BAD_SPECS = [
    pytest.param(spec(kind=""), grpc.StatusCode.INVALID_ARGUMENT, "kind is required", id="a missing kind"),
    pytest.param(spec(kind="gpu"), grpc.StatusCode.INVALID_ARGUMENT, "unknown kind 'gpu'", id="an unknown kind"),
    pytest.param(spec(handler=""), grpc.StatusCode.INVALID_ARGUMENT, "handler is required", id="a missing handler"),
    pytest.param(
        spec(handler="rm_rf"), grpc.StatusCode.INVALID_ARGUMENT, "unknown handler 'rm_rf'", id="an unknown handler"
    ),
    pytest.param(
        spec(input_json="{not json"), grpc.StatusCode.INVALID_ARGUMENT, "not valid JSON", id="input that is not JSON"
    ),
    pytest.param(
        spec(input_json=json.dumps({"blob": "x" * 300_000})),
        grpc.StatusCode.INVALID_ARGUMENT,
        "the limit is 262144 bytes",
        id="an oversized input",
    ),
    pytest.param(spec(priority=42), grpc.StatusCode.INVALID_ARGUMENT, "unknown priority", id="an unknown priority"),
    pytest.param(
        spec(max_attempts=9), grpc.StatusCode.INVALID_ARGUMENT, "above the cap of 5", id="more attempts than the cap"
    ),
    pytest.param(
        spec(kind="llm_pod", handler="", privacy="local_only"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "never go to an LLM pod",
        id="a local_only unit of kind llm_pod",
    ),
    pytest.param(
        spec(kind="llm_pod", handler="", llm=common_pb2.LlmSpec(tier="huge")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown llm tier",
        id="an unknown llm tier",
    ),
    pytest.param(
        spec(depends_on=["nope"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown work unit 'nope'",
        id="a dependency on a unit that does not exist",
    ),
    pytest.param(
        spec(client_key="k" * 500),
        grpc.StatusCode.INVALID_ARGUMENT,
        "client_key is longer",
        id="an overlong client key",
    ),
]


@pytest.mark.parametrize(("bad", "code", "message"), BAD_SPECS)
async def test_bad_submission_is_refused_and_appends_nothing(daemon, channel, bad, code, message):
    gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
    before = daemon.log.last_seq
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await gateway.SubmitWorkUnit(gateway_pb2.SubmitWorkUnitRequest(spec=bad))
    assert info.value.code() == code
    assert message in info.value.details()
    assert daemon.log.last_seq == before


async def test_one_bad_unit_rejects_the_whole_batch(daemon, channel):
    gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
    before = daemon.log.last_seq
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await gateway.SubmitWorkUnits(gateway_pb2.SubmitWorkUnitsRequest(specs=[spec(), spec(kind="gpu"), spec()]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "specs[1]" in info.value.details()
    assert daemon.log.last_seq == before


async def test_a_batch_above_the_limit_is_refused(daemon, channel):
    gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await gateway.SubmitWorkUnits(gateway_pb2.SubmitWorkUnitsRequest(specs=[spec()] * 1001))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the limit is 1000" in info.value.details()
    assert daemon.log.last_seq == STARTUP_EVENTS


async def test_a_missing_spec_is_refused(daemon, channel):
    gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await gateway.SubmitWorkUnit(gateway_pb2.SubmitWorkUnitRequest())
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert daemon.log.last_seq == STARTUP_EVENTS


async def test_read_events_limit_above_the_maximum_is_refused(daemon, channel):
    events = events_pb2_grpc.EventServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await events.ReadEvents(events_pb2.ReadEventsRequest(limit=50_000))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_unknown_unit_is_not_found(daemon, channel):
    gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await gateway.GetWorkUnit(gateway_pb2.GetWorkUnitRequest(work_unit_id="missing"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_non_loopback_listen_without_tokens_refuses_to_start(tmp_path: Path):
    config = Config(data_dir=tmp_path, listen="0.0.0.0:0")
    with pytest.raises(ConfigError, match="--allow-unauthenticated"):
        Daemon(config)
    Daemon(dataclasses.replace(config, allow_unauthenticated=True))  # the explicit opt-in is accepted


@pytest.fixture
async def secured(tmp_path: Path):
    auth = AuthConfig(
        agent_tokens=frozenset({"agent-secret"}),
        tenant_keys={"key-a": "tenant-a", "key-b": "tenant-b"},
        admin_tokens=frozenset({"admin-secret"}),
    )
    d = Daemon(make_config(tmp_path / "data", auth=auth))
    await d.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{d.port}")
    try:
        yield d, channel
    finally:
        await channel.close()
        await d.stop()


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        pytest.param((), grpc.StatusCode.UNAUTHENTICATED, id="no token at all"),
        pytest.param(bearer("wrong"), grpc.StatusCode.UNAUTHENTICATED, id="a token nobody issued"),
        pytest.param(bearer("agent-secret"), grpc.StatusCode.UNAUTHENTICATED, id="an agent token on the gateway"),
        pytest.param((("authorization", "Basic abc"),), grpc.StatusCode.UNAUTHENTICATED, id="a non-bearer scheme"),
    ],
)
async def test_bad_tokens_are_refused_and_append_nothing(secured, metadata, code):
    d, channel = secured
    gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await gateway.SubmitWorkUnit(gateway_pb2.SubmitWorkUnitRequest(spec=spec()), metadata=metadata)
    assert info.value.code() == code
    assert d.log.last_seq == STARTUP_EVENTS


async def test_a_tenant_key_cannot_submit_for_another_tenant(secured):
    d, channel = secured
    gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await gateway.SubmitWorkUnit(
            gateway_pb2.SubmitWorkUnitRequest(spec=spec(tenant_id="tenant-b")), metadata=bearer("key-a")
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert d.log.last_seq == STARTUP_EVENTS


async def test_a_tenant_sees_only_its_own_units_and_events(secured):
    _, channel = secured
    gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
    events = events_pb2_grpc.EventServiceStub(channel)
    a = await gateway.SubmitWorkUnit(gateway_pb2.SubmitWorkUnitRequest(spec=spec()), metadata=bearer("key-a"))
    b = await gateway.SubmitWorkUnit(gateway_pb2.SubmitWorkUnitRequest(spec=spec()), metadata=bearer("key-b"))
    got = await gateway.GetWorkUnit(
        gateway_pb2.GetWorkUnitRequest(work_unit_id=a.work_unit_id), metadata=bearer("key-a")
    )
    assert got.work_unit.spec.tenant_id == "tenant-a"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await gateway.GetWorkUnit(gateway_pb2.GetWorkUnitRequest(work_unit_id=b.work_unit_id), metadata=bearer("key-a"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    seen = await events.ReadEvents(events_pb2.ReadEventsRequest(), metadata=bearer("key-a"))
    assert {e.tenant_id for e in seen.events} == {"tenant-a"}
    everything = await events.ReadEvents(events_pb2.ReadEventsRequest(), metadata=bearer("admin-secret"))
    assert {"tenant-a", "tenant-b"} <= {e.tenant_id for e in everything.events}


async def test_an_agent_without_a_join_token_is_refused(secured):
    from tests.support.scripted_agent import ScriptedAgent

    d, _ = secured
    agent = ScriptedAgent(f"127.0.0.1:{d.port}", "intruder")
    with pytest.raises(ConnectionRefusedError):
        await agent.start()
    code = await agent.call.code()
    assert code == grpc.StatusCode.UNAUTHENTICATED
    await agent.close()
    assert d.log.last_seq == STARTUP_EVENTS
    good = ScriptedAgent(f"127.0.0.1:{d.port}", "member", token="agent-secret")
    await good.start()
    await good.close()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        pytest.param(["--placement-weights", "0.5,0.5,0.5,0.1"], "must sum to 1", id="weights that do not sum to 1"),
        pytest.param(["--placement-weights", "abc"], "four numbers", id="weights that are not numbers"),
        pytest.param(["--credit-limit-usd", "lots"], "decimal amount", id="a credit limit that is not money"),
    ],
)
def test_krakod_refuses_a_bad_configuration_at_start(tmp_path: Path, flags: list[str], message: str):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "krakod.main", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0", *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert not (tmp_path / "events.sqlite").exists(), "a refused configuration must not touch the log"
