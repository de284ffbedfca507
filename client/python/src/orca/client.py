"""`Client`: the synchronous typed client of the ``orca.v1.Orchestrator`` service.

Every RPC has one method; each returns the generated message (``orca.v1.types_pb2.Job``,
``Task``, ...; typed by the checked-in .pyi stubs) or a plain value where the message would
only wrap one (ids, a context dict). A refused call raises an `orca.OrcaError` subclass.
`Client.watch_job` is the resumable event stream and `Client.wait` waits on it (never by
polling).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable, Dict, Generator, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union, cast

import grpc

from orca import _config, _leader
from orca._specs import TaskLike, task_specs, task_state, to_struct
from orca._watch import WatchState
from orca.artifacts import write_artifacts
from orca.errors import OrcaError, WaitTimeout, error_from_rpc
from orca.git import Applied, apply_patches
from orca.v1 import orchestrator_pb2, orchestrator_pb2_grpc, types_pb2

__all__ = ["Client", "PAGE_SIZE"]

#: Page size used when a list call walks every page.
PAGE_SIZE = 1000

ProgressCallback = Callable[[types_pb2.JobStatus], None]
StateLike = Union[int, str]


def optional_id(value: Optional[str], name: str) -> str:
    """An id argument where None (or "") means "any"."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected a string or None, got {type(value).__name__}")
    return value


def list_tasks_request(
    job_id: Optional[str],
    states: Iterable[StateLike],
    page_size: int,
    page_token: str,
    summary_only: bool,
    worker_id: Optional[str] = None,
) -> orchestrator_pb2.ListTasksRequest:
    if isinstance(states, (str, int)):
        states = [states]
    # Enum values are ints at run time; the stubs type them as TaskState.
    wanted = cast(List[Any], [task_state(s, f"states[{i}]") for i, s in enumerate(states)])
    return orchestrator_pb2.ListTasksRequest(
        job_id=optional_id(job_id, "job_id"),
        states=wanted,
        page_size=page_size,
        page_token=page_token,
        summary_only=summary_only,
        worker_id=optional_id(worker_id, "worker_id"),
    )


def watch_fleet_request(stats_interval_ms: int) -> orchestrator_pb2.WatchFleetRequest:
    if isinstance(stats_interval_ms, bool) or not isinstance(stats_interval_ms, int):
        raise TypeError(f"stats_interval_ms: expected an int, got {type(stats_interval_ms).__name__}")
    if not 0 <= stats_interval_ms <= 0xFFFFFFFF:
        raise ValueError(f"stats_interval_ms: must be 0 (the default) or a positive number of ms, got {stats_interval_ms}")
    return orchestrator_pb2.WatchFleetRequest(stats_interval_ms=stats_interval_ms)


def drain_worker_request(worker_id: str, resume: bool) -> orchestrator_pb2.DrainWorkerRequest:
    if not isinstance(worker_id, str):
        raise TypeError(f"worker_id: expected a string, got {type(worker_id).__name__}")
    return orchestrator_pb2.DrainWorkerRequest(worker_id=worker_id, resume=bool(resume))


_UINT32_MAX = 0xFFFFFFFF


def _uint32(value: Any, name: str) -> int:
    """An int that fits the request's uint32 field; the coordinator judges its range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if not 0 <= value <= _UINT32_MAX:
        raise ValueError(f"{name}: must be between 0 and {_UINT32_MAX}, got {value}")
    return value


def _usd(value: Any, name: str) -> float:
    """An amount of US dollars (int or float, finite, not negative)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number of US dollars, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: must be a finite amount >= 0, got {value!r}")
    return float(value)


def create_job_request(
    description: str,
    metadata: Optional[Mapping[str, object]],
    request_id: str,
    weight: int = 0,
    max_running: int = 0,
    budget_usd: float = 0.0,
) -> orchestrator_pb2.CreateJobRequest:
    if not isinstance(description, str):
        raise TypeError(f"description: expected a string, got {type(description).__name__}")
    req = orchestrator_pb2.CreateJobRequest(
        description=description,
        request_id=request_id,
        weight=_uint32(weight, "weight"),
        max_running=_uint32(max_running, "max_running"),
        budget_usd=_usd(budget_usd, "budget_usd"),
    )
    m = to_struct(metadata, "metadata")
    if m is not None:
        req.metadata.CopyFrom(m)
    return req


def update_job_request(
    job_id: str,
    weight: Optional[int],
    max_running: Optional[int],
    budget_usd: Optional[float],
    paused: Optional[bool],
) -> orchestrator_pb2.UpdateJobRequest:
    """Only the fields given (not None) are set; the coordinator keeps the others."""
    if not isinstance(job_id, str):
        raise TypeError(f"job_id: expected a string, got {type(job_id).__name__}")
    if weight is None and max_running is None and budget_usd is None and paused is None:
        raise ValueError("update_job: nothing to change (give weight, max_running, budget_usd or paused)")
    req = orchestrator_pb2.UpdateJobRequest(job_id=job_id)
    if weight is not None:
        req.weight = _uint32(weight, "weight")
    if max_running is not None:
        req.max_running = _uint32(max_running, "max_running")
    if budget_usd is not None:
        req.budget_usd = _usd(budget_usd, "budget_usd")
    if paused is not None:
        if not isinstance(paused, bool):
            raise TypeError(f"paused: expected a bool, got {type(paused).__name__}")
        req.paused = paused
    return req


def create_schedule_request(
    name: str,
    cron: str,
    tasks: Iterable[TaskLike],
    description: str,
    metadata: Optional[Mapping[str, object]],
    weight: int,
    max_running: int,
    budget_usd: float,
    replace: bool,
) -> orchestrator_pb2.CreateScheduleRequest:
    for value, arg in ((name, "name"), (cron, "cron")):
        if not isinstance(value, str):
            raise TypeError(f"{arg}: expected a string, got {type(value).__name__}")
    job = create_job_request(description, metadata, "", weight, max_running, budget_usd)
    return orchestrator_pb2.CreateScheduleRequest(
        name=name, cron=cron, job=job, tasks=task_specs(tasks), replace=bool(replace)
    )


def schedule_name(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name: expected a string, got {type(name).__name__}")
    return name


def remaining(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


class Client:
    """A connection to a coordinator.

    ``coordinator`` is a URL, ``http://host:port`` (plaintext) or ``https://host:port`` (TLS);
    default ``ORCA_COORDINATOR``, else ``http://127.0.0.1:50051``. A comma-separated list
    names coordinators sharing one database, a leader and its standbys (which refuse every
    call with UNAVAILABLE): before the first call the client asks each in order for its
    gRPC health (``orca.v1.Orchestrator``, 2 s each) and uses the first SERVING one (else
    the first that answered, else the first URL). A call failing UNAVAILABLE makes the next
    call pick again; it is not sent again itself (a write may have been applied), except
    the reads (get/list calls, `get_context`, `get_stats`), sent once more to the leader
    picked again. `watch_job` and `wait` reconnect to the new leader and resume. With one
    URL there is no health probe.
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
        self._metadata = self.settings.metadata()
        self._lock = threading.Lock()
        self._closed = False
        self._channels: Dict[int, grpc.Channel] = {}
        self._stubs: Dict[int, orchestrator_pb2_grpc.OrchestratorStub] = {}
        #: Index of the URL in use; None until the leader is picked (several URLs) and again
        #: after a call failed UNAVAILABLE.
        self._current: Optional[int] = None
        if len(self.settings.endpoints) == 1:
            self._current = 0
            self._stub_for(0)

    @property
    def coordinator(self) -> str:
        """The coordinator URL in use: of several, the leader picked (the first URL until
        the first call, and while none is picked)."""
        return self.settings.endpoints[self._current or 0].url

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for channel in self._channels.values():
                channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _stub_for(self, index: int) -> orchestrator_pb2_grpc.OrchestratorStub:
        """The stub of URL ``index``, opening its channel (which connects on its first call)."""
        stub = self._stubs.get(index)
        if stub is None:
            if self._closed:
                raise ValueError("Cannot invoke RPC on closed channel!")
            endpoint = self.settings.endpoints[index]
            options = self.settings.channel_options()
            if endpoint.tls:
                channel = grpc.secure_channel(endpoint.target, self.settings.credentials(), options=options)
            else:
                channel = grpc.insecure_channel(endpoint.target, options=options)
            self._channels[index] = channel
            stub = self._stubs[index] = orchestrator_pb2_grpc.OrchestratorStub(channel)
        return stub

    def _probe(self, index: int) -> _leader.Answer:
        self._stub_for(index)
        return _leader.probe(self._channels[index], self._metadata)

    def _leader_stub(self) -> Tuple[int, orchestrator_pb2_grpc.OrchestratorStub]:
        """The URL in use and its stub; of several URLs, the leader is picked first when none
        is (threads calling meanwhile wait for that pick)."""
        with self._lock:
            if self._current is None:
                self._current = _leader.pick(len(self.settings.endpoints), self._probe)
            return self._current, self._stub_for(self._current)

    def _failed(self, index: int, err: Optional[OrcaError]) -> bool:
        """After a failed call on URL ``index``: True when the leader is to be picked again
        (UNAVAILABLE with several URLs), and then the next call picks it."""
        if not _leader.fails_over(err, self.settings.urls):
            return False
        with self._lock:
            if self._current == index:
                self._current = None
        return True

    def _call(self, method: str, request: object, timeout: Optional[float] = None):  # type: ignore[no-untyped-def]
        retry = method in _leader.RETRIED_READS
        while True:
            index, stub = self._leader_stub()
            try:
                return getattr(stub, method)(request, metadata=self._metadata, timeout=timeout)
            except grpc.RpcError as e:
                err = error_from_rpc(e)
            if not (self._failed(index, err) and retry):
                raise err
            retry = False

    # Jobs

    def create_job(
        self,
        description: str = "",
        metadata: Optional[Mapping[str, object]] = None,
        *,
        request_id: str = "",
        weight: int = 0,
        max_running: int = 0,
        budget_usd: float = 0.0,
    ) -> types_pb2.Job:
        """Creates a job. ``metadata`` is a JSON-like dict; ``request_id`` an optional
        idempotency key (the same key returns the first call's job). Scheduling controls
        (changed later with `update_job`): ``weight`` is the job's share of the workers
        against other jobs of the same priority (0: the default, 1; at most 1000),
        ``max_running`` the most of its tasks running at once (0: no limit), ``budget_usd``
        the cost after which no new attempt starts (0: no budget)."""
        req = create_job_request(description, metadata, request_id, weight, max_running, budget_usd)
        return self._call("CreateJob", req)

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

    def update_job(
        self,
        job_id: str,
        *,
        weight: Optional[int] = None,
        max_running: Optional[int] = None,
        budget_usd: Optional[float] = None,
        paused: Optional[bool] = None,
    ) -> types_pb2.Job:
        """Changes the job's scheduling controls; the arguments left None keep their value
        (at least one must be given, else ValueError). ``weight`` 1..1000; ``max_running``
        0 removes the limit; ``budget_usd`` 0 removes the budget (raising it resumes a job
        that spent its budget); ``paused`` True starts no new attempt (the running ones
        finish). Returns the job as it now is, with ``status.blocked_reason`` saying what
        holds it back. A value out of range raises `orca.InvalidArgument`, an unknown job
        `orca.NotFound`."""
        return self._call("UpdateJob", update_job_request(job_id, weight, max_running, budget_usd, paused))

    def pause_job(self, job_id: str) -> types_pb2.Job:
        """`update_job` with ``paused=True``: no new attempt of the job starts (its running
        ones finish, its tasks stay pending) until `resume_job`."""
        return self.update_job(job_id, paused=True)

    def resume_job(self, job_id: str) -> types_pb2.Job:
        """`update_job` with ``paused=False``: the job's tasks are dispatched again."""
        return self.update_job(job_id, paused=False)

    # Schedules

    def create_schedule(
        self,
        name: str,
        cron: str,
        tasks: Iterable[TaskLike],
        *,
        description: str = "",
        metadata: Optional[Mapping[str, object]] = None,
        weight: int = 0,
        max_running: int = 0,
        budget_usd: float = 0.0,
        replace: bool = False,
    ) -> orchestrator_pb2.Schedule:
        """A recurring job: at each tick of ``cron`` (UTC; five fields ``minute hour
        day-of-month month day-of-week``, or six with seconds first) the coordinator creates
        a job (``description``, ``metadata`` and the scheduling controls as for
        `create_job`) and adds ``tasks`` to it (as for `add_tasks`: negative ``depends_on``
        names the batch's tasks). ``name`` is unique (letters, digits, ``.``, ``_``, ``-``;
        at most 64 bytes): a name in use raises `orca.AlreadyExists` unless ``replace``.
        Returns the schedule with its ``next_run_ms``."""
        req = create_schedule_request(
            name, cron, tasks, description, metadata, weight, max_running, budget_usd, replace
        )
        return self._call("CreateSchedule", req)

    def list_schedules(self) -> List[orchestrator_pb2.Schedule]:
        """Every schedule the token may see, each with ``next_run_ms``, ``last_run_ms`` and
        ``last_job_id`` (the job its last tick created)."""
        return list(self._call("ListSchedules", orchestrator_pb2.ListSchedulesRequest()).schedules)

    def delete_schedule(self, name: str) -> None:
        """Removes the schedule (no more ticks; the jobs it created stay). An unknown name
        raises `orca.NotFound`."""
        self._call("DeleteSchedule", orchestrator_pb2.DeleteScheduleRequest(name=schedule_name(name)))

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
        job_id: Optional[str] = None,
        states: Iterable[StateLike] = (),
        page_size: int = 0,
        page_token: str = "",
        summary_only: bool = False,
        *,
        worker_id: Optional[str] = None,
    ) -> orchestrator_pb2.ListTasksResponse:
        """One page of the job's tasks (``job_id`` None or empty: of every job the token may
        read, a submitter's own), in id order, in the given states (all when empty; short
        names such as ``"failed"`` or enum values); ``worker_id`` keeps the tasks whose
        current or last attempt is that worker's; ``summary_only`` leaves out spec and
        result."""
        req = list_tasks_request(job_id, states, page_size, page_token, summary_only, worker_id)
        return self._call("ListTasks", req)

    def list_tasks(
        self,
        job_id: Optional[str] = None,
        states: Iterable[StateLike] = (),
        summary_only: bool = False,
        page_size: int = PAGE_SIZE,
        *,
        worker_id: Optional[str] = None,
    ) -> Iterator[types_pb2.Task]:
        """Every task of the job (``job_id`` None or empty: of every job the token may read)
        in the given states, of ``worker_id`` when given, in id order, fetching pages as it
        goes."""
        states = list([states] if isinstance(states, (str, int)) else states)
        token = ""
        while True:
            page = self.list_tasks_page(job_id, states, page_size, token, summary_only, worker_id=worker_id)
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
        per-job ``seq``. After a dropped connection or UNAVAILABLE (a coordinator restart, or
        with several coordinator URLs a failover: the leader is picked again) it reconnects
        with jittered backoff (100 ms doubling to 5 s) and resumes after the last
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
            index, stub = self._leader_stub()
            try:
                call = stub.WatchJob(w.request(), metadata=self._metadata, timeout=remaining(deadline))
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
            self._failed(index, err)
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

    # Workers and the queue

    def list_workers(self) -> List[orchestrator_pb2.WorkerInfo]:
        """The workers the coordinator knows, sorted by ``worker_id``: the connected ones and
        the disconnected ones that still hold attempts or were seen in the last minutes. Each
        `WorkerInfo` has ``worker_id``, ``name``, ``hostname``, ``labels``, ``slots``,
        ``running_tasks``, ``last_seen_ms``, ``version``, ``draining`` and ``connected``."""
        return list(self._call("ListWorkers", orchestrator_pb2.ListWorkersRequest()).workers)

    def get_stats(self) -> orchestrator_pb2.Stats:
        """The queue at a glance: ``tasks`` (a `JobStatus` over every job), ``queue`` (pending
        tasks by priority, highest first), ``throughput`` (60 buckets of 10 s, oldest first,
        with the tasks completed and failed in each), ``tasks_per_second`` over the last
        minute, ``workers_connected``, ``slots`` and ``slots_free`` of the connected workers
        (a draining worker's slots are not free), ``jobs`` and ``time_ms``."""
        return self._call("GetStats", orchestrator_pb2.GetStatsRequest())

    def watch_fleet(self, stats_interval_ms: int = 0) -> Generator[orchestrator_pb2.FleetEvent, None, None]:
        """For dashboards: a `FleetEvent` of kind ``FLEET_EVENT_KIND_SNAPSHOT`` with every
        worker and the stats, then ``WORKER_JOINED`` / ``WORKER_CHANGED`` / ``WORKER_LEFT``
        (the one worker in ``workers``) and ``STATS`` every ``stats_interval_ms`` (0: the
        coordinator's default, 2000; at least 500, else `orca.InvalidArgument`).

        **Not resumed**, unlike `watch_job`: when the coordinator stops (`orca.Unavailable`)
        or the connection drops, it raises; a reader that falls far behind is dropped and the
        iteration just ends. Call it again for a fresh snapshot: the events in between are
        not replayed. Close the generator (or break out of the loop) to end the stream."""
        return self._watch_fleet(watch_fleet_request(stats_interval_ms))

    def _watch_fleet(
        self, req: orchestrator_pb2.WatchFleetRequest
    ) -> Generator[orchestrator_pb2.FleetEvent, None, None]:
        call = None
        index, stub = self._leader_stub()
        try:
            call = stub.WatchFleet(req, metadata=self._metadata)
            yield from call
        except grpc.RpcError as e:
            err = error_from_rpc(e)
            self._failed(index, err)
            raise err from None
        finally:
            if call is not None:
                call.cancel()

    def drain_worker(self, worker_id: str, resume: bool = False) -> orchestrator_pb2.WorkerInfo:
        """Drains the worker: it takes no new work and finishes what it runs; with
        ``resume`` it takes work again. Returns the worker (``draining`` set or cleared).
        An unknown id raises `orca.NotFound`; it needs an admin token when the coordinator
        has ``--auth-file`` (`orca.PermissionDenied` otherwise)."""
        return self._call("DrainWorker", drain_worker_request(worker_id, resume))

    @staticmethod
    def write_artifacts(task: types_pb2.Task, dest: Optional[_config.PathLike] = None) -> List[str]:
        """`orca.write_artifacts`: the task's artifacts into ``dest`` or its working_dir."""
        return write_artifacts(task, dest)

    def apply_patches(self, job_id: str, path: _config.PathLike) -> Applied:
        """`orca.apply_patches` with the job's completed tasks: their git patches applied to
        the checkout containing ``path`` (``git am --3way``, one commit each, in task id
        order; the first that does not apply raises `orca.GitError`). Returns the ids
        applied and the ids of git tasks that changed nothing."""
        return apply_patches(path, self.list_tasks(job_id, states=["completed"]))
