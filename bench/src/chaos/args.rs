//! The chaos run's flags (`orca-chaos --help`). `scripts/chaos.sh` passes its own sizes
//! first and the caller's flags after them, so a later flag wins (`args_override_self`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "orca-chaos",
    about = "Orca's chaos run: tasks under coordinator and worker SIGKILLs (docs/resilience.md)",
    args_override_self = true
)]
pub struct Args {
    /// Tasks to submit (acknowledged ones; a batch whose answer was lost is sent again).
    #[arg(long, default_value_t = 100_000)]
    pub tasks: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Slots per worker.
    #[arg(long, default_value_t = 8)]
    pub slots: u32,
    /// SIGKILLs of the coordinator.
    #[arg(long, default_value_t = 10)]
    pub coordinator_kills: usize,
    /// SIGKILLs of workers.
    #[arg(long, default_value_t = 50)]
    pub worker_kills: usize,
    /// The coordinator's --lease-seconds.
    #[arg(long, default_value_t = 3)]
    pub lease_seconds: u32,
    /// The coordinator's --max-lease-losses (dead letter after that many lost leases).
    #[arg(long, default_value_t = 3)]
    pub max_lease_losses: u32,
    /// The coordinator's --durability.
    #[arg(long, default_value = "full")]
    pub durability: String,
    /// Tasks per AddTasks batch.
    #[arg(long, default_value_t = 200)]
    pub batch: usize,
    /// Most tasks submitted but not final at a time (spreads submission over the run, so that
    /// coordinator kills also hit AddTasks calls).
    #[arg(long, default_value_t = 1_000)]
    pub window: u64,
    /// The workers' --grace-seconds (used by the final SIGTERM).
    #[arg(long, default_value_t = 10)]
    pub grace_seconds: u64,
    /// Bound on the whole run in seconds (0: 900 + tasks / 20).
    #[arg(long, default_value_t = 0)]
    pub deadline_seconds: u64,
    /// Seed of the task mix and the kill schedule (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Directory of orca-coordinator and orca-worker (default: this executable's).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Run directory (database, logs, agent records); default a temporary one, kept on failure.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the temporary run directory even when the run passes.
    #[arg(long)]
    pub keep: bool,
    /// ORCA_LOG of the coordinator and workers.
    #[arg(long, default_value = "info")]
    pub log: String,
    /// Also print the results as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    /// Negative control: before checking, raise the stored attempt of N completed tasks, as if
    /// the coordinator had accepted a stale attempt's result. The run must then FAIL.
    #[arg(long, default_value_t = 0, hide = true)]
    pub tamper_fencing: usize,
}

// ---------------------------------------------------------------------------------------------
// Small helpers

impl Args {
    /// The seed of the task mix and the kill schedule.
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
        })
    }

    /// Bound on the whole run.
    pub fn deadline(&self) -> Duration {
        Duration::from_secs(if self.deadline_seconds > 0 {
            self.deadline_seconds
        } else {
            900 + self.tasks as u64 / 20
        })
    }
}
