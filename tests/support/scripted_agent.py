"""A scripted agent for daemon-level tests: speaks the real AgentService stream, behaves as told.

Unlike agentd it lets a test decide exactly when to claim, what to report and
when to go silent, so races and partitions can be staged deterministically.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import grpc
from krako.v1 import agent_pb2, agent_pb2_grpc


class ScriptedAgent:
    def __init__(
        self,
        address: str,
        node_id: str,
        *,
        kinds: tuple[str, ...] = ("cpu",),
        concurrency: int = 8,
        handlers: tuple[str, ...] = ("echo", "sleep_ms", "sha256", "burn_ms"),
        auto_claim: bool = True,
        auto_run: bool = True,
        token: str | None = None,
        region: str = "local",
        version: str = "3.0.0",
        llm_tiers: tuple[str, ...] = (),
        auto_heartbeat: bool = True,
    ) -> None:
        self.address = address
        self.node_id = node_id
        self.kinds = kinds
        self.concurrency = concurrency
        self.handlers = handlers
        self.auto_claim = auto_claim
        self.auto_run = auto_run
        self.token = token
        self.region = region
        self.version = version
        self.llm_tiers = llm_tiers
        self.auto_heartbeat = auto_heartbeat
        self._beats: asyncio.Task[None] | None = None
        self.offers: list[agent_pb2.Offer] = []
        self.decisions: list[agent_pb2.ClaimDecision] = []
        self.acks: list[agent_pb2.ResultAck] = []
        self.stops: list[agent_pb2.StopUnit] = []
        self.drained = False
        self.welcome: agent_pb2.Welcome | None = None
        self.executed: list[str] = []
        self.result_for: Callable[[agent_pb2.Offer], agent_pb2.Result] = self.echo_result
        self._outgoing: asyncio.Queue[agent_pb2.ConnectRequest | None] = asyncio.Queue(maxsize=10_000)
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None
        self.running: dict[str, int] = {}
        self.ended = False

    @staticmethod
    def echo_result(offer: agent_pb2.Offer) -> agent_pb2.Result:
        return agent_pb2.Result(
            work_unit_id=offer.work_unit_id,
            attempt=offer.attempt,
            success=True,
            output_json=offer.input_json,
            duration_us=1000,
            cpu_time_us=500,
        )

    async def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.address)
        stub = agent_pb2_grpc.AgentServiceStub(self._channel)
        metadata = (("authorization", f"Bearer {self.token}"),) if self.token else None
        self.call = stub.Connect(self._requests(), metadata=metadata)
        self._task = asyncio.create_task(self._read())
        # Either the welcome arrives or the stream ends (refused): the reader notifies in both cases.
        await self.wait_until(lambda: self.welcome is not None or self.ended)
        if self.welcome is None:
            raise ConnectionRefusedError(f"stream ended before welcome: {await self.call.code()}")
        if self.auto_heartbeat:
            self._beats = asyncio.create_task(self._beat(self.welcome.heartbeat_interval_ms / 1000))

    async def _beat(self, interval_s: float) -> None:
        """Heartbeats at the interval the daemon asked for, like agentd (a silent agent is auto_heartbeat=False)."""
        while not self.ended:
            self.heartbeat()
            await asyncio.sleep(interval_s)

    async def _requests(self) -> Any:
        yield agent_pb2.ConnectRequest(
            hello=agent_pb2.Hello(
                node_id=self.node_id,
                region=self.region,
                kinds=list(self.kinds),
                concurrency=self.concurrency,
                version=self.version,
                handlers=list(self.handlers),
                llm_tiers=list(self.llm_tiers),
            )
        )
        while True:
            message = await self._outgoing.get()
            if message is None:
                return
            yield message

    async def _read(self) -> None:
        try:
            await self._read_messages()
        finally:
            async with self._changed:
                self.ended = True
                self._changed.notify_all()

    async def _read_messages(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for message in self.call:
                async with self._changed:
                    if message.HasField("welcome"):
                        self.welcome = message.welcome
                    self.offers.extend(message.offers)
                    self.decisions.extend(message.claim_decisions)
                    self.acks.extend(message.result_acks)
                    self.stops.extend(message.stops)
                    if message.HasField("drain"):
                        self.drained = True
                    self._changed.notify_all()
                if self.auto_claim and message.offers:
                    self.send(
                        claims=[agent_pb2.Claim(work_unit_id=o.work_unit_id, attempt=o.attempt) for o in message.offers]
                    )
                if self.auto_run:
                    for decision in message.claim_decisions:
                        if decision.granted:
                            self._run(decision)

    def _run(self, decision: agent_pb2.ClaimDecision) -> None:
        offer = next(
            o
            for o in reversed(self.offers)
            if o.work_unit_id == decision.work_unit_id and o.attempt == decision.attempt
        )
        self.executed.append(offer.work_unit_id)
        self.send(results=[self.result_for(offer)])

    def send(self, **fields: Any) -> None:
        self._outgoing.put_nowait(agent_pb2.ConnectRequest(**fields))

    def heartbeat(self, running: list[tuple[str, int]] = ()) -> None:  # type: ignore[assignment]
        self.send(
            heartbeat=agent_pb2.Heartbeat(
                in_flight=len(running),
                utilization=0.1,
                cpu_load=0.1,
                running=[agent_pb2.UnitRef(work_unit_id=u, attempt=a) for u, a in running],
            )
        )

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float = 15.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout_s)

    async def close(self) -> None:
        if self._beats is not None:
            self._beats.cancel()
        with contextlib.suppress(asyncio.QueueFull):
            self._outgoing.put_nowait(None)
        if self._task is not None:
            self.call.cancel()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._channel is not None:
            await self._channel.close()


def input_of(offer: agent_pb2.Offer) -> Any:
    return json.loads(offer.input_json)
