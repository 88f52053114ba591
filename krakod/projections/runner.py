"""The shared projection runner: bounded batches, positions stored with the rows.

Each projection declares the event types it folds. The runner reads the log
once per batch (the union of those types, at most `batch_limit` events),
decodes each payload once, hands every projection the events after its own
position, and commits all rows *and* all positions in one SQLite transaction
of the projections database. A crash therefore loses a whole batch or nothing,
and the runner resumes from the stored positions: each event is applied
exactly once.

Projections keep hot state in memory (wallet totals, trust state) as a cache of
their rows. When a transaction fails, the runner rolls back and asks every
projection to reload from its rows, so memory never runs ahead of the database.

The runner is synchronous and owns its two SQLite connections (the projections
database, and a read-only connection to the log file); `service.py` runs it on
one dedicated thread and wakes it with `EventLog.wait_for_commit`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from krakod.log.store import BUSY_TIMEOUT_MS, configure_connection
from krakod.log.types import LogError

log = logging.getLogger(__name__)

# One event as folds see it: seq, event_id, type, ts_us, tenant_id, session_id, work_unit_id, payload.
Item = tuple[int, str, str, int, str, str, str | None, dict[str, Any]]
# A view is what one digest covers: (table, ORDER BY clause) pairs, dumped in this order.
View = tuple[tuple[str, str], ...]

PROJECTIONS_FILE_NAME = "projections.sqlite"
DEFAULT_BATCH_LIMIT = 5_000
CACHE_KIB = 65_536  # page cache of the projections database
MAX_BATCH_LIMIT = 20_000
# Exceptions a fold raises on a malformed event: recorded and skipped, the same way on every replay.
FOLD_ERRORS = (ValueError, TypeError, KeyError, AttributeError, ArithmeticError)

_POSITIONS_SCHEMA = "CREATE TABLE IF NOT EXISTS projection_positions (name TEXT PRIMARY KEY, seq INTEGER NOT NULL)"
_READ_COLUMNS = "seq, event_id, type, ts_us, tenant_id, execution_session_id, work_unit_id, payload"


class ProjectionError(Exception):
    """An operating error of the projections database (the driver's error is its __cause__)."""


class Projection(Protocol):
    """A pure fold over the log. Implementations must not read the clock, randomness or environment."""

    name: str
    event_types: frozenset[str]
    views: Mapping[str, View]  # digest name -> tables; together they hold every row the fold writes

    def create_schema(self, conn: sqlite3.Connection) -> None: ...

    def load(self, conn: sqlite3.Connection) -> None:
        """Reset in-memory state to what the rows say (after open, rollback or reset)."""

    def apply(self, conn: sqlite3.Connection, items: Sequence[Item]) -> None:
        """Fold these events (seq order) and write the resulting rows; the runner owns the transaction."""


def open_database(path: Path, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection to a projections database: WAL and `synchronous` verified, positions table present."""
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        configure_connection(conn, synchronous=synchronous)
        # The ledger's indexes (event ids are random) outgrow SQLite's 2 MB default cache within
        # a few hundred thousand lines; a miss costs a read syscall on the fold's hot path.
        conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute(_POSITIONS_SCHEMA)
    except (sqlite3.Error, LogError) as exc:
        raise ProjectionError(f"opening projections database {path}: {exc}") from exc
    return conn


def open_reader(path: Path, *, query_only: bool = True) -> sqlite3.Connection:
    """A read-only connection (log file or projections database) for one thread at a time."""
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if query_only:
            conn.execute("PRAGMA query_only=1")
    except sqlite3.Error as exc:
        raise ProjectionError(f"opening {path} for reading: {exc}") from exc
    return conn


_SCAN_ONCE: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _decode(payload_json: str) -> Any:
    """The payload as the fast path decodes it; for a row it cannot read, what json.loads makes of it.

    Per row, so a batch boundary never changes how an event decodes (and folds).
    """
    try:
        return _SCAN_ONCE(payload_json, 0)[0]
    except (ValueError, StopIteration):
        pass
    try:
        return json.loads(payload_json)
    except ValueError:
        return {}


class ProjectionRunner:
    """Feeds projections from the log file in bounded batches; synchronous, one thread at a time."""

    def __init__(
        self,
        db_path: Path,
        log_path: Path,
        projections: Sequence[Projection],
        *,
        synchronous: str = "FULL",
        batch_limit: int = DEFAULT_BATCH_LIMIT,
    ) -> None:
        names = [p.name for p in projections]
        if len(set(names)) != len(names):
            raise ValueError(f"projection names must be unique, got {names}")
        if not 1 <= batch_limit <= MAX_BATCH_LIMIT:
            raise ValueError(f"batch_limit must be within [1, {MAX_BATCH_LIMIT}], got {batch_limit}")
        self.db_path = Path(db_path)
        self.log_path = Path(log_path)
        self.projections = tuple(projections)
        self.synchronous = synchronous
        self.batch_limit = batch_limit
        self.positions: dict[str, int] = dict.fromkeys(names, 0)
        self._conn: sqlite3.Connection | None = None
        self._log: sqlite3.Connection | None = None

    # -- lifecycle ---------------------------------------------------------------

    def open(self) -> None:
        conn = open_database(self.db_path, synchronous=self.synchronous)
        try:
            for projection in self.projections:
                projection.create_schema(conn)
            stored = dict(conn.execute("SELECT name, seq FROM projection_positions").fetchall())
            self.positions = {p.name: int(stored.get(p.name, 0)) for p in self.projections}
            for projection in self.projections:
                projection.load(conn)
            self._log = open_reader(self.log_path)
        except sqlite3.Error as exc:
            conn.close()
            raise ProjectionError(f"preparing projections in {self.db_path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def close(self) -> None:
        """Close both connections. Safe to call twice."""
        for conn in (self._log, self._conn):
            if conn is not None:
                conn.close()
        self._log = self._conn = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ProjectionError("projection runner is not open")
        return self._conn

    @property
    def position(self) -> int:
        """The lowest position: every projection has applied the log up to here."""
        return min(self.positions.values(), default=0)

    def log_last_seq(self) -> int:
        if self._log is None:
            raise ProjectionError("projection runner is not open")
        try:
            return int(self._log.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])
        except sqlite3.Error as exc:
            raise ProjectionError(f"reading the last seq of {self.log_path}: {exc}") from exc

    # -- folding -----------------------------------------------------------------

    def step(self, upto: int, targets: Mapping[str, int] | None = None) -> int:
        """Apply one batch of events with seq <= upto (and <= each projection's target); events read."""
        goals = targets or {}
        active = [(p, self.positions[p.name], min(upto, goals.get(p.name, upto))) for p in self.projections]
        active = [(p, start, end) for p, start, end in active if start < end]
        if not active:
            return 0
        low = min(start for _, start, _ in active)
        high = max(end for _, _, end in active)
        types = sorted(set().union(*(p.event_types for p, _, _ in active)))
        rows = self._read(low, high, types)
        reached = rows[-1][0] if len(rows) >= self.batch_limit else high
        try:
            # The C scanner behind json.loads, without its Python wrapper: payloads in the log are
            # canonical JSON (no surrounding whitespace), and decoding is most of a replay's CPU.
            scan = _SCAN_ONCE
            items: list[Item] = [(r[0], r[1], r[2], r[3], r[4], r[5], r[6], scan(r[7], 0)[0]) for r in rows]
        except (ValueError, StopIteration):
            items = [(r[0], r[1], r[2], r[3], r[4], r[5], r[6], _decode(r[7])) for r in rows]
        self._commit(active, items, low, reached)
        return len(rows)

    def catch_up(self, upto: int, targets: Mapping[str, int] | None = None) -> None:
        """Step until every projection reached min(upto, its target)."""
        goals = targets or {}
        while any(self.positions[p.name] < min(upto, goals.get(p.name, upto)) for p in self.projections):
            self.step(upto, goals)

    def _read(self, after: int, upto: int, types: Sequence[str]) -> list[tuple[Any, ...]]:
        if self._log is None:
            raise ProjectionError("projection runner is not open")
        sql = (
            f"SELECT {_READ_COLUMNS} FROM events WHERE seq > ? AND seq <= ? "
            f"AND type IN ({','.join('?' * len(types))}) ORDER BY seq LIMIT ?"
        )
        try:
            return self._log.execute(sql, [after, upto, *types, self.batch_limit]).fetchall()
        except sqlite3.Error as exc:
            raise ProjectionError(f"reading the log after seq {after}: {exc}") from exc

    def _commit(
        self, active: Sequence[tuple[Projection, int, int]], items: Sequence[Item], low: int, reached: int
    ) -> None:
        conn = self.conn
        moved: dict[str, int] = {}
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for projection, start, end in active:
                    stop = min(end, reached)
                    if stop <= start:
                        continue
                    types = projection.event_types
                    if start == low and stop == reached:
                        mine = [it for it in items if it[2] in types]
                    else:
                        mine = [it for it in items if start < it[0] <= stop and it[2] in types]
                    projection.apply(conn, mine)
                    conn.execute(
                        "INSERT INTO projection_positions (name, seq) VALUES (?, ?) "
                        "ON CONFLICT(name) DO UPDATE SET seq = excluded.seq",
                        (projection.name, stop),
                    )
                    moved[projection.name] = stop
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._reload()
                raise
        except sqlite3.Error as exc:
            raise ProjectionError(f"committing projections for seq {low + 1}..{reached}: {exc}") from exc
        self.positions.update(moved)

    def _reload(self) -> None:
        for projection in self.projections:
            try:
                projection.load(self.conn)
            except Exception:  # the original error matters more
                log.exception("reloading projection %s after a failed batch", projection.name)

    # -- maintenance -------------------------------------------------------------

    def reset(self, names: Iterable[str] | None = None) -> None:
        """Drop the rows of these projections (all by default) and rewind them to seq 0."""
        wanted = set(names) if names is not None else {p.name for p in self.projections}
        unknown = wanted - set(self.positions)
        if unknown:
            raise ValueError(f"unknown projections: {sorted(unknown)}")
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for projection in self.projections:
                    if projection.name not in wanted:
                        continue
                    for view in projection.views.values():
                        for table, _ in view:
                            conn.execute(f"DELETE FROM {table}")
                    conn.execute("DELETE FROM projection_positions WHERE name = ?", (projection.name,))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise ProjectionError(f"resetting projections {sorted(wanted)}: {exc}") from exc
        finally:
            self._reload()
        for name in wanted:
            self.positions[name] = 0
