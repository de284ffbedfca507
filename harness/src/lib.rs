//! The process harness shared by the end-to-end tests (`orca-e2e`), the benchmark and the
//! chaos run (`orca-bench`): it starts the real `orca-coordinator` and `orca-worker`
//! binaries, learns the coordinator's bound address from its `--addr-file` (readiness is that
//! file, never a sleep), signals and reaps processes, and reads `/proc` for what they left.
//!
//! Layout: [`binaries`] (where the built binaries are), [`coordinator`], [`worker`],
//! [`process`] (signals, bounded waits), [`procfs`] (liveness, environment, memory and CPU of
//! a pid), [`shell`] (quoting, scripts).
//!
//! What stays true here: nothing panics (callers decide: tests panic, tools report); every
//! wait has a bound the caller chose; a [`Coordinator`] or [`Worker`] handle kills and reaps
//! its process when dropped, so a failed test or run leaves nothing running. The waits are
//! blocking (no tokio here); async callers run them under `tokio::task::block_in_place`.

pub mod binaries;
pub mod coordinator;
pub mod process;
pub mod procfs;
pub mod shell;
pub mod worker;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

pub use binaries::{binary_dir, binary_in};
pub use coordinator::{Coordinator, CoordinatorConfig};
pub use worker::{Worker, WorkerConfig};

/// What went wrong starting or waiting for a process.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{} not found: build it (`cargo build -p orca-coordinator -p orca-worker`)", .0.display())]
    NotBuilt(PathBuf),
    #[error("start {}: {source}", binary.display())]
    Spawn { binary: PathBuf, source: std::io::Error },
    #[error("{what} exited with {status} before it was ready (see {})", log.display())]
    ExitedEarly { what: &'static str, status: ExitStatus, log: PathBuf },
    #[error("{what} was not ready after {after:?} (see {})", log.display())]
    NotReady { what: &'static str, after: Duration, log: PathBuf },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

impl Error {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

/// Opens `path` for appending, creating it (logs and timelines survive restarts).
pub fn append(path: &Path) -> Result<File, Error> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(Error::io(format!("open {}", path.display())))
}
