//! The read and fleet subcommands: `list`, `show`, `logs`, `stats`, `workers` (with `drain`
//! and `resume`) and `context`. Each prints text for a person or, with `--json`, one JSON
//! document whose shape is in docs/contract.md.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use orca_client::{Client, WatchOptions, pb};
use serde_json::{Value, json};
use tokio_stream::StreamExt;

use orca_proto::json::{stats_json, worker_json};

use crate::{Failure, print_json, state_name, task_json};

/// The flags of `orca list`.
#[derive(Args)]
pub struct ListArgs {
    /// Only this job's tasks (default: every job you may read).
    #[arg(long)]
    job: Option<String>,
    /// Only tasks in this state (repeatable): waiting, pending, in_progress, completed,
    /// failed, cancelled.
    #[arg(long = "state")]
    states: Vec<String>,
    /// Only tasks whose current or last attempt ran on this worker (its id).
    #[arg(long)]
    worker: Option<String>,
    /// Tasks on this page at most (1-1000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Continue after a previous page (its next_page_token).
    #[arg(long)]
    page_token: Option<String>,
    #[arg(long)]
    json: bool,
}

/// `orca workers` and its actions.
#[derive(Args)]
pub struct WorkersArgs {
    #[command(subcommand)]
    action: Option<WorkerAction>,
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum WorkerAction {
    /// Stop giving the worker new work; it finishes what it runs (needs an admin token).
    Drain { worker_id: String },
    /// Give a drained worker work again.
    Resume { worker_id: String },
}

/// `orca context` and its actions.
#[derive(Args)]
pub struct ContextArgs {
    #[command(subcommand)]
    action: ContextAction,
}

#[derive(Subcommand)]
enum ContextAction {
    /// Set KEY to VALUE (JSON or plain text) for a job's tasks, or for all with no --job.
    Set {
        key: String,
        value: String,
        #[arg(long)]
        job: Option<String>,
    },
    /// Print a job's shared context, or with no --job the global one.
    Get {
        #[arg(long)]
        job: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove KEY.
    Rm {
        key: String,
        #[arg(long)]
        job: Option<String>,
    },
}

/// `orca list`: one page of tasks.
pub async fn list(client: &Client, a: ListArgs) -> Result<ExitCode, Failure> {
    let mut states = Vec::new();
    for s in &a.states {
        let st = pb::TaskState::from_short_name(s).ok_or_else(|| {
            Failure::Usage(format!(
                "--state {s:?}: not a state (waiting, pending, in_progress, completed, failed, cancelled)"
            ))
        })?;
        states.push(st as i32);
    }
    let req = pb::ListTasksRequest {
        job_id: a.job.unwrap_or_default(),
        states,
        page_size: a.limit,
        page_token: a.page_token.unwrap_or_default(),
        summary_only: false,
        worker_id: a.worker.unwrap_or_default(),
    };
    let page = client.list_tasks_page(req).await?;
    if a.json {
        let tasks: Vec<Value> = page.tasks.iter().map(task_json).collect();
        print_json(&json!({"tasks": tasks, "next_page_token": page.next_page_token}));
        return Ok(ExitCode::SUCCESS);
    }
    for t in &page.tasks {
        let spec = t.spec.clone().unwrap_or_default();
        let first = spec.prompt.lines().next().unwrap_or_default();
        let prompt: String = first.chars().take(60).collect();
        println!(
            "{:>8}  {:<11} {:>4}  {:<20} {}",
            t.task_id,
            state_name(t.state),
            spec.priority.unwrap_or(5),
            short(&t.worker_id),
            prompt
        );
    }
    if !page.next_page_token.is_empty() {
        eprintln!("more: --page-token {}", page.next_page_token);
    }
    Ok(ExitCode::SUCCESS)
}

fn short(s: &str) -> String {
    if s.chars().count() > 20 { format!("{}…", s.chars().take(19).collect::<String>()) } else { s.to_string() }
}

/// `orca logs`: the task's output; with `--follow` and a task not final yet, its progress
/// lines (a command agent's stdout lines, Claude's steps) as they come, until it ends.
pub async fn logs(client: &Client, id: i64, follow: bool) -> Result<ExitCode, Failure> {
    let t = client.get_task(id).await?;
    let running = !pb::TaskState::try_from(t.state).is_ok_and(|s| s.is_final());
    let mut followed = String::new();
    if follow && running {
        // What it printed before we came (GetTask has a running attempt's latest lines).
        let so_far =
            t.result.as_ref().filter(|_| t.state == pb::TaskState::InProgress as i32).map(|r| r.output.as_str());
        if let Some(out) = so_far.filter(|o| !o.is_empty()) {
            print!("{out}");
            followed.push_str(out);
        }
        let mut events = std::pin::pin!(client.watch(&t.job_id, WatchOptions::default()));
        while let Some(ev) = events.next().await {
            let ev = ev?;
            // A snapshot (after a reconnect, or a long job's paged one) may be the only news
            // that the task ended.
            let in_snapshot = ev.tasks.iter().find(|t| t.task_id == id);
            if in_snapshot.is_some_and(|t| pb::TaskState::try_from(t.state).is_ok_and(|s| s.is_final())) {
                break;
            }
            if ev.task_id != id {
                continue;
            }
            if ev.kind == pb::JobEventKind::TaskProgress as i32 {
                println!("{}", ev.message);
                followed.push_str(&ev.message);
                followed.push('\n');
            }
            let done = pb::TaskState::try_from(ev.state).is_ok_and(|s| s.is_final());
            if ev.kind == pb::JobEventKind::TaskState as i32 && done {
                break;
            }
        }
    }
    let t = if follow && running { client.get_task(id).await? } else { t };
    // Earlier attempts' output tails first, each under a header, when there were several.
    if !follow && t.history.len() > 1 {
        for a in &t.history[..t.history.len() - 1] {
            println!("== attempt {} on {}: {} ==", a.attempt, a.worker_id, a.outcome);
            if !a.output_tail.is_empty() {
                println!("{}", a.output_tail.trim_end());
            }
        }
        if let Some(last) = t.history.last() {
            println!("== attempt {} on {}: {} ==", last.attempt, last.worker_id, last.outcome);
        }
    }
    let r = t.result.clone().unwrap_or_default();
    // A command agent's output is the lines followed live already; Claude's answer is not.
    if !r.output.is_empty() && r.output.trim_end() != followed.trim_end() {
        print!("{}", r.output);
        if !r.output.ends_with('\n') {
            println!();
        }
    }
    let state = state_name(t.state);
    if !r.error.is_empty() || !t.reason.is_empty() {
        eprintln!("task {id} {state}: {}", if r.error.is_empty() { &t.reason } else { &r.error });
    } else if r.output.is_empty() {
        eprintln!("task {id} {state}: no output yet{}", if running && !follow { " (use -f to follow it)" } else { "" });
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn stats(client: &Client, json: bool) -> Result<ExitCode, Failure> {
    let s = client.get_stats().await?;
    if json {
        print_json(&stats_json(&s));
        return Ok(ExitCode::SUCCESS);
    }
    let t = s.tasks.unwrap_or_default();
    println!(
        "tasks: {} waiting, {} pending, {} in progress, {} completed, {} failed, {} cancelled ({} jobs)",
        t.waiting, t.pending, t.in_progress, t.completed, t.failed, t.cancelled, s.jobs
    );
    let queue: Vec<String> = s.queue.iter().map(|q| format!("p{}: {}", q.priority, q.pending)).collect();
    println!("queue by priority: {}", if queue.is_empty() { "empty".into() } else { queue.join(", ") });
    println!("workers: {} connected, {} of {} slots free", s.workers_connected, s.slots_free, s.slots);
    println!("throughput: {:.2} tasks/s over the last minute  {}", s.tasks_per_second, sparkline(&s.throughput));
    Ok(ExitCode::SUCCESS)
}

/// The last ten minutes of completions as a line of block characters.
fn sparkline(buckets: &[pb::ThroughputBucket]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = buckets.iter().map(|b| b.completed).max().unwrap_or(0);
    buckets.iter().map(|b| BARS[(b.completed * 7).checked_div(max).unwrap_or(0) as usize]).collect()
}

/// `orca workers` (and `drain` / `resume`).
pub async fn workers(client: &Client, a: WorkersArgs) -> Result<ExitCode, Failure> {
    let changed = match a.action {
        None => None,
        Some(WorkerAction::Drain { worker_id }) => Some(client.drain_worker(&worker_id, false).await?),
        Some(WorkerAction::Resume { worker_id }) => Some(client.drain_worker(&worker_id, true).await?),
    };
    if let Some(w) = changed {
        if a.json {
            print_json(&worker_json(&w));
        } else {
            let what = if w.draining { "draining: it takes no new work" } else { "resumed" };
            println!("worker {} {what} ({} tasks running)", w.worker_id, w.running_tasks.len());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let list = client.list_workers().await?;
    if a.json {
        print_json(&json!({"workers": list.iter().map(worker_json).collect::<Vec<_>>()}));
        return Ok(ExitCode::SUCCESS);
    }
    let now = crate::now_ms();
    for w in &list {
        let state = match (w.connected, w.draining) {
            (_, true) => "draining",
            (true, false) => "connected",
            (false, false) => "gone",
        };
        let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let ago = (now - w.last_seen_ms).max(0) / 1000;
        println!(
            "{}  {:<9} {}/{} busy  seen {ago}s ago  {} {} v{}  {}",
            w.worker_id,
            state,
            w.running_tasks.len(),
            w.slots,
            w.name,
            w.hostname,
            w.version,
            labels.join(",")
        );
    }
    if list.is_empty() {
        println!("no workers");
    }
    Ok(ExitCode::SUCCESS)
}

/// `orca context set|get|rm`.
pub async fn context(client: &Client, a: ContextArgs) -> Result<ExitCode, Failure> {
    match a.action {
        ContextAction::Set { key, value, job } => {
            if value.is_empty() {
                return Err(Failure::Usage("VALUE: must not be empty (use `orca context rm KEY`)".into()));
            }
            client.set_shared_context(job.as_deref(), &key, &value).await?;
        }
        ContextAction::Rm { key, job } => client.set_shared_context(job.as_deref(), &key, "").await?,
        ContextAction::Get { job, json } => {
            let values = client.get_shared_context(job.as_deref()).await?;
            let mut keys: Vec<&String> = values.keys().collect();
            keys.sort();
            if json {
                let map: serde_json::Map<String, Value> =
                    keys.iter().map(|k| ((*k).clone(), json!(values[*k]))).collect();
                print_json(&json!({"job_id": job, "values": map}));
            } else {
                for k in keys {
                    println!("{k} = {}", values[k]);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
