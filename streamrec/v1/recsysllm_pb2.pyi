from streamrec.v1 import recommender_pb2 as _recommender_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NextItemsRequest(_message.Message):
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

class NextItemsResponse(_message.Message):
    __slots__ = ("items", "titles", "model_version")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    TITLES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_recommender_pb2.ScoredItem]
    titles: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    def __init__(self, items: _Optional[_Iterable[_Union[_recommender_pb2.ScoredItem, _Mapping]]] = ..., titles: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ...) -> None: ...

class RankCandidatesRequest(_message.Message):
    __slots__ = ("user_id", "history", "candidate_item_ids")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    history: _containers.RepeatedScalarFieldContainer[int]
    candidate_item_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, user_id: _Optional[int] = ..., history: _Optional[_Iterable[int]] = ..., candidate_item_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class RankCandidatesResponse(_message.Message):
    __slots__ = ("items", "model_version")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_recommender_pb2.ScoredItem]
    model_version: str
    def __init__(self, items: _Optional[_Iterable[_Union[_recommender_pb2.ScoredItem, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...

class PredictRatingRequest(_message.Message):
    __slots__ = ("user_id", "history", "item_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    history: _containers.RepeatedScalarFieldContainer[int]
    item_id: int
    def __init__(self, user_id: _Optional[int] = ..., history: _Optional[_Iterable[int]] = ..., item_id: _Optional[int] = ...) -> None: ...

class PredictRatingResponse(_message.Message):
    __slots__ = ("rating", "model_version")
    RATING_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    rating: float
    model_version: str
    def __init__(self, rating: _Optional[float] = ..., model_version: _Optional[str] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("user_id", "history", "item_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    history: _containers.RepeatedScalarFieldContainer[int]
    item_id: int
    def __init__(self, user_id: _Optional[int] = ..., history: _Optional[_Iterable[int]] = ..., item_id: _Optional[int] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("explanation", "model_version")
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    explanation: str
    model_version: str
    def __init__(self, explanation: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...
