"""The fleet calls (ListWorkers, GetStats, WatchFleet, DrainWorker) and ListTasks across jobs
and by worker, sync and async, against a coordinator of this module's own with two labelled
workers (draining one must not slow the shared cluster's tests); WatchFleet is not resumed
across a coordinator restart."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, Dict, Iterator, List

import pytest

import orca
from orca.v1 import orchestrator_pb2, types_pb2

from conftest import Cluster, until

#: The module's workers: name -> (slots, labels).
WORKERS: Dict[str, Any] = {
    "fleet-a": (2, {"gpu": "yes", "zone": "a"}),
    "fleet-b": (3, {"zone": "b"}),
}
SLOTS = sum(slots for slots, _ in WORKERS.values())
#: Bound on how long the fleet may take to show a change (it is polled once a second).
CHANGE_SECONDS = 30.0


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A coordinator and the two workers of WORKERS, returned once both are connected."""
    c = Cluster(tmp_path_factory.mktemp("fleet"))
    try:
        c.start()
        for name, (slots, labels) in WORKERS.items():
            args: List[str] = []
            for k, v in labels.items():
                args += ["--label", f"{k}={v}"]
            c.add_worker(name, slots=slots, args=args)
        with c.client() as probe:
            until(
                "both workers to connect",
                lambda: {w.name for w in probe.list_workers() if w.connected} == set(WORKERS),
            )
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def fc(fleet: Cluster) -> Iterator[orca.Client]:
    with fleet.client() as c:
        yield c


def ids_by_name(workers: List[orchestrator_pb2.WorkerInfo]) -> Dict[str, str]:
    return {w.name: w.worker_id for w in workers}


def check_throughput(stats: orchestrator_pb2.Stats) -> None:
    buckets = stats.throughput
    assert len(buckets) == 60, "ten minutes of 10-second buckets"
    starts = [b.start_ms for b in buckets]
    assert all(b - a == 10_000 for a, b in zip(starts, starts[1:])), "oldest first, 10 s apart"
    assert starts[-1] <= stats.time_ms < starts[-1] + 10_000, "the last bucket holds now"


def test_list_workers_shows_each_worker_with_its_labels_and_slots(fc: orca.Client) -> None:
    workers = fc.list_workers()
    assert [w.worker_id for w in workers] == sorted(w.worker_id for w in workers), "sorted by id"
    by_name = {w.name: w for w in workers}
    assert set(by_name) == set(WORKERS)
    for name, (slots, labels) in WORKERS.items():
        w = by_name[name]
        assert w.worker_id.startswith(name), w.worker_id
        assert w.slots == slots
        assert dict(w.labels) == labels
        assert w.connected and not w.draining
        assert w.hostname and w.version.count(".") == 2
        assert w.last_seen_ms > 0
        assert isinstance(w, orca.WorkerInfo)


def test_get_stats_counts_a_small_job(fc: orca.Client) -> None:
    before = fc.get_stats()
    job = fc.create_job("stats").job_id
    fc.add_tasks(job, ["stats one", "stats two", "FAIL_ALWAYS stats three"])
    status = fc.wait(job, timeout=90)
    assert (status.completed, status.failed) == (2, 1)

    after = fc.get_stats()
    assert isinstance(after, orca.Stats)
    assert after.jobs - before.jobs == 1
    assert after.tasks.total_tasks - before.tasks.total_tasks == 3
    assert after.tasks.completed - before.tasks.completed == 2
    assert after.tasks.failed - before.tasks.failed == 1
    check_throughput(after)
    assert sum(b.completed for b in after.throughput) >= 2
    assert sum(b.failed for b in after.throughput) >= 1
    assert after.tasks_per_second > 0, "two tasks completed within the last minute"
    assert after.workers_connected == len(WORKERS)
    assert after.slots == SLOTS and after.slots_free <= SLOTS
    assert after.time_ms >= before.time_ms

    # A task no worker can run waits in the queue under its priority.
    stuck = fc.create_job("stuck").job_id
    try:
        fc.add_tasks(stuck, [orca.task_spec("nowhere", priority=8, required_labels={"zone": "nowhere"})])
        queued = fc.get_stats()
        depth = {q.priority: q.pending for q in queued.queue}
        assert depth.get(8, 0) >= 1, list(queued.queue)
        prios = [q.priority for q in queued.queue]
        assert prios == sorted(prios, reverse=True), "highest priority first"
        assert queued.tasks.pending >= 1
    finally:
        fc.cancel_job(stuck)


def test_watch_fleet_starts_with_a_snapshot(fc: orca.Client) -> None:
    stream = fc.watch_fleet()
    first = next(stream)
    stream.close()
    assert isinstance(first, orca.FleetEvent)
    assert first.kind == orchestrator_pb2.FLEET_EVENT_KIND_SNAPSHOT
    assert {w.name for w in first.workers} == set(WORKERS)
    assert all(w.connected for w in first.workers)
    assert first.HasField("stats") and first.stats.workers_connected == len(WORKERS)
    check_throughput(first.stats)
    assert first.time_ms > 0

    # Closed, and a new call starts over with a fresh snapshot.
    again = fc.watch_fleet(stats_interval_ms=500)
    try:
        assert next(again).kind == orchestrator_pb2.FLEET_EVENT_KIND_SNAPSHOT
    finally:
        again.close()

    with pytest.raises(orca.InvalidArgument, match="stats_interval_ms"):
        next(fc.watch_fleet(stats_interval_ms=100))
    with pytest.raises(ValueError, match="stats_interval_ms"):
        fc.watch_fleet(stats_interval_ms=-1)
    with pytest.raises(TypeError, match="stats_interval_ms"):
        fc.watch_fleet(stats_interval_ms="fast")  # type: ignore[arg-type]


def next_change(
    stream: Iterator[orchestrator_pb2.FleetEvent], worker_id: str, draining: bool, seen: List[int]
) -> orchestrator_pb2.WorkerInfo:
    """The next WORKER_CHANGED event showing ``worker_id`` with ``draining`` (stats events
    every 500 ms keep the loop turning, so the bound is checked); the kinds passed on the way
    go into ``seen``."""
    deadline = time.monotonic() + CHANGE_SECONDS
    for ev in stream:
        seen.append(ev.kind)
        if ev.kind == orchestrator_pb2.FLEET_EVENT_KIND_WORKER_CHANGED:
            (w,) = ev.workers
            if w.worker_id == worker_id and w.draining == draining:
                return w
        if time.monotonic() > deadline:
            break
    pytest.fail(f"no WORKER_CHANGED event with {worker_id} draining={draining} within {CHANGE_SECONDS:g} s (saw kinds {seen})")


def next_kind(stream: Iterator[orchestrator_pb2.FleetEvent], kind: int, seen: List[int]) -> bool:
    """Reads events until one of ``kind`` (true) or for CHANGE_SECONDS (false)."""
    deadline = time.monotonic() + CHANGE_SECONDS
    for ev in stream:
        seen.append(ev.kind)
        if ev.kind == kind:
            return True
        if time.monotonic() > deadline:
            break
    return False


def test_drain_worker_and_resume(fc: orca.Client) -> None:
    ids = ids_by_name(fc.list_workers())
    a, b = ids["fleet-a"], ids["fleet-b"]
    stream = fc.watch_fleet(stats_interval_ms=500)
    seen: List[int] = []
    try:
        assert next(stream).kind == orchestrator_pb2.FLEET_EVENT_KIND_SNAPSHOT
        drained = fc.drain_worker(b)
        try:
            assert isinstance(drained, orca.WorkerInfo)
            assert drained.worker_id == b and drained.draining and drained.name == "fleet-b"
            flags = {w.worker_id: w.draining for w in fc.list_workers()}
            assert flags == {a: False, b: True}
            stats = fc.get_stats()
            assert stats.workers_connected == len(WORKERS), "a draining worker stays connected"
            assert stats.slots_free <= WORKERS["fleet-a"][0], "a draining worker's slots are not free"
            changed = next_change(stream, b, True, seen)
            assert changed.name == "fleet-b" and changed.connected

            # A task only the drained worker could run waits until it is resumed.
            job = fc.create_job("after drain").job_id
            (tid,) = fc.add_tasks(job, [{"prompt": "zone b only", "required_labels": {"zone": "b"}}])
            assert fc.get_task(tid).state == types_pb2.TASK_STATE_PENDING
        finally:
            resumed = fc.drain_worker(b, resume=True)
        assert resumed.worker_id == b and not resumed.draining
        assert not any(w.draining for w in fc.list_workers())
        next_change(stream, b, False, seen)
        # The stats come every 500 ms; the calls above may all fit in less.
        if orchestrator_pb2.FLEET_EVENT_KIND_STATS not in seen:
            assert next_kind(stream, orchestrator_pb2.FLEET_EVENT_KIND_STATS, seen), "stats every 500 ms"
    finally:
        stream.close()
    assert fc.wait(job, timeout=90).completed == 1
    assert fc.get_task(tid).worker_id == b

    with pytest.raises(orca.NotFound):
        fc.drain_worker("no-such-worker")
    with pytest.raises(orca.NotFound):
        fc.drain_worker("no-such-worker", resume=True)
    with pytest.raises(orca.InvalidArgument, match="worker_id"):
        fc.drain_worker("")
    with pytest.raises(TypeError, match="worker_id"):
        fc.drain_worker(None)  # type: ignore[arg-type]


def test_list_tasks_of_every_job_and_by_worker(fc: orca.Client) -> None:
    ids = ids_by_name(fc.list_workers())
    a, b = ids["fleet-a"], ids["fleet-b"]
    zone = lambda z: {"zone": z}  # noqa: E731
    one = fc.create_job("by worker 1").job_id
    on_a = fc.add_tasks(one, [{"prompt": "a1", "required_labels": zone("a")}, {"prompt": "a2", "required_labels": zone("a")}])
    (on_b1,) = fc.add_tasks(one, [{"prompt": "b1", "required_labels": zone("b")}])
    two = fc.create_job("by worker 2").job_id
    (on_b2,) = fc.add_tasks(two, [{"prompt": "b2", "required_labels": zone("b")}])
    assert fc.wait(one, timeout=90).completed == 3
    assert fc.wait(two, timeout=90).completed == 1

    every = [t.task_id for t in fc.list_tasks()]
    assert every == sorted(set(every)), "id order, each once"
    assert set(on_a + [on_b1, on_b2]) <= set(every)
    assert {t.job_id for t in fc.list_tasks(None)} >= {one, two}, "tasks of more than one job"
    assert [t.task_id for t in fc.list_tasks("")] == every
    assert [t.task_id for t in fc.list_tasks(job_id=None, page_size=1, summary_only=True)] == every
    page = fc.list_tasks_page(page_size=1)
    assert len(page.tasks) == 1 and page.next_page_token

    of_a = list(fc.list_tasks(worker_id=a))
    assert all(t.worker_id == a for t in of_a)
    assert set(on_a) <= {t.task_id for t in of_a}
    assert not {on_b1, on_b2} & {t.task_id for t in of_a}
    of_b = [t.task_id for t in fc.list_tasks(None, states=["completed"], worker_id=b)]
    assert {on_b1, on_b2} <= set(of_b)
    assert [t.task_id for t in fc.list_tasks(one, worker_id=b)] == [on_b1], "a job and a worker"
    page = fc.list_tasks_page(two, worker_id=b)
    assert [t.task_id for t in page.tasks] == [on_b2] and not page.next_page_token
    assert list(fc.list_tasks(worker_id="no-such-worker")) == []
    with pytest.raises(TypeError, match="worker_id"):
        list(fc.list_tasks(worker_id=7))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="job_id"):
        list(fc.list_tasks(7))  # type: ignore[arg-type]


def test_watch_fleet_is_not_resumed_across_a_coordinator_restart(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c = make_cluster("restart").start()
    with c.client() as client:
        stream = client.watch_fleet(stats_interval_ms=500)
        try:
            first = next(stream)
            assert first.kind == orchestrator_pb2.FLEET_EVENT_KIND_SNAPSHOT and list(first.workers) == []
            c.stop_coordinator()
            with pytest.raises(orca.Unavailable) as e:
                for _ in stream:
                    pass
            assert e.value.transient
        finally:
            stream.close()
        c.start()
        again = client.watch_fleet()
        try:
            assert next(again).kind == orchestrator_pb2.FLEET_EVENT_KIND_SNAPSHOT, "a new call: a fresh snapshot"
        finally:
            again.close()


def arun(cluster: Cluster, body: Callable[[orca.AsyncClient], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with orca.AsyncClient(cluster.url, **cluster.client_kwargs()) as c:  # type: ignore[arg-type]
            return await asyncio.wait_for(body(c), 120)

    return asyncio.run(main())


def test_async_fleet_calls(fleet: Cluster) -> None:
    async def body(c: orca.AsyncClient) -> None:
        workers = await c.list_workers()
        assert {w.name: (w.slots, dict(w.labels)) for w in workers} == WORKERS
        assert all(w.connected for w in workers)
        ids = ids_by_name(workers)

        before = await c.get_stats()
        job = (await c.create_job("async fleet")).job_id
        (ta,) = await c.add_tasks(job, [{"prompt": "async a", "required_labels": {"zone": "a"}}])
        (tb,) = await c.add_tasks(job, [{"prompt": "async b", "required_labels": {"zone": "b"}}])
        assert (await c.wait(job, timeout=90)).completed == 2
        after = await c.get_stats()
        assert after.tasks.completed - before.tasks.completed == 2
        assert after.jobs - before.jobs == 1
        check_throughput(after)

        stream = c.watch_fleet()
        try:
            first = await stream.__anext__()
        finally:
            await stream.aclose()
        assert first.kind == orchestrator_pb2.FLEET_EVENT_KIND_SNAPSHOT
        assert {w.name for w in first.workers} == set(WORKERS)
        assert first.stats.workers_connected == len(WORKERS)
        with pytest.raises(orca.InvalidArgument):
            async for _ in c.watch_fleet(stats_interval_ms=1):
                pass

        b = ids["fleet-b"]
        try:
            assert (await c.drain_worker(b)).draining
            assert {w.worker_id: w.draining for w in await c.list_workers()}[b]
        finally:
            assert not (await c.drain_worker(b, resume=True)).draining
        assert not any(w.draining for w in await c.list_workers())
        with pytest.raises(orca.NotFound):
            await c.drain_worker("no-such-worker")

        every = [t.task_id async for t in c.list_tasks()]
        assert every == sorted(every) and {ta, tb} <= set(every)
        assert ta in [t.task_id async for t in c.list_tasks(None, worker_id=ids["fleet-a"])]
        assert [t.task_id async for t in c.list_tasks(job, worker_id=b)] == [tb]
        page = await c.list_tasks_page(worker_id=ids["fleet-a"], page_size=1)
        assert len(page.tasks) == 1 and page.tasks[0].worker_id == ids["fleet-a"]

    arun(fleet, body)
