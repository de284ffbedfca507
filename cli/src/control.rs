//! Scheduling controls: a job's weight, running limit, budget and pause (`orca update`,
//! `orca pause`, `orca resume`, and the flags `orca submit` gives a new job), when its tasks
//! may start (`--run-at`, `--delay`), and recurring jobs (`orca schedule`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use orca_client::{Client, JobOptions, JobUpdate, Subtask, pb, time};
use orca_proto::json::job_json;
use serde_json::{Value, json};

use crate::{Failure, print_json, taskfile};

/// A new job's controls (`orca submit` without --job, `orca schedule add`).
#[derive(Args, Clone, Debug, Default)]
pub struct JobFlags {
    /// The job's share of the workers against other jobs at the same priority (1-1000;
    /// default 1): weight 2 gets twice the dispatches of weight 1.
    #[arg(long)]
    pub weight: Option<u32>,
    /// At most this many of the job's tasks run at once (default: no limit).
    #[arg(long)]
    pub max_running: Option<u32>,
    /// Start no new attempt once the job's attempts reported this much cost, in US dollars.
    #[arg(long, value_name = "USD")]
    pub budget: Option<f64>,
}

impl JobFlags {
    pub fn given(&self) -> bool {
        self.weight.is_some() || self.max_running.is_some() || self.budget.is_some()
    }

    pub fn options(&self) -> JobOptions {
        JobOptions {
            metadata: None,
            weight: self.weight.unwrap_or(0),
            max_running: self.max_running.unwrap_or(0),
            budget_usd: self.budget.unwrap_or(0.0),
        }
    }
}

/// When the submitted tasks may start.
#[derive(Args, Clone, Debug, Default)]
pub struct StartFlags {
    /// Start no earlier than this time: RFC 3339 (2026-12-02T15:00:00Z) or unix seconds.
    #[arg(long, value_name = "TIME", value_parser = time::parse_time, conflicts_with = "delay")]
    pub run_at: Option<SystemTime>,
    /// Start no earlier than this long from now: 90s, 5m, 1.5h, 2d.
    #[arg(long, value_name = "DURATION", value_parser = time::parse_duration)]
    pub delay: Option<Duration>,
}

impl StartFlags {
    /// The task with the start time, if one was given (a file's own run_at wins).
    pub fn apply(&self, t: Subtask) -> Subtask {
        if t.spec().run_at.is_some() {
            return t;
        }
        match (self.run_at, self.delay) {
            (Some(at), _) => t.run_at(at),
            (None, Some(d)) => t.delay(d),
            (None, None) => t,
        }
    }
}

/// `orca update JOB`: changes the controls given.
#[derive(Args)]
pub struct UpdateArgs {
    job: String,
    #[command(flatten)]
    flags: JobFlags,
    #[arg(long)]
    json: bool,
}

pub async fn update(client: &Client, a: UpdateArgs) -> Result<ExitCode, Failure> {
    if !a.flags.given() {
        return Err(Failure::Usage("nothing to change: give --weight, --max-running or --budget".into()));
    }
    let u = JobUpdate {
        weight: a.flags.weight,
        max_running: a.flags.max_running,
        budget_usd: a.flags.budget,
        paused: None,
    };
    let job = client.update_job(&a.job, u).await?;
    show_job(&job, a.json);
    Ok(ExitCode::SUCCESS)
}

/// `orca pause JOB` / `orca resume JOB`.
pub async fn pause(client: &Client, job: &str, paused: bool, json: bool) -> Result<ExitCode, Failure> {
    let job = if paused { client.pause_job(job).await? } else { client.resume_job(job).await? };
    show_job(&job, json);
    Ok(ExitCode::SUCCESS)
}

/// A job's controls and spend, in one line each.
pub fn show_job(j: &pb::Job, json: bool) {
    if json {
        print_json(&job_json(j));
        return;
    }
    println!("job {}: {}", j.job_id, controls_line(j));
    let s = j.status.clone().unwrap_or_default();
    println!("{}", spend_line(&s));
}

/// `weight 1, no running limit, no budget, running` and so on.
pub fn controls_line(j: &pb::Job) -> String {
    let limit =
        if j.max_running == 0 { "no running limit".to_string() } else { format!("at most {} running", j.max_running) };
    let budget = if j.budget_usd > 0.0 { format!("budget ${:.2}", j.budget_usd) } else { "no budget".to_string() };
    let state = if j.paused { "paused" } else { "not paused" };
    format!("weight {}, {limit}, {budget}, {state}", j.weight.max(1))
}

/// What the job spent, and why it is blocked if it is.
pub fn spend_line(s: &pb::JobStatus) -> String {
    let mut line = format!("spent ${:.4} ({} input, {} output tokens)", s.cost_usd, s.input_tokens, s.output_tokens);
    if !s.blocked_reason.is_empty() {
        line.push_str(&format!("; blocked: {}", s.blocked_reason));
    }
    line
}

/// `orca schedule`.
#[derive(Args)]
pub struct ScheduleArgs {
    #[command(subcommand)]
    action: ScheduleAction,
}

#[derive(Subcommand)]
enum ScheduleAction {
    /// Create a recurring job: at each tick of --cron (UTC) a new job with these tasks.
    Add {
        name: String,
        /// Five fields (minute hour day month weekday) or six (seconds first), in UTC.
        #[arg(long)]
        cron: String,
        /// The description of each job it creates (default: the schedule's name).
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        flags: JobFlags,
        /// Replace a schedule of the same name.
        #[arg(long)]
        replace: bool,
        /// Tasks from this file (as `orca submit --file`; no run_at).
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        prompts: Vec<String>,
    },
    /// The schedules, with their next and last ticks.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete a schedule (the jobs it created stay).
    Rm { name: String },
}

pub async fn schedule(client: &Client, a: ScheduleArgs) -> Result<ExitCode, Failure> {
    match a.action {
        ScheduleAction::Add { name, cron, description, flags, replace, file, json, prompts } => {
            let mut tasks: Vec<Subtask> = prompts.iter().map(|p| Subtask::new(p)).collect();
            if let Some(f) = &file {
                let text = std::fs::read_to_string(f)
                    .map_err(|source| Failure::Read { what: format!("--file {}", f.display()), source })?;
                match taskfile::read(f, text).map_err(Failure::Usage)? {
                    taskfile::Contents::Lines(text) => {
                        tasks.extend(text.lines().filter(|l| !l.trim().is_empty()).map(Subtask::new));
                    }
                    taskfile::Contents::Tasks(t) => tasks.extend(t),
                }
            }
            if tasks.is_empty() {
                return Err(Failure::NoPrompt);
            }
            let job = flags.options().request(description.as_deref().unwrap_or(&name))?;
            let tasks = tasks.into_iter().map(Subtask::into_task_spec).collect::<Result<Vec<_>, _>>()?;
            let req = pb::CreateScheduleRequest { name, cron, job: Some(job), tasks, replace };
            let s = client.create_schedule(req).await?;
            if json {
                print_json(&schedule_json(&s));
            } else {
                println!("schedule {}: {} ({} tasks), next at {}", s.name, s.cron, s.tasks.len(), when(s.next_run_ms));
            }
        }
        ScheduleAction::List { json } => {
            let list = client.list_schedules().await?;
            if json {
                print_json(&json!({"schedules": list.iter().map(schedule_json).collect::<Vec<_>>()}));
            }
            for s in list.iter().filter(|_| !json) {
                let last = if s.last_run_ms > 0 {
                    format!("last {} (job {})", when(s.last_run_ms), s.last_job_id)
                } else {
                    "never fired".into()
                };
                println!("{}  {:<15} next {}  {last}  {} tasks", s.name, s.cron, when(s.next_run_ms), s.tasks.len());
            }
        }
        ScheduleAction::Rm { name } => {
            client.delete_schedule(&name).await?;
            println!("schedule {name} deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn schedule_json(s: &pb::Schedule) -> Value {
    let job = s.job.clone().unwrap_or_default();
    json!({
        "name": s.name, "cron": s.cron, "description": job.description, "weight": job.weight,
        "max_running": job.max_running, "budget_usd": job.budget_usd, "tasks": s.tasks.len(),
        "next_run_ms": s.next_run_ms, "last_run_ms": s.last_run_ms, "last_job_id": s.last_job_id,
        "created_at_ms": s.created_at_ms, "owner": s.owner,
    })
}

/// A unix-ms time as RFC 3339 (UTC), or "never".
fn when(ms: i64) -> String {
    if ms <= 0 || ms == i64::MAX { "never".into() } else { time::format_ms(ms) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_utc() {
        assert_eq!(when(1_767_225_600_000), "2026-01-01T00:00:00Z");
        assert_eq!(when(951_782_400_000 + 3_661_000), "2000-02-29T01:01:01Z");
        assert_eq!(when(0), "never");
    }
}
