//! The run's printout: one row per figure (the same rows as JSON with `--json`), the
//! violations with examples, and the verdict line `orca-chaos: PASS` or `FAIL`.

use anyhow::Result;
use serde_json::{Value, json};

use super::check::{Counts, Evidence, Violations};

/// What the report shows besides the evidence: the seed and what the checks found.
pub struct Outcome<'a> {
    pub seed: u64,
    pub counts: &'a Counts,
    pub violations: &'a Violations,
}

/// (min, max) of the figures, (0, 0) when there are none.
fn span(v: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let min = v.clone().fold(f64::INFINITY, f64::min);
    (if min.is_finite() { min } else { 0.0 }, v.fold(0.0, f64::max))
}

fn rows(e: &Evidence, o: &Outcome) -> Vec<(&'static str, String)> {
    let (n, fig, runs) = (o.counts, e.fig, &e.records.runs);
    let agent_runs: usize = runs.values().map(Vec::len).sum();
    let killed_runs = runs.values().flatten().filter(|r| r.end.is_none()).count();
    let repeated_ok = runs.values().filter(|rs| rs.iter().filter(|r| r.succeeded()).count() > 1).count();
    let mut restart = fig.restart_ms.clone();
    restart.sort_by(|a, b| a.total_cmp(b));
    let median = restart.get(restart.len() / 2).copied().unwrap_or(0.0);
    let max = restart.last().copied().unwrap_or(0.0);
    let clear_max = fig.orphan_checks.iter().map(|c| c.1).fold(0.0, f64::max);
    let orphans: usize = fig.orphan_checks.iter().map(|c| c.2.len()).sum();
    let (kp_min, kp_max) = span(fig.kill_progress.iter().copied());
    vec![
        ("tasks in the job (database)", e.db.tasks.len().to_string()),
        ("acknowledged", n.acked.to_string()),
        ("committed without an answer (retried batches)", n.unacked_committed.to_string()),
        ("AddTasks calls without an answer", e.ledger.unanswered.len().to_string()),
        ("completed", n.completed.to_string()),
        ("failed on purpose", n.failed_on_purpose.to_string()),
        ("failed: dead letter (lost leases)", n.dead_lettered.to_string()),
        ("failed otherwise", n.failed_other.to_string()),
        ("cancelled (dependents of failures)", n.cancelled.to_string()),
        ("coordinator kills", fig.coordinator_kills.to_string()),
        ("worker kills", fig.worker_kills.to_string()),
        ("kills between (share of tasks final)", format!("{:.0}%-{:.0}%", kp_min * 100.0, kp_max * 100.0)),
        ("coordinator restart to ready, median / max", format!("{median:.0} / {max:.0} ms")),
        ("attempts dispatched (sum of attempt)", n.attempts.to_string()),
        ("agent runs (records)", agent_runs.to_string()),
        ("re-runs (runs beyond the first per task)", (agent_runs - runs.len()).to_string()),
        ("agent runs killed before their end", killed_runs.to_string()),
        ("tasks whose agent succeeded more than once", repeated_ok.to_string()),
        ("lease losses (sum of lost_leases)", n.lease_losses.to_string()),
        ("WatchJob events / snapshots / streams", format!("{} / {} / {}", e.ws.events, e.ws.snapshots, e.ws.streams)),
        ("lost", n.lost.to_string()),
        ("doubled", n.doubled.len().to_string()),
        ("leftover processes", (fig.leftover.len() + fig.leftover_recorded.len()).to_string()),
        ("orphans after worker kills (max time to clear)", format!("{orphans} ({clear_max:.0} ms)")),
        ("duration (last kill to all final)", format!("{:.1} s ({:.1} s)", fig.run_s, fig.drain_s)),
        ("violations", o.violations.total().to_string()),
    ]
}

/// Prints the report; true when the run passed.
pub fn print(e: &Evidence, o: &Outcome) -> Result<bool> {
    let rows = rows(e, o);
    let v = &o.violations.0;
    println!(
        "\norca-chaos (seed {}; {} workers x {} slots, lease {} s)",
        o.seed, e.args.workers, e.args.slots, e.args.lease_seconds
    );
    for (k, val) in &rows {
        println!("  {k:<48} {val}");
    }
    if !v.is_empty() {
        println!("\nVIOLATIONS");
        for (what, (n, ex)) in v {
            println!("  {what}: {n}");
            for e in ex {
                println!("      {e}");
            }
        }
    }
    if e.args.json {
        let mut out: serde_json::Map<String, Value> = rows.iter().map(|(k, val)| (k.to_string(), json!(val))).collect();
        out.insert("seed".into(), json!(o.seed));
        let details = v.iter().map(|(what, (n, ex))| (what.to_string(), json!({"count": n, "examples": ex})));
        out.insert("violation_details".into(), Value::Object(details.collect()));
        println!("{}", serde_json::to_string_pretty(&Value::Object(out))?);
    }
    println!("\norca-chaos: {}", if v.is_empty() { "PASS" } else { "FAIL" });
    Ok(v.is_empty())
}
