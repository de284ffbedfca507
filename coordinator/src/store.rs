//! SQLite persistence through sqlx: schema migrations, the writer's batched writes, start-up
//! loading, and the reads the API serves.
//!
//! One [`Writer`] owns the only writing connection and applies a whole [`WriteBatch`] in one
//! transaction (group commit). Reads go through a separate pool of read-only connections;
//! WAL lets them run beside the writer and each read transaction sees one committed state.
//! This is the one place that knows SQL; its errors are mapped to [`crate::Error`] here.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection, Row};
use tokio::sync::Semaphore;

use orca_proto::contract::limits;
use orca_proto::pb;
use prost::Message;

use crate::Error;
use crate::queue::{Controls, Counts, Spend, State};

/// Migrations, applied in order; `PRAGMA user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_requests.sql"),
    include_str!("../migrations/0003_retention.sql"),
    include_str!("../migrations/0004_owners.sql"),
    include_str!("../migrations/0005_attempts.sql"),
    include_str!("../migrations/0006_retention_index.sql"),
    include_str!("../migrations/0007_scheduling.sql"),
];

/// Read connections in the pool.
const READERS: u32 = 4;
/// Of those, the most that WatchJob snapshots use at once.
const SNAPSHOT_READERS: usize = 2;

/// Rows per multi-row statement (SQLite allows 32766 bound parameters).
const ROWS_PER_STATEMENT: usize = 500;

/// How durable commits are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: a commit survives power loss (the default).
    Full,
    /// `synchronous=NORMAL`: a commit survives a crash of the process, not of the machine.
    Normal,
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

/// Finished jobs unchanged since a time (the query matches the partial index of migration
/// 0006 term for term, so SQLite uses it).
const EXPIRED_JOBS: &str = "SELECT job_id FROM jobs WHERE deleted_at_ms IS NULL \
    AND n_waiting + n_pending + n_in_progress = 0 AND updated_at_ms < ? LIMIT ?";

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

/// The read side: a pool of read-only connections.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    /// Snapshots (the only reads whose size grows with a job) may hold at most these read
    /// connections at once, so the other reads always find one.
    snapshot_readers: Arc<Semaphore>,
}

/// The write side: the one connection that writes.
#[derive(Debug)]
pub struct Writer {
    conn: SqliteConnection,
}

fn options(path: &Path, durability: Durability) -> Result<SqliteConnectOptions, Error> {
    let url = format!("sqlite://{}", path.display());
    Ok(SqliteConnectOptions::from_str(&url)
        .map_err(|e| Error::Storage(format!("bad database path {}: {e}", path.display())))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match durability {
            Durability::Full => SqliteSynchronous::Full,
            Durability::Normal => SqliteSynchronous::Normal,
        })
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10))
        .pragma("cache_size", "-32768")
        .pragma("temp_store", "memory"))
}

/// Opens (creating if needed) and migrates the database, then loads what the scheduler needs.
pub async fn open(path: &Path, durability: Durability) -> Result<(Store, Writer, Loaded), Error> {
    let opts = options(path, durability)?;
    // Takes effect in a new database only (before its first table); an older one keeps its
    // free pages for reuse instead of giving them back.
    // The writer never checkpoints inside a commit (the default every 1,000 pages made one
    // commit in a thousand pay for copying the WAL back); `checkpointer` does it beside it.
    let writer_opts =
        opts.clone().auto_vacuum(sqlx::sqlite::SqliteAutoVacuum::Incremental).pragma("wal_autocheckpoint", "0");
    let mut conn = SqliteConnection::connect_with(&writer_opts).await?;
    migrate(&mut conn).await?;
    let loaded = load(&mut conn).await?;
    let pool =
        SqlitePoolOptions::new().max_connections(READERS).min_connections(1).connect_with(opts.read_only(true)).await?;
    let snapshot_readers = Arc::new(Semaphore::new(SNAPSHOT_READERS));
    Ok((Store { pool, snapshot_readers }, Writer { conn }, loaded))
}

/// WAL bytes past which [`checkpointer`] copies the log back into the database.
pub const CHECKPOINT_WAL_BYTES: u64 = 4 << 20;
/// How often [`checkpointer`] looks at the WAL's size.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Checkpoints the WAL beside the writer, on a connection of its own, until `stop`: a PASSIVE
/// checkpoint (it waits for no reader or writer) whenever the WAL has grown past
/// [`CHECKPOINT_WAL_BYTES`]. The writer's commits never do it (`wal_autocheckpoint=0`), so
/// no call waits for a checkpoint. Once a checkpoint has copied every frame, the next commit
/// starts the log again from its beginning, so the WAL stays near that size.
pub async fn checkpointer(path: std::path::PathBuf, durability: Durability, stop: tokio_util::sync::CancellationToken) {
    let wal = std::path::PathBuf::from(format!("{}-wal", path.display()));
    let mut conn = match options(&path, durability) {
        Ok(o) => match SqliteConnection::connect_with(&o).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "WAL checkpointer: cannot open the database; commits will checkpoint nothing");
                return;
            }
        },
        Err(e) => {
            tracing::error!(error = %e, "WAL checkpointer: bad database path");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(CHECKPOINT_EVERY) => {}
        }
        let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        if size < CHECKPOINT_WAL_BYTES {
            continue;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&mut conn).await {
            tracing::warn!(error = %e, "WAL checkpoint failed; trying again");
        }
    }
    let _ = conn.close().await;
}

async fn migrate(conn: &mut SqliteConnection) -> Result<(), Error> {
    let version: i64 = sqlx::query_scalar("PRAGMA user_version").fetch_one(&mut *conn).await?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(Error::Storage(format!(
            "database schema version {version} is newer than this binary supports ({known}); \
             upgrade orca-coordinator"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let mut tx = conn.begin().await?;
        sqlx::raw_sql(AssertSqlSafe(*sql)).execute(&mut *tx).await?;
        sqlx::raw_sql(AssertSqlSafe(format!("PRAGMA user_version = {}", i + 1))).execute(&mut *tx).await?;
        tx.commit().await?;
        tracing::info!(version = i + 1, "applied schema migration");
    }
    Ok(())
}

fn state_of(v: i64) -> Result<State, Error> {
    State::from_i32(v as i32).ok_or_else(|| Error::Storage(format!("unknown task state {v} in database")))
}

fn counts_of(row: &SqliteRow) -> Counts {
    let n = |c: &str| row.get::<i64, _>(c) as u64;
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

fn job_of(row: &SqliteRow) -> JobRecord {
    JobRecord {
        job_id: row.get("job_id"),
        description: row.get("description"),
        metadata: row.get("metadata"),
        cancelled: row.get::<i64, _>("cancelled") != 0,
        last_seq: row.get::<i64, _>("last_seq") as u64,
        counts: counts_of(row),
        created_at_ms: row.get("created_at_ms"),
        updated_at_ms: row.get("updated_at_ms"),
        owner: row.get("owner"),
        controls: Controls {
            weight: row.get::<i64, _>("weight").clamp(1, u32::MAX as i64) as u32,
            max_running: row.get::<i64, _>("max_running").clamp(0, u32::MAX as i64) as u32,
            budget_usd: row.get("budget_usd"),
            paused: row.get::<i64, _>("paused") != 0,
        },
        spend: Spend {
            cost_usd: row.get("cost_usd"),
            input_tokens: row.get::<i64, _>("input_tokens").max(0) as u64,
            output_tokens: row.get::<i64, _>("output_tokens").max(0) as u64,
        },
    }
}

const ROW_COLUMNS: &str =
    "task_id, state, attempt, retries_used, lost_leases, worker_id, not_before_ms, cancel_cause, reason";

/// [`ROW_COLUMNS`] with the reason cut to [`SUMMARY_REASON_CHARS`] characters (snapshots
/// carry one summary per task; the whole reason is in GetTask).
const SUMMARY_COLUMNS: &str = "task_id, state, attempt, retries_used, lost_leases, worker_id, not_before_ms, \
     cancel_cause, substr(reason, 1, 200) AS reason";
/// Characters of a task's reason in a WatchJob snapshot.
pub const SUMMARY_REASON_CHARS: usize = 200;

fn task_row_of(row: &SqliteRow) -> Result<TaskRow, Error> {
    Ok(TaskRow {
        task_id: row.get("task_id"),
        state: state_of(row.get("state"))?,
        attempt: row.get::<i64, _>("attempt") as u32,
        retries_used: row.get::<i64, _>("retries_used") as u32,
        lost_leases: row.get::<i64, _>("lost_leases") as u32,
        worker_id: row.get("worker_id"),
        not_before_ms: row.get::<i64, _>("not_before_ms") as u64,
        cancel_cause: row.get("cancel_cause"),
        reason: row.get("reason"),
    })
}

async fn load(conn: &mut SqliteConnection) -> Result<Loaded, Error> {
    let mut loaded = Loaded::default();
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE deleted_at_ms IS NULL");
    let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&mut *conn);
    while let Some(row) = rows.try_next().await? {
        loaded.jobs.push(job_of(&row));
    }
    drop(rows);

    let rows = sqlx::query(
        "SELECT scope, key, value FROM context \
         WHERE scope NOT IN (SELECT job_id FROM jobs WHERE deleted_at_ms IS NOT NULL)",
    )
    .fetch_all(&mut *conn)
    .await?;
    loaded.context = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    loaded.max_task_id = sqlx::query_scalar::<_, Option<i64>>(
        "SELECT max(coalesce((SELECT max(task_id) FROM tasks), 0), \
         coalesce((SELECT value FROM meta WHERE key = 'max_task_id'), 0))",
    )
    .fetch_one(&mut *conn)
    .await?
    .unwrap_or(0);
    loaded.purge_pending = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jobs WHERE deleted_at_ms IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?
        > 0;
    let rows = sqlx::query(
        "SELECT name, cron, template, next_run_ms, last_run_ms, last_job_id, owner, created_at_ms \
         FROM schedules ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await?;
    loaded.schedules = rows
        .iter()
        .map(|r| ScheduleRow {
            name: r.get("name"),
            cron: r.get("cron"),
            template: r.get("template"),
            next_run_ms: r.get("next_run_ms"),
            last_run_ms: r.get("last_run_ms"),
            last_job_id: r.get("last_job_id"),
            owner: r.get("owner"),
            created_at_ms: r.get("created_at_ms"),
        })
        .collect();
    Ok(loaded)
}

/// Hex text to bytes (`None` for an odd length or a non-hex digit).
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.as_bytes().chunks(2).map(|p| Some(digit(*p.first()?)? << 4 | digit(*p.get(1)?)?)).collect()
}

fn placeholders(rows: usize, cols: usize) -> String {
    let one = format!("({})", vec!["?"; cols].join(","));
    vec![one; rows].join(",")
}

async fn insert_jobs(tx: &mut SqliteConnection, jobs: &[JobInsert], now: i64) -> Result<(), Error> {
    for j in jobs {
        sqlx::query(
            "INSERT INTO jobs (job_id, description, metadata, owner, weight, max_running, budget_usd, paused, \
             created_at_ms, updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&j.job_id)
        .bind(&j.description)
        .bind(&j.metadata)
        .bind(&j.owner)
        .bind(j.controls.weight as i64)
        .bind(j.controls.max_running as i64)
        .bind(j.controls.budget_usd)
        .bind(j.controls.paused as i64)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

async fn insert_tasks(tx: &mut SqliteConnection, tasks: &[TaskInsert], now: i64) -> Result<(), Error> {
    for chunk in tasks.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO tasks ({ROW_COLUMNS}, job_id, priority, spec, created_at_ms, updated_at_ms) VALUES {}",
            placeholders(chunk.len(), 14)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for t in chunk {
            q = bind_row(q, &t.row).bind(&t.job_id).bind(t.priority).bind(&t.spec).bind(now).bind(now);
        }
        q.execute(&mut *tx).await?;
    }
    Ok(())
}

async fn insert_deps(tx: &mut SqliteConnection, deps: &[(i64, i64)]) -> Result<(), Error> {
    for chunk in deps.chunks(ROWS_PER_STATEMENT) {
        let sql = format!("INSERT INTO task_deps (task_id, depends_on) VALUES {}", placeholders(chunk.len(), 2));
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (t, d) in chunk {
            q = q.bind(t).bind(d);
        }
        q.execute(&mut *tx).await?;
    }
    Ok(())
}

async fn insert_attempts(tx: &mut SqliteConnection, attempts: &[AttemptRecord]) -> Result<(), Error> {
    for chunk in attempts.chunks(ROWS_PER_STATEMENT / 2) {
        let sql = format!(
            "INSERT OR REPLACE INTO attempts (task_id, attempt, worker_id, started_ms, ended_ms, outcome, reason, \
             exit_code, cost_usd, duration_ms, output_tail) VALUES {}",
            placeholders(chunk.len(), 11)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for a in chunk {
            q = q
                .bind(a.task_id)
                .bind(a.attempt as i64)
                .bind(a.worker_id.as_deref())
                .bind(a.started_ms)
                .bind(a.ended_ms)
                .bind(a.outcome)
                .bind(&a.reason)
                .bind(a.exit_code)
                .bind(a.cost_usd)
                .bind(a.duration_ms)
                .bind(&a.output_tail);
        }
        q.execute(&mut *tx).await?;
    }
    Ok(())
}

async fn update_tasks(
    tx: &mut SqliteConnection,
    updates: &[(TaskRow, Option<Vec<u8>>)],
    now: i64,
) -> Result<(), Error> {
    for chunk in updates.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "UPDATE tasks SET state = v.column2, attempt = v.column3, retries_used = v.column4, \
             lost_leases = v.column5, worker_id = v.column6, not_before_ms = v.column7, \
             cancel_cause = v.column8, reason = v.column9, result = coalesce(v.column10, tasks.result), \
             updated_at_ms = ? FROM (VALUES {}) AS v WHERE tasks.task_id = v.column1",
            placeholders(chunk.len(), 10)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(now);
        for (r, result) in chunk {
            q = bind_row(q, r).bind(result.as_deref());
        }
        q.execute(&mut *tx).await?;
    }
    Ok(())
}

/// The counters, controls and spend of the jobs a batch touched: one multi-row statement per
/// [`ROWS_PER_STATEMENT`] jobs (a batch spread over many jobs touches many rows).
async fn update_jobs(tx: &mut SqliteConnection, jobs: &[JobUpdate], now: i64) -> Result<(), Error> {
    for chunk in jobs.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "UPDATE jobs SET last_seq = v.column2, cancelled = v.column3, n_waiting = v.column4, \
             n_pending = v.column5, n_in_progress = v.column6, n_completed = v.column7, n_failed = v.column8, \
             n_cancelled = v.column9, weight = v.column10, max_running = v.column11, budget_usd = v.column12, \
             paused = v.column13, cost_usd = v.column14, input_tokens = v.column15, output_tokens = v.column16, \
             updated_at_ms = ? FROM (VALUES {}) AS v WHERE jobs.job_id = v.column1",
            placeholders(chunk.len(), 16)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(now);
        for j in chunk {
            let c = &j.counts;
            q = q
                .bind(&j.job_id)
                .bind(j.last_seq as i64)
                .bind(j.cancelled as i64)
                .bind(c.waiting as i64)
                .bind(c.pending as i64)
                .bind(c.in_progress as i64)
                .bind(c.completed as i64)
                .bind(c.failed as i64)
                .bind(c.cancelled as i64)
                .bind(j.controls.weight as i64)
                .bind(j.controls.max_running as i64)
                .bind(j.controls.budget_usd)
                .bind(j.controls.paused as i64)
                .bind(j.spend.cost_usd)
                .bind(j.spend.input_tokens as i64)
                .bind(j.spend.output_tokens as i64);
        }
        q.execute(&mut *tx).await?;
    }
    Ok(())
}

async fn write_schedules(tx: &mut SqliteConnection, b: &WriteBatch) -> Result<(), Error> {
    for name in &b.schedule_deletes {
        sqlx::query("DELETE FROM schedules WHERE name = ?").bind(name).execute(&mut *tx).await?;
    }
    for s in &b.schedule_puts {
        sqlx::query(
            "INSERT OR REPLACE INTO schedules (name, cron, template, next_run_ms, last_run_ms, last_job_id, owner, \
             created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.name)
        .bind(&s.cron)
        .bind(&s.template)
        .bind(s.next_run_ms)
        .bind(s.last_run_ms)
        .bind(&s.last_job_id)
        .bind(&s.owner)
        .bind(s.created_at_ms)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

async fn write_notices(tx: &mut SqliteConnection, b: &WriteBatch) -> Result<(), Error> {
    for n in &b.notices {
        sqlx::query("INSERT OR REPLACE INTO job_notices (job_id, seq, body, created_at_ms) VALUES (?, ?, ?, ?)")
            .bind(&n.job_id)
            .bind(n.seq as i64)
            .bind(&n.body)
            .bind(n.created_at_ms)
            .execute(&mut *tx)
            .await?;
    }
    for (job, seq) in &b.notices_done {
        sqlx::query("DELETE FROM job_notices WHERE job_id = ? AND seq = ?")
            .bind(job)
            .bind(*seq as i64)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

async fn write_context(tx: &mut SqliteConnection, context: &[(String, String, Option<String>)]) -> Result<(), Error> {
    for (scope, key, value) in context {
        let q = match value {
            Some(v) => sqlx::query(
                "INSERT INTO context (scope, key, value) VALUES (?, ?, ?) \
                 ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value",
            )
            .bind(scope)
            .bind(key)
            .bind(v),
            None => sqlx::query("DELETE FROM context WHERE scope = ? AND key = ?").bind(scope).bind(key),
        };
        q.execute(&mut *tx).await?;
    }
    Ok(())
}

async fn write_requests(
    tx: &mut SqliteConnection,
    requests: &[RequestRecord],
    prune_before: Option<i64>,
    now: i64,
) -> Result<(), Error> {
    if let Some(before) = prune_before {
        sqlx::query("DELETE FROM requests WHERE created_at_ms < ?").bind(before).execute(&mut *tx).await?;
    }
    for r in requests {
        sqlx::query(
            "INSERT INTO requests (caller, method, job_id, request_id, digest, response, created_at_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.key.caller)
        .bind(r.key.method)
        .bind(&r.key.job_id)
        .bind(&r.key.request_id)
        .bind(&r.digest)
        .bind(&r.response)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

impl Writer {
    /// Writes a batch in one transaction and commits it.
    pub async fn commit(&mut self, b: &WriteBatch, now: i64) -> Result<(), Error> {
        let mut tx = self.conn.begin().await?;
        insert_jobs(&mut tx, &b.jobs, now).await?;
        insert_tasks(&mut tx, &b.tasks, now).await?;
        insert_deps(&mut tx, &b.deps).await?;
        update_tasks(&mut tx, &b.updates, now).await?;
        update_jobs(&mut tx, &b.job_updates, now).await?;
        write_context(&mut tx, &b.context).await?;
        write_requests(&mut tx, &b.requests, b.prune_requests_before, now).await?;
        insert_attempts(&mut tx, &b.attempts).await?;
        write_schedules(&mut tx, b).await?;
        write_notices(&mut tx, b).await?;
        for job in &b.delete_jobs {
            sqlx::query("UPDATE jobs SET deleted_at_ms = ? WHERE job_id = ?")
                .bind(now)
                .bind(job)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Jobs whose tasks are all final (or that have none) and that have not changed since
    /// `before_ms`: what retention removes. At most `limit`.
    pub async fn expired_jobs(&mut self, before_ms: i64, limit: u32) -> Result<Vec<String>, Error> {
        Ok(sqlx::query_scalar(EXPIRED_JOBS).bind(before_ms).bind(limit as i64).fetch_all(&mut self.conn).await?)
    }

    /// One small step of removing the jobs marked deleted, in its own transaction: up to
    /// `limit` dependency edges, else up to `limit` tasks, else the job's context and row.
    /// Then, with nothing left to delete, up to `limit` free pages are given back to the file
    /// system (incremental vacuum). Returns what it did.
    pub async fn purge_step(&mut self, limit: u32) -> Result<Purge, Error> {
        let job: Option<String> = sqlx::query_scalar("SELECT job_id FROM jobs WHERE deleted_at_ms IS NOT NULL LIMIT 1")
            .fetch_optional(&mut self.conn)
            .await?;
        let Some(job) = job else {
            let free: i64 = sqlx::query_scalar("PRAGMA freelist_count").fetch_one(&mut self.conn).await?;
            let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum").fetch_one(&mut self.conn).await?;
            if free == 0 || mode != 2 {
                return Ok(Purge::Idle);
            }
            sqlx::raw_sql(AssertSqlSafe(format!("PRAGMA incremental_vacuum({limit})"))).execute(&mut self.conn).await?;
            return Ok(Purge::Vacuumed);
        };
        let mut tx = self.conn.begin().await?;
        let edges = sqlx::query(
            "DELETE FROM task_deps WHERE (task_id, depends_on) IN (SELECT d.task_id, d.depends_on \
             FROM tasks t JOIN task_deps d ON d.task_id = t.task_id WHERE t.job_id = ? LIMIT ?)",
        )
        .bind(&job)
        .bind(limit as i64)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let attempts = if edges > 0 {
            0
        } else {
            sqlx::query(
                "DELETE FROM attempts WHERE (task_id, attempt) IN (SELECT a.task_id, a.attempt \
                 FROM tasks t JOIN attempts a ON a.task_id = t.task_id WHERE t.job_id = ? LIMIT ?)",
            )
            .bind(&job)
            .bind(limit as i64)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        };
        let step = if edges > 0 || attempts > 0 {
            Purge::Rows
        } else {
            sqlx::query(
                // No row when the tasks table is empty (the last job's tasks are gone).
                "INSERT INTO meta (key, value) SELECT 'max_task_id', max(task_id) FROM tasks WHERE true \
                 HAVING max(task_id) IS NOT NULL ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
            )
            .execute(&mut *tx)
            .await?;
            let tasks =
                sqlx::query("DELETE FROM tasks WHERE task_id IN (SELECT task_id FROM tasks WHERE job_id = ? LIMIT ?)")
                    .bind(&job)
                    .bind(limit as i64)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            if tasks > 0 {
                Purge::Rows
            } else {
                sqlx::query("DELETE FROM context WHERE scope = ?").bind(&job).execute(&mut *tx).await?;
                sqlx::query("DELETE FROM jobs WHERE job_id = ?").bind(&job).execute(&mut *tx).await?;
                Purge::Job(job)
            }
        };
        tx.commit().await?;
        Ok(step)
    }

    /// The encoded specs of tasks, by id (for assignments whose spec is not cached).
    pub async fn specs(&mut self, ids: &[i64]) -> Result<HashMap<i64, Vec<u8>>, Error> {
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            for row in specs_query(chunk).fetch_all(&mut self.conn).await? {
                out.insert(row.get(0), row.get(1));
            }
        }
        Ok(out)
    }

    /// What a git task that builds on `on` starts from: the chain's base commit and the
    /// patches of `on` and of the tasks it built on, oldest first. A chain over
    /// [`limits::MAX_GIT_CHAIN_BYTES`], or a task in it without a git result, gives a base
    /// with only `error` set (the worker fails the task with it).
    pub async fn git_base(&mut self, on: i64) -> Result<pb::GitBase, Error> {
        let mut base = pb::GitBase::default();
        let (mut next, mut bytes) = (on, 0usize);
        while next != 0 {
            let row = sqlx::query("SELECT spec, result FROM tasks WHERE task_id = ?")
                .bind(next)
                .fetch_optional(&mut self.conn)
                .await?;
            let Some(row) = row else {
                return Ok(chain_error(format!("task {next} of the chain is gone")));
            };
            let spec = pb::TaskSpec::decode(row.get::<Vec<u8>, _>(0).as_slice());
            let result: Option<Vec<u8>> = row.get(1);
            let result = result.map(|r| pb::TaskResult::decode(r.as_slice())).transpose();
            let (Ok(spec), Ok(result)) = (spec, result) else {
                return Ok(chain_error(format!("task {next} of the chain cannot be read")));
            };
            let Some(git) = result.and_then(|r| r.git).map(|g| *g) else {
                return Ok(chain_error(format!("task {next} has no git result (did an older worker run it?)")));
            };
            bytes += git.patch.len();
            if bytes > limits::MAX_GIT_CHAIN_BYTES {
                let max = limits::MAX_GIT_CHAIN_BYTES;
                return Ok(chain_error(format!("the patches this task builds on are over {max} bytes together")));
            }
            if !git.patch.is_empty() {
                base.patches.push(git.patch);
            }
            base.base_commit = git.base_commit;
            next = spec.git.map_or(0, |g| g.builds_on);
        }
        base.patches.reverse();
        Ok(base)
    }

    /// The stored answer to an idempotency key, if the key was used (and not yet pruned).
    pub async fn request(&mut self, k: &RequestKey) -> Result<Option<(Vec<u8>, Vec<u8>)>, Error> {
        let row = sqlx::query(
            "SELECT digest, response FROM requests WHERE caller = ? AND method = ? AND job_id = ? AND request_id = ?",
        )
        .bind(&k.caller)
        .bind(k.method)
        .bind(&k.job_id)
        .bind(&k.request_id)
        .fetch_optional(&mut self.conn)
        .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// A page of a job's tasks in one state with ids above `after`, in id order, for the
    /// start-up load. The page comes as one JSON document built by SQLite: far cheaper than
    /// a row at a time through the driver for a million tasks.
    pub async fn live_page(
        &mut self,
        job: &str,
        state: State,
        after: i64,
        limit: usize,
    ) -> Result<Vec<LiveTask>, Error> {
        let json: String = sqlx::query_scalar(
            "SELECT json_group_array(json_array(task_id, attempt, retries_used, lost_leases, worker_id, \
             not_before_ms, reason, hex(spec))) FROM (SELECT * FROM tasks \
             WHERE job_id = ? AND state = ? AND task_id > ? ORDER BY task_id LIMIT ?)",
        )
        .bind(job)
        .bind(state.as_i32())
        .bind(after)
        .bind(limit as i64)
        .fetch_one(&mut self.conn)
        .await?;
        type Row = (i64, u32, u32, u32, Option<String>, u64, String, String);
        let rows: Vec<Row> =
            serde_json::from_str(&json).map_err(|e| Error::Storage(format!("start-up load of job {job}: {e}")))?;
        let mut out = Vec::with_capacity(rows.len());
        for (task_id, attempt, retries_used, lost_leases, worker_id, not_before_ms, reason, spec) in rows {
            let row = TaskRow {
                task_id,
                state,
                attempt,
                retries_used,
                lost_leases,
                worker_id,
                not_before_ms,
                cancel_cause: None,
                reason,
            };
            let spec = unhex(&spec).ok_or_else(|| Error::Storage(format!("task {task_id}: bad spec encoding")))?;
            out.push(LiveTask { job_id: job.to_string(), row, spec, deps: Vec::new() });
        }
        Ok(out)
    }

    /// The dependencies of a job's tasks that are not final: task id -> dependency ids.
    pub async fn live_deps(&mut self, job: &str) -> Result<HashMap<i64, Vec<i64>>, Error> {
        let json: String = sqlx::query_scalar(
            "SELECT json_group_array(json_array(d.task_id, d.depends_on)) FROM tasks t \
             JOIN task_deps d ON d.task_id = t.task_id WHERE t.job_id = ? AND t.state IN (?, ?, ?)",
        )
        .bind(job)
        .bind(State::Waiting.as_i32())
        .bind(State::Pending.as_i32())
        .bind(State::InProgress.as_i32())
        .fetch_one(&mut self.conn)
        .await?;
        let pairs: Vec<(i64, i64)> =
            serde_json::from_str(&json).map_err(|e| Error::Storage(format!("start-up load of job {job}: {e}")))?;
        let mut deps: HashMap<i64, Vec<i64>> = HashMap::new();
        for (t, d) in pairs {
            deps.entry(t).or_default().push(d);
        }
        Ok(deps)
    }

    /// Final tasks by id (for dependencies and cancellations of tasks not in memory).
    pub async fn tasks_by_id(&mut self, ids: &[i64]) -> Result<Vec<(String, TaskRow)>, Error> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT {ROW_COLUMNS}, job_id FROM tasks WHERE task_id IN ({})",
                vec!["?"; chunk.len()].join(",")
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            for row in q.fetch_all(&mut self.conn).await? {
                out.push((row.get("job_id"), task_row_of(&row)?));
            }
        }
        Ok(out)
    }

    /// What RetryTasks brings back: the given final tasks (or the failed tasks of a job) and
    /// every task cancelled with one of them as the root cause, with specs and dependencies,
    /// in id order.
    pub async fn revivable(&mut self, job: Option<&str>, ids: &[i64]) -> Result<Vec<LiveTask>, Error> {
        let roots: Vec<i64> = match job {
            Some(j) if ids.is_empty() => {
                sqlx::query_scalar("SELECT task_id FROM tasks WHERE job_id = ? AND state = ?")
                    .bind(j)
                    .bind(State::Failed.as_i32())
                    .fetch_all(&mut self.conn)
                    .await?
            }
            _ => ids.to_vec(),
        };
        let mut out: Vec<LiveTask> = Vec::new();
        let mut all: Vec<i64> = roots.clone();
        for chunk in roots.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT task_id FROM tasks WHERE state = ? AND cancel_cause IN ({})",
                vec!["?"; chunk.len()].join(",")
            );
            let mut q = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql)).bind(State::Cancelled.as_i32());
            for id in chunk {
                q = q.bind(id);
            }
            all.extend(q.fetch_all(&mut self.conn).await?);
        }
        all.sort_unstable();
        all.dedup();
        for chunk in all.chunks(ROWS_PER_STATEMENT) {
            let marks = vec!["?"; chunk.len()].join(",");
            let sql =
                format!("SELECT {ROW_COLUMNS}, job_id, spec FROM tasks WHERE task_id IN ({marks}) ORDER BY task_id");
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            let rows = q.fetch_all(&mut self.conn).await?;
            let sql = format!("SELECT task_id, depends_on FROM task_deps WHERE task_id IN ({marks})");
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            let mut deps: HashMap<i64, Vec<i64>> = HashMap::new();
            for r in q.fetch_all(&mut self.conn).await? {
                deps.entry(r.get(0)).or_default().push(r.get(1));
            }
            for row in rows {
                let r = task_row_of(&row)?;
                let mut d = deps.remove(&r.task_id).unwrap_or_default();
                d.sort_unstable();
                out.push(LiveTask { job_id: row.get("job_id"), spec: row.get("spec"), deps: d, row: r });
            }
        }
        out.sort_by_key(|t| t.row.task_id);
        Ok(out)
    }
}

fn bind_row<'q>(
    q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    r: &'q TaskRow,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    q.bind(r.task_id)
        .bind(r.state.as_i32())
        .bind(r.attempt as i64)
        .bind(r.retries_used as i64)
        .bind(r.lost_leases as i64)
        .bind(r.worker_id.as_deref())
        .bind(r.not_before_ms as i64)
        .bind(r.cancel_cause)
        .bind(r.reason.as_str())
}

/// `task_id, spec` of the tasks among `ids` (at most [`ROWS_PER_STATEMENT`]).
fn specs_query(ids: &[i64]) -> sqlx::query::Query<'static, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    let sql = format!("SELECT task_id, spec FROM tasks WHERE task_id IN ({})", vec!["?"; ids.len()].join(","));
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for id in ids {
        q = q.bind(*id);
    }
    q
}

fn chain_error(error: String) -> pb::GitBase {
    pb::GitBase { error, ..Default::default() }
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

impl Store {
    /// Job-completion notices waiting to be delivered, oldest first, at most `limit`.
    pub async fn notices(&self, limit: u32) -> Result<Vec<Notice>, Error> {
        let rows = sqlx::query(
            "SELECT job_id, seq, body, created_at_ms FROM job_notices ORDER BY created_at_ms, job_id, seq LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Notice {
                job_id: r.get("job_id"),
                seq: r.get::<i64, _>("seq") as u64,
                body: r.get("body"),
                created_at_ms: r.get("created_at_ms"),
            })
            .collect())
    }

    pub async fn job(&self, job_id: &str) -> Result<Option<JobRecord>, Error> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = ? AND deleted_at_ms IS NULL");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(job_id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(job_of))
    }

    /// Jobs in id order (UUIDv7 ids: creation order), after `after`; only `owner`'s when set.
    pub async fn jobs(&self, after: &str, limit: u32, owner: Option<&str>) -> Result<Vec<JobRecord>, Error> {
        let mine = if owner.is_some() { "AND owner = ?" } else { "" };
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE job_id > ? AND deleted_at_ms IS NULL {mine} ORDER BY job_id LIMIT ?"
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(after);
        if let Some(o) = owner {
            q = q.bind(o);
        }
        let rows = q.bind(limit as i64).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(job_of).collect())
    }

    /// The repositories of the tasks among `ids` that have a git source (AddTasks looks up
    /// what a new git task builds on).
    pub async fn git_repos(&self, ids: &[i64]) -> Result<HashMap<i64, String>, Error> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            for row in specs_query(chunk).fetch_all(&self.pool).await? {
                let spec = pb::TaskSpec::decode(row.get::<Vec<u8>, _>(1).as_slice())
                    .map_err(|e| Error::Storage(format!("task {}: unreadable spec: {e}", row.get::<i64, _>(0))))?;
                if let Some(g) = spec.git {
                    out.insert(row.get(0), g.repo);
                }
            }
        }
        Ok(out)
    }

    pub async fn task(&self, task_id: i64) -> Result<Option<TaskRecord>, Error> {
        let sql = format!(
            "SELECT {ROW_COLUMNS}, job_id, priority, spec, result, created_at_ms, updated_at_ms FROM tasks \
             WHERE task_id = ? AND job_id IN (SELECT job_id FROM jobs WHERE deleted_at_ms IS NULL)"
        );
        let row = sqlx::query(AssertSqlSafe(sql)).bind(task_id).fetch_optional(&self.pool).await?;
        row.map(|r| task_record_of(&r, true)).transpose()
    }

    /// A page of a job's tasks after `after_id`: at most `limit` tasks and about
    /// `max_bytes` of specs and results (at least one task), and whether more follow.
    pub async fn tasks(&self, q: &TaskQuery<'_>) -> Result<(Vec<TaskRecord>, bool), Error> {
        let payload = if q.with_payloads { "spec, result" } else { "NULL AS spec, NULL AS result" };
        let states = if q.states.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = q.states.iter().map(|s| s.as_i32().to_string()).collect();
            format!("AND state IN ({})", list.join(","))
        };
        let job = match q.job_id {
            Some(_) => "job_id = ?",
            None => "job_id NOT IN (SELECT job_id FROM jobs WHERE deleted_at_ms IS NOT NULL)",
        };
        let worker = if q.worker_id.is_some() { "AND worker_id = ?" } else { "" };
        let owner = if q.owner.is_some() { "AND job_id IN (SELECT job_id FROM jobs WHERE owner = ?)" } else { "" };
        let sql = format!(
            "SELECT {ROW_COLUMNS}, job_id, priority, {payload}, created_at_ms, updated_at_ms FROM tasks \
             WHERE {job} {states} {worker} {owner} AND task_id > ? ORDER BY task_id LIMIT ?"
        );
        let limit = q.limit as i64 + 1;
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for v in [q.job_id, q.worker_id, q.owner].into_iter().flatten() {
            query = query.bind(v);
        }
        let mut rows = query.bind(q.after_id).bind(limit).fetch(&self.pool);
        // Row by row, so that a page of large tasks never holds much more than the budget.
        let mut out = Vec::new();
        let mut bytes = 0;
        while let Some(row) = rows.try_next().await? {
            let t = task_record_of(&row, q.with_payloads)?;
            let n = t.spec.as_ref().map_or(0, Vec::len) + t.result.as_ref().map_or(0, Vec::len);
            if out.len() == q.limit as usize || (!out.is_empty() && bytes + n > q.max_bytes) {
                return Ok((out, true));
            }
            bytes += n;
            out.push(t);
        }
        Ok((out, false))
    }

    /// The attempts of a task that ended, oldest first.
    pub async fn attempts(&self, task_id: i64) -> Result<Vec<AttemptRecord>, Error> {
        let rows = sqlx::query(
            "SELECT attempt, worker_id, started_ms, ended_ms, outcome, reason, exit_code, cost_usd, duration_ms, \
             output_tail FROM attempts WHERE task_id = ? ORDER BY attempt",
        )
        .bind(task_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| AttemptRecord {
                task_id,
                attempt: r.get::<i64, _>(0) as u32,
                worker_id: r.get(1),
                started_ms: r.get(2),
                ended_ms: r.get(3),
                outcome: outcome_name(&r.get::<String, _>(4)),
                reason: r.get(5),
                exit_code: r.get(6),
                cost_usd: r.get(7),
                duration_ms: r.get(8),
                output_tail: r.get(9),
            })
            .collect())
    }

    /// Key/values of a scope ('' global, else a job id).
    pub async fn context(&self, scope: &str) -> Result<Vec<(String, String)>, Error> {
        let rows = sqlx::query("SELECT key, value FROM context WHERE scope = ? ORDER BY key")
            .bind(scope)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
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
        let _reader = self.snapshot_readers.acquire().await.map_err(|_| Error::Unavailable("shutting down".into()))?;
        let mut tx = self.pool.begin().await?;
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = ? AND deleted_at_ms IS NULL");
        let Some(job) = sqlx::query(AssertSqlSafe(sql)).bind(job_id).fetch_optional(&mut *tx).await? else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS}, job_id, priority, NULL AS spec, NULL AS result, created_at_ms, updated_at_ms \
             FROM tasks WHERE job_id = ? AND task_id > ? ORDER BY task_id LIMIT ?"
        );
        let q = sqlx::query(AssertSqlSafe(sql)).bind(job_id).bind(after_id).bind(limit as i64);
        let rows = q.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let tasks = rows.iter().map(|r| task_record_of(r, false)).collect::<Result<_, _>>()?;
        Ok(Some((job_of(&job), tasks)))
    }

    /// Closes the read pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn task_record_of(r: &SqliteRow, payloads: bool) -> Result<TaskRecord, Error> {
    Ok(TaskRecord {
        job_id: r.get("job_id"),
        row: task_row_of(r)?,
        priority: r.get::<i64, _>("priority") as i32,
        spec: if payloads { r.get("spec") } else { None },
        result: if payloads { r.get("result") } else { None },
        created_at_ms: r.get("created_at_ms"),
        updated_at_ms: r.get("updated_at_ms"),
    })
}

impl Writer {
    /// Closes the connection (checkpointing the WAL).
    pub async fn close(self) -> Result<(), Error> {
        self.conn.close().await?;
        Ok(())
    }
}

/// The stored outcome name as the static name it was written from.
fn outcome_name(s: &str) -> &'static str {
    ATTEMPT_OUTCOMES.iter().find(|n| **n == s).copied().unwrap_or("unknown")
}

/// What an ended attempt's `outcome` can be.
pub const ATTEMPT_OUTCOMES: [&str; 5] = ["completed", "failed", "handed_back", "lost", "cancelled"];

#[cfg(test)]
mod tests {
    use super::*;

    fn row(task_id: i64, state: State) -> TaskRow {
        TaskRow {
            task_id,
            state,
            attempt: 2,
            retries_used: 1,
            lost_leases: 0,
            worker_id: Some("w".into()),
            not_before_ms: 0,
            cancel_cause: None,
            reason: String::new(),
        }
    }

    #[tokio::test]
    async fn attempts_are_kept_in_order_and_purged_with_their_job() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut writer, _) = open(&dir.path().join("orca.db"), Durability::Normal).await.unwrap();
        let attempt = |n: u32, outcome| AttemptRecord {
            task_id: 1,
            attempt: n,
            worker_id: Some("w".into()),
            started_ms: 10 * n as i64,
            ended_ms: 10 * n as i64 + 5,
            outcome,
            exit_code: Some(n as i32),
            output_tail: format!("out {n}"),
            ..Default::default()
        };
        let batch = WriteBatch {
            jobs: vec![JobInsert {
                job_id: "j".into(),
                description: String::new(),
                metadata: None,
                owner: None,
                controls: Default::default(),
            }],
            tasks: vec![TaskInsert { row: row(1, State::Completed), job_id: "j".into(), priority: 5, spec: vec![] }],
            attempts: vec![attempt(2, "completed"), attempt(1, "failed")],
            ..Default::default()
        };
        writer.commit(&batch, 1).await.unwrap();
        let got = store.attempts(1).await.unwrap();
        assert_eq!(got, vec![attempt(1, "failed"), attempt(2, "completed")]);

        writer.commit(&WriteBatch { delete_jobs: vec!["j".into()], ..Default::default() }, 2).await.unwrap();
        while !matches!(writer.purge_step(1).await.unwrap(), Purge::Job(_)) {}
        assert!(store.attempts(1).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_retention_scan_reads_the_index_of_finished_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, mut writer, _) = open(&dir.path().join("orca.db"), Durability::Normal).await.unwrap();
        // The plan's rows are (id, parent, notused, detail).
        let plan = sqlx::query(AssertSqlSafe(format!("EXPLAIN QUERY PLAN {EXPIRED_JOBS}")))
            .bind(0i64)
            .bind(10i64)
            .fetch_all(&mut writer.conn)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>(3))
            .collect::<Vec<_>>()
            .join("; ");
        assert!(plan.contains("jobs_finished_by_age"), "{plan}");
    }
}
