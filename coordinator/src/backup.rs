//! `orca-coordinator backup --db PATH --to FILE`: a consistent copy of the database, taken
//! online. SQLite's `VACUUM INTO` reads one snapshot (a read transaction, which WAL lets run
//! beside the coordinator's writes without blocking them) and writes it compacted to a new
//! file; the copy is synced, then renamed into place, so `--to` only ever names a complete
//! backup. Restoring is starting a coordinator on the copy.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use clap::Parser;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AssertSqlSafe, Connection, SqliteConnection};

/// Takes a consistent copy of a coordinator's database while it serves.
#[derive(Clone, Debug, Parser)]
#[command(name = "orca-coordinator backup", version)]
pub struct BackupArgs {
    /// The database to copy (the coordinator's --db).
    #[arg(long, env = "ORCA_DB", default_value = "orca.db")]
    pub db: PathBuf,
    /// Where to write the copy; must not exist yet.
    #[arg(long)]
    pub to: PathBuf,
}

/// What a backup wrote.
#[derive(Debug)]
pub struct Backup {
    pub bytes: u64,
    pub jobs: i64,
    pub tasks: i64,
    pub took: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} already exists; choose a new file for the backup")]
    Exists(PathBuf),
    #[error("no database at {0}")]
    Missing(PathBuf),
    #[error("{0} is a Postgres database: back it up with pg_dump (see README, Postgres)")]
    Postgres(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
}

/// A SQL string literal of `p`.
fn literal(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "''"))
}

/// Copies `db` to `to` (see the module documentation).
pub async fn backup(db: &Path, to: &Path) -> Result<Backup, BackupError> {
    let started = Instant::now();
    if let Some(url) = db.to_str().filter(|s| orca_proto::contract::is_postgres_url(s)) {
        return Err(BackupError::Postgres(crate::store::postgres::redact(url)));
    }
    if to.exists() {
        return Err(BackupError::Exists(to.to_path_buf()));
    }
    if !db.exists() {
        return Err(BackupError::Missing(db.to_path_buf()));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BackupError::Io { path, source }
    };
    let mut partial = to.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    // A leftover of an interrupted backup.
    let _ = std::fs::remove_file(&partial);
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", db.display()))?
        .read_only(true)
        .busy_timeout(Duration::from_secs(30));
    let mut conn = SqliteConnection::connect_with(&opts).await?;
    sqlx::raw_sql(AssertSqlSafe(format!("VACUUM INTO {}", literal(&partial)))).execute(&mut conn).await?;
    conn.close().await?;
    std::fs::File::open(&partial).and_then(|f| f.sync_all()).map_err(io(&partial))?;
    std::fs::rename(&partial, to).map_err(io(to))?;
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(io(dir))?;
    }
    // Read back from the copy: it opens and holds what it should.
    let copy = SqliteConnectOptions::from_str(&format!("sqlite://{}", to.display()))?.read_only(true);
    let mut conn = SqliteConnection::connect_with(&copy).await?;
    let jobs = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE deleted_at_ms IS NULL").fetch_one(&mut conn).await?;
    let tasks = sqlx::query_scalar("SELECT count(*) FROM tasks").fetch_one(&mut conn).await?;
    conn.close().await?;
    let bytes = std::fs::metadata(to).map_err(io(to))?.len();
    Ok(Backup { bytes, jobs, tasks, took: started.elapsed() })
}

/// Runs the subcommand; `args` are those after `backup`. Returns the exit code.
pub async fn main(args: Vec<std::ffi::OsString>) -> i32 {
    let mut argv = vec![std::ffi::OsString::from("orca-coordinator backup")];
    argv.extend(args);
    let a = match BackupArgs::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match backup(&a.db, &a.to).await {
        Ok(b) => {
            println!(
                "backup of {} written to {}: {} bytes, {} jobs, {} tasks, in {} ms",
                a.db.display(),
                a.to.display(),
                b.bytes,
                b.jobs,
                b.tasks,
                b.took.as_millis()
            );
            0
        }
        Err(e) => {
            eprintln!("orca-coordinator backup: {e}");
            1
        }
    }
}
