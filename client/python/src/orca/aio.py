"""`AsyncClient`: the asyncio twin of `orca.Client` (grpc.aio), with the same methods as
coroutines; `AsyncClient.watch_job`, `AsyncClient.watch_fleet` and `AsyncClient.list_jobs` /
`list_tasks` are async iterators. Channels are opened on the first call, inside the running
event loop.
"""

from __future__ import annotations

import asyncio
import time
from typing import AsyncGenerator, AsyncIterator, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import grpc
import grpc.aio

from orca import _config, _leader
from orca._specs import TaskLike, task_specs
from orca._watch import WatchState
from orca.artifacts import write_artifacts
from orca.client import (
    PAGE_SIZE,
    ProgressCallback,
    StateLike,
    create_job_request,
    create_schedule_request,
    drain_worker_request,
    list_tasks_request,
    remaining,
    schedule_name,
    update_job_request,
    watch_fleet_request,
)
from orca.errors import OrcaError, WaitTimeout, error_from_rpc
from orca.git import Applied, apply_patches
from orca.v1 import orchestrator_pb2, orchestrator_pb2_grpc, types_pb2

__all__ = ["AsyncClient"]


class AsyncClient:
    """A connection to a coordinator for asyncio code. Settings as for `orca.Client`
    (arguments, then ``ORCA_COORDINATOR``, ``ORCA_TOKEN_FILE``/``ORCA_TOKEN``,
    ``ORCA_TLS_CA``/``ORCA_TLS_CERT``/``ORCA_TLS_KEY``), and so is a comma-separated
    coordinator list: the leader is picked by health before the first call and again after
    a call failed UNAVAILABLE. Use ``async with`` or await `close`.
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
        self._channels: Dict[int, grpc.aio.Channel] = {}
        self._stubs: Dict[int, orchestrator_pb2_grpc.OrchestratorStub] = {}
        #: Index of the URL in use; None until the leader is picked (several URLs) and again
        #: after a call failed UNAVAILABLE.
        self._current: Optional[int] = 0 if len(self.settings.endpoints) == 1 else None
        #: Made inside the running loop, by the first pick.
        self._pick_lock: Optional[asyncio.Lock] = None

    @property
    def coordinator(self) -> str:
        """As `orca.Client.coordinator`: the URL in use (of several, the leader picked)."""
        return self.settings.endpoints[self._current or 0].url

    def _stub_for(self, index: int) -> orchestrator_pb2_grpc.OrchestratorStub:
        """The stub of URL ``index``, opening its channel in the running loop."""
        stub = self._stubs.get(index)
        if stub is None:
            endpoint = self.settings.endpoints[index]
            options = self.settings.channel_options()
            if endpoint.tls:
                channel = grpc.aio.secure_channel(endpoint.target, self.settings.credentials(), options=options)
            else:
                channel = grpc.aio.insecure_channel(endpoint.target, options=options)
            self._channels[index] = channel
            stub = self._stubs[index] = orchestrator_pb2_grpc.OrchestratorStub(channel)
        return stub

    async def _probe(self, index: int) -> _leader.Answer:
        self._stub_for(index)
        return await _leader.probe_async(self._channels[index], self._metadata)

    async def _leader_stub(self) -> Tuple[int, orchestrator_pb2_grpc.OrchestratorStub]:
        """As `orca.Client`'s: the URL in use and its stub, picking the leader first when
        none is (tasks calling meanwhile wait for that pick)."""
        if self._current is None:
            if self._pick_lock is None:
                self._pick_lock = asyncio.Lock()
            async with self._pick_lock:
                if self._current is None:
                    self._current = await _leader.pick_async(len(self.settings.endpoints), self._probe)
        index = self._current
        return index, self._stub_for(index)

    def _failed(self, index: int, err: Optional[OrcaError]) -> bool:
        """As `orca.Client`'s: True when the leader is to be picked again."""
        if not _leader.fails_over(err, self.settings.urls):
            return False
        if self._current == index:
            self._current = None
        return True

    async def close(self) -> None:
        channels = list(self._channels.values())
        self._channels.clear()
        self._stubs.clear()
        self._pick_lock = None
        if len(self.settings.endpoints) > 1:
            self._current = None
        for channel in channels:
            await channel.close(None)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: str, request: object, timeout: Optional[float] = None):  # type: ignore[no-untyped-def]
        retry = method in _leader.RETRIED_READS
        while True:
            index, stub = await self._leader_stub()
            try:
                return await getattr(stub, method)(request, metadata=self._metadata, timeout=timeout)
            except grpc.RpcError as e:
                err = error_from_rpc(e)
            if not (self._failed(index, err) and retry):
                raise err
            retry = False

    # Jobs

    async def create_job(
        self,
        description: str = "",
        metadata: Optional[Mapping[str, object]] = None,
        *,
        request_id: str = "",
        weight: int = 0,
        max_running: int = 0,
        budget_usd: float = 0.0,
    ) -> types_pb2.Job:
        """As `orca.Client.create_job` (with the scheduling controls ``weight``,
        ``max_running`` and ``budget_usd``)."""
        req = create_job_request(description, metadata, request_id, weight, max_running, budget_usd)
        return await self._call("CreateJob", req)

    async def get_job(self, job_id: str) -> types_pb2.Job:
        return await self._call("GetJob", orchestrator_pb2.GetJobRequest(job_id=job_id))

    async def list_jobs_page(self, page_size: int = 0, page_token: str = "") -> orchestrator_pb2.ListJobsResponse:
        return await self._call(
            "ListJobs", orchestrator_pb2.ListJobsRequest(page_size=page_size, page_token=page_token)
        )

    async def list_jobs(self, page_size: int = PAGE_SIZE) -> AsyncIterator[types_pb2.Job]:
        token = ""
        while True:
            page = await self.list_jobs_page(page_size, token)
            for job in page.jobs:
                yield job
            if not page.next_page_token:
                return
            token = page.next_page_token

    async def cancel_job(self, job_id: str, reason: str = "") -> types_pb2.Job:
        return await self._call("CancelJob", orchestrator_pb2.CancelJobRequest(job_id=job_id, reason=reason))

    async def delete_job(self, job_id: str) -> None:
        await self._call("DeleteJob", orchestrator_pb2.DeleteJobRequest(job_id=job_id))

    async def update_job(
        self,
        job_id: str,
        *,
        weight: Optional[int] = None,
        max_running: Optional[int] = None,
        budget_usd: Optional[float] = None,
        paused: Optional[bool] = None,
    ) -> types_pb2.Job:
        """As `orca.Client.update_job`: changes the given scheduling controls (at least one)
        and returns the job."""
        return await self._call("UpdateJob", update_job_request(job_id, weight, max_running, budget_usd, paused))

    async def pause_job(self, job_id: str) -> types_pb2.Job:
        """As `orca.Client.pause_job`."""
        return await self.update_job(job_id, paused=True)

    async def resume_job(self, job_id: str) -> types_pb2.Job:
        """As `orca.Client.resume_job`."""
        return await self.update_job(job_id, paused=False)

    # Schedules

    async def create_schedule(
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
        """As `orca.Client.create_schedule`."""
        req = create_schedule_request(
            name, cron, tasks, description, metadata, weight, max_running, budget_usd, replace
        )
        return await self._call("CreateSchedule", req)

    async def list_schedules(self) -> List[orchestrator_pb2.Schedule]:
        """As `orca.Client.list_schedules`."""
        return list((await self._call("ListSchedules", orchestrator_pb2.ListSchedulesRequest())).schedules)

    async def delete_schedule(self, name: str) -> None:
        """As `orca.Client.delete_schedule`."""
        await self._call("DeleteSchedule", orchestrator_pb2.DeleteScheduleRequest(name=schedule_name(name)))

    # Tasks

    async def add_tasks(self, job_id: str, tasks: Iterable[TaskLike], *, request_id: str = "") -> List[int]:
        req = orchestrator_pb2.AddTasksRequest(job_id=job_id, tasks=task_specs(tasks), request_id=request_id)
        return list((await self._call("AddTasks", req)).task_ids)

    async def add_task(self, job_id: str, task: TaskLike) -> int:
        return (await self.add_tasks(job_id, [task]))[0]

    async def get_task(self, task_id: int) -> types_pb2.Task:
        return await self._call("GetTask", orchestrator_pb2.GetTaskRequest(task_id=task_id))

    async def list_tasks_page(
        self,
        job_id: Optional[str] = None,
        states: Iterable[StateLike] = (),
        page_size: int = 0,
        page_token: str = "",
        summary_only: bool = False,
        *,
        worker_id: Optional[str] = None,
    ) -> orchestrator_pb2.ListTasksResponse:
        """As `orca.Client.list_tasks_page` (``job_id`` None or empty: every job the token may
        read; ``worker_id``: only that worker's tasks)."""
        req = list_tasks_request(job_id, states, page_size, page_token, summary_only, worker_id)
        return await self._call("ListTasks", req)

    async def list_tasks(
        self,
        job_id: Optional[str] = None,
        states: Iterable[StateLike] = (),
        summary_only: bool = False,
        page_size: int = PAGE_SIZE,
        *,
        worker_id: Optional[str] = None,
    ) -> AsyncIterator[types_pb2.Task]:
        """As `orca.Client.list_tasks`, as an async iterator."""
        states = list([states] if isinstance(states, (str, int)) else states)
        token = ""
        while True:
            page = await self.list_tasks_page(job_id, states, page_size, token, summary_only, worker_id=worker_id)
            for task in page.tasks:
                yield task
            if not page.next_page_token:
                return
            token = page.next_page_token

    async def cancel_task(self, task_id: int, reason: str = "") -> types_pb2.Task:
        return await self._call("CancelTask", orchestrator_pb2.CancelTaskRequest(task_id=task_id, reason=reason))

    async def retry_tasks(self, job_id: str = "", task_ids: Sequence[int] = ()) -> List[int]:
        req = orchestrator_pb2.RetryTasksRequest(job_id=job_id, task_ids=list(task_ids))
        return list((await self._call("RetryTasks", req)).task_ids)

    # Shared context

    async def set_context(self, key: str, value: str, job_id: str = "") -> None:
        await self._call("SetContext", orchestrator_pb2.SetContextRequest(job_id=job_id, key=key, value=value))

    async def get_context(self, job_id: str = "") -> Dict[str, str]:
        return dict((await self._call("GetContext", orchestrator_pb2.GetContextRequest(job_id=job_id))).values)

    # Watching and waiting

    def watch_job(
        self, job_id: str, after_seq: int = 0, follow: bool = False, max_reconnects: int = 0
    ) -> AsyncIterator[orchestrator_pb2.JobEvent]:
        """As `orca.Client.watch_job`, as an async iterator."""
        return self._watch(WatchState(job_id, after_seq, follow, max_reconnects), None, 0.0)

    async def _watch(
        self, w: WatchState, deadline: Optional[float], timeout: float
    ) -> AsyncIterator[orchestrator_pb2.JobEvent]:
        while True:
            err: Optional[OrcaError] = None
            call = None
            index, stub = await self._leader_stub()
            try:
                call = stub.WatchJob(w.request(), metadata=self._metadata, timeout=remaining(deadline))
                async for ev in call:
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
            await asyncio.sleep(delay if left is None else min(delay, left))

    async def wait(
        self, job_id: str, timeout: Optional[float] = None, on_progress: Optional[ProgressCallback] = None
    ) -> types_pb2.JobStatus:
        """As `orca.Client.wait`."""
        w = WatchState(job_id, 0, False, 0)
        deadline = None if timeout is None else time.monotonic() + timeout
        async for ev in self._watch(w, deadline, timeout or 0.0):
            if on_progress is not None and ev.HasField("status"):
                on_progress(ev.status)
        assert w.status is not None
        return w.status

    # Workers and the queue

    async def list_workers(self) -> List[orchestrator_pb2.WorkerInfo]:
        """As `orca.Client.list_workers`: the known workers, sorted by ``worker_id``."""
        return list((await self._call("ListWorkers", orchestrator_pb2.ListWorkersRequest())).workers)

    async def get_stats(self) -> orchestrator_pb2.Stats:
        """As `orca.Client.get_stats`."""
        return await self._call("GetStats", orchestrator_pb2.GetStatsRequest())

    def watch_fleet(self, stats_interval_ms: int = 0) -> AsyncGenerator[orchestrator_pb2.FleetEvent, None]:
        """As `orca.Client.watch_fleet`, as an async iterator: a snapshot, then worker and
        stats events. Not resumed: it raises `orca.Unavailable` when the coordinator stops,
        and a new call starts with a fresh snapshot. ``aclose()`` it (or break out of the
        loop) to end the stream."""
        return self._watch_fleet(watch_fleet_request(stats_interval_ms))

    async def _watch_fleet(
        self, req: orchestrator_pb2.WatchFleetRequest
    ) -> AsyncGenerator[orchestrator_pb2.FleetEvent, None]:
        call = None
        index, stub = await self._leader_stub()
        try:
            call = stub.WatchFleet(req, metadata=self._metadata)
            async for ev in call:
                yield ev
        except grpc.RpcError as e:
            err = error_from_rpc(e)
            self._failed(index, err)
            raise err from None
        finally:
            if call is not None:
                call.cancel()

    async def drain_worker(self, worker_id: str, resume: bool = False) -> orchestrator_pb2.WorkerInfo:
        """As `orca.Client.drain_worker`: drains the worker (or with ``resume`` takes it back)
        and returns it."""
        return await self._call("DrainWorker", drain_worker_request(worker_id, resume))

    @staticmethod
    def write_artifacts(task: types_pb2.Task, dest: Optional[_config.PathLike] = None) -> List[str]:
        """`orca.write_artifacts` (plain file writes; call it from a thread for huge files)."""
        return write_artifacts(task, dest)

    async def apply_patches(self, job_id: str, path: _config.PathLike) -> Applied:
        """As `orca.Client.apply_patches`: the job's completed tasks' git patches applied to
        the checkout containing ``path``; git runs in a thread (``asyncio.to_thread``)."""
        tasks = [t async for t in self.list_tasks(job_id, states=["completed"])]
        return await asyncio.to_thread(apply_patches, path, tasks)
