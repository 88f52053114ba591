"""Fixtures for projection tests: a real EventLog in tmp_path, folded by the real runner."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from projection_support import Fold, Folded

from krakod.log import EventLog, NewEvent
from krakod.projections.replay import rebuild_into
from krakod.projections.service import default_projections
from krakod.projections.synthetic import append_all


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[EventLog]:
    event_log = EventLog(tmp_path / "events.sqlite")
    await event_log.open()
    yield event_log
    await event_log.close()


@pytest.fixture
def fold(log: EventLog, tmp_path: Path) -> Fold:
    """Append events to the log, then fold the whole log into a fresh projections database."""
    counter = iter(range(1_000_000))

    async def run(events: list[NewEvent]) -> Folded:
        await append_all(log, events)
        db_path = tmp_path / f"projections-{next(counter)}.sqlite"
        return Folded(db_path, rebuild_into(db_path, log.path, default_projections()))

    return run
