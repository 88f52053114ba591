"""Acting on scale requests: pluggable actuators behind `Actuator.apply(target_replicas)`.

The controller's decision is logical and logged first; an actuator only carries it out.
- `NullActuator`: does nothing (decisions are advisory; the default).
- `LocalProcessActuator`: keeps `target_replicas` child processes (normally `agentd`)
  running on this host; used by the demo.
- `CommandHookActuator`: `--scale-exec CMD` runs CMD with the target as its last argument
  and in `KRAKO_TARGET_REPLICAS`, for operators who drive an orchestrator.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

logger = logging.getLogger(__name__)

REPLICA_PLACEHOLDER = "{i}"
_STDERR_TAIL_CHARS = 2_000


class Actuator(Protocol):
    async def apply(self, target_replicas: int) -> None:
        """Bring the pool to `target_replicas`; may raise ActuatorError (the caller logs it)."""
        ...

    async def close(self) -> None:
        """Release what the actuator holds; safe to call twice."""
        ...


class ActuatorError(Exception):
    """An actuator could not carry out a scale request."""


class NullActuator:
    """Records the target and does nothing else."""

    def __init__(self) -> None:
        self.target_replicas: int | None = None

    async def apply(self, target_replicas: int) -> None:
        self.target_replicas = target_replicas

    async def close(self) -> None:
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalProcessOptions:
    """How to run replica i (1-based): every "{i}" in `argv_template` becomes i.

    E.g. ("agentd", "--server", addr, "--node-id", "auto-{i}", "--region", region,
    "--kinds", "cpu", "--concurrency", "4", "--state-dir", f"{data_dir}/agents/{{i}}").
    """

    argv_template: tuple[str, ...]
    stop_timeout_s: float = 10.0  # SIGTERM, then SIGKILL after this long
    max_replicas: int = 64
    env: Mapping[str, str] = field(default_factory=dict)  # added to this process's environment
    log_dir: Path | None = None  # replica-{i}.log per child; None: output discarded
    cwd: Path | None = None

    def __post_init__(self) -> None:
        if not self.argv_template:
            raise ValueError("argv_template must name a program")
        if self.stop_timeout_s <= 0 or self.max_replicas < 1:
            raise ValueError("stop_timeout_s must be > 0 and max_replicas >= 1")

    def argv(self, index: int) -> list[str]:
        return [part.replace(REPLICA_PLACEHOLDER, str(index)) for part in self.argv_template]


class LocalProcessActuator:
    """Keeps replicas 1..R running as child processes of this daemon.

    `apply(R)` reconciles: replicas above R are stopped (SIGTERM, bounded wait, SIGKILL),
    missing ones (never started, or exited since) are started. `close()` stops them all.
    """

    def __init__(self, *, options: LocalProcessOptions) -> None:
        self.options = options
        self._children: dict[int, asyncio.subprocess.Process] = {}
        self._lock = asyncio.Lock()
        self._closed = False

    def pids(self) -> dict[int, int]:
        """Replica index to pid, for the children believed alive."""
        return {i: p.pid for i, p in sorted(self._children.items()) if p.returncode is None}

    async def apply(self, target_replicas: int) -> None:
        if not 0 <= target_replicas <= self.options.max_replicas:
            raise ValueError(f"target_replicas {target_replicas} outside 0..{self.options.max_replicas}")
        async with self._lock:
            if self._closed:
                raise ActuatorError("local actuator is closed")
            self._reap()
            surplus = [i for i in self._children if i > target_replicas]
            await asyncio.gather(*(self._stop(i) for i in surplus))
            failures = []
            for index in range(1, target_replicas + 1):
                if index not in self._children:
                    try:
                        await self._start(index)
                    except OSError as exc:
                        failures.append(f"replica {index}: {exc}")
            if failures:
                raise ActuatorError(f"could not start {len(failures)} replica(s): {'; '.join(failures)}")

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            await asyncio.gather(*(self._stop(i) for i in list(self._children)))

    def _reap(self) -> None:
        for index, process in list(self._children.items()):
            if process.returncode is not None:
                logger.warning("replica %d (pid %d) exited with code %s", index, process.pid, process.returncode)
                del self._children[index]

    async def _start(self, index: int) -> None:
        argv = self.options.argv(index)
        env = {**os.environ, **self.options.env}
        output: IO[bytes] | int = asyncio.subprocess.DEVNULL
        if self.options.log_dir is not None:
            self.options.log_dir.mkdir(parents=True, exist_ok=True)
            output = open(self.options.log_dir / f"replica-{index}.log", "ab")  # noqa: ASYNC230 (a local file; closed below once the child holds it)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT if output is not asyncio.subprocess.DEVNULL else output,
                env=env,
                cwd=self.options.cwd,
            )
        finally:
            if not isinstance(output, int):
                output.close()  # the child holds its own descriptor
        self._children[index] = process
        logger.info("started replica %d (pid %d): %s", index, process.pid, shlex.join(argv))

    async def _stop(self, index: int) -> None:
        process = self._children.pop(index)
        if process.returncode is None:
            try:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), self.options.stop_timeout_s)
            except ProcessLookupError:
                pass
            except TimeoutError:
                logger.warning(
                    "replica %d (pid %d) ignored SIGTERM for %ss; killing",
                    index,
                    process.pid,
                    self.options.stop_timeout_s,
                )
                try:
                    process.kill()
                except ProcessLookupError:
                    pass
        await process.wait()
        logger.info("stopped replica %d (pid %d), exit code %s", index, process.pid, process.returncode)


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandHookOptions:
    """`--scale-exec CMD`: CMD is split like a shell would (no shell runs it)."""

    command: str
    timeout_s: float = 30.0
    pool: str = "default"
    env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not shlex.split(self.command):
            raise ValueError("--scale-exec needs a command")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class HookResult:
    target_replicas: int
    exit_code: int | None  # None: killed after the timeout, or could not start
    stderr_tail: str


class CommandHookActuator:
    """Runs CMD TARGET with KRAKO_TARGET_REPLICAS=TARGET and KRAKO_POOL set, one call at a time.

    Failures (cannot start, non-zero exit, timeout) are logged and recorded in
    `last_result`; they do not raise, because the next scale request retries anyway.
    """

    def __init__(self, *, options: CommandHookOptions) -> None:
        self.options = options
        self.last_result: HookResult | None = None
        self._lock = asyncio.Lock()

    async def apply(self, target_replicas: int) -> None:
        if target_replicas < 0:
            raise ValueError(f"target_replicas must be >= 0, got {target_replicas}")
        async with self._lock:
            self.last_result = await self._run(target_replicas)

    async def close(self) -> None:
        async with self._lock:  # let a running hook finish (it is bounded by timeout_s)
            return None

    async def _run(self, target: int) -> HookResult:
        argv = [*shlex.split(self.options.command), str(target)]
        env = {**os.environ, **self.options.env, "KRAKO_TARGET_REPLICAS": str(target), "KRAKO_POOL": self.options.pool}
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            logger.error("scale hook %s could not start: %s", shlex.join(argv), exc)
            return HookResult(target_replicas=target, exit_code=None, stderr_tail=str(exc))
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), self.options.timeout_s)
        except TimeoutError:
            process.kill()
            await process.wait()
            logger.error("scale hook %s timed out after %ss; killed", shlex.join(argv), self.options.timeout_s)
            return HookResult(target_replicas=target, exit_code=None, stderr_tail="timed out")
        tail = stderr.decode(errors="replace")[-_STDERR_TAIL_CHARS:]
        if process.returncode != 0:
            logger.error("scale hook %s exited with %s: %s", shlex.join(argv), process.returncode, tail.strip())
        return HookResult(target_replicas=target, exit_code=process.returncode, stderr_tail=tail)


__all__ = [
    "Actuator",
    "ActuatorError",
    "CommandHookActuator",
    "CommandHookOptions",
    "HookResult",
    "LocalProcessActuator",
    "LocalProcessOptions",
    "NullActuator",
]
