"""Log append throughput with concurrent appenders (group commit).

    python bench/log_append.py [--events 200000] [--appenders 64] [--per-call 1]

Each appender awaits `EventLog.append` (or `append_many` with --per-call > 1) in a loop,
so the writer's batches are as large as the number of appenders waiting.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from krakod.log import EventLog, NewEvent


async def run(events: int, appenders: int, per_call: int, synchronous: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = EventLog(Path(tmp) / "events.sqlite", synchronous=synchronous)
        await log.open()
        per_appender = events // appenders

        async def appender(index: int) -> None:
            for n in range(0, per_appender, per_call):
                batch = [
                    NewEvent(
                        type="workunit.completed",
                        idempotency_key=f"bench:{index}:{n + i}",
                        tenant_id="t1",
                        execution_session_id="s1",
                        work_unit_id=f"wu-{index}-{n + i}",
                        payload={"attempt": 1, "node_id": "n1", "cpu_seconds": "0.001000", "output": {"ok": True}},
                    )
                    for i in range(per_call)
                ]
                await log.append_many(batch)

        started = time.perf_counter()
        await asyncio.gather(*(appender(i) for i in range(appenders)))
        elapsed = time.perf_counter() - started
        total = log.last_seq
        await log.close()
    print(
        f"appended {total} events with {appenders} appenders x {per_call}/call, synchronous={synchronous}: "
        f"{elapsed:.2f} s, {total / elapsed:,.0f} events/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--appenders", type=int, default=64)
    parser.add_argument("--per-call", type=int, default=1)
    parser.add_argument("--synchronous", default="FULL")
    args = parser.parse_args()
    asyncio.run(run(args.events, args.appenders, args.per_call, args.synchronous))


if __name__ == "__main__":
    main()
