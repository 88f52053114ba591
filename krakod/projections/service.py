"""ProjectionService: the one object krakod holds for billing, wallets, trust and replay.

Threads: the runner (fold and writes) owns one thread; queries (wallets, ledger,
rollups, export) use a second thread with their own read connection, so a query
never waits for a batch; checks and replay verification use a third, so they never
delay either. The event loop only awaits them. `trust_scores()` and `quarantined()`
are synchronous reads of an immutable snapshot swapped after each batch: cheap
enough for the scheduler's hot path.

Lifecycle: `start(log, data_dir)` opens DATA_DIR/projections.sqlite, resumes each
projection from its stored position and starts the runner task, which wakes on
`EventLog.wait_for_commit`. After each batch that caught up with the log, the trust
publisher appends the trust events the batch calls for. `stop()` cancels the task
(a batch in flight still commits) and closes everything; it is safe to call twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from krakod.log import EventLog, LogError, NewEvent
from krakod.projections import commands
from krakod.projections.billing import BillingProjection
from krakod.projections.billing_schema import LINE_CPU
from krakod.projections.checker import Finding, check_billing
from krakod.projections.money import from_micros
from krakod.projections.pricing import Pricing, pricing_from_env
from krakod.projections.replay import EXPORT_PAGE_ROWS, ReplayReport, ledger_jsonl, ledger_page, verify_replay
from krakod.projections.runner import (
    DEFAULT_BATCH_LIMIT,
    PROJECTIONS_FILE_NAME,
    Projection,
    ProjectionError,
    ProjectionRunner,
    open_reader,
)
from krakod.projections.trust import DEFAULT_PARAMS, NodeTrust, TrustParams, TrustProjection
from krakod.projections.trust_publisher import DEFAULT_POLICY, PublishPolicy, trust_events

logger = logging.getLogger(__name__)

MAX_LEDGER_PAGE = 10_000
DEFAULT_LEDGER_PAGE = 1_000
SCRATCH_FILE_NAME = "projections-replay.sqlite"


@dataclass(frozen=True, slots=True)
class WalletView:
    tenant_id: str
    credited_usd: Decimal
    debited_usd: Decimal
    reserved_usd: Decimal

    @property
    def balance_usd(self) -> Decimal:
        return self.credited_usd - self.debited_usd

    def to_json(self) -> dict[str, str]:
        return {
            "tenant_id": self.tenant_id,
            "balance_usd": str(self.balance_usd),
            "credited_usd": str(self.credited_usd),
            "debited_usd": str(self.debited_usd),
            "reserved_usd": str(self.reserved_usd),
        }


@dataclass(frozen=True, slots=True)
class SessionRollup:
    session_id: str
    tenant_id: str
    cpu_seconds: Decimal
    tokens_in: int
    tokens_out: int
    total_tokens: int
    lines: int
    cost_by_line_type: Mapping[str, Decimal] = field(default_factory=dict)

    @property
    def cost_usd(self) -> Decimal:
        return sum(self.cost_by_line_type.values(), Decimal("0.000000"))


@dataclass(frozen=True, slots=True)
class CheckReport:
    findings: tuple[Finding, ...]
    checked_through_seq: int


def default_projections(trust_params: TrustParams = DEFAULT_PARAMS) -> list[Projection]:
    return [BillingProjection(), TrustProjection(trust_params)]


class ProjectionService:
    """Runs the projections inside krakod and answers questions about them."""

    def __init__(
        self,
        *,
        batch_limit: int = DEFAULT_BATCH_LIMIT,
        synchronous: str = "FULL",
        trust_params: TrustParams = DEFAULT_PARAMS,
        publish_policy: PublishPolicy = DEFAULT_POLICY,
        publish_trust: bool = True,
    ) -> None:
        self.batch_limit = batch_limit
        self.synchronous = synchronous
        self.trust_params = trust_params
        self.publish_policy = publish_policy
        self.publish_trust = publish_trust
        self._log: EventLog | None = None
        self._data_dir: Path | None = None
        self._runner: ProjectionRunner | None = None
        self._trust: TrustProjection | None = None
        self._reader: sqlite3.Connection | None = None
        self._fold_thread: ThreadPoolExecutor | None = None
        self._query_thread: ThreadPoolExecutor | None = None
        self._admin_thread: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._advanced = asyncio.Event()
        self._kick = asyncio.Event()
        self._failure: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def db_path(self) -> Path:
        if self._data_dir is None:
            raise ProjectionError("projection service is not started")
        return self._data_dir / PROJECTIONS_FILE_NAME

    async def start(self, log: EventLog, data_dir: Path) -> None:
        """Open DATA_DIR/projections.sqlite, resume every projection and start following the log."""
        if self._task is not None:
            raise RuntimeError("projection service already started")
        self._log, self._data_dir = log, Path(data_dir)
        self._data_dir.mkdir(parents=True, exist_ok=True)
        projections = default_projections(self.trust_params)
        self._trust = projections[1]  # type: ignore[assignment]
        runner = ProjectionRunner(
            self.db_path, log.path, projections, synchronous=self.synchronous, batch_limit=self.batch_limit
        )
        self._fold_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="krako-projections")
        self._query_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="krako-projection-queries")
        self._admin_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="krako-projection-admin")
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._fold_thread, runner.open)
            self._runner = runner
            if max(runner.positions.values(), default=0) > log.last_seq:
                # The projections describe a longer log than this one: the log is the truth.
                logger.warning("projections are ahead of the log (seq %d); rebuilding from seq 0", log.last_seq)
                await loop.run_in_executor(self._fold_thread, runner.reset)
            self._reader = await loop.run_in_executor(self._query_thread, open_reader, self.db_path)
        except BaseException:
            await self._close_resources()
            raise
        self._task = asyncio.create_task(self._run(), name="krako-projections")

    async def stop(self) -> None:
        """Stop following the log and close the databases. Safe to call twice."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._close_resources()

    async def _close_resources(self) -> None:
        loop = asyncio.get_running_loop()
        if self._runner is not None and self._fold_thread is not None:
            await loop.run_in_executor(self._fold_thread, self._runner.close)
        if self._reader is not None and self._query_thread is not None:
            await loop.run_in_executor(self._query_thread, self._reader.close)
        self._runner, self._reader = None, None
        for pool in (self._fold_thread, self._query_thread, self._admin_thread):
            if pool is not None:
                pool.shutdown(wait=True)
        self._fold_thread = self._query_thread = self._admin_thread = None
        self._wake()

    @property
    def failure(self) -> BaseException | None:
        """The error that stopped the runner, if any (the runner does not restart by itself)."""
        return self._failure

    # -- following the log -----------------------------------------------------------------

    async def _run(self) -> None:
        log_, runner = self._require_log(), self._require_runner()
        loop = asyncio.get_running_loop()
        try:
            while True:
                visible = log_.last_seq
                if runner.position >= visible:
                    if not await self._idle(log_, runner.position):
                        return  # the log closed
                    continue
                await loop.run_in_executor(self._fold_thread, runner.step, visible)
                self._wake()
                if self.publish_trust and runner.position >= log_.last_seq:
                    await self._publish_trust(log_)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._failure = exc
            logger.critical("projection runner stopped: %s", exc, exc_info=True)
            self._wake()

    async def _idle(self, log_: EventLog, position: int) -> bool:
        """Sleep until the log commits past `position` or `rebuild` kicks; False when the log closed."""
        committed = asyncio.ensure_future(log_.wait_for_commit(position))
        kicked = asyncio.ensure_future(self._kick.wait())
        try:
            done, _ = await asyncio.wait({committed, kicked}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            committed.cancel()
            kicked.cancel()
        self._kick.clear()
        return kicked in done or committed.result()

    async def _publish_trust(self, log_: EventLog) -> None:
        events = trust_events(self.trust(), self.publish_policy)
        if not events:
            return
        try:
            await log_.append_many(events)
        except LogError as exc:
            logger.warning("could not publish %d trust events: %s", len(events), exc)

    def _wake(self) -> None:
        woken, self._advanced = self._advanced, asyncio.Event()
        woken.set()

    @property
    def position(self) -> int:
        """Every projection has applied the log up to this seq."""
        return 0 if self._runner is None else self._runner.position

    def positions(self) -> dict[str, int]:
        return {} if self._runner is None else dict(self._runner.positions)

    def lag(self) -> int:
        """log.last_seq - position: how many events the slowest projection is behind."""
        return 0 if self._log is None else max(0, self._log.last_seq - self.position)

    async def wait_for_position(self, seq: int, timeout_s: float | None = None) -> bool:
        """Wait until every projection applied the log up to `seq`; False on timeout or stop."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while self.position < seq:
            if self._failure is not None:
                raise ProjectionError(f"projection runner failed: {self._failure}") from self._failure
            if self._task is None:
                return False
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._advanced.wait(), remaining)
            except TimeoutError:
                return False
        return True

    async def rebuild(self, names: Iterable[str] | None = None) -> None:
        """Drop these projections' rows (all by default); the runner refolds them from seq 0."""
        runner = self._require_runner()
        await asyncio.get_running_loop().run_in_executor(self._fold_thread, runner.reset, names)
        self._wake()
        self._kick.set()  # the runner may be asleep: positions moved back, not the log forward

    # -- trust (synchronous: for the scheduler) ---------------------------------------------

    def trust(self) -> Mapping[str, NodeTrust]:
        """The projected trust of every node seen in the log."""
        return {} if self._trust is None else self._trust.snapshot

    def trust_scores(self) -> dict[str, Decimal]:
        return {node_id: view.score for node_id, view in self.trust().items()}

    def quarantined(self) -> set[str]:
        """Nodes whose latest quarantine event in the log is `node.quarantined`."""
        return {node_id for node_id, view in self.trust().items() if view.quarantined}

    # -- money -------------------------------------------------------------------------------

    async def _query(self, fn: Any, *args: Any) -> Any:
        if self._reader is None or self._query_thread is None:
            raise ProjectionError("projection service is not started")
        return await asyncio.get_running_loop().run_in_executor(self._query_thread, fn, self._reader, *args)

    async def wallets(self, tenant_id: str | None = None) -> list[WalletView]:
        """Wallets in tenant order (one tenant, or all when None or empty)."""
        return await self._query(_wallets, tenant_id or None)  # type: ignore[no-any-return]

    async def ledger(
        self, tenant_id: str | None = None, after_id: int = 0, limit: int = DEFAULT_LEDGER_PAGE
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of ledger lines (public JSON form) with id > after_id, and the next after_id."""
        if after_id < 0:
            raise ValueError(f"after_id must not be negative, got {after_id}")
        limit = DEFAULT_LEDGER_PAGE if limit <= 0 else min(limit, MAX_LEDGER_PAGE)
        page = await self._query(ledger_page, tenant_id or None, after_id, limit)
        return page, (int(page[-1]["id"]) if page else after_id)

    async def export_ledger_jsonl(self, tenant_id: str | None = None) -> AsyncIterator[str]:
        """Every ledger line as canonical JSON, one per item (no newline): byte-identical for the same log."""
        if self._data_dir is None or self._admin_thread is None:
            raise ProjectionError("projection service is not started")
        loop = asyncio.get_running_loop()
        conn = await loop.run_in_executor(self._admin_thread, open_reader, self.db_path)
        try:
            await loop.run_in_executor(self._admin_thread, conn.execute, "BEGIN")  # one snapshot for the export
            lines = ledger_jsonl(conn, tenant_id or None)
            while True:
                page = await loop.run_in_executor(self._admin_thread, _take, lines, EXPORT_PAGE_ROWS)
                for line in page:
                    yield line
                if len(page) < EXPORT_PAGE_ROWS:
                    return
        finally:
            if self._admin_thread is not None:
                await loop.run_in_executor(self._admin_thread, conn.close)

    async def session_rollup(self, session_id: str) -> SessionRollup | None:
        return await self._query(_session_rollup, session_id)  # type: ignore[no-any-return]

    async def check(self, *, against_log: bool = True) -> CheckReport:
        """Billing anomalies (see checker.py); `against_log` also refolds the log and compares lines."""
        log_ = self._require_log()
        findings, through = await asyncio.get_running_loop().run_in_executor(
            self._admin_thread, lambda: check_billing(self.db_path, log_.path, against_log=against_log)
        )
        return CheckReport(tuple(findings), through)

    async def verify_replay(self, log: EventLog | None = None) -> ReplayReport:
        """Rebuild every projection from seq 0 into a scratch database; one digest pair per view."""
        log_ = log or self._require_log()
        scratch = self.db_path.with_name(SCRATCH_FILE_NAME)
        return await asyncio.get_running_loop().run_in_executor(  # type: ignore[no-any-return]
            self._admin_thread,
            verify_replay,
            self.db_path,
            log_.path,
            scratch,
            lambda: default_projections(self.trust_params),
        )

    # -- commands --------------------------------------------------------------------------

    @staticmethod
    def credit_event(tenant_id: str, amount_usd: str | Decimal, client_key: str) -> NewEvent:
        """The `wallet.credited` event of a top-up (ValueError with a clear message on bad input)."""
        return commands.credit_event(tenant_id, amount_usd, client_key)

    async def pricing_event(self, config: Pricing | None = None) -> NewEvent | None:
        """The `billing.pricing.updated` to append at start, or None when the log already says so.

        `config` defaults to `pricing_from_env()`; the latest fact is found by probing the keys
        `pricing:1`, `pricing:2`, ... (one index lookup each), so this never scans the log.
        """
        log_ = self._require_log()
        wanted = config if config is not None else pricing_from_env()
        version, latest = 0, None
        while (event := await log_.get_by_key(f"pricing:{version + 1}")) is not None:
            version, latest = version + 1, event
        if latest is None:
            return commands.pricing_event_for(wanted, None)
        try:
            current = Pricing.from_payload(latest.payload)
        except ValueError:
            logger.warning("latest pricing event (seq %d) is malformed; superseding it", latest.seq)
            return commands.pricing_event_at(wanted, version + 1)
        return commands.pricing_event_for(wanted, current)

    def _require_log(self) -> EventLog:
        if self._log is None:
            raise ProjectionError("projection service is not started")
        return self._log

    def _require_runner(self) -> ProjectionRunner:
        if self._runner is None:
            raise ProjectionError("projection service is not started")
        return self._runner


def _take(lines: Any, count: int) -> list[str]:
    page = []
    for line in lines:
        page.append(line)
        if len(page) >= count:
            break
    return page


def _wallets(conn: sqlite3.Connection, tenant_id: str | None) -> list[WalletView]:
    sql = "SELECT tenant_id, credited_micros, debited_micros, reserved_micros FROM billing_wallets"
    rows = (
        conn.execute(f"{sql} WHERE tenant_id = ?", (tenant_id,))
        if tenant_id
        else conn.execute(f"{sql} ORDER BY tenant_id")
    )
    return [WalletView(t, from_micros(c), from_micros(d), from_micros(r)) for t, c, d, r in rows]


def _session_rollup(conn: sqlite3.Connection, session_id: str) -> SessionRollup | None:
    rows = conn.execute(
        "SELECT line_type, tenant_id, lines, quantity_micros, tokens_in, tokens_out, total_tokens, amount_micros "
        "FROM billing_sessions WHERE session_id = ? ORDER BY line_type",
        (session_id,),
    ).fetchall()
    if not rows:
        return None
    cpu = sum(r[3] for r in rows if r[0] == LINE_CPU)
    return SessionRollup(
        session_id=session_id,
        tenant_id=rows[0][1],
        cpu_seconds=from_micros(cpu),
        tokens_in=sum(r[4] for r in rows),
        tokens_out=sum(r[5] for r in rows),
        total_tokens=sum(r[6] for r in rows),
        lines=sum(r[2] for r in rows),
        cost_by_line_type={r[0]: from_micros(r[7]) for r in rows},
    )
