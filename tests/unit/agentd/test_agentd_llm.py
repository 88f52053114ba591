"""The LLM executor: the deterministic stub, and the openai provider through the real `openai`
client against a local OpenAI-compatible server."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest
from agentd_fakes import DaemonServer, FakeDaemon, StartAgent, offer
from krako.v1 import agent_pb2
from openai_compatible_server import OpenAICompatibleServer

from agentd.executors.base import AttemptContext
from agentd.executors.llm import LlmExecutor, LlmSettings, PriceTable
from agentd.executors.openai_provider import OpenAIProvider
from agentd.executors.providers import StubProvider


def llm_offer(input_value: dict[str, Any], **fields: Any) -> agent_pb2.Offer:
    return offer("llm-unit", "chat", json.dumps(input_value), kind="llm_pod", **fields)


async def execute(executor: LlmExecutor, unit_offer: agent_pb2.Offer) -> agent_pb2.Result:
    return await executor.execute(AttemptContext(offer=unit_offer))


@pytest.fixture
async def stub() -> AsyncIterator[LlmExecutor]:
    executor = LlmExecutor(provider=StubProvider(), settings=LlmSettings(provider="stub"))
    yield executor
    await executor.close()


async def test_the_stub_gives_the_same_answer_for_the_same_prompt_and_model(stub: LlmExecutor) -> None:
    unit = llm_offer({"prompt": "what is krako?", "model": "stub-small"})
    first, second = await execute(stub, unit), await execute(stub, unit)
    other = await execute(stub, llm_offer({"prompt": "what is krako?", "model": "stub-large"}))

    assert first.success and first.output_json == second.output_json
    assert first.llm == second.llm
    assert first.llm.usage_reported and first.llm.total_tokens == first.llm.tokens_in + first.llm.tokens_out
    assert first.llm.latency_ms > 0 and first.llm.provider == "stub"
    assert other.output_json != first.output_json
    assert set(json.loads(first.output_json)) == {"text", "model", "finish_reason"}


async def test_the_offer_llm_spec_wins_over_the_unit_input(stub: LlmExecutor) -> None:
    unit = llm_offer(
        {"prompt": "hi", "tier": "small", "model": "from-input", "max_tokens": 500},
        llm=agent_pb2.LlmSpecRef(tier="large", model="from-offer", max_tokens=3),
    )
    result = await execute(stub, unit)
    assert (result.llm.tier, result.llm.model) == ("large", "from-offer")
    assert result.llm.tokens_out <= 3


async def test_the_cost_comes_from_the_price_table_as_a_decimal_string() -> None:
    prices = PriceTable.parse("0.002000", "priced-model=0.010000")
    assert prices.estimate_usd("priced-model", 1500) == "0.015000"
    assert prices.estimate_usd("other", 1500) == "0.003000"
    half_micro = PriceTable.parse("0.000500")  # one token costs exactly half a micro-dollar
    assert (half_micro.estimate_usd("m", 1), half_micro.estimate_usd("m", 3)) == ("0.000000", "0.000002")  # half-even
    with pytest.raises(ValueError, match="not a decimal"):
        PriceTable.parse("cheap")
    assert Decimal(prices.estimate_usd("other", 333)) == Decimal("0.000666")


@pytest.mark.parametrize(
    ("input_value", "message"),
    [
        ({"system": "no prompt"}, "prompt"),
        ({"prompt": "x", "max_tokens": "many"}, "max_tokens"),
        ({"prompt": "x", "temperature": 3}, "temperature"),
    ],
    ids=["a missing prompt", "a non-integer max_tokens", "a temperature out of range"],
)
async def test_bad_llm_input_is_a_validation_error(
    stub: LlmExecutor, input_value: dict[str, Any], message: str
) -> None:
    result = await execute(stub, llm_offer(input_value))
    assert (result.error_code, result.retryable) == ("VALIDATION_ERROR", False)
    assert message in result.error_message


async def test_a_tier_this_pod_does_not_serve_is_model_unavailable() -> None:
    executor = LlmExecutor(provider=StubProvider(), settings=LlmSettings(provider="stub", tiers=("small",)))
    result = await execute(executor, llm_offer({"prompt": "x", "tier": "large"}))
    assert (result.error_code, result.retryable, result.llm.error_code) == (
        "MODEL_UNAVAILABLE",
        True,
        "MODEL_UNAVAILABLE",
    )


async def test_prompts_are_not_logged_unless_the_logging_mode_is_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agentd")
    quiet = LlmExecutor(provider=StubProvider(), settings=LlmSettings(provider="stub"))
    await execute(quiet, llm_offer({"prompt": "secret prompt text"}))
    assert "secret prompt text" not in caplog.text

    verbose = LlmExecutor(provider=StubProvider(), settings=LlmSettings(provider="stub", log_prompts=True))
    await execute(verbose, llm_offer({"prompt": "secret prompt text"}))
    assert "secret prompt text" in caplog.text


# -- the openai provider against a local OpenAI-compatible server --------------------------


@pytest.fixture
def openai_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAICompatibleServer]:
    server = OpenAICompatibleServer()
    server.start()
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    yield server
    server.stop()


@pytest.fixture
async def openai_executor(openai_server: OpenAICompatibleServer) -> AsyncIterator[LlmExecutor]:
    executor = LlmExecutor(provider=OpenAIProvider(), settings=LlmSettings(provider="openai"))
    yield executor
    await executor.close()


async def test_openai_success_reports_usage_cost_and_output(
    openai_executor: LlmExecutor, openai_server: OpenAICompatibleServer
) -> None:
    unit = llm_offer({"prompt": "hello", "system": "be brief", "model": "ok-model", "temperature": 0.5, "top_p": 0.9})
    result = await execute(openai_executor, unit)

    assert result.success
    assert json.loads(result.output_json) == {"text": "answer to: hello", "model": "ok-model", "finish_reason": "stop"}
    assert (result.llm.tokens_in, result.llm.tokens_out, result.llm.total_tokens) == (12, 30, 42)
    assert result.llm.usage_reported and result.llm.estimated_cost_usd == "0.000084"
    assert (result.llm.provider, result.llm.model, result.llm.tier) == ("openai", "ok-model", "small")
    (request,) = openai_server.requests
    assert request["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    assert (request["max_tokens"], request["temperature"], request["top_p"]) == (256, 0.5, 0.9)
    assert openai_server.headers[0]["authorization"] == "Bearer test-key"


async def test_openai_without_usage_says_so_instead_of_inventing_tokens(openai_executor: LlmExecutor) -> None:
    result = await execute(openai_executor, llm_offer({"prompt": "hello", "model": "no-usage"}))
    assert result.success
    assert (result.llm.usage_reported, result.llm.total_tokens, result.llm.estimated_cost_usd) == (
        False, 0, "0.000000",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("model", "code", "retryable"),
    [
        ("limited", "RATE_LIMITED", True),
        ("denied", "AUTH_ERROR", False),
        ("missing", "MODEL_UNAVAILABLE", True),
        ("busy", "RESOURCE_EXHAUSTED", True),
    ],
    ids=["429 is rate limited", "401 is an auth error", "404 is an unavailable model", "503 is exhausted"],
)
async def test_openai_errors_map_to_spec_codes_without_client_retries(
    openai_executor: LlmExecutor, openai_server: OpenAICompatibleServer, model: str, code: str, retryable: bool
) -> None:
    result = await execute(openai_executor, llm_offer({"prompt": "hello", "model": model}))

    assert (result.success, result.error_code, result.retryable) == (False, code, retryable)
    assert (result.llm.error_code, result.llm.usage_reported, result.output_json) == (code, False, "")
    assert len(openai_server.requests) == 1  # max_retries=0: the fabric retries, not the client


async def test_openai_timeout_is_a_retryable_timeout(openai_executor: LlmExecutor) -> None:
    result = await execute(openai_executor, llm_offer({"prompt": "hello", "model": "slow", "timeout_ms": 200}))
    assert (result.success, result.error_code, result.retryable, result.output_json) == (False, "TIMEOUT", True, "")


# -- an llm_pod unit through the stream ---------------------------------------------------------


async def test_an_llm_unit_runs_end_to_end_with_telemetry(daemon_server: DaemonServer, start_agent: StartAgent) -> None:
    daemon = FakeDaemon()
    port = await daemon_server.start(daemon)
    await start_agent(port, kinds=("llm_pod",))

    await daemon.offer(llm_offer({"prompt": "summarise"}, llm=agent_pb2.LlmSpecRef(tier="medium")))
    (result,) = await daemon.wait_for(lambda: daemon.results_for("llm-unit"))

    assert result.success and result.llm.tier == "medium" and result.llm.model == "stub-medium"
    assert result.llm.total_tokens > 0 and Decimal(result.llm.estimated_cost_usd) > 0
    assert list(daemon.hellos[0].handlers) == []
