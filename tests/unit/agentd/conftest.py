"""Fixtures of the agentd tests: a restartable scripted daemon server and agents that are always shut down."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from agentd_fakes import WAIT_S, DaemonServer, StartAgent, make_config

from agentd.agent import Agent


@pytest.fixture
async def daemon_server() -> AsyncIterator[DaemonServer]:
    servers = DaemonServer()
    yield servers
    await servers.stop_all()


@pytest.fixture
async def start_agent(tmp_path: Path) -> AsyncIterator[StartAgent]:
    """start_agent(port, **config overrides) -> (agent, run task); every agent is shut down after the test."""
    started: list[tuple[Agent, asyncio.Task[None]]] = []

    async def start(port: int, **overrides: Any) -> tuple[Agent, asyncio.Task[None]]:
        overrides.setdefault("state_dir", tmp_path / "state")
        agent = Agent(make_config(port, **overrides))
        task = asyncio.create_task(agent.run())
        started.append((agent, task))
        ready = asyncio.create_task(agent.ready.wait())
        await asyncio.wait({ready, task}, timeout=WAIT_S, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        return agent, task

    yield start
    for agent, task in started:
        await agent.shutdown()
        with contextlib.suppress(Exception):
            await task
