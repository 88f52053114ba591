"""Log append throughput with concurrent appenders (group commit, synchronous=FULL).

    python bench/log_append.py                      # both scenarios, 3 runs each
    python bench/log_append.py --scenario batches --events 100000 --appenders 8 --per-call 100
    python bench/log_append.py --scenario single --events 50000 --appenders 256
    python bench/log_append.py --prebuilt           # build the NewEvents before the clock starts

Scenarios:
  single   many appenders, each awaiting `EventLog.append` of one event in a loop
  batches  a few appenders, each awaiting `EventLog.append_many` of --per-call events

Each appender waits for its append before the next, so the writer's batches are as
large as what the appenders have outstanding. Events are built inside the timed loop
(as a daemon would) unless --prebuilt. Every run uses a fresh database.

Printed per run: events/s (wall clock), CPU microseconds per event for the whole
process (less sensitive to other load on the machine than wall clock), and the
number of transactions with their mean size. The summary line gives the best and
the median of the runs; this machine is shared, so the best is the capacity figure
and the spread says how noisy the measurement was.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from krakod.log import Event, EventLog, NewEvent


@dataclass(frozen=True)
class Run:
    events: int
    wall_s: float
    cpu_s: float
    transactions: int

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_s / self.events * 1e6


def make_event(appender: int, n: int) -> NewEvent:
    return NewEvent(
        type="workunit.completed",
        idempotency_key=f"bench:{appender}:{n}",
        tenant_id="t1",
        execution_session_id="s1",
        work_unit_id=f"wu-{appender}-{n}",
        payload={"attempt": 1, "node_id": "n1", "cpu_seconds": "0.001000", "output": {"ok": True}},
    )


async def run_once(events: int, appenders: int, per_call: int, synchronous: str, prebuilt: bool) -> Run:
    per_appender = events // appenders // per_call * per_call
    with tempfile.TemporaryDirectory() as tmp:
        log = EventLog(Path(tmp) / "events.sqlite", synchronous=synchronous)
        await log.open()
        transactions = 0

        def count(committed: Sequence[Event]) -> None:
            nonlocal transactions
            transactions += 1

        log.add_commit_listener(count)
        ready = [[make_event(a, n) for n in range(per_appender)] for a in range(appenders)] if prebuilt else None

        async def appender(index: int) -> None:
            for n in range(0, per_appender, per_call):
                if ready is not None:
                    batch = ready[index][n : n + per_call]
                else:
                    batch = [make_event(index, n + i) for i in range(per_call)]
                if per_call == 1:
                    await log.append(batch[0])
                else:
                    await log.append_many(batch)

        started_wall, started_cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(appender(i) for i in range(appenders)))
        wall_s, cpu_s = time.perf_counter() - started_wall, time.process_time() - started_cpu
        total = log.last_seq
        await log.close()
    if total != appenders * per_appender:
        raise SystemExit(f"expected {appenders * per_appender} events, the log holds {total}")
    return Run(total, wall_s, cpu_s, transactions)


def report(name: str, args: argparse.Namespace, appenders: int, per_call: int, events: int) -> None:
    runs = []
    for index in range(args.runs):
        run = asyncio.run(run_once(events, appenders, per_call, args.synchronous, args.prebuilt))
        runs.append(run)
        print(
            f"  {name} run {index + 1}: {run.events} events in {run.wall_s:.2f} s = {run.events_per_s:,.0f} events/s; "
            f"{run.cpu_us_per_event:.1f} us CPU/event; {run.transactions} transactions "
            f"({run.events / max(1, run.transactions):.0f} events each)"
        )
    rates = [r.events_per_s for r in runs]
    print(
        f"{name}: {appenders} appenders x {per_call} event(s)/call, synchronous={args.synchronous}, "
        f"{'pre-built' if args.prebuilt else 'built in the loop'}: best {max(rates):,.0f} events/s, "
        f"median {statistics.median(rates):,.0f} events/s over {len(runs)} runs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=("both", "single", "batches"), default="both")
    parser.add_argument("--events", type=int, help="events per run (default 50,000 single, 100,000 batches)")
    parser.add_argument("--appenders", type=int, help="concurrent appenders (default 256 single, 8 batches)")
    parser.add_argument("--per-call", type=int, default=100, help="events per append_many call (batches)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prebuilt", action="store_true", help="build the events before timing")
    parser.add_argument("--synchronous", default="FULL")
    args = parser.parse_args()
    if args.scenario in ("both", "single"):
        report("single", args, args.appenders or 256, 1, args.events or 50_000)
    if args.scenario in ("both", "batches"):
        report("batches", args, args.appenders or 8, args.per_call, args.events or 100_000)


if __name__ == "__main__":
    main()
