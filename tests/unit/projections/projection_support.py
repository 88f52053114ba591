"""Shared helpers of the projection unit tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from krakod.log import NewEvent
from krakod.projections.replay import ledger_page


@dataclass
class Folded:
    """The projections database after folding a log."""

    db_path: Path
    digests: dict[str, str]

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.db_path)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def lines(self, tenant: str | None = None) -> list[dict[str, Any]]:
        conn = sqlite3.connect(self.db_path)
        try:
            return ledger_page(conn, tenant, 0, 10_000)
        finally:
            conn.close()

    def wallet(self, tenant: str) -> tuple[int, int, int]:
        rows = self.query(
            "SELECT credited_micros, debited_micros, reserved_micros FROM billing_wallets WHERE tenant_id = ?",
            (tenant,),
        )
        return rows[0] if rows else (0, 0, 0)


Fold = Callable[[list[NewEvent]], Awaitable[Folded]]
