//! `orca-soak`: a normal workload alone, then the same workload beside a hostile mix of
//! calls that each stay within the documented limits (docs/resilience.md, "Soak: hostile
//! calls beside a normal workload"). Each phase runs against one fresh release coordinator
//! and `--workers` noop workers started through `orca-harness`, and measures the normal
//! tasks' submit-to-start times (p50 / p99 / max) and the coordinator's peak RSS.
//!
//! Layout: [`args`] (flags), [`phase`] (one phase: processes, warm-up, workload, stop),
//! [`procs`] (the processes and the RSS sampler), [`normal`] (the timed workload),
//! [`hostile`] (the ten kinds of hostile calls), [`tally`] (codes counted, findings),
//! [`conn`] (one HTTP/2 connection per part), [`report`] (table and JSON).
//!
//! What stays true here: the exit status is 0 only when neither phase had a failure (see
//! [`phase`]); 1 when one did, with each failure printed; 2 when a phase could not be run
//! at all. The run directory is kept whenever the run did not pass.

mod args;
mod conn;
mod hostile;
mod normal;
mod phase;
mod procs;
mod report;
mod tally;

pub use args::Args;

/// The phases, in order: (name, with the hostile mix, directory).
const PHASES: [(&str, bool, &str); 2] = [("normal alone", false, "normal"), ("beside hostile", true, "hostile")];

/// Runs both phases, prints the table (and writes `--out`); the exit status.
pub async fn main(args: Args) -> i32 {
    let args = args.sized();
    let tmp = match tempfile::Builder::new().prefix("orca-soak-").tempdir() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("orca-soak: cannot make a temporary directory: {e}");
            return 2;
        }
    };
    let root = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let mut phases = Vec::new();
    for (name, hostile, sub) in PHASES {
        eprintln!("orca-soak: phase {name:?}, {:.0} s, in {}", args.phase().as_secs_f64(), root.join(sub).display());
        match phase::run(&args, name, hostile, &root.join(sub)).await {
            Ok(p) => phases.push(p),
            Err(e) => {
                eprintln!("orca-soak: the phase {name:?} could not run: {e:#}; see {}", root.display());
                let _ = tmp.keep();
                return 2;
            }
        }
    }
    report::print(&args, &phases);
    if let Some(out) = &args.out {
        let text = serde_json::to_string_pretty(&report::json(&args, &phases)).unwrap_or_default();
        if let Err(e) = std::fs::write(out, text + "\n") {
            eprintln!("orca-soak: cannot write {}: {e}", out.display());
            return 2;
        }
    }
    if phases.iter().all(|p| p.failures.is_empty()) {
        0
    } else {
        eprintln!("orca-soak: the run directory is kept: {}", root.display());
        let _ = tmp.keep();
        1
    }
}
