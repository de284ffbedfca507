//! The dispatcher: the one actor that owns the scheduler, the SQLite writer, the workers'
//! assignment streams and the job event feeds. Everything else holds a cheap [`Handle`] and
//! sends it commands over a bounded channel.
//!
//! The loop takes every command waiting in the channel as one batch, applies them to the
//! scheduler in order, expires leases and backoffs, dispatches ready tasks, writes every row
//! the batch touched in one transaction (group commit), and only after the commit answers the
//! callers, sends the assignments and publishes the events. So a call is acknowledged only
//! once durable, and a task (and its attempt number, its fencing token) is durable before any
//! worker sees it.

mod feeds;
mod fleet;
mod schedules;
mod streams;

pub use fleet::{Fleet, output_tail};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use orca_proto::pb;
use prost::Message;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use orca_proto::contract::{self, defaults, limits};

use crate::Error;
use crate::convert;
use crate::idempotency::{self, Idem};
use crate::queue::{
    Controls, Counts, Effect, Entry, JobId, LabelLimit, Labels, NewTask, Outcome, Restored, RetryPolicy, RevivedTask,
    Scheduler, Spend, State, StoredTask, TaskId, WorkerId,
};
use crate::schedule::Pattern;
use crate::serving::Serving;
use crate::store::{
    JobInsert, JobUpdate, Loaded, Opened, Purge, RequestRecord, TaskInsert, TaskRow, WriteBatch, Writer,
};
use crate::validate::{CheckedTask, DepRef};

/// Commands waiting for the dispatcher.
pub const COMMAND_BUFFER: usize = 4_096;
/// Commands applied in one batch at most.
pub const MAX_BATCH_COMMANDS: usize = 2_048;
/// Units of heavy work (tasks and edges added or retried) one batch takes on; a command
/// larger than this still runs, alone among the heavy ones of its batch.
pub const BATCH_WORK: usize = 20_000;
/// Heavy commands set aside for later batches at most.
pub const MAX_DEFERRED: usize = 256;
/// Extra room in a worker's assignment stream beyond its slots (cancellations).
pub const LISTEN_EXTRA: usize = 64;

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// A subscription to a job's events.
pub struct Subscription {
    pub rx: broadcast::Receiver<Arc<pb::JobEvent>>,
    /// The events after the requested sequence number, when they are all still buffered.
    pub missed: Option<Vec<Arc<pb::JobEvent>>>,
    /// The job's last sequence number at subscription.
    pub last_seq: u64,
    /// The job's counts at subscription, and whether it is cancelled.
    pub counts: Counts,
    pub cancelled: bool,
}

use feeds::{Feeds, Subscribed};
pub use feeds::{MAX_FEED_HISTORY_BYTES, MAX_HISTORY_BYTES, WATCH_BUFFER};
use streams::{Context, Session};
pub use streams::{ListenTx, MAX_LISTEN_MESSAGE_BYTES};

/// A worker's new Listen stream.
pub struct Listening {
    pub session: u64,
    /// The receiving half of the response stream.
    pub rx: mpsc::Receiver<Result<pb::ListenResponse, Status>>,
    /// A sender whose `closed()` tells when the caller went away.
    pub tx: ListenTx,
    /// Cancelled when a newer stream of the same worker replaces this one.
    pub ended: CancellationToken,
}

/// Answers a caller once its batch committed (`None`) or failed to (`Some(error)`).
type Responder = Box<dyn FnOnce(Option<&Error>) + Send>;

enum Command {
    CreateJob {
        job: NewJob,
        idem: Option<Idem>,
        reply: Reply<pb::Job>,
    },
    UpdateJob {
        job: String,
        update: ControlsUpdate,
        reply: Reply<()>,
    },
    AddTasks {
        job: String,
        tasks: Vec<CheckedTask>,
        idem: Option<Idem>,
        reply: Reply<Vec<i64>>,
    },
    CancelJob {
        job: String,
        reason: String,
        reply: Reply<()>,
    },
    DeleteJob {
        job: String,
        reply: Reply<()>,
    },
    CancelTask {
        task: i64,
        reason: String,
        /// Whether it was live (and is now cancelled): a task not in memory is final or
        /// unknown, which the caller tells from the read pool, never the dispatcher.
        reply: Reply<bool>,
    },
    RetryTasks {
        job: String,
        tasks: Vec<i64>,
        reply: Reply<Vec<i64>>,
    },
    SetContext {
        job: String,
        key: String,
        value: String,
        reply: Reply<()>,
    },
    Register {
        req: pb::RegisterRequest,
        reply: Reply<pb::RegisterResponse>,
    },
    Listen {
        worker: String,
        context_by_stream: bool,
        reply: Reply<Listening>,
    },
    Disconnect {
        worker: String,
        session: u64,
    },
    Heartbeat {
        req: pb::HeartbeatRequest,
        reply: Reply<pb::HeartbeatResponse>,
    },
    Report {
        req: pb::ReportRequest,
        reply: Reply<pb::ReportResponse>,
    },
    Subscribe {
        job: String,
        after_seq: u64,
        reply: Reply<Subscription>,
    },
    Stats {
        reply: oneshot::Sender<Stats>,
    },
    Fleet {
        reply: oneshot::Sender<Fleet>,
    },
    Drain {
        worker: String,
        on: bool,
        reply: Reply<pb::WorkerInfo>,
    },
    LiveOutput {
        task: i64,
        reply: oneshot::Sender<Option<String>>,
    },
    CreateSchedule {
        req: pb::CreateScheduleRequest,
        /// `req.cron`, parsed by `validate::create_schedule` (boxed: a parsed pattern is
        /// large, and every command is as large as the largest).
        pattern: Box<Pattern>,
        owner: Option<String>,
        /// A submitter's call: it may replace only its own schedule.
        own: bool,
        reply: Reply<pb::Schedule>,
    },
    DeleteSchedule {
        name: String,
        /// Only this token's schedule (a submitter's call).
        owner: Option<String>,
        reply: Reply<()>,
    },
    ListSchedules {
        owner: Option<String>,
        reply: oneshot::Sender<Vec<pb::Schedule>>,
    },
    NoticeDone {
        job: String,
        seq: u64,
        reply: Reply<()>,
    },
}

/// The queue's state at one moment, for metrics and health checks.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Tasks by state over every job in the database.
    pub counts: Counts,
    pub jobs: usize,
    pub workers_connected: usize,
    /// Slots of the connected workers, and how many are free.
    pub slots: u64,
    pub slots_free: u64,
    pub totals: crate::queue::Totals,
}

impl Command {
    /// Units of heavy work (tasks and dependency edges touched); 0 for light commands.
    fn cost(&self) -> usize {
        match self {
            Command::AddTasks { tasks, .. } => tasks.iter().map(|t| 1 + t.deps.len()).sum(),
            Command::RetryTasks { tasks, .. } => tasks.len().max(1),
            _ => 0,
        }
    }
}

/// The commands gathered for one batch, and the heavy ones left for later.
#[derive(Default)]
struct Gather {
    cmds: Vec<Queued>,
    work: usize,
    later: VecDeque<Queued>,
}

/// A command with the time it was sent (for the `queued` stage of the metrics).
type Queued = (Instant, Command);

impl Gather {
    fn take(&mut self, c: Queued) {
        let cost = c.1.cost();
        if cost > 0 && self.work > 0 && self.work + cost > BATCH_WORK {
            self.later.push_back(c);
        } else {
            self.work += cost;
            self.cmds.push(c);
        }
    }
}

/// A cheap, cloneable handle to the dispatcher.
#[derive(Clone, Debug)]
pub struct Handle {
    tx: mpsc::Sender<Queued>,
}

fn gone() -> Error {
    Error::Unavailable("the coordinator is not serving (shutting down, or reloading from its database); retry".into())
}

impl Handle {
    /// Queues a command, stamped with the time it was sent.
    async fn send(&self, c: Command) -> Result<(), Error> {
        self.tx.send((Instant::now(), c)).await.map_err(|_| gone())
    }

    /// A command whose answer cannot fail (reads of the dispatcher's memory).
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx)).await?;
        rx.await.map_err(|_| gone())
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, Error> {
        self.ask(make).await?
    }

    pub async fn create_job(&self, job: NewJob, idem: Option<Idem>) -> Result<pb::Job, Error> {
        self.call(|reply| Command::CreateJob { job, idem, reply }).await
    }

    pub async fn update_job(&self, job: String, update: ControlsUpdate) -> Result<(), Error> {
        self.call(|reply| Command::UpdateJob { job, update, reply }).await
    }

    pub async fn create_schedule(
        &self,
        req: pb::CreateScheduleRequest,
        pattern: Box<Pattern>,
        owner: Option<String>,
        own: bool,
    ) -> Result<pb::Schedule, Error> {
        self.call(|reply| Command::CreateSchedule { req, pattern, owner, own, reply }).await
    }

    pub async fn delete_schedule(&self, name: String, owner: Option<String>) -> Result<(), Error> {
        self.call(|reply| Command::DeleteSchedule { name, owner, reply }).await
    }

    pub async fn list_schedules(&self, owner: Option<String>) -> Result<Vec<pb::Schedule>, Error> {
        self.ask(|reply| Command::ListSchedules { owner, reply }).await
    }

    /// A job-completion notice was delivered: forget it (answered once that is committed).
    pub async fn notice_done(&self, job: String, seq: u64) -> Result<(), Error> {
        self.call(|reply| Command::NoticeDone { job, seq, reply }).await
    }

    pub async fn add_tasks(&self, job: String, tasks: Vec<CheckedTask>, idem: Option<Idem>) -> Result<Vec<i64>, Error> {
        self.call(|reply| Command::AddTasks { job, tasks, idem, reply }).await
    }

    pub async fn cancel_job(&self, job: String, reason: String) -> Result<(), Error> {
        self.call(|reply| Command::CancelJob { job, reason, reply }).await
    }

    pub async fn delete_job(&self, job: String) -> Result<(), Error> {
        self.call(|reply| Command::DeleteJob { job, reply }).await
    }

    /// Cancels a live task; `false` when the task is not live (final or unknown).
    pub async fn cancel_task(&self, task: i64, reason: String) -> Result<bool, Error> {
        self.call(|reply| Command::CancelTask { task, reason, reply }).await
    }

    pub async fn retry_tasks(&self, job: String, tasks: Vec<i64>) -> Result<Vec<i64>, Error> {
        self.call(|reply| Command::RetryTasks { job, tasks, reply }).await
    }

    pub async fn set_context(&self, job: String, key: String, value: String) -> Result<(), Error> {
        self.call(|reply| Command::SetContext { job, key, value, reply }).await
    }

    pub async fn register(&self, req: pb::RegisterRequest) -> Result<pb::RegisterResponse, Error> {
        self.call(|reply| Command::Register { req, reply }).await
    }

    /// Opens a worker's assignment stream.
    pub async fn listen(&self, worker: String, context_by_stream: bool) -> Result<Listening, Error> {
        self.call(|reply| Command::Listen { worker, context_by_stream, reply }).await
    }

    pub async fn disconnect(&self, worker: String, session: u64) {
        let _ = self.send(Command::Disconnect { worker, session }).await;
    }

    pub async fn heartbeat(&self, req: pb::HeartbeatRequest) -> Result<pb::HeartbeatResponse, Error> {
        self.call(|reply| Command::Heartbeat { req, reply }).await
    }

    pub async fn report(&self, req: pb::ReportRequest) -> Result<pb::ReportResponse, Error> {
        self.call(|reply| Command::Report { req, reply }).await
    }

    pub async fn subscribe(&self, job: String, after_seq: u64) -> Result<Subscription, Error> {
        self.call(|reply| Command::Subscribe { job, after_seq, reply }).await
    }

    /// The queue's state; answered within the dispatcher's next batch, so a timely answer
    /// also shows the dispatcher is not stuck.
    pub async fn stats(&self) -> Result<Stats, Error> {
        self.ask(|reply| Command::Stats { reply }).await
    }

    /// The workers and the stats (ListWorkers, GetStats, WatchFleet).
    pub async fn fleet(&self) -> Result<Fleet, Error> {
        self.ask(|reply| Command::Fleet { reply }).await
    }

    /// The last output a running task's agent printed (its progress reports, at most
    /// [`LIVE_OUTPUT_BYTES`]); `None` when the task is not running or printed nothing.
    pub async fn live_output(&self, task: i64) -> Result<Option<String>, Error> {
        self.ask(|reply| Command::LiveOutput { task, reply }).await
    }

    /// Drains a worker (`on`) or resumes it.
    pub async fn drain(&self, worker: String, on: bool) -> Result<pb::WorkerInfo, Error> {
        self.call(|reply| Command::Drain { worker, on, reply }).await
    }
}

/// Settings of the dispatcher.
#[derive(Clone, Debug)]
pub struct Settings {
    pub limits: crate::queue::Limits,
    pub heartbeat_seconds: u32,
    /// Finished jobs unchanged for this long are removed (`None`: kept forever).
    pub retain_ms: Option<u64>,
    /// `--label-limit`: running tasks per label value.
    pub label_limits: Vec<LabelLimit>,
    /// With `--job-webhook`: job-completion notices are written, and this wakes their
    /// deliverer after a commit that wrote some.
    pub notices: Option<Arc<tokio::sync::Notify>>,
    /// The database, to reload from after a failed commit.
    pub target: crate::store::Target,
    /// A commit that takes longer fails (Postgres: [`PG_COMMIT_TIMEOUT`]; SQLite: none).
    pub commit_timeout: Option<Duration>,
    pub durability: crate::store::Durability,
    /// Whether the coordinator serves (the health service follows it): false while the
    /// database cannot commit and the dispatcher waits to reload from it.
    pub serving: Arc<tokio::sync::watch::Sender<Serving>>,
}

/// How long a Postgres commit may take before the dispatcher gives up on it and recovers (a
/// network cut to the database stalls a commit for as long as TCP retries; meanwhile nothing
/// is acknowledged, and workers stay with a coordinator that cannot commit).
pub const PG_COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

fn commit_timed_out(limit: Duration) -> Error {
    Error::Unavailable(format!("a commit did not finish within {} s (is the database reachable?)", limit.as_secs()))
}

/// How often the leader looks at its lock's session, so that a leader whose lock is gone
/// stops serving even while idle (its next write batch would be refused anyway).
const LEADER_CHECK_MS: u64 = 1_000;

/// How often a standby tries to take the leader lock.
pub const STANDBY_POLL: Duration = Duration::from_millis(250);

/// What refused calls are told while the dispatcher recovers from `cause`.
fn not_serving(cause: &Error) -> Serving {
    Serving::No(match cause {
        Error::NotLeader(_) | Error::Fenced => cause.to_string(),
        _ => {
            "the coordinator is not serving: its database could not commit; it reloads once the database answers; retry"
                .into()
        }
    })
}

/// The first wait before the database is tried again after a failed commit; it doubles up to
/// [`RECOVERY_MAX_WAIT`].
const RECOVERY_FIRST_WAIT: Duration = Duration::from_millis(100);
const RECOVERY_MAX_WAIT: Duration = Duration::from_secs(2);

/// How often retention looks for finished jobs past `--retain-days`.
pub const RETENTION_SCAN_MS: u64 = 60_000;
/// Jobs retention marks per scan at most.
pub const RETENTION_BATCH: u32 = 100;
/// Rows (or free pages) one purge step deletes at most, in its own short transaction.
pub const PURGE_STEP_ROWS: u32 = 500;

/// What a batch collects while its commands are applied.
#[derive(Default)]
struct Batch {
    writes: WriteBatch,
    effects: Vec<Effect>,
    /// Tasks added in this batch, with their encoded specs (for the insert).
    created: HashMap<TaskId, Arc<[u8]>>,
    /// Encoded results of attempts that ended in this batch.
    results: HashMap<TaskId, Vec<u8>>,
    /// What the reports of this batch said about the attempts they ended.
    ended: HashMap<TaskId, fleet::Ended>,
    replies: Vec<Responder>,
    touched_jobs: BTreeSet<JobId>,
}

impl Batch {
    /// Stores the answer of a call with an idempotency key, with the batch.
    fn remember(&mut self, idem: Option<Idem>, response: Vec<u8>) {
        if let Some(Idem { key, digest }) = idem {
            self.writes.requests.push(RequestRecord { key, digest, response });
        }
    }

    /// Answers with `r`: a value once the batch commits, a refusal at once.
    fn answer<T: Send + 'static>(&mut self, tx: Reply<T>, r: Result<T, Error>) {
        match r {
            Ok(v) => self.reply(tx, v),
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
    }

    fn reply<T: Send + 'static>(&mut self, tx: Reply<T>, value: T) {
        self.replies.push(Box::new(move |err| {
            let _ = tx.send(match err {
                None => Ok(value),
                Some(e) => Err(e.clone()),
            });
        }));
    }
}

/// The dispatcher's state. See the module documentation.
pub struct Dispatcher {
    sched: Scheduler,
    /// `None` while a standby, or while recovering.
    writer: Option<Writer>,
    /// At start, a standby (the leader's address): `run` waits to lead first.
    standby: Option<String>,
    /// When the leader lock's session is looked at next (Postgres; ms).
    leader_check_ms: u64,
    settings: Settings,
    next_task_id: i64,
    next_session: u64,
    context: Context,
    sessions: HashMap<WorkerId, Session>,
    feeds: Feeds,
    rx: mpsc::Receiver<Queued>,
    /// Heavy commands left for the next batches (see `next_batch`), in arrival order.
    deferred: VecDeque<Queued>,
    /// When idempotency keys past their retention were last pruned (ms).
    pruned_ms: u64,
    /// Jobs are marked deleted and not purged yet, or free pages may be left to give back.
    purge_pending: bool,
    /// When retention looks for expired jobs next (ms).
    retention_due_ms: u64,
    /// What each worker said about itself at registration (for ListWorkers).
    described: HashMap<WorkerId, fleet::Described>,
    /// Tasks finished per interval, for GetStats.
    throughput: crate::queue::throughput::Throughput,
    /// The last failures, oldest first (see [`fleet::record_failures`]).
    recent_failures: VecDeque<pb::RecentFailure>,
    /// The tail of each running attempt's progress (its attempt number and text).
    live_output: HashMap<TaskId, (u32, String)>,
    /// Recurring jobs by name.
    schedules: BTreeMap<String, schedules::Scheduled>,
}

fn labels_of(m: &std::collections::HashMap<String, String>) -> Labels {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Bytes of a running attempt's output kept for GetTask.
pub const LIVE_OUTPUT_BYTES: usize = 8 << 10;

/// Keeps the tail of each running attempt's progress, one line per report; forgets it when
/// the attempt ends (the result then has the whole output).
fn track_output(live: &mut HashMap<TaskId, (u32, String)>, effects: &[Effect]) {
    for e in effects {
        match e {
            Effect::Progress { id, attempt, message, .. } => {
                let (at, text) = live.entry(*id).or_insert_with(|| (*attempt, String::new()));
                if *at != *attempt {
                    (*at, *text) = (*attempt, String::new());
                }
                text.push_str(message);
                text.push('\n');
                let cut = text.len() - contract::tail_str(text, LIVE_OUTPUT_BYTES).len();
                text.drain(..cut);
            }
            Effect::Changed { id, from: Some(State::InProgress), .. } => {
                live.remove(id);
            }
            _ => {}
        }
    }
}

/// The scheduler's view of a stored spec.
fn new_task(id: TaskId, spec: &pb::TaskSpec, deps: Vec<TaskId>, payload: Option<Arc<[u8]>>) -> NewTask {
    let p = spec.retry_policy.unwrap_or_default();
    NewTask {
        id,
        priority: spec.priority.unwrap_or(orca_proto::defaults::PRIORITY),
        deps,
        labels: labels_of(&spec.required_labels),
        max_retries: spec.max_retries.unwrap_or(0),
        retry: RetryPolicy {
            initial_ms: p.initial_backoff_ms,
            multiplier: if p.multiplier > 0.0 { p.multiplier as f32 } else { 2.0 },
            max_ms: p.max_backoff_ms,
        },
        payload,
        git_chain: spec.git.as_ref().is_some_and(|g| g.builds_on != 0),
        run_at_ms: spec.run_at.map_or(0, |t| contract::timestamp_ms(&t)),
    }
}

/// A job to create (CreateJob, or a schedule's tick).
#[derive(Clone, Debug)]
pub struct NewJob {
    pub description: String,
    pub metadata: Option<prost_types::Struct>,
    pub owner: Option<String>,
    pub controls: Controls,
}

/// The controls an UpdateJob call sets (`None`: unchanged).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ControlsUpdate {
    pub weight: Option<u32>,
    pub max_running: Option<u32>,
    pub budget_usd: Option<f64>,
    pub paused: Option<bool>,
}

impl ControlsUpdate {
    fn apply(self, mut c: Controls) -> Controls {
        c.weight = self.weight.unwrap_or(c.weight);
        c.max_running = self.max_running.unwrap_or(c.max_running);
        c.budget_usd = self.budget_usd.unwrap_or(c.budget_usd);
        c.paused = self.paused.unwrap_or(c.paused);
        c
    }
}

/// What a report says, for the scheduler, and the result to store with it. A failure's
/// reason (the task's `reason`, copied into events) is cut to the reason limit; the whole
/// error stays in the stored result.
fn outcome_of(body: Option<pb::report::Body>) -> (Outcome, Option<pb::TaskResult>) {
    use pb::report::Body;
    match body {
        Some(Body::Started(_)) | None => (Outcome::Started, None),
        Some(Body::Progress(p)) => (Outcome::Progress(p.message), None),
        Some(Body::Completed(c)) => (Outcome::Completed, c.result),
        Some(Body::Failed(f)) => {
            let error = f.result.as_ref().map(|r| r.error.as_str()).filter(|e| !e.is_empty());
            let reason = error.map(|e| cut(e, limits::MAX_REASON_BYTES)).unwrap_or_else(|| "attempt failed".into());
            (Outcome::Failed { reason, retryable: f.retryable }, f.result)
        }
        Some(Body::HandedBack(h)) => (Outcome::HandedBack { reason: h.reason }, None),
    }
}

/// At most `max` bytes of `s`, cut at a character boundary, with a marker when cut.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    format!("{}...", contract::head_str(s, max.saturating_sub(3)))
}

fn decode_answer<M: Message + Default>(bytes: &[u8]) -> Result<M, Error> {
    M::decode(bytes).map_err(|e| Error::Storage(format!("a stored answer is unreadable: {e}")))
}

fn decode_spec(bytes: &[u8], id: i64) -> Result<pb::TaskSpec, Error> {
    pb::TaskSpec::decode(bytes).map_err(|e| Error::Storage(format!("task {id} has an unreadable spec: {e}")))
}

fn row_of(e: &Entry) -> TaskRow {
    TaskRow {
        task_id: e.id.0,
        state: e.state,
        attempt: e.attempt,
        retries_used: e.retries_used,
        lost_leases: e.lost_leases,
        worker_id: e.last_worker.as_ref().map(|w| w.to_string()),
        not_before_ms: e.not_before_ms,
        cancel_cause: e.cancel_cause.map(|c| c.0),
        reason: e.reason.clone(),
    }
}

/// Loads a job's tasks that are not final into the scheduler, page by page. Pages start
/// small and grow while they stay under [`LOAD_PAGE_BYTES`], so a job of large specs never
/// needs much more memory than one page (specs beyond the scheduler's payload budget are
/// dropped after their scheduling fields are read).
async fn restore_job(writer: &mut Writer, sched: &mut Scheduler, job_id: &str, now: u64) -> Result<(), Error> {
    let job = JobId::from(job_id);
    let mut deps = writer.live_deps(job_id).await?;
    let mut limit = FIRST_LOAD_PAGE;
    for state in [State::Waiting, State::Pending, State::InProgress] {
        let mut after = 0;
        loop {
            let page = writer.live_page(job_id, state, after, limit).await?;
            let full = page.len() == limit;
            let bytes: usize = page.iter().map(|t| t.spec.len()).sum();
            for t in page {
                after = after.max(t.row.task_id);
                let spec = decode_spec(&t.spec, t.row.task_id)?;
                let task_deps = deps.remove(&t.row.task_id).unwrap_or_default().into_iter().map(TaskId).collect();
                let task = new_task(TaskId(t.row.task_id), &spec, task_deps, Some(Arc::from(t.spec)));
                let restored = Restored {
                    job: job.clone(),
                    task,
                    state,
                    attempt: t.row.attempt,
                    retries_used: t.row.retries_used,
                    lost_leases: t.row.lost_leases,
                    worker: t.row.worker_id.map(WorkerId::from),
                    not_before_ms: t.row.not_before_ms,
                    reason: t.row.reason,
                };
                sched.restore_task(restored, now);
            }
            if !full {
                break;
            }
            limit = next_page(limit, bytes);
        }
    }
    Ok(())
}

/// Spans of the attempts being dispatched, in their task's trace: `queued` (the time the
/// task was pending before this attempt) and `dispatch` (sent to its worker). Only while
/// spans are exported: it decodes each spec for its `trace_parent`.
fn trace_assignments(effects: &[Effect]) {
    use orca_telemetry::Attribute;
    let now = SystemTime::now();
    let waited: HashMap<TaskId, u64> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Changed { id, from: Some(State::Pending), to: State::InProgress, held_ms, .. } => {
                Some((*id, *held_ms))
            }
            _ => None,
        })
        .collect();
    for e in effects {
        let Effect::Assign { worker, id, job, attempt, payload: Some(p), .. } = e else { continue };
        let Ok(spec) = pb::TaskSpec::decode(&p[..]) else { continue };
        if spec.trace_parent.is_empty() {
            continue;
        }
        let attrs = vec![
            Attribute::new("task_id", id.0),
            Attribute::new("job_id", job.to_string()),
            Attribute::new("attempt", *attempt as i64),
            Attribute::new("worker", worker.to_string()),
        ];
        let queued_at = now - Duration::from_millis(waited.get(id).copied().unwrap_or(0));
        orca_telemetry::interval("queued", &spec.trace_parent, queued_at, now, attrs.clone());
        orca_telemetry::interval("dispatch", &spec.trace_parent, now, SystemTime::now(), attrs);
    }
}

/// Tasks in the first page of a start-up load.
const FIRST_LOAD_PAGE: usize = 256;
/// Bytes of specs a start-up page aims to stay under.
pub const LOAD_PAGE_BYTES: usize = 16 << 20;

/// The next page size: halved when the page was over the byte aim, doubled (up to
/// `store::LOAD_PAGE`) when well under it.
fn next_page(limit: usize, bytes: usize) -> usize {
    if bytes > LOAD_PAGE_BYTES {
        (limit / 2).max(1)
    } else if bytes < LOAD_PAGE_BYTES / 4 {
        (limit * 2).min(crate::store::LOAD_PAGE)
    } else {
        limit
    }
}

/// The dispatcher's state that comes from the database (at start, and again after a failed
/// commit).
struct FromDb {
    sched: Scheduler,
    writer: Option<Writer>,
    next_task_id: i64,
    context: Context,
    purge_pending: bool,
    schedules: BTreeMap<String, schedules::Scheduled>,
}

impl FromDb {
    /// A standby's: nothing loaded, no writer.
    fn empty(settings: &Settings) -> FromDb {
        let mut sched = Scheduler::new(settings.limits);
        sched.set_label_limits(settings.label_limits.clone());
        FromDb {
            sched,
            writer: None,
            next_task_id: 1,
            context: Context::load(Vec::new()),
            purge_pending: false,
            schedules: BTreeMap::new(),
        }
    }

    /// The scheduler rebuilt from what the store loaded, loading the tasks that are not final
    /// page by page.
    async fn load(loaded: Loaded, mut writer: Writer, settings: &Settings, now: u64) -> Result<FromDb, Error> {
        let mut sched = Scheduler::new(settings.limits);
        sched.set_clock(now);
        sched.set_label_limits(settings.label_limits.clone());
        for j in &loaded.jobs {
            let job = JobId::from(j.job_id.as_str());
            sched.insert_job(job.clone(), j.counts, j.cancelled, j.last_seq);
            sched.charge(&job, j.spend);
            sched.set_controls(&job, j.controls).expect("the job was just inserted");
        }
        // Only jobs whose counters show unfinished tasks have any to load.
        for j in loaded.jobs.iter().filter(|j| j.counts.waiting + j.counts.pending + j.counts.in_progress > 0) {
            restore_job(&mut writer, &mut sched, &j.job_id, now).await?;
        }
        sched.finish_restore();
        Ok(FromDb {
            sched,
            writer: Some(writer),
            next_task_id: loaded.max_task_id + 1,
            context: Context::load(loaded.context),
            purge_pending: loaded.purge_pending,
            schedules: loaded.schedules.into_iter().filter_map(schedules::Scheduled::load).collect(),
        })
    }
}

impl Dispatcher {
    /// Builds the dispatcher from what the store loaded, loading the tasks that are not
    /// final page by page, and returns it with its handle.
    pub async fn new(opened: Opened, settings: Settings) -> Result<(Dispatcher, Handle), Error> {
        let now = now_ms();
        let (db, standby) = match opened {
            Opened::Leader(writer, loaded) => (FromDb::load(loaded, writer, &settings, now).await?, None),
            Opened::Standby(leader) => (FromDb::empty(&settings), Some(leader)),
        };
        let (tx, rx) = mpsc::channel(COMMAND_BUFFER);
        let d = Dispatcher {
            sched: db.sched,
            writer: db.writer,
            standby,
            leader_check_ms: now,
            settings,
            next_task_id: db.next_task_id,
            next_session: 1,
            context: db.context,
            sessions: HashMap::new(),
            feeds: Feeds::default(),
            rx,
            deferred: VecDeque::new(),
            pruned_ms: 0,
            purge_pending: db.purge_pending,
            retention_due_ms: now,
            described: HashMap::new(),
            throughput: Default::default(),
            recent_failures: VecDeque::with_capacity(fleet::RECENT_FAILURES),
            live_output: HashMap::new(),
            schedules: db.schedules,
        };
        Ok((d, Handle { tx }))
    }

    /// After a failed commit (memory is then ahead of the database), a lost leadership, or at
    /// the start of a standby: stops serving, ends every worker's stream, refuses commands
    /// with UNAVAILABLE (the reason: reloading, or the leader's address), and tries to open
    /// the database again (a standby: to take the leader lock) until it reloads all state from
    /// what is committed; then serves again. Workers re-register with their running attempts,
    /// as after a restart. Watchers keep their streams: only committed events were ever
    /// published, so the reloaded sequence numbers go on from the last one they saw. If
    /// shutdown comes first: `Ok` for a standby, the cause otherwise (`run` then returns at
    /// once, with nothing to flush).
    async fn recover(&mut self, cause: Error, shutdown: &CancellationToken) -> Result<(), Error> {
        match &cause {
            Error::NotLeader(_) => tracing::info!("{cause}; waiting as a standby"),
            Error::Fenced => tracing::warn!("{cause}; waiting as a standby"),
            _ => {
                tracing::error!(error = %cause, "a commit failed: not serving; reloading from the database once it answers")
            }
        }
        self.settings.serving.send_replace(not_serving(&cause));
        crate::metrics::set_up(false);
        for (_, s) in self.sessions.drain() {
            s.ended.cancel();
        }
        self.deferred.clear();
        self.described.clear();
        self.live_output.clear();
        if let Some(w) = self.writer.take() {
            // Closing releases a Postgres leader lock at once; a dead connection gets a second.
            let _ = tokio::time::timeout(Duration::from_secs(1), w.close()).await;
        }
        let mut wait = if matches!(cause, Error::NotLeader(_)) { STANDBY_POLL } else { RECOVERY_FIRST_WAIT };
        loop {
            if self.refuse_until(wait, shutdown).await.is_err() {
                // Stopping while a standby is a normal stop; while the database could not
                // commit, the process says so (its exit status).
                return match cause {
                    Error::NotLeader(_) | Error::Fenced => Ok(()),
                    cause => Err(cause),
                };
            }
            let reopened = match crate::store::reopen(&self.settings.target, self.settings.durability).await {
                Ok((writer, loaded)) => FromDb::load(loaded, writer, &self.settings, now_ms()).await,
                Err(e) => Err(e),
            };
            match reopened {
                Ok(db) => {
                    let live = db.sched.live_tasks();
                    self.restore(db);
                    tracing::info!(live_tasks = live, "loaded from the database; serving");
                    self.settings.serving.send_replace(Serving::Yes);
                    crate::metrics::set_up(true);
                    return Ok(());
                }
                Err(e @ Error::NotLeader(_)) => {
                    self.settings.serving.send_replace(not_serving(&e));
                    wait = STANDBY_POLL;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_ms = wait.as_millis() as u64, "the database is not back yet");
                    wait = (wait * 2).min(RECOVERY_MAX_WAIT);
                }
            }
        }
    }

    /// Waits `wait`, answering `Stats` (the watchdog's question: the loop is alive) and
    /// dropping every other command (its caller gets UNAVAILABLE). `Err` on shutdown.
    async fn refuse_until(&mut self, wait: Duration, shutdown: &CancellationToken) -> Result<(), ()> {
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Err(()),
                _ = &mut deadline => return Ok(()),
                c = self.rx.recv() => match c {
                    Some((_, Command::Stats { reply })) => {
                        let _ = reply.send(self.stats());
                    }
                    Some(_) => {}
                    None => return Err(()),
                },
            }
        }
    }

    /// Takes the state loaded from the database.
    fn restore(&mut self, db: FromDb) {
        self.sched = db.sched;
        self.writer = db.writer;
        self.next_task_id = db.next_task_id;
        self.context = db.context;
        self.purge_pending = db.purge_pending;
        self.schedules = db.schedules;
    }

    /// The writer, while this coordinator leads (`Error::NotLeader` otherwise, which the
    /// run loop never lets happen: it recovers first).
    fn writer(&mut self) -> Result<&mut Writer, Error> {
        self.writer.as_mut().ok_or_else(|| Error::NotLeader(String::new()))
    }

    /// Tasks not final, loaded in memory.
    pub fn live_tasks(&self) -> usize {
        self.sched.live_tasks()
    }

    /// Runs until `shutdown` is cancelled (or every handle is dropped), then ends the
    /// workers' and watchers' streams and closes the database. A failed commit does not stop
    /// it: it reloads from the database (`recover`); an error is a failed commit that shutdown
    /// interrupted before the database came back.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), Error> {
        if let Some(leader) = self.standby.take() {
            self.recover(Error::NotLeader(leader), &shutdown).await?;
            if shutdown.is_cancelled() {
                return Ok(());
            }
        }
        loop {
            let mut deadline = [self.sched.next_deadline(), self.next_tick()].into_iter().flatten().min();
            if self.settings.target.is_postgres() {
                deadline = Some(deadline.map_or(self.leader_check_ms, |d| d.min(self.leader_check_ms)));
            }
            if self.settings.retain_ms.is_some() {
                deadline = Some(deadline.map_or(self.retention_due_ms, |d| d.min(self.retention_due_ms)));
            }
            if self.purge_pending {
                // Purge steps run whenever no command waits.
                deadline = Some(0);
            }
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await,
                    None => std::future::pending().await,
                }
            };
            // Deferred work runs next, without waiting for a new command.
            let first = if self.deferred.is_empty() {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    c = self.rx.recv() => match c {
                        Some(c) => Some(c),
                        None => break,
                    },
                    _ = sleep => None,
                }
            } else if shutdown.is_cancelled() {
                break;
            } else {
                None
            };
            let cmds = self.next_batch(first);
            let mut done = self.process(cmds).await;
            if done.is_ok() && self.rx.is_empty() && self.deferred.is_empty() {
                done = self.housekeeping().await;
            }
            if let Err(e) = done {
                self.recover(e, &shutdown).await?;
            }
        }
        tracing::info!("dispatcher stopping");
        self.rx.close();
        // Commands still queued were never applied; dropping them answers Unavailable.
        while self.rx.try_recv().is_ok() {}
        self.sessions.clear();
        self.feeds.clear();
        if let Some(w) = self.writer.take() {
            w.close().await?;
        }
        Ok(())
    }

    /// The commands of the next batch: deferred ones first, then what is queued, within
    /// [`BATCH_WORK`] units of heavy work. A heavy command past the budget waits for the next
    /// batch (at most [`MAX_DEFERRED`] of them; past that the channel holds the rest back),
    /// while light commands keep coming in: one caller's large batches cannot hold up
    /// everyone's small writes by more than one batch's work.
    fn next_batch(&mut self, first: Option<Queued>) -> Vec<Queued> {
        let mut b = Gather::default();
        while let Some(c) = self.deferred.pop_front() {
            b.take(c);
        }
        if let Some(c) = first {
            b.take(c);
        }
        while b.later.len() < MAX_DEFERRED && b.cmds.len() < MAX_BATCH_COMMANDS {
            match self.rx.try_recv() {
                Ok(c) => b.take(c),
                Err(_) => break,
            }
        }
        self.deferred = b.later;
        b.cmds
    }

    async fn process(&mut self, cmds: Vec<Queued>) -> Result<(), Error> {
        let began = Instant::now();
        let now = now_ms();
        self.sched.set_clock(now);
        let commands = cmds.len();
        let mut b = Batch::default();
        if now.saturating_sub(self.pruned_ms) >= idempotency::PRUNE_EVERY_MS {
            self.pruned_ms = now;
            b.writes.prune_requests_before = Some(now.saturating_sub(idempotency::RETENTION_MS) as i64);
        }
        for (at, cmd) in cmds {
            crate::metrics::record_queued(began.saturating_duration_since(at).as_secs_f64());
            self.apply(cmd, now, &mut b).await;
        }
        self.fire_schedules(now, &mut b).await;
        b.effects.extend(self.sched.tick(now));
        b.effects.extend(self.sched.dispatch(now));
        self.collect_rows(&mut b, now);
        let events = self.sequence_events(&b);
        self.write_notices(&mut b, now);
        for job in &b.touched_jobs {
            if let Some(info) = self.sched.job(job) {
                b.writes.job_updates.push(JobUpdate {
                    job_id: job.to_string(),
                    counts: info.counts,
                    cancelled: info.cancelled,
                    last_seq: info.last_seq,
                    controls: info.controls,
                    spend: info.spend,
                });
            }
        }
        let mut commit_seconds = None;
        let applied = began.elapsed().as_secs_f64();
        if !b.writes.is_empty() {
            let started = Instant::now();
            let limit = self.settings.commit_timeout;
            let committed = match self.writer() {
                Ok(w) => match limit {
                    Some(limit) => tokio::time::timeout(limit, w.commit(&b.writes, now as i64))
                        .await
                        .unwrap_or_else(|_| Err(commit_timed_out(limit))),
                    None => w.commit(&b.writes, now as i64).await,
                },
                Err(e) => Err(e),
            };
            if let Err(e) = committed {
                let err = Error::Unavailable("the coordinator could not commit; retry".into());
                for r in b.replies {
                    r(Some(&err));
                }
                return Err(e);
            }
            commit_seconds = Some(started.elapsed().as_secs_f64());
        }
        let committed = Instant::now();
        crate::metrics::record_batch(commands, commit_seconds, &b.effects);
        let (completed, failed) = fleet::finished(&b.effects);
        self.throughput.record(now, completed, failed);
        if failed > 0 {
            fleet::record_failures(&mut self.recent_failures, &b.effects, now);
        }
        track_output(&mut self.live_output, &b.effects);
        if let Some(wake) = self.settings.notices.as_ref().filter(|_| !b.writes.notices.is_empty()) {
            wake.notify_one();
        }
        for r in b.replies {
            r(None);
        }
        self.send_to_workers(&mut b.effects).await?;
        self.publish(events, now);
        self.sched.evict_final();
        crate::metrics::record_stages(applied, commit_seconds, committed.elapsed().as_secs_f64());
        Ok(())
    }

    /// Retention and purging, between batches when no command waits. Each call does one
    /// small step (one transaction of at most [`PURGE_STEP_ROWS`] rows), so removing a job of
    /// any size never holds up calls for long.
    async fn housekeeping(&mut self) -> Result<(), Error> {
        let now = now_ms();
        if self.settings.target.is_postgres() && now >= self.leader_check_ms {
            self.leader_check_ms = now + LEADER_CHECK_MS;
            let check = self.writer()?.check_leader();
            tokio::time::timeout(PG_COMMIT_TIMEOUT, check).await.unwrap_or(Err(Error::Fenced))?;
        }
        if let Some(retain) = self.settings.retain_ms
            && now >= self.retention_due_ms
        {
            // A short retention (tests, fractions of a day) is looked at more often.
            self.retention_due_ms = now + RETENTION_SCAN_MS.min(retain / 2).max(50);
            self.expire(now.saturating_sub(retain)).await?;
        }
        if !self.purge_pending {
            return Ok(());
        }
        match self.writer()?.purge_step(PURGE_STEP_ROWS).await {
            Ok(Purge::Idle) => self.purge_pending = false,
            Ok(Purge::Job(job)) => {
                crate::metrics::record_purged(1);
                tracing::info!(job = %job, "deleted job purged");
            }
            Ok(Purge::Rows | Purge::Vacuumed) => {}
            Err(e) => {
                tracing::warn!(error = %e, "purging deleted jobs failed; trying again at the next scan");
                self.purge_pending = false;
            }
        }
        Ok(())
    }

    /// Marks the finished jobs unchanged since `before_ms` deleted (a batch of them).
    async fn expire(&mut self, before_ms: u64) -> Result<(), Error> {
        let jobs = match self.writer()?.expired_jobs(before_ms as i64, RETENTION_BATCH).await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(error = %e, "retention could not look for expired jobs");
                return Ok(());
            }
        };
        let mut b = Batch::default();
        for job in jobs {
            // Memory is the authority: a job retried since its row was read stays.
            let _ = self.delete_job(&JobId::from(job), &mut b);
        }
        if b.writes.delete_jobs.is_empty() {
            return Ok(());
        }
        // As for any batch: memory is ahead of the database if this fails, so the dispatcher
        // reloads from the database (`recover`).
        self.writer()?.commit(&b.writes, now_ms() as i64).await?;
        tracing::info!(jobs = b.writes.delete_jobs.len(), "retention: finished jobs removed");
        Ok(())
    }

    /// Applies one command to the scheduler; its answer waits for the batch's commit unless
    /// it is a refusal (nothing to commit) or a stream being opened.
    async fn apply(&mut self, cmd: Command, now: u64, b: &mut Batch) {
        match cmd {
            Command::CreateJob { job, idem, reply } => {
                let r = match self.replay(idem.as_ref(), b).await {
                    Ok(Some(bytes)) => decode_answer::<pb::Job>(&bytes),
                    Ok(None) => {
                        let job = self.create_job(job, now, b);
                        b.remember(idem, job.encode_to_vec());
                        Ok(job)
                    }
                    Err(e) => Err(e),
                };
                b.answer(reply, r);
            }
            Command::AddTasks { job, tasks, idem, reply } => {
                let r = match self.replay(idem.as_ref(), b).await {
                    Ok(Some(bytes)) => decode_answer::<pb::AddTasksResponse>(&bytes).map(|a| a.task_ids),
                    Ok(None) => self.add_tasks(job, tasks, b).await.inspect(|ids| {
                        b.remember(idem, pb::AddTasksResponse { task_ids: ids.clone() }.encode_to_vec());
                    }),
                    Err(e) => Err(e),
                };
                b.answer(reply, r);
            }
            Command::CancelJob { job, reason, reply } => {
                let r = self.cancel_job(job, reason, b);
                b.answer(reply, r);
            }
            Command::DeleteJob { job, reply } => {
                let r = self.delete_job(&JobId::from(job), b);
                b.answer(reply, r);
            }
            Command::CancelTask { task, reason, reply } => self.cancel_task(task, reason, reply, b),
            Command::RetryTasks { job, tasks, reply } => {
                let r = self.retry(job, tasks, b).await;
                b.answer(reply, r);
            }
            Command::SetContext { job, key, value, reply } => {
                let r = self.set_context(job, key, value, b);
                b.answer(reply, r);
            }
            Command::Register { req, reply } => {
                let r = self.register(req, now, b);
                b.reply(reply, r);
            }
            Command::Listen { worker, context_by_stream, reply } => {
                let _ = reply.send(self.listen(worker, context_by_stream, now));
            }
            Command::Disconnect { worker, session } => self.disconnect(worker, session, now),
            Command::Heartbeat { req, reply } => {
                let r = self.heartbeat(req, now);
                b.answer(reply, r);
            }
            Command::Report { req, reply } => {
                let r = self.report(req, now, b);
                b.reply(reply, r);
            }
            Command::Subscribe { job, after_seq, reply } => {
                let r = self.subscribe(job, after_seq, now);
                b.answer(reply, r);
            }
            Command::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
            Command::Fleet { reply } => {
                let _ = reply.send(self.fleet(now));
            }
            Command::Drain { worker, on, reply } => {
                let _ = reply.send(self.drain(&worker, on));
            }
            Command::LiveOutput { task, reply } => {
                let _ = reply.send(self.live_output.get(&TaskId(task)).map(|(_, o)| o.clone()));
            }
            cmd @ (Command::UpdateJob { .. }
            | Command::CreateSchedule { .. }
            | Command::DeleteSchedule { .. }
            | Command::ListSchedules { .. }
            | Command::NoticeDone { .. }) => self.apply_scheduling(cmd, now, b),
        }
    }

    fn stats(&self) -> Stats {
        let (counts, jobs) = self.sched.counts();
        let mut s = Stats { counts, jobs, totals: self.sched.totals(), ..Stats::default() };
        for (_, w) in self.sched.workers().filter(|(_, w)| w.session.is_some()) {
            s.workers_connected += 1;
            s.slots += w.slots as u64;
            if !w.draining {
                s.slots_free += w.slots.saturating_sub(w.held.len() as u32) as u64;
            }
        }
        s
    }

    /// The first answer to a repeated idempotency key: from this batch, or from the store.
    async fn replay(&mut self, idem: Option<&Idem>, b: &mut Batch) -> Result<Option<Vec<u8>>, Error> {
        let Some(idem) = idem else { return Ok(None) };
        if let Some(r) = b.writes.requests.iter().find(|r| r.key == idem.key) {
            return idempotency::replay(idem, &r.digest, r.response.clone()).map(Some);
        }
        match self.writer()?.request(&idem.key).await? {
            Some((digest, response)) => idempotency::replay(idem, &digest, response).map(Some),
            None => Ok(None),
        }
    }

    /// A new job; its reply is built here, so a committed CreateJob never waits on a read.
    fn create_job(&mut self, new: NewJob, now: u64, b: &mut Batch) -> pb::Job {
        let NewJob { description, metadata, owner, controls } = new;
        let id = uuid::Uuid::now_v7().to_string();
        let job = JobId::from(id.as_str());
        self.sched.insert_job(job.clone(), Counts::default(), false, 0);
        self.sched.set_controls(&job, controls).expect("the job was just inserted");
        b.writes.jobs.push(JobInsert {
            job_id: id.clone(),
            description: description.clone(),
            metadata: metadata.as_ref().map(|m| m.encode_to_vec()),
            owner: owner.clone(),
            controls,
        });
        b.touched_jobs.insert(job);
        pb::Job {
            description,
            metadata,
            created_at_ms: now as i64,
            updated_at_ms: now as i64,
            owner: owner.unwrap_or_default(),
            ..convert::live_job(&id, &Counts::default(), false, &controls, &Spend::default())
        }
    }

    /// UpdateJob: the controls given change, from this batch's dispatch on.
    fn update_job(&mut self, job: String, update: ControlsUpdate, b: &mut Batch) -> Result<(), Error> {
        let job = JobId::from(job);
        let info = self.sched.job(&job).ok_or_else(|| Error::NotFound(format!("job {job} not found")))?;
        let controls = update.apply(info.controls);
        self.sched.set_controls(&job, controls)?;
        b.touched_jobs.insert(job);
        Ok(())
    }

    fn cancel_job(&mut self, job: String, reason: String, b: &mut Batch) -> Result<(), Error> {
        let reason = if reason.is_empty() { defaults::JOB_CANCEL_REASON.to_string() } else { reason };
        let job = JobId::from(job);
        let fx = self.sched.cancel_job(&job, &reason)?;
        b.effects.extend(fx);
        b.touched_jobs.insert(job);
        Ok(())
    }

    /// Takes a finished job out of memory and marks it deleted with the batch; its rows are
    /// purged later, between batches (see `housekeeping`).
    fn delete_job(&mut self, job: &JobId, b: &mut Batch) -> Result<(), Error> {
        self.sched.remove_job(job)?;
        self.feeds.remove(job);
        self.context.remove_scope(job.as_str());
        b.touched_jobs.remove(job);
        b.writes.delete_jobs.push(job.to_string());
        self.purge_pending = true;
        Ok(())
    }

    /// Cancels a live task (answered once committed); `false` at once when it is not in
    /// memory (final, or unknown): the dispatcher never reads for that, the caller does.
    fn cancel_task(&mut self, task: i64, reason: String, reply: Reply<bool>, b: &mut Batch) {
        let reason = if reason.is_empty() { defaults::TASK_CANCEL_REASON.to_string() } else { reason };
        if self.sched.task(TaskId(task)).is_none() {
            let _ = reply.send(Ok(false));
            return;
        }
        match self.sched.cancel_task(TaskId(task), &reason) {
            Ok(fx) => {
                b.effects.extend(fx);
                b.reply(reply, true);
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    fn set_context(&mut self, job: String, key: String, value: String, b: &mut Batch) -> Result<(), Error> {
        if !job.is_empty() && self.sched.job(&JobId::from(job.as_str())).is_none() {
            return Err(Error::NotFound(format!("job {job} not found")));
        }
        self.context.set(&job, &key, &value)?;
        b.writes.context.push((job, key, (!value.is_empty()).then_some(value)));
        Ok(())
    }

    fn register(&mut self, req: pb::RegisterRequest, now: u64, b: &mut Batch) -> pb::RegisterResponse {
        let id = if req.worker_id.is_empty() {
            format!("w-{}", uuid::Uuid::now_v7().simple())
        } else {
            req.worker_id.clone()
        };
        let wid = WorkerId::from(id.as_str());
        let running: Vec<(TaskId, u32)> = req.running.iter().map(|r| (TaskId(r.task_id), r.attempt)).collect();
        let (stale, fx) = self.sched.register(wid, labels_of(&req.labels), req.slots, &running, now);
        b.effects.extend(fx);
        for (t, a) in &stale {
            tracing::info!(worker = %id, task = t.0, attempt = a, "attempt is stale at registration; the worker drops it");
        }
        let described =
            fleet::Described { name: req.name.clone(), hostname: req.hostname.clone(), version: req.version.clone() };
        // Forgotten workers' descriptions go here too, not only when someone lists workers.
        let sched = &self.sched;
        self.described.retain(|w, _| sched.worker(w).is_some());
        self.described.insert(WorkerId::from(id.as_str()), described);
        let (name, host) = (contract::log_safe(&req.name, 256), contract::log_safe(&req.hostname, 256));
        tracing::info!(worker = %id, name = %name, host = %host, slots = req.slots, "worker registered");
        pb::RegisterResponse {
            worker_id: id,
            lease_seconds: (self.settings.limits.lease_ms / 1_000) as u32,
            heartbeat_interval_seconds: self.settings.heartbeat_seconds,
            stale: stale.into_iter().map(|(t, a)| pb::TaskRef { task_id: t.0, attempt: a }).collect(),
            coordinator_version: contract::VERSION.to_string(),
        }
    }

    /// Opens a worker's assignment stream. A new stream replaces the worker's old one, which
    /// ends (its receiver sees an ABORTED status, then the end of the stream).
    fn listen(&mut self, worker: String, context_by_stream: bool, now: u64) -> Result<Listening, Error> {
        let wid = WorkerId::from(worker.as_str());
        let session = self.next_session;
        self.next_session += 1;
        self.sched.connect(&wid, session, now)?;
        let slots = self.sched.worker(&wid).map(|w| w.slots as usize).unwrap_or(0);
        let (tx, rx) = mpsc::channel(slots + LISTEN_EXTRA);
        let ended = CancellationToken::new();
        let new =
            Session { id: session, tx: tx.clone(), ended: ended.clone(), context_by_stream, sent: HashMap::new() };
        let old = self.sessions.insert(wid, new);
        if let Some(old) = old {
            let msg = format!("worker {worker} opened a newer Listen stream (session {session})");
            let _ = old.tx.try_send(Err(Status::aborted(msg)));
            old.ended.cancel();
            tracing::info!(worker = %worker, old = old.id, session, "listen stream replaced");
        }
        tracing::info!(worker = %worker, session, "worker connected");
        Ok(Listening { session, rx, tx, ended })
    }

    fn disconnect(&mut self, worker: String, session: u64, now: u64) {
        let wid = WorkerId::from(worker.as_str());
        if self.sessions.get(&wid).is_some_and(|s| s.id == session) {
            self.sessions.remove(&wid);
            tracing::info!(worker = %worker, session, "worker disconnected");
        }
        self.sched.disconnect(&wid, session, now);
    }

    fn heartbeat(&mut self, req: pb::HeartbeatRequest, now: u64) -> Result<pb::HeartbeatResponse, Error> {
        let wid = WorkerId::from(req.worker_id.as_str());
        let running: Vec<(TaskId, u32)> = req.running.iter().map(|r| (TaskId(r.task_id), r.attempt)).collect();
        let (stale, expires) = self.sched.heartbeat(&wid, &running, now)?;
        Ok(pb::HeartbeatResponse {
            stale: stale.into_iter().map(|(t, a)| pb::TaskRef { task_id: t.0, attempt: a }).collect(),
            lease_expires_ms: expires as i64,
        })
    }

    /// Applies each report after checking its fencing token; a stale one is refused alone.
    fn report(&mut self, req: pb::ReportRequest, now: u64, b: &mut Batch) -> pb::ReportResponse {
        let wid = WorkerId::from(req.worker_id.as_str());
        let mut acks = Vec::with_capacity(req.reports.len());
        for rep in req.reports {
            let (task_id, attempt) = (rep.task_id, rep.attempt);
            let (outcome, result) = outcome_of(rep.body);
            let ended = fleet::Ended::of(&outcome, result.as_ref());
            let refused = match self.sched.report(&wid, TaskId(task_id), attempt, outcome, now) {
                Ok(fx) => {
                    if let Some(e) = ended {
                        b.ended.insert(TaskId(task_id), e);
                    }
                    if let Some(r) = result {
                        self.charge(TaskId(task_id), &r);
                        b.results.insert(TaskId(task_id), r.encode_to_vec());
                    }
                    b.effects.extend(fx);
                    None
                }
                Err(e) => {
                    tracing::debug!(task = task_id, attempt, worker = %wid, reason = %e, "report rejected");
                    Some(e.to_string())
                }
            };
            let accepted = refused.is_none();
            acks.push(pb::ReportAck { task_id, attempt, accepted, reason: refused.unwrap_or_default() });
        }
        pb::ReportResponse { acks }
    }

    /// Adds what an ended attempt reported spending to its job (the budget's count).
    fn charge(&mut self, task: TaskId, r: &pb::TaskResult) {
        let u = r.usage.unwrap_or_default();
        let spend = Spend {
            cost_usd: if r.cost_usd.is_finite() { r.cost_usd.max(0.0) } else { 0.0 },
            input_tokens: u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens,
            output_tokens: u.output_tokens,
        };
        if spend == Spend::default() {
            return;
        }
        if let Some(job) = self.sched.task(task).map(|e| e.job.clone()) {
            self.sched.charge(&job, spend);
        }
    }

    fn subscribe(&mut self, job: String, after_seq: u64, now: u64) -> Result<Subscription, Error> {
        let jid = JobId::from(job.as_str());
        let info = self.sched.job(&jid).ok_or_else(|| Error::NotFound(format!("job {job} not found")))?;
        let (last_seq, counts, cancelled) = (info.last_seq, info.counts, info.cancelled);
        // Answered after this batch commits, so it sees exactly the events after last_seq.
        let Subscribed { rx, missed } = self.feeds.subscribe(jid, after_seq, last_seq, now);
        Ok(Subscription { rx, missed, last_seq, counts, cancelled })
    }

    async fn add_tasks(&mut self, job: String, tasks: Vec<CheckedTask>, b: &mut Batch) -> Result<Vec<i64>, Error> {
        let jid = JobId::from(job.as_str());
        if self.sched.job(&jid).is_none() {
            return Err(Error::NotFound(format!("job {job} not found")));
        }
        let first = self.next_task_id;
        let ids: Vec<i64> = (0..tasks.len() as i64).map(|i| first + i).collect();
        let mut new = Vec::with_capacity(tasks.len());
        let mut external: Vec<i64> = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            let resolve = |d: &DepRef| match d {
                DepRef::Task(t) => *t,
                DepRef::Batch(j) => ids[*j],
            };
            let deps: Vec<i64> = t.deps.iter().map(resolve).collect();
            let mut spec = t.spec;
            if let (Some(g), Some(on)) = (spec.git.as_mut(), t.builds_on.as_ref()) {
                g.builds_on = resolve(on);
            }
            spec.parent_task_id = spec.parent_task_id.map(|p| if p < 0 { ids[(-p - 1) as usize] } else { p });
            for d in spec.depends_on.iter_mut() {
                if *d < 0 {
                    *d = ids[(-*d - 1) as usize];
                }
            }
            for d in &deps {
                if *d < first && self.sched.task(TaskId(*d)).is_none() {
                    external.push(*d);
                }
            }
            let payload: Arc<[u8]> = Arc::from(spec.encode_to_vec());
            new.push(new_task(TaskId(ids[i]), &spec, deps.into_iter().map(TaskId).collect(), Some(payload)));
        }
        external.sort_unstable();
        external.dedup();
        let stored = self.stored(&external).await?;
        self.sched.check_add(&jid, &new, &stored)?;
        self.next_task_id += ids.len() as i64;
        for t in &new {
            if let Some(p) = &t.payload {
                b.created.insert(t.id, p.clone());
            }
            for d in &t.deps {
                b.writes.deps.push((t.id.0, d.0));
            }
        }
        let fx = self.sched.add_tasks(&jid, new, &stored);
        b.effects.extend(fx);
        b.touched_jobs.insert(jid);
        Ok(ids)
    }

    /// Final tasks read from the store, by id.
    async fn stored(&mut self, ids: &[i64]) -> Result<HashMap<TaskId, StoredTask>, Error> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = self.writer()?.tasks_by_id(ids).await?;
        Ok(rows
            .into_iter()
            .map(|(job, r)| {
                let id = TaskId(r.task_id);
                (id, StoredTask { id, job: JobId::from(job), state: r.state, cancel_cause: r.cancel_cause.map(TaskId) })
            })
            .collect())
    }

    /// Refuses a RetryTasks call that names an unknown task, a task that is not failed or
    /// cancelled, a task of another job, or a task of a cancelled job (which takes no work).
    async fn check_retry(&mut self, job: &str, ids: &[i64]) -> Result<(), Error> {
        let cancelled = |sched: &Scheduler, j: &str| sched.job(&JobId::from(j)).is_some_and(|i| i.cancelled);
        if ids.is_empty() {
            if self.sched.job(&JobId::from(job)).is_none() {
                return Err(Error::NotFound(format!("job {job} not found")));
            }
            if cancelled(&self.sched, job) {
                return Err(Error::FailedPrecondition(format!("job {job} is cancelled; its tasks cannot be retried")));
            }
            return Ok(());
        }
        let found: HashMap<i64, (String, State)> =
            self.writer()?.tasks_by_id(ids).await?.into_iter().map(|(j, r)| (r.task_id, (j, r.state))).collect();
        for id in ids {
            // Memory is newer than the store (a task may have changed, or been added, in this
            // very batch).
            let (task_job, state) = match (self.sched.task(TaskId(*id)), found.get(id)) {
                (Some(e), _) => (e.job.to_string(), e.state),
                (None, Some((j, s))) => (j.clone(), *s),
                (None, None) => return Err(Error::NotFound(format!("task {id} not found"))),
            };
            if !matches!(state, State::Failed | State::Cancelled) {
                let msg = format!("task {id} is {}; only failed or cancelled tasks can be retried", state.name());
                return Err(Error::FailedPrecondition(msg));
            }
            if !job.is_empty() && task_job != job {
                return Err(Error::InvalidArgument(format!(
                    "task_ids: task {id} belongs to job {task_job}, not {job}"
                )));
            }
            if cancelled(&self.sched, &task_job) {
                let msg = format!("task {id} belongs to job {task_job}, which is cancelled; it cannot be retried");
                return Err(Error::FailedPrecondition(msg));
            }
        }
        Ok(())
    }

    async fn retry(&mut self, job: String, ids: Vec<i64>, b: &mut Batch) -> Result<Vec<i64>, Error> {
        self.check_retry(&job, &ids).await?;
        let rows = self.writer()?.revivable((!job.is_empty()).then_some(job.as_str()), &ids).await?;
        let revived_ids: HashSet<i64> = rows.iter().map(|r| r.row.task_id).collect();
        let mut revived = Vec::with_capacity(rows.len());
        let mut external = Vec::new();
        for r in rows {
            let id = TaskId(r.row.task_id);
            // A task still in memory is either live (skip it) or became final in this batch
            // (its row in the store is older than memory).
            let (state, cause) = match self.sched.task(id) {
                Some(e) if !e.state.is_final() => continue,
                Some(e) => (e.state, e.cancel_cause),
                None => (r.row.state, r.row.cancel_cause.map(TaskId)),
            };
            if !state.is_final() {
                continue;
            }
            let spec = decode_spec(&r.spec, r.row.task_id)?;
            for d in &r.deps {
                if !revived_ids.contains(d) && self.sched.task(TaskId(*d)).is_none() {
                    external.push(*d);
                }
            }
            let deps = r.deps.iter().map(|d| TaskId(*d)).collect();
            revived.push(RevivedTask {
                task: new_task(id, &spec, deps, Some(Arc::from(r.spec))),
                job: JobId::from(r.job_id),
                state,
                attempt: r.row.attempt,
                cancel_cause: cause,
                previous_error: (state == State::Failed && !r.row.reason.is_empty())
                    .then(|| Arc::from(r.row.reason.as_str())),
            });
        }
        external.sort_unstable();
        external.dedup();
        let stored = self.stored(&external).await?;
        let fx = self.sched.revive(revived, &stored);
        let mut out: Vec<i64> = fx
            .iter()
            .filter_map(|e| match e {
                Effect::Changed { id, to: State::Waiting, from: Some(f), .. } if f.is_final() => Some(id.0),
                _ => None,
            })
            .collect();
        out.sort_unstable();
        b.effects.extend(fx);
        Ok(out)
    }

    /// Turns the batch's state changes into rows to insert or update.
    fn collect_rows(&self, b: &mut Batch, now: u64) {
        let mut dirty: BTreeSet<TaskId> = BTreeSet::new();
        for e in &b.effects {
            match e {
                Effect::Changed { id, job, from, to, attempt, held_ms, reason, worker, .. } => {
                    dirty.insert(*id);
                    b.touched_jobs.insert(job.clone());
                    // A completed attempt needs no row: GetTask tells it from the task's own
                    // row and result, so the common case costs no write.
                    if *from == Some(State::InProgress) && *to != State::Completed {
                        let worker = worker.as_ref().map(|w| w.to_string());
                        let ended = b.ended.remove(id);
                        let at = fleet::AttemptEnd { task: *id, attempt: *attempt, worker, now, held_ms: *held_ms };
                        b.writes.attempts.push(fleet::attempt_record(at, *to, reason, ended));
                    }
                }
                Effect::Progress { job, .. } | Effect::JobCancelled { job, .. } => {
                    b.touched_jobs.insert(job.clone());
                }
                _ => {}
            }
        }
        for id in b.created.keys() {
            dirty.insert(*id);
        }
        for id in dirty {
            let Some(e) = self.sched.task(id) else { continue };
            let row = row_of(e);
            if let Some(spec) = b.created.get(&id) {
                let (job_id, priority, spec) = (e.job.to_string(), e.priority, spec.to_vec());
                b.writes.tasks.push(TaskInsert { row, job_id, priority, spec });
            } else {
                b.writes.updates.push((row, b.results.remove(&id)));
            }
        }
        // Inserts in id order keep dependencies (smaller ids) before dependents.
        b.writes.tasks.sort_by_key(|t| t.row.task_id);
    }

    /// Gives every state change and progress chunk its job's next sequence number; builds
    /// the events of watched jobs, each with the job's counts right after it.
    fn sequence_events(&mut self, b: &Batch) -> Vec<(JobId, Arc<pb::JobEvent>)> {
        let time_ms = now_ms() as i64;
        // Counts at the start of the batch, for the watched jobs: undo the batch's changes.
        let mut running: HashMap<JobId, Counts> = HashMap::new();
        for job in self.feeds.jobs() {
            if let Some(info) = self.sched.job(job) {
                running.insert(job.clone(), info.counts);
            }
        }
        for e in b.effects.iter().rev() {
            if let Effect::Changed { job, from, to, .. } = e
                && let Some(c) = running.get_mut(job)
            {
                c.sub(*to);
                if let Some(f) = from {
                    c.add(*f);
                }
            }
        }
        // A job cancelled in this batch shows as cancelled from its JobCancelled event on.
        let cancelled_now: HashSet<&JobId> = b
            .effects
            .iter()
            .filter_map(|e| if let Effect::JobCancelled { job, .. } = e { Some(job) } else { None })
            .collect();
        let mut cancelled: HashSet<JobId> = running
            .keys()
            .filter(|j| !cancelled_now.contains(j) && self.sched.job(j).is_some_and(|i| i.cancelled))
            .cloned()
            .collect();
        let mut out = Vec::new();
        for e in &b.effects {
            // (job, task, kind, new state, previous state, attempt, message)
            let (job, id, kind, to, from, attempt, message) = match e {
                Effect::Changed { id, job, from, to, attempt, reason, .. } => {
                    (job, *id, pb::JobEventKind::TaskState, Some(*to), *from, *attempt, reason)
                }
                Effect::Progress { id, job, attempt, message } => {
                    (job, *id, pb::JobEventKind::TaskProgress, None, None, *attempt, message)
                }
                Effect::JobCancelled { job, reason } => {
                    cancelled.insert(job.clone());
                    (job, TaskId(0), pb::JobEventKind::JobCancelled, None, None, 0, reason)
                }
                Effect::Assign { .. } | Effect::Revoke { .. } => continue,
            };
            let seq = self.sched.next_seq(job);
            let Some(c) = running.get_mut(job) else { continue };
            if let Some(to) = to {
                if let Some(f) = from {
                    c.sub(f);
                }
                c.add(to);
            }
            out.push((
                job.clone(),
                Arc::new(pb::JobEvent {
                    seq,
                    job_id: job.to_string(),
                    kind: kind as i32,
                    task_id: id.0,
                    state: to.map(convert::state).unwrap_or(0),
                    previous_state: from.map(convert::state).unwrap_or(0),
                    attempt,
                    message: message.clone(),
                    status: Some(convert::status(c)),
                    job_state: convert::job_state(c, cancelled.contains(job)) as i32,
                    time_ms,
                    ..Default::default()
                }),
            ));
        }
        out
    }

    fn publish(&mut self, events: Vec<(JobId, Arc<pb::JobEvent>)>, now: u64) {
        let sched = &self.sched;
        let idle = |job: &JobId| sched.job(job).is_none_or(|j| j.counts.all_final() || j.cancelled);
        self.feeds.publish(events, now, idle);
    }

    /// Where the batch's git tasks that build on others start (their chains' base commits and
    /// patches), read from the store: those tasks completed, so their results are durable.
    async fn git_bases(&mut self, effects: &[Effect]) -> Result<HashMap<TaskId, pb::GitBase>, Error> {
        let mut bases = HashMap::new();
        for e in effects {
            let Effect::Assign { id, payload: Some(p), git_chain: true, .. } = e else { continue };
            let on = pb::TaskSpec::decode(&p[..]).ok().and_then(|s| s.git).map_or(0, |g| g.builds_on);
            if on != 0 {
                bases.insert(*id, self.writer()?.git_base(on).await?);
            }
        }
        Ok(bases)
    }

    /// Sends the batch's assignments and cancellations; specs not cached in memory are read
    /// from the store first, in one query (they are durable: the batch committed).
    async fn send_to_workers(&mut self, effects: &mut [Effect]) -> Result<(), Error> {
        let missing: Vec<i64> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Assign { id, payload: None, .. } => Some(id.0),
                _ => None,
            })
            .collect();
        if !missing.is_empty() {
            let mut specs = self.writer()?.specs(&missing).await?;
            for e in effects.iter_mut() {
                if let Effect::Assign { id, payload: p @ None, .. } = e {
                    *p = specs.remove(&id.0).map(Arc::from);
                }
            }
        }
        let bases = self.git_bases(effects).await?;
        if orca_telemetry::enabled() {
            trace_assignments(effects);
        }
        let per = streams::messages(effects, &mut self.sessions, &self.context, bases);
        for (worker, msgs) in per {
            let Some(s) = self.sessions.get(&worker) else { continue };
            if let Err(e) = msgs.into_iter().try_for_each(|m| s.tx.try_send(Ok(m))) {
                // The worker does not read its stream (or it is gone): treat it as
                // disconnected; its leases expire and its tasks run elsewhere.
                match e {
                    mpsc::error::TrySendError::Full(_) => {
                        tracing::warn!(worker = %worker, "assignment stream full; disconnecting the worker")
                    }
                    mpsc::error::TrySendError::Closed(_) => {
                        tracing::debug!(worker = %worker, "assignment stream gone; disconnecting the worker")
                    }
                }
                let id = s.id;
                s.ended.cancel();
                self.sessions.remove(&worker);
                self.sched.disconnect(&worker, id, now_ms());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(tasks: usize) -> Command {
        let task = CheckedTask { spec: pb::TaskSpec::default(), deps: vec![], builds_on: None };
        Command::AddTasks { job: "j".into(), tasks: vec![task; tasks], idem: None, reply: oneshot::channel().0 }
    }

    fn light() -> Command {
        Command::CancelTask { task: 1, reason: String::new(), reply: oneshot::channel().0 }
    }

    #[test]
    fn heavy_commands_past_the_batch_budget_wait_while_light_ones_go_on() {
        let mut g = Gather::default();
        for c in [add(BATCH_WORK - 10), light(), add(100), light(), add(5), add(2 * BATCH_WORK)] {
            g.take((Instant::now(), c));
        }
        let kinds: Vec<usize> = g.cmds.iter().map(|(_, c)| c.cost()).collect();
        assert_eq!(kinds, vec![BATCH_WORK - 10, 0, 0, 5]);
        assert_eq!(g.later.iter().map(|(_, c)| c.cost()).collect::<Vec<_>>(), vec![100, 2 * BATCH_WORK]);
        // A command over the budget on its own still runs, first of its batch.
        let mut g = Gather::default();
        g.take((Instant::now(), add(2 * BATCH_WORK)));
        g.take((Instant::now(), light()));
        assert_eq!(g.cmds.len(), 2);
    }

    #[test]
    fn a_running_attempts_output_is_kept_to_its_tail_until_it_ends() {
        let mut live = HashMap::new();
        let progress = |attempt, message: &str| Effect::Progress {
            id: TaskId(1),
            job: "j".into(),
            attempt,
            message: message.to_string(),
        };
        track_output(&mut live, &[progress(1, "one"), progress(1, "two")]);
        assert_eq!(live[&TaskId(1)].1, "one\ntwo\n");
        track_output(&mut live, &[progress(2, "again")]);
        assert_eq!(live[&TaskId(1)], (2, "again\n".to_string()), "a new attempt starts over");
        track_output(&mut live, &[progress(2, &"x".repeat(LIVE_OUTPUT_BYTES))]);
        assert_eq!(live[&TaskId(1)].1.len(), LIVE_OUTPUT_BYTES);
        let ended = Effect::Changed {
            id: TaskId(1),
            job: "j".into(),
            from: Some(State::InProgress),
            to: State::Completed,
            attempt: 2,
            reason: String::new(),
            held_ms: 0,
            age_ms: 0,
            worker: None,
        };
        track_output(&mut live, &[ended]);
        assert!(live.is_empty());
    }

    #[test]
    fn start_up_pages_follow_the_byte_aim() {
        assert_eq!(next_page(256, 1), 512);
        assert_eq!(next_page(crate::store::LOAD_PAGE, 1), crate::store::LOAD_PAGE);
        assert_eq!(next_page(256, LOAD_PAGE_BYTES + 1), 128);
        assert_eq!(next_page(1, usize::MAX), 1);
        assert_eq!(next_page(64, LOAD_PAGE_BYTES / 2), 64);
    }
}
