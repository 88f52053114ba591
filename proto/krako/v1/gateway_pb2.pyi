from krako.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubmitWorkUnitRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: _common_pb2.WorkUnitSpec
    def __init__(self, spec: _Optional[_Union[_common_pb2.WorkUnitSpec, _Mapping]] = ...) -> None: ...

class SubmitWorkUnitResponse(_message.Message):
    __slots__ = ("work_unit_id", "duplicate", "seq")
    WORK_UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    work_unit_id: str
    duplicate: bool
    seq: int
    def __init__(self, work_unit_id: _Optional[str] = ..., duplicate: _Optional[bool] = ..., seq: _Optional[int] = ...) -> None: ...

class SubmitWorkUnitsRequest(_message.Message):
    __slots__ = ("specs",)
    SPECS_FIELD_NUMBER: _ClassVar[int]
    specs: _containers.RepeatedCompositeFieldContainer[_common_pb2.WorkUnitSpec]
    def __init__(self, specs: _Optional[_Iterable[_Union[_common_pb2.WorkUnitSpec, _Mapping]]] = ...) -> None: ...

class SubmitWorkUnitsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SubmitWorkUnitResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[SubmitWorkUnitResponse, _Mapping]]] = ...) -> None: ...

class GetWorkUnitRequest(_message.Message):
    __slots__ = ("work_unit_id",)
    WORK_UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    work_unit_id: str
    def __init__(self, work_unit_id: _Optional[str] = ...) -> None: ...

class GetWorkUnitResponse(_message.Message):
    __slots__ = ("work_unit",)
    WORK_UNIT_FIELD_NUMBER: _ClassVar[int]
    work_unit: _common_pb2.WorkUnit
    def __init__(self, work_unit: _Optional[_Union[_common_pb2.WorkUnit, _Mapping]] = ...) -> None: ...

class WatchWorkUnitRequest(_message.Message):
    __slots__ = ("work_unit_id",)
    WORK_UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    work_unit_id: str
    def __init__(self, work_unit_id: _Optional[str] = ...) -> None: ...

class WatchWorkUnitResponse(_message.Message):
    __slots__ = ("event", "work_unit")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    WORK_UNIT_FIELD_NUMBER: _ClassVar[int]
    event: _common_pb2.Event
    work_unit: _common_pb2.WorkUnit
    def __init__(self, event: _Optional[_Union[_common_pb2.Event, _Mapping]] = ..., work_unit: _Optional[_Union[_common_pb2.WorkUnit, _Mapping]] = ...) -> None: ...

class CancelWorkUnitRequest(_message.Message):
    __slots__ = ("work_unit_id", "reason")
    WORK_UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    work_unit_id: str
    reason: str
    def __init__(self, work_unit_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelWorkUnitResponse(_message.Message):
    __slots__ = ("work_unit",)
    WORK_UNIT_FIELD_NUMBER: _ClassVar[int]
    work_unit: _common_pb2.WorkUnit
    def __init__(self, work_unit: _Optional[_Union[_common_pb2.WorkUnit, _Mapping]] = ...) -> None: ...
