"""The Agent: wires executors, the outbox, the work loop and the stream, and orders shutdown.

Shutdown order (``shutdown()``, safe to call twice): stop claiming → let running
attempts finish (``shutdown_grace_s``) → stop the rest → wait for the outbox to be
acknowledged while connected (``flush_timeout_s``) → close the stream → close executors
and the outbox. Anything still unacknowledged stays on disk and is resent next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from krako.v1 import agent_pb2

from agentd.batching import Uplink
from agentd.config import AgentConfig
from agentd.executors.base import Executor
from agentd.executors.builtins import builtin_handlers
from agentd.executors.cpu import CpuExecutor
from agentd.executors.llm import LlmExecutor
from agentd.executors.providers import make_provider
from agentd.outbox import Outbox
from agentd.registry import RegisteredHandler, load_handler_modules
from agentd.stream import StreamClient
from agentd.work import WorkLoop

logger = logging.getLogger(__name__)


def load_handlers(modules: tuple[str, ...]) -> dict[str, RegisteredHandler]:
    """Built-ins plus the user modules' handlers; HandlerLoadError explains any mistake."""
    builtins = builtin_handlers()
    return builtins | load_handler_modules(modules, reserved=builtins)


class Agent:
    """One agentd. ``await agent.run()`` until ``await agent.shutdown()``."""

    def __init__(self, config: AgentConfig) -> None:
        # Handlers and the provider are checked here, before anything connects.
        self.config = config
        self._lanes: dict[str, tuple[Executor, int]] = {}
        if "cpu" in config.kinds:
            cpu = CpuExecutor(handlers=load_handlers(config.handler_modules), max_workers=config.concurrency)
            self._lanes["cpu"] = (cpu, config.concurrency)
        if "llm_pod" in config.kinds:
            llm = LlmExecutor(provider=make_provider(config.llm.provider), settings=config.llm)
            self._lanes["llm_pod"] = (llm, config.llm.max_concurrency)
        self._uplink = Uplink()
        self._stop = asyncio.Event()
        self._stopped = asyncio.Event()
        self._shutting_down = False
        self.ready = asyncio.Event()  # set once the outbox is open and the stream client runs
        self.outbox: Outbox | None = None
        self.work: WorkLoop | None = None
        self.stream: StreamClient | None = None

    @property
    def handlers(self) -> list[str]:
        cpu = self._lanes.get("cpu")
        return cpu[0].handler_names() if cpu else []

    def hello(self) -> agent_pb2.Hello:
        llm = self.config.llm
        serves_llm = "llm_pod" in self._lanes
        return agent_pb2.Hello(
            node_id=self.config.node_id,
            region=self.config.region,
            kinds=list(self.config.kinds),
            concurrency=self.config.concurrency,
            version=self.config.version,
            handlers=self.handlers,
            llm_tiers=list(llm.tiers) if serves_llm else [],
            llm_models=list(llm.models) if serves_llm else [],
            llm_max_concurrency=llm.max_concurrency if serves_llm else 0,
            llm_provider=llm.provider if serves_llm else "",
            stability_class=self.config.stability_class,
            running=self.work.running_or_unacknowledged() if self.work else [],
        )

    async def run(self) -> None:
        """Run until shutdown; raises ConnectionGaveUp / AgentRejected / OutboxError."""
        try:
            self.outbox = await Outbox.open(self.config.outbox_path)
            self.work = WorkLoop(
                lanes=self._lanes,
                outbox=self.outbox,
                send=self._uplink.send,
                claim_timeout_s=self.config.claim_timeout_s,
            )
            self.stream = StreamClient(
                config=self.config, work=self.work, uplink=self._uplink, outbox=self.outbox, hello=self.hello
            )
            logger.info("agent %s starting; %d unacknowledged results on disk", self.config.node_id, len(self.outbox))
            self.ready.set()
            await self.stream.run(self._stop)
        finally:
            await self._close()

    async def shutdown(self) -> None:
        """Ordered, bounded shutdown (see module docstring). Returns when run() has finished."""
        if self._shutting_down:
            await self._stopped.wait()
            return
        self._shutting_down = True
        if self.work is not None and self.stream is not None and self.outbox is not None:
            self.work.drain()
            if not await self.work.wait_idle(self.config.shutdown_grace_s):
                logger.warning("units still running after %.1f s; stopping them", self.config.shutdown_grace_s)
                await self.work.cancel_all()
            if self.stream.connected.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.outbox.wait_empty(), self.config.flush_timeout_s)
        self._stop.set()
        if self.ready.is_set():
            await self._stopped.wait()
        else:
            self._stopped.set()

    async def _close(self) -> None:
        self._stop.set()
        if self.work is not None:
            await self.work.cancel_all()
        for executor, _ in self._lanes.values():
            await executor.close()
        if self.outbox is not None:
            await self.outbox.close()
        self._stopped.set()
        logger.info("agent %s stopped", self.config.node_id)
