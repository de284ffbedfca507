//! Command-line flags and `ORCA_*` environment variables of `orca-coordinator` (names fixed by
//! docs/contract.md). Checked before anything is bound or opened.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use orca_proto::defaults;

use crate::queue::LabelLimit;
use crate::store::{Durability, Target};

/// The contract's default listen address (the host and port of `defaults::COORDINATOR_URL`).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

/// How commits reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// fsync on every commit (synchronous=FULL): nothing acknowledged is lost, even on power loss.
    Full,
    /// synchronous=NORMAL: survives a crash of the coordinator, not of the machine.
    Normal,
}

/// Orca's coordinator: the durable task queue and gRPC server.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "orca-coordinator",
    version,
    about,
    args_override_self = true,
    after_help = "Online backup: orca-coordinator backup --db PATH --to FILE (see `orca-coordinator backup --help`)."
)]
pub struct Config {
    /// TOML file whose `[coordinator]` section sets any flag (flag > environment > file).
    #[arg(long, env = "ORCA_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to serve gRPC on (port 0 picks a free port; see --addr-file).
    #[arg(long, env = "ORCA_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// SQLite database file (created when missing), or a postgres:// URL (the database is
    /// created when missing; see --db-pool-size, --db-statement-timeout, --db-ssl-mode).
    #[arg(long, env = "ORCA_DB", default_value = "orca.db")]
    pub db: PathBuf,

    /// How other coordinators, workers and clients reach this one (a URL), told to them by
    /// standbys while this one leads (default: the bound address; the host name for 0.0.0.0).
    #[arg(long, env = "ORCA_ADVERTISE_ADDR", value_parser = advertise_url)]
    pub advertise_addr: Option<String>,

    /// Postgres: read connections in the pool (the writer holds one more).
    #[arg(long, env = "ORCA_DB_POOL_SIZE", default_value_t = crate::store::READERS, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub db_pool_size: u32,

    /// Postgres: seconds a statement may run before the server cancels it (0: no limit).
    #[arg(long, env = "ORCA_DB_STATEMENT_TIMEOUT", default_value_t = crate::store::DEFAULT_STATEMENT_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub db_statement_timeout: u64,

    /// Postgres: TLS to the database (disable, prefer, require, verify-ca, verify-full);
    /// default: the URL's sslmode, else prefer.
    #[arg(long, env = "ORCA_DB_SSL_MODE", value_parser = ssl_mode)]
    pub db_ssl_mode: Option<SslMode>,

    /// Postgres: PEM CA certificates that sign the database's certificate (for verify-ca and
    /// verify-full; default: the system's roots).
    #[arg(long, env = "ORCA_DB_SSL_ROOT_CERT")]
    pub db_ssl_root_cert: Option<PathBuf>,

    /// After binding, write the bound host:port on one line to this file.
    #[arg(long, env = "ORCA_ADDR_FILE")]
    pub addr_file: Option<PathBuf>,

    /// Serve /metrics (Prometheus) and /healthz over HTTP on this address (off by default).
    #[arg(long, env = "ORCA_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,

    /// After binding --http-listen, write its bound host:port on one line to this file.
    #[arg(long, env = "ORCA_HTTP_ADDR_FILE", requires = "http_listen")]
    pub http_addr_file: Option<PathBuf>,

    /// PEM certificate chain: serve gRPC over TLS (with --tls-key). SIGHUP reloads it.
    #[arg(long, env = "ORCA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "ORCA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificates: clients must present a certificate signed by one (mutual TLS).
    #[arg(long, env = "ORCA_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// TOML file of bearer tokens and their roles (`[[tokens]]` with name, role, sha256);
    /// SIGHUP reloads it. Without it every caller may do everything.
    #[arg(long, env = "ORCA_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,

    /// Lease of an assignment in seconds; a worker must heartbeat within it.
    #[arg(long, env = "ORCA_LEASE_SECONDS", default_value_t = defaults::LEASE_SECONDS, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub lease_seconds: u32,

    /// Heartbeat interval told to workers, in seconds (default: a third of the lease, at most 10).
    #[arg(long, env = "ORCA_HEARTBEAT_SECONDS", value_parser = clap::value_parser!(u32).range(1..=3_600))]
    pub heartbeat_seconds: Option<u32>,

    /// Attempts a task may lose to expired leases before it is failed (dead letter).
    #[arg(long, env = "ORCA_MAX_LEASE_LOSSES", default_value_t = defaults::MAX_LEASE_LOSSES, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub max_lease_losses: u32,

    /// Open connections at most (default: what the file-descriptor limit leaves room for, at
    /// most 10000). Past it new clients wait in the kernel's backlog.
    #[arg(long, env = "ORCA_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: Option<u64>,

    /// MiB of task specs kept in memory for queued tasks; past it a spec is read from the
    /// database when its task is dispatched (memory then follows the task count, not size).
    #[arg(long, env = "ORCA_PAYLOAD_CACHE_MB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(0..=1_048_576))]
    pub payload_cache_mb: u64,

    /// Days a finished job (every task final) is kept after its last change; then it is
    /// removed with its tasks, results and context. Fractions are fine (0.5 = 12 hours);
    /// 0 keeps jobs forever.
    #[arg(long, env = "ORCA_RETAIN_DAYS", default_value_t = 30.0, value_parser = retain_days)]
    pub retain_days: f64,

    /// Log lines: human-readable, or JSON objects with the trace id of the span they are in.
    #[arg(long, env = "ORCA_LOG_FORMAT", value_enum, default_value_t = orca_telemetry::LogFormat::Human)]
    pub log_format: orca_telemetry::LogFormat,

    /// Commit durability.
    #[arg(long, env = "ORCA_DURABILITY", value_enum, default_value_t = DurabilityArg::Full)]
    pub durability: DurabilityArg,

    /// At most N running tasks that require the label KEY=VALUE, as `KEY=VALUE:N` (repeat the
    /// flag, or separate with commas): a shared resource such as one API key's rate limit.
    #[arg(long = "label-limit", env = "ORCA_LABEL_LIMITS", value_delimiter = ',', value_parser = label_limit)]
    pub label_limits: Vec<LabelLimit>,

    /// POST each job's final status (JSON) to this http:// or https:// URL once, when the job
    /// goes idle (every task final); retried with backoff until it answers 2xx, across restarts.
    #[arg(long, env = "ORCA_JOB_WEBHOOK", value_parser = webhook_url)]
    pub job_webhook: Option<String>,
}

fn advertise_url(s: &str) -> Result<String, String> {
    let ok = (s.starts_with("http://") || s.starts_with("https://")) && s.len() > "https://".len();
    match s.parse::<http::Uri>() {
        Ok(u) if ok && u.host().is_some() => Ok(s.to_string()),
        _ => Err(format!("{s:?} is not an http:// or https:// URL with a host")),
    }
}

/// A Postgres `sslmode`.
#[derive(Clone, Copy, Debug)]
pub struct SslMode(pub sqlx::postgres::PgSslMode);

fn ssl_mode(s: &str) -> Result<SslMode, String> {
    use std::str::FromStr;
    match s {
        "disable" | "prefer" | "require" | "verify-ca" | "verify-full" => {
            sqlx::postgres::PgSslMode::from_str(s).map(SslMode).map_err(|e| e.to_string())
        }
        _ => Err(format!("{s:?} is not one of disable, prefer, require, verify-ca, verify-full")),
    }
}

/// `KEY=VALUE:N`.
fn label_limit(s: &str) -> Result<LabelLimit, String> {
    let bad = || format!("{s:?} is not KEY=VALUE:N (for example api_key=team-a:8)");
    let (label, max) = s.rsplit_once(':').ok_or_else(bad)?;
    let (key, value) = label.split_once('=').ok_or_else(bad)?;
    let max: u32 = max.parse().map_err(|_| bad())?;
    orca_proto::contract::label(key, value).map_err(|v| format!("{s:?}: {v}"))?;
    Ok(LabelLimit { key: key.to_string(), value: value.to_string(), max })
}

fn webhook_url(s: &str) -> Result<String, String> {
    crate::webhook::Target::parse(s).map(|_| s.to_string())
}

fn retain_days(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(d) if d.is_finite() && (0.0..=36_500.0).contains(&d) => Ok(d),
        _ => Err(format!("{s:?} is not a number of days from 0 to 36500")),
    }
}

impl Config {
    /// How long finished jobs are kept, in ms (`None`: forever).
    pub fn retain_ms(&self) -> Option<u64> {
        let ms = (self.retain_days * 86_400_000.0) as u64;
        (ms > 0).then_some(ms)
    }

    pub fn durability(&self) -> Durability {
        match self.durability {
            DurabilityArg::Full => Durability::Full,
            DurabilityArg::Normal => Durability::Normal,
        }
    }

    /// The database `--db` names, with the Postgres connection flags and the address this
    /// coordinator advertises while it leads.
    pub fn target(&self, advertise: &str) -> Target {
        let pg = crate::store::postgres::Settings {
            url: String::new(),
            pool_size: self.db_pool_size,
            statement_timeout: std::time::Duration::from_secs(self.db_statement_timeout),
            ssl_mode: self.db_ssl_mode.map(|m| m.0),
            ssl_root_cert: self.db_ssl_root_cert.clone(),
            advertise: advertise.to_string(),
        };
        Target::new(&self.db, pg)
    }

    pub fn heartbeat_seconds(&self) -> u32 {
        self.heartbeat_seconds.unwrap_or_else(|| (self.lease_seconds / 3).clamp(1, defaults::HEARTBEAT_SECONDS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use orca_proto::config_file;

    const EXAMPLE: &str = include_str!("../../deploy/orca.toml.example");

    #[test]
    fn the_example_file_documents_every_flag_and_loads() {
        let documented = config_file::documented_keys(EXAMPLE, "coordinator");
        assert_eq!(documented, config_file::file_keys(&Config::command()));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orca.toml");
        std::fs::write(&path, EXAMPLE).unwrap();
        let args = vec!["orca-coordinator".into(), "--config".into(), path.into_os_string()];
        let args = config_file::with_file(&Config::command(), "coordinator", args).unwrap();
        let c = Config::try_parse_from(args).unwrap();
        assert_eq!((c.lease_seconds, c.payload_cache_mb, c.durability), (30, 256, DurabilityArg::Full));
    }
}
