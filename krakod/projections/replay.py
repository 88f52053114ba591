"""Canonical dumps, replay verification and the ledger export.

A view's digest is the SHA-256 of its tables dumped in primary-key order, one
canonical JSON array per row. Positions are not part of a digest: where a
projection stops between two events it does not fold is a matter of timing.

`verify_replay` reads the live database in one read transaction (a consistent
snapshot while the runner keeps going), rebuilds every projection from seq 0 into
a scratch database up to the live positions, and compares digests view by view.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from krakod.projections.billing_schema import LEDGER_SELECT, ledger_line
from krakod.projections.runner import (
    DEFAULT_BATCH_LIMIT,
    Projection,
    ProjectionError,
    ProjectionRunner,
    View,
    open_reader,
)

_ROW_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
EXPORT_PAGE_ROWS = 1_000


@dataclass(frozen=True, slots=True)
class ProjectionDigest:
    projection: str
    live_sha256: str
    replay_sha256: str

    @property
    def identical(self) -> bool:
        return self.live_sha256 == self.replay_sha256


@dataclass(frozen=True, slots=True)
class ReplayReport:
    digests: tuple[ProjectionDigest, ...]
    through_seq: int

    @property
    def identical(self) -> bool:
        return all(d.identical for d in self.digests)


def view_digest(conn: sqlite3.Connection, view: View) -> str:
    """SHA-256 of a view's tables, each dumped in its ORDER BY order."""
    digest = hashlib.sha256()
    for table, order_by in view:
        digest.update(f"table {table}\n".encode())
        for row in conn.execute(f"SELECT * FROM {table} ORDER BY {order_by}"):
            digest.update(_ROW_JSON.encode(row).encode())
            digest.update(b"\n")
    return digest.hexdigest()


def snapshot_digests(
    conn: sqlite3.Connection, projections: Sequence[Projection]
) -> tuple[dict[str, int], dict[str, str]]:
    """Positions and per-view digests, read in one transaction (a consistent snapshot)."""
    try:
        conn.execute("BEGIN")
        try:
            stored = dict(conn.execute("SELECT name, seq FROM projection_positions").fetchall())
            positions = {p.name: int(stored.get(p.name, 0)) for p in projections}
            digests = {name: view_digest(conn, view) for p in projections for name, view in p.views.items()}
        finally:
            conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise ProjectionError(f"dumping projections: {exc}") from exc
    return positions, digests


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()


def verify_replay(
    live_db: Path,
    log_path: Path,
    scratch_db: Path,
    make_projections: Callable[[], Sequence[Projection]],
) -> ReplayReport:
    """Rebuild every projection from seq 0 into `scratch_db` and compare it with `live_db` (blocking)."""
    projections = make_projections()
    live = open_reader(live_db)
    try:
        positions, live_digests = snapshot_digests(live, projections)
    finally:
        live.close()
    _remove_database(scratch_db)
    runner = ProjectionRunner(scratch_db, log_path, projections, synchronous="OFF")
    try:
        runner.open()
        runner.catch_up(max(positions.values(), default=0), positions)
        _, replay_digests = snapshot_digests(runner.conn, projections)
    finally:
        runner.close()
        _remove_database(scratch_db)
    return ReplayReport(
        digests=tuple(
            ProjectionDigest(name, live_digests[name], replay_digests[name]) for name in sorted(live_digests)
        ),
        through_seq=min(positions.values(), default=0),
    )


def rebuild_into(
    db_path: Path,
    log_path: Path,
    projections: Sequence[Projection],
    *,
    upto: int | None = None,
    synchronous: str = "OFF",
    batch_limit: int = DEFAULT_BATCH_LIMIT,
    digests: bool = True,
) -> dict[str, str]:
    """Fold the log from seq 0 (or the stored positions) into `db_path`; the digests of every view (blocking)."""
    runner = ProjectionRunner(db_path, log_path, projections, synchronous=synchronous, batch_limit=batch_limit)
    runner.open()
    try:
        runner.catch_up(runner.log_last_seq() if upto is None else upto)
        return snapshot_digests(runner.conn, projections)[1] if digests else {}
    finally:
        runner.close()


def ledger_page(conn: sqlite3.Connection, tenant_id: str | None, after_id: int, limit: int) -> list[dict[str, object]]:
    """Ledger lines with id > after_id in id order, optionally of one tenant."""
    if tenant_id:
        sql = f"{LEDGER_SELECT} WHERE tenant_id = ? AND id > ? ORDER BY id LIMIT ?"
        params: tuple[object, ...] = (tenant_id, after_id, limit)
    else:
        sql = f"{LEDGER_SELECT} WHERE id > ? ORDER BY id LIMIT ?"
        params = (after_id, limit)
    try:
        return [ledger_line(row) for row in conn.execute(sql, params)]
    except sqlite3.Error as exc:
        raise ProjectionError(f"reading the ledger after id {after_id}: {exc}") from exc


def ledger_jsonl(conn: sqlite3.Connection, tenant_id: str | None = None) -> Iterator[str]:
    """Every ledger line as canonical JSON (no newline), in id order: the same bytes for the same log."""
    after_id = 0
    while True:
        page = ledger_page(conn, tenant_id, after_id, EXPORT_PAGE_ROWS)
        for line in page:
            yield _ROW_JSON.encode(line)
        if len(page) < EXPORT_PAGE_ROWS:
            return
        after_id = int(page[-1]["id"])  # type: ignore[call-overload]


def positions_of(conn: sqlite3.Connection) -> Mapping[str, int]:
    return dict(conn.execute("SELECT name, seq FROM projection_positions").fetchall())
