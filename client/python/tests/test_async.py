"""The asyncio client (grpc.aio) against the shared cluster: every call, errors, watch, wait."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import pytest

import orca
from orca.v1 import orchestrator_pb2, types_pb2

from conftest import Cluster


def run(cluster: Cluster, body: Callable[[orca.AsyncClient], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with orca.AsyncClient(cluster.url, **cluster.client_kwargs()) as c:  # type: ignore[arg-type]
            return await asyncio.wait_for(body(c), 90)

    return asyncio.run(main())


def test_async_jobs_tasks_and_wait(cluster: Cluster) -> None:
    async def body(c: orca.AsyncClient) -> None:
        job = await c.create_job("async", {"via": "aio"})
        assert (await c.get_job(job.job_id)).description == "async"
        first = await c.list_jobs_page(page_size=1)
        assert len(first.jobs) == 1
        assert job.job_id in [j.job_id async for j in c.list_jobs(page_size=2)]

        ids = await c.add_tasks(job.job_id, ["a", {"prompt": "b", "depends_on": [-1]}])
        one = await c.add_task(job.job_id, orca.task_spec("c", priority=7))
        progress = []
        status = await c.wait(job.job_id, timeout=60, on_progress=lambda s: progress.append(s.completed))
        assert (status.total_tasks, status.completed) == (3, 3) and progress[-1] == 3
        t = await c.get_task(ids[1])
        assert t.state == types_pb2.TASK_STATE_COMPLETED and list(t.spec.depends_on) == [ids[0]]
        assert (await c.get_task(one)).spec.priority == 7
        assert [x.task_id async for x in c.list_tasks(job.job_id, states=["completed"], page_size=1)] == ids + [one]
        page = await c.list_tasks_page(job.job_id, summary_only=True)
        assert len(page.tasks) == 3 and not page.tasks[0].HasField("spec")

    run(cluster, body)


def test_async_errors_cancel_retry_delete_and_context(cluster: Cluster) -> None:
    async def body(c: orca.AsyncClient) -> None:
        with pytest.raises(orca.NotFound, match="task 424242 not found"):
            await c.get_task(424242)
        job = (await c.create_job("async errors")).job_id
        with pytest.raises(orca.InvalidArgument) as e:
            await c.add_tasks(job, [""])
        assert e.value.message.startswith("tasks[0].prompt: must not be empty")

        slow, child = await c.add_tasks(job, ["SLEEP=30 slow", {"prompt": "child", "parent_task_id": -1}])
        t = await c.cancel_task(slow, "stop")
        assert t.state == types_pb2.TASK_STATE_CANCELLED
        with pytest.raises(orca.FailedPrecondition):
            await c.cancel_task(child)
        assert sorted(await c.retry_tasks(task_ids=[slow])) == [slow, child]
        j = await c.cancel_job(job)
        assert j.state == types_pb2.JOB_STATE_CANCELLED

        await c.set_context("k", "v", job)
        assert await c.get_context(job) == {"k": "v"}
        await c.set_context("async_global", "1")
        assert (await c.get_context())["async_global"] == "1"
        await c.set_context("async_global", "")

        await c.delete_job(job)
        with pytest.raises(orca.NotFound):
            await c.get_job(job)

    run(cluster, body)


def test_async_watch_job_and_timeout(cluster: Cluster) -> None:
    async def body(c: orca.AsyncClient) -> None:
        job = (await c.create_job("async watch")).job_id
        await c.add_tasks(job, ["SLEEP=0.3 x", "y"])
        events = [e async for e in c.watch_job(job)]
        assert events[0].kind == orchestrator_pb2.JOB_EVENT_KIND_SNAPSHOT
        seqs = [e.seq for e in events[1:]]
        assert seqs == sorted(set(seqs))
        assert events[-1].status.completed == 2

        with pytest.raises(orca.NotFound):
            async for _ in c.watch_job("no-such-job"):
                pass

        slow = (await c.create_job("async slow")).job_id
        await c.add_tasks(slow, ["SLEEP=20 slow"])
        with pytest.raises(orca.WaitTimeout) as e:
            await c.wait(slow, timeout=0.5)
        assert e.value.status is not None and e.value.status.total_tasks == 1
        await c.cancel_job(slow)

    run(cluster, body)


def test_async_client_is_created_outside_a_loop_and_used_in_one(cluster: Cluster) -> None:
    c = orca.AsyncClient(cluster.url)

    async def main() -> str:
        try:
            return (await c.create_job("made outside")).description
        finally:
            await c.close()

    assert asyncio.run(main()) == "made outside"
