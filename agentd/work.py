"""The claim/execute loop: offers become claims, grants become running attempts, results
go to the outbox and then upstream.

Capacity is per lane (one per kind: cpu threads, llm concurrent requests). An offer is
claimed only while ``active + pending claims + stuck workers < capacity`` for its lane,
so a grant always finds a free slot. The order for every result is fixed: persist to the
outbox, then send; the outbox entry is removed only by a ResultAck.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from krako.v1 import agent_pb2

from agentd.batching import OutgoingItem
from agentd.executors.base import EXECUTION_ERROR, AttemptContext, Executor, failure
from agentd.metrics import cpu_load, memory_available_bytes
from agentd.outbox import AttemptKey, Outbox

logger = logging.getLogger(__name__)

SendFunction = Callable[[OutgoingItem], Awaitable[bool]]

MAX_HELLO_RUNNING = 10_000

# Units still running after this long are announced with `started` before their result.
STARTED_NOTICE_AFTER_S = 0.05


@dataclass
class _Lane:
    """Capacity of one kind of work on this agent."""

    executor: Executor
    capacity: int
    active: int = 0
    pending: int = 0

    def free(self) -> int:
        stuck = int(getattr(self.executor, "stuck_workers", 0))
        return self.capacity - self.active - self.pending - stuck


@dataclass
class _PendingClaim:
    offer: agent_pb2.Offer
    lane: _Lane
    claimed_at: float


@dataclass
class _Attempt:
    offer: agent_pb2.Offer
    lane: _Lane
    context: AttemptContext
    task: asyncio.Task[None] | None = None
    stopped: bool = False
    reporting: bool = False  # the result is being persisted: too late to stop
    started_at: float = field(default_factory=time.monotonic)


def key_of(message: agent_pb2.Offer | agent_pb2.ClaimDecision | agent_pb2.StopUnit | agent_pb2.ResultAck) -> AttemptKey:
    return (message.work_unit_id, message.attempt)


class WorkLoop:
    """Decides what to claim, runs what was granted, reports through the outbox."""

    def __init__(
        self,
        *,
        lanes: Mapping[str, tuple[Executor, int]],
        outbox: Outbox,
        send: SendFunction,
        claim_timeout_s: float,
    ) -> None:
        self._lanes = {kind: _Lane(executor, capacity) for kind, (executor, capacity) in lanes.items()}
        self._outbox = outbox
        self._send = send
        self._claim_timeout_s = claim_timeout_s
        self._pending: dict[AttemptKey, _PendingClaim] = {}
        self._attempts: dict[AttemptKey, _Attempt] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._draining = False

    # -- what the stream asks ------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def capacity(self) -> int:
        return sum(lane.capacity for lane in self._lanes.values())

    def running(self) -> list[agent_pb2.UnitRef]:
        """Attempts executing now (heartbeats extend their leases)."""
        return [agent_pb2.UnitRef(work_unit_id=unit, attempt=attempt) for unit, attempt in self._attempts]

    def running_or_unacknowledged(self) -> list[agent_pb2.UnitRef]:
        """What a hello lists: attempts executing, and results stored but not yet acknowledged."""
        keys = list(self._attempts) + sorted(self._outbox.keys() - self._attempts.keys())
        # Bounded so a hello after a long outage stays a small message; the results themselves are resent anyway.
        return [agent_pb2.UnitRef(work_unit_id=unit, attempt=attempt) for unit, attempt in keys[:MAX_HELLO_RUNNING]]

    def heartbeat(self) -> agent_pb2.Heartbeat:
        in_flight = len(self._attempts)
        queue_depth = sum(int(getattr(lane.executor, "queue_depth", 0)) for lane in self._lanes.values())
        return agent_pb2.Heartbeat(
            cpu_load=cpu_load(),
            in_flight=in_flight,
            queue_depth=queue_depth,
            utilization=in_flight / max(1, self.capacity),
            memory_available_bytes=memory_available_bytes(),
            running=self.running(),
            sent_unix_ms=int(time.time() * 1000),
        )

    async def handle(self, response: agent_pb2.ConnectResponse) -> None:
        """Apply one daemon message. Drain and stops first, so offers in the same message obey them."""
        if response.HasField("drain"):
            logger.info("daemon asked to drain: %s", response.drain.reason or "(no reason)")
            self.drain()
        for stop in response.stops:
            self.stop(key_of(stop), stop.reason)
        if response.result_acks:
            await self._outbox.forget(key_of(ack) for ack in response.result_acks)
        for decision in response.claim_decisions:
            self._decide(decision)
        for offer in response.offers:
            await self._consider(offer)

    def on_disconnect(self) -> None:
        """Claims in flight died with the stream: the daemon will deny or expire them."""
        for pending in self._pending.values():
            pending.lane.pending -= 1
        self._pending.clear()

    def expire_claims(self) -> None:
        """Free capacity held by claims that got no decision in time."""
        deadline = time.monotonic() - self._claim_timeout_s
        for key in [key for key, pending in self._pending.items() if pending.claimed_at < deadline]:
            logger.warning("claim %s#%d got no decision in %.0f s; releasing it", *key, self._claim_timeout_s)
            self._pending.pop(key).lane.pending -= 1

    # -- lifecycle -----------------------------------------------------------------------

    def drain(self) -> None:
        """Claim nothing new; what runs keeps running."""
        self._draining = True

    def stop(self, key: AttemptKey, reason: str = "") -> None:
        """Stop an attempt: cancel flag for threads, task cancel for coroutines. It reports nothing."""
        attempt = self._attempts.get(key)
        if attempt is None:
            return
        logger.info("stopping %s#%d: %s", *key, reason or "(no reason)")
        attempt.stopped = True
        attempt.context.cancel_event.set()
        if attempt.task is not None and not attempt.reporting:
            attempt.task.cancel()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no attempt runs; False when ``timeout_s`` passed first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        return self._idle.is_set()

    async def cancel_all(self) -> None:
        """Stop every attempt and wait for their tasks (shutdown after the grace period)."""
        tasks = [attempt.task for attempt in self._attempts.values() if attempt.task is not None]
        for key in list(self._attempts):
            self.stop(key, "agent shutting down")
        if tasks:
            await asyncio.wait(tasks)

    # -- internals -----------------------------------------------------------------------

    async def _consider(self, offer: agent_pb2.Offer) -> None:
        key = key_of(offer)
        lane = self._lanes.get(offer.kind)
        if self._draining or lane is None or lane.free() <= 0:
            return
        if key in self._pending or key in self._attempts or key in self._outbox.keys():
            return  # a duplicate offer: already ours
        self._pending[key] = _PendingClaim(offer=offer, lane=lane, claimed_at=time.monotonic())
        lane.pending += 1
        sent = await self._send(agent_pb2.Claim(work_unit_id=offer.work_unit_id, attempt=offer.attempt))
        if not sent and self._pending.pop(key, None) is not None:
            lane.pending -= 1

    def _decide(self, decision: agent_pb2.ClaimDecision) -> None:
        pending = self._pending.pop(key_of(decision), None)
        if pending is None:
            return  # expired locally, or from a previous connection
        pending.lane.pending -= 1
        if not decision.granted:
            logger.debug("claim %s#%d denied: %s", decision.work_unit_id, decision.attempt, decision.reason)
            return
        self._start(pending.offer, pending.lane)

    def _start(self, offer: agent_pb2.Offer, lane: _Lane) -> None:
        attempt = _Attempt(offer=offer, lane=lane, context=AttemptContext(offer=offer))
        self._attempts[key_of(offer)] = attempt
        lane.active += 1
        self._idle.clear()
        attempt.task = asyncio.create_task(self._run(attempt), name=f"attempt-{offer.work_unit_id}#{offer.attempt}")

    async def _run(self, attempt: _Attempt) -> None:
        offer = attempt.offer
        result: agent_pb2.Result | None = None
        execution = asyncio.ensure_future(self._execute(attempt))
        try:
            # A unit that finishes at once is reported by its result alone; only work still running after a
            # moment is announced as started (one message and one log event less per short unit).
            done, _ = await asyncio.wait({execution}, timeout=STARTED_NOTICE_AFTER_S)
            if not done:
                await self._send(agent_pb2.Started(work_unit_id=offer.work_unit_id, attempt=offer.attempt))
            result = await execution
            if attempt.stopped:
                return
            result.work_unit_id = offer.work_unit_id
            result.attempt = offer.attempt
            attempt.reporting = True
            await self._outbox.put(result)  # durable before it is sent: nothing acknowledged is lost
        except asyncio.CancelledError:
            if not attempt.stopped:
                raise
            return
        except Exception:  # the outbox failed: without a durable result, the lease expires and the daemon retries
            logger.exception("could not store the result of %s#%d", offer.work_unit_id, offer.attempt)
            return
        finally:
            if not execution.done():
                execution.cancel()
            self._finish(attempt)
        await self._send(result)

    async def _execute(self, attempt: _Attempt) -> agent_pb2.Result:
        try:
            return await attempt.lane.executor.execute(attempt.context)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # an executor bug becomes a failed result, never a dead agent
            logger.error("executor failed on %s#%d:\n%s", attempt.offer.work_unit_id, attempt.offer.attempt,
                         traceback.format_exc())  # fmt: skip
            return failure(EXECUTION_ERROR, f"agent executor error: {type(error).__name__}: {error}")

    def _finish(self, attempt: _Attempt) -> None:
        self._attempts.pop(key_of(attempt.offer), None)
        attempt.lane.active -= 1
        if not self._attempts:
            self._idle.set()
