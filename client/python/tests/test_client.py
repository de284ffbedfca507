"""The synchronous typed client against a real coordinator and workers: every Orchestrator
call, its errors, the watch stream and wait."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

import orca
from orca.v1 import orchestrator_pb2, types_pb2


def test_jobs_are_created_read_and_listed_page_by_page(client: orca.Client) -> None:
    a = client.create_job("list me 1", {"team": "py", "n": 2, "nested": {"ok": True}})
    b = client.create_job("list me 2")
    assert a.state == types_pb2.JOB_STATE_ACTIVE
    got = client.get_job(a.job_id)
    assert got.description == "list me 1"
    assert orca.from_struct(got.metadata) == {"team": "py", "n": 2.0, "nested": {"ok": True}}

    page = client.list_jobs_page(page_size=1)
    assert len(page.jobs) == 1 and page.next_page_token, "one job per page, more to come"
    ids = [j.job_id for j in client.list_jobs(page_size=1)]
    assert len(ids) == len(set(ids)), "no job twice across pages"
    assert {a.job_id, b.job_id} <= set(ids)
    assert ids == [j.job_id for j in client.list_jobs()], "the same jobs with the default page size"


def test_create_job_with_the_same_request_id_returns_the_first_job(client: orca.Client) -> None:
    first = client.create_job("idempotent", request_id="py-req-1")
    again = client.create_job("idempotent", request_id="py-req-1")
    assert again.job_id == first.job_id
    with pytest.raises(orca.InvalidArgument, match="request_id"):
        client.create_job("something else", request_id="py-req-1")


def test_tasks_run_in_dependency_order_and_are_listed(client: orca.Client) -> None:
    job = client.create_job("three tasks").job_id
    ids = client.add_tasks(
        job,
        [
            "first as a string",
            {"prompt": "second as a dict", "priority": 9, "metadata": {"k": "v"}, "name": "second"},
            orca.task_spec("third after the second", depends_on=[-2], max_retries=1),
        ],
    )
    assert len(ids) == 3 and ids == sorted(ids)
    seen = []
    status = client.wait(job, timeout=60, on_progress=lambda s: seen.append(s.completed))
    assert (status.total_tasks, status.completed, status.failed) == (3, 3, 0)
    assert seen and seen[-1] == 3 and seen == sorted(seen)

    second = client.get_task(ids[1])
    assert second.state == types_pb2.TASK_STATE_COMPLETED
    assert second.spec.priority == 9 and second.spec.name == "second"
    assert orca.from_struct(second.spec.metadata) == {"k": "v"}
    assert second.result.output.startswith(f"done: second as a dict (task {ids[1]}, attempt 1)")
    third = client.get_task(ids[2])
    assert list(third.spec.depends_on) == [ids[1]], "the batch index became the task id"
    assert third.spec.max_retries == 1
    # A task the caller gave no priority gets the default, 5.
    assert client.get_task(ids[0]).spec.priority == 5

    assert [t.task_id for t in client.list_tasks(job)] == ids
    assert [t.task_id for t in client.list_tasks(job, states=["completed"], page_size=1)] == ids
    assert list(client.list_tasks(job, states=[types_pb2.TASK_STATE_FAILED])) == []
    page = client.list_tasks_page(job, page_size=2, summary_only=True)
    assert len(page.tasks) == 2 and page.next_page_token
    assert not page.tasks[0].HasField("spec") and not page.tasks[0].HasField("result"), "summary only"
    assert client.get_job(job).state == types_pb2.JOB_STATE_COMPLETED


def test_refusals_raise_typed_errors_with_the_coordinators_message(client: orca.Client) -> None:
    with pytest.raises(orca.NotFound) as e:
        client.get_task(424242)
    assert e.value.code == grpc.StatusCode.NOT_FOUND
    assert e.value.message == "task 424242 not found"
    assert str(e.value) == "NOT_FOUND: task 424242 not found"
    assert isinstance(e.value, orca.OrcaError) and not e.value.transient

    job = client.create_job("errors").job_id
    with pytest.raises(orca.InvalidArgument) as e:
        client.add_tasks(job, ["fine", ""])
    assert e.value.message.startswith("tasks[1].prompt: must not be empty"), e.value.message
    with pytest.raises(orca.InvalidArgument, match="tasks: must not be empty"):
        client.add_tasks(job, [])
    assert list(client.list_tasks(job)) == [], "a refused batch adds nothing"
    with pytest.raises(orca.NotFound):
        client.get_job("no-such-job")
    with pytest.raises(orca.NotFound):
        client.add_tasks("no-such-job", ["x"])
    with pytest.raises(orca.InvalidArgument):
        client.add_tasks(job, [{"prompt": "p", "priority": 5000}])


def test_bad_arguments_are_refused_before_sending_naming_the_field(client: orca.Client) -> None:
    job = client.create_job("local checks").job_id
    with pytest.raises(ValueError, match=r"^tasks\[1\]: unknown field 'prio'"):
        client.add_tasks(job, ["ok", {"prompt": "x", "prio": 3}])
    with pytest.raises(TypeError, match=r"^tasks\[0\]\.priority: expected an int"):
        client.add_tasks(job, [{"prompt": "x", "priority": "high"}])
    with pytest.raises(ValueError, match=r"^tasks\[0\]\.retry_policy: unknown key 'backoff'"):
        client.add_tasks(job, [{"prompt": "x", "retry_policy": {"backoff": 1}}])
    with pytest.raises(TypeError, match=r"^tasks\[0\]\.metadata: expected a dict"):
        client.add_tasks(job, [{"prompt": "x", "metadata": [1, 2]}])
    with pytest.raises(ValueError, match=r"^states\[0\]: 'done' is not a task state"):
        list(client.list_tasks(job, states=["done"]))
    with pytest.raises(TypeError, match="metadata"):
        client.create_job("x", metadata="not a dict")  # type: ignore[arg-type]
    assert list(client.list_tasks(job)) == []


def test_cancel_retry_and_delete(client: orca.Client) -> None:
    job = client.create_job("cancel me").job_id
    slow, child = client.add_tasks(job, ["SLEEP=30 slow", {"prompt": "child", "parent_task_id": -1}])
    cancelled = client.cancel_task(slow, reason="changed my mind")
    assert cancelled.state == types_pb2.TASK_STATE_CANCELLED
    assert client.get_task(child).state == types_pb2.TASK_STATE_CANCELLED, "the child goes with its parent"
    with pytest.raises(orca.FailedPrecondition):
        client.cancel_task(slow)

    back = client.retry_tasks(task_ids=[slow])
    assert sorted(back) == [slow, child], "the dependent cancelled with it comes back too"
    assert client.get_task(child).state == types_pb2.TASK_STATE_WAITING
    with pytest.raises(orca.FailedPrecondition):
        client.delete_job(job)

    j = client.cancel_job(job, reason="done here")
    assert j.state == types_pb2.JOB_STATE_CANCELLED
    assert j.status.cancelled == 2
    with pytest.raises(orca.FailedPrecondition):
        client.add_tasks(job, ["too late"])
    client.delete_job(job)
    with pytest.raises(orca.NotFound):
        client.get_job(job)
    with pytest.raises(orca.NotFound):
        client.get_task(slow)


def test_retry_tasks_of_a_job_brings_back_its_failed_tasks(client: orca.Client) -> None:
    job = client.create_job("retry").job_id
    bad, ok = client.add_tasks(job, ["FAIL_ONCE retry me", "fine"])
    status = client.wait(job, timeout=60)
    assert (status.completed, status.failed) == (1, 1)
    failed = client.get_task(bad)
    assert failed.state == types_pb2.TASK_STATE_FAILED
    assert "failing attempt 1" in failed.result.error or "failing attempt 1" in failed.reason
    assert client.retry_tasks(job) == [bad]
    status = client.wait(job, timeout=60)
    assert (status.completed, status.failed) == (2, 0)
    assert client.get_task(bad).attempts == 2


def test_shared_context_global_and_per_job(client: orca.Client) -> None:
    job = client.create_job("context").job_id
    client.set_context("py_global_key", "g", "")
    client.set_context("lang", "python", job)
    assert client.get_context(job) == {"lang": "python"}
    assert client.get_context()["py_global_key"] == "g"
    (tid,) = client.add_tasks(job, ["show me the context"])
    client.wait(job, timeout=60)
    out = client.get_task(tid).result.output
    assert "context global.py_global_key: g" in out and "context job.lang: python" in out
    client.set_context("lang", "", job)
    assert client.get_context(job) == {}, "an empty value deletes the key"
    client.set_context("py_global_key", "")


def test_watch_job_streams_a_snapshot_then_every_change_and_ends(client: orca.Client) -> None:
    job = client.create_job("watch").job_id
    ids = client.add_tasks(job, ["SLEEP=0.5 one", "two", {"prompt": "three", "depends_on": [-1, -2]}])
    events = list(client.watch_job(job))
    assert events[0].kind == orchestrator_pb2.JOB_EVENT_KIND_SNAPSHOT
    seqs = [e.seq for e in events if e.kind != orchestrator_pb2.JOB_EVENT_KIND_SNAPSHOT]
    assert seqs == sorted(set(seqs)), "increasing, no duplicates"
    assert seqs == list(range(events[0].seq + 1, events[0].seq + 1 + len(seqs))), "no gaps"
    last = events[-1]
    assert last.status.completed == 3 and last.job_state == types_pb2.JOB_STATE_COMPLETED
    done = {e.task_id for e in events if e.kind == orchestrator_pb2.JOB_EVENT_KIND_TASK_STATE and e.state == types_pb2.TASK_STATE_COMPLETED}
    snap_done = {t.task_id for t in events[0].tasks if t.state == types_pb2.TASK_STATE_COMPLETED}
    assert done | snap_done == set(ids)

    # Resuming after a sequence number gives only what came after it.
    middle = seqs[len(seqs) // 2]
    resumed = list(client.watch_job(job, after_seq=middle))
    assert resumed, "the history of a watched job is kept"
    if resumed[0].kind != orchestrator_pb2.JOB_EVENT_KIND_SNAPSHOT:
        assert [e.seq for e in resumed] == [s for s in seqs if s > middle]


def test_watch_with_follow_stays_open_until_closed(client: orca.Client) -> None:
    job = client.create_job("follow").job_id
    client.add_tasks(job, ["quick"])
    stream = client.watch_job(job, follow=True)
    for ev in stream:
        if ev.status.total_tasks and ev.status.completed == ev.status.total_tasks:
            break
    # The job is idle, yet the stream is open: a task added now shows up on it.
    (late,) = client.add_tasks(job, ["late"])
    for ev in stream:
        if ev.task_id == late and ev.state == types_pb2.TASK_STATE_COMPLETED:
            break
    else:
        pytest.fail("the followed stream ended")
    stream.close()


def test_watch_of_an_unknown_job_raises_at_once(client: orca.Client) -> None:
    started = time.monotonic()
    with pytest.raises(orca.NotFound):
        list(client.watch_job("no-such-job"))
    assert time.monotonic() - started < 5, "not retried"
    with pytest.raises(ValueError, match="job_id"):
        client.watch_job("")


def test_wait_times_out_without_changing_anything(client: orca.Client) -> None:
    job = client.create_job("slow").job_id
    (tid,) = client.add_tasks(job, ["SLEEP=20 slow"])
    started = time.monotonic()
    with pytest.raises(orca.WaitTimeout) as e:
        client.wait(job, timeout=1.0)
    assert 0.9 <= time.monotonic() - started < 5
    assert isinstance(e.value, TimeoutError)
    assert e.value.status is not None and e.value.status.total_tasks == 1
    assert client.get_task(tid).state in (types_pb2.TASK_STATE_PENDING, types_pb2.TASK_STATE_IN_PROGRESS)
    client.cancel_job(job)


def test_the_client_is_safe_to_share_between_threads(client: orca.Client) -> None:
    job = client.create_job("threads").job_id
    errors: list = []

    def add(i: int) -> None:
        try:
            client.add_tasks(job, [f"thread {i}"])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert client.wait(job, timeout=60).completed == 8


def test_unreachable_coordinator_is_unavailable() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with orca.Client(f"http://127.0.0.1:{port}") as c:
        with pytest.raises(orca.Unavailable) as e:
            c.get_job("x")
    assert e.value.transient


def test_proxy_variables_are_not_used(cluster, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    for var in ("http_proxy", "https_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with cluster.client() as c:
        assert c.create_job("no proxy").description == "no proxy"
