//! The soak run's flags (`orca-soak --help`). `scripts/soak.sh` passes the caller's flags
//! through; a later flag wins (`args_override_self`). Every size of the hostile mix that
//! is a contract limit comes from `orca_proto::contract::limits`, not from here.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "orca-soak",
    about = "Orca's soak: a normal workload alone, then beside a hostile mix of calls within the limits \
             (docs/resilience.md)",
    args_override_self = true
)]
pub struct Args {
    /// Minutes of measuring, split evenly between the two phases.
    #[arg(long, default_value_t = 3.0)]
    pub minutes: f64,
    /// A ~30 s smoke run: 12 s per phase, smaller hostile sizes.
    #[arg(long)]
    pub quick: bool,
    /// Normal workload: single-task AddTasks calls per second.
    #[arg(long, default_value_t = 50)]
    pub rate: u32,
    /// Priority of the normal tasks. The default is one above the contract's default, which
    /// every hostile task has: the normal tasks then measure how fast the coordinator
    /// dispatches, not how long the hostile backlog is (dispatch is FIFO at equal priority).
    #[arg(long, default_value_t = orca_proto::contract::defaults::PRIORITY + 1, allow_hyphen_values = true)]
    pub priority: i32,
    /// `orca-worker --agent noop` processes.
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
    /// Slots per worker.
    #[arg(long, default_value_t = 128)]
    pub slots: u32,
    /// Register calls of fresh worker ids over the hostile phase (quick: 2,000).
    #[arg(long, default_value_t = 20_000)]
    pub registrations: u64,
    /// Tasks of the job the watchers follow (quick: 20,000).
    #[arg(long, default_value_t = 100_000)]
    pub watch_job_tasks: usize,
    /// WatchJob followers that never read their stream.
    #[arg(long, default_value_t = 200)]
    pub watchers: usize,
    /// Raw TCP connections that never speak.
    #[arg(long, default_value_t = 500)]
    pub idle_connections: usize,
    /// Only these hostile kinds (numbers 1-10, comma-separated; default all), to find which
    /// one costs what.
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<u32>,
    /// Seconds the normal tasks get after the last submission to leave pending.
    #[arg(long, default_value_t = 30)]
    pub drain_seconds: u64,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Directory for databases and logs (default: a temporary one, kept on failure).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

impl Args {
    /// Applies `--quick`.
    pub fn sized(mut self) -> Args {
        if self.quick {
            self.minutes = 0.4;
            self.registrations = self.registrations.min(2_000);
            self.watch_job_tasks = self.watch_job_tasks.min(20_000);
        }
        self
    }

    /// Whether hostile kind `n` runs.
    pub fn wants(&self, n: u32) -> bool {
        self.kinds.is_empty() || self.kinds.contains(&n)
    }

    /// Length of each phase.
    pub fn phase(&self) -> Duration {
        Duration::from_secs_f64((self.minutes * 60.0 / 2.0).max(1.0))
    }
}
