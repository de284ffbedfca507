import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_STATE_WAITING: _ClassVar[TaskState]
    TASK_STATE_PENDING: _ClassVar[TaskState]
    TASK_STATE_IN_PROGRESS: _ClassVar[TaskState]
    TASK_STATE_COMPLETED: _ClassVar[TaskState]
    TASK_STATE_FAILED: _ClassVar[TaskState]
    TASK_STATE_CANCELLED: _ClassVar[TaskState]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_ACTIVE: _ClassVar[JobState]
    JOB_STATE_COMPLETED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
TASK_STATE_UNSPECIFIED: TaskState
TASK_STATE_WAITING: TaskState
TASK_STATE_PENDING: TaskState
TASK_STATE_IN_PROGRESS: TaskState
TASK_STATE_COMPLETED: TaskState
TASK_STATE_FAILED: TaskState
TASK_STATE_CANCELLED: TaskState
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_ACTIVE: JobState
JOB_STATE_COMPLETED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState

class RetryPolicy(_message.Message):
    __slots__ = ("initial_backoff_ms", "multiplier", "max_backoff_ms")
    INITIAL_BACKOFF_MS_FIELD_NUMBER: _ClassVar[int]
    MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    MAX_BACKOFF_MS_FIELD_NUMBER: _ClassVar[int]
    initial_backoff_ms: int
    multiplier: float
    max_backoff_ms: int
    def __init__(self, initial_backoff_ms: _Optional[int] = ..., multiplier: _Optional[float] = ..., max_backoff_ms: _Optional[int] = ...) -> None: ...

class ContextFile(_message.Message):
    __slots__ = ("path", "contents")
    PATH_FIELD_NUMBER: _ClassVar[int]
    CONTENTS_FIELD_NUMBER: _ClassVar[int]
    path: str
    contents: bytes
    def __init__(self, path: _Optional[str] = ..., contents: _Optional[bytes] = ...) -> None: ...

class VerificationHook(_message.Message):
    __slots__ = ("command", "description", "timeout_seconds", "fail_on_error")
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FAIL_ON_ERROR_FIELD_NUMBER: _ClassVar[int]
    command: str
    description: str
    timeout_seconds: int
    fail_on_error: bool
    def __init__(self, command: _Optional[str] = ..., description: _Optional[str] = ..., timeout_seconds: _Optional[int] = ..., fail_on_error: _Optional[bool] = ...) -> None: ...

class AgentOptions(_message.Message):
    __slots__ = ("model", "max_turns", "allowed_tools", "permission_mode", "max_budget_usd")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_TURNS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_TOOLS_FIELD_NUMBER: _ClassVar[int]
    PERMISSION_MODE_FIELD_NUMBER: _ClassVar[int]
    MAX_BUDGET_USD_FIELD_NUMBER: _ClassVar[int]
    model: str
    max_turns: int
    allowed_tools: _containers.RepeatedScalarFieldContainer[str]
    permission_mode: str
    max_budget_usd: float
    def __init__(self, model: _Optional[str] = ..., max_turns: _Optional[int] = ..., allowed_tools: _Optional[_Iterable[str]] = ..., permission_mode: _Optional[str] = ..., max_budget_usd: _Optional[float] = ...) -> None: ...

class TaskSpec(_message.Message):
    __slots__ = ("prompt", "priority", "parent_task_id", "depends_on", "context_files", "expected_outputs", "working_dir", "metadata", "max_retries", "retry_policy", "timeout_seconds", "required_labels", "verification", "auto_verify", "agent", "name", "trace_parent", "git", "run_at")
    class RequiredLabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PARENT_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FILES_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    WORKING_DIR_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    RETRY_POLICY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_LABELS_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    AUTO_VERIFY_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TRACE_PARENT_FIELD_NUMBER: _ClassVar[int]
    GIT_FIELD_NUMBER: _ClassVar[int]
    RUN_AT_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    priority: int
    parent_task_id: int
    depends_on: _containers.RepeatedScalarFieldContainer[int]
    context_files: _containers.RepeatedCompositeFieldContainer[ContextFile]
    expected_outputs: _containers.RepeatedScalarFieldContainer[str]
    working_dir: str
    metadata: _struct_pb2.Struct
    max_retries: int
    retry_policy: RetryPolicy
    timeout_seconds: int
    required_labels: _containers.ScalarMap[str, str]
    verification: _containers.RepeatedCompositeFieldContainer[VerificationHook]
    auto_verify: bool
    agent: AgentOptions
    name: str
    trace_parent: str
    git: GitSource
    run_at: _timestamp_pb2.Timestamp
    def __init__(self, prompt: _Optional[str] = ..., priority: _Optional[int] = ..., parent_task_id: _Optional[int] = ..., depends_on: _Optional[_Iterable[int]] = ..., context_files: _Optional[_Iterable[_Union[ContextFile, _Mapping]]] = ..., expected_outputs: _Optional[_Iterable[str]] = ..., working_dir: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., max_retries: _Optional[int] = ..., retry_policy: _Optional[_Union[RetryPolicy, _Mapping]] = ..., timeout_seconds: _Optional[int] = ..., required_labels: _Optional[_Mapping[str, str]] = ..., verification: _Optional[_Iterable[_Union[VerificationHook, _Mapping]]] = ..., auto_verify: _Optional[bool] = ..., agent: _Optional[_Union[AgentOptions, _Mapping]] = ..., name: _Optional[str] = ..., trace_parent: _Optional[str] = ..., git: _Optional[_Union[GitSource, _Mapping]] = ..., run_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GitSource(_message.Message):
    __slots__ = ("repo", "base", "branch", "push", "author", "message", "base_patch", "builds_on")
    REPO_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    BRANCH_FIELD_NUMBER: _ClassVar[int]
    PUSH_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    BASE_PATCH_FIELD_NUMBER: _ClassVar[int]
    BUILDS_ON_FIELD_NUMBER: _ClassVar[int]
    repo: str
    base: str
    branch: str
    push: bool
    author: str
    message: str
    base_patch: bytes
    builds_on: int
    def __init__(self, repo: _Optional[str] = ..., base: _Optional[str] = ..., branch: _Optional[str] = ..., push: _Optional[bool] = ..., author: _Optional[str] = ..., message: _Optional[str] = ..., base_patch: _Optional[bytes] = ..., builds_on: _Optional[int] = ...) -> None: ...

class GitResult(_message.Message):
    __slots__ = ("base_commit", "commit", "branch", "pushed", "patch", "files_changed", "insertions", "deletions", "empty")
    BASE_COMMIT_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    BRANCH_FIELD_NUMBER: _ClassVar[int]
    PUSHED_FIELD_NUMBER: _ClassVar[int]
    PATCH_FIELD_NUMBER: _ClassVar[int]
    FILES_CHANGED_FIELD_NUMBER: _ClassVar[int]
    INSERTIONS_FIELD_NUMBER: _ClassVar[int]
    DELETIONS_FIELD_NUMBER: _ClassVar[int]
    EMPTY_FIELD_NUMBER: _ClassVar[int]
    base_commit: str
    commit: str
    branch: str
    pushed: bool
    patch: bytes
    files_changed: int
    insertions: int
    deletions: int
    empty: bool
    def __init__(self, base_commit: _Optional[str] = ..., commit: _Optional[str] = ..., branch: _Optional[str] = ..., pushed: _Optional[bool] = ..., patch: _Optional[bytes] = ..., files_changed: _Optional[int] = ..., insertions: _Optional[int] = ..., deletions: _Optional[int] = ..., empty: _Optional[bool] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_READ_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_CREATION_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cache_read_input_tokens: _Optional[int] = ..., cache_creation_input_tokens: _Optional[int] = ...) -> None: ...

class Artifact(_message.Message):
    __slots__ = ("path", "contents")
    PATH_FIELD_NUMBER: _ClassVar[int]
    CONTENTS_FIELD_NUMBER: _ClassVar[int]
    path: str
    contents: bytes
    def __init__(self, path: _Optional[str] = ..., contents: _Optional[bytes] = ...) -> None: ...

class VerificationResult(_message.Message):
    __slots__ = ("command", "description", "passed", "exit_code", "output", "duration_ms")
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    command: str
    description: str
    passed: bool
    exit_code: int
    output: str
    duration_ms: int
    def __init__(self, command: _Optional[str] = ..., description: _Optional[str] = ..., passed: _Optional[bool] = ..., exit_code: _Optional[int] = ..., output: _Optional[str] = ..., duration_ms: _Optional[int] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("output", "error", "exit_code", "duration_ms", "cost_usd", "usage", "session_id", "num_turns", "artifacts", "verification", "in_place", "git")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_TURNS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    IN_PLACE_FIELD_NUMBER: _ClassVar[int]
    GIT_FIELD_NUMBER: _ClassVar[int]
    output: str
    error: str
    exit_code: int
    duration_ms: int
    cost_usd: float
    usage: Usage
    session_id: str
    num_turns: int
    artifacts: _containers.RepeatedCompositeFieldContainer[Artifact]
    verification: _containers.RepeatedCompositeFieldContainer[VerificationResult]
    in_place: bool
    git: GitResult
    def __init__(self, output: _Optional[str] = ..., error: _Optional[str] = ..., exit_code: _Optional[int] = ..., duration_ms: _Optional[int] = ..., cost_usd: _Optional[float] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., session_id: _Optional[str] = ..., num_turns: _Optional[int] = ..., artifacts: _Optional[_Iterable[_Union[Artifact, _Mapping]]] = ..., verification: _Optional[_Iterable[_Union[VerificationResult, _Mapping]]] = ..., in_place: _Optional[bool] = ..., git: _Optional[_Union[GitResult, _Mapping]] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "job_id", "state", "spec", "result", "attempts", "retries_used", "reason", "worker_id", "created_at_ms", "updated_at_ms", "not_before_ms", "history")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    RETRIES_USED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_MS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    job_id: str
    state: TaskState
    spec: TaskSpec
    result: TaskResult
    attempts: int
    retries_used: int
    reason: str
    worker_id: str
    created_at_ms: int
    updated_at_ms: int
    not_before_ms: int
    history: _containers.RepeatedCompositeFieldContainer[AttemptInfo]
    def __init__(self, task_id: _Optional[int] = ..., job_id: _Optional[str] = ..., state: _Optional[_Union[TaskState, str]] = ..., spec: _Optional[_Union[TaskSpec, _Mapping]] = ..., result: _Optional[_Union[TaskResult, _Mapping]] = ..., attempts: _Optional[int] = ..., retries_used: _Optional[int] = ..., reason: _Optional[str] = ..., worker_id: _Optional[str] = ..., created_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ..., not_before_ms: _Optional[int] = ..., history: _Optional[_Iterable[_Union[AttemptInfo, _Mapping]]] = ...) -> None: ...

class AttemptInfo(_message.Message):
    __slots__ = ("attempt", "worker_id", "started_ms", "ended_ms", "outcome", "reason", "exit_code", "cost_usd", "duration_ms", "output_tail")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_MS_FIELD_NUMBER: _ClassVar[int]
    ENDED_MS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TAIL_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    worker_id: str
    started_ms: int
    ended_ms: int
    outcome: str
    reason: str
    exit_code: int
    cost_usd: float
    duration_ms: int
    output_tail: str
    def __init__(self, attempt: _Optional[int] = ..., worker_id: _Optional[str] = ..., started_ms: _Optional[int] = ..., ended_ms: _Optional[int] = ..., outcome: _Optional[str] = ..., reason: _Optional[str] = ..., exit_code: _Optional[int] = ..., cost_usd: _Optional[float] = ..., duration_ms: _Optional[int] = ..., output_tail: _Optional[str] = ...) -> None: ...

class TaskSummary(_message.Message):
    __slots__ = ("task_id", "state", "attempts", "priority", "name", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    state: TaskState
    attempts: int
    priority: int
    name: str
    reason: str
    def __init__(self, task_id: _Optional[int] = ..., state: _Optional[_Union[TaskState, str]] = ..., attempts: _Optional[int] = ..., priority: _Optional[int] = ..., name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class JobStatus(_message.Message):
    __slots__ = ("total_tasks", "waiting", "pending", "in_progress", "completed", "failed", "cancelled", "progress_pct", "cost_usd", "blocked_reason", "input_tokens", "output_tokens")
    TOTAL_TASKS_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    IN_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_PCT_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_REASON_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    total_tasks: int
    waiting: int
    pending: int
    in_progress: int
    completed: int
    failed: int
    cancelled: int
    progress_pct: float
    cost_usd: float
    blocked_reason: str
    input_tokens: int
    output_tokens: int
    def __init__(self, total_tasks: _Optional[int] = ..., waiting: _Optional[int] = ..., pending: _Optional[int] = ..., in_progress: _Optional[int] = ..., completed: _Optional[int] = ..., failed: _Optional[int] = ..., cancelled: _Optional[int] = ..., progress_pct: _Optional[float] = ..., cost_usd: _Optional[float] = ..., blocked_reason: _Optional[str] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "description", "state", "status", "metadata", "created_at_ms", "updated_at_ms", "owner", "weight", "max_running", "budget_usd", "paused")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNNING_FIELD_NUMBER: _ClassVar[int]
    BUDGET_USD_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    description: str
    state: JobState
    status: JobStatus
    metadata: _struct_pb2.Struct
    created_at_ms: int
    updated_at_ms: int
    owner: str
    weight: int
    max_running: int
    budget_usd: float
    paused: bool
    def __init__(self, job_id: _Optional[str] = ..., description: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., status: _Optional[_Union[JobStatus, _Mapping]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., created_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ..., owner: _Optional[str] = ..., weight: _Optional[int] = ..., max_running: _Optional[int] = ..., budget_usd: _Optional[float] = ..., paused: _Optional[bool] = ...) -> None: ...
