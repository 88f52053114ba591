"""The handler registry: how user code declares CPU handlers, and how agentd loads it.

A user handler module (``agentd --handlers my_pkg.tasks``, like Celery's ``-A``) marks
plain synchronous functions with the decorator::

    import agentd

    @agentd.handler("resize")
    def resize(payload, ctx):          # ctx is optional: def resize(payload) works too
        if "url" not in payload:
            raise agentd.HandlerInputError("input needs 'url'")   # -> VALIDATION_ERROR
        for chunk in ...:
            ctx.raise_if_cancelled()   # stops promptly on a stop or run timeout
        return {"ok": True}            # any JSON-serialisable value

``payload`` is the unit's decoded input JSON. Handlers run in agentd's thread pool, so
they must be synchronous (``async def`` is refused at load time). Raising
``HandlerInputError`` reports ``VALIDATION_ERROR`` (not retryable); any other exception
reports ``EXECUTION_ERROR`` (retryable). Returning ``RawJson(text)`` sends ``text`` as the
output verbatim.

The decorator only tags the function; nothing global is mutated at import time, so two
modules (or two tests) never see each other's handlers. Every mistake — a module that
does not import, defines no handler, an ``async`` handler, a wrong signature, a name
used twice — is reported by ``load_handler_modules`` when agentd starts, not at the
first unit.
"""

from __future__ import annotations

import importlib
import inspect
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

HANDLER_NAME_ATTRIBUTE = "__agentd_handler_name__"
_HANDLER_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")

HandlerFunction = Callable[..., Any]


class HandlerInputError(ValueError):
    """Raised by a handler when its input is unusable; reported as VALIDATION_ERROR."""


class HandlerCancelled(Exception):
    """Raised inside a handler by ``ctx.raise_if_cancelled()`` once the attempt was stopped."""


class HandlerLoadError(Exception):
    """A handler module could not be loaded; the message says which and why."""


@dataclass(frozen=True)
class RawJson:
    """A handler output that is already JSON text and is sent verbatim."""

    text: str


@dataclass
class HandlerContext:
    """What a handler may know about the attempt it runs, and its cancel flag."""

    work_unit_id: str
    attempt: int
    input_json: str
    cancel_event: threading.Event = field(default_factory=threading.Event)

    def is_cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def raise_if_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise HandlerCancelled(f"attempt {self.work_unit_id}#{self.attempt} was stopped")

    def sleep(self, seconds: float) -> None:
        """Sleep that wakes up (and raises HandlerCancelled) as soon as the attempt is stopped."""
        if self.cancel_event.wait(max(0.0, seconds)):
            self.raise_if_cancelled()


@dataclass(frozen=True)
class RegisteredHandler:
    """A validated handler: its name, the function, and whether it takes a context."""

    name: str
    function: HandlerFunction
    takes_context: bool

    def __call__(self, payload: Any, context: HandlerContext) -> Any:
        if self.takes_context:
            return self.function(payload, context)
        return self.function(payload)


def handler(name: str) -> Callable[[HandlerFunction], HandlerFunction]:
    """Decorator marking a function as the CPU handler called ``name``."""
    if callable(name) or not isinstance(name, str):
        raise TypeError('use @agentd.handler("name") with a name, not bare @agentd.handler')
    _check_name(name, origin="@agentd.handler")

    def mark(function: HandlerFunction) -> HandlerFunction:
        setattr(function, HANDLER_NAME_ATTRIBUTE, name)
        return function

    return mark


def validate_handler(name: str, function: Any, *, origin: str) -> RegisteredHandler:
    """Check one handler function and wrap it; raises HandlerLoadError with context."""
    _check_name(name, origin=origin)
    if not callable(function):
        raise HandlerLoadError(f"{origin}: handler {name!r} is not callable")
    if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
        raise HandlerLoadError(
            f"{origin}: handler {name!r} is async; handlers run in a thread pool and must be plain functions"
        )
    return RegisteredHandler(name=name, function=function, takes_context=_arity(name, function, origin) == 2)


def load_handler_modules(
    module_names: Iterable[str], *, reserved: Mapping[str, RegisteredHandler]
) -> dict[str, RegisteredHandler]:
    """Import each module and collect its decorated handlers.

    ``reserved`` holds names already taken (the built-ins); reusing one is an error, as is
    the same name in two modules.
    """
    loaded: dict[str, RegisteredHandler] = {}
    origins: dict[str, str] = {}
    for module_name in module_names:
        for registered in _handlers_of(_import(module_name)):
            if registered.name in reserved:
                raise HandlerLoadError(
                    f"handler module {module_name!r}: handler {registered.name!r} clashes with a built-in handler"
                )
            if registered.name in loaded:
                raise HandlerLoadError(
                    f"handler module {module_name!r}: handler {registered.name!r} is already defined "
                    f"by module {origins[registered.name]!r}"
                )
            loaded[registered.name] = registered
            origins[registered.name] = module_name
    return loaded


def _import(module_name: str) -> Any:
    if not module_name or not module_name.strip():
        raise HandlerLoadError("empty handler module name")
    try:
        return importlib.import_module(module_name)
    except Exception as error:  # any import-time failure is the user's to fix, so say which module
        raise HandlerLoadError(
            f"cannot import handler module {module_name!r}: {type(error).__name__}: {error}"
        ) from error


def _handlers_of(module: Any) -> list[RegisteredHandler]:
    origin = f"handler module {module.__name__!r}"
    found: list[RegisteredHandler] = []
    seen: set[str] = set()
    for attribute_value in vars(module).values():
        name = getattr(attribute_value, HANDLER_NAME_ATTRIBUTE, None)
        if name is None or not callable(attribute_value):
            continue
        if name in seen:
            raise HandlerLoadError(f"{origin}: handler {name!r} is defined twice")
        seen.add(name)
        found.append(validate_handler(name, attribute_value, origin=origin))
    if not found:
        raise HandlerLoadError(f'{origin} defines no handlers; decorate functions with @agentd.handler("name")')
    return found


def _check_name(name: str, *, origin: str) -> None:
    if not _HANDLER_NAME_PATTERN.match(name):
        raise HandlerLoadError(
            f"{origin}: handler name {name!r} is invalid (1-128 characters of letters, digits, _ . : -)"
        )


def _arity(name: str, function: HandlerFunction, origin: str) -> int:
    """1 when the handler takes (payload), 2 when it takes (payload, ctx)."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return 1  # builtins without a signature: assume the simple form
    for arity in (2, 1):
        try:
            signature.bind(*range(arity))
        except TypeError:
            continue
        return arity
    raise HandlerLoadError(f"{origin}: handler {name!r} must accept (payload) or (payload, ctx)")
