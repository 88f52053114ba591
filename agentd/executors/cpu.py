"""The CPU executor: named handlers run in a bounded thread pool.

Each attempt is measured inside its worker thread (wall time and ``time.thread_time``,
which is exactly the CPU time of that thread). A thread cannot be killed, so stops and
run timeouts set the attempt's cancel flag; cooperative handlers return within moments.
A handler that ignores the flag keeps its worker thread until it returns: such
"stuck" workers are counted so the agent does not claim work it has no thread for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from krako.v1 import agent_pb2

from agentd.executors.base import (
    CANCELLED,
    EXECUTION_ERROR,
    TIMEOUT,
    UNKNOWN_HANDLER,
    VALIDATION_ERROR,
    AttemptContext,
    failure,
)
from agentd.registry import HandlerCancelled, HandlerContext, HandlerInputError, RawJson, RegisteredHandler

# Outputs travel in batched stream messages (4 MiB gRPC default); one output stays well below.
MAX_OUTPUT_BYTES = 1024 * 1024
# After a timeout, how long a cooperative handler gets to notice its cancel flag, so its
# worker (and its CPU time) is accounted for before the TIMEOUT result is reported.
CANCEL_GRACE_S = 1.0


@dataclass(frozen=True)
class _Outcome:
    """What happened inside the worker thread."""

    result: agent_pb2.Result
    cancelled: bool


class _Invocation:
    """Bookkeeping of one submitted call, guarded by the executor's lock."""

    __slots__ = ("abandoned", "finished", "started")

    def __init__(self) -> None:
        self.started = False
        self.finished = False
        self.abandoned = False


class CpuExecutor:
    """Runs kind=cpu attempts through named handlers in ``max_workers`` threads."""

    kind = "cpu"

    def __init__(self, *, handlers: Mapping[str, RegisteredHandler], max_workers: int) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._handlers = dict(handlers)
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="agentd-cpu")
        self._lock = threading.Lock()
        self._queued = 0
        self._stuck = 0

    def handler_names(self) -> list[str]:
        return sorted(self._handlers)

    @property
    def queue_depth(self) -> int:
        """Attempts waiting for a free worker thread."""
        return self._queued

    @property
    def stuck_workers(self) -> int:
        """Worker threads still busy with attempts that already ended (stopped or timed out)."""
        return self._stuck

    async def execute(self, context: AttemptContext) -> agent_pb2.Result:
        offer = context.offer
        registered = self._handlers.get(offer.handler)
        if registered is None:
            return failure(UNKNOWN_HANDLER, f"this agent has no cpu handler {offer.handler!r}")
        try:
            payload = json.loads(offer.input_json) if offer.input_json else None
        except ValueError as error:
            return failure(VALIDATION_ERROR, f"input is not valid JSON: {error}")
        handler_context = HandlerContext(
            work_unit_id=offer.work_unit_id,
            attempt=offer.attempt,
            input_json=offer.input_json,
            cancel_event=context.cancel_event,
        )
        invocation = _Invocation()
        with self._lock:
            self._queued += 1
        future = self._pool.submit(self._run_in_worker, registered, payload, handler_context, invocation)
        waiter = asyncio.wrap_future(future)
        started_at = time.perf_counter()
        try:
            # shield: a timeout or stop must not cancel the future (that would lose its outcome).
            outcome = await asyncio.wait_for(asyncio.shield(waiter), context.run_timeout_s)
        except TimeoutError:
            context.cancel_event.set()
            return await self._timed_out(waiter, future, invocation, time.perf_counter() - started_at)
        except asyncio.CancelledError:
            context.cancel_event.set()
            await self._stop_worker(waiter, future, invocation)
            raise
        if outcome.cancelled:
            return failure(CANCELLED, "the handler stopped because the attempt was cancelled")
        return outcome.result

    async def close(self) -> None:
        # Never wait for handlers here: stuck ones would block shutdown forever.
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _timed_out(
        self, waiter: asyncio.Future[_Outcome], future: Any, invocation: _Invocation, elapsed_s: float
    ) -> agent_pb2.Result:
        await self._stop_worker(waiter, future, invocation)
        cpu_time_us = 0
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            cpu_time_us = waiter.result().result.cpu_time_us
        return failure(
            TIMEOUT,
            f"run timeout of {int(elapsed_s * 1000)} ms elapsed",
            duration_us=int(elapsed_s * 1_000_000),
            cpu_time_us=cpu_time_us,
        )

    async def _stop_worker(self, waiter: asyncio.Future[_Outcome], future: Any, invocation: _Invocation) -> None:
        """The cancel flag is set: drop the call if still queued, else give a cooperative
        handler a moment to return (so the attempt ends with its worker free), else count
        the worker as stuck and leave it behind."""
        with self._lock:
            if not invocation.started and future.cancel():
                self._queued -= 1
                invocation.finished = True
                return
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({waiter}, timeout=CANCEL_GRACE_S)
        with self._lock:
            if not invocation.finished and not invocation.abandoned:
                invocation.abandoned = True
                self._stuck += 1

    def _run_in_worker(
        self,
        registered: RegisteredHandler,
        payload: Any,
        handler_context: HandlerContext,
        invocation: _Invocation,
    ) -> _Outcome:
        with self._lock:
            invocation.started = True
            self._queued -= 1
        wall_started_ns = time.perf_counter_ns()
        cpu_started_ns = time.thread_time_ns()
        try:
            outcome = _invoke(registered, payload, handler_context)
        finally:
            with self._lock:
                invocation.finished = True
                if invocation.abandoned:
                    self._stuck -= 1
        outcome.result.duration_us = (time.perf_counter_ns() - wall_started_ns) // 1000
        outcome.result.cpu_time_us = (time.thread_time_ns() - cpu_started_ns) // 1000
        return outcome


def _invoke(registered: RegisteredHandler, payload: Any, handler_context: HandlerContext) -> _Outcome:
    try:
        value = registered(payload, handler_context)
    except HandlerInputError as error:
        return _Outcome(failure(VALIDATION_ERROR, str(error) or "invalid input"), cancelled=False)
    except HandlerCancelled as error:
        return _Outcome(failure(CANCELLED, str(error)), cancelled=True)
    except Exception as error:  # a handler bug is reported, never allowed to kill the agent
        return _Outcome(failure(EXECUTION_ERROR, f"{type(error).__name__}: {error}"), cancelled=False)
    try:
        output_json = _to_json(value)
    except (TypeError, ValueError) as error:
        # Deterministic: the same input gives the same unserialisable value, so no retry.
        message = f"handler {registered.name!r} returned a value that is not JSON: {error}"
        return _Outcome(failure(EXECUTION_ERROR, message, retryable=False), cancelled=False)
    if len(output_json.encode("utf-8")) > MAX_OUTPUT_BYTES:
        message = f"handler {registered.name!r} output exceeds {MAX_OUTPUT_BYTES} bytes"
        return _Outcome(failure(EXECUTION_ERROR, message, retryable=False), cancelled=False)
    return _Outcome(agent_pb2.Result(success=True, output_json=output_json), cancelled=False)


def _to_json(value: Any) -> str:
    if isinstance(value, RawJson):
        json.loads(value.text)  # refuse to send text the daemon could not decode
        return value.text
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
