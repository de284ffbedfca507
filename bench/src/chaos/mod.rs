//! The chaos run (`orca-chaos`, docs/resilience.md). Runs N tasks (with dependency chains,
//! tasks that fail on purpose with their dependents, flaky tasks that fail their first
//! attempt, slow ones) through one `orca-coordinator` and W `orca-worker` processes
//! (`--agent command` running a small sh agent that records every attempt), while SIGKILLing
//! the coordinator K times and workers M times at random moments and restarting each at once
//! (the coordinator on the same database and address). At the end it stops everything and
//! checks, from the SQLite database (read with sqlx), the agents' records, a WatchJob stream
//! kept open the whole run and the coordinator's own counts:
//!
//! - every acknowledged task is in the database, with the prompt it was sent with, and final;
//! - a completed task's stored result was produced by an agent run of exactly the attempt the
//!   database holds (the agent prints its attempt), no attempt above it ever ran, no attempt
//!   ran twice, and WatchJob showed at most one completion per task: so a stale attempt's
//!   result accepted after a re-dispatch, or a second accepted completion, is caught;
//! - failures are the deliberate ones or dead letters (`--max-lease-losses`), dependents of
//!   failed tasks are cancelled (and never ran), dependents started after their dependencies'
//!   accepted runs ended;
//! - no agent process (nor supervisor) outlives its worker: after each worker SIGKILL and at
//!   the end (after SIGTERM), no process carries the run's environment tag;
//! - the job's counts equal its tasks, in the `jobs` row, in the coordinator's GetJob answer
//!   and in the last WatchJob event, and the stream's last view of every task is the state
//!   the database holds; `PRAGMA integrity_check` is ok; workers and the coordinator exit 0
//!   on SIGTERM.
//!
//! Layout, along the run: [`args`] (flags), `plan` (the task mix, carried in the prompts),
//! `agent` (the sh agent and its records), `procs` (the processes, through `orca-harness`),
//! `submit` (the job, AddTasks, the ledger of acknowledged calls), `watch` (the stream),
//! `run` (the kill schedule and the loop), `db` (the database), `check` (the invariants),
//! `report`. `rng` is the one seeded source of randomness.
//!
//! Exit status: 0 when every check passed, 1 on any violation, 2 when the run itself could
//! not be done.

mod agent;
pub mod args;
mod check;
mod db;
mod plan;
mod procs;
mod report;
mod rng;
mod run;
mod submit;
mod watch;

use std::path::Path;
use std::time::Instant;

use anyhow::Result;

pub use args::Args;

fn log(start: Instant, msg: &str) {
    eprintln!("orca-chaos [{:7.1}s] {msg}", start.elapsed().as_secs_f64());
}

/// Runs the chaos run with `args`; returns the process exit status.
pub async fn main(args: Args) -> i32 {
    let tmp = match &args.dir {
        Some(_) => None,
        None => match tempfile::Builder::new().prefix("orca-chaos-").tempdir() {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("orca-chaos: error: temporary directory: {e}");
                return 2;
            }
        },
    };
    let dir = args.dir.clone().unwrap_or_else(|| tmp.as_ref().unwrap().path().to_path_buf());
    let keep = args.keep;
    let code = match run(args, &dir).await {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("orca-chaos: error: {e:#}");
            2
        }
    };
    match tmp {
        Some(t) if code != 0 || keep => eprintln!("orca-chaos: run directory kept: {}", t.keep().display()),
        Some(_) => {}
        None => eprintln!("orca-chaos: run directory: {}", dir.display()),
    }
    code
}

/// The run, then the checks; true when they passed.
async fn run(args: Args, dir: &Path) -> Result<bool> {
    let mut r = run::Run::start(args, dir).await?;
    let driven = r.drive().await;
    r.stop().await;
    driven?;
    // The coordinator's --db: the file in `dir`, or its Postgres database.
    let db_path = orca_harness::CoordinatorConfig::new(Default::default(), dir).db();
    if r.args.tamper_fencing > 0 {
        let n = db::tamper_fencing(&db_path, &r.job, r.args.tamper_fencing).await?;
        eprintln!("orca-chaos: TAMPERED with {n} completed tasks; this run must fail");
    }
    let db = db::read(&db_path, &r.job).await?;
    let records = agent::read_records(&r.records)?;
    let ledger = std::mem::take(&mut *r.ledger.lock().await);
    let ws = std::mem::take(&mut *r.ws.lock().await);
    let evidence = check::Evidence {
        args: &r.args,
        job: &r.job,
        ledger: &ledger,
        ws: &ws,
        fig: &r.fig,
        db: &db,
        records: &records,
    };
    let (violations, counts) = check::check(&evidence);
    report::print(&evidence, &report::Outcome { seed: r.seed, counts: &counts, violations: &violations })
}
