"""GatewayService: submit, get, watch and cancel work units."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

import grpc
from krako.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

from krakod.api.auth import Authenticator, Principal
from krakod.api.convert import PRIORITY_NAMES, event_to_pb, unit_to_pb
from krakod.api.errors import RequestError, invalid, streaming, unary
from krakod.config import KINDS, LLM_HANDLERS, Config
from krakod.dispatch import Dispatcher
from krakod.log import EventLog, NewEvent
from krakod.log.types import new_event_id
from krakod.units import Unit, UnitTable

LLM_TIERS = ("small", "medium", "large")
PRIVACY = ("", "local_only")

# Called with (principal, priority) before anything is appended: returns None to admit, or
# (status, message) to refuse; the daemon plugs admission control in here.
AdmissionCheck = Callable[[str, str], tuple[grpc.StatusCode, str, str] | None]


class Gateway(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(
        self,
        *,
        config: Config,
        log: EventLog,
        units: UnitTable,
        dispatcher: Dispatcher,
        auth: Authenticator,
        known_handlers: Callable[[], Collection[str]],  # a live view: read, never copied per unit
        admission: AdmissionCheck | None = None,
    ) -> None:
        self.config = config
        self.log = log
        self.units = units
        self.dispatcher = dispatcher
        self.auth = auth
        self.known_handlers = known_handlers
        self.admission = admission

    # -- validation ------------------------------------------------------------------

    def _validate(self, spec: common_pb2.WorkUnitSpec, principal: Principal, index: int | None) -> dict[str, Any]:
        where = "" if index is None else f"specs[{index}]: "
        limits = self.config.limits
        if not spec.kind:
            raise invalid(f"{where}kind is required (cpu or llm_pod)")
        if spec.kind not in KINDS:
            raise invalid(f"{where}unknown kind {spec.kind!r} (expected one of: {', '.join(KINDS)})")
        if spec.kind == "cpu":
            if not spec.handler:
                raise invalid(f"{where}handler is required for kind cpu")
            known = self.known_handlers()
            if spec.handler not in known:
                raise invalid(
                    f"{where}unknown handler {spec.handler!r}; known handlers: {', '.join(sorted(known))} "
                    "(agents add theirs with --handlers)"
                )
        elif spec.handler not in LLM_HANDLERS:
            raise invalid(f"{where}kind llm_pod takes handler 'chat' (or none), not {spec.handler!r}")
        raw = spec.input_json or "null"
        size = len(raw.encode())
        if size > limits.max_input_bytes:
            raise invalid(f"{where}input_json is {size} bytes; the limit is {limits.max_input_bytes} bytes")
        try:
            decoded = json.loads(raw)
        except ValueError as exc:
            raise invalid(f"{where}input_json is not valid JSON: {exc}") from None
        if spec.priority not in PRIORITY_NAMES:
            raise invalid(f"{where}unknown priority {spec.priority}")
        if len(spec.client_key) > limits.max_client_key_chars:
            raise invalid(f"{where}client_key is longer than {limits.max_client_key_chars} characters")
        if spec.max_attempts > limits.max_attempts_cap:
            raise invalid(f"{where}max_attempts {spec.max_attempts} is above the cap of {limits.max_attempts_cap}")
        if spec.privacy not in PRIVACY:
            raise invalid(f"{where}unknown privacy {spec.privacy!r} (expected local_only or empty)")
        if spec.privacy == "local_only" and spec.kind == "llm_pod":
            raise invalid(f"{where}privacy=local_only units never go to an LLM pod; kind llm_pod is not allowed")
        if principal.tenant_id is not None and spec.tenant_id and spec.tenant_id != principal.tenant_id:
            raise RequestError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{where}this API key belongs to tenant {principal.tenant_id!r}, not {spec.tenant_id!r}",
            )
        llm = None
        if spec.kind == "llm_pod":
            tier = spec.llm.tier if spec.HasField("llm") else ""
            if tier and tier not in LLM_TIERS:
                raise invalid(f"{where}unknown llm tier {tier!r} (expected one of: {', '.join(LLM_TIERS)})")
            llm = {"tier": tier, "model": spec.llm.model, "max_tokens": spec.llm.max_tokens}
        tenant = principal.tenant_for(spec.tenant_id)
        for dep in spec.depends_on:
            unit = self.units.get(dep)
            if unit is None or unit.tenant_id != tenant:
                raise invalid(f"{where}depends_on names unknown work unit {dep!r}")
        return {
            "kind": spec.kind,
            "handler": spec.handler or ("chat" if spec.kind == "llm_pod" else ""),
            "input": decoded,
            "priority": PRIORITY_NAMES[spec.priority],
            "region": spec.region,
            "region_required": spec.region_required,
            "min_runtime_version": spec.min_runtime_version,
            "idempotent": spec.idempotent,
            "max_attempts": spec.max_attempts,
            "run_timeout_ms": spec.run_timeout_ms,
            "dispatch_timeout_ms": spec.dispatch_timeout_ms,
            "privacy": spec.privacy,
            "depends_on": list(spec.depends_on),
            "client_key": spec.client_key,
            "llm": llm,
        }

    async def _submit(
        self, specs: list[common_pb2.WorkUnitSpec], context: grpc.aio.ServicerContext, batch: bool
    ) -> list[gateway_pb2.SubmitWorkUnitResponse]:
        principal = self.auth.client(context)
        if not specs:
            raise invalid("specs is empty")
        if len(specs) > self.config.limits.max_batch_units:
            raise invalid(f"{len(specs)} units in one call; the limit is {self.config.limits.max_batch_units}")
        events = []
        for index, spec in enumerate(specs):
            payload = self._validate(spec, principal, index if batch else None)
            tenant = principal.tenant_for(spec.tenant_id)
            work_unit_id = new_event_id()
            key = f"submit:{tenant}:{spec.client_key}" if spec.client_key else f"submit:{work_unit_id}"
            events.append(
                NewEvent(
                    type="workunit.submitted",
                    idempotency_key=key,
                    tenant_id=tenant,
                    execution_session_id=spec.execution_session_id or work_unit_id,
                    work_unit_id=work_unit_id,
                    source=f"krakod:gateway:{principal.kind}",
                    payload=payload,
                )
            )
        await self._admit_and_record(events)
        results = await self.log.append_many(events)
        return [
            gateway_pb2.SubmitWorkUnitResponse(
                work_unit_id=r.event.work_unit_id or "", duplicate=not r.created, seq=r.event.seq
            )
            for r in results
            if r.event is not None
        ]

    async def _admit_and_record(self, events: list[NewEvent]) -> None:
        """Admission control: refuse the call (RESOURCE_EXHAUSTED) and log workunit.rejected for its units."""
        if self.admission is None:
            return
        # The decision depends on the tenant and priority only: decide each pair once per call.
        for tenant, priority in {(new.tenant_id, new.payload["priority"]) for new in events}:
            refusal = self.admission(tenant, priority)
            if refusal is None:
                continue
            code, message, rule = refusal
            await self.log.append_many(
                [
                    NewEvent(
                        type="workunit.rejected",
                        idempotency_key=f"reject:{e.work_unit_id}",
                        tenant_id=e.tenant_id,
                        execution_session_id=e.execution_session_id,
                        work_unit_id=e.work_unit_id,
                        source="krakod:admission",
                        payload={
                            "reason": message,
                            "code": "ADMISSION_REJECTED",
                            "rule": rule,
                            "priority": e.payload["priority"],
                            "kind": e.payload["kind"],
                            "client_key": e.payload["client_key"],
                        },
                    )
                    for e in events
                ]
            )
            raise RequestError(code, message)

    @unary
    async def SubmitWorkUnit(
        self, request: gateway_pb2.SubmitWorkUnitRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.SubmitWorkUnitResponse:
        if not request.HasField("spec"):
            raise invalid("spec is required")
        return (await self._submit([request.spec], context, batch=False))[0]

    @unary
    async def SubmitWorkUnits(
        self, request: gateway_pb2.SubmitWorkUnitsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.SubmitWorkUnitsResponse:
        return gateway_pb2.SubmitWorkUnitsResponse(results=await self._submit(list(request.specs), context, True))

    # -- reading ----------------------------------------------------------------------

    def _visible_unit(self, work_unit_id: str, principal: Principal) -> Unit:
        if not work_unit_id:
            raise invalid("work_unit_id is required")
        unit = self.units.get(work_unit_id)
        if unit is None or not principal.may_see(unit.tenant_id):
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"no work unit {work_unit_id!r}")
        return unit

    @unary
    async def GetWorkUnit(
        self, request: gateway_pb2.GetWorkUnitRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetWorkUnitResponse:
        unit = self._visible_unit(request.work_unit_id, self.auth.client(context))
        return gateway_pb2.GetWorkUnitResponse(work_unit=unit_to_pb(unit))

    @streaming
    async def WatchWorkUnit(
        self, request: gateway_pb2.WatchWorkUnitRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.WatchWorkUnitResponse]:
        self._visible_unit(request.work_unit_id, self.auth.client(context))
        # Fold a private table over the unit's own events so each message carries the state after that event.
        private = UnitTable()
        async for batch in self.log.follow(0, work_unit_id=request.work_unit_id, batch_limit=500):
            for event in batch:
                private.apply(event)
                unit = private.get(request.work_unit_id)
                yield gateway_pb2.WatchWorkUnitResponse(
                    event=event_to_pb(event), work_unit=unit_to_pb(unit) if unit else None
                )
                if unit is not None and unit.terminal:
                    return

    @unary
    async def CancelWorkUnit(
        self, request: gateway_pb2.CancelWorkUnitRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.CancelWorkUnitResponse:
        principal = self.auth.client(context)
        unit = self._visible_unit(request.work_unit_id, principal)
        if unit.terminal:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION, f"work unit is already {unit.state}")
        await self.dispatcher.cancel(unit, request.reason or "cancelled by client", f"krakod:gateway:{principal.kind}")
        return gateway_pb2.CancelWorkUnitResponse(work_unit=unit_to_pb(unit))
