//! The task state machine and the scheduler, as pure data: no tokio, no sqlx, no tonic.
//!
//! [`Scheduler`] holds every task that is not final yet (plus, until [`Scheduler::evict_final`],
//! the ones that became final in the current batch), the ready queues, the leases, the retry
//! backoffs and the connected workers. Every command takes the current time in milliseconds
//! and returns what happened as [`Effect`]s; the caller persists the touched rows, then
//! performs the effects (assignments, cancellations, events). Time and ids come from the
//! caller, so tests need no clock and no database.
//!
//! What stays true here (invariants 2-6 of docs/design.md):
//! - a task is in exactly one [`State`]; final states are final except through [`Scheduler::revive`];
//! - an in-progress task has exactly one lease, for one attempt; any report that does not
//!   carry the current attempt is rejected (fencing);
//! - a waiting task waits on unmet dependencies or on a retry backoff, never on nothing;
//! - a worker never holds more attempts than its slots;
//! - ready tasks are served highest priority first; at one priority the jobs share the
//!   workers by weight (stride scheduling, see `ready.rs`), FIFO within a job; per label set,
//!   so a task no worker can run never holds back another;
//! - a job that may start nothing (paused, over its budget, at its `max_running`) and a
//!   label value at its limit never hold back the ready tasks of others.

mod ids;
mod ready;
#[cfg(test)]
mod scheduling_tests;
#[cfg(test)]
mod tests;
pub mod throughput;

pub use ids::{JobId, TaskId, WorkerId};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use orca_proto::{defaults, pb};
use ready::ReadyQueues;

/// The state of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    Waiting,
    Pending,
    InProgress,
    Completed,
    Failed,
    Cancelled,
}

impl State {
    /// Every state, in the contract's order.
    pub const ALL: [State; 6] =
        [State::Waiting, State::Pending, State::InProgress, State::Completed, State::Failed, State::Cancelled];

    /// Completed, failed and cancelled are final.
    pub fn is_final(self) -> bool {
        matches!(self, State::Completed | State::Failed | State::Cancelled)
    }

    /// The stored and wire number (the proto enum value).
    pub fn as_i32(self) -> i32 {
        let s = match self {
            State::Waiting => pb::TaskState::Waiting,
            State::Pending => pb::TaskState::Pending,
            State::InProgress => pb::TaskState::InProgress,
            State::Completed => pb::TaskState::Completed,
            State::Failed => pb::TaskState::Failed,
            State::Cancelled => pb::TaskState::Cancelled,
        };
        s as i32
    }

    /// The inverse of [`State::as_i32`].
    pub fn from_i32(v: i32) -> Option<State> {
        Some(match pb::TaskState::try_from(v).ok()? {
            pb::TaskState::Unspecified => return None,
            pb::TaskState::Waiting => State::Waiting,
            pb::TaskState::Pending => State::Pending,
            pb::TaskState::InProgress => State::InProgress,
            pb::TaskState::Completed => State::Completed,
            pb::TaskState::Failed => State::Failed,
            pb::TaskState::Cancelled => State::Cancelled,
        })
    }

    /// The short lowercase name (the contract's).
    pub fn name(self) -> &'static str {
        orca_proto::contract::TASK_STATE_NAMES[self.as_i32() as usize - 1]
    }
}

/// Backoff between retries.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    pub initial_ms: u32,
    /// f32 keeps the entry small; a multiplier needs no more precision.
    pub multiplier: f32,
    pub max_ms: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_ms: defaults::INITIAL_BACKOFF_MS,
            multiplier: defaults::BACKOFF_MULTIPLIER as f32,
            max_ms: defaults::MAX_BACKOFF_MS,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based).
    pub fn backoff_ms(&self, retry: u32) -> u64 {
        let exp = retry.saturating_sub(1).min(64) as i32;
        let ms = self.initial_ms as f64 * (self.multiplier as f64).powi(exp);
        let max = self.max_ms as u64;
        if ms.is_finite() { (ms as u64).min(max) } else { max }
    }
}

/// Limits that apply to every task.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Lease of an assignment; extended by heartbeats.
    pub lease_ms: u64,
    /// Attempts lost to expired leases before the task is dead-lettered as failed.
    pub max_lease_losses: u32,
    /// A worker with no stream and no attempts is forgotten after this long.
    pub forget_worker_ms: u64,
    /// Bytes of encoded specs kept in memory for tasks waiting to run; past it a task's spec
    /// stays in the store until it is dispatched, so memory follows the number of live tasks,
    /// not their size.
    pub payload_cache_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            lease_ms: defaults::LEASE_SECONDS as u64 * 1_000,
            max_lease_losses: defaults::MAX_LEASE_LOSSES,
            forget_worker_ms: FORGET_WORKER_MS,
            payload_cache_bytes: PAYLOAD_CACHE_BYTES,
        }
    }
}

/// How long a worker with no stream and no attempts is remembered (its labels and slots).
/// Forgetting it costs nothing: a worker registers again before every Listen stream. It
/// bounds what registrations that never listen (or workers long gone) cost every new label
/// set.
pub const FORGET_WORKER_MS: u64 = 60 * 1_000;

/// Default of [`Limits::payload_cache_bytes`].
pub const PAYLOAD_CACHE_BYTES: usize = 256 << 20;

/// Required worker labels, sorted by key.
pub type Labels = BTreeMap<String, String>;

/// A task to add. Its id is allocated by the caller.
#[derive(Clone, Debug)]
pub struct NewTask {
    pub id: TaskId,
    pub priority: i32,
    /// Dependencies, the parent included; all of the same job.
    pub deps: Vec<TaskId>,
    pub labels: Labels,
    pub max_retries: u32,
    pub retry: RetryPolicy,
    /// The encoded spec, handed to the worker with the assignment; kept in memory while the
    /// payload budget allows, otherwise read from the store when the task is dispatched.
    pub payload: Option<Arc<[u8]>>,
    /// A git task that builds on another: its assignment carries that task's patches.
    pub git_chain: bool,
    /// The task is not ready before this time (ms; 0 for none).
    pub run_at_ms: u64,
}

/// What the scheduler must know of a task that is not in memory (a final task, read from
/// the store) to add a dependent of it or to bring it back.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredTask {
    pub id: TaskId,
    pub job: JobId,
    pub state: State,
    pub cancel_cause: Option<TaskId>,
}

/// A task that is not final, read from the store at start-up.
#[derive(Clone, Debug)]
pub struct Restored {
    pub job: JobId,
    pub task: NewTask,
    pub state: State,
    pub attempt: u32,
    pub retries_used: u32,
    pub lost_leases: u32,
    pub worker: Option<WorkerId>,
    pub not_before_ms: u64,
    pub reason: String,
}

/// A final task read back from the store to be revived by RetryTasks.
#[derive(Clone, Debug)]
pub struct RevivedTask {
    pub task: NewTask,
    pub job: JobId,
    pub state: State,
    pub attempt: u32,
    pub cancel_cause: Option<TaskId>,
    /// Why it failed (a failed task's reason), for the next attempt's prompt.
    pub previous_error: Option<Arc<str>>,
}

/// The lease of an in-progress attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct Lease {
    pub worker: WorkerId,
    pub expires_ms: u64,
}

/// A task held in memory.
#[derive(Clone, Debug)]
pub struct Entry {
    pub id: TaskId,
    pub job: JobId,
    pub state: State,
    pub priority: i32,
    /// Attempts dispatched so far; the current attempt's fencing token.
    pub attempt: u32,
    pub retries_used: u32,
    pub lost_leases: u32,
    pub max_retries: u32,
    pub retry: RetryPolicy,
    /// The interned set of required labels (its ready queue).
    pub label_set: usize,
    pub deps: Vec<TaskId>,
    /// Dependencies that have not completed yet.
    pub unmet: u32,
    /// Tasks that depend on this one.
    pub dependents: Vec<TaskId>,
    /// While waiting on a retry backoff: when the task becomes pending.
    pub not_before_ms: u64,
    pub lease: Option<Lease>,
    /// The worker of the current or last attempt.
    pub last_worker: Option<WorkerId>,
    /// The worker whose attempt was lost, failed or handed back: the next attempt goes to
    /// another worker when one that can run it is free.
    pub avoid: Option<WorkerId>,
    /// For a task cancelled because a dependency failed: the task at the root of it.
    pub cancel_cause: Option<TaskId>,
    pub reason: String,
    /// When it entered its state, and when it was added (or restored): the clock's low 32
    /// bits, so durations are right up to 49 days (wrapping differences; the entry stays small).
    pub since: u32,
    pub added: u32,
    /// The encoded spec while it is cached (see [`Limits::payload_cache_bytes`]).
    pub payload: Option<Arc<[u8]>>,
    ready_gen: u32,
    /// See [`NewTask::git_chain`].
    pub git_chain: bool,
}

/// Counts of a job's tasks by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub waiting: u64,
    pub pending: u64,
    pub in_progress: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.waiting + self.pending + self.in_progress + self.completed + self.failed + self.cancelled
    }

    pub fn all_final(&self) -> bool {
        self.total() > 0 && self.waiting + self.pending + self.in_progress == 0
    }

    pub fn get(&self, s: State) -> u64 {
        match s {
            State::Waiting => self.waiting,
            State::Pending => self.pending,
            State::InProgress => self.in_progress,
            State::Completed => self.completed,
            State::Failed => self.failed,
            State::Cancelled => self.cancelled,
        }
    }

    /// Adds another job's counts.
    pub fn merge(&mut self, o: &Counts) {
        for s in State::ALL {
            *self.slot(s) += o.get(s);
        }
    }

    fn slot(&mut self, s: State) -> &mut u64 {
        match s {
            State::Waiting => &mut self.waiting,
            State::Pending => &mut self.pending,
            State::InProgress => &mut self.in_progress,
            State::Completed => &mut self.completed,
            State::Failed => &mut self.failed,
            State::Cancelled => &mut self.cancelled,
        }
    }

    pub fn add(&mut self, s: State) {
        *self.slot(s) += 1;
    }

    pub fn sub(&mut self, s: State) {
        let v = self.slot(s);
        *v = v.saturating_sub(1);
    }
}

/// What the scheduler knows of a job.
#[derive(Clone, Debug, Default)]
pub struct JobInfo {
    pub counts: Counts,
    pub cancelled: bool,
    /// Sequence number of the job's last event.
    pub last_seq: u64,
    pub controls: Controls,
    pub spend: Spend,
    /// Taken out of the ready queues: see [`Scheduler::blocked_reason`].
    parked: bool,
}

/// A job's scheduling controls (CreateJob, UpdateJob).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Controls {
    /// Its share against other jobs at the same priority (at least 1).
    pub weight: u32,
    /// At most this many running attempts; 0 for no limit.
    pub max_running: u32,
    /// No new attempt once the job has spent this much (USD); 0 for no budget.
    pub budget_usd: f64,
    pub paused: bool,
}

impl Default for Controls {
    fn default() -> Self {
        Controls { weight: 1, max_running: 0, budget_usd: 0.0, paused: false }
    }
}

/// What a job's attempts reported spending.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spend {
    pub cost_usd: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Why a job with these controls, spend and counts may start no new attempt; `None` when
/// it may. The one rule for the scheduler (which parks the job) and the read side (which
/// shows the reason).
pub fn blocked_reason(c: &Controls, spend: &Spend, counts: &Counts) -> Option<String> {
    if c.paused {
        return Some("paused".into());
    }
    if c.budget_usd > 0.0 && spend.cost_usd >= c.budget_usd {
        return Some(format!("budget spent: ${:.2} of ${:.2}", spend.cost_usd, c.budget_usd));
    }
    if c.max_running > 0 && counts.in_progress >= c.max_running as u64 {
        return Some(format!("max_running reached: {} running", counts.in_progress));
    }
    None
}

/// At most `max` running tasks that require the label `key=value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelLimit {
    pub key: String,
    pub value: String,
    pub max: u32,
}

/// A connected or registered worker.
#[derive(Clone, Debug)]
pub struct Worker {
    pub labels: Labels,
    pub slots: u32,
    /// Attempts it holds.
    pub held: HashSet<(TaskId, u32)>,
    /// The open Listen stream, if any (its session number).
    pub session: Option<u64>,
    /// It let a lease expire: it gets no new work until it proves alive again (a heartbeat,
    /// a new stream or a registration). Its stream may look open when it is cut off.
    pub suspect: bool,
    /// Last registration, stream change or heartbeat (ms): when to forget it.
    pub seen_ms: u64,
    /// Drained by an operator (DrainWorker): no new work; what it runs finishes. Kept across
    /// its reconnects (not across a coordinator restart).
    pub draining: bool,
    eligible: Vec<usize>,
}

impl Worker {
    fn free(&self) -> u32 {
        self.slots.saturating_sub(self.held.len() as u32)
    }
}

/// Whether a free worker other than `wid` may serve queue `label_set`.
fn another_free(
    free: &BTreeSet<WorkerId>,
    workers: &HashMap<WorkerId, Worker>,
    wid: &WorkerId,
    label_set: usize,
) -> bool {
    free.iter().filter(|o| *o != wid).any(|o| workers.get(o).is_some_and(|w| w.eligible.contains(&label_set)))
}

/// How a task entering memory is linked into its dependencies' dependents lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// Restored at start-up: `finish_restore` links everything at once.
    No,
    /// A new task: its id is in no list yet.
    New,
    /// Brought back by RetryTasks: it may still be in a list.
    Revived,
}

/// What a report says about an attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Started,
    Progress(String),
    Completed,
    Failed { reason: String, retryable: bool },
    HandedBack { reason: String },
}

/// What happened, for the caller to persist and perform.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// A task changed state (or was created: `from` is `None`). `held_ms`: how long it was
    /// in `from`; `age_ms`: since it was added (both by the scheduler's clock, see
    /// [`Scheduler::set_clock`]; a task restored at start-up counts from the restart).
    Changed {
        id: TaskId,
        job: JobId,
        from: Option<State>,
        to: State,
        attempt: u32,
        reason: String,
        held_ms: u64,
        age_ms: u64,
        /// Leaving `in_progress`: the worker of the attempt that ended.
        worker: Option<WorkerId>,
    },
    /// Send this attempt to the worker; `payload` is its spec, or `None` when the caller must
    /// read it from the store.
    Assign {
        worker: WorkerId,
        id: TaskId,
        job: JobId,
        attempt: u32,
        lease_expires_ms: u64,
        payload: Option<Arc<[u8]>>,
        /// The error of the task's last failed attempt, when this one retries it.
        previous_error: Option<Arc<str>>,
        /// A git task that builds on another (the dispatcher adds the patches).
        git_chain: bool,
    },
    /// Tell the worker to stop this attempt.
    Revoke { worker: WorkerId, id: TaskId, attempt: u32, reason: String },
    /// Progress of a running attempt (not a state change).
    Progress { id: TaskId, job: JobId, attempt: u32, message: String },
    /// The job was cancelled (before the `Changed` effects of its tasks).
    JobCancelled { job: JobId, reason: String },
}

/// Why a command was refused. The caller maps it to a gRPC status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
}

/// The scheduler. See the module documentation.
#[derive(Debug, Default)]
pub struct Scheduler {
    limits: Limits,
    /// Boxed: the table then holds 16 bytes a task, so growing it copies little and its
    /// doubling does not double the memory of the entries.
    tasks: HashMap<TaskId, Box<Entry>>,
    jobs: HashMap<JobId, JobInfo>,
    workers: HashMap<WorkerId, Worker>,
    ready: ReadyQueues,
    /// (expires, task, attempt) of every lease.
    leases: BTreeSet<(u64, TaskId, u32)>,
    /// (not_before, task) of every task waiting on a backoff.
    backoffs: BTreeSet<(u64, TaskId)>,
    /// Tasks that became final and are still in memory until `evict_final`.
    finals: Vec<TaskId>,
    /// Workers with an open stream and a free slot.
    free_workers: BTreeSet<WorkerId>,
    /// Round-robin start for dispatch.
    cursor: Option<WorkerId>,
    /// When idle workers were last looked for (ms).
    swept_ms: u64,
    /// Bytes of the payloads held by entries.
    cached_bytes: usize,
    /// Pending tasks by priority (exact: kept by every change of state).
    pending_by_priority: BTreeMap<i32, u64>,
    /// The error of each live task's last failed attempt, given to the attempts after it
    /// (only tasks that failed an attempt and are not final are here).
    previous_errors: HashMap<TaskId, Arc<str>>,
    /// The time of the batch being applied (ms), for the timings of `Effect::Changed`.
    clock_ms: u64,
    totals: Totals,
    label_limits: Vec<LabelLimit>,
    /// Running tasks per label limit.
    label_running: Vec<u32>,
    /// The label limits each ready queue is subject to (by queue).
    queue_limits: Vec<Vec<usize>>,
}

/// Running totals since start-up, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Attempts lost to an expired lease or a worker that came back without them.
    pub lease_losses: u64,
    /// Failed attempts queued again after a backoff.
    pub retries: u64,
    /// Tasks failed for good.
    pub dead_lettered: u64,
}

impl Scheduler {
    pub fn new(limits: Limits) -> Self {
        Scheduler { limits, ..Default::default() }
    }

    /// Sets the limits on running tasks per label value (before any task is added).
    pub fn set_label_limits(&mut self, limits: Vec<LabelLimit>) {
        self.label_running = vec![0; limits.len()];
        self.label_limits = limits;
    }

    /// The label limits with their running counts.
    #[cfg(test)]
    pub fn label_limits(&self) -> impl Iterator<Item = (&LabelLimit, u32)> {
        self.label_limits.iter().zip(self.label_running.iter().copied())
    }

    /// Sets the time the next changes happen at (the dispatcher calls it once per batch).
    pub fn set_clock(&mut self, now: u64) {
        self.clock_ms = now;
    }

    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// Every job's counts added up, and the number of jobs.
    pub fn counts(&self) -> (Counts, usize) {
        let mut c = Counts::default();
        for info in self.jobs.values() {
            c.merge(&info.counts);
        }
        (c, self.jobs.len())
    }

    // ----- reads -----

    pub fn task(&self, id: TaskId) -> Option<&Entry> {
        self.tasks.get(&id).map(|e| &**e)
    }

    pub fn job(&self, job: &JobId) -> Option<&JobInfo> {
        self.jobs.get(job)
    }

    pub fn worker(&self, id: &WorkerId) -> Option<&Worker> {
        self.workers.get(id)
    }

    pub fn live_tasks(&self) -> usize {
        self.tasks.len()
    }

    pub fn workers(&self) -> impl Iterator<Item = (&WorkerId, &Worker)> {
        self.workers.iter()
    }

    /// Pending tasks by priority, highest first (levels with none left out).
    pub fn pending_by_priority(&self) -> Vec<(i32, u64)> {
        self.pending_by_priority.iter().rev().map(|(&p, &n)| (p, n)).collect()
    }

    /// Drains a worker (no new work; what it runs finishes) or resumes it.
    pub fn set_draining(&mut self, id: &WorkerId, on: bool) -> Result<(), Refusal> {
        let w = self.workers.get_mut(id).ok_or_else(|| Refusal::NotFound(format!("worker {id} not found")))?;
        w.draining = on;
        self.refresh_free(id);
        Ok(())
    }

    /// Keeps `pending_by_priority` and the running tasks per label limit when a task of
    /// `priority` and `label_set` leaves `from` or enters `to`.
    fn count_pending(&mut self, priority: i32, label_set: usize, from: Option<State>, to: Option<State>) {
        if from == to {
            return;
        }
        let running = |s: Option<State>| i32::from(s == Some(State::InProgress));
        let delta = running(to) - running(from);
        if delta != 0 {
            for &l in self.queue_limits.get(label_set).into_iter().flatten() {
                self.label_running[l] = self.label_running[l].saturating_add_signed(delta);
            }
        }
        if from == Some(State::Pending)
            && let Some(n) = self.pending_by_priority.get_mut(&priority)
        {
            *n -= 1;
            if *n == 0 {
                self.pending_by_priority.remove(&priority);
            }
        }
        if to == Some(State::Pending) {
            *self.pending_by_priority.entry(priority).or_default() += 1;
        }
    }

    /// Allocates the job's next event sequence number.
    /// The job's next event sequence number (0 for a job no longer known: deleted).
    pub fn next_seq(&mut self, job: &JobId) -> u64 {
        let Some(info) = self.jobs.get_mut(job) else { return 0 };
        info.last_seq += 1;
        info.last_seq
    }

    /// Sets a job's controls (at creation, restore or UpdateJob).
    pub fn set_controls(&mut self, job: &JobId, controls: Controls) -> Result<(), Refusal> {
        let info = self.jobs.get_mut(job).ok_or_else(|| Refusal::NotFound(format!("job {job} not found")))?;
        info.controls = controls;
        self.ready.set_stride(job, ready::stride(controls.weight));
        self.refresh_job(job);
        Ok(())
    }

    /// Adds what an attempt of the job reported spending (or sets it at restore).
    pub fn charge(&mut self, job: &JobId, spend: Spend) {
        if let Some(info) = self.jobs.get_mut(job) {
            info.spend.cost_usd += spend.cost_usd;
            info.spend.input_tokens += spend.input_tokens;
            info.spend.output_tokens += spend.output_tokens;
            self.refresh_job(job);
        }
    }

    /// Why the job may start no new attempt, if it may not.
    #[cfg(test)]
    pub fn blocked_reason(&self, job: &JobId) -> Option<String> {
        let info = self.jobs.get(job)?;
        blocked_reason(&info.controls, &info.spend, &info.counts)
    }

    /// Parks a job that may start nothing, or brings it back.
    fn refresh_job(&mut self, job: &JobId) {
        let Some(info) = self.jobs.get_mut(job) else { return };
        let blocked = blocked_reason(&info.controls, &info.spend, &info.counts).is_some();
        if blocked != info.parked {
            info.parked = blocked;
            self.ready.park(job, blocked);
        }
    }

    /// The earliest lease expiry or backoff end, if any.
    pub fn next_deadline(&self) -> Option<u64> {
        let l = self.leases.first().map(|(t, _, _)| *t);
        let b = self.backoffs.first().map(|(t, _)| *t);
        match (l, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ----- jobs -----

    /// Adds a job (new, or loaded from the store with its counts).
    pub fn insert_job(&mut self, job: JobId, counts: Counts, cancelled: bool, last_seq: u64) {
        let info = self.jobs.entry(job).or_default();
        info.counts = counts;
        info.cancelled = cancelled;
        info.last_seq = last_seq;
    }

    /// Cancels every task of the job that is not final; the job takes no new task.
    pub fn cancel_job(&mut self, job: &JobId, reason: &str) -> Result<Vec<Effect>, Refusal> {
        let info = self.jobs.get_mut(job).ok_or_else(|| Refusal::NotFound(format!("job {job} not found")))?;
        info.cancelled = true;
        // A rare call: a scan of the tasks in memory instead of an index kept per job.
        let mut ids: Vec<TaskId> =
            self.tasks.values().filter(|e| &e.job == job && !e.state.is_final()).map(|e| e.id).collect();
        ids.sort();
        let mut fx = vec![Effect::JobCancelled { job: job.clone(), reason: reason.to_string() }];
        for id in ids {
            if self.tasks.get(&id).is_some_and(|e| !e.state.is_final()) {
                self.finish(id, State::Cancelled, reason.to_string(), None, &mut fx);
            }
        }
        // Every queued entry of the job is stale now (a parked job's would stay otherwise).
        self.ready.forget(job);
        Ok(fx)
    }

    // ----- tasks -----

    /// Checks a batch before [`Scheduler::add_tasks`]: the job exists and is not cancelled,
    /// every dependency exists (in memory, in the batch before the task, or in `stored`) and
    /// belongs to the job. Dependencies can only name existing or earlier tasks, so no cycle
    /// can be formed.
    pub fn check_add(
        &self,
        job: &JobId,
        tasks: &[NewTask],
        stored: &HashMap<TaskId, StoredTask>,
    ) -> Result<(), Refusal> {
        let info = self.jobs.get(job).ok_or_else(|| Refusal::NotFound(format!("job {job} not found")))?;
        if info.cancelled {
            return Err(Refusal::FailedPrecondition(format!("job {job} is cancelled")));
        }
        let mut earlier: HashSet<TaskId> = HashSet::new();
        for (i, t) in tasks.iter().enumerate() {
            for d in &t.deps {
                let dep_job = if earlier.contains(d) {
                    Some(job)
                } else if let Some(e) = self.tasks.get(d) {
                    Some(&e.job)
                } else {
                    stored.get(d).map(|s| &s.job)
                };
                match dep_job {
                    None if *d == t.id => {
                        return Err(Refusal::InvalidArgument(format!(
                            "tasks[{i}].depends_on: a task cannot depend on itself (a cycle)"
                        )));
                    }
                    None => {
                        return Err(Refusal::NotFound(format!("tasks[{i}].depends_on: task {d} not found")));
                    }
                    Some(j) if j != job => {
                        return Err(Refusal::InvalidArgument(format!(
                            "tasks[{i}].depends_on: task {d} belongs to job {j}, not {job}"
                        )));
                    }
                    Some(_) => {}
                }
            }
            earlier.insert(t.id);
        }
        Ok(())
    }

    /// Adds a checked batch (see [`Scheduler::check_add`]).
    pub fn add_tasks(&mut self, job: &JobId, tasks: Vec<NewTask>, stored: &HashMap<TaskId, StoredTask>) -> Vec<Effect> {
        let mut fx = Vec::with_capacity(tasks.len());
        for t in tasks {
            let id = t.id;
            self.insert_entry(job.clone(), t, State::Waiting, 0, None, Link::New);
            self.jobs.entry(job.clone()).or_default().counts.add(State::Waiting);
            fx.push(Effect::Changed {
                id,
                job: job.clone(),
                from: None,
                to: State::Waiting,
                attempt: 0,
                reason: String::new(),
                held_ms: 0,
                age_ms: 0,
                worker: None,
            });
            self.settle(id, stored, &mut fx);
        }
        fx
    }

    /// Loads a task that is not final from the store at start-up, in any order; call
    /// [`Scheduler::finish_restore`] once all are loaded. Pending tasks queue in load order.
    pub fn restore_task(&mut self, r: Restored, now: u64) {
        let id = r.task.id;
        let (state, attempt) = (r.state, r.attempt);
        self.insert_entry(r.job, r.task, state, attempt, r.worker.clone(), Link::No);
        let lease_ms = self.limits.lease_ms;
        let e = self.tasks.get_mut(&id).expect("just inserted");
        e.retries_used = r.retries_used;
        e.lost_leases = r.lost_leases;
        if state == State::Waiting && r.not_before_ms > 0 && !r.reason.is_empty() {
            // Waiting on a retry backoff: the reason says which attempt failed and why.
            self.previous_errors.insert(id, Arc::from(r.reason.as_str()));
        }
        e.reason = r.reason;
        match state {
            State::Pending => self.push_ready(id),
            State::Waiting if r.not_before_ms > 0 => {
                e.not_before_ms = r.not_before_ms;
                self.backoffs.insert((r.not_before_ms, id));
            }
            State::InProgress => {
                // Leases are not persisted per heartbeat: the worker gets a full lease from
                // the restart to reconnect and claim the attempt.
                let worker = r.worker.unwrap_or_else(|| WorkerId::from("unknown"));
                let expires_ms = now + lease_ms;
                e.lease = Some(Lease { worker: worker.clone(), expires_ms });
                self.leases.insert((expires_ms, id, attempt));
                // The worker entry is made when the worker registers again.
                let w = self.workers.entry(worker).or_insert_with(|| Worker {
                    labels: Labels::new(),
                    slots: 0,
                    held: HashSet::new(),
                    session: None,
                    suspect: false,
                    seen_ms: now,
                    draining: false,
                    eligible: Vec::new(),
                });
                w.held.insert((id, attempt));
            }
            _ => {}
        }
    }

    /// Links the restored tasks to their dependencies: dependencies still in memory are not
    /// completed, so they count as unmet; a waiting task with none left becomes pending.
    pub fn finish_restore(&mut self) {
        let mut links: Vec<(TaskId, TaskId)> = Vec::new();
        for e in self.tasks.values() {
            for d in &e.deps {
                if self.tasks.contains_key(d) {
                    links.push((*d, e.id));
                }
            }
        }
        links.sort_unstable();
        for (dep, dependent) in links {
            if let Some(d) = self.tasks.get_mut(&dep) {
                d.dependents.push(dependent);
            }
            if let Some(e) = self.tasks.get_mut(&dependent)
                && e.state == State::Waiting
            {
                e.unmet += 1;
            }
        }
        let mut ready: Vec<TaskId> = self
            .tasks
            .values()
            .filter(|e| e.state == State::Waiting && e.unmet == 0 && e.not_before_ms == 0)
            .map(|e| e.id)
            .collect();
        ready.sort_unstable();
        let mut fx = Vec::new();
        for id in ready {
            self.transition(id, State::Pending, String::new(), &mut fx);
            self.push_ready(id);
        }
    }

    /// Forgets a job whose tasks are all final (or that has none), for DeleteJob and
    /// retention; returns its counts. Its final tasks are no longer in memory.
    pub fn remove_job(&mut self, job: &JobId) -> Result<Counts, Refusal> {
        let info = self.jobs.get(job).ok_or_else(|| Refusal::NotFound(format!("job {job} not found")))?;
        let c = info.counts;
        let live = c.waiting + c.pending + c.in_progress;
        if live > 0 {
            return Err(Refusal::FailedPrecondition(format!(
                "job {job} has {live} tasks that are not final; cancel it or wait for them first"
            )));
        }
        self.jobs.remove(job);
        self.ready.forget(job);
        Ok(c)
    }

    /// Cancels one task that is not final (and, through the cascade, its dependents).
    pub fn cancel_task(&mut self, id: TaskId, reason: &str) -> Result<Vec<Effect>, Refusal> {
        let e = self.tasks.get(&id).ok_or_else(|| Refusal::NotFound(format!("task {id} not found")))?;
        if e.state.is_final() {
            return Err(Refusal::FailedPrecondition(format!("task {id} is already {}", e.state.name())));
        }
        let mut fx = Vec::new();
        self.finish(id, State::Cancelled, reason.to_string(), None, &mut fx);
        Ok(fx)
    }

    /// Brings final tasks back (RetryTasks): each comes back waiting or pending with a fresh
    /// retry budget; a task that still depends on a failed or cancelled task stays cancelled,
    /// with that task as its cause. Give them in id order, roots and their cancelled
    /// dependents together; `stored` holds the final dependencies that are not revived.
    pub fn revive(&mut self, revived: Vec<RevivedTask>, stored: &HashMap<TaskId, StoredTask>) -> Vec<Effect> {
        let mut fx = Vec::new();
        for r in revived {
            let id = r.task.id;
            if self.tasks.get(&id).is_some_and(|e| !e.state.is_final()) {
                continue;
            }
            let from = r.state;
            self.remove_entry(id);
            if let Some(err) = r.previous_error {
                self.previous_errors.insert(id, err);
            }
            self.insert_entry(r.job.clone(), r.task, State::Waiting, r.attempt, None, Link::Revived);
            let info = self.jobs.entry(r.job.clone()).or_default();
            info.counts.sub(from);
            info.counts.add(State::Waiting);
            fx.push(Effect::Changed {
                id,
                job: r.job.clone(),
                from: Some(from),
                to: State::Waiting,
                attempt: r.attempt,
                reason: "retried".to_string(),
                held_ms: 0,
                age_ms: 0,
                worker: None,
            });
            self.settle(id, stored, &mut fx);
        }
        fx
    }

    // ----- workers -----

    /// Registers a worker (or registers it again after a reconnect). Of the attempts it says
    /// it runs, those that are current stay its own; the others are returned as stale.
    pub fn register(
        &mut self,
        id: WorkerId,
        labels: Labels,
        slots: u32,
        running: &[(TaskId, u32)],
        now: u64,
    ) -> (Vec<(TaskId, u32)>, Vec<Effect>) {
        let mut held = HashSet::new();
        let mut stale = Vec::new();
        for &(t, a) in running {
            let current = self.tasks.get(&t).is_some_and(|e| {
                e.state == State::InProgress && e.attempt == a && e.lease.as_ref().is_some_and(|l| l.worker == id)
            });
            if current {
                held.insert((t, a));
            } else {
                stale.push((t, a));
            }
        }
        let previous: Vec<(TaskId, u32)> =
            self.workers.get(&id).map(|w| w.held.iter().copied().collect()).unwrap_or_default();
        let session = self.workers.get(&id).and_then(|w| w.session);
        let draining = self.workers.get(&id).is_some_and(|w| w.draining);
        let eligible = self.ready.eligible(&labels);
        self.workers.insert(
            id.clone(),
            Worker { labels, slots, held: held.clone(), session, suspect: false, seen_ms: now, draining, eligible },
        );
        // Attempts the coordinator believes the worker holds but it did not name are gone
        // (it restarted, or dropped them): they run again now, not when their lease expires.
        let mut lost: Vec<(TaskId, u32)> = previous.into_iter().filter(|k| !held.contains(k)).collect();
        lost.sort_unstable();
        let mut fx = Vec::new();
        for (t, a) in lost {
            let current = self.tasks.get(&t).is_some_and(|e| e.state == State::InProgress && e.attempt == a);
            if current {
                self.lose_attempt(t, format!("attempt {a} not named by worker {id} when it registered again"), &mut fx);
            }
        }
        self.refresh_free(&id);
        (stale, fx)
    }

    /// The worker's Listen stream opened (session number `session`).
    pub fn connect(&mut self, id: &WorkerId, session: u64, now: u64) -> Result<(), Refusal> {
        let w = self
            .workers
            .get_mut(id)
            .ok_or_else(|| Refusal::NotFound(format!("worker {id} not found: call Register first")))?;
        w.session = Some(session);
        w.suspect = false;
        w.seen_ms = now;
        self.refresh_free(id);
        Ok(())
    }

    /// The worker's Listen stream `session` closed. Its leases are no longer extended.
    pub fn disconnect(&mut self, id: &WorkerId, session: u64, now: u64) {
        if let Some(w) = self.workers.get_mut(id)
            && w.session == Some(session)
        {
            w.session = None;
            w.seen_ms = now;
        }
        self.refresh_free(id);
    }

    /// Extends the leases of the attempts the worker names; returns the ones it must stop.
    /// Refused when the worker has no open stream (liveness is tied to the stream).
    pub fn heartbeat(
        &mut self,
        id: &WorkerId,
        running: &[(TaskId, u32)],
        now: u64,
    ) -> Result<(Vec<(TaskId, u32)>, u64), Refusal> {
        let w = self.workers.get(id).ok_or_else(|| Refusal::NotFound(format!("worker {id} not found")))?;
        if w.session.is_none() {
            return Err(Refusal::FailedPrecondition(format!(
                "worker {id} has no open Listen stream; leases are extended only while it is open"
            )));
        }
        let expires = now + self.limits.lease_ms;
        let mut stale = Vec::new();
        for &(t, a) in running {
            match self.tasks.get_mut(&t) {
                Some(e)
                    if e.state == State::InProgress
                        && e.attempt == a
                        && e.lease.as_ref().is_some_and(|l| &l.worker == id) =>
                {
                    let lease = e.lease.as_mut().expect("checked");
                    self.leases.remove(&(lease.expires_ms, t, a));
                    lease.expires_ms = expires;
                    self.leases.insert((expires, t, a));
                }
                _ => stale.push((t, a)),
            }
        }
        if let Some(w) = self.workers.get_mut(id) {
            w.seen_ms = now;
            if w.suspect {
                w.suspect = false;
                self.refresh_free(id);
            }
        }
        Ok((stale, expires))
    }

    /// Applies a worker's report on an attempt, after checking its fencing token.
    pub fn report(
        &mut self,
        worker: &WorkerId,
        id: TaskId,
        attempt: u32,
        outcome: Outcome,
        now: u64,
    ) -> Result<Vec<Effect>, Refusal> {
        let e = self.tasks.get(&id).ok_or_else(|| {
            Refusal::FailedPrecondition(format!("task {id} attempt {attempt} is stale (task is not running)"))
        })?;
        if e.state != State::InProgress {
            return Err(Refusal::FailedPrecondition(format!(
                "task {id} attempt {attempt} is stale (task is {})",
                e.state.name()
            )));
        }
        if e.attempt != attempt {
            return Err(Refusal::FailedPrecondition(format!(
                "task {id} attempt {attempt} is stale (current attempt {})",
                e.attempt
            )));
        }
        if e.lease.as_ref().is_none_or(|l| &l.worker != worker) {
            return Err(Refusal::FailedPrecondition(format!(
                "task {id} attempt {attempt} is not leased to worker {worker}"
            )));
        }
        let job = e.job.clone();
        let mut fx = Vec::new();
        match outcome {
            Outcome::Started => {}
            Outcome::Progress(message) => fx.push(Effect::Progress { id, job, attempt, message }),
            Outcome::Completed => self.finish(id, State::Completed, String::new(), None, &mut fx),
            Outcome::Failed { reason, retryable } => self.attempt_failed(id, reason, retryable, now, &mut fx),
            Outcome::HandedBack { reason } => {
                self.release_lease(id);
                self.transition(id, State::Pending, format!("handed back: {reason}"), &mut fx);
                self.push_ready(id);
            }
        }
        Ok(fx)
    }

    // ----- time and dispatch -----

    /// Expires leases and ends backoffs that are due; forgets idle workers now and then.
    pub fn tick(&mut self, now: u64) -> Vec<Effect> {
        let mut fx = Vec::new();
        if now.saturating_sub(self.swept_ms) >= self.limits.forget_worker_ms / 10 {
            self.swept_ms = now;
            self.forget_idle_workers(now);
        }
        while let Some(&(at, id, attempt)) = self.leases.first() {
            if at > now {
                break;
            }
            self.leases.pop_first();
            let Some(e) = self.tasks.get_mut(&id) else { continue };
            if e.state != State::InProgress || e.attempt != attempt {
                continue;
            }
            // A worker that let a lease expire gets no new work until it shows it is alive.
            let lease_worker = e.lease.as_ref().map(|l| l.worker.clone());
            if let Some(w) = lease_worker.as_ref().and_then(|w| self.workers.get_mut(w)) {
                w.suspect = true;
            }
            let worker = lease_worker.map(|w| w.to_string()).unwrap_or_default();
            self.lose_attempt(id, format!("lease of attempt {attempt} expired (worker {worker})"), &mut fx);
        }
        while let Some(&(at, id)) = self.backoffs.first() {
            if at > now {
                break;
            }
            self.backoffs.pop_first();
            let Some(e) = self.tasks.get_mut(&id) else { continue };
            if e.state != State::Waiting || e.not_before_ms != at {
                continue;
            }
            e.not_before_ms = 0;
            if e.unmet == 0 {
                self.transition(id, State::Pending, String::new(), &mut fx);
                self.push_ready(id);
            }
        }
        fx
    }

    /// Assigns ready tasks to connected workers with free slots, one task per worker per
    /// round so that work spreads across the pool.
    pub fn dispatch(&mut self, now: u64) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.ready.is_empty() || self.free_workers.is_empty() {
            return fx;
        }
        let start = self.cursor.clone();
        let mut order: Vec<WorkerId> = match &start {
            Some(c) => {
                self.free_workers.range(c.clone()..).chain(self.free_workers.range(..c.clone())).cloned().collect()
            }
            None => self.free_workers.iter().cloned().collect(),
        };
        while !order.is_empty() && !self.ready.is_empty() {
            let mut next_round = Vec::with_capacity(order.len());
            for wid in order {
                let Some(w) = self.workers.get(&wid) else { continue };
                let (free, workers) = (&self.free_workers, &self.workers);
                let skip = |e: &Entry| e.avoid.as_ref() == Some(&wid) && another_free(free, workers, &wid, e.label_set);
                let (limits, running, queue_limits) = (&self.label_limits, &self.label_running, &self.queue_limits);
                let closed = |q: usize| queue_limits[q].iter().any(|&l| running[l] >= limits[l].max);
                let Some(id) = self.ready.pop_for(&w.eligible, &self.tasks, closed, skip) else { continue };
                self.assign(id, &wid, now, &mut fx);
                self.cursor = Some(wid.clone());
                if self.workers.get(&wid).is_some_and(|w| w.free() > 0) {
                    next_round.push(wid);
                }
                if self.ready.is_empty() {
                    break;
                }
            }
            order = next_round;
        }
        // Start the next dispatch after the last worker served.
        if let Some(c) = &self.cursor {
            self.cursor = self
                .free_workers
                .range((std::ops::Bound::Excluded(c.clone()), std::ops::Bound::Unbounded))
                .next()
                .cloned();
        }
        fx
    }

    /// Forgets the tasks that became final; call after their rows were persisted.
    pub fn evict_final(&mut self) {
        for id in std::mem::take(&mut self.finals) {
            if self.tasks.get(&id).is_some_and(|e| e.state.is_final()) {
                self.remove_entry(id);
            }
        }
    }

    // ----- internals -----

    fn insert_entry(
        &mut self,
        job: JobId,
        t: NewTask,
        state: State,
        attempt: u32,
        worker: Option<WorkerId>,
        link: Link,
    ) {
        for d in t.deps.iter().filter(|_| link != Link::No) {
            // A new id is in no list yet (and its dependencies are distinct), so only a
            // revived task needs the check: linear work for new tasks, whatever the fan-in.
            if let Some(dep) = self.tasks.get_mut(d)
                && (link == Link::New || !dep.dependents.contains(&t.id))
            {
                dep.dependents.push(t.id);
            }
        }
        let (label_set, new_set) = self.ready.intern(&t.labels);
        if new_set {
            let labels = self.ready.labels(label_set);
            let limits = (self.label_limits.iter().enumerate())
                .filter(|(_, l)| labels.get(&l.key) == Some(&l.value))
                .map(|(i, _)| i)
                .collect();
            self.queue_limits.push(limits);
            // A new label set: each known worker is checked against it once (workers are
            // forgotten when idle, so this is bounded by the live fleet).
            for w in self.workers.values_mut() {
                if self.ready.serves(label_set, &w.labels) {
                    w.eligible.push(label_set);
                }
            }
        }
        self.jobs.entry(job.clone()).or_default();
        self.count_pending(t.priority, label_set, None, Some(state));
        // A restored task's wait is its stored not_before; a new or revived one's is run_at.
        let not_before_ms = if link != Link::No && t.run_at_ms > self.clock_ms { t.run_at_ms } else { 0 };
        if not_before_ms > 0 {
            self.backoffs.insert((not_before_ms, t.id));
        }
        let payload = t.payload.filter(|p| self.cached_bytes + p.len() <= self.limits.payload_cache_bytes);
        self.cached_bytes += payload.as_ref().map_or(0, |p| p.len());
        self.tasks.insert(
            t.id,
            Box::new(Entry {
                id: t.id,
                job,
                state,
                priority: t.priority,
                attempt,
                retries_used: 0,
                lost_leases: 0,
                max_retries: t.max_retries,
                retry: t.retry,
                label_set,
                deps: t.deps,
                unmet: 0,
                dependents: Vec::new(),
                not_before_ms,
                lease: None,
                last_worker: worker,
                avoid: None,
                cancel_cause: None,
                reason: String::new(),
                since: self.clock_ms as u32,
                added: self.clock_ms as u32,
                payload,
                ready_gen: 0,
                git_chain: t.git_chain,
            }),
        );
    }

    /// Decides where a waiting task goes from its dependencies: cancelled if one failed or
    /// was cancelled, waiting while some are unmet, pending otherwise.
    fn settle(&mut self, id: TaskId, stored: &HashMap<TaskId, StoredTask>, fx: &mut Vec<Effect>) {
        let deps = self.tasks[&id].deps.clone();
        let mut unmet = 0;
        let mut blocked_by: Option<(TaskId, State, Option<TaskId>)> = None;
        for d in deps {
            let (state, cause) = match self.tasks.get(&d) {
                Some(e) => (e.state, e.cancel_cause),
                None => match stored.get(&d) {
                    Some(s) => (s.state, s.cancel_cause),
                    // Checked before: the dependency completed earlier and left memory.
                    None => (State::Completed, None),
                },
            };
            match state {
                State::Completed => {}
                State::Failed | State::Cancelled => {
                    if blocked_by.is_none() {
                        blocked_by = Some((d, state, cause));
                    }
                }
                _ => unmet += 1,
            }
        }
        if let Some((d, state, cause)) = blocked_by {
            let root = cause.unwrap_or(d);
            let reason = format!("dependency {d} {}", state.name());
            self.finish(id, State::Cancelled, reason, Some(root), fx);
            return;
        }
        let e = self.tasks.get_mut(&id).expect("settled task is in memory");
        e.unmet = unmet;
        e.cancel_cause = None;
        if unmet == 0 && e.not_before_ms == 0 {
            self.transition(id, State::Pending, String::new(), fx);
            self.push_ready(id);
        }
    }

    fn transition(&mut self, id: TaskId, to: State, reason: String, fx: &mut Vec<Effect>) {
        let e = self.tasks.get_mut(&id).expect("transition of a task in memory");
        let from = e.state;
        e.state = to;
        let (priority, label_set) = (e.priority, e.label_set);
        self.count_pending(priority, label_set, Some(from), Some(to));
        let e = self.tasks.get_mut(&id).expect("transition of a task in memory");
        let now = self.clock_ms as u32;
        let held_ms = now.wrapping_sub(e.since) as u64;
        let age_ms = now.wrapping_sub(e.added) as u64;
        e.since = now;
        match to {
            State::Failed => self.totals.dead_lettered += 1,
            State::Waiting if from == State::InProgress => self.totals.retries += 1,
            _ => {}
        }
        if !reason.is_empty() || to == State::Pending {
            e.reason = reason.clone();
        }
        if let Some(info) = self.jobs.get_mut(&e.job) {
            info.counts.sub(from);
            info.counts.add(to);
        }
        let worker = if from == State::InProgress { e.last_worker.clone() } else { None };
        let (job, attempt) = (e.job.clone(), e.attempt);
        if from == State::InProgress || to == State::InProgress {
            self.refresh_job(&job);
        }
        fx.push(Effect::Changed { id, job, from: Some(from), to, attempt, reason, held_ms, age_ms, worker });
    }

    fn push_ready(&mut self, id: TaskId) {
        let e = self.tasks.get_mut(&id).expect("ready task is in memory");
        e.ready_gen = e.ready_gen.wrapping_add(1);
        let (stride, parked) = match self.jobs.get(&e.job) {
            Some(j) => (ready::stride(j.controls.weight), j.parked),
            None => (ready::stride(1), false),
        };
        self.ready.push(e, stride, parked);
    }

    fn assign(&mut self, id: TaskId, worker: &WorkerId, now: u64, fx: &mut Vec<Effect>) {
        let expires_ms = now + self.limits.lease_ms;
        let e = self.tasks.get_mut(&id).expect("assigned task is in memory");
        e.attempt += 1;
        e.lease = Some(Lease { worker: worker.clone(), expires_ms });
        e.last_worker = Some(worker.clone());
        e.avoid = None;
        let (attempt, git_chain) = (e.attempt, e.git_chain);
        let job = e.job.clone();
        // The worker gets the spec now; a later attempt reads it from the store again.
        let payload = e.payload.take();
        self.cached_bytes -= payload.as_ref().map_or(0, |p| p.len());
        self.leases.insert((expires_ms, id, attempt));
        if let Some(w) = self.workers.get_mut(worker) {
            w.held.insert((id, attempt));
        }
        self.refresh_free(worker);
        self.transition(id, State::InProgress, String::new(), fx);
        let previous_error = self.previous_errors.get(&id).cloned();
        fx.push(Effect::Assign {
            worker: worker.clone(),
            id,
            job,
            attempt,
            lease_expires_ms: expires_ms,
            payload,
            previous_error,
            git_chain,
        });
    }

    /// An attempt was lost (lease expired, or its worker came back without it): the task is
    /// queued again, or failed once it lost too many.
    fn lose_attempt(&mut self, id: TaskId, reason: String, fx: &mut Vec<Effect>) {
        let e = self.tasks.get_mut(&id).expect("lost attempt of a task in memory");
        e.lost_leases += 1;
        self.totals.lease_losses += 1;
        let lost = e.lost_leases;
        if lost >= self.limits.max_lease_losses {
            let reason = format!("{reason}; {lost} attempts lost, giving up");
            self.finish(id, State::Failed, reason, None, fx);
        } else {
            self.release_lease(id);
            self.transition(id, State::Pending, reason, fx);
            self.push_ready(id);
        }
    }

    fn release_lease(&mut self, id: TaskId) {
        let e = self.tasks.get_mut(&id).expect("leased task is in memory");
        if let Some(lease) = e.lease.take() {
            self.leases.remove(&(lease.expires_ms, id, e.attempt));
            e.avoid = Some(lease.worker.clone());
            if let Some(w) = self.workers.get_mut(&lease.worker) {
                w.held.remove(&(id, e.attempt));
            }
            self.refresh_free(&lease.worker);
        }
    }

    fn attempt_failed(&mut self, id: TaskId, reason: String, retryable: bool, now: u64, fx: &mut Vec<Effect>) {
        let e = &self.tasks[&id];
        if retryable && e.retries_used < e.max_retries {
            self.release_lease(id);
            let e = self.tasks.get_mut(&id).expect("in memory");
            e.retries_used += 1;
            let wait = e.retry.backoff_ms(e.retries_used);
            let at = now + wait;
            e.not_before_ms = at;
            self.previous_errors.insert(id, Arc::from(reason.as_str()));
            let reason = format!(
                "attempt {} failed: {reason}; retry {} of {} in {wait} ms",
                e.attempt, e.retries_used, e.max_retries
            );
            self.backoffs.insert((at, id));
            self.transition(id, State::Waiting, reason, fx);
        } else {
            self.finish(id, State::Failed, reason, None, fx);
        }
    }

    /// Moves a task to a final state and cascades a failure or cancellation to the tasks
    /// that depend on it, or a completion to the ones waiting for it. The cascade walks the
    /// graph with an explicit stack (depth first, dependents in order), never by recursion:
    /// a chain of any length costs memory on the heap, not on the thread's stack.
    fn finish(&mut self, id: TaskId, to: State, reason: String, cause: Option<TaskId>, fx: &mut Vec<Effect>) {
        let mut stack = vec![(id, to, reason, cause)];
        while let Some((id, to, reason, cause)) = stack.pop() {
            if self.tasks.get(&id).is_none_or(|e| e.state.is_final()) {
                // Reached twice through a diamond of dependencies.
                continue;
            }
            self.finish_one(id, to, reason, cause, fx);
            let dependents = self.tasks[&id].dependents.clone();
            if to == State::Completed {
                self.release_dependents(&dependents, fx);
                continue;
            }
            let root = cause.unwrap_or(id);
            let reason = format!("dependency {id} {}", to.name());
            for d in dependents.into_iter().rev() {
                if self.tasks.get(&d).is_some_and(|de| !de.state.is_final()) {
                    stack.push((d, State::Cancelled, reason.clone(), Some(root)));
                }
            }
        }
    }

    /// One task to a final state: its lease released (and revoked unless it completed), its
    /// backoff dropped.
    fn finish_one(&mut self, id: TaskId, to: State, reason: String, cause: Option<TaskId>, fx: &mut Vec<Effect>) {
        let e = &self.tasks[&id];
        if e.state == State::InProgress {
            let worker = e.lease.as_ref().map(|l| l.worker.clone());
            let attempt = e.attempt;
            self.release_lease(id);
            if to != State::Completed
                && let Some(worker) = worker
            {
                fx.push(Effect::Revoke { worker, id, attempt, reason: reason.clone() });
            }
        }
        let e = self.tasks.get_mut(&id).expect("in memory");
        if e.state == State::Waiting && e.not_before_ms > 0 {
            self.backoffs.remove(&(e.not_before_ms, id));
            e.not_before_ms = 0;
        }
        e.cancel_cause = cause;
        self.previous_errors.remove(&id);
        self.transition(id, to, reason, fx);
        self.finals.push(id);
    }

    /// A dependency completed: each waiting dependent has one unmet dependency less, and
    /// those with none left (and no backoff) become pending.
    fn release_dependents(&mut self, dependents: &[TaskId], fx: &mut Vec<Effect>) {
        for &d in dependents {
            let Some(de) = self.tasks.get_mut(&d) else { continue };
            if de.state != State::Waiting {
                continue;
            }
            de.unmet = de.unmet.saturating_sub(1);
            if de.unmet == 0 && de.not_before_ms == 0 {
                self.transition(d, State::Pending, String::new(), fx);
                self.push_ready(d);
            }
        }
    }

    /// Takes an entry out of memory, with its cached payload.
    fn remove_entry(&mut self, id: TaskId) {
        self.previous_errors.remove(&id);
        if let Some(e) = self.tasks.remove(&id) {
            self.count_pending(e.priority, e.label_set, Some(e.state), None);
            self.cached_bytes -= e.payload.as_ref().map_or(0, |p| p.len());
        }
    }

    /// Forgets workers with no stream and no attempts, unseen for `forget_worker_ms`.
    fn forget_idle_workers(&mut self, now: u64) {
        let ttl = self.limits.forget_worker_ms;
        // A drained worker is kept: it must come back drained.
        self.workers.retain(|_, w| {
            w.session.is_some() || !w.held.is_empty() || w.draining || now.saturating_sub(w.seen_ms) < ttl
        });
    }

    fn refresh_free(&mut self, id: &WorkerId) {
        let free =
            self.workers.get(id).is_some_and(|w| w.session.is_some() && !w.suspect && !w.draining && w.free() > 0);
        if free {
            self.free_workers.insert(id.clone());
        } else {
            self.free_workers.remove(id);
        }
    }

    /// Checks the internal invariants; for tests.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let mut counts: HashMap<JobId, Counts> = HashMap::new();
        for (id, e) in &self.tasks {
            counts.entry(e.job.clone()).or_default().add(e.state);
            match e.state {
                State::InProgress => {
                    let lease = e.lease.as_ref().expect("in progress without a lease");
                    assert!(self.leases.contains(&(lease.expires_ms, *id, e.attempt)));
                }
                _ => assert!(e.lease.is_none(), "task {id} in {:?} holds a lease", e.state),
            }
            if e.state == State::Waiting {
                assert!(e.unmet > 0 || e.not_before_ms > 0, "task {id} waits on nothing");
            }
        }
        let cached: usize = self.tasks.values().filter_map(|e| e.payload.as_ref()).map(|p| p.len()).sum();
        assert_eq!(cached, self.cached_bytes, "cached payload bytes");
        assert!(self.cached_bytes <= self.limits.payload_cache_bytes);
        // Every task that is not final is in memory, so the live counts match exactly.
        for (job, info) in &self.jobs {
            let c = counts.get(job).copied().unwrap_or_default();
            let live = |c: &Counts| (c.waiting, c.pending, c.in_progress);
            assert_eq!(live(&info.counts), live(&c), "job {job}: counts of live tasks");
            assert!(info.counts.completed >= c.completed, "job {job}: completed count");
        }
        for (job, info) in &self.jobs {
            let blocked = blocked_reason(&info.controls, &info.spend, &info.counts).is_some();
            assert_eq!(info.parked, blocked, "job {job}: parked while blocked");
        }
        let mut label_running = vec![0u32; self.label_limits.len()];
        for e in self.tasks.values().filter(|e| e.state == State::InProgress) {
            for &l in &self.queue_limits[e.label_set] {
                label_running[l] += 1;
            }
        }
        assert_eq!(label_running, self.label_running, "running tasks per label limit");
        let mut pending: BTreeMap<i32, u64> = BTreeMap::new();
        for e in self.tasks.values().filter(|e| e.state == State::Pending) {
            *pending.entry(e.priority).or_default() += 1;
        }
        assert_eq!(pending, self.pending_by_priority, "pending tasks by priority");
        for id in self.previous_errors.keys() {
            assert!(self.tasks.get(id).is_some_and(|e| !e.state.is_final()), "previous error kept for task {id}");
        }
        for (wid, w) in &self.workers {
            if w.slots > 0 {
                assert!(w.held.len() as u32 <= w.slots, "worker {wid} over its slots");
            }
            for (t, a) in &w.held {
                let e = &self.tasks[t];
                assert_eq!(e.state, State::InProgress);
                assert_eq!(e.attempt, *a);
            }
        }
    }
}
