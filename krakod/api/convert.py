"""Conversions between the daemon's values and krako.v1 messages."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from krako.v1 import admin_pb2, common_pb2

from krakod.log import Event
from krakod.scheduler import NodeState
from krakod.units import Unit

STATES = {
    "pending": common_pb2.WORK_UNIT_STATE_PENDING,
    "scheduled": common_pb2.WORK_UNIT_STATE_SCHEDULED,
    "claimed": common_pb2.WORK_UNIT_STATE_CLAIMED,
    "running": common_pb2.WORK_UNIT_STATE_RUNNING,
    "completed": common_pb2.WORK_UNIT_STATE_COMPLETED,
    "failed": common_pb2.WORK_UNIT_STATE_FAILED,
    "cancelled": common_pb2.WORK_UNIT_STATE_CANCELLED,
    "rejected": common_pb2.WORK_UNIT_STATE_REJECTED,
}
PRIORITY_NAMES = {
    common_pb2.PRIORITY_UNSPECIFIED: "p2",
    common_pb2.PRIORITY_P0: "p0",
    common_pb2.PRIORITY_P1: "p1",
    common_pb2.PRIORITY_P2: "p2",
    common_pb2.PRIORITY_P3: "p3",
}
PRIORITY_VALUES = {v: k for k, v in PRIORITY_NAMES.items() if k != common_pb2.PRIORITY_UNSPECIFIED}


def timestamp(ts_us: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMicroseconds(ts_us)
    return stamp


def event_to_pb(event: Event) -> common_pb2.Event:
    return common_pb2.Event(
        seq=event.seq,
        event_id=event.event_id,
        type=event.type,
        idempotency_key=event.idempotency_key,
        ts=timestamp(event.ts_us),
        tenant_id=event.tenant_id,
        execution_session_id=event.execution_session_id,
        work_unit_id=event.work_unit_id or "",
        source=event.source,
        payload_json=event.payload_json,
    )


def spec_to_pb(unit: Unit) -> common_pb2.WorkUnitSpec:
    s: dict[str, Any] = unit.spec
    llm = s.get("llm") or None
    return common_pb2.WorkUnitSpec(
        kind=s.get("kind", ""),
        handler=s.get("handler", ""),
        input_json=unit.input_json,
        priority=PRIORITY_VALUES.get(s.get("priority", "p2"), common_pb2.PRIORITY_P2),
        tenant_id=unit.tenant_id,
        execution_session_id=unit.session_id,
        client_key=s.get("client_key", ""),
        region=s.get("region", ""),
        region_required=bool(s.get("region_required", False)),
        min_runtime_version=s.get("min_runtime_version", ""),
        idempotent=bool(s.get("idempotent", False)),
        max_attempts=int(s.get("max_attempts", 0)),
        run_timeout_ms=int(s.get("run_timeout_ms", 0)),
        dispatch_timeout_ms=int(s.get("dispatch_timeout_ms", 0)),
        llm=common_pb2.LlmSpec(
            tier=llm.get("tier", ""), model=llm.get("model", ""), max_tokens=int(llm.get("max_tokens", 0))
        )
        if llm
        else None,
        privacy=s.get("privacy", ""),
        depends_on=list(s.get("depends_on", [])),
    )


def unit_to_pb(unit: Unit) -> common_pb2.WorkUnit:
    return common_pb2.WorkUnit(
        work_unit_id=unit.work_unit_id,
        spec=spec_to_pb(unit),
        state=STATES.get(unit.state, common_pb2.WORK_UNIT_STATE_UNSPECIFIED),
        attempt=unit.attempt,
        node_id=unit.node_id or "",
        output_json=unit.output_json,
        error_code=unit.error_code,
        error_message=unit.error_message,
        submitted_seq=unit.submitted_seq,
        last_seq=unit.last_seq,
        submitted_at=timestamp(unit.submitted_ts_us),
        finished_at=timestamp(unit.finished_ts_us) if unit.finished_ts_us else None,
        duration_ms=unit.duration_ms,
        cpu_seconds=unit.cpu_seconds,
    )


def node_to_pb(node: NodeState, now_ms: int, trust: str = "", circuit: str = "") -> admin_pb2.Node:
    hello, measured = node.hello, node.measured
    return admin_pb2.Node(
        node_id=node.node_id,
        region=node.region,
        kinds=sorted(node.kinds),
        concurrency=node.concurrency,
        available_slots=node.available_slots,
        in_flight=node.in_flight,
        queue_depth=measured.queue_depth,
        utilization=measured.utilization,
        cpu_load=measured.cpu_load,
        memory_available_bytes=measured.memory_available_bytes or 0,
        health=str(node.health.value),
        last_heartbeat_age_ms=node.heartbeat_age_ms(now_ms),
        version=hello.version,
        connected=node.connected,
        trust_score=trust,
        handlers=sorted(hello.handlers),
        llm_tiers=sorted(hello.llm_tiers),
        llm_models=sorted(hello.llm_models),
        circuit=circuit,
    )


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
