//! What the soak prints (a phase table, the hostile calls by kind, call and code, the notes
//! and the failures) and the same figures as JSON for `--out`.
//!
//! What stays true here: the table and the JSON are built from the same [`Phase`] values;
//! nothing is measured here.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::Args;
use super::phase::Phase;

/// `OK 12, FAILED_PRECONDITION 3`.
fn codes(by_code: &BTreeMap<String, u64>) -> String {
    by_code.iter().map(|(c, n)| format!("{c} {n}")).collect::<Vec<_>>().join(", ")
}

fn hostile_summary(p: &Phase) -> String {
    if !p.hostile {
        return "-".into();
    }
    let calls: u64 = p.counts.values().flat_map(|c| c.values()).flat_map(|c| c.values()).sum();
    let kinds = p.counts.len();
    let verdict = if p.failures.is_empty() { "all as expected" } else { "see failures" };
    format!("{calls} calls in {kinds} kinds, {verdict}")
}

pub fn print(args: &Args, phases: &[Phase]) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "orca-soak on {cores} cores: {:.0} s a phase, {} normal AddTasks/s (priority {}), {} noop workers x {} slots\n",
        args.phase().as_secs_f64(),
        args.rate,
        args.priority,
        args.workers,
        args.slots
    );
    println!("| phase | normal p50 / p99 / max (ms) | tasks timed | peak RSS (MiB) | hostile calls |");
    println!("| --- | --- | --- | --- | --- |");
    for p in phases {
        let n = &p.normal;
        println!(
            "| {} | {:.2} / {:.2} / {:.1} | {} / {} | {:.0} (HWM {:.0}) | {} |",
            p.name,
            n.p50,
            n.p99,
            n.max,
            n.timed,
            n.submitted,
            p.rss.peak_rss,
            p.rss.hwm,
            hostile_summary(p)
        );
    }
    for p in phases.iter().filter(|p| p.hostile) {
        println!("\n| hostile kind | call | codes |\n| --- | --- | --- |");
        for (kind, calls) in &p.counts {
            for (call, by_code) in calls {
                println!("| {kind} | {call} | {} |", codes(by_code));
            }
        }
    }
    for p in phases {
        println!(
            "\n{}: AddTasks answer p99 {:.2} ms, max {:.1} ms; watch resyncs {}",
            p.name, p.normal.ack_p99, p.normal.ack_max, p.normal.resyncs
        );
        for (k, v) in &p.notes {
            println!("  {k}: {v}");
        }
        for f in &p.failures {
            println!("  FAILURE {f}");
        }
    }
    let pass = phases.iter().all(|p| p.failures.is_empty());
    println!("\n{}", if pass { "PASS" } else { "FAIL" });
}

fn phase_json(p: &Phase) -> Value {
    let n = &p.normal;
    json!({
        "name": p.name,
        "hostile": p.hostile,
        "seconds": p.seconds,
        "normal": {
            "submitted": n.submitted, "timed": n.timed,
            "p50_ms": n.p50, "p99_ms": n.p99, "max_ms": n.max,
            "ack_p99_ms": n.ack_p99, "ack_max_ms": n.ack_max, "watch_resyncs": n.resyncs,
        },
        "peak_rss_mib": p.rss.peak_rss,
        "hwm_mib": p.rss.hwm,
        "rss_samples": p.rss.count,
        "coordinator_died_at_s": p.rss.died_at,
        "hostile_calls": p.counts,
        "notes": p.notes,
        "failures": p.failures,
    })
}

pub fn json(args: &Args, phases: &[Phase]) -> Value {
    json!({
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "phase_seconds": args.phase().as_secs_f64(),
        "rate": args.rate,
        "priority": args.priority,
        "workers": args.workers,
        "slots": args.slots,
        "pass": phases.iter().all(|p| p.failures.is_empty()),
        "phases": phases.iter().map(phase_json).collect::<Vec<_>>(),
    })
}
