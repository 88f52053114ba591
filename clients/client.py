"""The Python client of Krako: a thin, typed layer over the krako.v1 gRPC services.

    from clients.client import KrakoClient
    with KrakoClient("127.0.0.1:7420", token="...") as krako:
        unit_id = krako.submit(kind="cpu", handler="echo", input={"hello": "world"}).work_unit_id
        final = krako.wait(unit_id)

Every gRPC failure surfaces as KrakoError carrying the status code and the server's message.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from krako.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    events_pb2,
    events_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
)

PRIORITIES = {
    "p0": common_pb2.PRIORITY_P0,
    "p1": common_pb2.PRIORITY_P1,
    "p2": common_pb2.PRIORITY_P2,
    "p3": common_pb2.PRIORITY_P3,
}
TERMINAL_STATES = frozenset(
    {
        common_pb2.WORK_UNIT_STATE_COMPLETED,
        common_pb2.WORK_UNIT_STATE_FAILED,
        common_pb2.WORK_UNIT_STATE_CANCELLED,
        common_pb2.WORK_UNIT_STATE_REJECTED,
    }
)
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


class KrakoError(Exception):
    """A failed call: `code` is the gRPC status code, `message` the server's explanation."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


def _wrap(exc: grpc.RpcError) -> KrakoError:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return KrakoError(code, details or "")


def state_name(state: int) -> str:
    return common_pb2.WorkUnitState.Name(state).removeprefix("WORK_UNIT_STATE_").lower()


def make_spec(
    *,
    kind: str,
    handler: str = "",
    input: Any = None,
    input_json: str | None = None,
    priority: str = "p2",
    tenant: str = "",
    session: str = "",
    key: str = "",
    idempotent: bool = False,
    max_attempts: int = 0,
    run_timeout_ms: int = 0,
    dispatch_timeout_ms: int = 0,
    region: str = "",
    region_required: bool = False,
    tier: str = "",
    model: str = "",
    max_tokens: int = 0,
    privacy: str = "",
    depends_on: Sequence[str] = (),
    min_runtime_version: str = "",
) -> common_pb2.WorkUnitSpec:
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}")
    spec = common_pb2.WorkUnitSpec(
        kind=kind,
        handler=handler,
        input_json=input_json if input_json is not None else json.dumps(input),
        priority=PRIORITIES[priority],
        tenant_id=tenant,
        execution_session_id=session,
        client_key=key,
        idempotent=idempotent,
        max_attempts=max_attempts,
        run_timeout_ms=run_timeout_ms,
        dispatch_timeout_ms=dispatch_timeout_ms,
        region=region,
        region_required=region_required,
        privacy=privacy,
        depends_on=list(depends_on),
        min_runtime_version=min_runtime_version,
    )
    if tier or model or max_tokens:
        spec.llm.CopyFrom(common_pb2.LlmSpec(tier=tier, model=model, max_tokens=max_tokens))
    return spec


class KrakoClient:
    def __init__(
        self,
        server: str = "127.0.0.1:7420",
        *,
        token: str | None = None,
        tls_ca: Path | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
        if tls_ca is not None:
            credentials = grpc.ssl_channel_credentials(Path(tls_ca).read_bytes())
            self.channel = grpc.secure_channel(server, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(server, options=options)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout_s = timeout_s
        self.gateway = gateway_pb2_grpc.GatewayServiceStub(self.channel)
        self.events = events_pb2_grpc.EventServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)

    def __enter__(self) -> KrakoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def _call(self, method: Any, request: Any, timeout_s: float | None = None) -> Any:
        try:
            return method(request, metadata=self.metadata, timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as exc:
            raise _wrap(exc) from None

    def _stream(self, method: Any, request: Any) -> Iterator[Any]:
        try:
            yield from method(request, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise _wrap(exc) from None

    # -- gateway -------------------------------------------------------------------

    def submit(self, **spec: Any) -> gateway_pb2.SubmitWorkUnitResponse:
        request = gateway_pb2.SubmitWorkUnitRequest(spec=make_spec(**spec))
        return self._call(self.gateway.SubmitWorkUnit, request)

    def submit_many(self, specs: Sequence[common_pb2.WorkUnitSpec]) -> list[gateway_pb2.SubmitWorkUnitResponse]:
        response = self._call(self.gateway.SubmitWorkUnits, gateway_pb2.SubmitWorkUnitsRequest(specs=list(specs)))
        return list(response.results)

    def get(self, work_unit_id: str) -> common_pb2.WorkUnit:
        return self._call(self.gateway.GetWorkUnit, gateway_pb2.GetWorkUnitRequest(work_unit_id=work_unit_id)).work_unit

    def watch(self, work_unit_id: str) -> Iterator[gateway_pb2.WatchWorkUnitResponse]:
        yield from self._stream(self.gateway.WatchWorkUnit, gateway_pb2.WatchWorkUnitRequest(work_unit_id=work_unit_id))

    def wait(self, work_unit_id: str) -> common_pb2.WorkUnit:
        """Block until the unit is terminal (by watching its events) and return its final state."""
        for update in self.watch(work_unit_id):
            if update.work_unit.state in TERMINAL_STATES:
                return update.work_unit
        return self.get(work_unit_id)

    def cancel(self, work_unit_id: str, reason: str = "") -> common_pb2.WorkUnit:
        request = gateway_pb2.CancelWorkUnitRequest(work_unit_id=work_unit_id, reason=reason)
        return self._call(self.gateway.CancelWorkUnit, request).work_unit

    # -- events --------------------------------------------------------------------

    def read_events(
        self, after_seq: int = 0, limit: int = 500, types: Sequence[str] = (), work_unit_id: str = ""
    ) -> events_pb2.ReadEventsResponse:
        request = events_pb2.ReadEventsRequest(
            after_seq=after_seq, limit=limit, types=list(types), work_unit_id=work_unit_id
        )
        return self._call(self.events.ReadEvents, request)

    def subscribe(self, after_seq: int = 0, types: Sequence[str] = (), work_unit_id: str = "") -> Iterator[Any]:
        request = events_pb2.SubscribeEventsRequest(after_seq=after_seq, types=list(types), work_unit_id=work_unit_id)
        for batch in self._stream(self.events.SubscribeEvents, request):
            yield from batch.events

    # -- admin ---------------------------------------------------------------------

    def nodes(self) -> list[admin_pb2.Node]:
        return list(self._call(self.admin.ListNodes, admin_pb2.ListNodesRequest()).nodes)

    def wait_for_nodes(self, count: int, timeout_s: float = 30.0) -> list[admin_pb2.Node]:
        """Poll (with a deadline) until at least `count` agents are connected; returns them."""
        deadline = time.monotonic() + timeout_s
        while True:
            nodes = [n for n in self.nodes() if n.connected]
            if len(nodes) >= count:
                return nodes
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(nodes)} of {count} agents connected within {timeout_s} s")
            time.sleep(0.05)

    def drain(self, node_id: str, *, undo: bool = False) -> admin_pb2.Node:
        return self._call(self.admin.DrainNode, admin_pb2.DrainNodeRequest(node_id=node_id, undo=undo)).node

    def capacity(self) -> admin_pb2.GetCapacityResponse:
        return self._call(self.admin.GetCapacity, admin_pb2.GetCapacityRequest())

    def credit(self, tenant: str, amount_usd: str, key: str) -> admin_pb2.CreditWalletResponse:
        request = admin_pb2.CreditWalletRequest(tenant_id=tenant, amount_usd=amount_usd, client_key=key)
        return self._call(self.admin.CreditWallet, request)

    def wallets(self, tenant: str = "") -> list[admin_pb2.Wallet]:
        return list(self._call(self.admin.ListWallets, admin_pb2.ListWalletsRequest(tenant_id=tenant)).wallets)

    def ledger(self, tenant: str = "", page: int = 1000) -> Iterator[dict[str, Any]]:
        for line in self.ledger_lines(tenant, page):
            yield json.loads(line)

    def ledger_lines(self, tenant: str = "", page: int = 1000) -> Iterator[str]:
        """The ledger as canonical JSON lines, exactly as the server serialised them."""
        after = 0
        while True:
            request = admin_pb2.ListLedgerRequest(tenant_id=tenant, after_id=after, limit=page)
            response = self._call(self.admin.ListLedger, request)
            for line in response.lines:
                yield line.line_json
            if not response.lines or response.next_after_id <= after:
                return
            after = response.next_after_id

    def check_billing(self) -> admin_pb2.CheckBillingResponse:
        return self._call(self.admin.CheckBilling, admin_pb2.CheckBillingRequest(), timeout_s=300)

    def verify_replay(self) -> admin_pb2.VerifyReplayResponse:
        return self._call(self.admin.VerifyReplay, admin_pb2.VerifyReplayRequest(), timeout_s=600)
