//! The SQLite backend: one file in WAL mode, the writer's connection, and a pool of read-only
//! connections beside it (see the parent module).

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection, Transaction};
use tokio::sync::Semaphore;

use orca_proto::contract::limits;
use orca_proto::pb;
use prost::Message;

use super::*;
use crate::Error;

type Db = sqlx::Sqlite;
type Conn = SqliteConnection;

/// Migrations, applied in order; `PRAGMA user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_requests.sql"),
    include_str!("../../migrations/0003_retention.sql"),
    include_str!("../../migrations/0004_owners.sql"),
    include_str!("../../migrations/0005_attempts.sql"),
    include_str!("../../migrations/0006_retention_index.sql"),
    include_str!("../../migrations/0007_scheduling.sql"),
];

/// Rows per multi-row statement (SQLite allows 32766 bound parameters).
const ROWS_PER_STATEMENT: usize = 500;

/// The read side: a pool of read-only connections.
#[derive(Clone, Debug)]
pub struct Reads {
    pool: SqlitePool,
    /// Snapshots (the only reads whose size grows with a job) may hold at most these read
    /// connections at once, so the other reads always find one.
    snapshot_readers: Arc<Semaphore>,
    path: std::path::PathBuf,
}

/// The write side: the one connection that writes.
#[derive(Debug)]
pub struct Writes {
    conn: SqliteConnection,
}

/// SQLite's placeholders are the `?` the shared statements are written with.
fn sql(s: &str) -> AssertSqlSafe<String> {
    AssertSqlSafe(s.to_string())
}

/// A read transaction: WAL gives it one committed state.
async fn snapshot_tx(pool: &SqlitePool) -> Result<Transaction<'static, Db>, sqlx::Error> {
    pool.begin().await
}

common_reads!();
common_writes!();

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
pub async fn open(path: &Path, durability: Durability) -> Result<(Reads, Writes, Loaded), Error> {
    let (writes, loaded) = writer(path, durability).await?;
    let opts = options(path, durability)?.read_only(true);
    let pool = SqlitePoolOptions::new().max_connections(READERS).min_connections(1).connect_with(opts).await?;
    let snapshot_readers = Arc::new(Semaphore::new(SNAPSHOT_READERS));
    Ok((Reads { pool, snapshot_readers, path: path.to_path_buf() }, writes, loaded))
}

/// The writer's connection, after migrating, and what the scheduler loads.
pub async fn writer(path: &Path, durability: Durability) -> Result<(Writes, Loaded), Error> {
    // Takes effect in a new database only (before its first table); an older one keeps its
    // free pages for reuse instead of giving them back.
    // The writer never checkpoints inside a commit (the default every 1,000 pages made one
    // commit in a thousand pay for copying the WAL back); `checkpointer` does it beside it.
    let writer_opts = options(path, durability)?
        .auto_vacuum(sqlx::sqlite::SqliteAutoVacuum::Incremental)
        .pragma("wal_autocheckpoint", "0");
    let mut conn = SqliteConnection::connect_with(&writer_opts).await?;
    migrate(&mut conn).await?;
    let loaded = load(&mut conn).await?;
    Ok((Writes { conn }, loaded))
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

/// One writer per file: nothing to check.
async fn fence(_tx: &mut SqliteConnection, _fencing: ()) -> Result<(), Error> {
    Ok(())
}

impl Writes {
    fn fencing(&self) {}

    /// Gives up to `limit` free pages back to the file system (incremental vacuum).
    async fn purge_idle(&mut self, limit: u32) -> Result<Purge, Error> {
        let free: i64 = sqlx::query_scalar("PRAGMA freelist_count").fetch_one(&mut self.conn).await?;
        let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum").fetch_one(&mut self.conn).await?;
        if free == 0 || mode != 2 {
            return Ok(Purge::Idle);
        }
        sqlx::raw_sql(AssertSqlSafe(format!("PRAGMA incremental_vacuum({limit})"))).execute(&mut self.conn).await?;
        Ok(Purge::Vacuumed)
    }

    /// The page comes as one JSON document built by SQLite: far cheaper than a row at a time
    /// through the driver for a million tasks.
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

    pub async fn close(self) -> Result<(), Error> {
        self.conn.close().await?;
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}

impl Reads {
    /// The file and its write-ahead log.
    pub fn size_bytes(&self) -> u64 {
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut wal = self.path.as_os_str().to_owned();
        wal.push("-wal");
        size(&self.path) + size(Path::new(&wal))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_retention_scan_reads_the_index_of_finished_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, mut writer, _) = open(&dir.path().join("orca.db"), Durability::Normal).await.unwrap();
        use sqlx::Row;
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
