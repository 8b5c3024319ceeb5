from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScoredItem(_message.Message):
    __slots__ = ("item_id", "score")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    item_id: int
    score: float
    def __init__(self, item_id: _Optional[int] = ..., score: _Optional[float] = ...) -> None: ...

class RecommendRequest(_message.Message):
    __slots__ = ("user_id", "history", "k", "exclude_item_ids", "candidate_item_ids", "include_seen")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SEEN_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    history: _containers.RepeatedScalarFieldContainer[int]
    k: int
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[int]
    candidate_item_ids: _containers.RepeatedScalarFieldContainer[int]
    include_seen: bool
    def __init__(self, user_id: _Optional[int] = ..., history: _Optional[_Iterable[int]] = ..., k: _Optional[int] = ..., exclude_item_ids: _Optional[_Iterable[int]] = ..., candidate_item_ids: _Optional[_Iterable[int]] = ..., include_seen: _Optional[bool] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("items", "model_version", "cold_start")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    COLD_START_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    model_version: str
    cold_start: bool
    def __init__(self, items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ..., model_version: _Optional[str] = ..., cold_start: _Optional[bool] = ...) -> None: ...
