//! Orca's worker: registers with the coordinator, receives tasks on its Listen stream, runs
//! each as a supervised agent process in a workspace, and reports the results.
//!
//! # Layout
//!
//! The modules follow the data path of a task:
//! - [`config`]: flags and `ORCA_*` variables, checked before anything connects;
//! - [`session`]: the connection to the coordinator (register, Listen stream, heartbeats,
//!   reports, reconnects), a thin shell that performs what [`session::state`] decides: the
//!   pure state machine of the attempts held, the report queue, the link's timers and the
//!   drain on SIGTERM (inputs in, effects out, no tokio or tonic);
//! - [`task`]: one attempt from assignment to final report;
//! - [`workspace`]: where a task runs, context files in, expected outputs out;
//! - [`git`]: tasks with a git source: mirrors, worktrees, the commit and its patch;
//! - [`prompt`]: the prompt the agent gets (shared context, files, outputs, task);
//! - [`agent`]: running a supervised process ([`agent::supervise`]: the per-task
//!   supervisor, a child subreaper that kills every descendant of the agent when its run ends
//!   or the worker dies), the Claude Code parser, the command template;
//! - [`verify`]: verification hooks after a successful run;
//! - [`upkeep`]: in the background, kept workspaces removed by age and size, the free disk
//!   space watched (a worker low on disk takes no work).

pub mod agent;
pub mod config;
pub mod git;
pub mod policy;
pub mod prompt;
pub mod session;
pub mod task;
pub mod upkeep;
pub mod verify;
pub mod workspace;

use std::path::PathBuf;
use std::sync::Arc;

pub use config::{Args, Config};

/// What every attempt needs to know about this worker.
#[derive(Debug)]
pub struct Ctx {
    pub config: Config,
    /// This worker's executable, re-run as the per-task supervisor.
    pub exe: PathBuf,
    /// Chosen once per process, kept across reconnects.
    pub worker_id: String,
    /// The fresh workspaces attempts use, which the sweep leaves alone.
    pub workspaces: Arc<workspace::InUse>,
    /// Asks the upkeep for a sweep soon (an attempt kept its workspace).
    pub sweep: tokio::sync::Notify,
    /// The token sent with every call, if any.
    pub bearer: session::Bearer,
    /// The bare mirrors of git sources, one lock each.
    pub mirrors: git::Mirrors,
}

/// A deadline for `tokio::time::sleep_until`: `at`, or a year from now for none (the select
/// branch it guards is disabled then anyway).
pub(crate) fn far(at: Option<std::time::Instant>) -> tokio::time::Instant {
    match at {
        Some(t) => t.into(),
        None => tokio::time::Instant::now() + std::time::Duration::from_secs(86_400 * 365),
    }
}

/// The executable to re-run as a supervisor: `/proc/self/exe` names this very binary even if
/// the file was replaced or removed since the worker started.
pub fn own_executable() -> std::io::Result<PathBuf> {
    let proc = PathBuf::from("/proc/self/exe");
    if proc.exists() { Ok(proc) } else { std::env::current_exe() }
}

/// Runs the worker until SIGTERM or SIGINT and the drain that follows.
pub async fn run(config: Config) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (sig_tx, sig_rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let sig = tokio::select! {
                _ = term.recv() => session::Signal::Terminate,
                _ = int.recv() => session::Signal::Interrupt,
            };
            if sig_tx.send(sig).await.is_err() {
                return;
            }
        }
    });
    run_with_signals(config, sig_rx).await
}

/// Runs the worker until a signal arrives on `signals` and the drain that follows (a second
/// one stops at once), for a process that runs workers beside other things (`orca up`).
/// The executable must answer `__orca_supervise` as `orca-worker` does (see
/// [`agent::supervise`]).
pub async fn run_with_signals(
    config: Config,
    signals: tokio::sync::mpsc::Receiver<session::Signal>,
) -> std::io::Result<()> {
    let exe = own_executable()?;
    let worker_id = config.new_worker_id();
    tracing::info!(
        worker = %worker_id,
        coordinator = %config.coordinator,
        slots = config.slots,
        agent = config.agent.name(),
        work_dir = %config.work_dir.display(),
        "worker starting"
    );
    let bearer = session::Bearer::new(config.token.as_deref()).map_err(std::io::Error::other)?;
    let ctx = Arc::new(Ctx {
        config,
        exe,
        worker_id,
        workspaces: Arc::default(),
        sweep: tokio::sync::Notify::new(),
        bearer,
        mirrors: git::Mirrors::default(),
    });
    session::run(ctx, signals).await;
    Ok(())
}
