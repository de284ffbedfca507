"""watch_job across a coordinator restart: SIGTERM the coordinator while tasks run, start it
again on the same address and database; the watch reconnects, resumes, misses nothing,
repeats nothing and sees the job finish."""

from __future__ import annotations

import time

import orca
from orca.v1 import orchestrator_pb2, types_pb2

SNAP = orchestrator_pb2.JOB_EVENT_KIND_SNAPSHOT


def test_watch_resumes_across_a_coordinator_restart(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c = make_cluster("restart").start()
    c.add_worker(slots=2)
    port = c.addr
    with c.client() as client:
        job = client.create_job("survives a restart").job_id
        ids = client.add_tasks(job, ["SLEEP=2 long one", "SLEEP=2 long two", {"prompt": "after both", "depends_on": [-1, -2]}])
        events = []
        restarted_at = None
        running = set()
        started = time.monotonic()
        for ev in client.watch_job(job):
            events.append(ev)
            if ev.kind == SNAP:
                running |= {t.task_id for t in ev.tasks if t.state == types_pb2.TASK_STATE_IN_PROGRESS}
            elif ev.state == types_pb2.TASK_STATE_IN_PROGRESS:
                running.add(ev.task_id)
            if restarted_at is None and running >= set(ids[:2]):
                assert c.stop_coordinator() == 0, "SIGTERM: a clean exit"
                c.start()
                assert c.addr == port, "the same address"
                restarted_at = len(events)
            assert time.monotonic() - started < 60, "the watch is stuck"
        assert restarted_at is not None, "both long tasks were seen running"
        after = events[restarted_at:]
        assert after, "events arrived after the restart"
        final = events[-1]
        assert final.status.completed == 3 and final.job_state == types_pb2.JOB_STATE_COMPLETED
        assert all(client.get_task(t).state == types_pb2.TASK_STATE_COMPLETED for t in ids)

    # No duplicates and no gaps: between snapshots, sequence numbers go up by one; a snapshot
    # (the coordinator's fresh one after the restart) covers everything up to its own seq.
    last = None
    for ev in events:
        if ev.kind == SNAP:
            assert last is None or ev.seq >= last, "a snapshot never goes back"
            last = ev.seq
            continue
        assert last is not None and ev.seq == last + 1, f"event {ev.seq} after {last}"
        last = ev.seq
    completed = {e.task_id for e in events if e.kind != SNAP and e.state == types_pb2.TASK_STATE_COMPLETED}
    completed |= {t.task_id for e in after if e.kind == SNAP for t in e.tasks if t.state == types_pb2.TASK_STATE_COMPLETED}
    assert completed == set(ids), "every completion was seen, as an event or in the resumed snapshot"
