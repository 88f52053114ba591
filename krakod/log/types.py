"""Value types of the event log: the envelope every event carries."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_random = random.SystemRandom()


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: one byte string per value, so hashes are stable."""
    return _CANONICAL.encode(value)


def new_event_id() -> str:
    """A random (version 4) UUID string; cheaper than uuid.uuid4() on the append hot path."""
    bits = (_random.getrandbits(128) & ~(0xF000 << 64) | (0x4000 << 64)) & ~(0xC << 60) | (0x8 << 60)
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True)
class Event:
    """One committed entry of the log. `seq` is gap-free, starting at 1."""

    seq: int
    event_id: str
    type: str
    idempotency_key: str
    ts_us: int  # stamped by the log at append, microseconds since the epoch, UTC
    tenant_id: str
    execution_session_id: str
    work_unit_id: str | None
    source: str
    payload_json: str

    @property
    def payload(self) -> dict[str, Any]:
        """The decoded payload (decoded on each access; keep the result if you need it twice)."""
        return json.loads(self.payload_json)  # type: ignore[no-any-return]

    @property
    def ts(self) -> datetime:
        return datetime.fromtimestamp(self.ts_us / 1_000_000, tz=UTC)


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event a caller wants appended. The log assigns seq and ts."""

    type: str
    payload: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None  # None: the event's own id makes it unique
    tenant_id: str = ""
    execution_session_id: str = ""
    work_unit_id: str | None = None
    source: str = "krakod"
    event_id: str = field(default_factory=new_event_id)

    def key(self) -> str:
        return self.idempotency_key if self.idempotency_key is not None else f"event:{self.event_id}"

    def to_event(self, seq: int, ts_us: int) -> Event:
        return Event(
            seq=seq,
            event_id=self.event_id,
            type=self.type,
            idempotency_key=self.key(),
            ts_us=ts_us,
            tenant_id=self.tenant_id,
            execution_session_id=self.execution_session_id,
            work_unit_id=self.work_unit_id,
            source=self.source,
            payload_json=canonical_json(self.payload),
        )


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What happened to one appended event.

    created: it was appended now. Otherwise either an event with the same
    idempotency key existed (`event` is that first event) or a guard refused it
    (`event` is None and `refused` says why).
    """

    event: Event | None
    created: bool
    refused: str | None = None

    @property
    def duplicate(self) -> bool:
        return self.event is not None and not self.created


class LogError(Exception):
    """An operating error of the log store (the driver's error is its __cause__)."""


class LogClosed(LogError):
    """The log no longer accepts appends (shutting down, or a commit failed)."""


class DataDirLocked(LogError):
    """Another krakod holds the data directory."""
