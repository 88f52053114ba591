from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConnectRequest(_message.Message):
    __slots__ = ("hello", "heartbeat", "claims", "started", "results")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    heartbeat: Heartbeat
    claims: _containers.RepeatedCompositeFieldContainer[Claim]
    started: _containers.RepeatedCompositeFieldContainer[Started]
    results: _containers.RepeatedCompositeFieldContainer[Result]
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., claims: _Optional[_Iterable[_Union[Claim, _Mapping]]] = ..., started: _Optional[_Iterable[_Union[Started, _Mapping]]] = ..., results: _Optional[_Iterable[_Union[Result, _Mapping]]] = ...) -> None: ...

class ConnectResponse(_message.Message):
    __slots__ = ("welcome", "offers", "claim_decisions", "result_acks", "stops", "drain")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    OFFERS_FIELD_NUMBER: _ClassVar[int]
    CLAIM_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    RESULT_ACKS_FIELD_NUMBER: _ClassVar[int]
    STOPS_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    offers: _containers.RepeatedCompositeFieldContainer[Offer]
    claim_decisions: _containers.RepeatedCompositeFieldContainer[ClaimDecision]
    result_acks: _containers.RepeatedCompositeFieldContainer[ResultAck]
    stops: _containers.RepeatedCompositeFieldContainer[StopUnit]
    drain: Drain
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., offers: _Optional[_Iterable[_Union[Offer, _Mapping]]] = ..., claim_decisions: _Optional[_Iterable[_Union[ClaimDecision, _Mapping]]] = ..., result_acks: _Optional[_Iterable[_Union[ResultAck, _Mapping]]] = ..., stops: _Optional[_Iterable[_Union[StopUnit, _Mapping]]] = ..., drain: _Optional[_Union[Drain, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("node_id", "region", "kinds", "concurrency", "version", "handlers", "llm_tiers", "llm_models", "llm_max_concurrency", "llm_provider", "stability_class", "running")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HANDLERS_FIELD_NUMBER: _ClassVar[int]
    LLM_TIERS_FIELD_NUMBER: _ClassVar[int]
    LLM_MODELS_FIELD_NUMBER: _ClassVar[int]
    LLM_MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    LLM_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    STABILITY_CLASS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    region: str
    kinds: _containers.RepeatedScalarFieldContainer[str]
    concurrency: int
    version: str
    handlers: _containers.RepeatedScalarFieldContainer[str]
    llm_tiers: _containers.RepeatedScalarFieldContainer[str]
    llm_models: _containers.RepeatedScalarFieldContainer[str]
    llm_max_concurrency: int
    llm_provider: str
    stability_class: str
    running: _containers.RepeatedCompositeFieldContainer[UnitRef]
    def __init__(self, node_id: _Optional[str] = ..., region: _Optional[str] = ..., kinds: _Optional[_Iterable[str]] = ..., concurrency: _Optional[int] = ..., version: _Optional[str] = ..., handlers: _Optional[_Iterable[str]] = ..., llm_tiers: _Optional[_Iterable[str]] = ..., llm_models: _Optional[_Iterable[str]] = ..., llm_max_concurrency: _Optional[int] = ..., llm_provider: _Optional[str] = ..., stability_class: _Optional[str] = ..., running: _Optional[_Iterable[_Union[UnitRef, _Mapping]]] = ...) -> None: ...

class UnitRef(_message.Message):
    __slots__ = ("work_unit_id", "attempt")
    WORK_UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    work_unit_id: str
    attempt: int
    def __init__(self, work_unit_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("node_id", "connection_id", "heartbeat_interval_ms", "lease_ms", "max_batch", "server_version")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    connection_id: str
    heartbeat_interval_ms: int
    lease_ms: int
    max_batch: int
    server_version: str
    def __init__(self, node_id: _Optional[str] = ..., connection_id: _Optional[str] = ..., heartbeat_interval_ms: _Optional[int] = ..., lease_ms: _Optional[int] = ..., max_batch: _Optional[int] = ..., server_version: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("cpu_load", "in_flight", "queue_depth", "utilization", "memory_available_bytes", "running", "sent_unix_ms")
    CPU_LOAD_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    SENT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    cpu_load: float
    in_flight: int
    queue_depth: int
    utilization: float
    memory_available_bytes: int
    running: _containers.RepeatedCompositeFieldContainer[UnitRef]
    sent_unix_ms: int
    def __init__(self, cpu_load: _Optional[float] = ..., in_flight: _Optional[int] = ..., queue_depth: _Optional[int] = ..., utilization: _Optional[float] = ..., memory_available_bytes: _Optional[int] = ..., running: _Optional[_Iterable[_Union[UnitRef, _Mapping]]] = ..., sent_unix_ms: _Optional[int] = ...) -> None: ...

class Offer(_message.Message):
    __slots__ = ("work_unit_id", "attempt", "kind", "handler", "input_json", "tenant_id", "execution_session_id", "run_timeout_ms", "llm")
    WORK_UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    HANDLER_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    LLM_FIELD_NUMBER: _ClassVar[int]
    work_unit_id: str
    attempt: int
    kind: str
    handler: str
    input_json: str
    tenant_id: str
    execution_session_id: str
    run_timeout_ms: int
    llm: LlmSpecRef
    def __init__(self, work_unit_id: _Optional[str] = ..., attempt: _Optional[int] = ..., kind: _Optional[str] = ..., handler: _Optional[str] = ..., input_json: _Optional[str] = ..., tenant_id: _Optional[str] = ..., execution_session_id: _Optional[str] = ..., run_timeout_ms: _Optional[int] = ..., llm: _Optional[_Union[LlmSpecRef, _Mapping]] = ...) -> None: ...

class LlmSpecRef(_message.Message):
    __slots__ = ("tier", "model", "max_tokens")
    TIER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    tier: str
    model: str
    max_tokens: int
    def __init__(self, tier: _Optional[str] = ..., model: _Optional[str] = ..., max_tokens: _Optional[int] = ...) -> None: ...

class Claim(_message.Message):
    __slots__ = ("work_unit_id", "attempt")
    WORK_UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    work_unit_id: str
    attempt: int
    def __init__(self, work_unit_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class ClaimDecision(_message.Message):
    __slots__ = ("work_unit_id", "attempt", "granted", "reason", "lease_ms")
    WORK_UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    work_unit_id: str
    attempt: int
    granted: bool
    reason: str
    lease_ms: int
    def __init__(self, work_unit_id: _Optional[str] = ..., attempt: _Optional[int] = ..., granted: _Optional[bool] = ..., reason: _Optional[str] = ..., lease_ms: _Optional[int] = ...) -> None: ...

class Started(_message.Message):
    __slots__ = ("work_unit_id", "attempt")
    WORK_UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    work_unit_id: str
    attempt: int
    def __init__(self, work_unit_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class LlmInvocation(_message.Message):
    __slots__ = ("provider", "model", "tier", "tokens_in", "tokens_out", "total_tokens", "latency_ms", "usage_reported", "estimated_cost_usd", "error_code", "error_message")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    TOKENS_IN_FIELD_NUMBER: _ClassVar[int]
    TOKENS_OUT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    USAGE_REPORTED_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_USD_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    provider: str
    model: str
    tier: str
    tokens_in: int
    tokens_out: int
    total_tokens: int
    latency_ms: int
    usage_reported: bool
    estimated_cost_usd: str
    error_code: str
    error_message: str
    def __init__(self, provider: _Optional[str] = ..., model: _Optional[str] = ..., tier: _Optional[str] = ..., tokens_in: _Optional[int] = ..., tokens_out: _Optional[int] = ..., total_tokens: _Optional[int] = ..., latency_ms: _Optional[int] = ..., usage_reported: _Optional[bool] = ..., estimated_cost_usd: _Optional[str] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("work_unit_id", "attempt", "success", "output_json", "error_code", "error_message", "retryable", "duration_us", "cpu_time_us", "llm")
    WORK_UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    DURATION_US_FIELD_NUMBER: _ClassVar[int]
    CPU_TIME_US_FIELD_NUMBER: _ClassVar[int]
    LLM_FIELD_NUMBER: _ClassVar[int]
    work_unit_id: str
    attempt: int
    success: bool
    output_json: str
    error_code: str
    error_message: str
    retryable: bool
    duration_us: int
    cpu_time_us: int
    llm: LlmInvocation
    def __init__(self, work_unit_id: _Optional[str] = ..., attempt: _Optional[int] = ..., success: _Optional[bool] = ..., output_json: _Optional[str] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ..., retryable: _Optional[bool] = ..., duration_us: _Optional[int] = ..., cpu_time_us: _Optional[int] = ..., llm: _Optional[_Union[LlmInvocation, _Mapping]] = ...) -> None: ...

class ResultAck(_message.Message):
    __slots__ = ("work_unit_id", "attempt", "accepted", "reason")
    WORK_UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    work_unit_id: str
    attempt: int
    accepted: bool
    reason: str
    def __init__(self, work_unit_id: _Optional[str] = ..., attempt: _Optional[int] = ..., accepted: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class StopUnit(_message.Message):
    __slots__ = ("work_unit_id", "attempt", "reason")
    WORK_UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    work_unit_id: str
    attempt: int
    reason: str
    def __init__(self, work_unit_id: _Optional[str] = ..., attempt: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class Drain(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...
