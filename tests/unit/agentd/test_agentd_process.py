"""The real `python -m agentd` process: SIGTERM lets the running unit finish, flushes, exits 0."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from agentd_fakes import WAIT_S, DaemonServer, FakeDaemon, offer


async def test_sigterm_finishes_the_running_unit_flushes_its_result_and_exits_0(
    daemon_server: DaemonServer, tmp_path: Path
) -> None:
    daemon = FakeDaemon()
    port = await daemon_server.start(daemon)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentd", "--server", f"127.0.0.1:{port}", "--state-dir", str(tmp_path),
        "--concurrency", "1", "--log-level", "WARNING",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await daemon.wait_for(lambda: daemon.hellos)
        await daemon.offer(offer("unit-last", "sleep_ms", '{"ms": 300}'))
        await daemon.wait_for(lambda: daemon.items("started"))
        process.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(process.wait(), WAIT_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    stderr = (await process.stderr.read()).decode() if process.stderr else ""
    assert returncode == 0, stderr
    (result,) = daemon.results_for("unit-last")
    assert result.success
    assert daemon.hellos[0].node_id == (tmp_path / "node_id").read_text().strip()
