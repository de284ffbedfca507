"""Scheduling controls: a job's weight, max_running, budget and pause (CreateJob, UpdateJob),
a task's run_at (TaskSpec.run_at, `task_spec`'s ``run_at``/``delay``) and recurring jobs
(CreateSchedule, ListSchedules, DeleteSchedule), sync, async and through the compat module,
against a coordinator of this module's own with one worker (a schedule firing every second
must not crowd the shared cluster). The conversions of ``run_at``/``delay`` and the local
checks of the request builders are tested without a cluster."""

from __future__ import annotations

import asyncio
import datetime
import math
import time
from typing import Any, Iterator, List, Optional, Tuple

import pytest
from google.protobuf import timestamp_pb2

import orca
from orca.client import create_job_request, create_schedule_request, update_job_request
from orca.v1 import orchestrator_pb2, types_pb2
from orchestrator import ClaudeOrchestrator

from conftest import Cluster, until

UTC = datetime.timezone.utc
#: How long a paused job's tasks are watched staying pending while the worker is free.
HOLD_SECONDS = 2.0
#: Bound on a schedule ticking every second creating its first job.
SCHEDULE_SECONDS = 30.0
#: Bound on a small job finishing.
WAIT_SECONDS = 90.0


# --- run_at / delay in task_spec (no cluster) ---


def ts_seconds(ts: timestamp_pb2.Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


@pytest.fixture
def eastern(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC-5 (a POSIX TZ string: no tz database needed) for the test."""
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is not available on this platform")
    monkeypatch.setenv("TZ", "EST5")
    time.tzset()
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


def test_run_at_is_unset_by_default() -> None:
    assert not orca.task_spec("now").HasField("run_at")


def test_run_at_accepts_a_unix_time_in_seconds() -> None:
    spec = orca.task_spec("later", run_at=1_700_000_000.25)
    assert (spec.run_at.seconds, spec.run_at.nanos) == (1_700_000_000, 250_000_000)
    assert spec.run_at.ToMilliseconds() == 1_700_000_000_250
    whole = orca.task_spec("later", run_at=1_700_000_000)
    assert (whole.run_at.seconds, whole.run_at.nanos) == (1_700_000_000, 0)
    # A fraction that rounds up to a whole second carries into the seconds.
    edge = orca.to_timestamp(1.9999999999)
    assert (edge.seconds, edge.nanos) == (2, 0)


def test_run_at_accepts_an_aware_datetime_exactly() -> None:
    when = datetime.datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    spec = orca.task_spec("later", run_at=when)
    assert spec.run_at.seconds == int(when.timestamp())
    assert spec.run_at.nanos == 678_901_000
    assert spec.run_at.ToDatetime(tzinfo=UTC) == when
    # The same instant in another zone gives the same timestamp.
    plus2 = when.astimezone(datetime.timezone(datetime.timedelta(hours=2)))
    assert orca.to_timestamp(plus2) == spec.run_at


def test_a_naive_datetime_is_local_time_as_datetime_timestamp_takes_it(eastern: None) -> None:
    naive = datetime.datetime(2030, 1, 1, 12, 0, 0, 500000)
    ts = orca.to_timestamp(naive)
    # 12:00 at UTC-5 is 17:00 UTC, not 12:00 UTC.
    assert ts.ToDatetime(tzinfo=UTC) == datetime.datetime(2030, 1, 1, 17, 0, 0, 500000, tzinfo=UTC)
    assert ts_seconds(ts) == pytest.approx(naive.timestamp(), abs=1e-6)
    # datetime.now() and datetime.now(timezone.utc) name the same instant.
    assert ts_seconds(orca.to_timestamp(datetime.datetime.now())) == pytest.approx(
        ts_seconds(orca.to_timestamp(datetime.datetime.now(UTC))), abs=1.0
    )


def test_run_at_accepts_a_timestamp_as_a_copy() -> None:
    ts = timestamp_pb2.Timestamp(seconds=1_800_000_000, nanos=5)
    spec = orca.task_spec("later", run_at=ts)
    assert spec.run_at == ts
    ts.seconds = 1
    assert spec.run_at.seconds == 1_800_000_000


def test_delay_is_seconds_from_now() -> None:
    before = time.time()
    spec = orca.task_spec("later", delay=2.5)
    after = time.time()
    at = ts_seconds(spec.run_at)
    assert before + 2.5 - 1e-6 <= at <= after + 2.5 + 1e-6
    now = orca.task_spec("now-ish", delay=0)
    assert now.HasField("run_at") and abs(ts_seconds(now.run_at) - time.time()) < 5


def test_run_at_and_delay_are_refused_together_and_when_malformed() -> None:
    with pytest.raises(ValueError, match=r"^run_at: give run_at or delay, not both"):
        orca.task_spec("x", run_at=time.time(), delay=1)
    with pytest.raises(TypeError, match=r"^run_at: expected a datetime, a unix time in seconds or a Timestamp"):
        orca.task_spec("x", run_at="tomorrow")  # type: ignore[arg-type,unused-ignore]
    with pytest.raises(TypeError, match=r"^run_at:"):
        orca.task_spec("x", run_at=True)
    with pytest.raises(TypeError, match=r"^run_at: expected a datetime \(with a time of day\), got a date"):
        orca.task_spec("x", run_at=datetime.date(2030, 1, 1))  # type: ignore[arg-type,unused-ignore]
    for bad in (-1, -0.5, math.nan, math.inf, 1e20):
        with pytest.raises(ValueError, match=r"^run_at: must be a unix time in seconds"):
            orca.task_spec("x", run_at=bad)
    with pytest.raises(ValueError, match=r"^run_at: must not be before 1970"):
        orca.task_spec("x", run_at=datetime.datetime(1969, 12, 31, 23, 59, tzinfo=UTC))
    with pytest.raises(TypeError, match=r"^delay: expected a number of seconds"):
        orca.task_spec("x", delay="5")  # type: ignore[arg-type]
    for bad_delay in (-1, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"^delay: must be a finite number of seconds >= 0"):
            orca.task_spec("x", delay=bad_delay)


def test_run_at_and_delay_in_a_batch_of_dicts() -> None:
    from orca._specs import task_specs

    at, later = task_specs([{"prompt": "a", "run_at": 1_700_000_000}, {"prompt": "b", "delay": 60}])
    assert at.run_at.seconds == 1_700_000_000
    assert ts_seconds(later.run_at) == pytest.approx(time.time() + 60, abs=5)
    with pytest.raises(ValueError, match=r"^tasks\[1\]\.run_at: give run_at or delay, not both"):
        task_specs(["ok", {"prompt": "b", "run_at": 1, "delay": 1}])
    with pytest.raises(ValueError, match=r"^tasks\[0\]\.delay: must be"):
        task_specs([{"prompt": "b", "delay": -3}])


# --- request builders (no cluster) ---


def test_create_job_request_carries_the_scheduling_controls() -> None:
    plain = create_job_request("d", None, "")
    assert (plain.weight, plain.max_running, plain.budget_usd) == (0, 0, 0.0)
    req = create_job_request("d", {"k": "v"}, "rid", weight=2, max_running=3, budget_usd=1.5)
    assert (req.weight, req.max_running, req.budget_usd, req.request_id) == (2, 3, 1.5, "rid")
    with pytest.raises(TypeError, match=r"^weight: expected an int"):
        create_job_request("d", None, "", weight=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^max_running: must be between 0 and"):
        create_job_request("d", None, "", max_running=-1)
    with pytest.raises(ValueError, match=r"^budget_usd: must be a finite amount >= 0"):
        create_job_request("d", None, "", budget_usd=-0.01)
    with pytest.raises(TypeError, match=r"^budget_usd:"):
        create_job_request("d", None, "", budget_usd="5")  # type: ignore[arg-type]


def test_update_job_request_sets_only_the_given_fields() -> None:
    req = update_job_request("j", None, 0, None, True)
    assert req.job_id == "j"
    assert not req.HasField("weight") and not req.HasField("budget_usd")
    assert req.HasField("max_running") and req.max_running == 0, "0 is sent: it removes the limit"
    assert req.HasField("paused") and req.paused
    resumed = update_job_request("j", None, None, None, False)
    assert resumed.HasField("paused") and not resumed.paused
    # weight 0 is the coordinator's to refuse (its message names the field).
    assert update_job_request("j", 0, None, None, None).HasField("weight")
    with pytest.raises(ValueError, match=r"^update_job: nothing to change"):
        update_job_request("j", None, None, None, None)
    with pytest.raises(TypeError, match=r"^paused: expected a bool"):
        update_job_request("j", None, None, None, 1)  # type: ignore[arg-type]


def test_update_job_without_a_change_is_refused_before_connecting() -> None:
    with orca.Client("http://127.0.0.1:1") as c:
        with pytest.raises(ValueError, match="nothing to change"):
            c.update_job("some-job")


def test_create_schedule_request_holds_the_job_template_and_tasks() -> None:
    req = create_schedule_request(
        "nightly", "0 3 * * *", ["a", {"prompt": "b", "depends_on": [-1]}], "desc", {"k": 1}, 2, 1, 3.0, True
    )
    assert isinstance(req, orchestrator_pb2.CreateScheduleRequest)
    assert (req.name, req.cron, req.replace) == ("nightly", "0 3 * * *", True)
    assert (req.job.description, req.job.weight, req.job.max_running, req.job.budget_usd) == ("desc", 2, 1, 3.0)
    assert orca.from_struct(req.job.metadata) == {"k": 1.0}
    assert [t.prompt for t in req.tasks] == ["a", "b"] and list(req.tasks[1].depends_on) == [-1]
    with pytest.raises(TypeError, match=r"^cron: expected a string"):
        create_schedule_request("n", 5, ["a"], "", None, 0, 0, 0.0, False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^tasks\[0\]: unknown field 'prio'"):
        create_schedule_request("n", "* * * * *", [{"prompt": "a", "prio": 1}], "", None, 0, 0, 0.0, False)


# --- against a coordinator ---


@pytest.fixture(scope="module")
def sched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A coordinator and one worker of two slots, returned once the worker is connected."""
    c = Cluster(tmp_path_factory.mktemp("sched"))
    try:
        c.start()
        c.add_worker("sched-w", slots=2)
        with c.client() as probe:
            until("the worker to connect", lambda: any(w.connected for w in probe.list_workers()))
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def sc(sched: Cluster) -> Iterator[orca.Client]:
    with sched.client() as c:
        yield c


def free_worker(c: orca.Client) -> orchestrator_pb2.WorkerInfo:
    """The connected, not draining worker (bounded wait)."""
    found: List[orchestrator_pb2.WorkerInfo] = until(
        "a connected worker",
        lambda: [w for w in c.list_workers() if w.connected and not w.draining],
    )
    return found[0]


def test_create_job_with_weight_and_max_running_then_pause_and_resume(sc: orca.Client) -> None:
    job = sc.create_job("weighted, one at a time", weight=2, max_running=1)
    assert (job.weight, job.max_running, job.paused) == (2, 1, False)
    got = sc.get_job(job.job_id)
    assert isinstance(got, orca.Job)
    assert (got.weight, got.max_running, got.paused) == (2, 1, False)
    assert "paused" not in got.status.blocked_reason

    paused = sc.update_job(job.job_id, paused=True)
    assert paused.paused
    assert "paused" in paused.status.blocked_reason, paused.status
    assert (paused.weight, paused.max_running) == (2, 1), "the fields not given keep their value"
    assert sc.get_job(job.job_id).paused

    worker = free_worker(sc)
    ids = sc.add_tasks(job.job_id, ["SLEEP=1 held one", "SLEEP=1 held two"])
    deadline = time.monotonic() + HOLD_SECONDS
    while time.monotonic() < deadline:
        st = sc.get_job(job.job_id).status
        assert (st.pending, st.in_progress, st.completed, st.failed) == (2, 0, 0, 0), st
        assert "paused" in st.blocked_reason, st
        assert sc.get_stats().slots_free >= 1, "the worker is free, the job is held back"
        time.sleep(0.2)
    assert all(sc.get_task(t).state == types_pb2.TASK_STATE_PENDING for t in ids)
    assert worker.worker_id in {w.worker_id for w in sc.list_workers() if w.connected}

    resumed = sc.resume_job(job.job_id)
    assert not resumed.paused
    assert "paused" not in resumed.status.blocked_reason
    status = sc.wait(job.job_id, timeout=WAIT_SECONDS)
    assert (status.total_tasks, status.completed) == (2, 2)

    # max_running=1: the second attempt started only after the first one ended.
    attempts = sorted((a for t in ids for a in sc.get_task(t).history), key=lambda a: a.started_ms)
    assert len(attempts) == 2
    assert attempts[1].started_ms >= attempts[0].ended_ms, [(a.started_ms, a.ended_ms) for a in attempts]


def test_update_job_changes_only_the_given_fields(sc: orca.Client) -> None:
    job = sc.create_job("controls", weight=3, max_running=2, budget_usd=1.5)
    assert (job.weight, job.max_running, job.budget_usd) == (3, 2, 1.5)
    job = sc.update_job(job.job_id, weight=7)
    assert (job.weight, job.max_running, job.budget_usd, job.paused) == (7, 2, 1.5, False)
    job = sc.update_job(job.job_id, max_running=0, budget_usd=0)
    assert (job.weight, job.max_running, job.budget_usd) == (7, 0, 0.0), "0 removes the limit and the budget"
    job = sc.pause_job(job.job_id)
    assert job.paused and job.weight == 7
    got = sc.get_job(job.job_id)
    assert (got.weight, got.max_running, got.budget_usd, got.paused) == (7, 0, 0.0, True)
    assert not sc.resume_job(job.job_id).paused


def test_run_at_keeps_tasks_waiting_until_their_time(sc: orca.Client) -> None:
    free_worker(sc)
    job = sc.create_job("run at").job_id
    run_at = time.time() + 2
    ids = sc.add_tasks(
        job,
        [
            orca.task_spec("at a unix time", run_at=run_at),
            {"prompt": "after a delay", "delay": 2},
            orca.task_spec("at an aware datetime", run_at=datetime.datetime.now(UTC) + datetime.timedelta(seconds=2)),
        ],
    )
    due = {}
    for tid in ids:
        t = sc.get_task(tid)
        assert t.state == types_pb2.TASK_STATE_WAITING, (tid, orca.state_name(t.state))
        assert t.spec.HasField("run_at")
        due[tid] = t.spec.run_at.ToMilliseconds()
    assert abs(due[ids[0]] - run_at * 1000) <= 1

    status = sc.wait(job, timeout=WAIT_SECONDS)
    assert (status.total_tasks, status.completed) == (3, 3)
    for tid in ids:
        t = sc.get_task(tid)
        assert t.state == types_pb2.TASK_STATE_COMPLETED
        assert t.updated_at_ms >= due[tid], (tid, t.updated_at_ms, due[tid])
        assert t.history and t.history[0].started_ms >= due[tid], (tid, t.history[0].started_ms, due[tid])


def fired(c: orca.Client, name: str, description: str) -> Optional[Tuple[List[types_pb2.Job], Any]]:
    """The jobs the schedule made and the schedule, once it shows a last job."""
    schedule = {s.name: s for s in c.list_schedules()}.get(name)
    jobs = [j for j in c.list_jobs() if j.description == description]
    if schedule is None or not schedule.last_job_id or not jobs:
        return None
    return jobs, schedule


def test_a_schedule_every_second_creates_jobs_until_deleted(sc: orca.Client) -> None:
    name, description = "every-second", "made by the every-second schedule"
    s = sc.create_schedule(
        name, "* * * * * *", ["scheduled ping"], description=description, metadata={"from": "schedule"}, max_running=1
    )
    try:
        assert isinstance(s, orca.Schedule)
        assert (s.name, s.cron) == (name, "* * * * * *")
        assert (s.job.description, s.job.max_running) == (description, 1)
        assert [t.prompt for t in s.tasks] == ["scheduled ping"]
        assert s.next_run_ms > 0 and s.created_at_ms > 0

        listed = {x.name: x for x in sc.list_schedules()}
        assert name in listed and listed[name].next_run_ms > 0
        with pytest.raises(orca.AlreadyExists):
            sc.create_schedule(name, "* * * * * *", ["again"])

        jobs, schedule = until(
            "the schedule to create a job", lambda: fired(sc, name, description), timeout=SCHEDULE_SECONDS
        )
        assert schedule.last_job_id in {j.job_id for j in jobs}
        assert schedule.last_run_ms > 0
        made = sc.get_job(schedule.last_job_id)
        assert made.description == description and made.max_running == 1
        assert orca.from_struct(made.metadata).get("from") == "schedule"
        assert made.status.total_tasks == 1, "the template's tasks come with the job"

        yearly = sc.create_schedule(name, "0 0 1 1 *", ["yearly"], description=description, replace=True)
        assert yearly.cron == "0 0 1 1 *" and [t.prompt for t in yearly.tasks] == ["yearly"]
        assert yearly.next_run_ms > int(time.time() * 1000)
    finally:
        sc.delete_schedule(name)
    assert sc.list_schedules() == []
    with pytest.raises(orca.NotFound):
        sc.delete_schedule(name)
    with pytest.raises(orca.NotFound):
        sc.delete_schedule("no-such-schedule")


def test_a_malformed_cron_is_refused(sc: orca.Client) -> None:
    with pytest.raises(orca.InvalidArgument, match="cron"):
        sc.create_schedule("bad-cron", "every now and then", ["x"])
    assert "bad-cron" not in {s.name for s in sc.list_schedules()}


def test_update_job_refusals(sc: orca.Client) -> None:
    with pytest.raises(orca.NotFound):
        sc.update_job("no-such-job", paused=True)
    job = sc.create_job("bad controls").job_id
    with pytest.raises(orca.InvalidArgument, match="weight"):
        sc.update_job(job, weight=0)
    with pytest.raises(orca.InvalidArgument, match="weight"):
        sc.update_job(job, weight=1001)
    with pytest.raises(orca.InvalidArgument, match="weight"):
        sc.create_job("too heavy", weight=1001)


def test_async_scheduling_calls(sched: Cluster) -> None:
    async def body(c: orca.AsyncClient) -> None:
        job = await c.create_job("async controls", weight=3, max_running=2)
        assert (job.weight, job.max_running) == (3, 2)
        assert (await c.pause_job(job.job_id)).paused
        assert "paused" in (await c.get_job(job.job_id)).status.blocked_reason
        updated = await c.update_job(job.job_id, max_running=1, paused=False)
        assert (updated.weight, updated.max_running, updated.paused) == (3, 1, False)
        assert not (await c.resume_job(job.job_id)).paused
        with pytest.raises(orca.NotFound):
            await c.update_job("no-such-job", weight=2)

        s = await c.create_schedule("async-yearly", "0 0 1 1 *", ["yearly"], description="async schedule")
        try:
            assert s.name == "async-yearly" and s.next_run_ms > 0
            assert "async-yearly" in {x.name for x in await c.list_schedules()}
        finally:
            await c.delete_schedule("async-yearly")
        assert "async-yearly" not in {x.name for x in await c.list_schedules()}
        with pytest.raises(orca.NotFound):
            await c.delete_schedule("async-yearly")

    async def main() -> None:
        async with orca.AsyncClient(sched.url, **sched.client_kwargs()) as c:  # type: ignore[arg-type]
            await asyncio.wait_for(body(c), 60)

    asyncio.run(main())


def test_compat_create_job_passes_the_scheduling_controls(sched: Cluster, sc: orca.Client) -> None:
    with ClaudeOrchestrator("sched_orch", coordinator=sched.url, show_progress=False) as orch:
        plain = orch.create_job("as the guide calls it")
        controlled = orch.create_job("with controls", weight=4, max_running=2, budget_usd=2.5)
    assert sc.get_job(plain).max_running == 0
    got = sc.get_job(controlled)
    assert (got.weight, got.max_running, got.budget_usd) == (4, 2, 2.5)
    assert orca.from_struct(got.metadata)["orchestrator_id"] == "sched_orch"
