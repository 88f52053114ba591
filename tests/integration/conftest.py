"""Fixtures of the process-level tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from clients.processes import Proc


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Processes a test starts; all are stopped at the end, agents first."""
    started: list[Proc] = []
    try:
        yield started
    finally:
        # Agents first, so they do not spin reconnecting to a krakod that is already gone.
        for proc in sorted(started, key=lambda p: not p.name.startswith("agentd")):
            proc.stop()
