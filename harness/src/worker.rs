//! An `orca-worker` process: `orca-worker --coordinator URL --name NAME --work-dir DIR ARGS`,
//! its stderr appended to a log file. Started without waiting (a worker connects, and
//! reconnects, by itself).

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::{Error, append, process};

/// How to start a worker.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub binary: PathBuf,
    /// The coordinator's URL.
    pub coordinator: String,
    pub name: String,
    /// Its `--work-dir` (created before the start).
    pub work_dir: PathBuf,
    /// Where its stderr goes (appended).
    pub log: PathBuf,
    /// More flags (slots, agent, grace, labels).
    pub args: Vec<String>,
    /// `ORCA_LOG`.
    pub log_filter: String,
    /// More environment variables; the worker's supervisors and agents inherit them.
    pub env: Vec<(String, String)>,
}

/// A running worker; killed and reaped when dropped.
pub struct Worker {
    pub child: Child,
    pub name: String,
    /// Its `--work-dir`.
    pub work_dir: PathBuf,
    /// Its stderr (logs).
    pub log: PathBuf,
}

impl Worker {
    pub fn start(config: WorkerConfig) -> Result<Worker, Error> {
        let WorkerConfig { binary, coordinator, name, work_dir, log, args, log_filter, env } = config;
        std::fs::create_dir_all(&work_dir).map_err(Error::io(format!("create {}", work_dir.display())))?;
        let child = Command::new(&binary)
            .args(["--coordinator", &coordinator, "--name", &name])
            .arg("--work-dir")
            .arg(&work_dir)
            .args(&args)
            .env("ORCA_LOG", &log_filter)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(append(&log)?)
            .spawn()
            .map_err(|source| Error::Spawn { binary, source })?;
        Ok(Worker { child, name, work_dir, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`, then reaps it.
    pub fn kill(&mut self) {
        process::kill(&mut self.child);
    }

    /// Sends SIGTERM (does not wait).
    pub fn terminate(&self) {
        process::signal(self.child.id(), libc::SIGTERM);
    }

    /// Waits up to `within` for its exit; `Ok(None)` when it is still running.
    pub fn wait_within(&mut self, within: Duration) -> std::io::Result<Option<ExitStatus>> {
        process::wait_within(&mut self.child, within)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}
