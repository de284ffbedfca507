from orca.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskRef(_message.Message):
    __slots__ = ("task_id", "attempt")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    attempt: int
    def __init__(self, task_id: _Optional[int] = ..., attempt: _Optional[int] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("worker_id", "name", "hostname", "labels", "slots", "agent_kinds", "running", "version")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    AGENT_KINDS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    name: str
    hostname: str
    labels: _containers.ScalarMap[str, str]
    slots: int
    agent_kinds: _containers.RepeatedScalarFieldContainer[str]
    running: _containers.RepeatedCompositeFieldContainer[TaskRef]
    version: str
    def __init__(self, worker_id: _Optional[str] = ..., name: _Optional[str] = ..., hostname: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., slots: _Optional[int] = ..., agent_kinds: _Optional[_Iterable[str]] = ..., running: _Optional[_Iterable[_Union[TaskRef, _Mapping]]] = ..., version: _Optional[str] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("worker_id", "lease_seconds", "heartbeat_interval_seconds", "stale", "coordinator_version")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_VERSION_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    lease_seconds: int
    heartbeat_interval_seconds: int
    stale: _containers.RepeatedCompositeFieldContainer[TaskRef]
    coordinator_version: str
    def __init__(self, worker_id: _Optional[str] = ..., lease_seconds: _Optional[int] = ..., heartbeat_interval_seconds: _Optional[int] = ..., stale: _Optional[_Iterable[_Union[TaskRef, _Mapping]]] = ..., coordinator_version: _Optional[str] = ...) -> None: ...

class ListenRequest(_message.Message):
    __slots__ = ("worker_id", "context_by_stream")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_BY_STREAM_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    context_by_stream: bool
    def __init__(self, worker_id: _Optional[str] = ..., context_by_stream: _Optional[bool] = ...) -> None: ...

class ContextEntry(_message.Message):
    __slots__ = ("scope", "key", "value")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    scope: str
    key: str
    value: str
    def __init__(self, scope: _Optional[str] = ..., key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("task_id", "job_id", "attempt", "spec", "lease_expires_ms", "context", "previous_error", "git_base")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_ERROR_FIELD_NUMBER: _ClassVar[int]
    GIT_BASE_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    job_id: str
    attempt: int
    spec: _types_pb2.TaskSpec
    lease_expires_ms: int
    context: _containers.RepeatedCompositeFieldContainer[ContextEntry]
    previous_error: str
    git_base: GitBase
    def __init__(self, task_id: _Optional[int] = ..., job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., spec: _Optional[_Union[_types_pb2.TaskSpec, _Mapping]] = ..., lease_expires_ms: _Optional[int] = ..., context: _Optional[_Iterable[_Union[ContextEntry, _Mapping]]] = ..., previous_error: _Optional[str] = ..., git_base: _Optional[_Union[GitBase, _Mapping]] = ...) -> None: ...

class GitBase(_message.Message):
    __slots__ = ("base_commit", "patches", "error")
    BASE_COMMIT_FIELD_NUMBER: _ClassVar[int]
    PATCHES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    base_commit: str
    patches: _containers.RepeatedScalarFieldContainer[bytes]
    error: str
    def __init__(self, base_commit: _Optional[str] = ..., patches: _Optional[_Iterable[bytes]] = ..., error: _Optional[str] = ...) -> None: ...

class Cancellation(_message.Message):
    __slots__ = ("task_id", "attempt", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    attempt: int
    reason: str
    def __init__(self, task_id: _Optional[int] = ..., attempt: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ContextScope(_message.Message):
    __slots__ = ("job_id", "entries")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    entries: _containers.RepeatedCompositeFieldContainer[ContextEntry]
    def __init__(self, job_id: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[ContextEntry, _Mapping]]] = ...) -> None: ...

class ListenResponse(_message.Message):
    __slots__ = ("assignments", "cancellations", "contexts")
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    CANCELLATIONS_FIELD_NUMBER: _ClassVar[int]
    CONTEXTS_FIELD_NUMBER: _ClassVar[int]
    assignments: _containers.RepeatedCompositeFieldContainer[Assignment]
    cancellations: _containers.RepeatedCompositeFieldContainer[Cancellation]
    contexts: _containers.RepeatedCompositeFieldContainer[ContextScope]
    def __init__(self, assignments: _Optional[_Iterable[_Union[Assignment, _Mapping]]] = ..., cancellations: _Optional[_Iterable[_Union[Cancellation, _Mapping]]] = ..., contexts: _Optional[_Iterable[_Union[ContextScope, _Mapping]]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("worker_id", "running")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    running: _containers.RepeatedCompositeFieldContainer[TaskRef]
    def __init__(self, worker_id: _Optional[str] = ..., running: _Optional[_Iterable[_Union[TaskRef, _Mapping]]] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("stale", "lease_expires_ms")
    STALE_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    stale: _containers.RepeatedCompositeFieldContainer[TaskRef]
    lease_expires_ms: int
    def __init__(self, stale: _Optional[_Iterable[_Union[TaskRef, _Mapping]]] = ..., lease_expires_ms: _Optional[int] = ...) -> None: ...

class Started(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Progress(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: str
    def __init__(self, message: _Optional[str] = ...) -> None: ...

class Completed(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: _types_pb2.TaskResult
    def __init__(self, result: _Optional[_Union[_types_pb2.TaskResult, _Mapping]] = ...) -> None: ...

class Failed(_message.Message):
    __slots__ = ("result", "retryable")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    result: _types_pb2.TaskResult
    retryable: bool
    def __init__(self, result: _Optional[_Union[_types_pb2.TaskResult, _Mapping]] = ..., retryable: _Optional[bool] = ...) -> None: ...

class HandedBack(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Report(_message.Message):
    __slots__ = ("task_id", "attempt", "started", "progress", "completed", "failed", "handed_back", "trace_parent")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    HANDED_BACK_FIELD_NUMBER: _ClassVar[int]
    TRACE_PARENT_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    attempt: int
    started: Started
    progress: Progress
    completed: Completed
    failed: Failed
    handed_back: HandedBack
    trace_parent: str
    def __init__(self, task_id: _Optional[int] = ..., attempt: _Optional[int] = ..., started: _Optional[_Union[Started, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., completed: _Optional[_Union[Completed, _Mapping]] = ..., failed: _Optional[_Union[Failed, _Mapping]] = ..., handed_back: _Optional[_Union[HandedBack, _Mapping]] = ..., trace_parent: _Optional[str] = ...) -> None: ...

class ReportRequest(_message.Message):
    __slots__ = ("worker_id", "reports")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    reports: _containers.RepeatedCompositeFieldContainer[Report]
    def __init__(self, worker_id: _Optional[str] = ..., reports: _Optional[_Iterable[_Union[Report, _Mapping]]] = ...) -> None: ...

class ReportAck(_message.Message):
    __slots__ = ("task_id", "attempt", "accepted", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    attempt: int
    accepted: bool
    reason: str
    def __init__(self, task_id: _Optional[int] = ..., attempt: _Optional[int] = ..., accepted: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class ReportResponse(_message.Message):
    __slots__ = ("acks",)
    ACKS_FIELD_NUMBER: _ClassVar[int]
    acks: _containers.RepeatedCompositeFieldContainer[ReportAck]
    def __init__(self, acks: _Optional[_Iterable[_Union[ReportAck, _Mapping]]] = ...) -> None: ...
