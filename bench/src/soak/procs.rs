//! One phase's processes: a release `orca-coordinator` on a fresh database in the phase's
//! directory and `--workers` `orca-worker --agent noop` processes, all through
//! `orca-harness`; and the sampler that reads the coordinator's RSS from /proc every 200 ms
//! and notices when it dies.
//!
//! What stays true here: every process started here is stopped (SIGTERM, bounded wait, then
//! SIGKILL) by [`Stack::stop`] or, on an early return, by the harness handles' `Drop`. The
//! harness's waits block, so they run under `block_in_place`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use orca_harness::procfs::{alive, rss_mib};
use orca_harness::{Coordinator, CoordinatorConfig, Worker, WorkerConfig};
use tokio::task::block_in_place;

/// How often the coordinator's RSS is read.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// Bound on a process's exit after SIGTERM.
const STOP_WITHIN: Duration = Duration::from_secs(60);

pub struct Stack {
    pub coord: Coordinator,
    workers: Vec<Worker>,
}

impl Stack {
    /// The coordinator on a fresh database in `dir`, then the workers.
    pub fn start(dir: &Path, workers: usize, slots: u32) -> Result<Stack> {
        let bin = orca_harness::binary_dir()?;
        let config = CoordinatorConfig::new(orca_harness::binary_in(&bin, "orca-coordinator")?, dir)
            .log_filter("warn")
            .env("NO_COLOR", "1")
            .ready_within(Duration::from_secs(120));
        let coord = block_in_place(|| Coordinator::start(config))?;
        let worker_bin = orca_harness::binary_in(&bin, "orca-worker")?;
        let mut ws = Vec::new();
        for i in 0..workers {
            ws.push(Worker::start(WorkerConfig {
                binary: worker_bin.clone(),
                coordinator: coord.url(),
                name: format!("soak{i}"),
                work_dir: dir.join(format!("work{i}")),
                log: dir.join(format!("worker{i}.log")),
                args: ["--slots", &slots.to_string(), "--agent", "noop"].map(str::to_string).to_vec(),
                log_filter: "warn".into(),
                env: vec![("NO_COLOR".into(), "1".into())],
            })?);
        }
        Ok(Stack { coord, workers: ws })
    }

    pub fn url(&self) -> String {
        self.coord.url()
    }

    /// SIGTERM to the workers, then to the coordinator; what went wrong, if anything (the
    /// coordinator must exit 0: docs/contract.md, "SIGTERM or SIGINT").
    pub fn stop(mut self) -> Vec<String> {
        let mut complaints = Vec::new();
        let statuses = block_in_place(|| {
            orca_harness::process::terminate_all(self.workers.iter_mut().map(|w| &mut w.child), STOP_WITHIN)
        });
        for (i, st) in statuses.iter().enumerate() {
            if !st.is_some_and(|s| s.success()) {
                complaints.push(format!("worker {i} did not exit 0 on SIGTERM: {st:?}"));
            }
        }
        if let Ok(Some(st)) = self.coord.child.try_wait() {
            complaints.push(format!("the coordinator had already exited: {st}"));
            return complaints;
        }
        let t0 = Instant::now();
        match block_in_place(|| self.coord.terminate(STOP_WITHIN)) {
            Some(st) if st.success() => {}
            Some(st) => complaints.push(format!("the coordinator exited with {st} on SIGTERM")),
            None => complaints.push(format!("the coordinator was still running {STOP_WITHIN:?} after SIGTERM")),
        }
        if t0.elapsed() > Duration::from_secs(10) {
            complaints.push(format!("the coordinator took {:.1} s to stop on SIGTERM", t0.elapsed().as_secs_f64()));
        }
        complaints
    }
}

/// What the sampler saw.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    /// Highest VmRSS read, MiB.
    pub peak_rss: f64,
    /// VmHWM at the last read (the kernel's own peak, between samples too), MiB.
    pub hwm: f64,
    pub count: u64,
    /// Seconds into the phase when the coordinator was first seen gone.
    pub died_at: Option<f64>,
}

/// Reads the coordinator's memory every [`SAMPLE_EVERY`] until stopped.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Samples>,
}

impl Sampler {
    pub fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let (t0, mut s) = (Instant::now(), Samples::default());
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            while !flag.load(Ordering::SeqCst) {
                tick.tick().await;
                if !alive(pid as i32) {
                    s.died_at.get_or_insert(t0.elapsed().as_secs_f64());
                    continue;
                }
                let (rss, hwm) = rss_mib(pid);
                s.peak_rss = s.peak_rss.max(rss);
                s.hwm = s.hwm.max(hwm);
                s.count += 1;
            }
            s
        });
        Sampler { stop, task }
    }

    /// Stops sampling; what was seen.
    pub async fn finish(self) -> Samples {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap_or_default()
    }
}
