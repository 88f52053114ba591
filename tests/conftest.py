"""Shared fixtures: an in-process krakod on port 0, and a client to it."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from krakod.config import Config, Timing
from krakod.server import Daemon


def make_config(data_dir: Path, **overrides: object) -> Config:
    timing = overrides.pop(
        "timing", Timing(heartbeat_interval_ms=200, lease_ms=2000, node_ttl_ms=2000, dispatch_timeout_ms=2000)
    )
    return dataclasses.replace(Config(data_dir=data_dir, listen="127.0.0.1:0", timing=timing), **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    d = Daemon(make_config(tmp_path / "data"))
    await d.start()
    try:
        yield d
    finally:
        await d.stop()


@pytest.fixture
async def channel(daemon: Daemon) -> AsyncIterator[grpc.aio.Channel]:
    ch = grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}")
    try:
        yield ch
    finally:
        await ch.close()
