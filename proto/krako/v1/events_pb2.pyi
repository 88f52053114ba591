from krako.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReadEventsRequest(_message.Message):
    __slots__ = ("after_seq", "limit", "types", "work_unit_id")
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    WORK_UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    after_seq: int
    limit: int
    types: _containers.RepeatedScalarFieldContainer[str]
    work_unit_id: str
    def __init__(self, after_seq: _Optional[int] = ..., limit: _Optional[int] = ..., types: _Optional[_Iterable[str]] = ..., work_unit_id: _Optional[str] = ...) -> None: ...

class ReadEventsResponse(_message.Message):
    __slots__ = ("events", "last_seq")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_common_pb2.Event]
    last_seq: int
    def __init__(self, events: _Optional[_Iterable[_Union[_common_pb2.Event, _Mapping]]] = ..., last_seq: _Optional[int] = ...) -> None: ...

class SubscribeEventsRequest(_message.Message):
    __slots__ = ("after_seq", "types", "work_unit_id")
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    WORK_UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    after_seq: int
    types: _containers.RepeatedScalarFieldContainer[str]
    work_unit_id: str
    def __init__(self, after_seq: _Optional[int] = ..., types: _Optional[_Iterable[str]] = ..., work_unit_id: _Optional[str] = ...) -> None: ...

class SubscribeEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_common_pb2.Event]
    def __init__(self, events: _Optional[_Iterable[_Union[_common_pb2.Event, _Mapping]]] = ...) -> None: ...
