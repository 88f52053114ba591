"""One place where domain errors become gRPC statuses."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from krakod.api.auth import AuthError
from krakod.log import LogClosed

log = logging.getLogger(__name__)
T = TypeVar("T")


class RequestError(Exception):
    """A request krakod refuses; nothing was appended for it."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _status_of(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    if isinstance(exc, (RequestError, AuthError)):
        return exc.code, exc.message
    if isinstance(exc, LogClosed):
        return grpc.StatusCode.UNAVAILABLE, f"krakod is shutting down: {exc}"
    return None


async def _abort(context: grpc.aio.ServicerContext, exc: Exception, method: str) -> None:
    """End the RPC with the status of `exc`; anything unexpected is INTERNAL and logged (abort raises)."""
    status = _status_of(exc)
    if status is None:
        log.exception("%s failed", method)
        status = (grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")
    await context.abort(*status)


def unary(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            return await fn(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc, fn.__name__)
            raise  # unreachable: abort raises

    return wrapper


def streaming(fn: Callable[..., AsyncIterator[T]]) -> Callable[..., AsyncIterator[T]]:
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[T]:
        try:
            async for item in fn(self, request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc, fn.__name__)

    return wrapper
