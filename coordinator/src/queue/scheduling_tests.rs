//! Fair share, limits, budgets, pause and delayed tasks: table tests and property tests of
//! invariant 5 of docs/design.md (at one priority, jobs share the workers by weight; a ready
//! task is never hidden behind blocked ones).

use super::*;
use proptest::prelude::*;

fn limits() -> Limits {
    Limits { lease_ms: 10_000, max_lease_losses: 3, forget_worker_ms: 600_000, payload_cache_bytes: 1 << 20 }
}

fn new_task(id: i64) -> NewTask {
    NewTask {
        id: TaskId(id),
        priority: 5,
        deps: vec![],
        labels: Labels::new(),
        max_retries: 0,
        retry: RetryPolicy::default(),
        payload: None,
        git_chain: false,
        run_at_ms: 0,
    }
}

/// A scheduler with these jobs (name, weight).
fn sched_with(jobs: &[(&str, u32)]) -> Scheduler {
    let mut s = Scheduler::new(limits());
    for &(j, weight) in jobs {
        let j = JobId::from(j);
        s.insert_job(j.clone(), Counts::default(), false, 0);
        s.set_controls(&j, Controls { weight, ..Controls::default() }).unwrap();
    }
    s
}

fn add_to(s: &mut Scheduler, job: &str, tasks: Vec<NewTask>) {
    let (job, stored) = (JobId::from(job), HashMap::new());
    s.check_add(&job, &tasks, &stored).unwrap();
    s.add_tasks(&job, tasks, &stored);
}

fn connect(s: &mut Scheduler, name: &str, labels: &[(&str, &str)], slots: u32) -> WorkerId {
    let w = WorkerId::from(name);
    let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    s.register(w.clone(), labels, slots, &[], 0);
    s.connect(&w, 1, 0).unwrap();
    w
}

/// (worker, task, attempt, job) of each assignment.
fn assignments(fx: &[Effect]) -> Vec<(WorkerId, TaskId, u32, JobId)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Assign { worker, id, attempt, job, .. } => Some((worker.clone(), *id, *attempt, job.clone())),
            _ => None,
        })
        .collect()
}

/// Runs one task at a time on a one-slot worker, completing each at once; the job of each
/// dispatch in order.
fn serve(s: &mut Scheduler, w: &WorkerId, n: usize, now: &mut u64) -> Vec<String> {
    let mut order = Vec::new();
    for _ in 0..n {
        *now += 1;
        let Some((_, id, attempt, job)) = assignments(&s.dispatch(*now)).pop() else { break };
        s.report(w, id, attempt, Outcome::Completed, *now).unwrap();
        s.evict_final();
        order.push(job.to_string());
    }
    order
}

fn ids(from: i64, n: i64) -> Vec<NewTask> {
    (from..from + n).map(new_task).collect()
}

#[test]
fn a_small_job_behind_a_big_one_is_served_within_one_round() {
    let mut s = sched_with(&[("a", 1), ("b", 1)]);
    add_to(&mut s, "a", ids(1, 10_000));
    let w = connect(&mut s, "w", &[], 1);
    let mut now = 0;
    assert!(serve(&mut s, &w, 50, &mut now).iter().all(|j| j == "a"));
    add_to(&mut s, "b", ids(20_001, 100));
    let order = serve(&mut s, &w, 200, &mut now);
    // Alternating: B is done within 200 dispatches, having waited for at most one of A's
    // between each of its own.
    assert_eq!(order.iter().filter(|j| *j == "b").count(), 100);
    let last_b = order.iter().rposition(|j| j == "b").unwrap();
    assert!(last_b < 200, "B finished at dispatch {last_b}");
    for pair in order[..=last_b].windows(2) {
        assert!(!(pair[0] == "a" && pair[1] == "a"), "A served twice in a row while B was waiting: {order:?}");
    }
    s.check_invariants();
}

#[test]
fn weight_two_gets_twice_the_dispatches() {
    let mut s = sched_with(&[("a", 1), ("b", 2)]);
    add_to(&mut s, "a", ids(1, 1_000));
    add_to(&mut s, "b", ids(2_001, 1_000));
    let w = connect(&mut s, "w", &[], 1);
    let mut now = 0;
    let order = serve(&mut s, &w, 300, &mut now);
    let b = order.iter().filter(|j| *j == "b").count();
    assert!((199..=201).contains(&b), "B got {b} of 300");
    // Raising A's weight to 2 makes it even from then on.
    s.set_controls(&JobId::from("a"), Controls { weight: 2, ..Controls::default() }).unwrap();
    let order = serve(&mut s, &w, 300, &mut now);
    let a = order.iter().filter(|j| *j == "a").count();
    assert!((149..=151).contains(&a), "A got {a} of 300");
    s.check_invariants();
}

#[test]
fn priority_still_wins_across_jobs_and_fifo_holds_within_a_job() {
    let mut s = sched_with(&[("a", 1), ("b", 1000)]);
    let mut urgent = ids(1, 3);
    for t in &mut urgent {
        t.priority = 9;
    }
    add_to(&mut s, "a", urgent);
    add_to(&mut s, "b", ids(10, 3));
    add_to(&mut s, "a", ids(20, 3));
    let w = connect(&mut s, "w", &[], 1);
    let mut now = 0;
    let mut served = Vec::new();
    for _ in 0..9 {
        now += 1;
        let (_, id, attempt, _) = assignments(&s.dispatch(now)).pop().unwrap();
        s.report(&w, id, attempt, Outcome::Completed, now).unwrap();
        served.push(id.0);
    }
    assert_eq!(&served[..3], &[1, 2, 3], "priority 9 first, in order");
    let a: Vec<i64> = served[3..].iter().copied().filter(|&i| i >= 20).collect();
    let b: Vec<i64> = served[3..].iter().copied().filter(|&i| i < 20).collect();
    assert_eq!((a, b), (vec![20, 21, 22], vec![10, 11, 12]), "FIFO within each job");
}

#[test]
fn max_running_caps_a_job_and_the_others_fill_the_slots() {
    let mut s = sched_with(&[("a", 1), ("b", 1)]);
    s.set_controls(&JobId::from("a"), Controls { max_running: 2, ..Controls::default() }).unwrap();
    add_to(&mut s, "a", ids(1, 10));
    connect(&mut s, "w", &[], 8);
    let fx = s.dispatch(1);
    assert_eq!(assignments(&fx).len(), 2);
    assert_eq!(s.blocked_reason(&JobId::from("a")).unwrap(), "max_running reached: 2 running");
    // B's tasks are not hidden behind A's blocked ones.
    add_to(&mut s, "b", ids(100, 10));
    let fx = s.dispatch(2);
    assert!(assignments(&fx).iter().all(|a| a.3.as_str() == "b"));
    assert_eq!(assignments(&fx).len(), 6);
    s.check_invariants();
    // Raising the limit lets more of A start.
    s.set_controls(&JobId::from("a"), Controls { max_running: 0, ..Controls::default() }).unwrap();
    assert_eq!(s.blocked_reason(&JobId::from("a")), None);
    s.check_invariants();
}

#[test]
fn a_label_limit_caps_the_tasks_that_need_that_value() {
    let mut s = sched_with(&[("a", 1)]);
    s.set_label_limits(vec![LabelLimit { key: "api_key".into(), value: "team-a".into(), max: 2 }]);
    let mut keyed = ids(1, 6);
    for t in &mut keyed {
        t.labels.insert("api_key".into(), "team-a".into());
    }
    add_to(&mut s, "a", keyed);
    add_to(&mut s, "a", ids(10, 2));
    let w = connect(&mut s, "w", &[("api_key", "team-a")], 10);
    let fx = s.dispatch(1);
    let got: Vec<i64> = assignments(&fx).iter().map(|a| a.1.0).collect();
    assert_eq!(got, vec![1, 2, 10, 11], "two keyed tasks, and the unkeyed ones beside them");
    assert_eq!(s.label_limits().map(|(_, n)| n).collect::<Vec<_>>(), vec![2]);
    s.report(&w, TaskId(1), 1, Outcome::Completed, 2).unwrap();
    let got: Vec<i64> = assignments(&s.dispatch(3)).iter().map(|a| a.1.0).collect();
    assert_eq!(got, vec![3], "one ended, one more starts");
    s.check_invariants();
}

#[test]
fn a_spent_budget_stops_new_attempts_until_it_is_raised() {
    let mut s = sched_with(&[("a", 1)]);
    let a = JobId::from("a");
    s.set_controls(&a, Controls { budget_usd: 1.0, ..Controls::default() }).unwrap();
    add_to(&mut s, "a", ids(1, 5));
    let w = connect(&mut s, "w", &[], 1);
    let (_, id, att, _) = assignments(&s.dispatch(1)).pop().unwrap();
    s.report(&w, id, att, Outcome::Completed, 2).unwrap();
    s.charge(&a, Spend { cost_usd: 0.6, input_tokens: 100, output_tokens: 10 });
    let (_, id, att, _) = assignments(&s.dispatch(3)).pop().unwrap();
    s.report(&w, id, att, Outcome::Completed, 4).unwrap();
    s.charge(&a, Spend { cost_usd: 0.5, input_tokens: 100, output_tokens: 10 });
    assert_eq!(s.blocked_reason(&a).unwrap(), "budget spent: $1.10 of $1.00");
    assert!(assignments(&s.dispatch(5)).is_empty());
    assert_eq!(s.job(&a).unwrap().spend, Spend { cost_usd: 1.1, input_tokens: 200, output_tokens: 20 });
    s.check_invariants();
    s.set_controls(&a, Controls { budget_usd: 5.0, ..Controls::default() }).unwrap();
    assert_eq!(assignments(&s.dispatch(6)).len(), 1);
    s.check_invariants();
}

#[test]
fn a_paused_job_starts_nothing_and_its_running_tasks_finish() {
    let mut s = sched_with(&[("a", 1)]);
    let a = JobId::from("a");
    add_to(&mut s, "a", ids(1, 4));
    let w = connect(&mut s, "w", &[], 2);
    let running = assignments(&s.dispatch(1));
    assert_eq!(running.len(), 2);
    s.set_controls(&a, Controls { paused: true, ..Controls::default() }).unwrap();
    assert_eq!(s.blocked_reason(&a).unwrap(), "paused");
    for (_, id, att, _) in running {
        s.report(&w, id, att, Outcome::Completed, 2).unwrap();
    }
    assert!(assignments(&s.dispatch(3)).is_empty());
    assert_eq!(s.job(&a).unwrap().counts.completed, 2);
    s.check_invariants();
    s.set_controls(&a, Controls::default()).unwrap();
    assert_eq!(assignments(&s.dispatch(4)).len(), 2);
    s.check_invariants();
}

#[test]
fn a_cancelled_paused_job_leaves_nothing_queued() {
    let mut s = sched_with(&[("a", 1)]);
    let a = JobId::from("a");
    add_to(&mut s, "a", ids(1, 100));
    s.set_controls(&a, Controls { paused: true, ..Controls::default() }).unwrap();
    s.cancel_job(&a, "stop").unwrap();
    s.evict_final();
    assert!(s.ready.is_empty(), "the parked job's stale entries are forgotten");
}

#[test]
fn a_task_with_run_at_waits_until_then_and_a_restore_keeps_the_wait() {
    let mut s = sched_with(&[("a", 1)]);
    s.set_clock(1_000);
    let mut t = new_task(1);
    t.run_at_ms = 5_000;
    add_to(&mut s, "a", vec![t.clone(), new_task(2)]);
    connect(&mut s, "w", &[], 4);
    assert_eq!(s.task(TaskId(1)).unwrap().state, State::Waiting);
    assert_eq!(s.next_deadline(), Some(5_000));
    let got: Vec<i64> = assignments(&s.dispatch(1_000)).iter().map(|a| a.1.0).collect();
    assert_eq!(got, vec![2]);
    assert!(s.tick(4_999).is_empty());
    s.tick(5_000);
    assert_eq!(assignments(&s.dispatch(5_000)).iter().map(|a| a.1.0).collect::<Vec<_>>(), vec![1]);
    s.check_invariants();

    // After a restart the stored wait (not_before) holds, and it carries no previous error.
    let mut r = sched_with(&[("a", 1)]);
    r.set_clock(2_000);
    let restored = Restored {
        job: JobId::from("a"),
        task: t,
        state: State::Waiting,
        attempt: 0,
        retries_used: 0,
        lost_leases: 0,
        worker: None,
        not_before_ms: 5_000,
        reason: String::new(),
    };
    r.restore_task(restored, 2_000);
    r.finish_restore();
    assert_eq!(r.task(TaskId(1)).unwrap().state, State::Waiting);
    assert!(r.tick(4_999).is_empty());
    r.tick(5_000);
    connect(&mut r, "w", &[], 1);
    let fx = r.dispatch(5_000);
    assert!(matches!(&fx[..], [.., Effect::Assign { previous_error: None, .. }]), "{fx:?}");
    r.check_invariants();
}

#[test]
fn a_run_at_task_with_dependencies_waits_for_both() {
    let mut s = sched_with(&[("a", 1)]);
    let mut t = new_task(2);
    t.run_at_ms = 100;
    t.deps = vec![TaskId(1)];
    add_to(&mut s, "a", vec![new_task(1), t]);
    let w = connect(&mut s, "w", &[], 4);
    s.tick(100);
    assert_eq!(s.task(TaskId(2)).unwrap().state, State::Waiting, "time came, the dependency has not completed");
    let (_, id, att, _) = assignments(&s.dispatch(100)).pop().unwrap();
    s.report(&w, id, att, Outcome::Completed, 101).unwrap();
    assert_eq!(s.task(TaskId(2)).unwrap().state, State::Pending);
    s.check_invariants();
}

/// A job of the fairness property: weight, size, and the dispatch it arrives at.
#[derive(Clone, Debug)]
struct Arrival {
    weight: u32,
    tasks: i64,
    at: usize,
}

fn arrival() -> impl Strategy<Value = Arrival> {
    (1u32..4, 1i64..40, 0usize..60).prop_map(|(weight, tasks, at)| Arrival { weight, tasks, at })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Invariant 5: while a job has ready tasks, between two of its dispatches (or from its
    /// arrival to its first) any other job at its priority is served at most
    /// ceil(w_other / w_job) + 1 times: no job waits more than one round.
    #[test]
    fn no_ready_job_waits_more_than_one_round(jobs in proptest::collection::vec(arrival(), 1..6)) {
        let names: Vec<String> = (0..jobs.len()).map(|i| format!("j{i}")).collect();
        let mut s = Scheduler::new(limits());
        for (name, j) in names.iter().zip(&jobs) {
            let id = JobId::from(name.as_str());
            s.insert_job(id.clone(), Counts::default(), false, 0);
            s.set_controls(&id, Controls { weight: j.weight, ..Controls::default() }).unwrap();
        }
        let w = connect(&mut s, "w", &[], 1);
        let total: i64 = jobs.iter().map(|j| j.tasks).sum();
        let mut next_id = 1;
        let mut left: Vec<i64> = vec![0; jobs.len()];
        // Services of each other job since each job's last service (or arrival).
        let mut since: Vec<Vec<u32>> = vec![vec![0; jobs.len()]; jobs.len()];
        let mut now = 0;
        for step in 0..(total as usize + 60) {
            for (i, j) in jobs.iter().enumerate().filter(|(_, j)| j.at == step) {
                add_to(&mut s, &names[i], ids(next_id, j.tasks));
                next_id += j.tasks;
                left[i] = j.tasks;
                since[i] = vec![0; jobs.len()];
            }
            now += 1;
            let Some((_, id, attempt, job)) = assignments(&s.dispatch(now)).pop() else { continue };
            s.report(&w, id, attempt, Outcome::Completed, now).unwrap();
            s.evict_final();
            let served = names.iter().position(|n| n == job.as_str()).unwrap();
            left[served] -= 1;
            since[served] = vec![0; jobs.len()];
            for waiting in (0..jobs.len()).filter(|&i| i != served && left[i] > 0) {
                since[waiting][served] += 1;
                let bound = jobs[served].weight.div_ceil(jobs[waiting].weight) + 1;
                prop_assert!(
                    since[waiting][served] <= bound,
                    "job {waiting} (weight {}) waited while job {served} (weight {}) was served {} times",
                    jobs[waiting].weight, jobs[served].weight, since[waiting][served]
                );
            }
        }
        prop_assert!(left.iter().all(|&n| n == 0), "every task ran: {left:?}");
        s.check_invariants();
    }

    /// Limits hold whatever happens: max_running per job and label limits are never passed
    /// by a dispatch, a blocked job never holds back another's ready tasks, and a job with
    /// controls changed at random still runs all its tasks once unblocked.
    #[test]
    fn limits_are_never_exceeded_and_never_hide_other_work(
        ops in proptest::collection::vec((0u8..6, 0usize..3, 0u32..4), 1..150)
    ) {
        let mut s = sched_with(&[("j0", 1), ("j1", 2), ("j2", 1)]);
        s.set_label_limits(vec![LabelLimit { key: "k".into(), value: "v".into(), max: 2 }]);
        let w = connect(&mut s, "w", &[("k", "v")], 6);
        let mut next_id = 1;
        let mut max_running = [0u32; 3];
        let mut now = 0;
        for (op, j, n) in ops {
            now += 1;
            let job = JobId::from(format!("j{j}"));
            match op {
                0 => {
                    let mut t = ids(next_id, n as i64 + 1);
                    if n % 2 == 0 {
                        for x in &mut t {
                            x.labels.insert("k".into(), "v".into());
                        }
                    }
                    next_id += n as i64 + 1;
                    add_to(&mut s, job.as_str(), t);
                }
                1 => {
                    max_running[j] = n;
                    let c = Controls { max_running: n, ..s.job(&job).unwrap().controls };
                    s.set_controls(&job, c).unwrap();
                }
                2 => {
                    let c = s.job(&job).unwrap().controls;
                    s.set_controls(&job, Controls { paused: !c.paused, ..c }).unwrap();
                }
                _ => {
                    let running: Vec<(TaskId, u32)> = s.worker(&w).unwrap().held.iter().copied().take(n as usize).collect();
                    for (id, att) in running {
                        s.report(&w, id, att, Outcome::Completed, now).unwrap();
                    }
                }
            }
            let before: Vec<u64> = (0..3).map(|i| s.job(&JobId::from(format!("j{i}"))).unwrap().counts.in_progress).collect();
            let fx = s.dispatch(now);
            for (i, b) in before.iter().enumerate() {
                let job = JobId::from(format!("j{i}"));
                let info = s.job(&job).unwrap();
                let started = assignments(&fx).iter().filter(|a| a.3 == job).count() as u64;
                if started > 0 {
                    prop_assert!(!info.controls.paused, "a paused job started {started}");
                    if max_running[i] > 0 {
                        prop_assert!(info.counts.in_progress <= max_running[i] as u64, "job {i} over max_running");
                    }
                }
                prop_assert!(info.counts.in_progress >= *b);
            }
            let keyed = s.label_limits().map(|(_, n)| n).next().unwrap();
            prop_assert!(keyed <= 2, "label limit passed: {keyed}");
            // Not hidden: a free slot and a startable task of any job means it was started.
            let free = s.worker(&w).unwrap().free();
            if free > 0 {
                for e in s.tasks.values().filter(|e| e.state == State::Pending) {
                    let blocked = s.blocked_reason(&e.job).is_some();
                    let keyed_full = !e.labels_free(&s);
                    prop_assert!(blocked || keyed_full, "task {} of {} left pending with a free slot", e.id, e.job);
                }
            }
            s.check_invariants();
        }
    }
}

impl Entry {
    /// Whether the label limits let this task start now.
    fn labels_free(&self, s: &Scheduler) -> bool {
        s.queue_limits[self.label_set].iter().all(|&l| s.label_running[l] < s.label_limits[l].max)
    }
}
