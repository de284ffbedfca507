from google.protobuf import struct_pb2 as _struct_pb2
from orca.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_EVENT_KIND_UNSPECIFIED: _ClassVar[JobEventKind]
    JOB_EVENT_KIND_SNAPSHOT: _ClassVar[JobEventKind]
    JOB_EVENT_KIND_TASK_STATE: _ClassVar[JobEventKind]
    JOB_EVENT_KIND_TASK_PROGRESS: _ClassVar[JobEventKind]
    JOB_EVENT_KIND_JOB_CANCELLED: _ClassVar[JobEventKind]

class FleetEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FLEET_EVENT_KIND_UNSPECIFIED: _ClassVar[FleetEventKind]
    FLEET_EVENT_KIND_SNAPSHOT: _ClassVar[FleetEventKind]
    FLEET_EVENT_KIND_WORKER_JOINED: _ClassVar[FleetEventKind]
    FLEET_EVENT_KIND_WORKER_CHANGED: _ClassVar[FleetEventKind]
    FLEET_EVENT_KIND_WORKER_LEFT: _ClassVar[FleetEventKind]
    FLEET_EVENT_KIND_STATS: _ClassVar[FleetEventKind]
JOB_EVENT_KIND_UNSPECIFIED: JobEventKind
JOB_EVENT_KIND_SNAPSHOT: JobEventKind
JOB_EVENT_KIND_TASK_STATE: JobEventKind
JOB_EVENT_KIND_TASK_PROGRESS: JobEventKind
JOB_EVENT_KIND_JOB_CANCELLED: JobEventKind
FLEET_EVENT_KIND_UNSPECIFIED: FleetEventKind
FLEET_EVENT_KIND_SNAPSHOT: FleetEventKind
FLEET_EVENT_KIND_WORKER_JOINED: FleetEventKind
FLEET_EVENT_KIND_WORKER_CHANGED: FleetEventKind
FLEET_EVENT_KIND_WORKER_LEFT: FleetEventKind
FLEET_EVENT_KIND_STATS: FleetEventKind

class CreateJobRequest(_message.Message):
    __slots__ = ("description", "metadata", "request_id", "weight", "max_running", "budget_usd")
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNNING_FIELD_NUMBER: _ClassVar[int]
    BUDGET_USD_FIELD_NUMBER: _ClassVar[int]
    description: str
    metadata: _struct_pb2.Struct
    request_id: str
    weight: int
    max_running: int
    budget_usd: float
    def __init__(self, description: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., request_id: _Optional[str] = ..., weight: _Optional[int] = ..., max_running: _Optional[int] = ..., budget_usd: _Optional[float] = ...) -> None: ...

class UpdateJobRequest(_message.Message):
    __slots__ = ("job_id", "weight", "max_running", "budget_usd", "paused")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNNING_FIELD_NUMBER: _ClassVar[int]
    BUDGET_USD_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    weight: int
    max_running: int
    budget_usd: float
    paused: bool
    def __init__(self, job_id: _Optional[str] = ..., weight: _Optional[int] = ..., max_running: _Optional[int] = ..., budget_usd: _Optional[float] = ..., paused: _Optional[bool] = ...) -> None: ...

class CreateScheduleRequest(_message.Message):
    __slots__ = ("name", "cron", "job", "tasks", "replace")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CRON_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    name: str
    cron: str
    job: CreateJobRequest
    tasks: _containers.RepeatedCompositeFieldContainer[_types_pb2.TaskSpec]
    replace: bool
    def __init__(self, name: _Optional[str] = ..., cron: _Optional[str] = ..., job: _Optional[_Union[CreateJobRequest, _Mapping]] = ..., tasks: _Optional[_Iterable[_Union[_types_pb2.TaskSpec, _Mapping]]] = ..., replace: _Optional[bool] = ...) -> None: ...

class Schedule(_message.Message):
    __slots__ = ("name", "cron", "job", "tasks", "next_run_ms", "last_run_ms", "last_job_id", "created_at_ms", "owner")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CRON_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_RUN_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_RUN_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    name: str
    cron: str
    job: CreateJobRequest
    tasks: _containers.RepeatedCompositeFieldContainer[_types_pb2.TaskSpec]
    next_run_ms: int
    last_run_ms: int
    last_job_id: str
    created_at_ms: int
    owner: str
    def __init__(self, name: _Optional[str] = ..., cron: _Optional[str] = ..., job: _Optional[_Union[CreateJobRequest, _Mapping]] = ..., tasks: _Optional[_Iterable[_Union[_types_pb2.TaskSpec, _Mapping]]] = ..., next_run_ms: _Optional[int] = ..., last_run_ms: _Optional[int] = ..., last_job_id: _Optional[str] = ..., created_at_ms: _Optional[int] = ..., owner: _Optional[str] = ...) -> None: ...

class ListSchedulesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSchedulesResponse(_message.Message):
    __slots__ = ("schedules",)
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    schedules: _containers.RepeatedCompositeFieldContainer[Schedule]
    def __init__(self, schedules: _Optional[_Iterable[_Union[Schedule, _Mapping]]] = ...) -> None: ...

class DeleteScheduleRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteScheduleResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[_types_pb2.Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[_types_pb2.Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DeleteJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class DeleteJobResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AddTasksRequest(_message.Message):
    __slots__ = ("job_id", "tasks", "request_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    tasks: _containers.RepeatedCompositeFieldContainer[_types_pb2.TaskSpec]
    request_id: str
    def __init__(self, job_id: _Optional[str] = ..., tasks: _Optional[_Iterable[_Union[_types_pb2.TaskSpec, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class AddTasksResponse(_message.Message):
    __slots__ = ("task_ids",)
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    task_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, task_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    def __init__(self, task_id: _Optional[int] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("job_id", "states", "page_size", "page_token", "summary_only", "worker_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_ONLY_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    states: _containers.RepeatedScalarFieldContainer[_types_pb2.TaskState]
    page_size: int
    page_token: str
    summary_only: bool
    worker_id: str
    def __init__(self, job_id: _Optional[str] = ..., states: _Optional[_Iterable[_Union[_types_pb2.TaskState, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., summary_only: _Optional[bool] = ..., worker_id: _Optional[str] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks", "next_page_token")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[_types_pb2.Task]
    next_page_token: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[_types_pb2.Task, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelTaskRequest(_message.Message):
    __slots__ = ("task_id", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    reason: str
    def __init__(self, task_id: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class RetryTasksRequest(_message.Message):
    __slots__ = ("job_id", "task_ids")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    task_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, job_id: _Optional[str] = ..., task_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class RetryTasksResponse(_message.Message):
    __slots__ = ("task_ids",)
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    task_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, task_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class SetContextRequest(_message.Message):
    __slots__ = ("job_id", "key", "value")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    key: str
    value: str
    def __init__(self, job_id: _Optional[str] = ..., key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class SetContextResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetContextRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetContextResponse(_message.Message):
    __slots__ = ("values",)
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.ScalarMap[str, str]
    def __init__(self, values: _Optional[_Mapping[str, str]] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id", "after_seq", "follow")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_seq: int
    follow: bool
    def __init__(self, job_id: _Optional[str] = ..., after_seq: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("seq", "job_id", "kind", "task_id", "state", "previous_state", "attempt", "message", "status", "tasks", "snapshot_more", "time_ms", "job_state")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_MORE_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    JOB_STATE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    job_id: str
    kind: JobEventKind
    task_id: int
    state: _types_pb2.TaskState
    previous_state: _types_pb2.TaskState
    attempt: int
    message: str
    status: _types_pb2.JobStatus
    tasks: _containers.RepeatedCompositeFieldContainer[_types_pb2.TaskSummary]
    snapshot_more: bool
    time_ms: int
    job_state: _types_pb2.JobState
    def __init__(self, seq: _Optional[int] = ..., job_id: _Optional[str] = ..., kind: _Optional[_Union[JobEventKind, str]] = ..., task_id: _Optional[int] = ..., state: _Optional[_Union[_types_pb2.TaskState, str]] = ..., previous_state: _Optional[_Union[_types_pb2.TaskState, str]] = ..., attempt: _Optional[int] = ..., message: _Optional[str] = ..., status: _Optional[_Union[_types_pb2.JobStatus, _Mapping]] = ..., tasks: _Optional[_Iterable[_Union[_types_pb2.TaskSummary, _Mapping]]] = ..., snapshot_more: _Optional[bool] = ..., time_ms: _Optional[int] = ..., job_state: _Optional[_Union[_types_pb2.JobState, str]] = ...) -> None: ...

class WorkerInfo(_message.Message):
    __slots__ = ("worker_id", "name", "hostname", "labels", "slots", "running_tasks", "last_seen_ms", "version", "draining", "connected")
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
    RUNNING_TASKS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_MS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    name: str
    hostname: str
    labels: _containers.ScalarMap[str, str]
    slots: int
    running_tasks: _containers.RepeatedScalarFieldContainer[int]
    last_seen_ms: int
    version: str
    draining: bool
    connected: bool
    def __init__(self, worker_id: _Optional[str] = ..., name: _Optional[str] = ..., hostname: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., slots: _Optional[int] = ..., running_tasks: _Optional[_Iterable[int]] = ..., last_seen_ms: _Optional[int] = ..., version: _Optional[str] = ..., draining: _Optional[bool] = ..., connected: _Optional[bool] = ...) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListWorkersResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerInfo]
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerInfo, _Mapping]]] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PriorityDepth(_message.Message):
    __slots__ = ("priority", "pending")
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    priority: int
    pending: int
    def __init__(self, priority: _Optional[int] = ..., pending: _Optional[int] = ...) -> None: ...

class ThroughputBucket(_message.Message):
    __slots__ = ("start_ms", "completed", "failed")
    START_MS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    start_ms: int
    completed: int
    failed: int
    def __init__(self, start_ms: _Optional[int] = ..., completed: _Optional[int] = ..., failed: _Optional[int] = ...) -> None: ...

class Stats(_message.Message):
    __slots__ = ("tasks", "queue", "throughput", "tasks_per_second", "workers_connected", "slots", "slots_free", "jobs", "time_ms", "recent_failures")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_FIELD_NUMBER: _ClassVar[int]
    TASKS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    WORKERS_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FREE_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    RECENT_FAILURES_FIELD_NUMBER: _ClassVar[int]
    tasks: _types_pb2.JobStatus
    queue: _containers.RepeatedCompositeFieldContainer[PriorityDepth]
    throughput: _containers.RepeatedCompositeFieldContainer[ThroughputBucket]
    tasks_per_second: float
    workers_connected: int
    slots: int
    slots_free: int
    jobs: int
    time_ms: int
    recent_failures: _containers.RepeatedCompositeFieldContainer[RecentFailure]
    def __init__(self, tasks: _Optional[_Union[_types_pb2.JobStatus, _Mapping]] = ..., queue: _Optional[_Iterable[_Union[PriorityDepth, _Mapping]]] = ..., throughput: _Optional[_Iterable[_Union[ThroughputBucket, _Mapping]]] = ..., tasks_per_second: _Optional[float] = ..., workers_connected: _Optional[int] = ..., slots: _Optional[int] = ..., slots_free: _Optional[int] = ..., jobs: _Optional[int] = ..., time_ms: _Optional[int] = ..., recent_failures: _Optional[_Iterable[_Union[RecentFailure, _Mapping]]] = ...) -> None: ...

class RecentFailure(_message.Message):
    __slots__ = ("task_id", "job_id", "reason", "worker_id", "time_ms")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    job_id: str
    reason: str
    worker_id: str
    time_ms: int
    def __init__(self, task_id: _Optional[int] = ..., job_id: _Optional[str] = ..., reason: _Optional[str] = ..., worker_id: _Optional[str] = ..., time_ms: _Optional[int] = ...) -> None: ...

class WatchFleetRequest(_message.Message):
    __slots__ = ("stats_interval_ms",)
    STATS_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    stats_interval_ms: int
    def __init__(self, stats_interval_ms: _Optional[int] = ...) -> None: ...

class FleetEvent(_message.Message):
    __slots__ = ("kind", "workers", "stats", "time_ms")
    KIND_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    kind: FleetEventKind
    workers: _containers.RepeatedCompositeFieldContainer[WorkerInfo]
    stats: Stats
    time_ms: int
    def __init__(self, kind: _Optional[_Union[FleetEventKind, str]] = ..., workers: _Optional[_Iterable[_Union[WorkerInfo, _Mapping]]] = ..., stats: _Optional[_Union[Stats, _Mapping]] = ..., time_ms: _Optional[int] = ...) -> None: ...

class DrainWorkerRequest(_message.Message):
    __slots__ = ("worker_id", "resume")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    resume: bool
    def __init__(self, worker_id: _Optional[str] = ..., resume: _Optional[bool] = ...) -> None: ...
