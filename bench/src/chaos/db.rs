//! Reads what the coordinator left in its database (SQLite, or Postgres in a run with
//! `ORCA_E2E_DB=postgres`), after it stopped: the job's tasks (the spec and result blobs
//! decoded with the generated `pb` types), their dependencies, the job's counters and, on
//! SQLite, `PRAGMA integrity_check`. Read-only, except [`tamper_fencing`], the negative
//! control that must make the run fail. The statements use `$N` placeholders, which both
//! backends take.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result};
use orca_proto::pb;
use prost::Message;
use sqlx::AnyConnection;
use sqlx::{Connection, Row};

/// A task's row.
pub struct DbTask {
    pub state: i64,
    pub attempt: u32,
    pub lost_leases: u32,
    /// 0 when none.
    pub cancel_cause: i64,
    pub reason: String,
    pub prompt: String,
    /// `TaskResult.output`, when there is a result.
    pub output: Option<String>,
}

/// The job as the database holds it.
pub struct DbJob {
    pub integrity: String,
    pub tasks: BTreeMap<i64, DbTask>,
    /// Task -> the tasks it depends on.
    pub deps: HashMap<i64, Vec<i64>>,
    /// `jobs.n_waiting` .. `n_cancelled`, in `TaskState` order (None: no such job).
    pub counters: Option<[i64; 6]>,
    /// Tasks whose spec or result blob did not decode.
    pub undecodable: Vec<i64>,
}

/// Whether `db` (the coordinator's `--db`) is a Postgres URL.
fn postgres(db: &Path) -> bool {
    db.to_str().is_some_and(orca_proto::contract::is_postgres_url)
}

async fn connect(db: &Path, read_only: bool) -> Result<AnyConnection> {
    sqlx::any::install_default_drivers();
    let url = if postgres(db) {
        db.display().to_string()
    } else {
        format!("sqlite://{}?mode={}", db.display(), if read_only { "ro" } else { "rw" })
    };
    AnyConnection::connect(&url).await.with_context(|| format!("open {}", db.display()))
}

pub async fn read(db: &Path, job: &str) -> Result<DbJob> {
    let mut conn = connect(db, true).await?;
    // Postgres checks its own pages (data checksums, amcheck); SQLite's check is cheap here.
    let integrity: String = if postgres(db) {
        "ok".into()
    } else {
        sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&mut conn).await?
    };
    let mut out =
        DbJob { integrity, tasks: BTreeMap::new(), deps: HashMap::new(), counters: None, undecodable: Vec::new() };
    let rows = sqlx::query(
        "SELECT task_id, state, attempt, lost_leases, coalesce(cancel_cause, 0), reason, spec, result
         FROM tasks WHERE job_id = $1 ORDER BY task_id",
    )
    .bind(job)
    .fetch_all(&mut conn)
    .await?;
    for r in rows {
        let id: i64 = r.try_get(0)?;
        let spec = pb::TaskSpec::decode(r.try_get::<Vec<u8>, _>(6)?.as_slice());
        let result = r.try_get::<Option<Vec<u8>>, _>(7)?.map(|b| pb::TaskResult::decode(b.as_slice()));
        if spec.is_err() || result.as_ref().is_some_and(Result::is_err) {
            out.undecodable.push(id);
        }
        let task = DbTask {
            state: r.try_get(1)?,
            attempt: r.try_get::<i64, _>(2)? as u32,
            lost_leases: r.try_get::<i64, _>(3)? as u32,
            cancel_cause: r.try_get(4)?,
            reason: r.try_get(5)?,
            prompt: spec.map(|s| s.prompt).unwrap_or_default(),
            output: result.and_then(Result::ok).map(|r| r.output),
        };
        out.tasks.insert(id, task);
    }
    let deps: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT d.task_id, d.depends_on FROM task_deps d JOIN tasks t ON t.task_id = d.task_id WHERE t.job_id = $1",
    )
    .bind(job)
    .fetch_all(&mut conn)
    .await?;
    for (task, on) in deps {
        out.deps.entry(task).or_default().push(on);
    }
    let counters: Option<(i64, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT n_waiting, n_pending, n_in_progress, n_completed, n_failed, n_cancelled FROM jobs WHERE job_id = $1",
    )
    .bind(job)
    .fetch_optional(&mut conn)
    .await?;
    out.counters = counters.map(|c| [c.0, c.1, c.2, c.3, c.4, c.5]);
    Ok(out)
}

/// Raises the stored attempt of `n` completed tasks, as if the coordinator had accepted a
/// stale attempt's result; returns how many rows changed.
pub async fn tamper_fencing(db: &Path, job: &str, n: usize) -> Result<u64> {
    let mut conn = connect(db, false).await?;
    let done = sqlx::query(
        "UPDATE tasks SET attempt = attempt + 1 WHERE task_id IN
         (SELECT task_id FROM tasks WHERE job_id = $1 AND state = 4 ORDER BY task_id LIMIT $2)",
    )
    .bind(job)
    .bind(n as i64)
    .execute(&mut conn)
    .await?;
    Ok(done.rows_affected())
}
