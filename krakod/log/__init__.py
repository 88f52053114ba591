"""The event log: SQLite WAL storage, one group-commit writer, tail notification."""

from krakod.log.store import SqliteEventStore
from krakod.log.types import AppendResult, DataDirLocked, Event, LogClosed, LogError, NewEvent, canonical_json
from krakod.log.writer import (
    LOCK_FILE_NAME,
    LOG_FILE_NAME,
    DataDirLock,
    EventLog,
    Guard,
    LogLimits,
    Stager,
    replay_all,
)

__all__ = [
    "LOCK_FILE_NAME",
    "LOG_FILE_NAME",
    "AppendResult",
    "DataDirLock",
    "DataDirLocked",
    "Event",
    "EventLog",
    "Guard",
    "LogClosed",
    "LogError",
    "LogLimits",
    "NewEvent",
    "SqliteEventStore",
    "Stager",
    "canonical_json",
    "replay_all",
]
