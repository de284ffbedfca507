//! One phase of the soak: fresh processes, a warm-up task, then the normal workload for the
//! phase's length, with the hostile mix beside it when asked, the RSS sampler the whole
//! time, and the processes stopped with SIGTERM at the end.
//!
//! What stays true here: a phase's failures are everything the run must exit non-zero for:
//! a normal call that failed, a normal task still pending after the drain, any unexpected
//! hostile outcome, the coordinator dying, or its not exiting 0 on SIGTERM.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use orca_proto::pb;

use super::hostile::{self, Ctx};
use super::normal::{self, Normal};
use super::procs::{Sampler, Samples, Stack};
use super::tally::{Counts, Tally};
use super::{Args, conn};

/// Lines of the coordinator's log quoted when it logged errors or died.
const LOG_LINES: usize = 8;

pub struct Phase {
    pub name: &'static str,
    pub hostile: bool,
    pub seconds: f64,
    pub normal: Normal,
    pub rss: Samples,
    pub counts: Counts,
    pub notes: std::collections::BTreeMap<String, String>,
    pub failures: Vec<String>,
}

/// Runs one phase in `dir` (its database and logs stay there).
pub async fn run(args: &Args, name: &'static str, hostile: bool, dir: &Path) -> Result<Phase> {
    let stack = Stack::start(dir, args.workers, args.slots)?;
    let url = stack.url();
    warm_up(&url).await?;
    let sampler = Sampler::start(stack.coord.pid());
    let (len, tally) = (args.phase(), Arc::new(Tally::default()));
    let t0 = Instant::now();
    let mix = hostile.then(|| {
        let ctx = Ctx {
            url: url.clone(),
            addr: stack.coord.addr.clone(),
            deadline: t0 + len,
            len,
            args: args.clone(),
            tally: tally.clone(),
        };
        tokio::spawn(hostile::run(Arc::new(ctx)))
    });
    let drain = Duration::from_secs(args.drain_seconds);
    let normal = normal::run(&url, len, args.rate, args.priority, drain).await;
    if let Some(h) = mix {
        let _ = h.await;
    }
    let rss = sampler.finish().await;
    let seconds = t0.elapsed().as_secs_f64();
    let mut failures = Vec::new();
    let normal = normal.unwrap_or_else(|e| {
        failures.push(format!("the normal workload could not run: {e:#}"));
        Normal::default()
    });
    failures.extend(normal.errors.iter().cloned());
    if let Some(t) = rss.died_at {
        failures.push(format!("the coordinator died {t:.1} s into the phase"));
    }
    let log = stack.coord.dir.join("coordinator.log");
    failures.extend(stack.stop());
    let (counts, findings, unexpected, mut notes) = tally.snapshot();
    if unexpected > 0 {
        failures.push(format!("{unexpected} unexpected outcomes of hostile calls; the first ones:"));
        failures.extend(findings.into_iter().map(|f| format!("  {f}")));
    }
    log_errors(&log, &mut notes, &mut failures);
    Ok(Phase { name, hostile, seconds, normal, rss, counts, notes, failures })
}

/// One task through the noop workers, so that the workload starts on a connected pool.
async fn warm_up(url: &str) -> Result<()> {
    let mut c = conn::orchestrator(url)?;
    let req = pb::CreateJobRequest { description: "orca-soak warm-up".into(), ..Default::default() };
    let job = c.create_job(req).await?.into_inner().job_id;
    let spec = pb::TaskSpec { prompt: "warm-up".into(), ..Default::default() };
    c.add_tasks(pb::AddTasksRequest { job_id: job.clone(), tasks: vec![spec], ..Default::default() }).await?;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(60) {
        let j = c.get_job(pb::GetJobRequest { job_id: job.clone() }).await?.into_inner();
        if j.status.is_some_and(|s| s.completed == 1) {
            // The other workers connect about as fast as the first one did.
            tokio::time::sleep(Duration::from_secs(1)).await;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("the warm-up task did not complete within 60 s")
}

/// The coordinator logs internal errors at ERROR (`impl From<Error> for Status`): any such
/// line is a failure, quoted.
fn log_errors(log: &Path, notes: &mut std::collections::BTreeMap<String, String>, failures: &mut Vec<String>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).collect();
    let warnings = text.lines().filter(|l| l.contains("WARN")).count();
    notes.insert("coordinator log: WARN lines".into(), warnings.to_string());
    if !errors.is_empty() {
        failures.push(format!(
            "the coordinator logged {} ERROR lines ({}); the first ones:",
            errors.len(),
            log.display()
        ));
        failures
            .extend(errors.iter().take(LOG_LINES).map(|l| format!("  {}", l.chars().take(400).collect::<String>())));
    }
}
