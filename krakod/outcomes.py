"""Event builders for the dispatcher's decisions: results, retries, expiries, requeues, deferrals.

Pure functions from (unit, facts) to NewEvents; the dispatcher appends them with guards.
"""

from __future__ import annotations

import json
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from krako.v1 import agent_pb2

from krakod.log import AppendResult, NewEvent
from krakod.units import Unit

MICRO = Decimal("0.000001")
MAX_ERROR_MESSAGE_CHARS = 2000


def cpu_seconds_from_us(cpu_time_us: int) -> str:
    return str((Decimal(cpu_time_us) / Decimal(1_000_000)).quantize(MICRO, rounding=ROUND_HALF_EVEN))


def unit_event(unit: Unit, type_: str, key: str, payload: dict[str, Any], source: str) -> NewEvent:
    return NewEvent(
        type=type_,
        idempotency_key=key,
        tenant_id=unit.tenant_id,
        execution_session_id=unit.session_id,
        work_unit_id=unit.work_unit_id,
        source=source,
        payload=payload,
    )


def llm_event(unit: Unit, result: agent_pb2.Result, node_id: str) -> tuple[NewEvent, dict[str, Any] | None]:
    """The llm.invocation.* event of a result, and the token summary a completion carries."""
    inv = result.llm
    payload: dict[str, Any] = {
        "attempt": result.attempt,
        "node_id": node_id,
        "provider": inv.provider,
        "model": inv.model,
        "tier": inv.tier,
        "latency_ms": inv.latency_ms,
    }
    key = f"llm:{unit.work_unit_id}:{result.attempt}"
    source = f"agentd:{node_id}"
    if inv.error_code:
        payload.update(
            error_code=inv.error_code,
            error_message=inv.error_message[:MAX_ERROR_MESSAGE_CHARS],
            retryable=result.retryable,
        )
        return unit_event(unit, "llm.invocation.failed", key, payload, source), None
    payload.update(
        tokens_in=inv.tokens_in,
        tokens_out=inv.tokens_out,
        total_tokens=inv.total_tokens,
        usage_reported=inv.usage_reported,
        estimated_cost_usd=inv.estimated_cost_usd or "0.000000",
    )
    summary = {k: payload[k] for k in ("provider", "model", "tier", "tokens_in", "tokens_out", "total_tokens")}
    return unit_event(unit, "llm.invocation.completed", key, payload, source), summary


def measured(result: agent_pb2.Result, stability_class: str) -> dict[str, Any]:
    return {
        "duration_ms": result.duration_us // 1000,
        "cpu_seconds": cpu_seconds_from_us(result.cpu_time_us),
        "stability_class": stability_class,
    }


def completed_event(
    unit: Unit, result: agent_pb2.Result, node_id: str, stability_class: str, llm: dict[str, Any] | None
) -> NewEvent:
    output: Any = None
    if result.output_json:
        try:
            output = json.loads(result.output_json)
        except ValueError:
            output = {"raw": result.output_json[:1000]}
    payload = {
        "attempt": result.attempt,
        "node_id": node_id,
        **measured(result, stability_class),
        "output": output,
        "llm": llm,
    }
    return unit_event(unit, "workunit.completed", f"complete:{unit.work_unit_id}", payload, f"agentd:{node_id}")


def failed_event(
    unit: Unit, result: agent_pb2.Result, node_id: str, stability_class: str, *, final: bool, retry_reason: str
) -> NewEvent:
    payload = {
        "attempt": result.attempt,
        "node_id": node_id,
        **measured(result, stability_class),
        "error_code": result.error_code or "EXECUTION_ERROR",
        "error_message": result.error_message[:MAX_ERROR_MESSAGE_CHARS],
        "retryable": result.retryable,
        "final": final,
        "retry_reason": retry_reason,
    }
    return unit_event(
        unit, "workunit.failed", f"fail:{unit.work_unit_id}:{result.attempt}", payload, f"agentd:{node_id}"
    )


def retry_event(unit: Unit, event_type: str, payload: dict[str, Any]) -> NewEvent:
    """workunit.retry.scheduled (payload attempt = the next attempt) or workunit.retry.dropped."""
    if event_type == "workunit.retry.scheduled":
        key = f"retry:{unit.work_unit_id}:{payload['attempt']}"
    else:
        key = f"retry-dropped:{unit.work_unit_id}:{payload['attempt']}"
    return unit_event(unit, event_type, key, payload, "krakod:dispatcher")


def expired_event(unit: Unit, lease_ms: int, *, final: bool, retry_reason: str) -> NewEvent:
    payload = {
        "attempt": unit.attempt,
        "node_id": unit.node_id,
        "lease_ms": lease_ms,
        "final": final,
        "retry_reason": retry_reason,
    }
    return unit_event(
        unit, "workunit.claim.expired", f"expire:{unit.work_unit_id}:{unit.attempt}", payload, "krakod:dispatcher"
    )


def requeue_event(unit: Unit, reason: str) -> NewEvent:
    payload = {"attempt": unit.attempt, "round": unit.round, "reason": reason, "offered_to": list(unit.offered_to)}
    return unit_event(
        unit,
        "workunit.requeued",
        f"requeue:{unit.work_unit_id}:{unit.attempt}:{unit.round}",
        payload,
        "krakod:dispatcher",
    )


def deferred_event(unit: Unit, payload: dict[str, Any]) -> NewEvent:
    return unit_event(
        unit,
        "workunit.scheduling.deferred",
        f"defer:{unit.work_unit_id}:{unit.attempt}",
        {"attempt": unit.attempt, **payload},
        "krakod:scheduler",
    )


def result_verdict(last: AppendResult, node_id: str, attempt: int) -> tuple[bool, str]:
    """Was this agent's result accepted? A resend of an accepted result is accepted again (idempotent)."""
    if last.created:
        return True, ""
    if last.event is None:
        return False, last.refused or "refused"
    payload = last.event.payload
    if payload.get("node_id") == node_id and payload.get("attempt") == attempt:
        return True, "duplicate delivery of an accepted result"
    return False, f"fenced: attempt {payload.get('attempt')} on node {payload.get('node_id')} already finished the unit"
