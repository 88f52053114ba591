"""LLM providers: the interface, ``stub`` (deterministic, no network), and the factory.

``openai`` (any OpenAI-compatible server) lives in ``openai_provider``.

A provider turns one LlmRequest into an LlmResponse or raises ProviderError carrying a
spec error code (docs/agent-protocol.md). Providers never retry: the fabric does, with
its own attempts, budgets and events.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from dataclasses import dataclass
from typing import Protocol

from agentd.executors.base import RETRYABLE

PROVIDER_NAMES = ("stub", "openai")


@dataclass(frozen=True)
class LlmRequest:
    model: str
    tier: str
    prompt: str
    system: str
    max_tokens: int
    temperature: float | None
    top_p: float | None
    timeout_s: float


@dataclass(frozen=True)
class LlmResponse:
    text: str
    model: str
    finish_reason: str
    tokens_in: int
    tokens_out: int
    total_tokens: int
    usage_reported: bool
    latency_ms: int | None = None  # None: the executor measures wall time


class ProviderError(Exception):
    """A failed invocation with its spec error code and whether the fabric may retry."""

    def __init__(self, code: str, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = RETRYABLE.get(code, False) if retryable is None else retryable


class LlmProvider(Protocol):
    name: str

    async def complete(self, request: LlmRequest) -> LlmResponse: ...

    async def close(self) -> None: ...


def default_model(provider_name: str, tier: str) -> str:
    """The model a provider uses for a tier when neither the unit nor the config names one."""
    if provider_name == "stub":
        return f"stub-{tier or 'small'}"
    return "gpt-4o-mini"


class StubProvider:
    """Deterministic fake: text, token counts and latency are functions of (model, system, prompt).

    It reports a latency instead of waiting it out, so demos and tests stay fast.
    """

    name = "stub"

    _WORDS = (
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
        "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
    )  # fmt: skip

    async def complete(self, request: LlmRequest) -> LlmResponse:
        digest = hashlib.sha256("\x00".join((request.model, request.system, request.prompt)).encode("utf-8")).digest()
        wanted_tokens = 8 + digest[0] % 57
        tokens_out = min(request.max_tokens, wanted_tokens)
        tokens_in = max(1, math.ceil(len(request.system + request.prompt) / 4))
        words = [self._WORDS[digest[(index % 28) + 4] % len(self._WORDS)] for index in range(tokens_out)]
        await asyncio.sleep(0)  # yield once, like a real call would
        return LlmResponse(
            text=" ".join(words),
            model=request.model,
            finish_reason="length" if tokens_out < wanted_tokens else "stop",
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            total_tokens=tokens_in + tokens_out,
            usage_reported=True,
            latency_ms=20 + int.from_bytes(digest[1:3], "big") % 480,
        )

    async def close(self) -> None:
        return None


def make_provider(name: str) -> LlmProvider:
    """The provider called ``name``; ValueError for names agentd does not know."""
    if name == "stub":
        return StubProvider()
    if name == "openai":
        # Imported on demand: the openai package costs seconds of start-up that stub and cpu agents skip.
        from agentd.executors.openai_provider import OpenAIProvider

        return OpenAIProvider()
    raise ValueError(f"unknown llm provider {name!r}; expected one of {', '.join(PROVIDER_NAMES)}")
