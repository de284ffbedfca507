//! The invariants, checked after the run from the database, the agents' records, the ledger
//! of acknowledged calls, the WatchJob stream and the coordinator's own counts. Each check
//! adds named violations with a few examples; the run passes only with none. Counting for the
//! report happens here too, so that what is reported is what was checked.

use std::collections::{BTreeMap, HashMap, HashSet};

use orca_proto::pb;

use super::Args;
use super::agent::{AgentRun, Records};
use super::db::{DbJob, DbTask};
use super::plan::{Kind, Origin, parse_prompt};
use super::run::Figures;
use super::submit::{AckedBatch, Ledger};
use super::watch::{WatchState, is_final};

const COMPLETED: i64 = pb::TaskState::Completed as i64;
const FAILED: i64 = pb::TaskState::Failed as i64;
const CANCELLED: i64 = pb::TaskState::Cancelled as i64;

/// Violations by name: how many, and the first few examples.
#[derive(Default)]
pub struct Violations(pub BTreeMap<&'static str, (usize, Vec<String>)>);

impl Violations {
    pub fn add(&mut self, what: &'static str, example: String) {
        let e = self.0.entry(what).or_insert((0, Vec::new()));
        e.0 += 1;
        if e.1.len() < 5 {
            e.1.push(example);
        }
    }

    pub fn total(&self) -> usize {
        self.0.values().map(|e| e.0).sum()
    }
}

/// What the checks counted.
#[derive(Default)]
pub struct Counts {
    pub acked: usize,
    pub lost: usize,
    pub doubled: HashSet<i64>,
    pub unacked_committed: usize,
    pub completed: usize,
    pub failed_on_purpose: usize,
    pub dead_lettered: usize,
    pub failed_other: usize,
    pub cancelled: usize,
    /// Sum of the tasks' attempt numbers.
    pub attempts: u64,
    pub lease_losses: u64,
    /// Tasks per state (index: `TaskState` number).
    pub by_state: [u64; 7],
}

/// Everything the checks read.
pub struct Evidence<'a> {
    pub args: &'a Args,
    pub job: &'a str,
    pub ledger: &'a Ledger,
    pub ws: &'a WatchState,
    pub fig: &'a Figures,
    pub db: &'a DbJob,
    pub records: &'a Records,
}

pub fn check(e: &Evidence) -> (Violations, Counts) {
    let mut v = Violations::default();
    let mut n = Counts::default();
    if e.db.integrity != "ok" {
        v.add("database integrity_check", e.db.integrity.clone());
    }
    for id in &e.db.undecodable {
        v.add("database: undecodable spec or result", format!("task {id}"));
    }
    if e.records.malformed > 0 {
        v.add("agent records: malformed or unmatched lines", format!("{} lines", e.records.malformed));
    }
    let acked_tries = acknowledged(e, &mut v, &mut n);
    let tasks = Tasks { e, acked_tries, unanswered: e.ledger.unanswered.iter().copied().collect() };
    for (&id, t) in &e.db.tasks {
        tasks.check(id, t, &mut v, &mut n);
    }
    for (what, msg) in &e.ws.violations {
        v.add(what, msg.clone());
    }
    job_counts(e, &n, &mut v);
    processes(e, &mut v);
    (v, n)
}

/// Every acknowledged id is in the database with the prompt it was sent with, and final.
fn acknowledged<'a>(e: &Evidence<'a>, v: &mut Violations, n: &mut Counts) -> HashMap<(usize, u32), &'a AckedBatch> {
    let mut tries = HashMap::new();
    let mut ids = HashSet::new();
    for a in &e.ledger.acked {
        tries.insert((a.batch, a.try_no), a);
        for (id, p) in a.ids.iter().zip(&a.prompts) {
            ids.insert(*id);
            let problem = match e.db.tasks.get(id) {
                None => Some(("lost: acknowledged task not in the database", format!("task {id} ({p})"))),
                Some(t) if &t.prompt != p => Some((
                    "lost: acknowledged id holds another task",
                    format!("task {id}: sent {p:?}, stored {:?}", t.prompt),
                )),
                Some(t) if !is_final(t.state as i32) => {
                    Some(("lost: acknowledged task not final", format!("task {id} state {} ({p})", t.state)))
                }
                _ => None,
            };
            if let Some((what, msg)) = problem {
                n.lost += 1;
                v.add(what, msg);
            }
        }
    }
    n.acked = ids.len();
    tries
}

/// The per-task checks, with what they need from the other sources.
struct Tasks<'a> {
    e: &'a Evidence<'a>,
    acked_tries: HashMap<(usize, u32), &'a AckedBatch>,
    unanswered: HashSet<(usize, u32)>,
}

impl Tasks<'_> {
    fn check(&self, id: i64, t: &DbTask, v: &mut Violations, n: &mut Counts) {
        n.attempts += u64::from(t.attempt);
        n.lease_losses += u64::from(t.lost_leases);
        if (1..=6).contains(&t.state) {
            n.by_state[t.state as usize] += 1;
        }
        let Some(origin) = parse_prompt(&t.prompt) else {
            v.add("unknown task in the job", format!("task {id}: {:?}", t.prompt));
            return;
        };
        self.origin(id, t, origin, v, n);
        let runs: &[AgentRun] = self.e.records.runs.get(&id).map(Vec::as_slice).unwrap_or(&[]);
        fencing_runs(id, t, runs, v, n);
        let deps = self.e.db.deps.get(&id).map(Vec::as_slice).unwrap_or(&[]);
        let dep_states: Vec<i64> = deps.iter().map(|d| self.e.db.tasks.get(d).map(|t| t.state).unwrap_or(0)).collect();
        let dep_broken = dep_states.iter().any(|s| *s == FAILED || *s == CANCELLED);
        if dep_broken && t.state != CANCELLED {
            v.add("dependent of a failed task not cancelled", format!("task {id} state {} deps {deps:?}", t.state));
        }
        match t.state {
            COMPLETED => {
                n.completed += 1;
                if origin.kind == Kind::Fail {
                    v.add("a task that always fails completed", format!("task {id}"));
                }
                if dep_states.iter().any(|s| *s != COMPLETED) {
                    v.add(
                        "completed with a dependency not completed",
                        format!("task {id} deps {deps:?} {dep_states:?}"),
                    );
                }
                accepted_result(id, t, runs, v, n);
                self.dependencies_ran_first(id, deps, runs, v);
            }
            FAILED => self.failed(id, t, origin.kind, runs, v, n),
            CANCELLED => {
                n.cancelled += 1;
                if !dep_broken {
                    v.add("cancelled without a failed dependency", format!("task {id} deps {deps:?} {dep_states:?}"));
                }
                if self.e.db.tasks.get(&t.cancel_cause).is_none_or(|c| c.state != FAILED) {
                    v.add("cancel_cause is not a failed task", format!("task {id} cause {}", t.cancel_cause));
                }
                if !runs.is_empty() {
                    v.add("a cancelled dependent ran", format!("task {id} ran {} times", runs.len()));
                }
            }
            // Not final: counted already ("lost" when acknowledged).
            _ => {}
        }
        self.watched(id, t, v, n);
    }

    /// The task comes from a call that was made: acknowledged under this id, or unanswered.
    fn origin(&self, id: i64, t: &DbTask, o: Origin, v: &mut Violations, n: &mut Counts) {
        match self.acked_tries.get(&(o.batch, o.try_no)) {
            Some(a) if a.ids.get(o.index) != Some(&id) => {
                v.add("duplicate: task of an acknowledged batch under another id", format!("task {id} ({})", t.prompt))
            }
            Some(_) => {}
            None => {
                n.unacked_committed += 1;
                if !self.unanswered.contains(&(o.batch, o.try_no)) {
                    v.add("task from a call that was never made", format!("task {id} ({})", t.prompt));
                }
                if !is_final(t.state as i32) {
                    v.add("committed (unacknowledged) task not final", format!("task {id} state {}", t.state));
                }
            }
        }
    }

    /// A completed task's agent runs started after its dependencies' accepted runs ended.
    fn dependencies_ran_first(&self, id: i64, deps: &[i64], runs: &[AgentRun], v: &mut Violations) {
        for d in deps {
            if let Some(end) = self.end_of_accepted(*d)
                && let Some(r) = runs.iter().find(|r| r.start < end)
            {
                v.add(
                    "a dependent started before its dependency ended",
                    format!("task {id} attempt {} at {} < end of {d} at {end}", r.attempt, r.start),
                );
            }
        }
    }

    /// When the run of the attempt the database holds for `id` ended.
    fn end_of_accepted(&self, id: i64) -> Option<f64> {
        let t = self.e.db.tasks.get(&id)?;
        self.e.records.runs.get(&id)?.iter().find(|r| r.attempt == t.attempt).and_then(|r| r.end.map(|e| e.0))
    }

    /// A failure is deliberate (with a failing run of the final attempt) or a dead letter.
    fn failed(&self, id: i64, t: &DbTask, kind: Kind, runs: &[AgentRun], v: &mut Violations, n: &mut Counts) {
        if t.lost_leases >= self.e.args.max_lease_losses {
            n.dead_lettered += 1;
        } else if kind == Kind::Fail {
            n.failed_on_purpose += 1;
            if !runs.iter().any(|r| r.attempt == t.attempt && r.failed()) {
                v.add("failed without a failing run of that attempt", format!("task {id} attempt {}", t.attempt));
            }
        } else {
            n.failed_other += 1;
            v.add("unexpected failure", format!("task {id} ({}) attempt {}: {}", t.prompt, t.attempt, t.reason));
        }
    }

    /// The watch stream saw at most one completion, of the accepted attempt.
    fn watched(&self, id: i64, t: &DbTask, v: &mut Violations, n: &mut Counts) {
        if let Some(&(count, a)) = self.e.ws.completions.get(&id) {
            if count > 1 {
                n.doubled.insert(id);
                v.add("fencing: completed twice (WatchJob)", format!("task {id}: {count} completion events"));
            }
            if t.state != COMPLETED || a != t.attempt {
                n.doubled.insert(id);
                v.add(
                    "fencing: WatchJob completion differs from the database",
                    format!("task {id}: event attempt {a}, database state {} attempt {}", t.state, t.attempt),
                );
            }
        }
    }
}

/// No attempt above the database's ever ran; no attempt ran twice.
fn fencing_runs(id: i64, t: &DbTask, runs: &[AgentRun], v: &mut Violations, n: &mut Counts) {
    for r in runs {
        if r.attempt > t.attempt || r.attempt == 0 {
            n.doubled.insert(id);
            v.add(
                "fencing: an agent ran an attempt the database does not hold",
                format!("task {id}: ran attempt {}, database attempt {} (state {})", r.attempt, t.attempt, t.state),
            );
        }
    }
    let mut seen = HashSet::new();
    for r in runs {
        if !seen.insert(r.attempt) {
            n.doubled.insert(id);
            v.add("fencing: one attempt ran twice", format!("task {id} attempt {}", r.attempt));
        }
    }
}

/// The accepted result names the attempt that produced it: it must be the attempt the
/// database holds, and an agent run of that attempt must have succeeded.
fn accepted_result(id: i64, t: &DbTask, runs: &[AgentRun], v: &mut Violations, n: &mut Counts) {
    let out = t.output.clone().unwrap_or_default();
    let field = |k: &str| out.split_whitespace().find_map(|w| w.strip_prefix(k)).and_then(|x| x.parse::<i64>().ok());
    match (field("task="), field("attempt=")) {
        (Some(tid), Some(a)) if tid == id && a == i64::from(t.attempt) => {
            if !runs.iter().any(|r| r.attempt == t.attempt && r.succeeded()) {
                v.add("completed without an agent run of that attempt", format!("task {id} attempt {}", t.attempt));
            }
        }
        (Some(tid), Some(a)) => {
            n.doubled.insert(id);
            v.add(
                "fencing: accepted result of another attempt",
                format!("task {id} attempt {}: result says task {tid} attempt {a}", t.attempt),
            );
        }
        _ => v.add("completed without the agent's output", format!("task {id}: {out:?}")),
    }
}

/// [total, waiting, pending, in progress, completed, failed, cancelled] of a status.
fn status_counts(s: &pb::JobStatus) -> [u64; 7] {
    [s.total_tasks, s.waiting, s.pending, s.in_progress, s.completed, s.failed, s.cancelled]
}

/// The job's counts, wherever they are kept or reported, equal its tasks: the `jobs` row,
/// the coordinator's GetJob answer at the end, the last WatchJob event's status; and the
/// stream's last view of each task is the state the database holds.
fn job_counts(e: &Evidence, n: &Counts, v: &mut Violations) {
    let mut tasks = n.by_state;
    tasks[0] = e.db.tasks.len() as u64;
    match &e.db.counters {
        Some(c) if c.iter().map(|x| *x as u64).ne(tasks[1..].iter().copied()) => {
            v.add("job counters differ from the tasks", format!("jobs row {c:?}, tasks {:?}", &tasks[1..]));
        }
        Some(_) => {}
        None => v.add("job missing from the database", e.job.to_string()),
    }
    match &e.fig.final_status {
        Some(s) if status_counts(s) != tasks => v.add(
            "coordinator's job status differs from the tasks",
            format!("GetJob {:?}, tasks {tasks:?} (total, then per state)", status_counts(s)),
        ),
        Some(_) => {}
        None => v.add("coordinator's job status differs from the tasks", "no final GetJob answer".into()),
    }
    match &e.ws.last_status {
        Some(s) if status_counts(s) != tasks => v.add(
            "watch: job status differs from the tasks",
            format!("last event {:?}, tasks {tasks:?} (total, then per state)", status_counts(s)),
        ),
        Some(_) => {}
        None => v.add("watch: job status differs from the tasks", "no event with a status".into()),
    }
    for (id, t) in &e.db.tasks {
        let seen = e.ws.state.get(id).copied();
        if seen != Some(t.state as i32) {
            v.add(
                "watch: last state differs from the database",
                format!("task {id}: watch {seen:?}, database {}", t.state),
            );
        }
    }
}

/// No process outlived its worker; everything exited 0 on SIGTERM; the run was complete.
fn processes(e: &Evidence, v: &mut Violations) {
    let fig = e.fig;
    for (tag, _, left) in &fig.orphan_checks {
        if !left.is_empty() {
            v.add("processes outlived a SIGKILLed worker (10 s)", format!("{tag}: {left:?}"));
        }
    }
    for (pid, cmd) in &fig.leftover {
        v.add("process left running after the workers stopped", format!("pid {pid}: {cmd}"));
    }
    for pid in &fig.leftover_recorded {
        v.add("recorded agent pid still running", format!("pid {pid}"));
    }
    for w in &fig.worker_exit {
        v.add("worker did not exit 0 on SIGTERM", w.clone());
    }
    if !fig.coordinator_exit.is_empty() {
        v.add("coordinator did not exit 0 on SIGTERM", fig.coordinator_exit.clone());
    }
    if fig.timed_out {
        v.add("run did not finish within the deadline", format!("{:.0} s", fig.run_s));
    }
    if fig.coordinator_kills < e.args.coordinator_kills || fig.worker_kills < e.args.worker_kills {
        v.add("not every kill was done", format!("{} + {}", fig.coordinator_kills, fig.worker_kills));
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn task(state: i64) -> DbTask {
        DbTask {
            state,
            attempt: 1,
            lost_leases: 0,
            cancel_cause: 0,
            reason: String::new(),
            prompt: String::new(),
            output: None,
        }
    }

    fn status(total: u64, completed: u64, failed: u64) -> pb::JobStatus {
        pb::JobStatus { total_tasks: total, completed, failed, ..Default::default() }
    }

    /// Violations of [`job_counts`] for two tasks (completed, failed) in the database.
    fn job_count_violations(
        coordinator: pb::JobStatus,
        watched: pb::JobStatus,
        counters: [i64; 6],
    ) -> Vec<&'static str> {
        let args = Args::parse_from(["orca-chaos"]);
        let db = DbJob {
            integrity: "ok".into(),
            tasks: [(1, task(COMPLETED)), (2, task(FAILED))].into_iter().collect(),
            deps: HashMap::new(),
            counters: Some(counters),
            undecodable: Vec::new(),
        };
        let fig = Figures { final_status: Some(coordinator), ..Default::default() };
        let mut ws = WatchState { last_status: Some(watched), ..Default::default() };
        ws.state.extend([(1, COMPLETED as i32), (2, FAILED as i32)]);
        let (ledger, records) = (Ledger::default(), Records { runs: HashMap::new(), malformed: 0 });
        let e = Evidence { args: &args, job: "j", ledger: &ledger, ws: &ws, fig: &fig, db: &db, records: &records };
        let (mut v, mut n) = (Violations::default(), Counts::default());
        for t in db.tasks.values() {
            n.by_state[t.state as usize] += 1;
        }
        job_counts(&e, &n, &mut v);
        v.0.keys().copied().collect()
    }

    #[test]
    fn job_counts_that_match_the_tasks_pass() {
        assert!(job_count_violations(status(2, 1, 1), status(2, 1, 1), [0, 0, 0, 1, 1, 0]).is_empty());
    }

    #[test]
    fn a_count_that_differs_anywhere_is_a_violation() {
        let v = job_count_violations(status(2, 2, 0), status(2, 1, 1), [0, 0, 0, 1, 1, 0]);
        assert_eq!(v, ["coordinator's job status differs from the tasks"]);
        let v = job_count_violations(status(2, 1, 1), status(3, 1, 1), [0, 0, 0, 1, 1, 0]);
        assert_eq!(v, ["watch: job status differs from the tasks"]);
        let v = job_count_violations(status(2, 1, 1), status(2, 1, 1), [0, 0, 0, 2, 0, 0]);
        assert_eq!(v, ["job counters differ from the tasks"]);
    }
}
