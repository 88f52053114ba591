"""Events shaped per docs/events.md, for tests and benchmarks of the projections.

Builders return `NewEvent`s with the idempotency keys of the contract, so
appending one twice through `EventLog` is a duplicate, as in production.
`random_workload` draws a plausible mix (claims, LLM invocations, completions,
failures, expiries, heartbeats, top-ups) from a seeded `random.Random`: it is a
generator of inputs, never used by a fold.
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

from krakod.log import AppendResult, EventLog, NewEvent, SqliteEventStore
from krakod.projections.commands import credit_event, pricing_event_at
from krakod.projections.pricing import Pricing

STABILITY = ("community", "datacenter")
TIERS = ("small", "medium", "large")


def _unit_event(
    type_: str, key: str, unit: str, payload: dict[str, Any], tenant: str, session: str, node: str
) -> NewEvent:
    return NewEvent(
        type=type_,
        payload=payload,
        idempotency_key=key,
        tenant_id=tenant,
        execution_session_id=session,
        work_unit_id=unit,
        source=f"agentd:{node}",
    )


def claimed(unit: str, attempt: int, node: str, *, tenant: str = "t1", session: str = "s1") -> NewEvent:
    payload = {"attempt": attempt, "node_id": node, "lease_ms": 30_000}
    return _unit_event("workunit.claimed", f"claim:{unit}:{attempt}", unit, payload, tenant, session, node)


def completed(
    unit: str,
    attempt: int,
    node: str,
    cpu_seconds: str,
    *,
    stability_class: str = "community",
    llm: dict[str, Any] | None = None,
    tenant: str = "t1",
    session: str = "s1",
) -> NewEvent:
    payload = {
        "attempt": attempt,
        "node_id": node,
        "stability_class": stability_class,
        "output": {"ok": True},
        "duration_ms": 10,
        "cpu_seconds": cpu_seconds,
        "llm": llm,
    }
    return _unit_event("workunit.completed", f"complete:{unit}", unit, payload, tenant, session, node)


def failed(
    unit: str,
    attempt: int,
    node: str,
    cpu_seconds: str = "0.010000",
    *,
    error_code: str = "handler_error",
    final: bool = False,
    tenant: str = "t1",
    session: str = "s1",
) -> NewEvent:
    payload = {
        "attempt": attempt,
        "node_id": node,
        "stability_class": "community",
        "error_code": error_code,
        "error_message": "failed",
        "retryable": not final,
        "final": final,
        "duration_ms": 10,
        "cpu_seconds": cpu_seconds,
    }
    return _unit_event("workunit.failed", f"fail:{unit}:{attempt}", unit, payload, tenant, session, node)


def claim_expired(unit: str, attempt: int, node: str, *, tenant: str = "t1", session: str = "s1") -> NewEvent:
    payload = {"attempt": attempt, "node_id": node, "lease_ms": 30_000}
    return _unit_event("workunit.claim.expired", f"expire:{unit}:{attempt}", unit, payload, tenant, session, node)


def llm_block(tokens_in: int, tokens_out: int, *, tier: str = "small", model: str = "stub-1") -> dict[str, Any]:
    return {
        "provider": "stub",
        "model": model,
        "tier": tier,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "total_tokens": tokens_in + tokens_out,
    }


def invocation(
    unit: str,
    attempt: int,
    node: str,
    tokens_in: int,
    tokens_out: int,
    *,
    tier: str = "small",
    model: str = "stub-1",
    tenant: str = "t1",
    session: str = "s1",
) -> NewEvent:
    payload = {
        "attempt": attempt,
        "node_id": node,
        **llm_block(tokens_in, tokens_out, tier=tier, model=model),
        "latency_ms": 20,
        "usage_reported": True,
        "estimated_cost_usd": "0.000000",
    }
    return _unit_event("llm.invocation.completed", f"llm:{unit}:{attempt}", unit, payload, tenant, session, node)


def health(node: str, state: str = "healthy", *, reason: str = "sample") -> NewEvent:
    return NewEvent(
        type="node.health.updated",
        payload={
            "node_id": node,
            "health": state,
            "cpu_load": 0.5,
            "utilization": 0.5,
            "in_flight": 1,
            "queue_depth": 0,
            "memory_available_bytes": 1 << 30,
            "reason": reason,
        },
        source=f"agentd:{node}",
    )


def pricing(version: int, **terms: Any) -> NewEvent:
    """A `billing.pricing.updated` event; `terms` are `Pricing` fields."""
    return pricing_event_at(Pricing(**terms), version)


def credit(tenant: str, amount_usd: str, client_key: str) -> NewEvent:
    return credit_event(tenant, amount_usd, client_key)


def random_workload(
    rng: random.Random,
    units: int,
    *,
    nodes: int = 4,
    tenants: int = 2,
    sessions: int = 3,
    llm_share: float = 0.5,
    failure_share: float = 0.2,
    heartbeats_per_unit: int = 1,
) -> list[NewEvent]:
    """Events of `units` work units in a plausible order, with retries, heartbeats and top-ups."""
    events: list[NewEvent] = []
    for index in range(units):
        unit = f"wu-{index}"
        tenant = f"t{rng.randrange(tenants)}"
        session = f"{tenant}-s{rng.randrange(sessions)}"
        is_llm = rng.random() < llm_share
        attempts = 1 + (rng.random() < failure_share) + (rng.random() < failure_share / 2)
        for attempt in range(1, attempts + 1):
            node = f"n{rng.randrange(nodes)}"
            events.append(claimed(unit, attempt, node, tenant=tenant, session=session))
            tokens = (rng.randrange(0, 3000), rng.randrange(0, 3000))
            tier = rng.choice(TIERS)
            if is_llm:
                events.append(invocation(unit, attempt, node, *tokens, tier=tier, tenant=tenant, session=session))
            cpu = f"{Decimal(rng.randrange(0, 5_000_000)) / 1_000_000:.6f}"
            if attempt < attempts:
                if rng.random() < 0.5:
                    events.append(
                        failed(
                            unit,
                            attempt,
                            node,
                            cpu,
                            error_code=rng.choice(["timeout", "oom"]),
                            tenant=tenant,
                            session=session,
                        )
                    )
                else:
                    events.append(claim_expired(unit, attempt, node, tenant=tenant, session=session))
            else:
                block = llm_block(*tokens, tier=tier) if is_llm else None
                klass = rng.choice(STABILITY)
                events.append(
                    completed(
                        unit, attempt, node, cpu, stability_class=klass, llm=block, tenant=tenant, session=session
                    )
                )
            for _ in range(heartbeats_per_unit):
                events.append(health(node, rng.choice(["healthy", "healthy", "healthy", "degraded", "unhealthy"])))
        if rng.random() < 0.05:
            events.append(credit(tenant, f"{rng.randrange(1, 100)}.000000", f"topup-{index}"))
    return events


async def append_all(log: EventLog, events: list[NewEvent], *, chunk: int = 1_000) -> list[AppendResult]:
    """Append events in order through the log (duplicates are deduplicated by their keys)."""
    results: list[AppendResult] = []
    for start in range(0, len(events), chunk):
        results.extend(await log.append_many(events[start : start + chunk]))
    return results


def insert_raw(store: SqliteEventStore, events: list[NewEvent], *, first_seq: int, ts_us: list[int] | int) -> int:
    """Insert events straight into a store with chosen timestamps (no dedupe: keys must be new); last seq."""
    stamps = [ts_us] * len(events) if isinstance(ts_us, int) else ts_us
    store.insert([e.to_event(first_seq + i, stamps[i]) for i, e in enumerate(events)])
    return first_seq + len(events) - 1
