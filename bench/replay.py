"""Projection replay rate: rebuild every projection from seq 0 over a large mixed log.

    python bench/replay.py [--events 1000000] [--batch 5000] [--synchronous FULL]

The log (work units with claims, LLM invocations, completions, some failures and
expiries, sampled heartbeats, a few top-ups) is inserted straight into the store
in large transactions, then the baseline (read and JSON-decode every event) and
the rebuild of all projections into a fresh projections database are timed.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from krakod.log import Event, SqliteEventStore, canonical_json
from krakod.projections.replay import rebuild_into
from krakod.projections.runner import DEFAULT_BATCH_LIMIT
from krakod.projections.service import default_projections

NODES = 50
TENANTS = 20
SESSIONS = 2_000
INSERT_CHUNK = 50_000
TS0_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z; events 10 ms apart, so trust decays by the hour


def _event(seq: int, type_: str, key: str, unit: str | None, n: int, payload: dict[str, object]) -> Event:
    tenant = f"t{n % TENANTS}"
    return Event(
        seq=seq,
        event_id=f"00000000-0000-4000-8000-{seq:012d}",
        type=type_,
        idempotency_key=key,
        ts_us=TS0_US + seq * 10_000,
        tenant_id=tenant,
        execution_session_id=f"{tenant}-s{n % SESSIONS}",
        work_unit_id=unit,
        source=f"agentd:n{n % NODES}",
        payload_json=canonical_json(payload),
    )


def _heartbeat(node: str, health: str) -> dict[str, object]:
    return {
        "node_id": node,
        "health": health,
        "cpu_load": 0.5,
        "utilization": 0.5,
        "in_flight": 1,
        "queue_depth": 0,
        "memory_available_bytes": 1 << 30,
        "reason": "sample",
    }


def mixed_events(total: int) -> Iterator[Event]:
    """Units (half CPU, half LLM; every 10th fails its first attempt on a timeout), 2 heartbeats per unit."""
    seq, n = 0, 0
    while seq < total:
        n += 1
        unit, node = f"wu-{n}", f"n{n % NODES}"
        attempt = 1
        if n % 10 == 0:
            seq += 1
            yield _event(seq, "workunit.claimed", f"claim:{unit}:1", unit, n, {"attempt": 1, "node_id": node})
            failure = {"attempt": 1, "node_id": node, "cpu_seconds": "0.250000", "error_code": "timeout"}
            seq += 1
            yield _event(seq, "workunit.failed", f"fail:{unit}:1", unit, n, {**failure, "final": False})
            attempt = 2
        seq += 1
        yield _event(seq, "workunit.claimed", f"claim:{unit}:{attempt}", unit, n, {"attempt": attempt, "node_id": node})
        block = None
        if n % 2 == 0:
            tokens_in, tokens_out = 100 + n % 900, 50 + n % 400
            block = {
                "provider": "stub",
                "model": "stub-1",
                "tier": "small",
                "tokens_in": tokens_in,
                "tokens_out": tokens_out,
                "total_tokens": tokens_in + tokens_out,
            }
            seq += 1
            invocation = {"attempt": attempt, "node_id": node, **block, "latency_ms": 20, "usage_reported": True}
            yield _event(seq, "llm.invocation.completed", f"llm:{unit}:{attempt}", unit, n, invocation)
        completion = {
            "attempt": attempt,
            "node_id": node,
            "stability_class": "datacenter" if n % 3 == 0 else "community",
            "cpu_seconds": f"{n % 5}.{n % 999_999:06d}",
            "duration_ms": 12,
            "output": {"ok": True},
            "llm": block,
        }
        seq += 1
        yield _event(seq, "workunit.completed", f"complete:{unit}", unit, n, completion)
        for beat in range(2):
            seq += 1
            health = "degraded" if (n + beat) % 17 == 0 else "healthy"
            yield _event(
                seq, "node.health.updated", f"event:hb-{seq}", None, n, _heartbeat(f"n{(n + beat) % NODES}", health)
            )
        if n % 1000 == 0:
            seq += 1
            tenant, key = f"t{n % TENANTS}", f"bench-{n}"
            credit = {"tenant_id": tenant, "amount_usd": "100.000000", "client_key": key}
            yield _event(seq, "wallet.credited", f"credit:{tenant}:{key}", None, n, credit)


def build_log(path: Path, total: int) -> int:
    store = SqliteEventStore(path, synchronous="OFF")
    store.open()
    chunk: list[Event] = []
    for event in mixed_events(total):
        chunk.append(event)
        if len(chunk) >= INSERT_CHUNK:
            store.insert(chunk)
            chunk = []
    store.insert(chunk)
    last = store.last_seq()
    store.close()
    return last


def read_and_decode(path: Path) -> int:
    conn = sqlite3.connect(path)
    count = 0
    for row in conn.execute("SELECT seq, event_id, type, ts_us, tenant_id, payload FROM events ORDER BY seq"):
        json.loads(row[5])
        count += 1
    conn.close()
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH_LIMIT)
    parser.add_argument("--synchronous", default="FULL", help="of the projections database (the live default)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="krako-bench-") as tmp:
        log_path, db_path = Path(tmp) / "events.sqlite", Path(tmp) / "projections.sqlite"
        started = time.perf_counter()
        total = build_log(log_path, args.events)
        print(f"built a log of {total:,} events in {time.perf_counter() - started:.1f} s")

        baseline_s, baseline_cpu_s = timed(lambda: read_and_decode(log_path))
        print(f"baseline, read and decode every event: {rates(total, baseline_s, baseline_cpu_s)}")

        rebuild_s, rebuild_cpu_s = timed(
            lambda: rebuild_into(
                db_path,
                log_path,
                default_projections(),
                synchronous=args.synchronous,
                batch_limit=args.batch,
                digests=False,
            )
        )
        conn = sqlite3.connect(db_path)
        lines = conn.execute("SELECT COUNT(*) FROM billing_ledger").fetchone()[0]
        conn.close()
        print(
            f"rebuilt all projections (batch {args.batch}, synchronous={args.synchronous}, {lines:,} ledger lines): "
            f"{rates(total, rebuild_s, rebuild_cpu_s)}; "
            f"{baseline_cpu_s / rebuild_cpu_s:.0%} of the read-and-decode rate (CPU time)"
        )


def timed(work: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds of work. CPU time is the fairer figure on a machine shared with other jobs."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def rates(events: int, wall_s: float, cpu_s: float) -> str:
    return (
        f"{wall_s:.2f} s wall, {events / wall_s:,.0f} events/s; "
        f"{cpu_s:.2f} s CPU, {events / cpu_s:,.0f} events/s of CPU time"
    )


if __name__ == "__main__":
    main()
