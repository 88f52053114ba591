"""The ``openai`` provider: chat completions through the official async client.

It reads OPENAI_API_KEY and OPENAI_BASE_URL, so it works with OpenAI and any
OpenAI-compatible server (vLLM, llama.cpp server, Ollama). The client never retries
(``max_retries=0``): the fabric does, with attempts it can see and bill. Errors are
translated to spec codes once, here.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import openai

from agentd.executors.base import (
    AUTH_ERROR,
    EXECUTION_ERROR,
    MODEL_UNAVAILABLE,
    RATE_LIMITED,
    RESOURCE_EXHAUSTED,
    TIMEOUT,
    VALIDATION_ERROR,
)
from agentd.executors.providers import LlmRequest, LlmResponse, ProviderError

logger = logging.getLogger(__name__)


class OpenAIProvider:
    """Chat completions through the official async client; reads OPENAI_API_KEY and OPENAI_BASE_URL."""

    name = "openai"

    def __init__(self, *, api_key: str | None = None, base_url: str | None = None) -> None:
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            # Local servers (Ollama, llama.cpp) need no key; a real endpoint answers 401 -> AUTH_ERROR.
            logger.warning("OPENAI_API_KEY is not set; sending a placeholder key")
            key = "sk-not-set"
        self._client = openai.AsyncOpenAI(
            api_key=key,
            base_url=base_url or os.environ.get("OPENAI_BASE_URL") or None,
            max_retries=0,  # the fabric retries, with attempts it can see and bill
        )

    async def complete(self, request: LlmRequest) -> LlmResponse:
        messages: list[dict[str, str]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.append({"role": "user", "content": request.prompt})
        options: dict[str, Any] = {}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.top_p is not None:
            options["top_p"] = request.top_p
        try:
            async with asyncio.timeout(request.timeout_s):
                response = await self._client.chat.completions.create(
                    model=request.model,
                    messages=messages,  # type: ignore[arg-type]
                    max_tokens=request.max_tokens,
                    timeout=request.timeout_s,
                    **options,
                )
        except TimeoutError as error:
            raise ProviderError(TIMEOUT, f"no answer within {request.timeout_s:.3f} s") from error
        except openai.OpenAIError as error:
            raise map_openai_error(error) from error
        return _read_response(response, request)

    async def close(self) -> None:
        await self._client.close()


def _read_response(response: Any, request: LlmRequest) -> LlmResponse:
    choices = getattr(response, "choices", None) or []
    message = choices[0].message if choices else None
    content = getattr(message, "content", None)
    finish_reason = str(getattr(choices[0], "finish_reason", "") or "") if choices else ""
    if content is None:
        raise ProviderError(EXECUTION_ERROR, "the response carries no message content")
    if finish_reason == "content_filter":
        # The text is cut by a filter: partial output is never a success.
        raise ProviderError(EXECUTION_ERROR, "the response was cut by a content filter", retryable=False)
    usage = getattr(response, "usage", None)
    if usage is None:
        tokens_in = tokens_out = total_tokens = 0
    else:
        tokens_in = int(usage.prompt_tokens or 0)
        tokens_out = int(usage.completion_tokens or 0)
        total_tokens = int(usage.total_tokens or tokens_in + tokens_out)
    return LlmResponse(
        text=content,
        model=str(getattr(response, "model", "") or request.model),
        finish_reason=finish_reason or "stop",
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        total_tokens=total_tokens,
        usage_reported=usage is not None,
    )


def map_openai_error(error: openai.OpenAIError) -> ProviderError:
    """Translate the client's exceptions into spec error codes, once, at this boundary."""
    if isinstance(error, openai.APITimeoutError):
        return ProviderError(TIMEOUT, "the provider did not answer in time")
    if isinstance(error, openai.APIConnectionError):
        return ProviderError(EXECUTION_ERROR, f"cannot reach the provider: {error}")
    if not isinstance(error, openai.APIStatusError):
        return ProviderError(EXECUTION_ERROR, f"{type(error).__name__}: {error}")
    status = error.status_code
    detail = f"HTTP {status}: {_short(error)}"
    if status == 429:
        return ProviderError(RATE_LIMITED, detail)
    if status in (401, 403):
        return ProviderError(AUTH_ERROR, detail)
    if status == 404 or _mentions_missing_model(error):
        return ProviderError(MODEL_UNAVAILABLE, detail)
    if status in (503, 529):
        return ProviderError(RESOURCE_EXHAUSTED, detail)
    if status in (400, 413, 422):
        # The request itself is wrong (e.g. max_tokens beyond the context): retrying cannot help.
        return ProviderError(VALIDATION_ERROR, detail)
    return ProviderError(EXECUTION_ERROR, detail)


def _mentions_missing_model(error: openai.APIStatusError) -> bool:
    code = str(getattr(error, "code", "") or "")
    message = str(error.message).lower()
    return code == "model_not_found" or ("model" in message and "does not exist" in message)


def _short(error: openai.APIStatusError) -> str:
    return str(error.message)[:300]
