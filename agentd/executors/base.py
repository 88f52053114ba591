"""What every executor (CPU, LLM) shares: the attempt context, the interface, error codes."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

from krako.v1 import agent_pb2

# Error codes of docs/agent-protocol.md, with whether the fabric may retry them.
VALIDATION_ERROR = "VALIDATION_ERROR"
UNKNOWN_HANDLER = "UNKNOWN_HANDLER"
EXECUTION_ERROR = "EXECUTION_ERROR"
TIMEOUT = "TIMEOUT"
CANCELLED = "CANCELLED"
RATE_LIMITED = "RATE_LIMITED"
MODEL_UNAVAILABLE = "MODEL_UNAVAILABLE"
RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
AUTH_ERROR = "AUTH_ERROR"
BUDGET_EXCEEDED = "BUDGET_EXCEEDED"

RETRYABLE = {
    VALIDATION_ERROR: False,
    UNKNOWN_HANDLER: False,
    EXECUTION_ERROR: True,
    TIMEOUT: True,
    CANCELLED: False,
    RATE_LIMITED: True,
    MODEL_UNAVAILABLE: True,
    RESOURCE_EXHAUSTED: True,
    AUTH_ERROR: False,
    BUDGET_EXCEEDED: False,
}

# Error messages travel in events; a bound keeps one huge traceback out of the log.
MAX_ERROR_MESSAGE_CHARS = 2000


@dataclass
class AttemptContext:
    """One granted attempt as an executor sees it.

    ``cancel_event`` is set when the attempt is stopped or timed out; thread-pool handlers
    poll it because a thread cannot be interrupted from outside.
    """

    offer: agent_pb2.Offer
    cancel_event: threading.Event = field(default_factory=threading.Event)

    @property
    def run_timeout_s(self) -> float | None:
        """The unit's run timeout in seconds, None when it has none (0 on the wire)."""
        return self.offer.run_timeout_ms / 1000.0 if self.offer.run_timeout_ms else None


class Executor(Protocol):
    """Runs attempts of one kind of unit (one capacity lane)."""

    kind: str

    def handler_names(self) -> list[str]: ...

    async def execute(self, context: AttemptContext) -> agent_pb2.Result:
        """Run the attempt; return its Result (ids are filled in by the caller).

        Failures are Results, never exceptions; asyncio cancellation propagates.
        """
        ...

    async def close(self) -> None: ...


def failure(
    error_code: str,
    message: str,
    *,
    retryable: bool | None = None,
    duration_us: int = 0,
    cpu_time_us: int = 0,
) -> agent_pb2.Result:
    """A failed Result with the code's default retryability unless told otherwise."""
    return agent_pb2.Result(
        success=False,
        error_code=error_code,
        error_message=message[:MAX_ERROR_MESSAGE_CHARS],
        retryable=RETRYABLE.get(error_code, False) if retryable is None else retryable,
        duration_us=max(0, duration_us),
        cpu_time_us=max(0, cpu_time_us),
    )
