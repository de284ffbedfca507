//! The run itself: start the processes, submit, kill on schedule, wait until every task is
//! final, stop everything politely and collect what the checks need. The kill schedule is
//! drawn from the seed: each kill at a random share (2%-92%) of the tasks being final, plus
//! 0-400 ms of jitter; every kill is followed at once by a restart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use orca_proto::pb;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::procs::{self, OrphanCheck, Procs};
use super::rng::Rng;
use super::submit::{self, Ledger, Shared};
use super::watch::{self, WatchState};
use super::{Args, agent, log};

/// What the run measured and saw, besides the database and the records.
#[derive(Default)]
pub struct Figures {
    pub coordinator_kills: usize,
    pub worker_kills: usize,
    pub restart_ms: Vec<f64>,
    /// Final tasks at each kill, as a share of the tasks.
    pub kill_progress: Vec<f64>,
    /// Per worker kill: (tag, ms until its processes were gone, leftover pids).
    pub orphan_checks: Vec<OrphanCheck>,
    pub worker_exit: Vec<String>,
    pub coordinator_exit: String,
    pub leftover: Vec<(i32, String)>,
    pub leftover_recorded: Vec<i32>,
    /// The coordinator's GetJob answer once every task was final.
    pub final_status: Option<pb::JobStatus>,
    pub run_s: f64,
    pub drain_s: f64,
    pub timed_out: bool,
}

#[derive(Clone, Copy)]
enum KillWhat {
    Coordinator,
    Worker,
}

/// (number of final tasks at which to kill, what), in order.
fn kill_schedule(args: &Args, rng: &mut Rng) -> Vec<(u64, KillWhat)> {
    let n = args.tasks as f64;
    let mut at = |what| ((n * (0.02 + 0.90 * rng.frac())) as u64, what);
    let mut schedule: Vec<(u64, KillWhat)> = (0..args.coordinator_kills).map(|_| at(KillWhat::Coordinator)).collect();
    schedule.extend((0..args.worker_kills).map(|_| at(KillWhat::Worker)));
    schedule.sort_by_key(|k| k.0);
    schedule
}

/// Everything the run keeps while it goes.
pub struct Run {
    pub args: Args,
    pub seed: u64,
    pub run_id: String,
    pub records: PathBuf,
    pub job: String,
    pub url: String,
    pub start: Instant,
    procs: Procs,
    pub sh: Arc<Shared>,
    pub ledger: Arc<Mutex<Ledger>>,
    pub ws: Arc<Mutex<WatchState>>,
    pub fig: Figures,
    rng: Rng,
    timeline: std::fs::File,
    orphan_tasks: Vec<JoinHandle<OrphanCheck>>,
}

impl Run {
    /// Checks the set-up, writes the agent, starts the processes and creates the job.
    pub async fn start(args: Args, dir: &Path) -> Result<Run> {
        let start = Instant::now();
        let seed = args.seed();
        let bin_dir = match &args.bin_dir {
            Some(d) => d.clone(),
            None => orca_harness::binary_dir()?,
        };
        for b in ["orca-coordinator", "orca-worker"] {
            orca_harness::binary_in(&bin_dir, b)?;
        }
        if args.workers == 0 || args.tasks == 0 || args.batch == 0 {
            bail!("--workers, --tasks and --batch must be positive");
        }
        std::fs::create_dir_all(dir)?;
        let agent = agent::write(dir)?;
        let run_id = format!("chaos-{}-{seed:x}", std::process::id());
        log(
            start,
            &format!(
                "seed {seed}; {} tasks, {} workers x {} slots, {} coordinator kills, {} worker kills, lease {} s; dir {}",
                args.tasks,
                args.workers,
                args.slots,
                args.coordinator_kills,
                args.worker_kills,
                args.lease_seconds,
                dir.display()
            ),
        );
        let procs = Procs::start(&args, bin_dir, dir, &run_id, &agent)?;
        let url = procs.url();
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let job = submit::create_job(&url, &ledger).await?;
        log(start, &format!("job {job} at {url}"));
        Ok(Run {
            rng: Rng::new(seed.rotate_left(17)),
            timeline: orca_harness::append(&dir.join("kills.log"))?,
            args,
            seed,
            run_id,
            records: agent.records,
            job,
            url,
            start,
            procs,
            sh: Arc::new(Shared::default()),
            ledger,
            ws: Arc::new(Mutex::new(WatchState::default())),
            fig: Figures::default(),
            orphan_tasks: Vec::new(),
        })
    }

    fn progress(&self) -> String {
        let s = self.sh.status();
        format!(
            "final {}/{} (waiting {} pending {} running {}), acked {}, kills: coordinator {}/{}, workers {}/{}",
            s.completed + s.failed + s.cancelled,
            s.total_tasks,
            s.waiting,
            s.pending,
            s.in_progress,
            self.sh.acked_tasks.load(Ordering::SeqCst),
            self.fig.coordinator_kills,
            self.args.coordinator_kills,
            self.fig.worker_kills,
            self.args.worker_kills
        )
    }

    /// Submits, kills on schedule and waits until everything is final (or the deadline).
    pub async fn drive(&mut self) -> Result<()> {
        let watch_task =
            tokio::spawn(watch::watcher(self.url.clone(), self.job.clone(), self.sh.clone(), self.ws.clone()));
        let monitor_task = tokio::spawn(submit::monitor(self.url.clone(), self.job.clone(), self.sh.clone()));
        let (url, job, args) = (self.url.clone(), self.job.clone(), self.args.clone());
        let mut submit_task =
            Some(tokio::spawn(submit::submitter(url, job, args, self.seed, self.sh.clone(), self.ledger.clone())));
        let result = self.kill_and_wait(&mut submit_task).await;
        self.fig.run_s = self.start.elapsed().as_secs_f64();
        log(self.start, &format!("done: {}", self.progress()));
        self.catch_up_watch().await;
        self.sh.stop.store(true, Ordering::SeqCst);
        if let Some(t) = submit_task.take() {
            t.abort();
        }
        let _ = monitor_task.await;
        let _ = tokio::time::timeout(Duration::from_secs(5), watch_task).await;
        for t in std::mem::take(&mut self.orphan_tasks) {
            self.fig.orphan_checks.push(t.await?);
        }
        result
    }

    /// The main loop; returns the submitter's error, if it failed.
    async fn kill_and_wait(&mut self, submit_task: &mut Option<JoinHandle<Result<()>>>) -> Result<()> {
        let schedule = kill_schedule(&self.args, &mut self.rng);
        let (deadline, mut last_report, mut last_kill) = (self.args.deadline(), Instant::now(), self.start);
        let mut next = schedule.iter().peekable();
        loop {
            if self.start.elapsed() > deadline {
                self.fig.timed_out = true;
                log(self.start, &format!("deadline passed: {}", self.progress()));
                break;
            }
            if last_report.elapsed() > Duration::from_secs(5) {
                log(self.start, &self.progress());
                last_report = Instant::now();
            }
            if submit_task.as_ref().is_some_and(JoinHandle::is_finished) {
                submit_task.take().unwrap().await?.context("submission failed")?;
            }
            if let Some(&&(at, what)) = next.peek() {
                if self.sh.final_tasks.load(Ordering::SeqCst) >= at {
                    self.kill(what).await?;
                    last_kill = Instant::now();
                    next.next();
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                continue;
            }
            if self.all_final().await? {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.fig.drain_s = last_kill.elapsed().as_secs_f64();
        Ok(())
    }

    /// Every kill done and everything submitted final, confirmed by a fresh GetJob.
    async fn all_final(&mut self) -> Result<bool> {
        let s = self.sh.status();
        let open = |s: &pb::JobStatus| s.waiting + s.pending + s.in_progress;
        if !self.sh.submit_done.load(Ordering::SeqCst)
            || open(&s) != 0
            || s.total_tasks < self.sh.acked_tasks.load(Ordering::SeqCst)
        {
            return Ok(false);
        }
        let mut c = submit::client(&self.url, Some(Duration::from_secs(30)))?;
        match submit::job_status(&mut c, &self.job).await {
            Ok(s) if open(&s) == 0 => {
                self.fig.final_status = Some(s);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Lets the watch stream see the job finish (the event that made the last task final),
    /// for at most 10 s, so that its view can be held to the database.
    async fn catch_up_watch(&self) {
        let Some(status) = self.fig.final_status.clone() else { return };
        let t0 = Instant::now();
        while !self.ws.lock().await.caught_up(&status) && t0.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn kill(&mut self, what: KillWhat) -> Result<()> {
        tokio::time::sleep(self.rng.millis(400)).await;
        let share = self.sh.final_tasks.load(Ordering::SeqCst) as f64 / self.args.tasks as f64;
        self.fig.kill_progress.push(share);
        match what {
            KillWhat::Coordinator => self.kill_coordinator(share).await,
            KillWhat::Worker => self.kill_worker(share).await,
        }
    }

    async fn kill_coordinator(&mut self, share: f64) -> Result<()> {
        // Every other coordinator kill lands while an AddTasks call is in flight (when one
        // comes within 3 s), so that answers get lost around commits.
        if self.fig.coordinator_kills % 2 == 1 && !self.sh.submit_done.load(Ordering::SeqCst) {
            let t0 = Instant::now();
            while !self.sh.adding.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(3) {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            tokio::time::sleep(self.rng.millis(3)).await;
        }
        let during_add = self.sh.adding.load(Ordering::SeqCst);
        self.procs.kill_coordinator();
        self.fig.coordinator_kills += 1;
        tokio::time::sleep(self.rng.millis(500)).await;
        let took = self.procs.restart_coordinator()?;
        self.fig.restart_ms.push(took.as_secs_f64() * 1e3);
        writeln!(
            self.timeline,
            "{:.3} coordinator kill at {:.1}% final{}; up again in {:.0} ms",
            self.start.elapsed().as_secs_f64(),
            share * 100.0,
            if during_add { " (AddTasks in flight)" } else { "" },
            took.as_secs_f64() * 1e3
        )?;
        Ok(())
    }

    async fn kill_worker(&mut self, share: f64) -> Result<()> {
        let w = self.rng.below(self.args.workers as u64) as usize;
        let tag = self.procs.kill_worker(w);
        self.fig.worker_kills += 1;
        let check_tag = tag.clone();
        self.orphan_tasks.push(tokio::task::spawn_blocking(move || procs::wait_orphans_gone(check_tag)));
        tokio::time::sleep(self.rng.millis(300)).await;
        self.procs.replace_worker(w)?;
        writeln!(
            self.timeline,
            "{:.3} worker {w} kill ({tag}) at {:.1}% final",
            self.start.elapsed().as_secs_f64(),
            share * 100.0
        )?;
        Ok(())
    }

    /// Stops the workers (SIGTERM: they exit 0 and leave nothing behind), looks for leftovers,
    /// then stops the coordinator.
    pub async fn stop(&mut self) {
        log(self.start, "stopping the workers (SIGTERM)");
        self.fig.worker_exit = self.procs.stop_workers();
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.fig.leftover = procs::tagged(&format!("{}:", self.run_id), true);
        self.fig.leftover_recorded = procs::recorded_still_running(&self.records, &self.run_id);
        log(self.start, "stopping the coordinator (SIGTERM)");
        self.fig.coordinator_exit = self.procs.stop_coordinator();
    }
}
