"""Helpers for the invariant tests: build a real log, fold it the way krakod would."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from krakod.log import EventLog, NewEvent
from krakod.projections.replay import rebuild_into
from krakod.projections.service import default_projections
from krakod.projections.synthetic import append_all


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """A fresh directory per hypothesis example (function-scoped tmp_path is shared across examples)."""
    with tempfile.TemporaryDirectory(prefix="krako-invariant-") as tmp:
        yield Path(tmp)


def build_log(path: Path, batches: list[list[NewEvent]]) -> int:
    """Append each batch through a real EventLog (so duplicate keys are deduplicated); the last seq."""

    async def run() -> int:
        log = EventLog(path)
        await log.open()
        try:
            for batch in batches:
                await append_all(log, batch)
            return log.last_seq
        finally:
            await log.close()

    return asyncio.run(run())


def fold(log_path: Path, db_path: Path, *, batch_limit: int = 5_000) -> dict[str, str]:
    return rebuild_into(db_path, log_path, default_projections(), batch_limit=batch_limit)


def fold_with_restarts(log_path: Path, db_path: Path, rng: random.Random) -> dict[str, str]:
    """Fold in short runs with random batch sizes, closing and reopening the runner between runs."""
    from krakod.projections.runner import ProjectionRunner

    while True:
        runner = ProjectionRunner(db_path, log_path, default_projections(), batch_limit=rng.randint(1, 40))
        runner.open()
        try:
            last = runner.log_last_seq()
            for _ in range(rng.randint(1, 4)):
                runner.step(last)
            if runner.position >= last:
                break
        finally:
            runner.close()
    return fold(log_path, db_path)  # already caught up: only computes the digests


def query(db_path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def money_digest(db_path: Path) -> str:
    """SHA-256 of the financial state without log positions (seq, ids): comparable across two logs."""
    digest = hashlib.sha256()
    for sql in (
        "SELECT source_event_id, line_type, outcome, tenant_id, session_id, work_unit_id, attempt, node_id, "
        "quantity_micros, tokens_in, tokens_out, total_tokens, unit_price_micros, amount_micros, debit_micros, "
        "operator_credit_micros, protocol_credit_micros, pricing_version FROM billing_ledger "
        "ORDER BY source_event_id, line_type",
        "SELECT * FROM billing_wallets ORDER BY tenant_id",
        "SELECT * FROM billing_accounts ORDER BY account",
        "SELECT * FROM billing_sessions ORDER BY session_id, line_type",
    ):
        for row in query(db_path, sql):
            digest.update(json.dumps(row).encode())
    return digest.hexdigest()
