"""Child process for the crash test: append keyed events until killed.

    python crash_appender.py DB_PATH

Several appenders run concurrently (so the writer has batches in flight when the
SIGKILL lands); after each append returns, the child prints `ack <key> <seq>`.
Only acknowledged appends are promised to survive.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from krakod.log import EventLog, NewEvent

APPENDERS = 16


async def main(db_path: Path) -> None:
    log = EventLog(db_path)
    await log.open()

    async def appender(index: int) -> None:
        n = 0
        while True:  # until killed
            batch = [NewEvent(type="test.crash", idempotency_key=f"crash:{index}:{n + i}") for i in range(1 + n % 5)]
            results = await log.append_many(batch)
            sys.stdout.write("".join(f"ack {r.event.idempotency_key} {r.event.seq}\n" for r in results if r.event))
            sys.stdout.flush()
            n += len(batch)

    await asyncio.gather(*(appender(i) for i in range(APPENDERS)))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
