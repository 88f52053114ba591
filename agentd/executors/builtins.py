"""The built-in CPU handlers every agent can run: echo, sleep_ms, sha256, burn_ms.

They double as the reference for user handlers: validate input with HandlerInputError,
and check the cancel flag in any loop that can run long.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from agentd.registry import HandlerContext, HandlerInputError, RawJson, RegisteredHandler, validate_handler

# Bounds keep one bad input from occupying a worker for hours.
MAX_DURATION_MS = 3_600_000
MAX_SHA256_ROUNDS = 10_000_000
# Checking the cancel flag every this many rounds keeps the check cost negligible.
_CANCEL_CHECK_EVERY_ROUNDS = 1024


def echo(payload: Any, ctx: HandlerContext) -> RawJson:
    """Return the input JSON unchanged (byte for byte)."""
    return RawJson(ctx.input_json if ctx.input_json else "null")


def sleep_ms(payload: Any, ctx: HandlerContext) -> dict[str, int]:
    """Sleep for {"ms": N} milliseconds; wakes up at once when stopped."""
    duration_ms = _milliseconds(payload)
    ctx.sleep(duration_ms / 1000.0)
    return {"slept_ms": duration_ms}


def sha256(payload: Any, ctx: HandlerContext) -> dict[str, Any]:
    """Hash {"data": str, "rounds": N (default 1)}: rounds of sha256 over the previous digest."""
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), str):
        raise HandlerInputError('sha256 needs an object input with a string "data"')
    rounds = payload.get("rounds", 1)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= MAX_SHA256_ROUNDS:
        raise HandlerInputError(f'sha256 "rounds" must be an integer from 1 to {MAX_SHA256_ROUNDS}')
    digest = payload["data"].encode("utf-8")
    for round_index in range(rounds):
        digest = hashlib.sha256(digest).digest()
        if round_index % _CANCEL_CHECK_EVERY_ROUNDS == 0:
            ctx.raise_if_cancelled()
    return {"sha256": digest.hex(), "rounds": rounds}


def burn_ms(payload: Any, ctx: HandlerContext) -> dict[str, int]:
    """Keep one core busy for {"ms": N} milliseconds of wall time, stopping when cancelled."""
    duration_ms = _milliseconds(payload)
    deadline = time.perf_counter() + duration_ms / 1000.0
    iterations = 0
    while time.perf_counter() < deadline:
        for _ in range(_CANCEL_CHECK_EVERY_ROUNDS):
            iterations += 1
        ctx.raise_if_cancelled()
    return {"burned_ms": duration_ms, "iterations": iterations}


def _milliseconds(payload: Any) -> int:
    value = payload.get("ms") if isinstance(payload, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DURATION_MS:
        raise HandlerInputError(f'input needs "ms": an integer from 0 to {MAX_DURATION_MS}')
    return value


def builtin_handlers() -> dict[str, RegisteredHandler]:
    """The built-ins, validated like user handlers."""
    functions = {"echo": echo, "sleep_ms": sleep_ms, "sha256": sha256, "burn_ms": burn_ms}
    return {name: validate_handler(name, function, origin="built-in") for name, function in functions.items()}
