import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    PRIORITY_P0: _ClassVar[Priority]
    PRIORITY_P1: _ClassVar[Priority]
    PRIORITY_P2: _ClassVar[Priority]
    PRIORITY_P3: _ClassVar[Priority]

class WorkUnitState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORK_UNIT_STATE_UNSPECIFIED: _ClassVar[WorkUnitState]
    WORK_UNIT_STATE_PENDING: _ClassVar[WorkUnitState]
    WORK_UNIT_STATE_SCHEDULED: _ClassVar[WorkUnitState]
    WORK_UNIT_STATE_CLAIMED: _ClassVar[WorkUnitState]
    WORK_UNIT_STATE_RUNNING: _ClassVar[WorkUnitState]
    WORK_UNIT_STATE_COMPLETED: _ClassVar[WorkUnitState]
    WORK_UNIT_STATE_FAILED: _ClassVar[WorkUnitState]
    WORK_UNIT_STATE_CANCELLED: _ClassVar[WorkUnitState]
    WORK_UNIT_STATE_REJECTED: _ClassVar[WorkUnitState]
PRIORITY_UNSPECIFIED: Priority
PRIORITY_P0: Priority
PRIORITY_P1: Priority
PRIORITY_P2: Priority
PRIORITY_P3: Priority
WORK_UNIT_STATE_UNSPECIFIED: WorkUnitState
WORK_UNIT_STATE_PENDING: WorkUnitState
WORK_UNIT_STATE_SCHEDULED: WorkUnitState
WORK_UNIT_STATE_CLAIMED: WorkUnitState
WORK_UNIT_STATE_RUNNING: WorkUnitState
WORK_UNIT_STATE_COMPLETED: WorkUnitState
WORK_UNIT_STATE_FAILED: WorkUnitState
WORK_UNIT_STATE_CANCELLED: WorkUnitState
WORK_UNIT_STATE_REJECTED: WorkUnitState

class Event(_message.Message):
    __slots__ = ("seq", "event_id", "type", "idempotency_key", "ts", "tenant_id", "execution_session_id", "work_unit_id", "source", "payload_json")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    WORK_UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    seq: int
    event_id: str
    type: str
    idempotency_key: str
    ts: _timestamp_pb2.Timestamp
    tenant_id: str
    execution_session_id: str
    work_unit_id: str
    source: str
    payload_json: str
    def __init__(self, seq: _Optional[int] = ..., event_id: _Optional[str] = ..., type: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., ts: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tenant_id: _Optional[str] = ..., execution_session_id: _Optional[str] = ..., work_unit_id: _Optional[str] = ..., source: _Optional[str] = ..., payload_json: _Optional[str] = ...) -> None: ...

class LlmSpec(_message.Message):
    __slots__ = ("tier", "model", "max_tokens")
    TIER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    tier: str
    model: str
    max_tokens: int
    def __init__(self, tier: _Optional[str] = ..., model: _Optional[str] = ..., max_tokens: _Optional[int] = ...) -> None: ...

class WorkUnitSpec(_message.Message):
    __slots__ = ("kind", "handler", "input_json", "priority", "tenant_id", "execution_session_id", "client_key", "region", "region_required", "min_runtime_version", "idempotent", "max_attempts", "run_timeout_ms", "dispatch_timeout_ms", "llm", "privacy", "depends_on")
    KIND_FIELD_NUMBER: _ClassVar[int]
    HANDLER_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_KEY_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    REGION_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    MIN_RUNTIME_VERSION_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENT_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    RUN_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    DISPATCH_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    LLM_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    kind: str
    handler: str
    input_json: str
    priority: Priority
    tenant_id: str
    execution_session_id: str
    client_key: str
    region: str
    region_required: bool
    min_runtime_version: str
    idempotent: bool
    max_attempts: int
    run_timeout_ms: int
    dispatch_timeout_ms: int
    llm: LlmSpec
    privacy: str
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kind: _Optional[str] = ..., handler: _Optional[str] = ..., input_json: _Optional[str] = ..., priority: _Optional[_Union[Priority, str]] = ..., tenant_id: _Optional[str] = ..., execution_session_id: _Optional[str] = ..., client_key: _Optional[str] = ..., region: _Optional[str] = ..., region_required: _Optional[bool] = ..., min_runtime_version: _Optional[str] = ..., idempotent: _Optional[bool] = ..., max_attempts: _Optional[int] = ..., run_timeout_ms: _Optional[int] = ..., dispatch_timeout_ms: _Optional[int] = ..., llm: _Optional[_Union[LlmSpec, _Mapping]] = ..., privacy: _Optional[str] = ..., depends_on: _Optional[_Iterable[str]] = ...) -> None: ...

class WorkUnit(_message.Message):
    __slots__ = ("work_unit_id", "spec", "state", "attempt", "node_id", "output_json", "error_code", "error_message", "submitted_seq", "last_seq", "submitted_at", "finished_at", "duration_ms", "cpu_seconds")
    WORK_UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    work_unit_id: str
    spec: WorkUnitSpec
    state: WorkUnitState
    attempt: int
    node_id: str
    output_json: str
    error_code: str
    error_message: str
    submitted_seq: int
    last_seq: int
    submitted_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    duration_ms: int
    cpu_seconds: str
    def __init__(self, work_unit_id: _Optional[str] = ..., spec: _Optional[_Union[WorkUnitSpec, _Mapping]] = ..., state: _Optional[_Union[WorkUnitState, str]] = ..., attempt: _Optional[int] = ..., node_id: _Optional[str] = ..., output_json: _Optional[str] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ..., submitted_seq: _Optional[int] = ..., last_seq: _Optional[int] = ..., submitted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration_ms: _Optional[int] = ..., cpu_seconds: _Optional[str] = ...) -> None: ...
