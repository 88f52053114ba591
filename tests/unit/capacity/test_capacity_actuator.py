"""Actuators really start and stop processes, and run the operator's hook."""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import signal
import sys
from pathlib import Path

import pytest

from krakod.capacity import (
    ActuatorError,
    CommandHookActuator,
    CommandHookOptions,
    LocalProcessActuator,
    LocalProcessOptions,
)

# A stand-in for agentd: announces itself once its SIGTERM handler is installed, then waits.
REPLICA = """
import pathlib, signal, sys, time
index, marker_dir, on_term = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
def stop(signum, frame):
    (marker_dir / ("stopped-" + index)).write_text("bye")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop if on_term == "exit" else signal.SIG_IGN)
pending = marker_dir / (".started-" + index)
pending.write_text(str(__import__("os").getpid()))
pending.rename(marker_dir / ("started-" + index))  # atomic: a reader never sees it half-written
while True:
    time.sleep(3600)
"""
DEADLINE_S = 10.0


async def until(condition: object, what: str) -> None:
    """Poll `condition()` with a deadline (never a fixed sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not condition():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def replica_options(marker_dir: Path, on_term: str = "exit", **overrides: object) -> LocalProcessOptions:
    return LocalProcessOptions(
        argv_template=(sys.executable, "-c", REPLICA, "{i}", str(marker_dir), on_term),
        **overrides,  # type: ignore[arg-type]
    )


def started(marker_dir: Path) -> set[str]:
    return {p.name.removeprefix("started-") for p in marker_dir.glob("started-*")}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_local_actuator_starts_and_stops_replicas(tmp_path: Path) -> None:
    actuator = LocalProcessActuator(options=replica_options(tmp_path))
    try:
        await actuator.apply(3)
        await until(lambda: started(tmp_path) == {"1", "2", "3"}, "three replicas to start")
        pids = actuator.pids()
        assert sorted(pids) == [1, 2, 3]
        assert {str(pid) for pid in pids.values()} == {(tmp_path / f"started-{i}").read_text() for i in "123"}

        await actuator.apply(1)  # returns once the surplus replicas have exited
        assert sorted(actuator.pids()) == [1]
        assert (tmp_path / "stopped-2").exists() and (tmp_path / "stopped-3").exists()
        assert not alive(pids[2]) and not alive(pids[3])
        assert alive(pids[1])
    finally:
        await actuator.close()
    assert actuator.pids() == {}
    assert (tmp_path / "stopped-1").exists()
    await actuator.close()  # twice is fine
    with pytest.raises(ActuatorError, match="closed"):
        await actuator.apply(1)


async def test_a_replica_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    actuator = LocalProcessActuator(options=replica_options(tmp_path, on_term="ignore", stop_timeout_s=0.2))
    try:
        await actuator.apply(1)
        await until(lambda: started(tmp_path) == {"1"}, "the replica to start")
        pid = actuator.pids()[1]
        await actuator.apply(0)
        assert not alive(pid)
        assert not (tmp_path / "stopped-1").exists()
    finally:
        await actuator.close()


async def test_apply_restarts_a_replica_that_died(tmp_path: Path) -> None:
    actuator = LocalProcessActuator(options=replica_options(tmp_path))
    try:
        await actuator.apply(2)
        await until(lambda: started(tmp_path) == {"1", "2"}, "two replicas to start")
        dead = actuator.pids()[2]
        os.kill(dead, signal.SIGKILL)
        await until(lambda: 2 not in actuator.pids(), "the killed replica to be reaped")
        await actuator.apply(2)
        assert sorted(actuator.pids()) == [1, 2] and actuator.pids()[2] != dead
    finally:
        await actuator.close()


async def test_a_missing_program_is_an_actuator_error(tmp_path: Path) -> None:
    actuator = LocalProcessActuator(options=LocalProcessOptions(argv_template=(str(tmp_path / "no-such-agentd"),)))
    with pytest.raises(ActuatorError, match="could not start 2"):
        await actuator.apply(2)
    await actuator.close()


def test_the_template_numbers_each_replica() -> None:
    options = LocalProcessOptions(argv_template=("agentd", "--node-id", "auto-{i}", "--state-dir", "/data/agents/{i}"))
    assert options.argv(2) == ["agentd", "--node-id", "auto-2", "--state-dir", "/data/agents/2"]


HOOK = 'import os, pathlib, sys; pathlib.Path(sys.argv[1]).write_text(sys.argv[2] + " " + os.environ["KRAKO_TARGET_REPLICAS"] + " " + os.environ["KRAKO_POOL"])'  # noqa: E501


async def test_the_hook_receives_the_target_as_argument_and_environment(tmp_path: Path) -> None:
    out = tmp_path / "hook.out"
    command = shlex.join([sys.executable, "-c", HOOK, str(out)])
    hook = CommandHookActuator(options=CommandHookOptions(command=command, pool="cpu"))
    await hook.apply(5)
    assert out.read_text() == "5 5 cpu"
    assert hook.last_result is not None and hook.last_result.exit_code == 0
    await hook.close()


async def test_hook_failures_are_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    failing = shlex.join([sys.executable, "-c", "import sys; sys.stderr.write('orchestrator said no'); sys.exit(3)"])
    hook = CommandHookActuator(options=CommandHookOptions(command=failing))
    with caplog.at_level(logging.ERROR, logger="krakod.capacity.actuator"):
        await hook.apply(2)
    assert hook.last_result is not None and hook.last_result.exit_code == 3
    assert "orchestrator said no" in caplog.text

    missing = CommandHookActuator(options=CommandHookOptions(command=str(tmp_path / "no-such-hook")))
    await missing.apply(2)
    assert missing.last_result is not None and missing.last_result.exit_code is None


async def test_a_hung_hook_is_killed_after_its_timeout(caplog: pytest.LogCaptureFixture) -> None:
    hung = shlex.join([sys.executable, "-c", "import time; time.sleep(3600)"])
    hook = CommandHookActuator(options=CommandHookOptions(command=hung, timeout_s=0.3))
    with caplog.at_level(logging.ERROR, logger="krakod.capacity.actuator"):
        await hook.apply(4)
    assert hook.last_result is not None and hook.last_result.exit_code is None
    assert "timed out" in caplog.text
