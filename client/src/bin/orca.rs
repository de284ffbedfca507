//! `orca`: the command line on `orca-client`. Data goes to stdout (one JSON document with
//! `--json`), logs and progress to stderr.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use orca_client::{Client, Error, Subtask, WatchOptions, pb};
use serde_json::json;
use tokio_stream::StreamExt;

#[derive(Parser)]
#[command(name = "orca", version, about = "Orca's command line: submit, watch and collect jobs")]
struct Cli {
    /// Coordinator address.
    #[arg(long, env = "ORCA_COORDINATOR", default_value = orca_proto::defaults::COORDINATOR_URL, global = true)]
    coordinator: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Submit tasks: the prompt arguments, or --file, or one prompt per line on stdin.
    Submit {
        /// Add to this job (default: create one).
        #[arg(long)]
        job: Option<String>,
        /// Description of the new job.
        #[arg(long, default_value = "submitted with orca")]
        description: String,
        /// Read prompts from this file, one per line.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        #[arg(long)]
        priority: Option<i32>,
        #[arg(long)]
        max_retries: Option<u32>,
        #[arg(long)]
        timeout_seconds: Option<u32>,
        /// Print {"job_id", "task_ids"}.
        #[arg(long)]
        json: bool,
        prompts: Vec<String>,
    },
    /// A job's counts.
    Status {
        job: String,
        #[arg(long)]
        json: bool,
    },
    /// Wait until every task of the job is final; exit 0 only if all completed.
    Wait {
        job: String,
        /// Give up after this many seconds (the unfinished tasks are listed).
        #[arg(long)]
        timeout: Option<f64>,
        #[arg(long)]
        json: bool,
    },
    /// Print the job's events as they happen.
    Watch {
        job: String,
        /// Keep watching after the job is idle.
        #[arg(long)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// List jobs.
    Jobs {
        #[arg(long)]
        json: bool,
    },
    /// Show one task.
    Task {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Retry the failed tasks of a job.
    Retry {
        job: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job.
    Cancel {
        job: String,
        #[arg(long, default_value = "cancelled with orca")]
        reason: String,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("orca: {e}");
            ExitCode::from(2)
        }
    }
}

fn state_name(v: i32) -> &'static str {
    pb::TaskState::try_from(v).map(|s| s.short_name()).unwrap_or("unknown")
}

fn status_json(job: &str, s: &pb::JobStatus) -> serde_json::Value {
    json!({
        "job_id": job,
        "total_tasks": s.total_tasks,
        "waiting": s.waiting,
        "pending": s.pending,
        "in_progress": s.in_progress,
        "completed": s.completed,
        "failed": s.failed,
        "cancelled": s.cancelled,
        "progress_pct": s.progress_pct,
    })
}

fn task_json(t: &pb::Task) -> serde_json::Value {
    let spec = t.spec.clone().unwrap_or_default();
    let result = t.result.clone().unwrap_or_default();
    json!({
        "task_id": t.task_id,
        "job_id": t.job_id,
        "state": state_name(t.state),
        "prompt": spec.prompt,
        "priority": spec.priority.unwrap_or(5),
        "attempts": t.attempts,
        "reason": t.reason,
        "worker_id": t.worker_id,
        "output": result.output,
        "error": result.error,
        "exit_code": result.exit_code,
        "cost_usd": result.cost_usd,
        "artifacts": result.artifacts.iter().map(|a| a.path.clone()).collect::<Vec<_>>(),
    })
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn progress_line(s: &pb::JobStatus) {
    let width = 30usize;
    let filled = ((s.progress_pct / 100.0) * width as f64).round() as usize;
    eprint!(
        "\r[{}{}] {:>5.1}%  {} done, {} running, {} queued, {} failed ",
        "#".repeat(filled.min(width)),
        "-".repeat(width - filled.min(width)),
        s.progress_pct,
        s.completed,
        s.in_progress,
        s.pending + s.waiting,
        s.failed + s.cancelled
    );
    let _ = std::io::stderr().flush();
}

async fn run(cli: Cli) -> Result<ExitCode, Error> {
    let client = Client::connect(&cli.coordinator).await?;
    match cli.command {
        Cmd::Submit { job, description, file, priority, max_retries, timeout_seconds, json, prompts } => {
            let mut lines = prompts;
            if let Some(f) = file {
                let text = std::fs::read_to_string(&f)
                    .map_err(|e| Error::InvalidArgument(format!("--file {}: {e}", f.display())))?;
                lines.extend(text.lines().map(str::to_string));
            } else if lines.is_empty() {
                if std::io::stdin().is_terminal() {
                    eprintln!("orca: reading prompts from stdin, one per line (Ctrl-D to end)");
                }
                for l in std::io::stdin().lock().lines() {
                    lines.push(l.map_err(|e| Error::InvalidArgument(format!("stdin: {e}")))?);
                }
            }
            lines.retain(|l| !l.trim().is_empty());
            if lines.is_empty() {
                return Err(Error::InvalidArgument("no prompt given (arguments, --file or stdin)".into()));
            }
            let job = match job {
                Some(j) => j,
                None => client.create_job(&description).await?,
            };
            let tasks = lines
                .iter()
                .map(|p| {
                    let mut t = Subtask::new(p);
                    if let Some(v) = priority {
                        t = t.priority(v);
                    }
                    if let Some(v) = max_retries {
                        t = t.max_retries(v);
                    }
                    if let Some(v) = timeout_seconds {
                        t = t.timeout_seconds(v);
                    }
                    t
                })
                .collect();
            let ids = client.add_subtasks(&job, tasks).await?;
            if json {
                print_json(&json!({"job_id": job, "task_ids": ids}));
            } else {
                println!("job {job}: {} tasks ({}..{})", ids.len(), ids[0], ids[ids.len() - 1]);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { job, json } => {
            let s = client.get_job_status(&job).await?;
            if json {
                print_json(&status_json(&job, &s));
            } else {
                println!(
                    "job {job}: {} tasks, {:.1}% done: {} waiting, {} pending, {} in progress, {} completed, {} failed, {} cancelled",
                    s.total_tasks,
                    s.progress_pct,
                    s.waiting,
                    s.pending,
                    s.in_progress,
                    s.completed,
                    s.failed,
                    s.cancelled
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Wait { job, timeout, json } => {
            let show = !json && std::io::stderr().is_terminal();
            let timeout = timeout.map(Duration::from_secs_f64);
            let got = client
                .wait_and_collect_with(&job, timeout, |s| {
                    if show {
                        progress_line(s);
                    }
                })
                .await?;
            if show {
                eprintln!();
            }
            let ok = !got.timed_out && got.status.total_tasks == got.status.completed;
            if json {
                let tasks: Vec<_> = got
                    .results
                    .values()
                    .map(|r| {
                        json!({"task_id": r.task_id, "state": r.state, "prompt": r.prompt, "output": r.output,
                               "error": r.error, "reason": r.reason, "attempts": r.attempts})
                    })
                    .collect();
                let mut doc = status_json(&job, &got.status);
                doc["timed_out"] = json!(got.timed_out);
                doc["unfinished"] = json!(got.unfinished);
                doc["tasks"] = json!(tasks);
                print_json(&doc);
            } else {
                print!("{}", orca_client::synthesize_results(&got));
                if got.timed_out {
                    eprintln!("orca: timed out with {} tasks unfinished", got.unfinished.len());
                }
            }
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Cmd::Watch { job, follow, json } => {
            let mut events = Box::pin(client.watch(&job, WatchOptions { follow, ..Default::default() }));
            while let Some(ev) = events.next().await {
                let ev = ev?;
                let kind = pb::JobEventKind::try_from(ev.kind).unwrap_or(pb::JobEventKind::Unspecified);
                let status = ev.status.unwrap_or_default();
                if json {
                    let v = json!({"seq": ev.seq, "kind": format!("{kind:?}").to_lowercase(), "task_id": ev.task_id,
                                   "state": state_name(ev.state), "attempt": ev.attempt, "message": ev.message,
                                   "status": status_json(&job, &status)});
                    println!("{v}");
                } else {
                    match kind {
                        pb::JobEventKind::Snapshot => println!(
                            "#{} snapshot: {} tasks, {} completed, {} failed",
                            ev.seq, status.total_tasks, status.completed, status.failed
                        ),
                        pb::JobEventKind::TaskState => println!(
                            "#{} task {} {} (attempt {}){}",
                            ev.seq,
                            ev.task_id,
                            state_name(ev.state),
                            ev.attempt,
                            if ev.message.is_empty() { String::new() } else { format!(": {}", ev.message) }
                        ),
                        pb::JobEventKind::TaskProgress => println!("#{} task {}: {}", ev.seq, ev.task_id, ev.message),
                        _ => println!("#{} {:?}: {}", ev.seq, kind, ev.message),
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Jobs { json } => {
            let jobs = client.list_jobs().await?;
            if json {
                let v: Vec<_> = jobs
                    .iter()
                    .map(|j| {
                        let mut s = status_json(&j.job_id, &j.status.unwrap_or_default());
                        s["description"] = json!(j.description);
                        s["state"] =
                            json!(pb::JobState::try_from(j.state).map(|s| s.short_name()).unwrap_or("unknown"));
                        s
                    })
                    .collect();
                print_json(&json!(v));
            } else {
                for j in jobs {
                    let s = j.status.unwrap_or_default();
                    let state = pb::JobState::try_from(j.state).map(|s| s.short_name()).unwrap_or("unknown");
                    println!("{}  {:<9} {:>6}/{:<6} {}", j.job_id, state, s.completed, s.total_tasks, j.description);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Task { id, json } => {
            let t = client.get_task(id).await?;
            if json {
                print_json(&task_json(&t));
            } else {
                let v = task_json(&t);
                for (k, val) in v.as_object().into_iter().flatten() {
                    println!("{k}: {}", val.as_str().map(str::to_string).unwrap_or_else(|| val.to_string()));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Retry { job, json } => {
            let ids = client.retry_failed_tasks(&job).await?;
            if json {
                print_json(&json!({"job_id": job, "task_ids": ids}));
            } else {
                println!("job {job}: {} tasks retried", ids.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Cancel { job, reason } => {
            let j = client.cancel_job(&job, &reason).await?;
            let s = j.status.unwrap_or_default();
            println!("job {job} cancelled: {} completed, {} cancelled", s.completed, s.cancelled);
            Ok(ExitCode::SUCCESS)
        }
    }
}
