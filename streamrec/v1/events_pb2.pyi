from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_VIEW: _ClassVar[EventType]
    EVENT_TYPE_CLICK: _ClassVar[EventType]
    EVENT_TYPE_ADD_TO_CART: _ClassVar[EventType]
    EVENT_TYPE_PURCHASE: _ClassVar[EventType]
    EVENT_TYPE_RATING: _ClassVar[EventType]
    EVENT_TYPE_LIKE: _ClassVar[EventType]
    EVENT_TYPE_DISLIKE: _ClassVar[EventType]
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_VIEW: EventType
EVENT_TYPE_CLICK: EventType
EVENT_TYPE_ADD_TO_CART: EventType
EVENT_TYPE_PURCHASE: EventType
EVENT_TYPE_RATING: EventType
EVENT_TYPE_LIKE: EventType
EVENT_TYPE_DISLIKE: EventType

class InteractionEvent(_message.Message):
    __slots__ = ("event_id", "user_id", "item_id", "event_type", "value", "timestamp_ms", "context")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: int
    item_id: int
    event_type: EventType
    value: float
    timestamp_ms: int
    context: _containers.ScalarMap[str, str]
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[int] = ..., item_id: _Optional[int] = ..., event_type: _Optional[_Union[EventType, str]] = ..., value: _Optional[float] = ..., timestamp_ms: _Optional[int] = ..., context: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ItemEvent(_message.Message):
    __slots__ = ("event_id", "item_id", "title", "year", "categories", "description", "attributes", "timestamp_ms", "deleted")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    YEAR_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    item_id: int
    title: str
    year: int
    categories: _containers.RepeatedScalarFieldContainer[str]
    description: str
    attributes: _containers.ScalarMap[str, str]
    timestamp_ms: int
    deleted: bool
    def __init__(self, event_id: _Optional[str] = ..., item_id: _Optional[int] = ..., title: _Optional[str] = ..., year: _Optional[int] = ..., categories: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., timestamp_ms: _Optional[int] = ..., deleted: _Optional[bool] = ...) -> None: ...

class TrainingExample(_message.Message):
    __slots__ = ("event_id", "user_id", "history", "history_timestamps_ms", "target_item_id", "timestamp_ms")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    HISTORY_TIMESTAMPS_MS_FIELD_NUMBER: _ClassVar[int]
    TARGET_ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: int
    history: _containers.RepeatedScalarFieldContainer[int]
    history_timestamps_ms: _containers.RepeatedScalarFieldContainer[int]
    target_item_id: int
    timestamp_ms: int
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[int] = ..., history: _Optional[_Iterable[int]] = ..., history_timestamps_ms: _Optional[_Iterable[int]] = ..., target_item_id: _Optional[int] = ..., timestamp_ms: _Optional[int] = ...) -> None: ...

class TrainingExampleBatch(_message.Message):
    __slots__ = ("examples",)
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    examples: _containers.RepeatedCompositeFieldContainer[TrainingExample]
    def __init__(self, examples: _Optional[_Iterable[_Union[TrainingExample, _Mapping]]] = ...) -> None: ...

class KnowledgeRequest(_message.Message):
    __slots__ = ("item_id", "timestamp_ms")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    item_id: int
    timestamp_ms: int
    def __init__(self, item_id: _Optional[int] = ..., timestamp_ms: _Optional[int] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("payload", "reason", "source_topic", "source_partition", "source_offset", "timestamp_ms", "original_size", "original_sha256", "truncated")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TOPIC_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PARTITION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_SHA256_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    reason: str
    source_topic: str
    source_partition: int
    source_offset: int
    timestamp_ms: int
    original_size: int
    original_sha256: str
    truncated: bool
    def __init__(self, payload: _Optional[bytes] = ..., reason: _Optional[str] = ..., source_topic: _Optional[str] = ..., source_partition: _Optional[int] = ..., source_offset: _Optional[int] = ..., timestamp_ms: _Optional[int] = ..., original_size: _Optional[int] = ..., original_sha256: _Optional[str] = ..., truncated: _Optional[bool] = ...) -> None: ...

class ModelUpdate(_message.Message):
    __slots__ = ("model", "version", "path", "timestamp_ms")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    path: str
    timestamp_ms: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., path: _Optional[str] = ..., timestamp_ms: _Optional[int] = ...) -> None: ...

class HistoryUpdate(_message.Message):
    __slots__ = ("user_ids", "timestamp_ms")
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    user_ids: _containers.RepeatedScalarFieldContainer[int]
    timestamp_ms: int
    def __init__(self, user_ids: _Optional[_Iterable[int]] = ..., timestamp_ms: _Optional[int] = ...) -> None: ...
