"""EventService: read ranges of the log and follow it. Tenant keys see only their tenant's events."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from krako.v1 import events_pb2, events_pb2_grpc

from krakod.api.auth import Authenticator
from krakod.api.convert import event_to_pb
from krakod.api.errors import invalid, streaming, unary
from krakod.config import Config
from krakod.log import Event, EventLog

DEFAULT_READ_LIMIT = 500
MAX_TYPE_FILTERS = 64


class EventsApi(events_pb2_grpc.EventServiceServicer):
    def __init__(self, *, config: Config, log: EventLog, auth: Authenticator) -> None:
        self.config = config
        self.log = log
        self.auth = auth

    @unary
    async def ReadEvents(
        self, request: events_pb2.ReadEventsRequest, context: grpc.aio.ServicerContext
    ) -> events_pb2.ReadEventsResponse:
        principal = self.auth.client(context)
        if len(request.types) > MAX_TYPE_FILTERS:
            raise invalid(f"at most {MAX_TYPE_FILTERS} type filters")
        limit = request.limit or DEFAULT_READ_LIMIT
        if limit > self.config.limits.max_read_events:
            raise invalid(f"limit {limit} is above the maximum of {self.config.limits.max_read_events}")
        last_seq = self.log.last_seq
        position = request.after_seq
        found: list[Event] = []
        # A tenant's filter is applied after the read; keep reading until the page is full or the log ends.
        while len(found) < limit:
            events = await self.log.read(
                position, limit, types=list(request.types), work_unit_id=request.work_unit_id or None
            )
            if not events:
                break
            found.extend(e for e in events if principal.may_see(e.tenant_id))
            position = events[-1].seq
        return events_pb2.ReadEventsResponse(events=[event_to_pb(e) for e in found[:limit]], last_seq=last_seq)

    @streaming
    async def SubscribeEvents(
        self, request: events_pb2.SubscribeEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[events_pb2.SubscribeEventsResponse]:
        principal = self.auth.client(context)
        if len(request.types) > MAX_TYPE_FILTERS:
            raise invalid(f"at most {MAX_TYPE_FILTERS} type filters")
        async for batch in self.log.follow(
            request.after_seq, types=list(request.types), work_unit_id=request.work_unit_id or None, batch_limit=500
        ):
            visible = [event_to_pb(e) for e in batch if principal.may_see(e.tenant_id)]
            if visible:
                yield events_pb2.SubscribeEventsResponse(events=visible)
