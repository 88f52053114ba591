"""The LLM executor: kind=llm_pod attempts through one provider, with token telemetry.

Unit input JSON: ``{"prompt": str, "system": str?, "model": str?, "tier": str?,
"max_tokens": int?, "temperature": float?, "top_p": float?, "timeout_ms": int?}``.
The offer's ``llm`` (tier, model, max_tokens) wins over the input: the data plane never
rewrites them, so what the daemon scheduled (and budgeted) is what runs.

Every attempt's Result carries ``llm`` (LlmInvocation): provider, model, tier, tokens,
latency and an estimated cost from the price table, or the error on failure. Prompt
text is never logged unless ``log_prompts`` (KRAKO_LOGGING_MODE=debug) is on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from krako.v1 import agent_pb2

from agentd.executors.base import (
    MODEL_UNAVAILABLE,
    UNKNOWN_HANDLER,
    VALIDATION_ERROR,
    AttemptContext,
    failure,
)
from agentd.executors.providers import LlmProvider, LlmRequest, ProviderError, default_model

logger = logging.getLogger(__name__)

LLM_HANDLERS = ("chat",)  # an empty handler on the offer means "chat"
DEFAULT_MAX_TOKENS = 256
MAX_MAX_TOKENS = 131_072
DEFAULT_TIMEOUT_MS = 60_000
MAX_PROMPT_CHARS = 1_000_000
_MICRO_USD = Decimal("0.000001")


@dataclass(frozen=True)
class PriceTable:
    """USD per 1,000 tokens: one default and optional per-model overrides (configuration)."""

    default_usd_per_1k_tokens: Decimal = Decimal("0.002000")
    usd_per_1k_tokens_by_model: Mapping[str, Decimal] = field(default_factory=dict)

    def estimate_usd(self, model: str, total_tokens: int) -> str:
        """The cost as a 6-place decimal string (ROUND_HALF_EVEN), like every money value."""
        price = self.usd_per_1k_tokens_by_model.get(model, self.default_usd_per_1k_tokens)
        return str((Decimal(total_tokens) * price / 1000).quantize(_MICRO_USD, rounding=ROUND_HALF_EVEN))

    @staticmethod
    def parse(default_text: str, by_model_text: str = "") -> PriceTable:
        """From "0.002000" and "model=price,model=price"; ValueError says which entry is bad."""
        by_model = {model: _price(price, model) for model, price in parse_pairs(by_model_text).items()}
        return PriceTable(
            default_usd_per_1k_tokens=_price(default_text, "default"), usd_per_1k_tokens_by_model=by_model
        )


@dataclass(frozen=True)
class LlmSettings:
    """What this pod serves and how it prices it."""

    provider: str = "stub"
    tiers: tuple[str, ...] = ("small", "medium", "large")
    models: tuple[str, ...] = ()  # empty: any model the unit names
    max_concurrency: int = 4
    tier_models: Mapping[str, str] = field(default_factory=dict)  # tier -> model when the unit names none
    prices: PriceTable = field(default_factory=PriceTable)
    log_prompts: bool = False


class LlmExecutor:
    """Runs kind=llm_pod attempts."""

    kind = "llm_pod"

    def __init__(self, *, provider: LlmProvider, settings: LlmSettings) -> None:
        self._provider = provider
        self._settings = settings

    def handler_names(self) -> list[str]:
        return list(LLM_HANDLERS)

    async def execute(self, context: AttemptContext) -> agent_pb2.Result:
        offer = context.offer
        if offer.handler and offer.handler not in LLM_HANDLERS:
            return failure(UNKNOWN_HANDLER, f"llm pods run handler 'chat', not {offer.handler!r}")
        try:
            request = self._request(offer)
        except ValueError as error:
            return failure(VALIDATION_ERROR, str(error))
        unavailable = self._unavailable_reason(request)
        if unavailable:
            return self._failed(request, ProviderError(MODEL_UNAVAILABLE, unavailable), latency_ms=0, duration_us=0)
        self._log_start(offer, request)
        started_ns = time.perf_counter_ns()
        try:
            response = await self._provider.complete(request)
        except ProviderError as error:
            elapsed_us = (time.perf_counter_ns() - started_ns) // 1000
            return self._failed(request, error, latency_ms=elapsed_us // 1000, duration_us=elapsed_us)
        elapsed_us = (time.perf_counter_ns() - started_ns) // 1000
        latency_ms = response.latency_ms if response.latency_ms is not None else elapsed_us // 1000
        cost = self._settings.prices.estimate_usd(request.model, response.total_tokens)
        logger.debug(  # per unit: DEBUG, or thousands of lines a second at full speed
            "llm invocation %s#%d model=%s tokens=%d latency_ms=%d usage_reported=%s",
            offer.work_unit_id, offer.attempt, request.model, response.total_tokens, latency_ms,
            response.usage_reported,
        )  # fmt: skip
        output = {"text": response.text, "model": response.model, "finish_reason": response.finish_reason}
        return agent_pb2.Result(
            success=True,
            output_json=json.dumps(output, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
            duration_us=elapsed_us,
            llm=agent_pb2.LlmInvocation(
                provider=self._provider.name,
                model=request.model,
                tier=request.tier,
                tokens_in=response.tokens_in,
                tokens_out=response.tokens_out,
                total_tokens=response.total_tokens,
                latency_ms=latency_ms,
                usage_reported=response.usage_reported,
                estimated_cost_usd=cost if response.usage_reported else "0.000000",
            ),
        )

    async def close(self) -> None:
        await self._provider.close()

    def _request(self, offer: agent_pb2.Offer) -> LlmRequest:
        unit = _decode_object(offer.input_json)
        prompt = unit.get("prompt")
        if not isinstance(prompt, str) or not prompt or len(prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f'llm input needs "prompt": a non-empty string of at most {MAX_PROMPT_CHARS} characters')
        system = _optional(unit, "system", str) or ""
        tier = (
            offer.llm.tier or _optional(unit, "tier", str) or (self._settings.tiers[0] if self._settings.tiers else "")
        )
        model = (
            offer.llm.model
            or _optional(unit, "model", str)
            or self._settings.tier_models.get(tier)
            or default_model(self._settings.provider, tier)
        )
        max_tokens = offer.llm.max_tokens or _optional(unit, "max_tokens", int) or DEFAULT_MAX_TOKENS
        if not 1 <= max_tokens <= MAX_MAX_TOKENS:
            raise ValueError(f'"max_tokens" must be from 1 to {MAX_MAX_TOKENS}')
        temperature = _optional(unit, "temperature", float)
        if temperature is not None and not 0.0 <= temperature <= 2.0:
            raise ValueError('"temperature" must be from 0 to 2')
        top_p = _optional(unit, "top_p", float)
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise ValueError('"top_p" must be greater than 0 and at most 1')
        timeouts_ms = [t for t in (_optional(unit, "timeout_ms", int), offer.run_timeout_ms) if t]
        if any(t < 0 for t in timeouts_ms):
            raise ValueError('"timeout_ms" must be positive')
        return LlmRequest(
            model=model,
            tier=tier,
            prompt=prompt,
            system=system,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            timeout_s=min(timeouts_ms, default=DEFAULT_TIMEOUT_MS) / 1000.0,
        )

    def _unavailable_reason(self, request: LlmRequest) -> str:
        if request.tier and self._settings.tiers and request.tier not in self._settings.tiers:
            return f"this pod serves tiers {', '.join(self._settings.tiers)}, not {request.tier!r}"
        if self._settings.models and request.model not in self._settings.models:
            return f"this pod does not serve model {request.model!r}"
        return ""

    def _failed(
        self, request: LlmRequest, error: ProviderError, *, latency_ms: int, duration_us: int
    ) -> agent_pb2.Result:
        logger.debug("llm invocation failed model=%s code=%s: %s", request.model, error.code, error.message)
        result = failure(error.code, error.message, retryable=error.retryable, duration_us=duration_us)
        result.llm.CopyFrom(
            agent_pb2.LlmInvocation(
                provider=self._provider.name,
                model=request.model,
                tier=request.tier,
                latency_ms=latency_ms,
                usage_reported=False,
                estimated_cost_usd="0.000000",
                error_code=error.code,
                error_message=result.error_message,
            )
        )
        return result

    def _log_start(self, offer: agent_pb2.Offer, request: LlmRequest) -> None:
        if self._settings.log_prompts:
            logger.debug("llm prompt %s#%d system=%r prompt=%r", offer.work_unit_id, offer.attempt,
                         request.system, request.prompt)  # fmt: skip


def parse_pairs(text: str) -> dict[str, str]:
    """Parse "a=1,b=2" (configuration); ValueError names the malformed entry."""
    pairs: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        key, separator, value = entry.partition("=")
        if not separator or not key.strip() or not value.strip():
            raise ValueError(f"expected name=value, got {entry!r}")
        pairs[key.strip()] = value.strip()
    return pairs


def _price(text: str, what: str) -> Decimal:
    try:
        price = Decimal(text)
    except InvalidOperation as error:
        raise ValueError(f"price for {what} is not a decimal: {text!r}") from error
    if not price.is_finite() or price < 0:
        raise ValueError(f"price for {what} must be a non-negative decimal, got {text!r}")
    return price


def _decode_object(input_json: str) -> dict[str, Any]:
    try:
        value = json.loads(input_json) if input_json else None
    except ValueError as error:
        raise ValueError(f"input is not valid JSON: {error}") from error
    if not isinstance(value, dict):
        raise ValueError("llm input must be a JSON object")
    return value


def _optional(unit: dict[str, Any], key: str, kind: type) -> Any:
    value: Any = unit.get(key)
    if value is None:
        return None
    accepted: tuple[type, ...] = (int, float) if kind is float else (kind,)
    if isinstance(value, bool) or not isinstance(value, accepted):
        wanted = {float: "a number", int: "an integer"}.get(kind, "a string")
        raise ValueError(f'"{key}" must be {wanted}')
    return float(unit[key]) if kind is float else value
