"""Python client of Orca, the distributed task orchestrator.

- `Client` (synchronous) and `AsyncClient` (asyncio) cover every call of the
  ``orca.v1.Orchestrator`` gRPC service and return the generated messages of `orca.v1`.
- `Client.watch_job` is a resumable event stream, `Client.wait` waits on it.
- `Client.list_workers`, `get_stats`, `watch_fleet` and `drain_worker` show and steer the
  fleet of workers.
- Scheduling: `Client.create_job`'s ``weight``, ``max_running`` and ``budget_usd``,
  changed later by `update_job` (`pause_job`, `resume_job`); a task's ``run_at`` or
  ``delay`` (`task_spec`); recurring jobs with `create_schedule`, `list_schedules` and
  `delete_schedule`.
- `write_artifacts` puts a task's returned files into a directory, safely.
- Git tasks (`orca.git`): `from_git_checkout` makes a task working on the caller's
  checkout, `apply_patches` (or `Client.apply_patches`) applies what they brought back;
  `GitError` when git fails or the checkout cannot be used.
- Refusals raise `OrcaError` subclasses (`NotFound`, `InvalidArgument`, ...).

The orchestrator guide's API (``ClaudeOrchestrator``, ``quick_delegate``) is the separate
top-level module ``orchestrator`` of the same distribution.

    import orca
    with orca.Client() as c:                       # ORCA_COORDINATOR or http://127.0.0.1:50051
        job = c.create_job("Generate utility functions")
        c.add_tasks(job.job_id, ["Create factorial function", "Create fibonacci function"])
        status = c.wait(job.job_id)
        for t in c.list_tasks(job.job_id, states=["completed"]):
            print(t.task_id, t.result.output)
"""

from orca._config import DEFAULT_COORDINATOR, MAX_MESSAGE_BYTES, Endpoint, Settings, resolve
from orca._specs import (
    FINAL_STATES,
    JOB_STATES,
    TASK_STATES,
    from_struct,
    is_final,
    job_state_name,
    state_name,
    task_spec,
    to_struct,
    to_timestamp,
)
from orca.aio import AsyncClient
from orca.artifacts import ArtifactSkipped, write_artifacts
from orca.client import Client
from orca.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    ConfigError,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    OrcaError,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
    GitError,
    WaitTimeout,
)
from orca.git import Applied, GitCheckout, apply_patches, from_git_checkout, git_result
from orca.v1 import orchestrator_pb2, types_pb2

__version__ = "0.2.0"

# The generated messages most callers touch, under short names.
Job = types_pb2.Job
JobStatus = types_pb2.JobStatus
Task = types_pb2.Task
TaskSpec = types_pb2.TaskSpec
TaskResult = types_pb2.TaskResult
Artifact = types_pb2.Artifact
ContextFile = types_pb2.ContextFile
RetryPolicy = types_pb2.RetryPolicy
VerificationHook = types_pb2.VerificationHook
AgentOptions = types_pb2.AgentOptions
GitSource = types_pb2.GitSource
GitResult = types_pb2.GitResult
JobEvent = orchestrator_pb2.JobEvent
TaskState = types_pb2.TaskState
JobState = types_pb2.JobState
JobEventKind = orchestrator_pb2.JobEventKind
WorkerInfo = orchestrator_pb2.WorkerInfo
Stats = orchestrator_pb2.Stats
FleetEvent = orchestrator_pb2.FleetEvent
FleetEventKind = orchestrator_pb2.FleetEventKind
Schedule = orchestrator_pb2.Schedule

__all__ = [
    "Client",
    "AsyncClient",
    "Settings",
    "Endpoint",
    "resolve",
    "DEFAULT_COORDINATOR",
    "MAX_MESSAGE_BYTES",
    "task_spec",
    "write_artifacts",
    "ArtifactSkipped",
    "GitCheckout",
    "Applied",
    "apply_patches",
    "from_git_checkout",
    "git_result",
    "state_name",
    "job_state_name",
    "is_final",
    "TASK_STATES",
    "JOB_STATES",
    "FINAL_STATES",
    "to_struct",
    "from_struct",
    "to_timestamp",
    "OrcaError",
    "Cancelled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
    "ConfigError",
    "WaitTimeout",
    "GitError",
    "Job",
    "JobStatus",
    "Task",
    "TaskSpec",
    "TaskResult",
    "Artifact",
    "ContextFile",
    "RetryPolicy",
    "VerificationHook",
    "AgentOptions",
    "GitSource",
    "GitResult",
    "JobEvent",
    "TaskState",
    "JobState",
    "JobEventKind",
    "WorkerInfo",
    "Stats",
    "FleetEvent",
    "FleetEventKind",
    "Schedule",
]
