//! The run's processes: one coordinator (restarted on the same database and address after
//! each kill) and W workers (a killed worker is replaced by a new process in its place). Every
//! worker generation gets its own `ORCA_CHAOS_TAG=<run>:w<i>g<generation>`, which its
//! supervisors and agents inherit: the tag, not the pid, is what says a process is ours.
//!
//! The harness's waits block, so the async run calls them under `block_in_place`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use orca_harness::{Coordinator, CoordinatorConfig, Worker, WorkerConfig, procfs};
use tokio::task::block_in_place;

use super::Args;
use super::agent::AgentFiles;

/// The environment variable that marks the run's processes.
pub const TAG: &str = "ORCA_CHAOS_TAG";

/// A SIGKILLed worker's tag, the ms until its processes were gone, and those left.
pub type OrphanCheck = (String, f64, Vec<(i32, String)>);

pub struct Procs {
    bin_dir: PathBuf,
    dir: PathBuf,
    run_id: String,
    agent_command: String,
    args: Args,
    coord: Coordinator,
    /// Each with its tag.
    workers: Vec<(Worker, String)>,
    generation: u32,
}

impl Procs {
    /// Starts the coordinator on a fresh port and `--workers` workers.
    pub fn start(args: &Args, bin_dir: PathBuf, dir: &Path, run_id: &str, agent: &AgentFiles) -> Result<Procs> {
        let a = args;
        let config = CoordinatorConfig::new(orca_harness::binary_in(&bin_dir, "orca-coordinator")?, dir)
            .args(&[
                "--lease-seconds",
                &a.lease_seconds.to_string(),
                "--max-lease-losses",
                &a.max_lease_losses.to_string(),
            ])
            .args(&["--durability", &a.durability])
            .log_filter(&a.log)
            .env("NO_COLOR", "1")
            .ready_within(Duration::from_secs(300));
        let coord = block_in_place(|| Coordinator::start(config))?;
        let mut procs = Procs {
            bin_dir,
            dir: dir.to_path_buf(),
            run_id: run_id.to_string(),
            agent_command: agent.command.clone(),
            args: args.clone(),
            coord,
            workers: Vec::new(),
            generation: 0,
        };
        for i in 0..args.workers {
            let w = procs.spawn_worker(i)?;
            procs.workers.push(w);
        }
        Ok(procs)
    }

    pub fn url(&self) -> String {
        self.coord.url()
    }

    /// SIGKILL of the coordinator.
    pub fn kill_coordinator(&mut self) {
        self.coord.kill();
    }

    /// Starts the coordinator again on the same database and address; the time to ready.
    pub fn restart_coordinator(&mut self) -> Result<Duration> {
        Ok(block_in_place(|| self.coord.restart_same_port())?)
    }

    /// SIGKILL of worker `i`; returns its tag.
    pub fn kill_worker(&mut self, i: usize) -> String {
        let (w, tag) = &mut self.workers[i];
        w.kill();
        tag.clone()
    }

    /// A new worker process in place `i`.
    pub fn replace_worker(&mut self, i: usize) -> Result<()> {
        self.workers[i] = self.spawn_worker(i)?;
        Ok(())
    }

    fn spawn_worker(&mut self, i: usize) -> Result<(Worker, String)> {
        self.generation += 1;
        let tag = format!("{}:w{i}g{}", self.run_id, self.generation);
        let a = &self.args;
        let config = WorkerConfig {
            binary: orca_harness::binary_in(&self.bin_dir, "orca-worker")?,
            coordinator: self.coord.url(),
            name: format!("chaos-w{i}g{}", self.generation),
            work_dir: self.dir.join("work").join(format!("w{i}")),
            log: self.dir.join(format!("worker{i}.log")),
            args: ["--slots", &a.slots.to_string(), "--agent", "command", "--agent-command", &self.agent_command]
                .into_iter()
                .chain(["--grace-seconds", &a.grace_seconds.to_string()])
                .map(str::to_string)
                .collect(),
            log_filter: a.log.clone(),
            env: vec![("NO_COLOR".into(), "1".into()), (TAG.into(), tag.clone())],
        };
        let w = Worker::start(config).context("start orca-worker")?;
        Ok((w, tag))
    }

    /// SIGTERM to every worker, bounded wait; a complaint for each that did not exit 0.
    pub fn stop_workers(&mut self) -> Vec<String> {
        let bound = Duration::from_secs(self.args.grace_seconds + 30);
        let statuses = block_in_place(|| {
            orca_harness::process::terminate_all(self.workers.iter_mut().map(|w| &mut w.0.child), bound)
        });
        let mut complaints = Vec::new();
        for (i, ((_, tag), st)) in self.workers.iter().zip(statuses).enumerate() {
            match st {
                Some(st) if st.success() => {}
                Some(st) => complaints.push(format!("worker {i} ({tag}) exited with {st}")),
                None => {
                    complaints.push(format!("worker {i} ({tag}) still running {} s after SIGTERM", bound.as_secs()))
                }
            }
        }
        complaints
    }

    /// SIGTERM to the coordinator; empty when it exited 0, else what happened.
    pub fn stop_coordinator(&mut self) -> String {
        let bound = Duration::from_secs(60);
        match block_in_place(|| self.coord.terminate(bound)) {
            Some(st) if st.success() => String::new(),
            Some(st) => format!("coordinator exited with {st} on SIGTERM"),
            None => {
                self.coord.kill();
                format!("coordinator still running {} s after SIGTERM", bound.as_secs())
            }
        }
    }
}

/// Live processes whose tag is `tag`, or starts with it when `prefix`: (pid, command line).
pub fn tagged(tag: &str, prefix: bool) -> Vec<(i32, String)> {
    procfs::with_env(TAG, |t| if prefix { t.starts_with(tag) } else { t == tag })
}

/// Blocks until no process of a killed worker's generation is left, for at most 10 s.
pub fn wait_orphans_gone(tag: String) -> OrphanCheck {
    let t0 = Instant::now();
    loop {
        let left = tagged(&tag, false);
        if left.is_empty() || t0.elapsed() > Duration::from_secs(10) {
            return (tag, t0.elapsed().as_secs_f64() * 1e3, left);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Recorded agent pids that are still one of ours: the same task id and the run's tag in the
/// environment (pids are reused over a long run, so a live pid alone proves nothing).
pub fn recorded_still_running(records: &Path, run_id: &str) -> Vec<i32> {
    super::agent::recorded_pids(records)
        .into_iter()
        .filter(|(pid, task)| {
            procfs::env_var(*pid, "ORCA_TASK_ID").as_deref() == Some(task.as_str())
                && procfs::env_var(*pid, TAG).is_some_and(|t| t.starts_with(run_id))
        })
        .map(|(pid, _)| pid)
        .collect()
}
