"""Value types of the event log: the envelope every event carries."""

from __future__ import annotations

import json
import json.encoder
import os
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
# JSONEncoder.encode builds a new C encoder on every call, which costs as much as the encoding
# of a small payload. One prebuilt C encoder with the same settings yields the same bytes.
# markers=None turns off the circular-reference check: a cyclic payload then fails with
# RecursionError instead of ValueError, and a failed call leaves no state behind.
_C_ENCODER = (
    json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, _CANONICAL.default, json.encoder.encode_basestring, None, ":", ",", True, False, True
    )
    if json.encoder.c_make_encoder is not None  # type: ignore[attr-defined]
    else None
)
# The RFC 4122 variant nibble ("10xx") for a random hex digit.
_VARIANT_NIBBLE = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: one byte string per value, so hashes are stable."""
    if _C_ENCODER is None or isinstance(value, str):
        return _CANONICAL.encode(value)
    return "".join(_C_ENCODER(value, 0))


# Event ids need uniqueness, not secrecy: one generator seeded from the OS once, instead of a
# getrandom() syscall per id on the append hot path.
_ids = random.Random(os.urandom(32))


def new_event_id() -> str:
    """A random (version 4) UUID string; cheaper than str(uuid.uuid4()) on the append hot path."""
    h = f"{_ids.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT_NIBBLE[h[16]]}{h[17:20]}-{h[20:]}"


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
    # The payload as the appender gave it, kept for events staged in this process so that
    # stagers and listeners do not decode what was just encoded. Not part of equality.
    decoded: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def payload(self) -> dict[str, Any]:
        """The decoded payload. Shared with the appender for events staged here: read it, never mutate it."""
        if self.decoded is not None:
            return self.decoded
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
