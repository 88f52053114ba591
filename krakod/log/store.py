"""SQLite (WAL) storage of the event log.

The store is synchronous and confined to one thread per connection; the async
front (`krakod.log.writer.EventLog`) runs it on a dedicated writer thread and
reads through aiosqlite. Driver errors are translated here, once, to LogError.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from krakod.log.types import Event, LogError

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq                  INTEGER PRIMARY KEY,
    event_id             TEXT NOT NULL,
    type                 TEXT NOT NULL,
    idempotency_key      TEXT NOT NULL UNIQUE,
    ts_us                INTEGER NOT NULL,
    tenant_id            TEXT NOT NULL,
    execution_session_id TEXT NOT NULL,
    work_unit_id         TEXT,
    source               TEXT NOT NULL,
    payload              TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_work_unit ON events (work_unit_id, seq) WHERE work_unit_id IS NOT NULL;
"""

COLUMNS = (
    "seq, event_id, type, idempotency_key, ts_us, tenant_id, execution_session_id, work_unit_id, source, payload"
)
BUSY_TIMEOUT_MS = 5_000
# SQLite allows 32,766 host parameters; keep IN (...) lists well below it.
KEY_LOOKUP_CHUNK = 500
MAX_READ_LIMIT = 10_000
SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


def row_to_event(row: Sequence[object]) -> Event:
    seq, event_id, type_, key, ts_us, tenant, session, work_unit, source, payload = row
    return Event(
        seq=int(seq),  # type: ignore[call-overload]
        event_id=str(event_id),
        type=str(type_),
        idempotency_key=str(key),
        ts_us=int(ts_us),  # type: ignore[call-overload]
        tenant_id=str(tenant),
        execution_session_id=str(session),
        work_unit_id=None if work_unit is None else str(work_unit),
        source=str(source),
        payload_json=str(payload),
    )


def configure_connection(conn: sqlite3.Connection, *, synchronous: str) -> None:
    """Set and verify the pragmas the log's durability depends on."""
    if synchronous not in SYNCHRONOUS_MODES:
        raise LogError(f"synchronous must be one of {SYNCHRONOUS_MODES}, got {synchronous!r}")
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise LogError(f"could not enable WAL journal mode (SQLite answered {mode!r})")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    got = conn.execute("PRAGMA synchronous").fetchone()[0]
    if got != SYNCHRONOUS_MODES.index(synchronous):
        raise LogError(f"PRAGMA synchronous={synchronous} did not stick (SQLite reports {got})")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # Checkpoint whenever the WAL passes ~4 MB (1,000 pages), SQLite's default, stated on purpose.
    conn.execute("PRAGMA wal_autocheckpoint=1000")


def build_read_query(
    after_seq: int, limit: int, types: Iterable[str] | None, work_unit_id: str | None
) -> tuple[str, list[object]]:
    clauses = ["seq > ?"]
    params: list[object] = [after_seq]
    type_list = list(types or ())
    if type_list:
        clauses.append(f"type IN ({','.join('?' * len(type_list))})")
        params.extend(type_list)
    if work_unit_id:
        clauses.append("work_unit_id = ?")
        params.append(work_unit_id)
    params.append(max(1, min(limit, MAX_READ_LIMIT)))
    return f"SELECT {COLUMNS} FROM events WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT ?", params


class SqliteEventStore:
    """The writer's connection. Use it from one thread at a time."""

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self._conn: sqlite3.Connection | None = None

    def open(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            configure_connection(conn, synchronous=self.synchronous)
            conn.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise LogError(f"opening event log {self.path}: {exc}") from exc
        self._conn = conn

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LogError("event store is not open")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                # Fold the WAL back into the database so a clean close leaves one file.
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass  # a busy reader only delays the checkpoint; the WAL stays valid
            self._conn.close()
            self._conn = None

    def last_seq(self) -> int:
        row = self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
        return int(row[0])

    def find_by_keys(self, keys: Sequence[str]) -> dict[str, Event]:
        """Committed events with any of these idempotency keys."""
        found: dict[str, Event] = {}
        unique = list(dict.fromkeys(keys))
        try:
            for start in range(0, len(unique), KEY_LOOKUP_CHUNK):
                chunk = unique[start : start + KEY_LOOKUP_CHUNK]
                sql = f"SELECT {COLUMNS} FROM events WHERE idempotency_key IN ({','.join('?' * len(chunk))})"
                for row in self.conn.execute(sql, chunk):
                    event = row_to_event(row)
                    found[event.idempotency_key] = event
        except sqlite3.Error as exc:
            raise LogError(f"looking up idempotency keys: {exc}") from exc
        return found

    def insert(self, events: Sequence[Event]) -> None:
        """Commit these events, whose seqs must continue the log, in one transaction."""
        if not events:
            return
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    f"INSERT INTO events ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    [
                        (
                            e.seq,
                            e.event_id,
                            e.type,
                            e.idempotency_key,
                            e.ts_us,
                            e.tenant_id,
                            e.execution_session_id,
                            e.work_unit_id,
                            e.source,
                            e.payload_json,
                        )
                        for e in events
                    ],
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise LogError(f"committing {len(events)} events from seq {events[0].seq}: {exc}") from exc

    def read(
        self,
        after_seq: int = 0,
        limit: int = 1000,
        *,
        types: Iterable[str] | None = None,
        work_unit_id: str | None = None,
    ) -> list[Event]:
        sql, params = build_read_query(after_seq, limit, types, work_unit_id)
        try:
            return [row_to_event(row) for row in self.conn.execute(sql, params)]
        except sqlite3.Error as exc:
            raise LogError(f"reading events after seq {after_seq}: {exc}") from exc
