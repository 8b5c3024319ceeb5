from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATUS_UNSPECIFIED: _ClassVar[JobStatus]
    JOB_STATUS_RUNNING: _ClassVar[JobStatus]
    JOB_STATUS_SUCCEEDED: _ClassVar[JobStatus]
    JOB_STATUS_FAILED: _ClassVar[JobStatus]
    JOB_STATUS_LOST: _ClassVar[JobStatus]
    JOB_STATUS_STOPPED: _ClassVar[JobStatus]
JOB_STATUS_UNSPECIFIED: JobStatus
JOB_STATUS_RUNNING: JobStatus
JOB_STATUS_SUCCEEDED: JobStatus
JOB_STATUS_FAILED: JobStatus
JOB_STATUS_LOST: JobStatus
JOB_STATUS_STOPPED: JobStatus

class JobRun(_message.Message):
    __slots__ = ("run_id", "kind", "status", "started_ms", "finished_ms", "items_ok", "items_failed", "items_skipped", "items_per_s", "llm_version", "error")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STARTED_MS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_MS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_OK_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FAILED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_PER_S_FIELD_NUMBER: _ClassVar[int]
    LLM_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    kind: str
    status: JobStatus
    started_ms: int
    finished_ms: int
    items_ok: int
    items_failed: int
    items_skipped: int
    items_per_s: float
    llm_version: str
    error: str
    def __init__(self, run_id: _Optional[str] = ..., kind: _Optional[str] = ..., status: _Optional[_Union[JobStatus, str]] = ..., started_ms: _Optional[int] = ..., finished_ms: _Optional[int] = ..., items_ok: _Optional[int] = ..., items_failed: _Optional[int] = ..., items_skipped: _Optional[int] = ..., items_per_s: _Optional[float] = ..., llm_version: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("kind", "limit")
    KIND_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    kind: str
    limit: int
    def __init__(self, kind: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[JobRun]
    def __init__(self, runs: _Optional[_Iterable[_Union[JobRun, _Mapping]]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetCoverageRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class KnowledgeFailure(_message.Message):
    __slots__ = ("item_id", "reason", "run_id", "failed_ms")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    FAILED_MS_FIELD_NUMBER: _ClassVar[int]
    item_id: int
    reason: str
    run_id: str
    failed_ms: int
    def __init__(self, item_id: _Optional[int] = ..., reason: _Optional[str] = ..., run_id: _Optional[str] = ..., failed_ms: _Optional[int] = ...) -> None: ...

class KnowledgeCoverage(_message.Message):
    __slots__ = ("llm_version", "prompt_version", "catalog_items", "covered_items", "pending_requests", "failed_items", "oldest_missing_age_s", "ratio", "failures")
    LLM_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CATALOG_ITEMS_FIELD_NUMBER: _ClassVar[int]
    COVERED_ITEMS_FIELD_NUMBER: _ClassVar[int]
    PENDING_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    FAILED_ITEMS_FIELD_NUMBER: _ClassVar[int]
    OLDEST_MISSING_AGE_S_FIELD_NUMBER: _ClassVar[int]
    RATIO_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    llm_version: str
    prompt_version: str
    catalog_items: int
    covered_items: int
    pending_requests: int
    failed_items: int
    oldest_missing_age_s: float
    ratio: float
    failures: _containers.RepeatedCompositeFieldContainer[KnowledgeFailure]
    def __init__(self, llm_version: _Optional[str] = ..., prompt_version: _Optional[str] = ..., catalog_items: _Optional[int] = ..., covered_items: _Optional[int] = ..., pending_requests: _Optional[int] = ..., failed_items: _Optional[int] = ..., oldest_missing_age_s: _Optional[float] = ..., ratio: _Optional[float] = ..., failures: _Optional[_Iterable[_Union[KnowledgeFailure, _Mapping]]] = ...) -> None: ...
