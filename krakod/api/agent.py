"""AgentService: one bidirectional stream per agent (see docs/agent-protocol.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from krako.v1 import agent_pb2, agent_pb2_grpc

from krakod.api.auth import Authenticator, AuthError
from krakod.config import Config
from krakod.dispatch import Dispatcher
from krakod.log import LogClosed, NewEvent
from krakod.scheduler import NodeHello

log = logging.getLogger(__name__)
VERSION = "3.0.0"
MAX_CONCURRENT_MESSAGES = 32  # agent messages being processed at once per stream
MAX_CONCURRENCY = 4096


class AgentSession:
    """The daemon's side of one agent stream: a bounded outbound queue, coalesced into batched messages."""

    def __init__(self, node_id: str, connection_id: str, max_queue: int, max_batch: int) -> None:
        self.node_id = node_id
        self.connection_id = connection_id
        self.max_batch = max_batch
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=max_queue)
        self.closed = asyncio.Event()
        self.close_reason = ""

    def send(self, item: Any) -> bool:
        """Queue an item (Offer, ClaimDecision, ResultAck, StopUnit, Drain). A full queue closes the stream."""
        if self.closed.is_set():
            return False
        try:
            self.queue.put_nowait(item)
            return True
        except asyncio.QueueFull:
            self.close("outbound queue full: the agent is not reading")
            return False

    def close(self, reason: str) -> None:
        if not self.closed.is_set():
            self.close_reason = reason
            self.closed.set()

    def build(self, first: Any) -> agent_pb2.ConnectResponse:
        message = agent_pb2.ConnectResponse()
        items = [first]
        while len(items) < self.max_batch * 4 and not self.queue.empty():
            items.append(self.queue.get_nowait())
        for item in items:
            if isinstance(item, agent_pb2.Offer):
                message.offers.append(item)
            elif isinstance(item, agent_pb2.ClaimDecision):
                message.claim_decisions.append(item)
            elif isinstance(item, agent_pb2.ResultAck):
                message.result_acks.append(item)
            elif isinstance(item, agent_pb2.StopUnit):
                message.stops.append(item)
            elif isinstance(item, agent_pb2.Drain):
                message.drain.CopyFrom(item)
        return message


class AgentApi(agent_pb2_grpc.AgentServiceServicer):
    def __init__(
        self,
        *,
        config: Config,
        dispatcher: Dispatcher,
        auth: Authenticator,
        append: Callable[[NewEvent], Awaitable[Any]],
    ) -> None:
        self.config = config
        self.dispatcher = dispatcher
        self.auth = auth
        self.append = append
        self.sessions: dict[str, AgentSession] = {}
        self._accepting = True

    def stop_accepting(self) -> None:
        self._accepting = False
        for session in list(self.sessions.values()):
            session.close("krakod is shutting down")

    async def Connect(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        try:
            self.auth.agent(context)
        except AuthError as exc:
            await context.abort(exc.code, exc.message)
        if not self._accepting:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "krakod is shutting down")
        first = await context.read()
        if first is grpc.aio.EOF:
            return
        hello = self._check_hello(first)
        if isinstance(hello, str):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, hello)
            return
        session = AgentSession(
            hello.node_id,
            str(uuid.uuid4()),
            self.config.limits.agent_outbound_queue,
            self.config.limits.max_stream_batch,
        )
        try:
            registered = self.dispatcher.node_joined(self._node_hello(hello, session.connection_id), session)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return
        self.sessions[hello.node_id] = session
        try:
            await self.append(NewEvent(type="node.registered", source=f"agentd:{hello.node_id}", payload=registered))
        except LogClosed:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "krakod is shutting down")
        await context.write(
            agent_pb2.ConnectResponse(
                welcome=agent_pb2.Welcome(
                    node_id=hello.node_id,
                    connection_id=session.connection_id,
                    heartbeat_interval_ms=self.config.timing.heartbeat_interval_ms,
                    lease_ms=self.config.timing.lease_ms,
                    max_batch=self.config.limits.max_stream_batch,
                    server_version=VERSION,
                )
            )
        )
        for stop in self.dispatcher.extend_leases(hello.node_id, hello.running):
            session.send(stop)
        reader = asyncio.create_task(self._read_loop(context, session), name=f"agent-read-{hello.node_id}")
        writer = asyncio.create_task(self._write_loop(context, session), name=f"agent-write-{hello.node_id}")
        closed = asyncio.create_task(session.closed.wait())
        try:
            await asyncio.wait({reader, writer, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, writer, closed):
                task.cancel()
            await asyncio.gather(reader, writer, closed, return_exceptions=True)
            await self._disconnected(session)

    def _check_hello(self, message: agent_pb2.ConnectRequest) -> agent_pb2.Hello | str:
        if not message.HasField("hello"):
            return "the first message on the stream must carry hello"
        hello = message.hello
        if not hello.node_id or len(hello.node_id) > 128:
            return "hello.node_id is required (at most 128 characters)"
        unknown = [k for k in hello.kinds if k not in ("cpu", "llm_pod")]
        if not hello.kinds or unknown:
            return f"hello.kinds must name cpu and/or llm_pod (got {list(hello.kinds)})"
        if not 1 <= hello.concurrency <= MAX_CONCURRENCY:
            return f"hello.concurrency must be between 1 and {MAX_CONCURRENCY}"
        return hello

    def _node_hello(self, hello: agent_pb2.Hello, connection_id: str) -> NodeHello:
        return NodeHello(
            node_id=hello.node_id,
            region=hello.region or "default",
            kinds=frozenset(hello.kinds),
            concurrency=hello.concurrency,
            version=hello.version,
            handlers=frozenset(hello.handlers),
            llm_tiers=frozenset(hello.llm_tiers),
            llm_models=frozenset(hello.llm_models),
            llm_max_concurrency=hello.llm_max_concurrency,
            llm_provider=hello.llm_provider,
            stability_class=hello.stability_class or "community",
            connection_id=connection_id,
        )

    async def _disconnected(self, session: AgentSession) -> None:
        if self.sessions.get(session.node_id) is session:
            del self.sessions[session.node_id]
        if self.dispatcher.node_left(session.node_id, session):
            with contextlib.suppress(LogClosed):
                await self.append(
                    NewEvent(
                        type="node.unavailable",
                        source="krakod:agents",
                        payload={
                            "node_id": session.node_id,
                            "reason": session.close_reason or "disconnected",
                            "connection_id": session.connection_id,
                        },
                    )
                )

    async def _write_loop(self, context: grpc.aio.ServicerContext, session: AgentSession) -> None:
        while True:
            first = await session.queue.get()
            await context.write(session.build(first))

    async def _read_loop(self, context: grpc.aio.ServicerContext, session: AgentSession) -> None:
        limit = asyncio.Semaphore(MAX_CONCURRENT_MESSAGES)
        pending: set[asyncio.Task[None]] = set()
        try:
            while True:
                message = await context.read()
                if message is grpc.aio.EOF:
                    session.close("agent closed the stream")
                    return
                if message.HasField("heartbeat") and self.dispatcher.links.get(session.node_id) is session:
                    for stop in self.dispatcher.heartbeat(session.node_id, message.heartbeat):
                        session.send(stop)
                if message.claims or message.started or message.results:
                    await limit.acquire()
                    task = asyncio.create_task(self._process(session, message))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                    task.add_done_callback(lambda _: limit.release())
        finally:
            for task in pending:
                task.cancel()

    async def _process(self, session: AgentSession, message: agent_pb2.ConnectRequest) -> None:
        node_id = session.node_id
        batch = self.config.limits.max_stream_batch
        try:
            # An agent that ignores Welcome.max_batch is served in chunks of that size, never all at once.
            for start in range(0, len(message.claims), batch):
                for decision in await self.dispatcher.handle_claims(node_id, message.claims[start : start + batch]):
                    session.send(decision)
            # A start reported together with its result adds nothing the result does not say: the started
            # event is logged for units still running when the agent reports them, not for instant ones.
            finished = {(r.work_unit_id, r.attempt) for r in message.results}
            started = [s for s in message.started if (s.work_unit_id, s.attempt) not in finished]
            for start in range(0, len(started), batch):
                await self.dispatcher.handle_started(node_id, started[start : start + batch])
            for start in range(0, len(message.results), batch):
                for ack in await self.dispatcher.handle_results(node_id, message.results[start : start + batch]):
                    session.send(ack)
        except LogClosed:
            session.close("krakod is shutting down")
        except Exception:
            log.exception("processing a message of node %s failed", node_id)
            session.close("internal error")
