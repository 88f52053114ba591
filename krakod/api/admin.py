"""AdminService: nodes, drain, capacity, money and verification, for operators."""

from __future__ import annotations

from typing import Any, Protocol

import grpc
from krako.v1 import admin_pb2, admin_pb2_grpc

from krakod.api.auth import Authenticator
from krakod.api.convert import node_to_pb
from krakod.api.errors import RequestError, invalid, unary
from krakod.capacity_runtime import CapacityRuntime
from krakod.dispatch import Dispatcher, now_ms
from krakod.log import EventLog, NewEvent


class AdminBackend(Protocol):
    """The parts of the daemon AdminService reads: projections and capacity plug in here."""

    def trust_of(self, node_id: str) -> str: ...

    def circuit_of(self, node_id: str) -> str: ...


def unavailable(what: str) -> RequestError:
    return RequestError(grpc.StatusCode.UNIMPLEMENTED, f"{what} is not available in this krakod")


class AdminApi(admin_pb2_grpc.AdminServiceServicer):
    def __init__(
        self,
        *,
        log: EventLog,
        dispatcher: Dispatcher,
        auth: Authenticator,
        capacity: CapacityRuntime,
        backend: Any = None,
    ) -> None:
        self.log = log
        self.dispatcher = dispatcher
        self.auth = auth
        self.capacity = capacity
        self.backend = backend

    def _trust(self, node_id: str) -> str:
        return self.backend.trust_of(node_id) if self.backend is not None else ""

    def _circuit(self, node_id: str) -> str:
        return str(self.dispatcher.breakers.state(node_id, now_ms()).value)

    @unary
    async def ListNodes(
        self, request: admin_pb2.ListNodesRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListNodesResponse:
        self.auth.admin(context)
        now = now_ms()
        nodes = list(self.dispatcher.registry.nodes())
        return admin_pb2.ListNodesResponse(
            nodes=[node_to_pb(n, now, self._trust(n.node_id), self._circuit(n.node_id)) for n in nodes]
        )

    @unary
    async def DrainNode(
        self, request: admin_pb2.DrainNodeRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DrainNodeResponse:
        self.auth.admin(context)
        if not request.node_id:
            raise invalid("node_id is required")
        if request.node_id not in self.dispatcher.registry:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"no node {request.node_id!r}")
        await self.log.append(
            NewEvent(type="node.drain.requested", source="krakod:admin", payload={"node_id": request.node_id})
        )
        self.dispatcher.drain(request.node_id)
        node = self.dispatcher.registry[request.node_id]
        return admin_pb2.DrainNodeResponse(
            node=node_to_pb(node, now_ms(), self._trust(node.node_id), self._circuit(node.node_id))
        )

    @unary
    async def GetCapacity(
        self, request: admin_pb2.GetCapacityRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetCapacityResponse:
        self.auth.admin(context)
        live = self.capacity.metrics_now()
        state = self.capacity.view.state()
        return admin_pb2.GetCapacityResponse(
            mode=self.capacity.view.mode().value,
            replicas=state.replicas,
            concurrency_per_replica=self.capacity.options.controller.concurrency_per_replica,
            queue_depth=live.queue_depth,
            wait_p95_seconds=live.wait_p95_s,
            utilization=live.utilization,
            recent=[
                admin_pb2.CapacityWindow(
                    window=w.window,
                    mode=w.mode.value,
                    replicas=w.replicas,
                    queue_depth=w.queue_depth,
                    wait_p95_seconds=w.wait_p95_s,
                    utilization=w.utilization,
                )
                for w in self.capacity.controller.recent()
            ],
            congestion=self.dispatcher.congestion_mode(),
        )
