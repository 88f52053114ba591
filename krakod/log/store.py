"""SQLite (WAL) storage of the event log.

The store is synchronous and confined to one thread per connection; the async
front (`krakod.log.writer.EventLog`) runs it on a dedicated writer thread and
reads through aiosqlite. Driver errors are translated here, once, to LogError.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from functools import cache
from itertools import chain
from operator import attrgetter
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

COLUMNS = "seq, event_id, type, idempotency_key, ts_us, tenant_id, execution_session_id, work_unit_id, source, payload"
BUSY_TIMEOUT_MS = 5_000
# SQLite allows 32,766 host parameters; keep IN (...) lists well below it.
KEY_LOOKUP_CHUNK = 500
# Rows per multi-row INSERT statement (10 parameters each). One statement binds its rows and
# then runs without the GIL; executemany() takes the GIL back for every row, which the event
# loop thread contends for. Smaller remainders are split into powers of two so that at most
# ten distinct statements exist and all stay in the connection's statement cache.
INSERT_CHUNK_ROWS = 512
_row_of = attrgetter(*(c.strip() for c in COLUMNS.replace("payload", "payload_json").split(",")))
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


@cache
def _insert_sql(rows: int) -> str:
    return f"INSERT INTO events ({COLUMNS}) VALUES " + ",".join(("(?,?,?,?,?,?,?,?,?,?)",) * rows)


def _insert_chunks(count: int) -> list[tuple[int, int]]:
    """(start, rows) pieces: full chunks, then the remainder in descending powers of two."""
    pieces: list[tuple[int, int]] = []
    start = 0
    while count - start >= INSERT_CHUNK_ROWS:
        pieces.append((start, INSERT_CHUNK_ROWS))
        start += INSERT_CHUNK_ROWS
    size = INSERT_CHUNK_ROWS // 2
    while start < count:
        if count - start >= size:
            pieces.append((start, size))
            start += size
        size //= 2
    return pieces


def find_by_keys(conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, Event]:
    """Committed events with any of these idempotency keys."""
    found: dict[str, Event] = {}
    unique = list(dict.fromkeys(keys))
    try:
        for start in range(0, len(unique), KEY_LOOKUP_CHUNK):
            chunk = unique[start : start + KEY_LOOKUP_CHUNK]
            sql = f"SELECT {COLUMNS} FROM events WHERE idempotency_key IN ({','.join('?' * len(chunk))})"
            for row in conn.execute(sql, chunk):
                event = row_to_event(row)
                found[event.idempotency_key] = event
    except sqlite3.Error as exc:
        raise LogError(f"looking up idempotency keys: {exc}") from exc
    return found


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
        return find_by_keys(self.conn, keys)

    def insert(self, events: Sequence[Event]) -> None:
        """Commit these events, whose seqs must continue the log, in one transaction."""
        if not events:
            return
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for start, rows in _insert_chunks(len(events)):
                    params = list(chain.from_iterable(map(_row_of, events[start : start + rows])))
                    conn.execute(_insert_sql(rows), params)
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


class SqliteKeyReader:
    """A second, read-only connection for idempotency-key lookups.

    In WAL mode it reads the last committed snapshot while the writer's connection
    commits, so the writer can decide the next batch during the previous batch's fsync.
    It does not see events being committed; the writer keeps those keys in memory.
    Use it from one thread at a time.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    def open(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA query_only=1")
        except sqlite3.Error as exc:
            raise LogError(f"opening key reader of {self.path}: {exc}") from exc
        self._conn = conn

    def find_by_keys(self, keys: Sequence[str]) -> dict[str, Event]:
        if self._conn is None:
            raise LogError("key reader is not open")
        return find_by_keys(self._conn, keys)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
