//! Persistence through sqlx, on SQLite (a file, the default) or Postgres (`--db postgres://`):
//! schema migrations, the writer's batched writes, start-up loading, and the reads the API
//! serves.
//!
//! One [`Writer`] owns the only writing connection and applies a whole [`WriteBatch`] in one
//! transaction (group commit). Reads go through a separate pool ([`Store`]); each read
//! transaction sees one committed state (SQLite's WAL; Postgres's REPEATABLE READ for the
//! snapshot pages that read twice). This is the one place that knows SQL; its errors are
//! mapped to [`crate::Error`] here.
//!
//! Both backends share their types, their row decoding and every statement whose text is the
//! same on both (written once in the `common_*` macros below, expanded in each backend with
//! that backend's placeholders); what differs lives in [`sqlite`] and [`postgres`]: opening,
//! migrations, the bulk statements of a commit (multi-row VALUES on SQLite, UNNEST of arrays
//! on Postgres), the start-up pages, and giving space back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Error;
use crate::queue::{Controls, Counts, Spend, State};

#[macro_use]
mod common;
pub mod postgres;
pub mod sqlite;
#[cfg(test)]
mod tests;

pub use sqlite::{CHECKPOINT_EVERY, CHECKPOINT_WAL_BYTES, checkpointer};

/// How durable commits are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// A commit survives power loss (the default): SQLite `synchronous=FULL`, Postgres
    /// `synchronous_commit=on`.
    Full,
    /// A commit survives a crash of the coordinator, not of the machine (SQLite
    /// `synchronous=NORMAL`; Postgres `synchronous_commit=off`: a crash of Postgres itself
    /// may lose the last commits, never corrupt).
    Normal,
}

/// Where the queue lives: a SQLite file or a Postgres database.
#[derive(Clone, Debug)]
pub enum Target {
    Sqlite(PathBuf),
    Postgres(postgres::Settings),
}

impl Target {
    /// `--db` and its connection settings: a `postgres://` (or `postgresql://`) URL is
    /// Postgres, anything else a SQLite file path.
    pub fn new(db: &Path, pg: postgres::Settings) -> Target {
        // (`pg` carries every Postgres setting but the URL.)
        match db.to_str().filter(|s| orca_proto::contract::is_postgres_url(s)) {
            Some(url) => Target::Postgres(postgres::Settings { url: url.to_string(), ..pg }),
            None => Target::Sqlite(db.to_path_buf()),
        }
    }

    /// The database for logs: the file, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            Target::Sqlite(p) => p.display().to_string(),
            Target::Postgres(s) => postgres::redact(&s.url),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Target::Postgres(_))
    }
}

/// The mutable columns of a task row.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskRow {
    pub task_id: i64,
    pub state: State,
    pub attempt: u32,
    pub retries_used: u32,
    pub lost_leases: u32,
    pub worker_id: Option<String>,
    pub not_before_ms: u64,
    pub cancel_cause: Option<i64>,
    pub reason: String,
}

/// A new task row.
#[derive(Clone, Debug)]
pub struct TaskInsert {
    pub row: TaskRow,
    pub job_id: String,
    pub priority: i32,
    pub spec: Vec<u8>,
}

/// A new job row.
#[derive(Clone, Debug)]
pub struct JobInsert {
    pub job_id: String,
    pub description: String,
    pub metadata: Option<Vec<u8>>,
    /// The name of the token that created it (with auth).
    pub owner: Option<String>,
    pub controls: Controls,
}

/// A job's counters, controls and spend after a batch.
#[derive(Clone, Debug)]
pub struct JobUpdate {
    pub job_id: String,
    pub counts: Counts,
    pub cancelled: bool,
    pub last_seq: u64,
    pub controls: Controls,
    pub spend: Spend,
}

/// Everything one batch writes, in one transaction.
#[derive(Debug, Default)]
pub struct WriteBatch {
    pub jobs: Vec<JobInsert>,
    pub tasks: Vec<TaskInsert>,
    pub deps: Vec<(i64, i64)>,
    /// Rows to update, with the encoded result of the attempt that just ended, if any.
    pub updates: Vec<(TaskRow, Option<Vec<u8>>)>,
    pub job_updates: Vec<JobUpdate>,
    /// (scope, key, value); `None` deletes.
    pub context: Vec<(String, String, Option<String>)>,
    /// Idempotency keys of the calls this batch answers.
    pub requests: Vec<RequestRecord>,
    /// Forget idempotency keys stored before this time (ms).
    pub prune_requests_before: Option<i64>,
    /// Jobs to remove: marked now, purged later (see [`Writer::purge_step`]).
    pub delete_jobs: Vec<String>,
    /// Attempts that ended in this batch.
    pub attempts: Vec<AttemptRecord>,
    /// Schedules created, replaced or fired (the whole row).
    pub schedule_puts: Vec<ScheduleRow>,
    pub schedule_deletes: Vec<String>,
    /// Job-completion notices to deliver (`--job-webhook`), and delivered ones to forget.
    pub notices: Vec<Notice>,
    pub notices_done: Vec<(String, u64)>,
}

/// A recurring job's row (migration 0007).
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleRow {
    pub name: String,
    pub cron: String,
    /// The encoded `orca.v1.CreateScheduleRequest` (its `replace` cleared).
    pub template: Vec<u8>,
    pub next_run_ms: i64,
    pub last_run_ms: i64,
    pub last_job_id: String,
    pub owner: Option<String>,
    pub created_at_ms: i64,
}

/// A job-completion notice waiting to be delivered.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    pub job_id: String,
    /// The job's event sequence number when it went idle (a job retried and finished again
    /// gets a new notice).
    pub seq: u64,
    /// The JSON document posted.
    pub body: String,
    pub created_at_ms: i64,
}

/// One ended attempt (migration 0005).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AttemptRecord {
    pub task_id: i64,
    pub attempt: u32,
    pub worker_id: Option<String>,
    pub started_ms: i64,
    pub ended_ms: i64,
    /// `completed`, `failed`, `handed_back`, `lost` or `cancelled`.
    pub outcome: &'static str,
    pub reason: String,
    pub exit_code: Option<i32>,
    pub cost_usd: Option<f64>,
    pub duration_ms: Option<i64>,
    pub output_tail: String,
}

/// An idempotency key and the answer it gets (see migration 0002).
#[derive(Clone, Debug, PartialEq)]
pub struct RequestKey {
    pub caller: String,
    pub method: &'static str,
    pub job_id: String,
    pub request_id: String,
}

/// A stored idempotency key: the request's digest and the encoded first answer.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub key: RequestKey,
    pub digest: Vec<u8>,
    pub response: Vec<u8>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
            && self.tasks.is_empty()
            && self.deps.is_empty()
            && self.updates.is_empty()
            && self.job_updates.is_empty()
            && self.context.is_empty()
            && self.requests.is_empty()
            && self.prune_requests_before.is_none()
            && self.delete_jobs.is_empty()
            && self.attempts.is_empty()
            && self.schedule_puts.is_empty()
            && self.schedule_deletes.is_empty()
            && self.notices.is_empty()
            && self.notices_done.is_empty()
    }
}

/// A job as stored.
#[derive(Clone, Debug)]
pub struct JobRecord {
    pub job_id: String,
    pub description: String,
    pub metadata: Option<Vec<u8>>,
    pub cancelled: bool,
    pub last_seq: u64,
    pub counts: Counts,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub owner: Option<String>,
    pub controls: Controls,
    pub spend: Spend,
}

/// A task as stored.
#[derive(Clone, Debug)]
pub struct TaskRecord {
    pub job_id: String,
    pub row: TaskRow,
    pub priority: i32,
    pub spec: Option<Vec<u8>>,
    pub result: Option<Vec<u8>>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A task that is not final, loaded at start.
#[derive(Clone, Debug)]
pub struct LiveTask {
    pub job_id: String,
    pub row: TaskRow,
    pub spec: Vec<u8>,
    pub deps: Vec<i64>,
}

/// Tasks per page at most when the tasks that are not final are loaded at start.
pub const LOAD_PAGE: usize = 10_000;

/// What the coordinator loads at start (the tasks that are not final come page by page,
/// [`Writer::live_page`]).
#[derive(Debug, Default)]
pub struct Loaded {
    pub jobs: Vec<JobRecord>,
    pub context: Vec<(String, String, String)>,
    pub max_task_id: i64,
    /// Some jobs are marked deleted and not purged yet.
    pub purge_pending: bool,
    pub schedules: Vec<ScheduleRow>,
}

/// What one [`Writer::purge_step`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Purge {
    /// Nothing to delete and no free page to give back.
    Idle,
    /// Deleted some rows of a job; more follow.
    Rows,
    /// Deleted the last of this job.
    Job(String),
    /// Gave free pages back to the file system.
    Vacuumed,
}

/// A page of tasks.
#[derive(Clone, Debug, Default)]
pub struct TaskQuery<'a> {
    /// One job's tasks, or (`None`) every live job's.
    pub job_id: Option<&'a str>,
    /// Only the tasks whose current or last attempt is this worker's.
    pub worker_id: Option<&'a str>,
    /// Only the tasks of jobs this token name created (a submitter listing every job).
    pub owner: Option<&'a str>,
    pub states: Vec<State>,
    pub after_id: i64,
    pub limit: u32,
    pub with_payloads: bool,
    /// Bytes of specs and results a page holds at most (but always one task).
    pub max_bytes: usize,
}

/// Characters of a task's reason in a WatchJob snapshot.
pub const SUMMARY_REASON_CHARS: usize = 200;

/// What an ended attempt's `outcome` can be.
pub const ATTEMPT_OUTCOMES: [&str; 5] = ["completed", "failed", "handed_back", "lost", "cancelled"];

/// Read connections in the pool (Postgres: `--db-pool-size`).
pub const READERS: u32 = 4;
/// Of those, the most that WatchJob snapshots use at once.
const SNAPSHOT_READERS: usize = 2;

/// The read side: a pool of read connections.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(sqlite::Reads),
    Postgres(postgres::Reads),
}

/// The write side: the one connection that writes.
#[derive(Debug)]
pub enum Writer {
    Sqlite(sqlite::Writes),
    Postgres(postgres::Writes),
}

/// What opening gives the dispatcher.
#[derive(Debug)]
pub enum Opened {
    /// This coordinator writes: the writer, and what the scheduler loads.
    Leader(Writer, Loaded),
    /// Another coordinator leads (Postgres; its advertised address): this one waits as a
    /// standby.
    Standby(String),
}

/// Opens (creating if needed) and migrates the database; then, if this coordinator leads
/// (always on SQLite), loads what the scheduler needs.
pub async fn open(target: &Target, durability: Durability) -> Result<(Store, Opened), Error> {
    match target {
        Target::Sqlite(path) => {
            let (r, w, l) = sqlite::open(path, durability).await?;
            Ok((Store::Sqlite(r), Opened::Leader(Writer::Sqlite(w), l)))
        }
        Target::Postgres(s) => {
            let (r, opened) = postgres::open(s, durability).await?;
            let opened = match opened {
                Ok((w, l)) => Opened::Leader(Writer::Postgres(w), l),
                Err(Error::NotLeader(leader)) => Opened::Standby(leader),
                Err(e) => return Err(e),
            };
            Ok((Store::Postgres(r), opened))
        }
    }
}

/// A new writer and a fresh load, on a database already opened once (the dispatcher's
/// recovery after a failed commit: memory was ahead of the database, so it starts again from
/// what is committed; and a standby's bid to lead: `Error::NotLeader` while another leads).
pub async fn reopen(target: &Target, durability: Durability) -> Result<(Writer, Loaded), Error> {
    match target {
        Target::Sqlite(path) => {
            let (w, l) = sqlite::writer(path, durability).await?;
            Ok((Writer::Sqlite(w), l))
        }
        Target::Postgres(s) => {
            let (w, l) = postgres::writer(s, durability).await?;
            Ok((Writer::Postgres(w), l))
        }
    }
}

/// `match` on the backend, with the same expression for both.
macro_rules! either {
    ($on:expr, $b:ident => $e:expr) => {
        match $on {
            Store::Sqlite($b) => $e,
            Store::Postgres($b) => $e,
        }
    };
}

macro_rules! either_writer {
    ($on:expr, $b:ident => $e:expr) => {
        match $on {
            Writer::Sqlite($b) => $e,
            Writer::Postgres($b) => $e,
        }
    };
}

impl Store {
    /// Job-completion notices waiting to be delivered, oldest first, at most `limit`.
    pub async fn notices(&self, limit: u32) -> Result<Vec<Notice>, Error> {
        either!(self, s => s.notices(limit).await)
    }

    pub async fn job(&self, job_id: &str) -> Result<Option<JobRecord>, Error> {
        either!(self, s => s.job(job_id).await)
    }

    /// Jobs in id order (UUIDv7 ids: creation order), after `after`; only `owner`'s when set.
    pub async fn jobs(&self, after: &str, limit: u32, owner: Option<&str>) -> Result<Vec<JobRecord>, Error> {
        either!(self, s => s.jobs(after, limit, owner).await)
    }

    /// The repositories of the tasks among `ids` that have a git source (AddTasks looks up
    /// what a new git task builds on).
    pub async fn git_repos(&self, ids: &[i64]) -> Result<HashMap<i64, String>, Error> {
        either!(self, s => s.git_repos(ids).await)
    }

    pub async fn task(&self, task_id: i64) -> Result<Option<TaskRecord>, Error> {
        either!(self, s => s.task(task_id).await)
    }

    /// A page of a job's tasks after `after_id`: at most `limit` tasks and about
    /// `max_bytes` of specs and results (at least one task), and whether more follow.
    pub async fn tasks(&self, q: &TaskQuery<'_>) -> Result<(Vec<TaskRecord>, bool), Error> {
        either!(self, s => s.tasks(q).await)
    }

    /// The attempts of a task that ended, oldest first.
    pub async fn attempts(&self, task_id: i64) -> Result<Vec<AttemptRecord>, Error> {
        either!(self, s => s.attempts(task_id).await)
    }

    /// Key/values of a scope ('' global, else a job id).
    pub async fn context(&self, scope: &str) -> Result<Vec<(String, String)>, Error> {
        either!(self, s => s.context(scope).await)
    }

    /// One page of a job's snapshot: its record (with `last_seq`) and up to `limit` of its
    /// tasks after `after_id`, read in one short transaction, so that the page is exactly as
    /// of that `last_seq`. A snapshot is read page by page (see `watch`), never holding a
    /// connection while a watcher is slow.
    pub async fn snapshot_page(
        &self,
        job_id: &str,
        after_id: i64,
        limit: usize,
    ) -> Result<Option<(JobRecord, Vec<TaskRecord>)>, Error> {
        either!(self, s => s.snapshot_page(job_id, after_id, limit).await)
    }

    /// Bytes the database takes: SQLite's file and write-ahead log, or Postgres's
    /// `pg_database_size`.
    pub async fn size_bytes(&self) -> u64 {
        match self {
            Store::Sqlite(s) => s.size_bytes(),
            Store::Postgres(s) => s.size_bytes().await,
        }
    }

    /// Closes the read pool.
    pub async fn close(&self) {
        either!(self, s => s.close().await)
    }
}

impl Writer {
    /// Writes a batch in one transaction and commits it.
    pub async fn commit(&mut self, b: &WriteBatch, now: i64) -> Result<(), Error> {
        either_writer!(self, w => w.commit(b, now).await)
    }

    /// Jobs whose tasks are all final (or that have none) and that have not changed since
    /// `before_ms`: what retention removes. At most `limit`.
    pub async fn expired_jobs(&mut self, before_ms: i64, limit: u32) -> Result<Vec<String>, Error> {
        either_writer!(self, w => w.expired_jobs(before_ms, limit).await)
    }

    /// One small step of removing the jobs marked deleted, in its own transaction: up to
    /// `limit` dependency edges, else up to `limit` attempts, else up to `limit` tasks, else
    /// the job's context and row. Then, with nothing left to delete, SQLite gives up to
    /// `limit` free pages back to the file system (incremental vacuum; Postgres's autovacuum
    /// does its own). Returns what it did.
    pub async fn purge_step(&mut self, limit: u32) -> Result<Purge, Error> {
        either_writer!(self, w => w.purge_step(limit).await)
    }

    /// The encoded specs of tasks, by id (for assignments whose spec is not cached).
    pub async fn specs(&mut self, ids: &[i64]) -> Result<HashMap<i64, Vec<u8>>, Error> {
        either_writer!(self, w => w.specs(ids).await)
    }

    /// What a git task that builds on `on` starts from: the chain's base commit and the
    /// patches of `on` and of the tasks it built on, oldest first. A chain over
    /// `limits::MAX_GIT_CHAIN_BYTES`, or a task in it without a git result, gives a base
    /// with only `error` set (the worker fails the task with it).
    pub async fn git_base(&mut self, on: i64) -> Result<orca_proto::pb::GitBase, Error> {
        either_writer!(self, w => w.git_base(on).await)
    }

    /// The stored answer to an idempotency key, if the key was used (and not yet pruned).
    pub async fn request(&mut self, k: &RequestKey) -> Result<Option<(Vec<u8>, Vec<u8>)>, Error> {
        either_writer!(self, w => w.request(k).await)
    }

    /// A page of a job's tasks in one state with ids above `after`, in id order, for the
    /// start-up load.
    pub async fn live_page(
        &mut self,
        job: &str,
        state: State,
        after: i64,
        limit: usize,
    ) -> Result<Vec<LiveTask>, Error> {
        either_writer!(self, w => w.live_page(job, state, after, limit).await)
    }

    /// The dependencies of a job's tasks that are not final: task id -> dependency ids.
    pub async fn live_deps(&mut self, job: &str) -> Result<HashMap<i64, Vec<i64>>, Error> {
        either_writer!(self, w => w.live_deps(job).await)
    }

    /// Final tasks by id (for dependencies and cancellations of tasks not in memory).
    pub async fn tasks_by_id(&mut self, ids: &[i64]) -> Result<Vec<(String, TaskRow)>, Error> {
        either_writer!(self, w => w.tasks_by_id(ids).await)
    }

    /// What RetryTasks brings back: the given final tasks (or the failed tasks of a job) and
    /// every task cancelled with one of them as the root cause, with specs and dependencies,
    /// in id order.
    pub async fn revivable(&mut self, job: Option<&str>, ids: &[i64]) -> Result<Vec<LiveTask>, Error> {
        either_writer!(self, w => w.revivable(job, ids).await)
    }

    /// Closes the connection (SQLite: checkpointing the WAL; Postgres: releasing the leader
    /// lock).
    pub async fn close(self) -> Result<(), Error> {
        either_writer!(self, w => w.close().await)
    }

    /// Postgres: `Error::Fenced` when the leader lock's session is gone. SQLite: always fine.
    pub async fn check_leader(&mut self) -> Result<(), Error> {
        match self {
            Writer::Sqlite(_) => Ok(()),
            Writer::Postgres(w) => w.check_leader().await,
        }
    }
}

/// Hex text to bytes (`None` for an odd length or a non-hex digit).
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.as_bytes().chunks(2).map(|p| Some(digit(*p.first()?)? << 4 | digit(*p.get(1)?)?)).collect()
}

/// The stored outcome name as the static name it was written from.
fn outcome_name(s: &str) -> &'static str {
    ATTEMPT_OUTCOMES.iter().find(|n| **n == s).copied().unwrap_or("unknown")
}

fn state_of(v: i64) -> Result<State, Error> {
    State::from_i32(v as i32).ok_or_else(|| Error::Storage(format!("unknown task state {v} in database")))
}

/// Column access shared by both backends' rows (every integer column is a 64-bit integer on
/// both, every real a double).
pub(crate) trait Get {
    fn int(&self, c: &str) -> i64;
    fn opt_int(&self, c: &str) -> Option<i64>;
    fn real(&self, c: &str) -> f64;
    fn opt_real(&self, c: &str) -> Option<f64>;
    fn text(&self, c: &str) -> String;
    fn opt_text(&self, c: &str) -> Option<String>;
    fn blob(&self, c: &str) -> Vec<u8>;
    fn opt_blob(&self, c: &str) -> Option<Vec<u8>>;
}

macro_rules! impl_get {
    ($row:ty) => {
        impl Get for $row {
            fn int(&self, c: &str) -> i64 {
                sqlx::Row::get(self, c)
            }
            fn opt_int(&self, c: &str) -> Option<i64> {
                sqlx::Row::get(self, c)
            }
            fn real(&self, c: &str) -> f64 {
                sqlx::Row::get(self, c)
            }
            fn opt_real(&self, c: &str) -> Option<f64> {
                sqlx::Row::get(self, c)
            }
            fn text(&self, c: &str) -> String {
                sqlx::Row::get(self, c)
            }
            fn opt_text(&self, c: &str) -> Option<String> {
                sqlx::Row::get(self, c)
            }
            fn blob(&self, c: &str) -> Vec<u8> {
                sqlx::Row::get(self, c)
            }
            fn opt_blob(&self, c: &str) -> Option<Vec<u8>> {
                sqlx::Row::get(self, c)
            }
        }
    };
}
impl_get!(sqlx::sqlite::SqliteRow);
impl_get!(sqlx::postgres::PgRow);

fn counts_of(row: &impl Get) -> Counts {
    let n = |c: &str| row.int(c) as u64;
    Counts {
        waiting: n("n_waiting"),
        pending: n("n_pending"),
        in_progress: n("n_in_progress"),
        completed: n("n_completed"),
        failed: n("n_failed"),
        cancelled: n("n_cancelled"),
    }
}

const JOB_COLUMNS: &str = "job_id, description, metadata, cancelled, last_seq, n_waiting, n_pending, \
    n_in_progress, n_completed, n_failed, n_cancelled, created_at_ms, updated_at_ms, owner, \
    weight, max_running, budget_usd, paused, cost_usd, input_tokens, output_tokens";

fn job_of(row: &impl Get) -> JobRecord {
    JobRecord {
        job_id: row.text("job_id"),
        description: row.text("description"),
        metadata: row.opt_blob("metadata"),
        cancelled: row.int("cancelled") != 0,
        last_seq: row.int("last_seq") as u64,
        counts: counts_of(row),
        created_at_ms: row.int("created_at_ms"),
        updated_at_ms: row.int("updated_at_ms"),
        owner: row.opt_text("owner"),
        controls: Controls {
            weight: row.int("weight").clamp(1, u32::MAX as i64) as u32,
            max_running: row.int("max_running").clamp(0, u32::MAX as i64) as u32,
            budget_usd: row.real("budget_usd"),
            paused: row.int("paused") != 0,
        },
        spend: Spend {
            cost_usd: row.real("cost_usd"),
            input_tokens: row.int("input_tokens").max(0) as u64,
            output_tokens: row.int("output_tokens").max(0) as u64,
        },
    }
}

const ROW_COLUMNS: &str =
    "task_id, state, attempt, retries_used, lost_leases, worker_id, not_before_ms, cancel_cause, reason";

/// [`ROW_COLUMNS`] with the reason cut to [`SUMMARY_REASON_CHARS`] characters (snapshots
/// carry one summary per task; the whole reason is in GetTask).
const SUMMARY_COLUMNS: &str = "task_id, state, attempt, retries_used, lost_leases, worker_id, not_before_ms, \
     cancel_cause, substr(reason, 1, 200) AS reason";

fn task_row_of(row: &impl Get) -> Result<TaskRow, Error> {
    Ok(TaskRow {
        task_id: row.int("task_id"),
        state: state_of(row.int("state"))?,
        attempt: row.int("attempt") as u32,
        retries_used: row.int("retries_used") as u32,
        lost_leases: row.int("lost_leases") as u32,
        worker_id: row.opt_text("worker_id"),
        not_before_ms: row.int("not_before_ms") as u64,
        cancel_cause: row.opt_int("cancel_cause"),
        reason: row.text("reason"),
    })
}

fn task_record_of(r: &impl Get, payloads: bool) -> Result<TaskRecord, Error> {
    Ok(TaskRecord {
        job_id: r.text("job_id"),
        row: task_row_of(r)?,
        priority: r.int("priority") as i32,
        spec: if payloads { r.opt_blob("spec") } else { None },
        result: if payloads { r.opt_blob("result") } else { None },
        created_at_ms: r.int("created_at_ms"),
        updated_at_ms: r.int("updated_at_ms"),
    })
}

fn attempt_of(task_id: i64, r: &impl Get) -> AttemptRecord {
    AttemptRecord {
        task_id,
        attempt: r.int("attempt") as u32,
        worker_id: r.opt_text("worker_id"),
        started_ms: r.int("started_ms"),
        ended_ms: r.int("ended_ms"),
        outcome: outcome_name(&r.text("outcome")),
        reason: r.text("reason"),
        exit_code: r.opt_int("exit_code").map(|c| c as i32),
        cost_usd: r.opt_real("cost_usd"),
        duration_ms: r.opt_int("duration_ms"),
        output_tail: r.text("output_tail"),
    }
}

fn notice_of(r: &impl Get) -> Notice {
    Notice {
        job_id: r.text("job_id"),
        seq: r.int("seq") as u64,
        body: r.text("body"),
        created_at_ms: r.int("created_at_ms"),
    }
}

fn schedule_of(r: &impl Get) -> ScheduleRow {
    ScheduleRow {
        name: r.text("name"),
        cron: r.text("cron"),
        template: r.blob("template"),
        next_run_ms: r.int("next_run_ms"),
        last_run_ms: r.int("last_run_ms"),
        last_job_id: r.text("last_job_id"),
        owner: r.opt_text("owner"),
        created_at_ms: r.int("created_at_ms"),
    }
}

fn chain_error(error: String) -> orca_proto::pb::GitBase {
    orca_proto::pb::GitBase { error, ..Default::default() }
}

/// `?, ?, ...` for an IN list of `n` values.
fn marks(n: usize) -> String {
    vec!["?"; n].join(",")
}

/// Finished jobs unchanged since a time (the query matches the partial index of migration
/// 0006 term for term, so SQLite uses it; Postgres has the same index).
const EXPIRED_JOBS: &str = "SELECT job_id FROM jobs WHERE deleted_at_ms IS NULL \
    AND n_waiting + n_pending + n_in_progress = 0 AND updated_at_ms < ? LIMIT ?";

/// Of a batch's rows keyed by `key`, the last of each key, in first-seen order (a
/// multi-row upsert may not touch one row twice on Postgres).
fn last_of_each<T, K: std::hash::Hash + Eq>(rows: &[T], key: impl Fn(&T) -> K) -> Vec<&T> {
    let mut at: HashMap<K, usize> = HashMap::with_capacity(rows.len());
    let mut out: Vec<&T> = Vec::with_capacity(rows.len());
    for r in rows {
        match at.entry(key(r)) {
            std::collections::hash_map::Entry::Occupied(e) => out[*e.get()] = r,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(out.len());
                out.push(r);
            }
        }
    }
    out
}

/// How long a statement may run on Postgres before it is cancelled (`--db-statement-timeout`).
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
