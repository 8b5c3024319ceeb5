from streamrec.v1 import recommender_pb2 as _recommender_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GenerateRequest(_message.Message):
    __slots__ = ("user_id", "history", "k", "include_seen")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SEEN_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    history: _containers.RepeatedScalarFieldContainer[int]
    k: int
    include_seen: bool
    def __init__(self, user_id: _Optional[int] = ..., history: _Optional[_Iterable[int]] = ..., k: _Optional[int] = ..., include_seen: _Optional[bool] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("items", "model_version")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_recommender_pb2.ScoredItem]
    model_version: str
    def __init__(self, items: _Optional[_Iterable[_Union[_recommender_pb2.ScoredItem, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...
