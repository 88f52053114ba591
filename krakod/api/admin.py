"""AdminService: nodes, drain, capacity, money and verification, for operators."""

from __future__ import annotations

import grpc
from krako.v1 import admin_pb2, admin_pb2_grpc

from krakod.api.auth import Authenticator
from krakod.api.convert import node_to_pb
from krakod.api.errors import RequestError, invalid, unary
from krakod.budgets import BudgetBook
from krakod.capacity_runtime import CapacityRuntime
from krakod.dispatch import Dispatcher, now_ms
from krakod.log import EventLog, NewEvent, canonical_json
from krakod.projections.service import ProjectionService, WalletView


class AdminApi(admin_pb2_grpc.AdminServiceServicer):
    def __init__(
        self,
        *,
        log: EventLog,
        dispatcher: Dispatcher,
        auth: Authenticator,
        capacity: CapacityRuntime,
        projections: ProjectionService,
        budgets: BudgetBook,
    ) -> None:
        self.log = log
        self.dispatcher = dispatcher
        self.auth = auth
        self.capacity = capacity
        self.projections = projections
        self.budgets = budgets

    def _trust(self, node_id: str) -> str:
        score = self.projections.trust_scores().get(node_id)
        return "" if score is None else str(score)

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
        kind = "node.drain.lifted" if request.undo else "node.drain.requested"
        await self.log.append(NewEvent(type=kind, source="krakod:admin", payload={"node_id": request.node_id}))
        self.dispatcher.drain(request.node_id, undo=request.undo)
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
            projection_lag_events=self.projections.lag(),
            log_seq=self.log.last_seq,
        )

    # -- money -----------------------------------------------------------------------------

    def _wallet_pb(self, view: WalletView | None, tenant_id: str) -> admin_pb2.Wallet:
        reserved = self.budgets.snapshot(tenant_id)["reserved"]
        if view is None:
            return admin_pb2.Wallet(
                tenant_id=tenant_id,
                balance_usd="0.000000",
                credited_usd="0.000000",
                debited_usd="0.000000",
                reserved_usd=reserved,
            )
        return admin_pb2.Wallet(
            tenant_id=view.tenant_id,
            balance_usd=str(view.balance_usd),
            credited_usd=str(view.credited_usd),
            debited_usd=str(view.debited_usd),
            reserved_usd=reserved,
        )

    @unary
    async def CreditWallet(
        self, request: admin_pb2.CreditWalletRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreditWalletResponse:
        self.auth.admin(context)
        try:
            event = self.projections.credit_event(request.tenant_id, request.amount_usd, request.client_key)
        except ValueError as exc:
            raise invalid(str(exc)) from None
        result = await self.log.append(event)
        assert result.event is not None  # no guard: the event is either new or the first with its key
        # Answer with the wallet as of this credit: wait (bounded) for the billing projection to fold it.
        await self.projections.wait_for_position(result.event.seq, timeout_s=10)
        views = await self.projections.wallets(request.tenant_id)
        return admin_pb2.CreditWalletResponse(
            wallet=self._wallet_pb(views[0] if views else None, request.tenant_id),
            duplicate=not result.created,
            seq=result.event.seq,
        )

    @unary
    async def ListWallets(
        self, request: admin_pb2.ListWalletsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListWalletsResponse:
        self.auth.admin(context)
        views = await self.projections.wallets(request.tenant_id or None)
        return admin_pb2.ListWalletsResponse(wallets=[self._wallet_pb(v, v.tenant_id) for v in views])

    @unary
    async def ListLedger(
        self, request: admin_pb2.ListLedgerRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListLedgerResponse:
        self.auth.admin(context)
        if request.limit > 10_000:
            raise invalid(f"limit {request.limit} is above the maximum of 10000")
        lines, next_after = await self.projections.ledger(request.tenant_id or None, request.after_id, request.limit)
        return admin_pb2.ListLedgerResponse(
            lines=[admin_pb2.LedgerLine(line_json=canonical_json(line)) for line in lines], next_after_id=next_after
        )

    @unary
    async def CheckBilling(
        self, request: admin_pb2.CheckBillingRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CheckBillingResponse:
        self.auth.admin(context)
        await self.projections.wait_for_position(self.log.last_seq, timeout_s=30)
        report = await self.projections.check()
        return admin_pb2.CheckBillingResponse(
            findings=[admin_pb2.Finding(kind=f.kind, detail=f.detail) for f in report.findings],
            checked_through_seq=report.checked_through_seq,
        )

    @unary
    async def VerifyReplay(
        self, request: admin_pb2.VerifyReplayRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.VerifyReplayResponse:
        self.auth.admin(context)
        await self.projections.wait_for_position(self.log.last_seq, timeout_s=30)
        report = await self.projections.verify_replay()
        return admin_pb2.VerifyReplayResponse(
            digests=[
                admin_pb2.ProjectionDigest(
                    projection=d.projection,
                    live_sha256=d.live_sha256,
                    replay_sha256=d.replay_sha256,
                    identical=d.identical,
                )
                for d in report.digests
            ],
            identical=report.identical,
            through_seq=report.through_seq,
        )
