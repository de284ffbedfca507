//! An `orca-coordinator` process: started on `127.0.0.1:0` (or a fixed address on restart)
//! with `--addr-file`, ready when that file holds a complete line. Its database, address
//! file and log live in one directory, so a restart on the same database is one call.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, append, process};

/// How often readiness is looked at again.
const POLL: Duration = Duration::from_millis(5);
/// A restart on the same address is tried this often, 200 ms apart, while the port is still
/// held by the killed process's socket.
const BIND_TRIES: u32 = 100;

/// How to start a coordinator.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    pub binary: PathBuf,
    /// Holds `orca.db`, the address file `addr` and the log `coordinator.log`.
    pub dir: PathBuf,
    /// Flags after `--listen`, `--db` and `--addr-file` (a `--listen` here wins).
    pub args: Vec<String>,
    /// `ORCA_LOG`.
    pub log_filter: String,
    /// More environment variables.
    pub env: Vec<(String, String)>,
    /// Bound on start to ready (the database is loaded before the address is written).
    pub ready_within: Duration,
}

impl CoordinatorConfig {
    pub fn new(binary: PathBuf, dir: &Path) -> CoordinatorConfig {
        CoordinatorConfig {
            binary,
            dir: dir.to_path_buf(),
            args: Vec::new(),
            log_filter: "info".into(),
            env: Vec::new(),
            ready_within: Duration::from_secs(120),
        }
    }

    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> Self {
        self.args.extend(args.iter().map(|s| s.as_ref().to_string()));
        self
    }

    pub fn log_filter(mut self, filter: &str) -> Self {
        self.log_filter = filter.into();
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn ready_within(mut self, bound: Duration) -> Self {
        self.ready_within = bound;
        self
    }

    /// `dir/orca.db`; with `ORCA_E2E_DB=postgres`, a Postgres database on the server
    /// `ORCA_TEST_POSTGRES` names, one per directory (the coordinator creates it).
    pub fn db(&self) -> PathBuf {
        match e2e_postgres() {
            Some(server) => PathBuf::from(postgres_database(&server, &database_name(&self.dir))),
            None => self.dir.join("orca.db"),
        }
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("coordinator.log")
    }

    fn addr_file(&self) -> PathBuf {
        self.dir.join("addr")
    }
}

/// The Postgres server the end-to-end runs use, when `ORCA_E2E_DB=postgres` (its URL in
/// `ORCA_TEST_POSTGRES`; `scripts/postgres.sh` starts one). Panics when the switch is on
/// without a server: a run meant for Postgres must not quietly use SQLite.
pub fn e2e_postgres() -> Option<String> {
    if std::env::var("ORCA_E2E_DB").ok()? != "postgres" {
        return None;
    }
    match std::env::var("ORCA_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => panic!("ORCA_E2E_DB=postgres needs ORCA_TEST_POSTGRES (eval \"$(scripts/postgres.sh start)\")"),
    }
}

/// `server` (a `postgres://` URL) with its database replaced by `name`.
pub fn postgres_database(server: &str, name: &str) -> String {
    let (base, query) = server.split_once('?').map_or((server, ""), |(b, q)| (b, q));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    let sep = if query.is_empty() { "" } else { "?" };
    format!("{}/{name}{sep}{query}", &base[..host_end])
}

/// A database name for a directory: the same for the same directory (restarts find it).
fn database_name(dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    format!("orca_e2e_{:016x}", h.finish())
}

/// A running coordinator; killed and reaped when dropped.
pub struct Coordinator {
    pub child: Child,
    /// host:port it listens on.
    pub addr: String,
    pub db: PathBuf,
    pub dir: PathBuf,
    /// Start to ready of the last (re)start.
    pub ready_in: Duration,
    config: CoordinatorConfig,
}

impl Coordinator {
    /// Starts it on `127.0.0.1:0` and waits for its bound address.
    pub fn start(config: CoordinatorConfig) -> Result<Coordinator, Error> {
        std::fs::create_dir_all(&config.dir).map_err(Error::io(format!("create {}", config.dir.display())))?;
        let t0 = Instant::now();
        let (child, addr) = spawn(&config, "127.0.0.1:0")?;
        Ok(Coordinator { child, addr, db: config.db(), dir: config.dir.clone(), ready_in: t0.elapsed(), config })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`, then reaps it.
    pub fn kill(&mut self) {
        process::kill(&mut self.child);
    }

    /// SIGTERM, then waits up to `within`; `None` when it is still running (it is not killed).
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        process::signal(self.child.id(), libc::SIGTERM);
        process::wait_within(&mut self.child, within).ok().flatten()
    }

    /// Kills it if it still runs, then starts it again on the same database and a new port.
    pub fn restart(&mut self) -> Result<Duration, Error> {
        self.kill();
        let t0 = Instant::now();
        let (child, addr) = spawn(&self.config, "127.0.0.1:0")?;
        (self.child, self.addr, self.ready_in) = (child, addr, t0.elapsed());
        Ok(self.ready_in)
    }

    /// Kills it if it still runs, then starts it again on the same database and the same
    /// address, so that connected clients and workers reconnect; returns the time to ready.
    pub fn restart_same_port(&mut self) -> Result<Duration, Error> {
        self.kill();
        let t0 = Instant::now();
        let mut tries = 0;
        loop {
            match spawn(&self.config, &self.addr) {
                Ok((child, addr)) => {
                    (self.child, self.addr, self.ready_in) = (child, addr, t0.elapsed());
                    return Ok(self.ready_in);
                }
                Err(Error::ExitedEarly { .. }) if tries + 1 < BIND_TRIES => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(config: &CoordinatorConfig, listen: &str) -> Result<(Child, String), Error> {
    let addr_file = config.addr_file();
    let _ = std::fs::remove_file(&addr_file);
    let mut child = Command::new(&config.binary)
        .args(["--listen", listen])
        .arg("--db")
        .arg(config.db())
        .arg("--addr-file")
        .arg(&addr_file)
        .args(&config.args)
        .env("ORCA_LOG", &config.log_filter)
        .envs(config.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(append(&config.log())?)
        .spawn()
        .map_err(|source| Error::Spawn { binary: config.binary.clone(), source })?;
    match wait_for_address(&addr_file, &mut child, config.ready_within) {
        Ok(addr) => Ok((child, addr)),
        Err(e) => {
            process::kill(&mut child);
            Err(match e {
                Error::ExitedEarly { status, .. } => {
                    Error::ExitedEarly { what: "orca-coordinator", status, log: config.log() }
                }
                Error::NotReady { after, .. } => Error::NotReady { what: "orca-coordinator", after, log: config.log() },
                other => other,
            })
        }
    }
}

/// Waits until `child` has written a complete line (its bound address) to `path`; fails when
/// it exits first or `within` passes.
pub fn wait_for_address(path: &Path, child: &mut Child, within: Duration) -> Result<String, Error> {
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && s.ends_with('\n')
        {
            return Ok(s.trim().to_string());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Error::ExitedEarly { what: "process", status, log: path.to_path_buf() });
        }
        if start.elapsed() > within {
            return Err(Error::NotReady { what: "process", after: within, log: path.to_path_buf() });
        }
        std::thread::sleep(POLL);
    }
}
