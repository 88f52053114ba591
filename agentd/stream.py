"""The reconnecting AgentService.Connect client.

One session = one stream: hello, wait for welcome, then four concurrent parts until one
ends — the writer (coalesced outgoing batches), the reader (daemon messages to the work
loop), the heartbeat ticker, and the outbox resend. A broken stream or a daemon that is
down leads to a new session after an exponential backoff with jitter; a successful
welcome resets the backoff. Refusals that retrying cannot fix (bad token, refused hello)
end the client with AgentRejected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import grpc
import grpc.aio
from krako.v1 import agent_pb2, agent_pb2_grpc

from agentd.backoff import Backoff
from agentd.batching import Outgoing, Uplink
from agentd.config import AgentConfig
from agentd.outbox import Outbox
from agentd.work import WorkLoop

logger = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_INTERVAL_MS = 5_000
DEFAULT_MAX_BATCH = 500
MAX_RECEIVE_MESSAGE_BYTES = 64 * 1024 * 1024
# Statuses that mean "this agent is not allowed in": retrying with the same config cannot help.
FATAL_STATUS_CODES = (
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
)


class StreamBroken(Exception):
    """The stream ended or misbehaved; the client reconnects."""


class ConnectionGaveUp(Exception):
    """max_connect_attempts consecutive sessions failed."""


class AgentRejected(Exception):
    """The daemon refused this agent (bad token, refused hello); the message says why."""


class StreamClient:
    """Keeps one live stream to krakod while ``stop`` is not set."""

    def __init__(
        self,
        *,
        config: AgentConfig,
        work: WorkLoop,
        uplink: Uplink,
        outbox: Outbox,
        hello: Callable[[], agent_pb2.Hello],
        backoff: Backoff | None = None,
    ) -> None:
        self._config = config
        self._work = work
        self._uplink = uplink
        self._outbox = outbox
        self._hello = hello
        self._backoff = backoff or Backoff(base_s=config.backoff_base_s, cap_s=config.backoff_cap_s)
        self.connected = asyncio.Event()
        self.welcome: agent_pb2.Welcome | None = None
        self.sessions = 0  # welcomed sessions so far (observability and tests)

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, and reconnect, until ``stop`` is set. Raises ConnectionGaveUp or AgentRejected."""
        while not stop.is_set():
            welcomed_before = self.sessions
            try:
                await self._session(stop)
            except grpc.aio.AioRpcError as error:
                # Only a refusal of the hello itself is final; a live stream that breaks is retried.
                if error.code() in FATAL_STATUS_CODES and self.sessions == welcomed_before:
                    raise AgentRejected(f"krakod refused the agent: {error.code().name}: {error.details()}") from error
                logger.warning("stream to %s failed: %s %s", self._config.server, error.code().name, error.details())
            except (StreamBroken, TimeoutError, OSError) as error:
                logger.warning("stream to %s ended: %s", self._config.server, error or type(error).__name__)
            if stop.is_set():
                return
            if self.sessions > welcomed_before:
                self._backoff.reset()
            await self._pause(stop)

    async def _pause(self, stop: asyncio.Event) -> None:
        limit = self._config.max_connect_attempts
        if limit is not None and self._backoff.failures + 1 >= limit:
            raise ConnectionGaveUp(f"no stream to {self._config.server} after {limit} consecutive attempts")
        delay_s = self._backoff.next_delay_s()
        logger.info("reconnecting to %s in %.2f s", self._config.server, delay_s)
        # Waiting on `stop` (not sleeping) lets shutdown interrupt the backoff at once.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay_s)

    async def _session(self, stop: asyncio.Event) -> None:
        channel = self._channel()
        call = agent_pb2_grpc.AgentServiceStub(channel).Connect(metadata=self._metadata())
        outgoing = Outgoing(maxsize=self._config.outgoing_queue_max)
        tasks: list[asyncio.Task[None]] = []
        try:
            await call.write(agent_pb2.ConnectRequest(hello=self._hello()))
            first = await asyncio.wait_for(call.read(), self._config.welcome_timeout_s)
            if first is grpc.aio.EOF or not first.HasField("welcome"):
                raise StreamBroken("the daemon's first message was not a welcome")
            self._welcomed(first.welcome)
            self._uplink.attach(outgoing)
            max_batch = first.welcome.max_batch or DEFAULT_MAX_BATCH
            interval_s = (first.welcome.heartbeat_interval_ms or DEFAULT_HEARTBEAT_INTERVAL_MS) / 1000.0
            tasks = [
                asyncio.create_task(self._write(call, outgoing, max_batch), name="agentd-writer"),
                asyncio.create_task(self._read(call, first), name="agentd-reader"),
                asyncio.create_task(self._heartbeats(interval_s), name="agentd-heartbeats"),
                asyncio.create_task(stop.wait(), name="agentd-stop"),  # type: ignore[arg-type]
            ]
            waited = list(tasks)  # the resend may finish early; that does not end the session
            tasks.append(asyncio.create_task(self._resend_outbox(), name="agentd-resend"))
            done, _ = await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError):
                    await call.done_writing()
                return
            for task in done:
                error = task.exception()
                if error is not None:
                    raise error
            raise StreamBroken("the stream ended")
        finally:
            self.connected.clear()
            self._uplink.detach()
            outgoing.close()
            self._work.on_disconnect()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            call.cancel()
            await channel.close(grace=None)

    def _welcomed(self, welcome: agent_pb2.Welcome) -> None:
        self.welcome = welcome
        self.sessions += 1
        self.connected.set()
        logger.info(
            "connected to %s as %s (connection %s, heartbeat %d ms, max batch %d)",
            self._config.server, welcome.node_id or self._config.node_id, welcome.connection_id,
            welcome.heartbeat_interval_ms, welcome.max_batch,
        )  # fmt: skip

    async def _write(self, call: grpc.aio.StreamStreamCall, outgoing: Outgoing, max_batch: int) -> None:
        while True:
            for request in await outgoing.next_requests(max_batch=max_batch):
                await call.write(request)

    async def _read(self, call: grpc.aio.StreamStreamCall, first: agent_pb2.ConnectResponse) -> None:
        first.ClearField("welcome")
        await self._work.handle(first)  # the welcome may carry offers too
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                raise StreamBroken("the daemon closed the stream")
            await self._work.handle(response)

    async def _heartbeats(self, interval_s: float) -> None:
        while True:
            await self._uplink.send(self._work.heartbeat())
            self._work.expire_claims()
            await asyncio.sleep(interval_s)  # a fixed cadence, not a wait for some condition

    async def _resend_outbox(self) -> None:
        """Everything not yet acknowledged goes out again on each new stream."""
        results = await self._outbox.load_all()
        if results:
            logger.info("resending %d unacknowledged results", len(results))
        for result in results:
            if not await self._uplink.send(result):
                return

    def _channel(self) -> grpc.aio.Channel:
        options = [("grpc.max_receive_message_length", MAX_RECEIVE_MESSAGE_BYTES)]
        if self._config.tls_ca is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates=self._config.tls_ca.read_bytes())
            return grpc.aio.secure_channel(self._config.server, credentials, options=options)
        return grpc.aio.insecure_channel(self._config.server, options=options)

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        if not self._config.token:
            return ()
        return (("authorization", f"Bearer {self._config.token}"),)
