from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Node(_message.Message):
    __slots__ = ("node_id", "region", "kinds", "concurrency", "available_slots", "in_flight", "queue_depth", "utilization", "cpu_load", "memory_available_bytes", "health", "last_heartbeat_age_ms", "version", "connected", "trust_score", "handlers", "llm_tiers", "llm_models", "circuit")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    CPU_LOAD_FIELD_NUMBER: _ClassVar[int]
    MEMORY_AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    TRUST_SCORE_FIELD_NUMBER: _ClassVar[int]
    HANDLERS_FIELD_NUMBER: _ClassVar[int]
    LLM_TIERS_FIELD_NUMBER: _ClassVar[int]
    LLM_MODELS_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    region: str
    kinds: _containers.RepeatedScalarFieldContainer[str]
    concurrency: int
    available_slots: int
    in_flight: int
    queue_depth: int
    utilization: float
    cpu_load: float
    memory_available_bytes: int
    health: str
    last_heartbeat_age_ms: int
    version: str
    connected: bool
    trust_score: str
    handlers: _containers.RepeatedScalarFieldContainer[str]
    llm_tiers: _containers.RepeatedScalarFieldContainer[str]
    llm_models: _containers.RepeatedScalarFieldContainer[str]
    circuit: str
    def __init__(self, node_id: _Optional[str] = ..., region: _Optional[str] = ..., kinds: _Optional[_Iterable[str]] = ..., concurrency: _Optional[int] = ..., available_slots: _Optional[int] = ..., in_flight: _Optional[int] = ..., queue_depth: _Optional[int] = ..., utilization: _Optional[float] = ..., cpu_load: _Optional[float] = ..., memory_available_bytes: _Optional[int] = ..., health: _Optional[str] = ..., last_heartbeat_age_ms: _Optional[int] = ..., version: _Optional[str] = ..., connected: _Optional[bool] = ..., trust_score: _Optional[str] = ..., handlers: _Optional[_Iterable[str]] = ..., llm_tiers: _Optional[_Iterable[str]] = ..., llm_models: _Optional[_Iterable[str]] = ..., circuit: _Optional[str] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ...) -> None: ...

class DrainNodeRequest(_message.Message):
    __slots__ = ("node_id", "undo")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    UNDO_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    undo: bool
    def __init__(self, node_id: _Optional[str] = ..., undo: _Optional[bool] = ...) -> None: ...

class DrainNodeResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: Node
    def __init__(self, node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class GetCapacityRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CapacityWindow(_message.Message):
    __slots__ = ("window", "mode", "replicas", "queue_depth", "wait_p95_seconds", "utilization")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    WAIT_P95_SECONDS_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    window: int
    mode: str
    replicas: int
    queue_depth: int
    wait_p95_seconds: float
    utilization: float
    def __init__(self, window: _Optional[int] = ..., mode: _Optional[str] = ..., replicas: _Optional[int] = ..., queue_depth: _Optional[int] = ..., wait_p95_seconds: _Optional[float] = ..., utilization: _Optional[float] = ...) -> None: ...

class GetCapacityResponse(_message.Message):
    __slots__ = ("mode", "replicas", "concurrency_per_replica", "queue_depth", "wait_p95_seconds", "utilization", "recent", "congestion", "projection_lag_events", "log_seq")
    MODE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_PER_REPLICA_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    WAIT_P95_SECONDS_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    RECENT_FIELD_NUMBER: _ClassVar[int]
    CONGESTION_FIELD_NUMBER: _ClassVar[int]
    PROJECTION_LAG_EVENTS_FIELD_NUMBER: _ClassVar[int]
    LOG_SEQ_FIELD_NUMBER: _ClassVar[int]
    mode: str
    replicas: int
    concurrency_per_replica: int
    queue_depth: int
    wait_p95_seconds: float
    utilization: float
    recent: _containers.RepeatedCompositeFieldContainer[CapacityWindow]
    congestion: str
    projection_lag_events: int
    log_seq: int
    def __init__(self, mode: _Optional[str] = ..., replicas: _Optional[int] = ..., concurrency_per_replica: _Optional[int] = ..., queue_depth: _Optional[int] = ..., wait_p95_seconds: _Optional[float] = ..., utilization: _Optional[float] = ..., recent: _Optional[_Iterable[_Union[CapacityWindow, _Mapping]]] = ..., congestion: _Optional[str] = ..., projection_lag_events: _Optional[int] = ..., log_seq: _Optional[int] = ...) -> None: ...

class CreditWalletRequest(_message.Message):
    __slots__ = ("tenant_id", "amount_usd", "client_key")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_USD_FIELD_NUMBER: _ClassVar[int]
    CLIENT_KEY_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    amount_usd: str
    client_key: str
    def __init__(self, tenant_id: _Optional[str] = ..., amount_usd: _Optional[str] = ..., client_key: _Optional[str] = ...) -> None: ...

class CreditWalletResponse(_message.Message):
    __slots__ = ("wallet", "duplicate", "seq")
    WALLET_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    wallet: Wallet
    duplicate: bool
    seq: int
    def __init__(self, wallet: _Optional[_Union[Wallet, _Mapping]] = ..., duplicate: _Optional[bool] = ..., seq: _Optional[int] = ...) -> None: ...

class Wallet(_message.Message):
    __slots__ = ("tenant_id", "balance_usd", "credited_usd", "debited_usd", "reserved_usd")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    BALANCE_USD_FIELD_NUMBER: _ClassVar[int]
    CREDITED_USD_FIELD_NUMBER: _ClassVar[int]
    DEBITED_USD_FIELD_NUMBER: _ClassVar[int]
    RESERVED_USD_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    balance_usd: str
    credited_usd: str
    debited_usd: str
    reserved_usd: str
    def __init__(self, tenant_id: _Optional[str] = ..., balance_usd: _Optional[str] = ..., credited_usd: _Optional[str] = ..., debited_usd: _Optional[str] = ..., reserved_usd: _Optional[str] = ...) -> None: ...

class ListWalletsRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class ListWalletsResponse(_message.Message):
    __slots__ = ("wallets",)
    WALLETS_FIELD_NUMBER: _ClassVar[int]
    wallets: _containers.RepeatedCompositeFieldContainer[Wallet]
    def __init__(self, wallets: _Optional[_Iterable[_Union[Wallet, _Mapping]]] = ...) -> None: ...

class LedgerLine(_message.Message):
    __slots__ = ("line_json",)
    LINE_JSON_FIELD_NUMBER: _ClassVar[int]
    line_json: str
    def __init__(self, line_json: _Optional[str] = ...) -> None: ...

class ListLedgerRequest(_message.Message):
    __slots__ = ("tenant_id", "after_id", "limit")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    after_id: int
    limit: int
    def __init__(self, tenant_id: _Optional[str] = ..., after_id: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ListLedgerResponse(_message.Message):
    __slots__ = ("lines", "next_after_id")
    LINES_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[LedgerLine]
    next_after_id: int
    def __init__(self, lines: _Optional[_Iterable[_Union[LedgerLine, _Mapping]]] = ..., next_after_id: _Optional[int] = ...) -> None: ...

class CheckBillingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Finding(_message.Message):
    __slots__ = ("kind", "detail")
    KIND_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    kind: str
    detail: str
    def __init__(self, kind: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class CheckBillingResponse(_message.Message):
    __slots__ = ("findings", "checked_through_seq")
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    CHECKED_THROUGH_SEQ_FIELD_NUMBER: _ClassVar[int]
    findings: _containers.RepeatedCompositeFieldContainer[Finding]
    checked_through_seq: int
    def __init__(self, findings: _Optional[_Iterable[_Union[Finding, _Mapping]]] = ..., checked_through_seq: _Optional[int] = ...) -> None: ...

class VerifyReplayRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProjectionDigest(_message.Message):
    __slots__ = ("projection", "live_sha256", "replay_sha256", "identical")
    PROJECTION_FIELD_NUMBER: _ClassVar[int]
    LIVE_SHA256_FIELD_NUMBER: _ClassVar[int]
    REPLAY_SHA256_FIELD_NUMBER: _ClassVar[int]
    IDENTICAL_FIELD_NUMBER: _ClassVar[int]
    projection: str
    live_sha256: str
    replay_sha256: str
    identical: bool
    def __init__(self, projection: _Optional[str] = ..., live_sha256: _Optional[str] = ..., replay_sha256: _Optional[str] = ..., identical: _Optional[bool] = ...) -> None: ...

class VerifyReplayResponse(_message.Message):
    __slots__ = ("digests", "identical", "through_seq")
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    IDENTICAL_FIELD_NUMBER: _ClassVar[int]
    THROUGH_SEQ_FIELD_NUMBER: _ClassVar[int]
    digests: _containers.RepeatedCompositeFieldContainer[ProjectionDigest]
    identical: bool
    through_seq: int
    def __init__(self, digests: _Optional[_Iterable[_Union[ProjectionDigest, _Mapping]]] = ..., identical: _Optional[bool] = ..., through_seq: _Optional[int] = ...) -> None: ...
