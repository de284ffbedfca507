//! The normal workload: a steady stream of single-task AddTasks calls (`--rate` a second,
//! each call spawned on schedule so a slow answer does not delay the next call) into one
//! job, and one WatchJob stream (`follow`) on that job. A task's submit-to-start time runs
//! from the moment its AddTasks call was sent to the arrival of its first TASK_STATE event
//! that leaves pending (in_progress, or a final state), as `orca-bench` measures latency.
//!
//! What stays true here: the stream is open and past its first snapshot before the first
//! call, so no event of a timed task can be missed except through a resync snapshot (a
//! watcher that fell behind), which is counted. A failed normal call, an early end of the
//! stream, or a task still pending after the drain is an error of the phase.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use orca_proto::pb;
use pb::{JobEventKind, TaskState};

use super::conn;
use super::tally::{CALL_TIMEOUT, code_name};

/// The normal workload's figures.
#[derive(Clone, Debug, Default)]
pub struct Normal {
    pub submitted: usize,
    /// Tasks whose start was seen on the stream.
    pub timed: usize,
    /// Submit-to-start, ms.
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    /// AddTasks answer time, ms.
    pub ack_p99: f64,
    pub ack_max: f64,
    /// Snapshots after the first (the stream fell behind and resynced).
    pub resyncs: u64,
    pub errors: Vec<String>,
}

#[derive(Default)]
struct Seen {
    /// First time each task was seen leaving pending.
    started: HashMap<i64, Instant>,
    resyncs: u64,
    ended: Option<String>,
}

/// One AddTasks call: when it was sent, how long its answer took, its task or its error.
struct Sub {
    sent: Instant,
    ack: Duration,
    task: Result<i64, String>,
}

/// `sorted[p]` the way `orca-bench` takes it; 0 for no samples.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() { 0.0 } else { sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)] }
}

/// Runs the workload for `len`, then waits up to `drain` for its tasks to start.
pub async fn run(url: &str, len: Duration, rate: u32, priority: i32, drain: Duration) -> Result<Normal> {
    let mut c = conn::orchestrator(url)?;
    let req = pb::CreateJobRequest { description: "orca-soak normal".into(), ..Default::default() };
    let job = c.create_job(req).await.context("CreateJob of the normal job")?.into_inner().job_id;
    let (seen, watcher) = watch(url, &job).await?;
    let subs = submit(url, &job, len, rate, priority).await?;
    let ids: Vec<i64> = subs.iter().filter_map(|s| s.task.as_ref().ok().copied()).collect();
    let t0 = Instant::now();
    while t0.elapsed() < drain && ids.iter().any(|id| !seen.lock().unwrap().started.contains_key(id)) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut n = figures(&subs, &seen.lock().unwrap());
    watcher.abort();
    match tokio::time::timeout(CALL_TIMEOUT, c.get_job(pb::GetJobRequest { job_id: job.clone() })).await {
        Ok(Ok(j)) => {
            let s = j.into_inner().status.unwrap_or_default();
            if s.pending + s.waiting > 0 {
                let left = s.pending + s.waiting;
                n.errors.push(format!("{left} normal tasks still pending {drain:?} after the last submission"));
            }
        }
        Ok(Err(s)) => n.errors.push(format!("GetJob of the normal job: {} {}", code_name(s.code()), s.message())),
        Err(_) => n.errors.push(format!("GetJob of the normal job: no answer within {CALL_TIMEOUT:?}")),
    }
    Ok(n)
}

fn figures(subs: &[Sub], seen: &Seen) -> Normal {
    let mut n = Normal { submitted: subs.len(), resyncs: seen.resyncs, ..Default::default() };
    let mut lat = Vec::new();
    let mut acks = Vec::new();
    for s in subs {
        match &s.task {
            Ok(id) => {
                acks.push(s.ack.as_secs_f64() * 1e3);
                if let Some(t) = seen.started.get(id) {
                    lat.push(t.saturating_duration_since(s.sent).as_secs_f64() * 1e3);
                }
            }
            Err(e) if n.errors.len() < 20 => n.errors.push(format!("normal AddTasks: {e}")),
            Err(_) => {}
        }
    }
    let failed = subs.iter().filter(|s| s.task.is_err()).count();
    if failed > 20 {
        n.errors.push(format!("{failed} normal AddTasks calls failed in all"));
    }
    if let Some(e) = &seen.ended {
        n.errors.push(format!("the normal WatchJob stream ended early: {e}"));
    }
    lat.sort_by(f64::total_cmp);
    acks.sort_by(f64::total_cmp);
    (n.timed, n.p50, n.p99, n.max) = (lat.len(), pct(&lat, 0.50), pct(&lat, 0.99), lat.last().copied().unwrap_or(0.0));
    (n.ack_p99, n.ack_max) = (pct(&acks, 0.99), acks.last().copied().unwrap_or(0.0));
    n
}

/// Opens the stream and reads it up to its first complete snapshot; then a task records
/// each task's first event that leaves pending.
async fn watch(url: &str, job: &str) -> Result<(Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>)> {
    let mut c = conn::orchestrator(url)?;
    let req = pb::WatchJobRequest { job_id: job.to_string(), after_seq: 0, follow: true };
    let mut stream = c.watch_job(req).await.context("WatchJob of the normal job")?.into_inner();
    loop {
        let ev = stream.message().await?.context("the normal WatchJob stream ended before its snapshot")?;
        if ev.kind == JobEventKind::Snapshot as i32 && !ev.snapshot_more {
            break;
        }
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    let task = tokio::spawn(async move {
        let end = loop {
            match stream.message().await {
                Ok(Some(ev)) => on_event(&mut s.lock().unwrap(), &ev),
                Ok(None) => break "the stream ended".to_string(),
                Err(st) => break format!("{} {}", code_name(st.code()), st.message()),
            }
        };
        s.lock().unwrap().ended = Some(end);
    });
    Ok((seen, task))
}

fn on_event(seen: &mut Seen, ev: &pb::JobEvent) {
    let now = Instant::now();
    if ev.kind == JobEventKind::Snapshot as i32 && !ev.snapshot_more {
        seen.resyncs += 1;
    } else if ev.kind == JobEventKind::TaskState as i32
        && ev.state != TaskState::Pending as i32
        && ev.state != TaskState::Waiting as i32
    {
        seen.started.entry(ev.task_id).or_insert(now);
    }
}

/// The calls, each spawned at its due time on one shared connection.
async fn submit(url: &str, job: &str, len: Duration, rate: u32, priority: i32) -> Result<Vec<Sub>> {
    let c = conn::orchestrator(url)?;
    let total = (len.as_secs_f64() * rate as f64) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let start = Instant::now();
    let mut calls = Vec::with_capacity(total);
    for i in 0..total {
        tokio::time::sleep_until((start + interval * i as u32).into()).await;
        let (mut c, job) = (c.clone(), job.to_string());
        calls.push(tokio::spawn(async move {
            let spec = pb::TaskSpec { prompt: format!("normal {i}"), priority: Some(priority), ..Default::default() };
            let req = pb::AddTasksRequest { job_id: job, tasks: vec![spec], ..Default::default() };
            let sent = Instant::now();
            let task = match tokio::time::timeout(CALL_TIMEOUT, c.add_tasks(req)).await {
                Ok(Ok(r)) => r.into_inner().task_ids.first().copied().ok_or_else(|| "answered no task id".to_string()),
                Ok(Err(s)) => Err(format!("{} {}", code_name(s.code()), s.message())),
                Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
            };
            Sub { sent, ack: sent.elapsed(), task }
        }));
    }
    let mut subs = Vec::with_capacity(total);
    for h in calls {
        subs.push(h.await?);
    }
    Ok(subs)
}
