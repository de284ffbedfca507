"""`Client`: the synchronous typed client of the ``orca.v1.Orchestrator`` service.

Every RPC has one method; each returns the generated message (``orca.v1.types_pb2.Job``,
``Task``, ...; typed by the checked-in .pyi stubs) or a plain value where the message would
only wrap one (ids, a context dict). A refused call raises an `orca.OrcaError` subclass.
`Client.watch_job` is the resumable event stream and `Client.wait` waits on it (never by
polling).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Union, cast

import grpc

from orca import _config
from orca._specs import TaskLike, task_specs, task_state, to_struct
from orca._watch import WatchState
from orca.artifacts import write_artifacts
from orca.errors import OrcaError, WaitTimeout, error_from_rpc
from orca.v1 import orchestrator_pb2, orchestrator_pb2_grpc, types_pb2

__all__ = ["Client", "PAGE_SIZE"]

#: Page size used when a list call walks every page.
PAGE_SIZE = 1000

ProgressCallback = Callable[[types_pb2.JobStatus], None]
StateLike = Union[int, str]


def list_tasks_request(
    job_id: str, states: Iterable[StateLike], page_size: int, page_token: str, summary_only: bool
) -> orchestrator_pb2.ListTasksRequest:
    if isinstance(states, (str, int)):
        states = [states]
    # Enum values are ints at run time; the stubs type them as TaskState.
    wanted = cast(List[Any], [task_state(s, f"states[{i}]") for i, s in enumerate(states)])
    return orchestrator_pb2.ListTasksRequest(
        job_id=job_id,
        states=wanted,
        page_size=page_size,
        page_token=page_token,
        summary_only=summary_only,
    )


def create_job_request(
    description: str, metadata: Optional[Mapping[str, object]], request_id: str
) -> orchestrator_pb2.CreateJobRequest:
    if not isinstance(description, str):
        raise TypeError(f"description: expected a string, got {type(description).__name__}")
    req = orchestrator_pb2.CreateJobRequest(description=description, request_id=request_id)
    m = to_struct(metadata, "metadata")
    if m is not None:
        req.metadata.CopyFrom(m)
    return req


def remaining(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


class Client:
    """A connection to a coordinator.

    ``coordinator`` is a URL, ``http://host:port`` (plaintext) or ``https://host:port`` (TLS);
    default ``ORCA_COORDINATOR``, else ``http://127.0.0.1:50051``. A comma-separated list
    is accepted for the standby coordinators to come: for now only its first URL is used.
    TLS is verified against ``tls_ca`` (``ORCA_TLS_CA``, a PEM file) or the system's roots,
    and presents ``tls_cert`` + ``tls_key`` (``ORCA_TLS_CERT``, ``ORCA_TLS_KEY``) for mutual
    TLS. The bearer token comes from ``token_file`` or ``token``, else ``ORCA_TOKEN_FILE``
    (a file holding the token; it wins) or ``ORCA_TOKEN``, and is sent as
    ``authorization: Bearer <token>`` with every call. Arguments override variables.
    Bad settings raise `orca.ConfigError` (a ValueError) here; nothing connects until the
    first call. Messages up to 64 MiB go either way.

    Use it as a context manager, or call `close`.
    """

    def __init__(
        self,
        coordinator: Optional[str] = None,
        *,
        token: Optional[str] = None,
        token_file: Optional[_config.PathLike] = None,
        tls_ca: Optional[_config.PathLike] = None,
        tls_cert: Optional[_config.PathLike] = None,
        tls_key: Optional[_config.PathLike] = None,
    ) -> None:
        self.settings = _config.resolve(
            coordinator, token=token, token_file=token_file, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key
        )
        options = self.settings.channel_options()
        if self.settings.tls:
            self._channel = grpc.secure_channel(self.settings.target, self.settings.credentials(), options=options)
        else:
            self._channel = grpc.insecure_channel(self.settings.target, options=options)
        self._stub = orchestrator_pb2_grpc.OrchestratorStub(self._channel)
        self._metadata = self.settings.metadata()

    @property
    def coordinator(self) -> str:
        """The coordinator URL in use."""
        return self.settings.url

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, request: object, timeout: Optional[float] = None):  # type: ignore[no-untyped-def]
        try:
            return getattr(self._stub, method)(request, metadata=self._metadata, timeout=timeout)
        except grpc.RpcError as e:
            raise error_from_rpc(e) from None

    # Jobs

    def create_job(
        self, description: str = "", metadata: Optional[Mapping[str, object]] = None, *, request_id: str = ""
    ) -> types_pb2.Job:
        """Creates a job. ``metadata`` is a JSON-like dict; ``request_id`` an optional
        idempotency key (the same key returns the first call's job)."""
        return self._call("CreateJob", create_job_request(description, metadata, request_id))

    def get_job(self, job_id: str) -> types_pb2.Job:
        """The job with its state and counts (``job.status``)."""
        return self._call("GetJob", orchestrator_pb2.GetJobRequest(job_id=job_id))

    def list_jobs_page(self, page_size: int = 0, page_token: str = "") -> orchestrator_pb2.ListJobsResponse:
        """One page of jobs (``page_size`` 0: the coordinator's default, 100);
        ``next_page_token`` is empty on the last page."""
        return self._call("ListJobs", orchestrator_pb2.ListJobsRequest(page_size=page_size, page_token=page_token))

    def list_jobs(self, page_size: int = PAGE_SIZE) -> Iterator[types_pb2.Job]:
        """Every job the token may see, oldest first, fetching pages as it goes."""
        token = ""
        while True:
            page = self.list_jobs_page(page_size, token)
            yield from page.jobs
            if not page.next_page_token:
                return
            token = page.next_page_token

    def cancel_job(self, job_id: str, reason: str = "") -> types_pb2.Job:
        """Cancels every task of the job that is not final; the job takes no new task."""
        return self._call("CancelJob", orchestrator_pb2.CancelJobRequest(job_id=job_id, reason=reason))

    def delete_job(self, job_id: str) -> None:
        """Removes a finished job with its tasks, results and context
        (`orca.FailedPrecondition` while a task is not final)."""
        self._call("DeleteJob", orchestrator_pb2.DeleteJobRequest(job_id=job_id))

    # Tasks

    def add_tasks(self, job_id: str, tasks: Iterable[TaskLike], *, request_id: str = "") -> List[int]:
        """Adds a batch of tasks, all or none; returns their ids in order. Each task is a
        `TaskSpec`, a dict of `orca.task_spec`'s arguments, or a prompt string. Inside the
        batch, ``depends_on``/``parent_task_id`` of ``-N`` names the batch's N-th task."""
        req = orchestrator_pb2.AddTasksRequest(job_id=job_id, tasks=task_specs(tasks), request_id=request_id)
        return list(self._call("AddTasks", req).task_ids)

    def add_task(self, job_id: str, task: TaskLike) -> int:
        """Adds one task; returns its id."""
        return self.add_tasks(job_id, [task])[0]

    def get_task(self, task_id: int) -> types_pb2.Task:
        """One task with its spec and result."""
        return self._call("GetTask", orchestrator_pb2.GetTaskRequest(task_id=task_id))

    def list_tasks_page(
        self,
        job_id: str,
        states: Iterable[StateLike] = (),
        page_size: int = 0,
        page_token: str = "",
        summary_only: bool = False,
    ) -> orchestrator_pb2.ListTasksResponse:
        """One page of the job's tasks, in the given states (all when empty; short names such
        as ``"failed"`` or enum values); ``summary_only`` leaves out spec and result."""
        return self._call("ListTasks", list_tasks_request(job_id, states, page_size, page_token, summary_only))

    def list_tasks(
        self,
        job_id: str,
        states: Iterable[StateLike] = (),
        summary_only: bool = False,
        page_size: int = PAGE_SIZE,
    ) -> Iterator[types_pb2.Task]:
        """Every task of the job in the given states, in id order, fetching pages as it goes."""
        states = list([states] if isinstance(states, (str, int)) else states)
        token = ""
        while True:
            page = self.list_tasks_page(job_id, states, page_size, token, summary_only)
            yield from page.tasks
            if not page.next_page_token:
                return
            token = page.next_page_token

    def cancel_task(self, task_id: int, reason: str = "") -> types_pb2.Task:
        """Cancels a task and the tasks that depend on it."""
        return self._call("CancelTask", orchestrator_pb2.CancelTaskRequest(task_id=task_id, reason=reason))

    def retry_tasks(self, job_id: str = "", task_ids: Sequence[int] = ()) -> List[int]:
        """Brings back the given failed or cancelled tasks, or with ``task_ids`` empty every
        failed task of ``job_id``, with the dependents cancelled with them; returns their ids."""
        req = orchestrator_pb2.RetryTasksRequest(job_id=job_id, task_ids=list(task_ids))
        return list(self._call("RetryTasks", req).task_ids)

    # Shared context

    def set_context(self, key: str, value: str, job_id: str = "") -> None:
        """Sets a shared-context key of the job (``job_id`` empty: the global context); an
        empty value deletes the key. Workers put the context into every prompt."""
        self._call("SetContext", orchestrator_pb2.SetContextRequest(job_id=job_id, key=key, value=value))

    def get_context(self, job_id: str = "") -> Dict[str, str]:
        """The shared context of the job (``job_id`` empty: the global one)."""
        return dict(self._call("GetContext", orchestrator_pb2.GetContextRequest(job_id=job_id)).values)

    # Watching and waiting

    def watch_job(
        self, job_id: str, after_seq: int = 0, follow: bool = False, max_reconnects: int = 0
    ) -> Iterator[orchestrator_pb2.JobEvent]:
        """The job's events: a snapshot (its tasks may span several messages, all but the last
        with ``snapshot_more``), then every state change and progress chunk, each with its
        per-job ``seq``. After a dropped connection or UNAVAILABLE (a coordinator restart) it
        reconnects with jittered backoff (100 ms doubling to 5 s) and resumes after the last
        ``seq`` delivered, so nothing is missed or repeated (a coordinator that no longer has
        the events sends a fresh snapshot instead). ``max_reconnects`` > 0 gives up after that
        many reconnects in a row without an event. Refusals (INVALID_ARGUMENT, NOT_FOUND,
        FAILED_PRECONDITION, PERMISSION_DENIED, UNAUTHENTICATED, UNIMPLEMENTED, OUT_OF_RANGE)
        raise. Without ``follow`` it ends when every task of the job is final (a job with no
        task yet is not idle)."""
        return self._watch(WatchState(job_id, after_seq, follow, max_reconnects), None, 0.0)

    def _watch(
        self, w: WatchState, deadline: Optional[float], timeout: float
    ) -> Iterator[orchestrator_pb2.JobEvent]:
        while True:
            err: Optional[OrcaError] = None
            call = None
            try:
                call = self._stub.WatchJob(w.request(), metadata=self._metadata, timeout=remaining(deadline))
                for ev in call:
                    if w.accept(ev):
                        yield ev
                if w.ended_normally():
                    return
            except grpc.RpcError as e:
                err = error_from_rpc(e)
            finally:
                if call is not None:
                    call.cancel()
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(w.job_id, timeout, w.status)
            delay = w.retry_delay(err)
            left = remaining(deadline)
            time.sleep(delay if left is None else min(delay, left))

    def wait(
        self, job_id: str, timeout: Optional[float] = None, on_progress: Optional[ProgressCallback] = None
    ) -> types_pb2.JobStatus:
        """Waits until every task of the job is final, following `watch_job` (no polling), and
        returns the job's final counts. ``on_progress`` gets the counts on every change.
        Raises `orca.WaitTimeout` (a TimeoutError) when ``timeout`` seconds pass first;
        nothing is changed on the coordinator then."""
        w = WatchState(job_id, 0, False, 0)
        deadline = None if timeout is None else time.monotonic() + timeout
        for ev in self._watch(w, deadline, timeout or 0.0):
            if on_progress is not None and ev.HasField("status"):
                on_progress(ev.status)
        assert w.status is not None  # the stream ends only after a status showed the job idle
        return w.status

    @staticmethod
    def write_artifacts(task: types_pb2.Task, dest: Optional[_config.PathLike] = None) -> List[str]:
        """`orca.write_artifacts`: the task's artifacts into ``dest`` or its working_dir."""
        return write_artifacts(task, dest)
