"""Outgoing messages of one stream connection: a bounded queue and the coalescing writer side.

Claims, started notices and results that are ready at the same moment leave as one
ConnectRequest (at most ``max_batch`` items per repeated field, and a byte bound below
gRPC's 4 MiB message limit). Only the latest heartbeat of a batch is kept: an older one
carries nothing the newer does not.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TypeAlias

from krako.v1 import agent_pb2

OutgoingItem: TypeAlias = agent_pb2.Claim | agent_pb2.Started | agent_pb2.Result | agent_pb2.Heartbeat

MAX_REQUEST_BYTES = 2 * 1024 * 1024
# One writer pass takes at most this many batches' worth of items, so a huge backlog is
# sent in slices instead of being copied at once.
_DRAIN_BATCHES = 4

_FIELDS: dict[type, str] = {
    agent_pb2.Claim: "claims",
    agent_pb2.Started: "started",
    agent_pb2.Result: "results",
}


class Outgoing:
    """Bounded queue feeding one connection's writer. Closed when the connection ends."""

    def __init__(self, *, maxsize: int) -> None:
        self._queue: asyncio.Queue[OutgoingItem] = asyncio.Queue(maxsize=maxsize)
        self._closed = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def qsize(self) -> int:
        return self._queue.qsize()

    async def put(self, item: OutgoingItem) -> bool:
        """Queue ``item``; waits while full. False when the connection closed (item dropped)."""
        if self._closed.is_set():
            return False
        try:
            self._queue.put_nowait(item)  # the common case costs no task
            return True
        except asyncio.QueueFull:
            pass
        put = asyncio.ensure_future(self._queue.put(item))
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({put, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (put, closed):
                task.cancel()
        return put.done() and not put.cancelled()

    def close(self) -> None:
        """Wake every blocked producer; whatever is queued is abandoned (the outbox keeps results)."""
        self._closed.set()
        while not self._queue.empty():
            self._queue.get_nowait()

    async def next_requests(self, *, max_batch: int) -> list[agent_pb2.ConnectRequest]:
        """Wait for at least one item, then coalesce everything ready into requests."""
        items = [await self._queue.get()]
        limit = max_batch * _DRAIN_BATCHES
        with contextlib.suppress(asyncio.QueueEmpty):
            while len(items) < limit:
                items.append(self._queue.get_nowait())
        return coalesce(items, max_batch=max_batch)


def coalesce(
    items: list[OutgoingItem], *, max_batch: int, max_bytes: int = MAX_REQUEST_BYTES
) -> list[agent_pb2.ConnectRequest]:
    """Pack items, in order, into as few requests as the bounds allow."""
    requests: list[agent_pb2.ConnectRequest] = []
    current = agent_pb2.ConnectRequest()
    size_bytes = 0
    for item in items:
        if isinstance(item, agent_pb2.Heartbeat):
            current.heartbeat.CopyFrom(item)
            continue
        field_name = _FIELDS[type(item)]
        item_bytes = item.ByteSize()
        full = len(getattr(current, field_name)) >= max_batch or (size_bytes and size_bytes + item_bytes > max_bytes)
        if full:
            requests.append(current)
            current = agent_pb2.ConnectRequest()
            size_bytes = 0
        getattr(current, field_name).append(item)
        size_bytes += item_bytes
    if current.ByteSize() or current.HasField("heartbeat"):
        requests.append(current)
    return requests


class Uplink:
    """The current connection's outgoing queue, or none while disconnected.

    Producers (the work loop) send through it without knowing about reconnects; while
    disconnected, sends are dropped: claims and started notices mean nothing to a new
    connection, and results are resent from the outbox.
    """

    def __init__(self) -> None:
        self._outgoing: Outgoing | None = None

    def attach(self, outgoing: Outgoing) -> None:
        self._outgoing = outgoing

    def detach(self) -> None:
        self._outgoing = None

    async def send(self, item: OutgoingItem) -> bool:
        outgoing = self._outgoing
        if outgoing is None:
            return False
        return await outgoing.put(item)
