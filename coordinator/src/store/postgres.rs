//! The Postgres backend (`--db postgres://...`): the writer's connection and a pool of read
//! connections (see the parent module). A batch's bulk rows go in as arrays, one statement
//! per table (`INSERT ... SELECT FROM UNNEST`, `UPDATE ... FROM UNNEST`), so a batch costs a
//! handful of round trips whatever its size.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgSslMode};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Transaction};
use tokio::sync::Semaphore;

use orca_proto::contract::limits;
use orca_proto::pb;
use prost::Message;

use super::*;
use crate::Error;

type Db = sqlx::Postgres;
type Conn = PgConnection;

/// Migrations, applied in order; `orca_schema.version` is the number applied. (The first is
/// SQLite's migrations 0001-0007 in one; later ones come in pairs, one per backend.)
const MIGRATIONS: &[&str] = &[include_str!("../../migrations/postgres/0001_init.sql")];

/// Values per IN list of the shared statements.
const ROWS_PER_STATEMENT: usize = 500;
/// Rows per UNNEST statement (bounds one message's size).
const ROWS_PER_ARRAY: usize = 10_000;

/// How to reach Postgres, beside the URL: `--db-pool-size`, `--db-statement-timeout`,
/// `--db-ssl-mode`, `--db-ssl-root-cert` (the URL's own `sslmode`, `sslrootcert`, `sslcert`
/// and `sslkey` parameters work too; the flags win).
#[derive(Clone, Debug)]
pub struct Settings {
    pub url: String,
    /// Read connections (the writer has one more of its own).
    pub pool_size: u32,
    pub statement_timeout: Duration,
    pub ssl_mode: Option<PgSslMode>,
    pub ssl_root_cert: Option<PathBuf>,
    /// `--advertise-addr`: how this coordinator is named to the others while it leads.
    pub advertise: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            url: String::new(),
            pool_size: READERS,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            ssl_mode: None,
            ssl_root_cert: None,
            advertise: String::new(),
        }
    }
}

/// The URL with its password replaced by `***` (for logs and errors).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let Some((auth, host)) = rest.split_once('@') else { return url.to_string() };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// The read side: a pool of read connections.
#[derive(Clone, Debug)]
pub struct Reads {
    pool: PgPool,
    /// Snapshots may hold at most these read connections at once (see the SQLite side).
    snapshot_readers: Arc<Semaphore>,
}

/// The write side: the one connection that writes, and the leadership it writes under.
#[derive(Debug)]
pub struct Writes {
    conn: PgConnection,
    leader: Leader,
}

/// The session-level advisory lock that makes one coordinator the leader ("orcalead").
const LEADER_LOCK: i64 = 0x6f72_6361_6c65_6164;

/// This coordinator's leadership: the connection holding [`LEADER_LOCK`] (Postgres releases
/// it when that session ends: a dead coordinator's within moments, a cut-off one's once
/// TCP keepalives give up) and the epoch it raised when it took it.
#[derive(Debug)]
struct Leader {
    conn: PgConnection,
    epoch: i64,
}

/// A shared statement with Postgres's numbered placeholders: the n-th `?` becomes `$n`.
fn sql(s: &str) -> AssertSqlSafe<String> {
    let mut out = String::with_capacity(s.len() + 16);
    let mut n = 0;
    for c in s.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    AssertSqlSafe(out)
}

/// A read transaction that sees one committed state across its statements.
async fn snapshot_tx(pool: &PgPool) -> Result<Transaction<'static, Db>, sqlx::Error> {
    pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await
}

common_reads!();
common_writes!();

fn options(s: &Settings, durability: Durability) -> Result<PgConnectOptions, Error> {
    let mut o = PgConnectOptions::from_str(&s.url)
        .map_err(|e| Error::Storage(format!("bad --db URL {}: {e}", redact(&s.url))))?
        .application_name("orca-coordinator");
    if let Some(mode) = s.ssl_mode {
        o = o.ssl_mode(mode);
    }
    if let Some(ca) = &s.ssl_root_cert {
        o = o.ssl_root_cert(ca);
    }
    let timeout = s.statement_timeout.as_millis().to_string();
    let commit = match durability {
        Durability::Full => "on",
        Durability::Normal => "off",
    };
    // The server gives up on a connection whose peer is gone after 5 + 3 x 2 s of silence,
    // which is what frees a cut-off leader's lock.
    let keepalives = [("tcp_keepalives_idle", "5"), ("tcp_keepalives_interval", "2"), ("tcp_keepalives_count", "3")];
    // Without it, every `CREATE TABLE IF NOT EXISTS` of a standby's bid logs a notice.
    let quiet = ("client_min_messages", "warning");
    Ok(o.options([("statement_timeout", timeout.as_str()), ("synchronous_commit", commit), quiet])
        .options(keepalives)
        .log_statements(tracing::log::LevelFilter::Trace))
}

/// Opens (creating the database if it is missing) and migrates; then, leading, loads what
/// the scheduler needs, or says who leads (`Error::NotLeader` in the second part).
pub async fn open(s: &Settings, durability: Durability) -> Result<(Reads, Result<(Writes, Loaded), Error>), Error> {
    let writer = match writer(s, durability).await {
        Err(e) if !matches!(e, Error::NotLeader(_)) => return Err(e),
        w => w,
    };
    let pool = PgPoolOptions::new()
        .max_connections(s.pool_size.max(1))
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options(s, durability)?)
        .await?;
    let snapshot_readers = Arc::new(Semaphore::new(SNAPSHOT_READERS.min(s.pool_size.max(1) as usize)));
    Ok((Reads { pool, snapshot_readers }, writer))
}

/// The writer's connection, after migrating, the leadership, and what the scheduler loads
/// (`Error::NotLeader` when another coordinator holds the lock).
pub async fn writer(s: &Settings, durability: Durability) -> Result<(Writes, Loaded), Error> {
    let opts = options(s, durability)?;
    let mut conn = match PgConnection::connect_with(&opts).await {
        Err(e) if missing_database(&e) => {
            create_database(&opts).await?;
            PgConnection::connect_with(&opts).await?
        }
        r => r?,
    };
    migrate(&mut conn).await?;
    let leader = lead(&opts, &s.advertise).await?;
    // Loaded after the epoch was raised: every batch of the previous leader either committed
    // before (and is read here) or finds the new epoch and commits nothing.
    let loaded = load(&mut conn).await?;
    Ok((Writes { conn, leader }, loaded))
}

/// Takes the leader lock on a connection of its own and raises the epoch; when another
/// coordinator holds the lock, `Error::NotLeader` with its advertised address.
async fn lead(opts: &PgConnectOptions, advertise: &str) -> Result<Leader, Error> {
    let mut conn = PgConnection::connect_with(opts).await?;
    let got: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(LEADER_LOCK).fetch_one(&mut conn).await?;
    if !got {
        let addr: String = sqlx::query_scalar("SELECT addr FROM orca_leader").fetch_one(&mut conn).await?;
        let _ = conn.close().await;
        return Err(Error::NotLeader(addr));
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let epoch: i64 =
        sqlx::query_scalar("UPDATE orca_leader SET epoch = epoch + 1, addr = $1, since_ms = $2 RETURNING epoch")
            .bind(advertise)
            .bind(now)
            .fetch_one(&mut conn)
            .await?;
    tracing::info!(epoch, advertise, "took the leadership");
    Ok(Leader { conn, epoch })
}

/// Refuses the transaction's writes unless this coordinator's epoch is still the current
/// one; the row lock it takes (FOR SHARE) makes a new leader's raise wait for this
/// transaction, so no batch of an old leader commits after a new one loaded.
async fn fence(tx: &mut PgConnection, epoch: i64) -> Result<(), Error> {
    let current = sqlx::query("SELECT epoch FROM orca_leader WHERE epoch = $1 FOR SHARE")
        .bind(epoch)
        .fetch_optional(&mut *tx)
        .await?;
    match current {
        Some(_) => Ok(()),
        None => Err(Error::Fenced),
    }
}

fn missing_database(e: &sqlx::Error) -> bool {
    // 3D000: invalid_catalog_name.
    e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == "3D000")
}

/// Creates the database `opts` names, from the server's `postgres` database (as SQLite
/// creates a missing file). Another coordinator creating it at the same time is fine.
async fn create_database(opts: &PgConnectOptions) -> Result<(), Error> {
    let name = opts.get_database().unwrap_or_default().to_string();
    let mut admin = PgConnection::connect_with(&opts.clone().database("postgres")).await?;
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    match sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {quoted}"))).execute(&mut admin).await {
        // 42P04: duplicate_database.
        Err(e) if e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == "42P04") => {}
        r => {
            r?;
            tracing::info!(database = %name, "created the Postgres database");
        }
    }
    let _ = admin.close().await;
    Ok(())
}

/// Applies the migrations not applied yet, each in its own transaction, under an advisory
/// lock: coordinators starting together migrate once.
async fn migrate(conn: &mut PgConnection) -> Result<(), Error> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('orca migrations'))").execute(&mut *tx).await?;
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS orca_schema (version BIGINT NOT NULL)").execute(&mut *tx).await?;
    let version: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM orca_schema").fetch_one(&mut *tx).await?;
    let version = version.unwrap_or(0);
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(Error::Storage(format!(
            "database schema version {version} is newer than this binary supports ({known}); \
             upgrade orca-coordinator"
        )));
    }
    for (i, text) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        sqlx::raw_sql(AssertSqlSafe(*text)).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM orca_schema").execute(&mut *tx).await?;
        sqlx::query("INSERT INTO orca_schema (version) VALUES ($1)").bind(i as i64 + 1).execute(&mut *tx).await?;
        tracing::info!(version = i + 1, "applied schema migration");
    }
    tx.commit().await?;
    Ok(())
}

impl Writes {
    /// What [`fence`] checks: this writer's epoch.
    fn fencing(&self) -> i64 {
        self.leader.epoch
    }

    /// Postgres gives space back by itself (autovacuum): nothing to do.
    async fn purge_idle(&mut self, _limit: u32) -> Result<Purge, Error> {
        Ok(Purge::Idle)
    }

    pub async fn live_page(
        &mut self,
        job: &str,
        state: State,
        after: i64,
        limit: usize,
    ) -> Result<Vec<LiveTask>, Error> {
        let mut rows = sqlx::query(
            "SELECT task_id, attempt, retries_used, lost_leases, worker_id, not_before_ms, reason, spec FROM tasks \
             WHERE job_id = $1 AND state = $2 AND task_id > $3 ORDER BY task_id LIMIT $4",
        )
        .bind(job)
        .bind(state.as_i32() as i64)
        .bind(after)
        .bind(limit as i64)
        .fetch(&mut self.conn);
        let mut out = Vec::new();
        while let Some(r) = rows.try_next().await? {
            let row = TaskRow {
                task_id: r.int("task_id"),
                state,
                attempt: r.int("attempt") as u32,
                retries_used: r.int("retries_used") as u32,
                lost_leases: r.int("lost_leases") as u32,
                worker_id: r.opt_text("worker_id"),
                not_before_ms: r.int("not_before_ms") as u64,
                cancel_cause: None,
                reason: r.text("reason"),
            };
            out.push(LiveTask { job_id: job.to_string(), row, spec: r.blob("spec"), deps: Vec::new() });
        }
        Ok(out)
    }

    pub async fn live_deps(&mut self, job: &str) -> Result<HashMap<i64, Vec<i64>>, Error> {
        let live = [State::Waiting, State::Pending, State::InProgress].map(|s| s.as_i32() as i64);
        let mut rows = sqlx::query(
            "SELECT d.task_id, d.depends_on FROM tasks t JOIN task_deps d ON d.task_id = t.task_id \
             WHERE t.job_id = $1 AND t.state = ANY($2)",
        )
        .bind(job)
        .bind(&live[..])
        .fetch(&mut self.conn);
        let mut deps: HashMap<i64, Vec<i64>> = HashMap::new();
        while let Some(r) = rows.try_next().await? {
            deps.entry(r.int("task_id")).or_default().push(r.int("depends_on"));
        }
        Ok(deps)
    }

    /// Whether the leader lock's session is still there (a broken one means the lock is
    /// gone, and another coordinator may take over).
    pub async fn check_leader(&mut self) -> Result<(), Error> {
        match sqlx::query("SELECT 1").execute(&mut self.leader.conn).await {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "the leader lock's connection failed");
                Err(Error::Fenced)
            }
        }
    }

    /// The epoch this writer leads with.
    pub fn epoch(&self) -> i64 {
        self.leader.epoch
    }

    pub async fn close(self) -> Result<(), Error> {
        self.conn.close().await?;
        // Ending the session releases the leader lock at once.
        self.leader.conn.close().await?;
        Ok(())
    }

    /// The backend pid of the leader lock's session.
    #[cfg(test)]
    pub(crate) async fn lock_pid(&mut self) -> i32 {
        sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut self.leader.conn).await.unwrap()
    }

    #[cfg(test)]
    pub(crate) fn conn(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl Reads {
    /// `pg_database_size` of the database (0 when it cannot be read).
    pub async fn size_bytes(&self) -> u64 {
        let size: Result<i64, _> =
            sqlx::query_scalar("SELECT pg_database_size(current_database())").fetch_one(&self.pool).await;
        size.map_or(0, |n| n.max(0) as u64)
    }
}

async fn insert_jobs(tx: &mut PgConnection, jobs: &[JobInsert], now: i64) -> Result<(), Error> {
    for chunk in jobs.chunks(ROWS_PER_ARRAY) {
        let c = |f: fn(&Controls) -> i64| chunk.iter().map(|j| f(&j.controls)).collect::<Vec<i64>>();
        sqlx::query(
            "INSERT INTO jobs (job_id, description, metadata, owner, weight, max_running, budget_usd, paused, \
             created_at_ms, updated_at_ms) \
             SELECT *, $9, $9 FROM UNNEST($1::text[], $2::text[], $3::bytea[], $4::text[], $5::int8[], \
             $6::int8[], $7::float8[], $8::int8[])",
        )
        .bind(chunk.iter().map(|j| j.job_id.as_str()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|j| j.description.as_str()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|j| j.metadata.as_deref()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|j| j.owner.as_deref()).collect::<Vec<_>>())
        .bind(c(|c| c.weight as i64))
        .bind(c(|c| c.max_running as i64))
        .bind(chunk.iter().map(|j| j.controls.budget_usd).collect::<Vec<_>>())
        .bind(c(|c| c.paused as i64))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// The columns of [`TaskRow`]s as arrays, in `ROW_COLUMNS` order.
struct RowArrays<'a> {
    task_id: Vec<i64>,
    state: Vec<i64>,
    attempt: Vec<i64>,
    retries_used: Vec<i64>,
    lost_leases: Vec<i64>,
    worker_id: Vec<Option<&'a str>>,
    not_before_ms: Vec<i64>,
    cancel_cause: Vec<Option<i64>>,
    reason: Vec<&'a str>,
}

impl<'a> RowArrays<'a> {
    fn of(rows: impl Iterator<Item = &'a TaskRow>) -> Self {
        let mut a = RowArrays {
            task_id: vec![],
            state: vec![],
            attempt: vec![],
            retries_used: vec![],
            lost_leases: vec![],
            worker_id: vec![],
            not_before_ms: vec![],
            cancel_cause: vec![],
            reason: vec![],
        };
        for r in rows {
            a.task_id.push(r.task_id);
            a.state.push(r.state.as_i32() as i64);
            a.attempt.push(r.attempt as i64);
            a.retries_used.push(r.retries_used as i64);
            a.lost_leases.push(r.lost_leases as i64);
            a.worker_id.push(r.worker_id.as_deref());
            a.not_before_ms.push(r.not_before_ms as i64);
            a.cancel_cause.push(r.cancel_cause);
            a.reason.push(r.reason.as_str());
        }
        a
    }

    /// Binds the nine arrays, as `$k::int8[], ...` in `ROW_COLUMNS` order.
    fn bind<'q>(
        self,
        q: sqlx::query::Query<'q, Db, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, Db, sqlx::postgres::PgArguments>
    where
        'a: 'q,
    {
        q.bind(self.task_id)
            .bind(self.state)
            .bind(self.attempt)
            .bind(self.retries_used)
            .bind(self.lost_leases)
            .bind(self.worker_id)
            .bind(self.not_before_ms)
            .bind(self.cancel_cause)
            .bind(self.reason)
    }
}

/// The array casts of `RowArrays::bind`, from `$first`.
fn row_casts(first: usize) -> String {
    let types = ["int8", "int8", "int8", "int8", "int8", "text", "int8", "int8", "text"];
    types.iter().enumerate().map(|(i, t)| format!("${}::{t}[]", first + i)).collect::<Vec<_>>().join(", ")
}

async fn insert_tasks(tx: &mut PgConnection, tasks: &[TaskInsert], now: i64) -> Result<(), Error> {
    for chunk in tasks.chunks(ROWS_PER_ARRAY) {
        let text = format!(
            "INSERT INTO tasks ({ROW_COLUMNS}, job_id, priority, spec, created_at_ms, updated_at_ms) \
             SELECT *, $1, $1 FROM UNNEST({}, $11::text[], $12::int8[], $13::bytea[])",
            row_casts(2)
        );
        let q = sqlx::query(AssertSqlSafe(text)).bind(now);
        RowArrays::of(chunk.iter().map(|t| &t.row))
            .bind(q)
            .bind(chunk.iter().map(|t| t.job_id.as_str()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|t| t.priority as i64).collect::<Vec<_>>())
            .bind(chunk.iter().map(|t| t.spec.as_slice()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

async fn insert_deps(tx: &mut PgConnection, deps: &[(i64, i64)]) -> Result<(), Error> {
    for chunk in deps.chunks(ROWS_PER_ARRAY) {
        sqlx::query("INSERT INTO task_deps (task_id, depends_on) SELECT * FROM UNNEST($1::int8[], $2::int8[])")
            .bind(chunk.iter().map(|d| d.0).collect::<Vec<_>>())
            .bind(chunk.iter().map(|d| d.1).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

async fn update_tasks(tx: &mut PgConnection, updates: &[(TaskRow, Option<Vec<u8>>)], now: i64) -> Result<(), Error> {
    let updates = last_of_each(updates, |(r, _)| r.task_id);
    for chunk in updates.chunks(ROWS_PER_ARRAY) {
        let text = format!(
            "UPDATE tasks SET state = v.state, attempt = v.attempt, retries_used = v.retries_used, \
             lost_leases = v.lost_leases, worker_id = v.worker_id, not_before_ms = v.not_before_ms, \
             cancel_cause = v.cancel_cause, reason = v.reason, result = coalesce(v.result, tasks.result), \
             updated_at_ms = $1 FROM UNNEST({}, $11::bytea[]) AS v({ROW_COLUMNS}, result) \
             WHERE tasks.task_id = v.task_id",
            row_casts(2)
        );
        let q = sqlx::query(AssertSqlSafe(text)).bind(now);
        RowArrays::of(chunk.iter().map(|(r, _)| r))
            .bind(q)
            .bind(chunk.iter().map(|(_, result)| result.as_deref()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

async fn update_jobs(tx: &mut PgConnection, jobs: &[JobUpdate], now: i64) -> Result<(), Error> {
    let jobs = last_of_each(jobs, |j| j.job_id.clone());
    for chunk in jobs.chunks(ROWS_PER_ARRAY) {
        let n = |f: fn(&JobUpdate) -> i64| chunk.iter().map(|j| f(j)).collect::<Vec<i64>>();
        let r = |f: fn(&JobUpdate) -> f64| chunk.iter().map(|j| f(j)).collect::<Vec<f64>>();
        sqlx::query(
            "UPDATE jobs SET last_seq = v.last_seq, cancelled = v.cancelled, n_waiting = v.n_waiting, \
             n_pending = v.n_pending, n_in_progress = v.n_in_progress, n_completed = v.n_completed, \
             n_failed = v.n_failed, n_cancelled = v.n_cancelled, weight = v.weight, max_running = v.max_running, \
             budget_usd = v.budget_usd, paused = v.paused, cost_usd = v.cost_usd, input_tokens = v.input_tokens, \
             output_tokens = v.output_tokens, updated_at_ms = $1 \
             FROM UNNEST($2::text[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], $8::int8[], \
             $9::int8[], $10::int8[], $11::int8[], $12::int8[], $13::float8[], $14::int8[], $15::float8[], \
             $16::int8[], $17::int8[]) AS v(job_id, last_seq, cancelled, n_waiting, n_pending, n_in_progress, \
             n_completed, n_failed, n_cancelled, weight, max_running, budget_usd, paused, cost_usd, \
             input_tokens, output_tokens) WHERE jobs.job_id = v.job_id",
        )
        .bind(now)
        .bind(chunk.iter().map(|j| j.job_id.as_str()).collect::<Vec<_>>())
        .bind(n(|j| j.last_seq as i64))
        .bind(n(|j| j.cancelled as i64))
        .bind(n(|j| j.counts.waiting as i64))
        .bind(n(|j| j.counts.pending as i64))
        .bind(n(|j| j.counts.in_progress as i64))
        .bind(n(|j| j.counts.completed as i64))
        .bind(n(|j| j.counts.failed as i64))
        .bind(n(|j| j.counts.cancelled as i64))
        .bind(n(|j| j.controls.weight as i64))
        .bind(n(|j| j.controls.max_running as i64))
        .bind(r(|j| j.controls.budget_usd))
        .bind(n(|j| j.controls.paused as i64))
        .bind(r(|j| j.spend.cost_usd))
        .bind(n(|j| j.spend.input_tokens as i64))
        .bind(n(|j| j.spend.output_tokens as i64))
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

async fn insert_attempts(tx: &mut PgConnection, attempts: &[AttemptRecord]) -> Result<(), Error> {
    let attempts = last_of_each(attempts, |a| (a.task_id, a.attempt));
    for chunk in attempts.chunks(ROWS_PER_ARRAY) {
        sqlx::query(
            "INSERT INTO attempts (task_id, attempt, worker_id, started_ms, ended_ms, outcome, reason, exit_code, \
             cost_usd, duration_ms, output_tail) \
             SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::int8[], $5::int8[], $6::text[], \
             $7::text[], $8::int8[], $9::float8[], $10::int8[], $11::text[]) \
             ON CONFLICT (task_id, attempt) DO UPDATE SET worker_id = excluded.worker_id, \
             started_ms = excluded.started_ms, ended_ms = excluded.ended_ms, outcome = excluded.outcome, \
             reason = excluded.reason, exit_code = excluded.exit_code, cost_usd = excluded.cost_usd, \
             duration_ms = excluded.duration_ms, output_tail = excluded.output_tail",
        )
        .bind(chunk.iter().map(|a| a.task_id).collect::<Vec<_>>())
        .bind(chunk.iter().map(|a| a.attempt as i64).collect::<Vec<_>>())
        .bind(chunk.iter().map(|a| a.worker_id.as_deref()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|a| a.started_ms).collect::<Vec<_>>())
        .bind(chunk.iter().map(|a| a.ended_ms).collect::<Vec<_>>())
        .bind(chunk.iter().map(|a| a.outcome).collect::<Vec<_>>())
        .bind(chunk.iter().map(|a| a.reason.as_str()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|a| a.exit_code.map(i64::from)).collect::<Vec<_>>())
        .bind(chunk.iter().map(|a| a.cost_usd).collect::<Vec<_>>())
        .bind(chunk.iter().map(|a| a.duration_ms).collect::<Vec<_>>())
        .bind(chunk.iter().map(|a| a.output_tail.as_str()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}
