"""The krakod daemon: wires the log, the unit table, dispatch and the gRPC services together.

Start order: lock the data dir → open the log → replay it into the unit table →
start dispatch → serve (health SERVING). Shutdown order (SIGTERM/SIGINT):
health NOT_SERVING → stop accepting agent streams and RPCs (grace period) →
stop dispatch → commit what is queued and close the log → release the lock.
`stop()` is safe to call twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from krako.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    agent_pb2,
    agent_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
)

from krakod.api.admin import AdminApi
from krakod.api.agent import AgentApi
from krakod.api.auth import Authenticator
from krakod.api.events import EventsApi
from krakod.api.gateway import Gateway
from krakod.budgets import BudgetBook, BudgetConfig
from krakod.capacity_runtime import CapacityRuntime
from krakod.config import BUILTIN_CPU_HANDLERS, Config
from krakod.dispatch import Dispatcher
from krakod.log import LOG_FILE_NAME, DataDirLock, Event, EventLog, replay_all
from krakod.money import MoneyRuntime
from krakod.projections.service import ProjectionService
from krakod.scheduler import TrustView
from krakod.units import UnitTable

log = logging.getLogger(__name__)
SERVICE_NAMES = (
    gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name,
    agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
    events_pb2.DESCRIPTOR.services_by_name["EventService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)
SHUTDOWN_GRACE_S = 5.0


class Daemon:
    def __init__(self, config: Config) -> None:
        config.validate()
        self.config = config
        self.data_dir = Path(config.data_dir)
        self.lock = DataDirLock(self.data_dir)
        self.log = EventLog(self.data_dir / LOG_FILE_NAME, synchronous=config.synchronous)
        self.units = UnitTable()
        self.handlers: set[str] = set(BUILTIN_CPU_HANDLERS) | set(config.extra_handlers)
        self.dispatcher = Dispatcher(
            config=config,
            log=self.log,
            units=self.units,
            placement=config.placement,
        )
        self.capacity = CapacityRuntime(
            options=config.capacity, log=self.log, dispatcher=self.dispatcher, data_dir=self.data_dir
        )
        self.dispatcher.on_queue_wait = self.capacity.waits.record
        self.dispatcher.queue_wait_p95_ms = lambda: int(self.capacity.waits.p95_seconds(60_000) * 1000)
        self.projections = ProjectionService(synchronous=config.synchronous)
        self.budgets = BudgetBook(config.budget or BudgetConfig.from_env())
        self.money = MoneyRuntime(log=self.log, units=self.units, budgets=self.budgets, dispatcher=self.dispatcher)
        self.dispatcher.trust = self._trust_view
        self.auth = Authenticator(config.auth)
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self._stopped = False
        self.agents: AgentApi | None = None
        self._tls: tuple[bytes, bytes] | None = None
        if config.tls_cert is not None and config.tls_key is not None:
            self._tls = (Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())

    def _trust_view(self) -> TrustView:
        """Trust as the trust projection last computed it: the scheduler reads it, never computes it."""
        return TrustView(
            scores={node: float(score) for node, score in self.projections.trust_scores().items()},
            quarantined=frozenset(self.projections.quarantined()),
        )

    def _on_event(self, event: Event) -> None:
        """Daemon-wide facts kept from the log besides units: handlers agents can run."""
        self.units.apply(event)
        self.budgets.apply(event)
        self.capacity.on_event(event)
        if event.type == "node.drain.requested":
            self.dispatcher.drained.add(str(event.payload.get("node_id")))
        elif event.type == "node.drain.lifted":
            self.dispatcher.drained.discard(str(event.payload.get("node_id")))
        elif event.type == "node.registered":
            self.handlers.update(event.payload.get("handlers", []))

    async def start(self) -> int:
        """Open everything and start serving; returns the bound port."""
        self.lock.acquire()
        try:
            await self.log.open()
            await replay_all(self.log, self._on_event)
            self.log.add_stager(self._on_event)
            await self.projections.start(self.log, self.data_dir)
            pricing = await self.projections.pricing_event()
            if pricing is not None:
                await self.log.append(pricing)
            await self.money.recover()
            self.dispatcher.recover()
            self.dispatcher.start()
            self.port = await self._serve()
            self.capacity.start(self.port)
        except BaseException:
            await self._cleanup()
            raise
        log.info("krakod serving on %s (port %d), log at seq %d", self.config.listen, self.port, self.log.last_seq)
        return self.port

    async def _serve(self) -> int:
        limits = self.config.limits
        options = [
            ("grpc.max_receive_message_length", limits.max_message_bytes),
            ("grpc.max_send_message_length", limits.max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ]
        server = grpc.aio.server(options=options)
        self.agents = AgentApi(config=self.config, dispatcher=self.dispatcher, auth=self.auth, append=self.log.append)
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(
            Gateway(
                config=self.config,
                log=self.log,
                units=self.units,
                dispatcher=self.dispatcher,
                auth=self.auth,
                known_handlers=lambda: self.handlers,
                admission=self.capacity.admission,
            ),
            server,
        )
        agent_pb2_grpc.add_AgentServiceServicer_to_server(self.agents, server)
        events_pb2_grpc.add_EventServiceServicer_to_server(
            EventsApi(config=self.config, log=self.log, auth=self.auth), server
        )
        admin_pb2_grpc.add_AdminServiceServicer_to_server(
            AdminApi(
                log=self.log,
                dispatcher=self.dispatcher,
                auth=self.auth,
                capacity=self.capacity,
                projections=self.projections,
                budgets=self.budgets,
            ),
            server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server,
        )
        if self._tls is not None:
            port = server.add_secure_port(self.config.listen, grpc.ssl_server_credentials([self._tls]))
        else:
            port = server.add_insecure_port(self.config.listen)
        await server.start()
        self.server = server
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return port

    async def stop(self) -> None:
        """Stop intake, finish in-flight appends, close the database. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        await self.health.enter_graceful_shutdown()
        if self.agents is not None:
            self.agents.stop_accepting()
        if self.server is not None:
            await self.server.stop(SHUTDOWN_GRACE_S)
        await self._cleanup()
        log.info("krakod stopped at seq %d", self.log.last_seq)

    async def _cleanup(self) -> None:
        await self.capacity.stop()
        await self.dispatcher.stop()
        await self.money.stop()
        with contextlib.suppress(Exception):
            await self.projections.stop()
        with contextlib.suppress(Exception):
            await self.log.close()
        self.lock.release()


async def run_until_signalled(daemon: Daemon, ready: asyncio.Event | None = None) -> None:
    import signal

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await daemon.start()
    if ready is not None:
        ready.set()
    failed = asyncio.create_task(daemon.log.wait_failed())
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait({failed, waiter}, return_when=asyncio.FIRST_COMPLETED)
    failed.cancel()
    waiter.cancel()
    await daemon.stop()
    if daemon.log.failed is not None:
        raise SystemExit(f"krakod: the event log failed: {daemon.log.failed}")
