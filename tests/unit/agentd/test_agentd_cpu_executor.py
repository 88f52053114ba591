"""The CPU executor and the built-in handlers, without a stream: results and error codes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from agentd_fakes import offer

from agentd.executors.base import AttemptContext
from agentd.executors.builtins import builtin_handlers
from agentd.executors.cpu import CpuExecutor
from agentd.registry import HandlerContext, validate_handler


def _raises(payload: Any) -> None:
    raise RuntimeError("boom")


def _not_json(payload: Any) -> object:
    return object()


_waiter_started = threading.Event()


def _waits_for_cancel(payload: Any, ctx: HandlerContext) -> None:
    _waiter_started.set()
    ctx.cancel_event.wait(60)
    ctx.raise_if_cancelled()


@pytest.fixture
async def executor() -> AsyncIterator[CpuExecutor]:
    handlers = builtin_handlers() | {
        "raises": validate_handler("raises", _raises, origin="test"),
        "not_json": validate_handler("not_json", _not_json, origin="test"),
        "waits": validate_handler("waits", _waits_for_cancel, origin="test"),
    }
    cpu = CpuExecutor(handlers=handlers, max_workers=2)
    yield cpu
    await cpu.close()


async def run(executor: CpuExecutor, handler: str, input_json: str, **fields: Any) -> Any:
    return await executor.execute(AttemptContext(offer=offer("unit", handler, input_json, **fields)))


async def test_echo_returns_its_input_byte_for_byte(executor: CpuExecutor) -> None:
    result = await run(executor, "echo", '{"z": 1,  "a": "é"}')
    assert result.success and result.output_json == '{"z": 1,  "a": "é"}'


async def test_sha256_hashes_the_data_for_the_given_rounds(executor: CpuExecutor) -> None:
    result = await run(executor, "sha256", json.dumps({"data": "x", "rounds": 2}))
    expected = hashlib.sha256(hashlib.sha256(b"x").digest()).hexdigest()
    assert json.loads(result.output_json) == {"sha256": expected, "rounds": 2}


async def test_burn_ms_measures_wall_and_cpu_time(executor: CpuExecutor) -> None:
    result = await run(executor, "burn_ms", '{"ms": 30}')
    assert result.success
    assert result.duration_us > 0 and result.cpu_time_us > 0


async def test_sleep_ms_uses_no_cpu_to_speak_of(executor: CpuExecutor) -> None:
    result = await run(executor, "sleep_ms", '{"ms": 1}')
    assert result.success and json.loads(result.output_json) == {"slept_ms": 1}


@pytest.mark.parametrize(
    ("handler", "input_json", "code", "retryable"),
    [
        ("sha256", '{"rounds": 1}', "VALIDATION_ERROR", False),
        ("sha256", '{"data": "x", "rounds": 0}', "VALIDATION_ERROR", False),
        ("burn_ms", '{"ms": "ten"}', "VALIDATION_ERROR", False),
        ("sleep_ms", "not json", "VALIDATION_ERROR", False),
        ("nope", "{}", "UNKNOWN_HANDLER", False),
        ("raises", "{}", "EXECUTION_ERROR", True),
        ("not_json", "{}", "EXECUTION_ERROR", False),
    ],
    ids=[
        "missing data is bad input",
        "zero rounds is bad input",
        "a string duration is bad input",
        "input that is not json is bad input",
        "an unknown handler is not retryable",
        "a handler exception is retryable",
        "an output that is not json cannot succeed on retry",
    ],
)
async def test_failures_carry_the_spec_error_code(
    executor: CpuExecutor, handler: str, input_json: str, code: str, retryable: bool
) -> None:
    result = await run(executor, handler, input_json)
    assert (result.success, result.error_code, result.retryable) == (False, code, retryable)
    assert result.error_message


async def test_run_timeout_stops_a_cooperative_handler_and_frees_the_worker(executor: CpuExecutor) -> None:
    result = await run(executor, "burn_ms", '{"ms": 600000}', run_timeout_ms=50)
    assert (result.error_code, result.retryable) == ("TIMEOUT", True)
    assert result.cpu_time_us > 0
    assert executor.stuck_workers == 0


async def test_cancelling_the_attempt_sets_the_flag_the_handler_obeys(executor: CpuExecutor) -> None:
    context = AttemptContext(offer=offer("unit", "waits"))
    task = asyncio.create_task(executor.execute(context))
    assert await asyncio.to_thread(_waiter_started.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert context.cancel_event.is_set()
    assert executor.stuck_workers == 0 and executor.queue_depth == 0
