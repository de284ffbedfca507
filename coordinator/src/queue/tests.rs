//! Table-driven tests of the state machine and property tests of invariants 2-6 of
//! docs/design.md, with the graph shapes at the contract's limits.

use super::*;
use proptest::prelude::*;

const JOB: &str = "job-1";

fn job() -> JobId {
    JobId::from(JOB)
}

fn task(id: i64) -> NewTask {
    NewTask {
        id: TaskId(id),
        priority: 5,
        deps: vec![],
        labels: Labels::new(),
        max_retries: 0,
        retry: RetryPolicy { initial_ms: 100, multiplier: 2.0, max_ms: 1_000 },
        payload: Some(Arc::from(&b"spec"[..])),
        git_chain: false,
        run_at_ms: 0,
    }
}

fn sched() -> Scheduler {
    let mut s = Scheduler::new(Limits {
        lease_ms: 1_000,
        max_lease_losses: 3,
        forget_worker_ms: 60_000,
        payload_cache_bytes: 1 << 20,
    });
    s.insert_job(job(), Counts::default(), false, 0);
    s
}

fn worker(s: &mut Scheduler, name: &str, slots: u32) -> WorkerId {
    let w = WorkerId::from(name);
    s.register(w.clone(), Labels::new(), slots, &[], 0);
    s.connect(&w, 1, 0).unwrap();
    w
}

fn add(s: &mut Scheduler, tasks: Vec<NewTask>) -> Vec<Effect> {
    let stored = HashMap::new();
    s.check_add(&job(), &tasks, &stored).unwrap();
    s.add_tasks(&job(), tasks, &stored)
}

fn state(s: &Scheduler, id: i64) -> State {
    s.task(TaskId(id)).unwrap().state
}

fn assigned(fx: &[Effect]) -> Vec<(String, i64, u32)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Assign { worker, id, attempt, .. } => Some((worker.to_string(), id.0, *attempt)),
            _ => None,
        })
        .collect()
}

/// Runs `f` on a thread with a small stack: a graph walk that recursed per task would
/// overflow it long before the contract's limits.
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new().stack_size(128 << 10).spawn(f).unwrap().join().unwrap();
}

#[test]
fn cancelling_the_head_of_a_chain_at_the_batch_limit_cancels_it_all() {
    on_small_stack(|| {
        let n = orca_proto::contract::limits::MAX_BATCH as i64;
        let mut s = sched();
        add(&mut s, chain_from(1, n));
        let fx = s.cancel_task(TaskId(1), "stop").unwrap();
        assert_eq!(fx.len(), n as usize);
        assert_eq!(s.job(&job()).unwrap().counts.cancelled, n as u64);
        let last = s.task(TaskId(n)).unwrap();
        assert_eq!((last.state, last.cancel_cause), (State::Cancelled, Some(TaskId(1))));
        assert_eq!(last.reason, format!("dependency {} cancelled", n - 1));
        s.check_invariants();
    });
}

#[test]
fn a_failed_head_cancels_a_long_chain_without_recursion() {
    on_small_stack(|| {
        let n = orca_proto::contract::limits::MAX_BATCH as i64;
        let mut s = sched();
        add(&mut s, chain_from(1, n));
        let w = worker(&mut s, "w1", 1);
        s.dispatch(0);
        let failed = Outcome::Failed { reason: "boom".into(), retryable: false };
        s.report(&w, TaskId(1), 1, failed, 1).unwrap();
        let c = s.job(&job()).unwrap().counts;
        assert_eq!((c.failed, c.cancelled), (1, n as u64 - 1));
        s.check_invariants();
    });
}

#[test]
fn wide_fan_in_and_fan_out_at_the_limits_settle_exactly() {
    let deps = orca_proto::contract::limits::MAX_DEPENDENCIES as i64;
    let mut s = sched();
    // `deps` roots, then 100 tasks that each depend on every root (a diamond at the edge
    // limit of one batch).
    let mut tasks: Vec<NewTask> = (1..=deps).map(task).collect();
    let all: Vec<TaskId> = (1..=deps).map(TaskId).collect();
    tasks.extend((deps + 1..=deps + 100).map(|i| NewTask { deps: all.clone(), ..task(i) }));
    add(&mut s, tasks);
    assert_eq!(s.task(TaskId(1)).unwrap().dependents.len(), 100);
    let w = worker(&mut s, "w1", deps as u32);
    s.dispatch(0);
    for i in 1..deps {
        s.report(&w, TaskId(i), 1, Outcome::Completed, 1).unwrap();
    }
    assert_eq!(s.task(TaskId(deps + 1)).unwrap().unmet, 1);
    s.report(&w, TaskId(deps), 1, Outcome::Completed, 1).unwrap();
    assert!((deps + 1..=deps + 100).all(|i| state(&s, i) == State::Pending));
    s.check_invariants();
}

#[test]
fn idle_workers_are_forgotten_and_busy_ones_kept() {
    let mut s = sched();
    add(&mut s, vec![task(1)]);
    let busy = worker(&mut s, "busy", 1);
    s.dispatch(0);
    let idle = worker(&mut s, "idle", 1);
    s.disconnect(&idle, 1, 10);
    s.disconnect(&busy, 1, 10);
    // Within the time to forget, a disconnected worker is remembered.
    s.tick(10);
    assert!(s.worker(&idle).is_some());
    s.heartbeat(&busy, &[(TaskId(1), 1)], 20).unwrap_err();
    s.tick(60_000 + 10);
    assert!(s.worker(&idle).is_none(), "an idle worker past the limit is forgotten");
    // The busy one held an attempt until its lease expired in this tick; it goes next time.
    assert!(s.worker(&busy).is_some());
    s.tick(2 * 60_000 + 10);
    assert!(s.worker(&busy).is_none());
    s.check_invariants();
}

#[test]
fn a_new_label_set_reaches_workers_registered_before_it() {
    let mut s = sched();
    let gpu = WorkerId::from("gpu");
    s.register(gpu.clone(), [("gpu".to_string(), "a100".to_string())].into(), 1, &[], 0);
    s.connect(&gpu, 1, 0).unwrap();
    let plain = worker(&mut s, "plain", 1);
    let needs = |id| NewTask { labels: [("gpu".to_string(), "a100".to_string())].into(), ..task(id) };
    add(&mut s, vec![needs(1), needs(2)]);
    let fx = s.dispatch(0);
    assert_eq!(assigned(&fx), vec![("gpu".into(), 1, 1)]);
    assert!(s.worker(&plain).unwrap().held.is_empty());
    s.check_invariants();
}

#[test]
fn payloads_past_the_budget_stay_in_the_store_and_assignments_say_so() {
    let mut s = Scheduler::new(Limits { payload_cache_bytes: 10, ..Limits::default() });
    s.insert_job(job(), Counts::default(), false, 0);
    let with = |id, bytes: usize| NewTask { payload: Some(Arc::from(vec![1u8; bytes])), ..task(id) };
    add(&mut s, vec![with(1, 6), with(2, 6), with(3, 4)]);
    let cached: Vec<bool> = (1..=3).map(|i| s.task(TaskId(i)).unwrap().payload.is_some()).collect();
    assert_eq!(cached, vec![true, false, true], "the second would pass the budget");
    s.check_invariants();
    worker(&mut s, "w1", 3);
    let fx = s.dispatch(0);
    let payloads: Vec<(i64, Option<usize>)> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Assign { id, payload, .. } => Some((id.0, payload.as_ref().map(|p| p.len()))),
            _ => None,
        })
        .collect();
    assert_eq!(payloads, vec![(1, Some(6)), (2, None), (3, Some(4))]);
    // Handed to the workers: nothing stays cached.
    assert!((1..=3).all(|i| s.task(TaskId(i)).unwrap().payload.is_none()));
    s.check_invariants();
}

#[test]
fn a_retry_goes_to_another_worker_when_one_is_free_and_to_the_same_one_otherwise() {
    let mut s = sched();
    add(&mut s, vec![NewTask { max_retries: 2, ..task(1) }]);
    let w1 = worker(&mut s, "w1", 1);
    assert_eq!(assigned(&s.dispatch(0)), vec![("w1".into(), 1, 1)]);
    let failed = || Outcome::Failed { reason: "agent crashed".into(), retryable: true };
    s.report(&w1, TaskId(1), 1, failed(), 10).unwrap();
    // Both free after the backoff: w1 comes first in the round but passes it to w2.
    let w2 = worker(&mut s, "w2", 1);
    s.tick(10_000);
    s.check_invariants();
    assert_eq!(assigned(&s.dispatch(10_000)), vec![("w2".into(), 1, 2)]);
    // Failed on w2 too, and w2 is the only free worker: it runs there again.
    s.report(&w2, TaskId(1), 2, failed(), 10_001).unwrap();
    s.disconnect(&w1, 1, 10_001);
    s.tick(20_000);
    assert_eq!(assigned(&s.dispatch(20_000)), vec![("w2".into(), 1, 3)]);
    s.check_invariants();
}

#[test]
fn a_passed_over_task_does_not_hold_back_the_tasks_behind_it() {
    let mut s = sched();
    add(&mut s, vec![task(1), task(2)]);
    let w1 = worker(&mut s, "w1", 1);
    s.dispatch(0);
    s.report(&w1, TaskId(1), 1, Outcome::HandedBack { reason: "shutting down".into() }, 1).unwrap();
    let w2 = worker(&mut s, "w2", 1);
    s.disconnect(&w2, 1, 1);
    s.connect(&w2, 2, 1).unwrap();
    // w1 passes task 1 over (w2 is free) and takes task 2; w2 takes task 1.
    let mut got = assigned(&s.dispatch(2));
    got.sort();
    assert_eq!(got, vec![("w1".into(), 2, 1), ("w2".into(), 1, 2)]);
    s.check_invariants();
}

#[test]
fn new_task_without_dependencies_is_pending_then_leased() {
    let mut s = sched();
    let fx = add(&mut s, vec![task(1)]);
    assert_eq!(state(&s, 1), State::Pending);
    assert!(matches!(fx[0], Effect::Changed { from: None, to: State::Waiting, .. }));
    let w = worker(&mut s, "w1", 1);
    let fx = s.dispatch(10);
    assert_eq!(assigned(&fx), vec![("w1".into(), 1, 1)]);
    assert_eq!(state(&s, 1), State::InProgress);
    assert_eq!(s.task(TaskId(1)).unwrap().lease, Some(Lease { worker: w, expires_ms: 1_010 }));
    s.check_invariants();
}

#[test]
fn transitions_follow_the_table() {
    // (outcome, max_retries, expected state after the report)
    let cases = [
        (Outcome::Completed, 0, State::Completed),
        (Outcome::Failed { reason: "x".into(), retryable: true }, 0, State::Failed),
        (Outcome::Failed { reason: "x".into(), retryable: true }, 1, State::Waiting),
        (Outcome::Failed { reason: "x".into(), retryable: false }, 3, State::Failed),
        (Outcome::HandedBack { reason: "shutdown".into() }, 0, State::Pending),
        (Outcome::Started, 0, State::InProgress),
        (Outcome::Progress("half".into()), 0, State::InProgress),
    ];
    for (outcome, retries, expected) in cases {
        let mut s = sched();
        let mut t = task(1);
        t.max_retries = retries;
        add(&mut s, vec![t]);
        let w = worker(&mut s, "w1", 1);
        s.dispatch(0);
        s.report(&w, TaskId(1), 1, outcome.clone(), 5).unwrap();
        assert_eq!(state(&s, 1), expected, "{outcome:?} with {retries} retries");
        s.check_invariants();
    }
}

#[test]
fn stale_attempt_reports_are_rejected() {
    let mut s = sched();
    add(&mut s, vec![task(1)]);
    let w1 = worker(&mut s, "w1", 1);
    s.dispatch(0);
    // The lease expires: the task goes back to pending, attempt 1 is fenced off.
    s.tick(1_000);
    assert_eq!(state(&s, 1), State::Pending);
    let w2 = worker(&mut s, "w2", 1);
    s.disconnect(&w1, 1, 0);
    let fx = s.dispatch(1_001);
    assert_eq!(assigned(&fx), vec![("w2".into(), 1, 2)]);
    let err = s.report(&w1, TaskId(1), 1, Outcome::Completed, 1_002).unwrap_err();
    assert!(matches!(err, Refusal::FailedPrecondition(ref m) if m.contains("stale")), "{err}");
    // The right attempt from the wrong worker is refused too.
    assert!(s.report(&w1, TaskId(1), 2, Outcome::Completed, 1_002).is_err());
    s.report(&w2, TaskId(1), 2, Outcome::Completed, 1_003).unwrap();
    assert_eq!(state(&s, 1), State::Completed);
    // Reports after completion are stale as well: no task succeeds twice.
    assert!(s.report(&w2, TaskId(1), 2, Outcome::Completed, 1_004).is_err());
}

#[test]
fn expired_leases_requeue_with_next_attempt_then_dead_letter() {
    let mut s = sched();
    add(&mut s, vec![task(1)]);
    let w = worker(&mut s, "w1", 1);
    let mut now = 0;
    for attempt in 1..=3 {
        let fx = s.dispatch(now);
        assert_eq!(assigned(&fx), vec![("w1".into(), 1, attempt)]);
        now += 1_000;
        s.tick(now);
        s.check_invariants();
        // The worker comes back to life (its heartbeat clears the suspicion).
        s.heartbeat(&w, &[], now).unwrap();
    }
    let e = s.task(TaskId(1)).unwrap();
    assert_eq!(e.state, State::Failed);
    assert!(e.reason.contains("3 attempts lost"), "{}", e.reason);
}

#[test]
fn worker_that_let_a_lease_expire_gets_no_work_until_it_heartbeats() {
    let mut s = sched();
    add(&mut s, vec![task(1), task(2)]);
    // A worker cut off from the coordinator: its stream still looks open, but it stopped
    // heartbeating and its lease expired.
    let cut = worker(&mut s, "a-cut", 2);
    assert_eq!(assigned(&s.dispatch(0)).len(), 2);
    s.tick(1_000);
    assert_eq!((state(&s, 1), state(&s, 2)), (State::Pending, State::Pending));
    assert!(assigned(&s.dispatch(1_000)).is_empty(), "no new work for a suspect worker");
    let b = worker(&mut s, "b-live", 2);
    let fx = s.dispatch(1_001);
    assert_eq!(assigned(&fx), vec![(b.to_string(), 1, 2), (b.to_string(), 2, 2)]);
    s.report(&b, TaskId(1), 2, Outcome::Completed, 1_002).unwrap();
    add(&mut s, vec![task(3)]);
    // Its next heartbeat (stale attempts named) clears the suspicion.
    let (stale, _) = s.heartbeat(&cut, &[(TaskId(1), 1)], 1_003).unwrap();
    assert_eq!(stale, vec![(TaskId(1), 1)]);
    s.disconnect(&b, 1, 0);
    let fx = s.dispatch(1_004);
    assert_eq!(assigned(&fx), vec![(cut.to_string(), 3, 1)]);
    s.check_invariants();
}

#[test]
fn attempts_a_worker_does_not_name_when_it_registers_again_run_again_at_once() {
    let mut s = sched();
    add(&mut s, vec![task(1), task(2)]);
    let w = worker(&mut s, "w1", 2);
    s.dispatch(0);
    // The worker restarted with the same id and runs only task 1 now.
    let (stale, fx) = s.register(w.clone(), Labels::new(), 2, &[(TaskId(1), 1)], 0);
    assert!(stale.is_empty());
    assert!(matches!(&fx[..], [Effect::Changed { id: TaskId(2), to: State::Pending, .. }]), "{fx:?}");
    let e = s.task(TaskId(2)).unwrap();
    assert_eq!((e.lost_leases, e.lease.is_none()), (1, true));
    // It is not suspect: it gets the task again, as attempt 2.
    assert_eq!(assigned(&s.dispatch(1)), vec![("w1".into(), 2, 2)]);
    s.check_invariants();
}

#[test]
fn heartbeats_extend_leases_only_with_an_open_stream() {
    let mut s = sched();
    add(&mut s, vec![task(1)]);
    let w = worker(&mut s, "w1", 1);
    s.dispatch(0);
    let (stale, expires) = s.heartbeat(&w, &[(TaskId(1), 1), (TaskId(9), 1)], 900).unwrap();
    assert_eq!(stale, vec![(TaskId(9), 1)]);
    assert_eq!(expires, 1_900);
    s.tick(1_000);
    assert_eq!(state(&s, 1), State::InProgress);
    s.disconnect(&w, 1, 0);
    assert!(matches!(s.heartbeat(&w, &[(TaskId(1), 1)], 1_500), Err(Refusal::FailedPrecondition(_))));
    s.tick(1_900);
    assert_eq!(state(&s, 1), State::Pending);
}

#[test]
fn retries_wait_out_their_backoff() {
    let mut s = sched();
    let mut t = task(1);
    t.max_retries = 2;
    add(&mut s, vec![t]);
    let w = worker(&mut s, "w1", 1);
    s.dispatch(0);
    s.report(&w, TaskId(1), 1, Outcome::Failed { reason: "boom".into(), retryable: true }, 10).unwrap();
    assert_eq!(state(&s, 1), State::Waiting);
    assert_eq!(s.next_deadline(), Some(110));
    assert!(assigned(&s.dispatch(50)).is_empty());
    s.tick(109);
    assert_eq!(state(&s, 1), State::Waiting);
    s.tick(110);
    assert_eq!(state(&s, 1), State::Pending);
    s.dispatch(110);
    s.report(&w, TaskId(1), 2, Outcome::Failed { reason: "boom".into(), retryable: true }, 120).unwrap();
    // Second retry waits twice as long.
    assert_eq!(s.next_deadline(), Some(320));
    s.tick(320);
    s.dispatch(320);
    s.report(&w, TaskId(1), 3, Outcome::Failed { reason: "boom".into(), retryable: true }, 330).unwrap();
    let e = s.task(TaskId(1)).unwrap();
    assert_eq!(e.state, State::Failed);
    assert_eq!(e.reason, "boom");
}

/// The attempts of `fx` with the previous error each carries.
fn previous_errors(fx: &[Effect]) -> Vec<(i64, u32, Option<String>)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Assign { id, attempt, previous_error, .. } => {
                Some((id.0, *attempt, previous_error.as_deref().map(str::to_string)))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_retry_carries_the_previous_attempts_error_until_the_task_is_final() {
    let mut s = sched();
    let mut t = task(1);
    t.max_retries = 2;
    add(&mut s, vec![t]);
    let w = worker(&mut s, "w1", 1);
    assert_eq!(previous_errors(&s.dispatch(0)), vec![(1, 1, None)]);
    s.report(&w, TaskId(1), 1, Outcome::Failed { reason: "exit 1: boom".into(), retryable: true }, 10).unwrap();
    s.tick(110);
    assert_eq!(previous_errors(&s.dispatch(110)), vec![(1, 2, Some("exit 1: boom".into()))]);
    // A lost attempt keeps the last failure for the attempt after it.
    s.tick(2_000);
    assert_eq!(state(&s, 1), State::Pending, "the lease of attempt 2 expired");
    s.heartbeat(&w, &[], 2_000).ok();
    assert_eq!(previous_errors(&s.dispatch(2_000)), vec![(1, 3, Some("exit 1: boom".into()))]);
    s.check_invariants();
    s.report(&w, TaskId(1), 3, Outcome::Completed, 1_120).unwrap();
    s.check_invariants();
    assert!(s.previous_errors.is_empty());
}

#[test]
fn a_revived_task_and_a_restored_backoff_carry_the_failure() {
    let mut s = sched();
    let revived = RevivedTask {
        task: task(1),
        job: job(),
        state: State::Failed,
        attempt: 1,
        cancel_cause: None,
        previous_error: Some(Arc::from("tests failed")),
    };
    s.revive(vec![revived], &HashMap::new());
    s.restore_task(
        Restored {
            job: job(),
            task: task(2),
            state: State::Waiting,
            attempt: 1,
            retries_used: 1,
            lost_leases: 0,
            worker: None,
            not_before_ms: 5,
            reason: "attempt 1 failed: timeout".into(),
        },
        0,
    );
    s.finish_restore();
    let w = worker(&mut s, "w1", 2);
    s.tick(5);
    let mut got = previous_errors(&s.dispatch(5));
    got.sort();
    assert_eq!(got, vec![(1, 2, Some("tests failed".into())), (2, 2, Some("attempt 1 failed: timeout".into()))]);
    s.report(&w, TaskId(1), 2, Outcome::Completed, 6).unwrap();
    s.report(&w, TaskId(2), 2, Outcome::Completed, 6).unwrap();
    assert!(s.previous_errors.is_empty());
}

#[test]
fn a_drained_worker_gets_no_new_work_until_resumed() {
    let mut s = sched();
    add(&mut s, vec![task(1)]);
    let w = worker(&mut s, "w1", 1);
    s.set_draining(&w, true).unwrap();
    assert!(assigned(&s.dispatch(0)).is_empty());
    // Registering again (a reconnect) keeps it drained.
    s.register(w.clone(), Labels::new(), 1, &[], 1);
    assert!(assigned(&s.dispatch(1)).is_empty());
    assert_eq!(state(&s, 1), State::Pending);
    s.set_draining(&w, false).unwrap();
    assert_eq!(assigned(&s.dispatch(2)), vec![("w1".into(), 1, 1)]);
    assert!(matches!(s.set_draining(&WorkerId::from("nope"), true), Err(Refusal::NotFound(_))));
    s.check_invariants();
}

#[test]
fn pending_tasks_are_counted_by_priority() {
    let mut s = sched();
    let at = |id, priority| NewTask { priority, ..task(id) };
    let mut blocked = at(4, 1);
    blocked.deps = vec![TaskId(1)];
    add(&mut s, vec![at(1, 9), at(2, 5), at(3, 5), blocked]);
    assert_eq!(s.pending_by_priority(), vec![(9, 1), (5, 2)]);
    let w = worker(&mut s, "w1", 1);
    s.dispatch(0);
    assert_eq!(s.pending_by_priority(), vec![(5, 2)]);
    s.report(&w, TaskId(1), 1, Outcome::Completed, 1).unwrap();
    assert_eq!(s.pending_by_priority(), vec![(5, 2), (1, 1)]);
    s.cancel_task(TaskId(2), "no").unwrap();
    assert_eq!(s.pending_by_priority(), vec![(5, 1), (1, 1)]);
    s.check_invariants();
}

#[test]
fn backoff_is_capped() {
    let p = RetryPolicy { initial_ms: 1_000, multiplier: 2.0, max_ms: 60_000 };
    let got: Vec<u64> = (1..=8).map(|r| p.backoff_ms(r)).collect();
    assert_eq!(got, vec![1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]);
    assert_eq!(p.backoff_ms(10_000), 60_000);
}

#[test]
fn failure_cancels_dependents_and_retry_brings_them_back() {
    let mut s = sched();
    let mut b = task(2);
    b.deps = vec![TaskId(1)];
    let mut c = task(3);
    c.deps = vec![TaskId(2)];
    add(&mut s, vec![task(1), b, c]);
    assert_eq!((state(&s, 1), state(&s, 2), state(&s, 3)), (State::Pending, State::Waiting, State::Waiting));
    let w = worker(&mut s, "w1", 4);
    assert_eq!(assigned(&s.dispatch(0)).len(), 1);
    s.report(&w, TaskId(1), 1, Outcome::Failed { reason: "boom".into(), retryable: true }, 1).unwrap();
    assert_eq!((state(&s, 1), state(&s, 2), state(&s, 3)), (State::Failed, State::Cancelled, State::Cancelled));
    let e3 = s.task(TaskId(3)).unwrap();
    assert_eq!(e3.cancel_cause, Some(TaskId(1)));
    assert_eq!(e3.reason, "dependency 2 cancelled");
    s.check_invariants();

    // RetryTasks reads the final tasks back from the store; here they come from memory.
    let revived: Vec<RevivedTask> = [1, 2, 3]
        .iter()
        .map(|&i| {
            let e = s.task(TaskId(i)).unwrap();
            let mut t = task(i);
            t.deps = e.deps.clone();
            RevivedTask {
                task: t,
                job: job(),
                state: e.state,
                attempt: e.attempt,
                cancel_cause: e.cancel_cause,
                previous_error: None,
            }
        })
        .collect();
    s.evict_final();
    assert_eq!(s.live_tasks(), 0);
    let fx = s.revive(revived, &HashMap::new());
    assert!(!fx.is_empty());
    assert_eq!((state(&s, 1), state(&s, 2), state(&s, 3)), (State::Pending, State::Waiting, State::Waiting));
    assert_eq!(s.job(&job()).unwrap().counts, Counts { pending: 1, waiting: 2, ..Default::default() });
    let fx = s.dispatch(3);
    assert_eq!(assigned(&fx), vec![("w1".into(), 1, 2)]);
    s.report(&w, TaskId(1), 2, Outcome::Completed, 4).unwrap();
    assert_eq!(state(&s, 2), State::Pending);
    s.check_invariants();
}

#[test]
fn dependency_on_a_stored_final_task() {
    let mut s = sched();
    let mut stored = HashMap::new();
    for (id, st) in [(1, State::Completed), (2, State::Failed)] {
        stored.insert(TaskId(id), StoredTask { id: TaskId(id), job: job(), state: st, cancel_cause: None });
    }
    let mut a = task(3);
    a.deps = vec![TaskId(1)];
    let mut b = task(4);
    b.deps = vec![TaskId(1), TaskId(2)];
    s.check_add(&job(), &[a.clone(), b.clone()], &stored).unwrap();
    s.add_tasks(&job(), vec![a, b], &stored);
    assert_eq!(state(&s, 3), State::Pending);
    assert_eq!(state(&s, 4), State::Cancelled);
    assert_eq!(s.task(TaskId(4)).unwrap().cancel_cause, Some(TaskId(2)));
}

#[test]
fn parent_makes_child_wait() {
    let mut s = sched();
    let mut child = task(2);
    child.deps = vec![TaskId(1)];
    child.priority = 100;
    add(&mut s, vec![task(1), child]);
    let w = worker(&mut s, "w1", 2);
    // The child has a higher priority but waits for its parent.
    assert_eq!(assigned(&s.dispatch(0)), vec![("w1".into(), 1, 1)]);
    s.report(&w, TaskId(1), 1, Outcome::Completed, 1).unwrap();
    assert_eq!(assigned(&s.dispatch(2)), vec![("w1".into(), 2, 1)]);
}

#[test]
fn unknown_foreign_and_self_dependencies_are_refused() {
    let mut s = sched();
    s.insert_job(JobId::from("other"), Counts::default(), false, 0);
    let stored = HashMap::new();
    s.add_tasks(&JobId::from("other"), vec![task(1)], &stored);
    let cases: Vec<(Vec<i64>, &str)> =
        vec![(vec![99], "task 99 not found"), (vec![1], "belongs to job other"), (vec![2], "cycle")];
    for (deps, msg) in cases {
        let mut t = task(2);
        t.deps = deps.into_iter().map(TaskId).collect();
        let err = s.check_add(&job(), &[t], &stored).unwrap_err();
        assert!(err.to_string().contains(msg), "{err} should contain {msg}");
    }
    assert!(matches!(s.check_add(&JobId::from("nope"), &[task(5)], &stored), Err(Refusal::NotFound(_))));
}

#[test]
fn priority_orders_dispatch_fifo_within_priority() {
    let mut s = sched();
    let mut tasks = vec![];
    for (id, prio) in [(1, 1), (2, 9), (3, 5), (4, 9), (5, 5)] {
        let mut t = task(id);
        t.priority = prio;
        tasks.push(t);
    }
    add(&mut s, tasks);
    let _w = worker(&mut s, "w1", 10);
    let order: Vec<i64> = assigned(&s.dispatch(0)).into_iter().map(|(_, id, _)| id).collect();
    assert_eq!(order, vec![2, 4, 3, 5, 1]);
}

#[test]
fn task_needing_a_missing_label_does_not_block_others() {
    let mut s = sched();
    let mut gpu = task(1);
    gpu.labels.insert("gpu".into(), "a100".into());
    gpu.priority = 10;
    add(&mut s, vec![gpu, task(2), task(3)]);
    let _w = worker(&mut s, "w1", 10);
    let order: Vec<i64> = assigned(&s.dispatch(0)).into_iter().map(|(_, id, _)| id).collect();
    assert_eq!(order, vec![2, 3]);
    assert_eq!(state(&s, 1), State::Pending);
    let g = WorkerId::from("gpu-box");
    let mut labels = Labels::new();
    labels.insert("gpu".into(), "a100".into());
    s.register(g.clone(), labels, 1, &[], 0);
    s.connect(&g, 1, 0).unwrap();
    assert_eq!(assigned(&s.dispatch(1)), vec![("gpu-box".into(), 1, 1)]);
}

#[test]
fn never_more_assignments_than_free_slots() {
    let mut s = sched();
    add(&mut s, (1..=10).map(task).collect());
    let w = worker(&mut s, "w1", 3);
    assert_eq!(assigned(&s.dispatch(0)).len(), 3);
    assert!(assigned(&s.dispatch(1)).is_empty());
    s.report(&w, TaskId(1), 1, Outcome::Completed, 2).unwrap();
    assert_eq!(assigned(&s.dispatch(3)).len(), 1);
    // A disconnected worker gets nothing.
    s.report(&w, TaskId(2), 1, Outcome::Completed, 4).unwrap();
    s.disconnect(&w, 1, 0);
    assert!(assigned(&s.dispatch(5)).is_empty());
}

#[test]
fn work_spreads_across_workers() {
    let mut s = sched();
    add(&mut s, (1..=8).map(task).collect());
    for n in ["a", "b", "c", "d"] {
        worker(&mut s, n, 8);
    }
    let fx = s.dispatch(0);
    let mut per: HashMap<String, usize> = HashMap::new();
    for (w, _, _) in assigned(&fx) {
        *per.entry(w).or_default() += 1;
    }
    assert_eq!(per.len(), 4);
    assert!(per.values().all(|&n| n == 2), "{per:?}");
}

#[test]
fn cancelling_a_running_task_revokes_it_and_cancels_dependents() {
    let mut s = sched();
    let mut b = task(2);
    b.deps = vec![TaskId(1)];
    add(&mut s, vec![task(1), b]);
    let w = worker(&mut s, "w1", 1);
    s.dispatch(0);
    let fx = s.cancel_task(TaskId(1), "not needed").unwrap();
    assert!(fx.contains(&Effect::Revoke { worker: w.clone(), id: TaskId(1), attempt: 1, reason: "not needed".into() }));
    assert_eq!(state(&s, 2), State::Cancelled);
    assert!(matches!(s.cancel_task(TaskId(1), "again"), Err(Refusal::FailedPrecondition(_))));
    assert!(s.report(&w, TaskId(1), 1, Outcome::Completed, 3).is_err());
    assert_eq!(s.worker(&w).unwrap().held.len(), 0);
}

#[test]
fn cancelled_job_takes_no_new_tasks() {
    let mut s = sched();
    add(&mut s, vec![task(1), task(2)]);
    s.cancel_job(&job(), "stop").unwrap();
    assert_eq!(s.job(&job()).unwrap().counts.cancelled, 2);
    let err = s.check_add(&job(), &[task(3)], &HashMap::new()).unwrap_err();
    assert_eq!(err, Refusal::FailedPrecondition("job job-1 is cancelled".into()));
}

#[test]
fn reregistered_worker_keeps_its_current_attempts() {
    let mut s = sched();
    add(&mut s, vec![task(1), task(2)]);
    let w = worker(&mut s, "w1", 2);
    s.dispatch(0);
    s.cancel_task(TaskId(2), "x").unwrap();
    let (stale, fx) = s.register(w.clone(), Labels::new(), 2, &[(TaskId(1), 1), (TaskId(2), 1)], 0);
    assert_eq!(stale, vec![(TaskId(2), 1)]);
    assert!(fx.is_empty());
    assert_eq!(s.worker(&w).unwrap().held.len(), 1);
}

#[test]
fn restored_in_progress_task_gets_a_fresh_lease() {
    let mut s = sched();
    let restored = |task: NewTask, state: State, attempt: u32, worker: Option<&str>| Restored {
        job: job(),
        task,
        state,
        attempt,
        retries_used: 0,
        lost_leases: 0,
        worker: worker.map(WorkerId::from),
        not_before_ms: 0,
        reason: String::new(),
    };
    // Loaded out of order: the dependent first.
    let mut dependent = task(2);
    dependent.deps = vec![TaskId(1)];
    s.restore_task(restored(dependent, State::Waiting, 0, None), 5_000);
    s.restore_task(restored(task(1), State::InProgress, 2, Some("w1")), 5_000);
    let mut orphan = task(3);
    orphan.deps = vec![TaskId(99)];
    s.restore_task(restored(orphan, State::Waiting, 0, None), 5_000);
    s.finish_restore();
    assert_eq!(s.task(TaskId(2)).unwrap().unmet, 1);
    assert_eq!(state(&s, 3), State::Pending, "its dependency completed before the restart");
    assert_eq!(s.next_deadline(), Some(6_000));
    let w = WorkerId::from("w1");
    assert_eq!(s.register(w.clone(), Labels::new(), 1, &[(TaskId(1), 2)], 0), (vec![], vec![]));
    s.connect(&w, 7, 0).unwrap();
    s.report(&w, TaskId(1), 2, Outcome::Completed, 5_500).unwrap();
    assert_eq!(state(&s, 2), State::Pending);
    s.check_invariants();
}

#[test]
fn entries_stay_small() {
    // The table holds boxed entries; an entry's size is most of a queued task's memory.
    assert!(std::mem::size_of::<Entry>() <= 256, "{}", std::mem::size_of::<Entry>());
}

// ----- properties -----

#[derive(Clone, Debug)]
enum Op {
    Add { deps: Vec<u8>, priority: i8, retries: u8 },
    Dispatch,
    Complete(u8),
    Fail(u8),
    Cancel(u8),
    Advance(u16),
    Disconnect(u8),
    Reconnect(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (proptest::collection::vec(any::<u8>(), 0..3), any::<i8>(), 0u8..3)
            .prop_map(|(deps, priority, retries)| Op::Add { deps, priority, retries }),
        3 => Just(Op::Dispatch),
        3 => any::<u8>().prop_map(Op::Complete),
        2 => any::<u8>().prop_map(Op::Fail),
        1 => any::<u8>().prop_map(Op::Cancel),
        2 => (0u16..3_000).prop_map(Op::Advance),
        1 => (0u8..3).prop_map(Op::Disconnect),
        1 => (0u8..3).prop_map(Op::Reconnect),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Invariants 2-6 under random interleavings: one state per task, one lease per running
    /// task, no success twice, dependencies exact, slots respected; and once the workers stay
    /// connected and complete what they get, every task ends.
    #[test]
    fn random_histories_keep_the_invariants(ops in proptest::collection::vec(op(), 1..120)) {
        let mut s = sched();
        let workers: Vec<WorkerId> = (0..3).map(|i| worker(&mut s, &format!("w{i}"), 2)).collect();
        let mut session = 10;
        let mut next_id = 1i64;
        let mut now = 0u64;
        let mut completed: HashSet<TaskId> = HashSet::new();
        let mut all: Vec<TaskId> = vec![];
        let mut deps_of: HashMap<TaskId, Vec<TaskId>> = HashMap::new();
        let mut finals: HashMap<TaskId, State> = HashMap::new();
        let running = |s: &Scheduler| -> Vec<(WorkerId, TaskId, u32)> {
            let mut v: Vec<_> = s.workers().flat_map(|(w, wk)| wk.held.iter().map(move |(t, a)| (w.clone(), *t, *a))).collect();
            v.sort();
            v
        };
        let check = |s: &Scheduler, fx: &[Effect], deps_of: &HashMap<TaskId, Vec<TaskId>>, completed: &mut HashSet<TaskId>, finals: &mut HashMap<TaskId, State>| {
            for e in fx {
                if let Effect::Changed { id, to, from, .. } = e {
                    if let Some(prev) = finals.get(id) {
                        // A final state is left only through RetryTasks (not exercised here).
                        panic!("task {id} left final state {prev:?} to {to:?} (from {from:?})");
                    }
                    if *to == State::Completed {
                        assert!(completed.insert(*id), "task {id} completed twice");
                    }
                    if *to == State::InProgress {
                        for d in &deps_of[id] {
                            assert!(completed.contains(d), "task {id} started before dependency {d} completed");
                        }
                    }
                    if to.is_final() {
                        finals.insert(*id, *to);
                    }
                }
            }
            s.check_invariants();
        };
        for op in ops {
            let fx = match op {
                Op::Add { deps, priority, retries } => {
                    let id = TaskId(next_id);
                    next_id += 1;
                    let mut t = task(id.0);
                    t.priority = priority as i32;
                    t.max_retries = retries as u32;
                    if !all.is_empty() {
                        t.deps = deps.iter().map(|d| all[*d as usize % all.len()]).collect();
                        t.deps.sort();
                        t.deps.dedup();
                    }
                    deps_of.insert(id, t.deps.clone());
                    // Dependencies that already left memory are final: tell the scheduler.
                    let stored: HashMap<TaskId, StoredTask> = t.deps.iter().filter(|d| s.task(**d).is_none()).map(|d| {
                        (*d, StoredTask { id: *d, job: job(), state: finals[d], cancel_cause: None })
                    }).collect();
                    s.check_add(&job(), std::slice::from_ref(&t), &stored).unwrap();
                    all.push(id);
                    s.add_tasks(&job(), vec![t], &stored)
                }
                Op::Dispatch => s.dispatch(now),
                Op::Complete(i) | Op::Fail(i) => {
                    let r = running(&s);
                    if r.is_empty() { vec![] } else {
                        let (w, t, a) = r[i as usize % r.len()].clone();
                        let outcome = if matches!(op, Op::Complete(_)) { Outcome::Completed } else {
                            Outcome::Failed { reason: "x".into(), retryable: true }
                        };
                        s.report(&w, t, a, outcome, now).unwrap()
                    }
                }
                Op::Cancel(i) => {
                    if all.is_empty() { vec![] } else {
                        let t = all[i as usize % all.len()];
                        s.cancel_task(t, "cancelled").unwrap_or_default()
                    }
                }
                Op::Advance(ms) => { now += ms as u64; s.tick(now) }
                Op::Disconnect(i) => {
                    let w = &workers[i as usize];
                    if let Some(cur) = s.worker(w).and_then(|w| w.session) {
                        s.disconnect(w, cur, 0);
                    }
                    vec![]
                }
                Op::Reconnect(i) => { session += 1; s.connect(&workers[i as usize], session, 0).unwrap(); vec![] }
            };
            check(&s, &fx, &deps_of, &mut completed, &mut finals);
            s.evict_final();
        }
        // Drain: all workers connected, everything dispatched completes; time runs on.
        for w in &workers { session += 1; s.connect(w, session, 0).unwrap(); }
        for _ in 0..10_000 {
            now += 1_000;
            let mut fx = s.tick(now);
            // Live workers heartbeat (which also clears the suspicion of a lost lease).
            for w in &workers {
                s.heartbeat(w, &[], now).unwrap();
            }
            fx.extend(s.dispatch(now));
            for (w, t, a) in running(&s) {
                fx.extend(s.report(&w, t, a, Outcome::Completed, now).unwrap());
            }
            check(&s, &fx, &deps_of, &mut completed, &mut finals);
            s.evict_final();
            if s.live_tasks() == 0 { break; }
        }
        prop_assert_eq!(s.live_tasks(), 0, "every task ends");
        for id in &all {
            prop_assert!(finals.contains_key(id), "task {} never ended", id);
        }
        let c = s.job(&job()).unwrap().counts;
        prop_assert_eq!(c.total(), all.len() as u64);
        prop_assert_eq!(c.completed, completed.len() as u64);
    }
}

/// How the head of a graph ends in [`graphs_at_the_limits_settle_exactly`].
#[derive(Clone, Copy, Debug)]
enum HeadEnd {
    Completed,
    Failed,
    Cancelled,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Chains and fans up to the contract's limits (a batch of `MAX_BATCH` tasks, a task with
    /// `MAX_DEPENDENCIES` dependencies): however the head ends, every task lands where the
    /// dependency rules say, in one call, without recursion (run on a small stack).
    #[test]
    fn graphs_at_the_limits_settle_exactly(
        chain in 1usize..=orca_proto::contract::limits::MAX_BATCH,
        fan_in in 1usize..=orca_proto::contract::limits::MAX_DEPENDENCIES,
        end in prop_oneof![Just(HeadEnd::Completed), Just(HeadEnd::Failed), Just(HeadEnd::Cancelled)],
    ) {
        on_small_stack(move || {
            let mut s = sched();
            // 1 is the head; 2..=chain+1 a chain hanging from it; then `fan_in` roots and one
            // task depending on all of them and on the head.
            let mut tasks = chain_from(1, chain as i64 + 1);
            let roots: Vec<i64> = (0..fan_in as i64).map(|i| chain as i64 + 2 + i).collect();
            tasks.extend(roots.iter().map(|&r| task(r)));
            let sink = chain as i64 + 2 + fan_in as i64;
            let mut deps: Vec<TaskId> = roots.iter().map(|&r| TaskId(r)).collect();
            deps.push(TaskId(1));
            tasks.push(NewTask { deps, ..task(sink) });
            add(&mut s, tasks);
            let w = worker(&mut s, "w", (fan_in + 1) as u32);
            s.dispatch(0);
            match end {
                HeadEnd::Completed => { s.report(&w, TaskId(1), 1, Outcome::Completed, 1).unwrap(); }
                HeadEnd::Failed => {
                    let failed = Outcome::Failed { reason: "x".into(), retryable: false };
                    s.report(&w, TaskId(1), 1, failed, 1).unwrap();
                }
                HeadEnd::Cancelled => { s.cancel_task(TaskId(1), "stop").unwrap(); }
            }
            s.check_invariants();
            let state_of = |id: i64| s.task(TaskId(id)).map(|e| e.state);
            let blocked = !matches!(end, HeadEnd::Completed);
            // The chain: cancelled to its end with the head as cause, or its first link ready.
            if blocked {
                let last = s.task(TaskId(chain as i64 + 1)).unwrap();
                assert_eq!((last.state, last.cancel_cause), (State::Cancelled, Some(TaskId(1))));
                assert_eq!(state_of(sink), Some(State::Cancelled));
            } else {
                assert!(matches!(state_of(2), Some(State::Pending | State::InProgress)));
                // The sink still waits for its roots.
                assert_eq!(s.task(TaskId(sink)).unwrap().unmet, fan_in as u32);
            }
        });
    }
}

/// A chain of tasks `first..=last`, each depending on the one before (the first on none).
fn chain_from(first: i64, last: i64) -> Vec<NewTask> {
    (first..=last).map(|i| NewTask { deps: if i > first { vec![TaskId(i - 1)] } else { vec![] }, ..task(i) }).collect()
}

// ----- timings and totals (for metrics), job removal -----

/// (from, to, held_ms, age_ms) of every state change in `fx`.
fn timings(fx: &[Effect]) -> Vec<(Option<State>, State, u64, u64)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Changed { from, to, held_ms, age_ms, .. } => Some((*from, *to, *held_ms, *age_ms)),
            _ => None,
        })
        .collect()
}

#[test]
fn state_changes_carry_how_long_the_task_was_in_the_old_state() {
    let mut s = sched();
    s.set_clock(1_000);
    add(&mut s, vec![task(1)]);
    let w = worker(&mut s, "w", 1);
    s.set_clock(1_250);
    let fx = s.dispatch(1_250);
    assert_eq!(timings(&fx), vec![(Some(State::Pending), State::InProgress, 250, 250)]);
    s.set_clock(2_000);
    let fx = s.report(&w, TaskId(1), 1, Outcome::Completed, 2_000).unwrap();
    assert_eq!(timings(&fx), vec![(Some(State::InProgress), State::Completed, 750, 1_000)]);
    // The low 32 bits of the clock wrap: differences stay right.
    let mut s = sched();
    s.set_clock(u32::MAX as u64 - 10);
    add(&mut s, vec![task(2)]);
    worker(&mut s, "w", 1);
    s.set_clock(u32::MAX as u64 + 90);
    assert_eq!(timings(&s.dispatch(0))[0].2, 100);
}

#[test]
fn totals_count_lost_leases_retries_and_dead_letters() {
    let mut s = sched();
    let retried = NewTask { max_retries: 1, ..task(1) };
    add(&mut s, vec![retried, task(2)]);
    let w = worker(&mut s, "w", 2);
    s.dispatch(0);
    let failed = || Outcome::Failed { reason: "boom".into(), retryable: true };
    s.report(&w, TaskId(1), 1, failed(), 1).unwrap();
    s.report(&w, TaskId(2), 1, failed(), 1).unwrap();
    assert_eq!(s.totals(), Totals { lease_losses: 0, retries: 1, dead_lettered: 1 });
    // Task 1 runs again after its backoff; its lease expires three times.
    for round in 0..3u64 {
        let t = 10_000 + round * 10_000;
        s.tick(t);
        s.heartbeat(&w, &[], t).ok();
        s.dispatch(t);
        s.tick(t + 5_000);
    }
    let t = s.totals();
    assert_eq!((t.lease_losses, t.retries, t.dead_lettered), (3, 1, 2), "{t:?}");
    assert_eq!(state(&s, 1), State::Failed);
}

#[test]
fn only_a_finished_job_is_removed() {
    let mut s = sched();
    add(&mut s, vec![task(1)]);
    let refused = s.remove_job(&job()).unwrap_err();
    assert!(matches!(&refused, Refusal::FailedPrecondition(m) if m.contains("1 tasks that are not final")));
    s.cancel_task(TaskId(1), "stop").unwrap();
    s.evict_final();
    assert_eq!(s.remove_job(&job()).unwrap().cancelled, 1);
    assert!(s.job(&job()).is_none());
    assert!(matches!(s.remove_job(&job()), Err(Refusal::NotFound(_))));
    assert_eq!(s.next_seq(&job()), 0, "a removed job gets no events");
    assert_eq!(s.counts().1, 0);
}
