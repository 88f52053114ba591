"""Test doubles for agentd: a scripted krakod (a real grpc.aio AgentService on port 0 whose side
of the stream the test drives), config and offer builders."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from krako.v1 import agent_pb2, agent_pb2_grpc

from agentd.agent import Agent
from agentd.config import AgentConfig

WAIT_S = 15.0  # a deadline for conditions, never a delay

# start_agent(port, **config overrides) -> (agent, its run task)
StartAgent = Callable[..., Awaitable[tuple[Agent, "asyncio.Task[None]"]]]


class FakeDaemon(agent_pb2_grpc.AgentServiceServicer):
    """Records every ConnectRequest; answers what the test sends, plus optional auto-grant/auto-ack."""

    def __init__(
        self,
        *,
        heartbeat_interval_ms: int = 50,
        max_batch: int = 500,
        auto_grant: bool = True,
        auto_ack: bool = True,
        refuse_with: grpc.StatusCode | None = None,
    ) -> None:
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.max_batch = max_batch
        self.auto_grant = auto_grant
        self.auto_ack = auto_ack
        self.refuse_with = refuse_with
        self.requests: list[agent_pb2.ConnectRequest] = []
        self.hellos: list[agent_pb2.Hello] = []
        self.metadata: list[dict[str, str]] = []
        self.attempts = 0
        self._changed = asyncio.Condition()
        self._outgoing: asyncio.Queue[agent_pb2.ConnectResponse | None] | None = None

    # -- what tests read ---------------------------------------------------------------

    def items(self, field: str) -> list[Any]:
        return [item for request in self.requests for item in getattr(request, field)]

    @property
    def heartbeats(self) -> list[agent_pb2.Heartbeat]:
        return [request.heartbeat for request in self.requests if request.HasField("heartbeat")]

    def results_for(self, work_unit_id: str) -> list[agent_pb2.Result]:
        return [result for result in self.items("results") if result.work_unit_id == work_unit_id]

    async def wait_for(self, predicate: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
        """Wait until predicate() is truthy (re-checked on every recorded message); return its value."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(predicate)
        return predicate()

    async def send(self, response: agent_pb2.ConnectResponse) -> None:
        await self.wait_for(lambda: self._outgoing is not None)
        assert self._outgoing is not None
        await self._outgoing.put(response)

    async def offer(self, *offers: agent_pb2.Offer) -> None:
        await self.send(agent_pb2.ConnectResponse(offers=list(offers)))

    # -- the servicer --------------------------------------------------------------------

    async def Connect(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        self.attempts += 1
        await self._notify()
        first = await context.read()
        if self.refuse_with is not None:
            await context.abort(self.refuse_with, "refused by the test")
        if first is grpc.aio.EOF or not first.HasField("hello"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first message must carry hello")
        self.metadata.append({key: value for key, value in context.invocation_metadata() or ()})
        self.hellos.append(first.hello)
        await self._record(first)
        outgoing: asyncio.Queue[agent_pb2.ConnectResponse | None] = asyncio.Queue(maxsize=1000)
        await context.write(
            agent_pb2.ConnectResponse(
                welcome=agent_pb2.Welcome(
                    node_id=first.hello.node_id,
                    connection_id=f"connection-{self.attempts}",
                    heartbeat_interval_ms=self.heartbeat_interval_ms,
                    lease_ms=30_000,
                    max_batch=self.max_batch,
                    server_version="test",
                )
            )
        )
        self._outgoing = outgoing
        await self._notify()
        reader = asyncio.create_task(self._read(context, outgoing))
        try:
            while (response := await outgoing.get()) is not None:
                await context.write(response)
        finally:
            if self._outgoing is outgoing:
                self._outgoing = None
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _read(self, context: grpc.aio.ServicerContext, outgoing: asyncio.Queue[Any]) -> None:
        try:
            while (request := await context.read()) is not grpc.aio.EOF:
                await self._record(request)
                automatic = agent_pb2.ConnectResponse()
                if self.auto_grant:
                    for claim in request.claims:
                        automatic.claim_decisions.add(
                            work_unit_id=claim.work_unit_id, attempt=claim.attempt, granted=True, lease_ms=30_000
                        )
                if self.auto_ack:
                    for result in request.results:
                        automatic.result_acks.add(
                            work_unit_id=result.work_unit_id, attempt=result.attempt, accepted=True
                        )
                if automatic.ByteSize():
                    await outgoing.put(automatic)
        finally:
            await outgoing.put(None)

    async def _record(self, request: agent_pb2.ConnectRequest) -> None:
        self.requests.append(request)
        await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()


class DaemonServer:
    """Starts FakeDaemons on real ports; restartable on the same port."""

    def __init__(self) -> None:
        self._servers: list[grpc.aio.Server] = []

    async def start(self, daemon: FakeDaemon, port: int = 0) -> int:
        server = grpc.aio.server()
        agent_pb2_grpc.add_AgentServiceServicer_to_server(daemon, server)
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        assert bound, f"could not bind port {port}"
        await server.start()
        self._servers.append(server)
        return bound

    async def stop_all(self) -> None:
        for server in self._servers:
            await server.stop(grace=None)
        self._servers.clear()


def make_config(port: int, state_dir: Path, **overrides: Any) -> AgentConfig:
    settings: dict[str, Any] = {
        "server": f"127.0.0.1:{port}",
        "node_id": "node-1",
        "state_dir": state_dir,
        "concurrency": 2,
        "backoff_base_s": 0.02,
        "backoff_cap_s": 0.2,
        "shutdown_grace_s": 2.0,
        "flush_timeout_s": 0.5,
        "welcome_timeout_s": 5.0,
    }
    settings.update(overrides)
    return AgentConfig(**settings)


def offer(
    work_unit_id: str, handler: str = "echo", input_json: str = "{}", *, attempt: int = 1, **fields: Any
) -> agent_pb2.Offer:
    return agent_pb2.Offer(
        work_unit_id=work_unit_id, attempt=attempt, kind=fields.pop("kind", "cpu"), handler=handler,
        input_json=input_json, tenant_id="tenant-a", **fields,
    )  # fmt: skip
