//! Conversions from the coordinator's records to the wire (`pb::`) types, in one place for
//! the services, the watch streams and the dispatcher's events.

use orca_proto::pb;
use prost::Message;

use crate::queue::{self, Controls, Counts, Spend, State};
use crate::store::{JobRecord, TaskRecord};

/// The proto enum value of a task state.
pub fn state(s: State) -> i32 {
    s.as_i32()
}

/// The proto status of a job: its counts, spend and why it is blocked.
pub fn job_status(c: &Counts, controls: &Controls, spend: &Spend) -> pb::JobStatus {
    pb::JobStatus {
        cost_usd: spend.cost_usd,
        input_tokens: spend.input_tokens,
        output_tokens: spend.output_tokens,
        blocked_reason: queue::blocked_reason(controls, spend, c).unwrap_or_default(),
        ..status(c)
    }
}

/// The proto status counts of a job.
pub fn status(c: &Counts) -> pb::JobStatus {
    let total = c.total();
    let finished = c.completed + c.failed + c.cancelled;
    pb::JobStatus {
        total_tasks: total,
        waiting: c.waiting,
        pending: c.pending,
        in_progress: c.in_progress,
        completed: c.completed,
        failed: c.failed,
        cancelled: c.cancelled,
        progress_pct: if total == 0 { 0.0 } else { (finished as f64 * 10_000.0 / total as f64).round() / 100.0 },
        ..Default::default()
    }
}

/// The job's state from its counts.
pub fn job_state(c: &Counts, cancelled: bool) -> pb::JobState {
    if cancelled {
        pb::JobState::Cancelled
    } else if !c.all_final() {
        pb::JobState::Active
    } else if c.failed + c.cancelled > 0 {
        pb::JobState::Failed
    } else {
        pb::JobState::Completed
    }
}

/// The parts of a job the dispatcher holds in memory (state, status, controls); the
/// description, metadata, owner and times are the caller's to fill in.
pub fn live_job(job_id: &str, counts: &Counts, cancelled: bool, controls: &Controls, spend: &Spend) -> pb::Job {
    pb::Job {
        job_id: job_id.to_string(),
        state: job_state(counts, cancelled) as i32,
        status: Some(job_status(counts, controls, spend)),
        weight: controls.weight,
        max_running: controls.max_running,
        budget_usd: controls.budget_usd,
        paused: controls.paused,
        ..Default::default()
    }
}

pub fn job(r: &JobRecord) -> pb::Job {
    pb::Job {
        description: r.description.clone(),
        metadata: r.metadata.as_deref().and_then(|m| prost_types::Struct::decode(m).ok()),
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
        owner: r.owner.clone().unwrap_or_default(),
        ..live_job(&r.job_id, &r.counts, r.cancelled, &r.controls, &r.spend)
    }
}

pub fn task(r: TaskRecord) -> pb::Task {
    pb::Task {
        task_id: r.row.task_id,
        job_id: r.job_id,
        state: state(r.row.state),
        spec: r.spec.as_deref().and_then(|s| pb::TaskSpec::decode(s).ok()),
        result: r.result.as_deref().and_then(|s| pb::TaskResult::decode(s).ok()),
        attempts: r.row.attempt,
        retries_used: r.row.retries_used,
        reason: r.row.reason,
        worker_id: r.row.worker_id.unwrap_or_default(),
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
        not_before_ms: r.row.not_before_ms as i64,
        history: Vec::new(),
    }
}

/// A task's line in a WatchJob snapshot.
pub fn summary(t: TaskRecord) -> pb::TaskSummary {
    pb::TaskSummary {
        task_id: t.row.task_id,
        state: state(t.row.state),
        attempts: t.row.attempt,
        priority: t.priority,
        name: String::new(),
        reason: t.row.reason,
    }
}

/// An ended attempt as the API shows it.
pub fn attempt(a: &crate::store::AttemptRecord) -> pb::AttemptInfo {
    pb::AttemptInfo {
        attempt: a.attempt,
        worker_id: a.worker_id.clone().unwrap_or_default(),
        started_ms: a.started_ms,
        ended_ms: a.ended_ms,
        outcome: a.outcome.to_string(),
        reason: a.reason.clone(),
        exit_code: a.exit_code.unwrap_or(0),
        cost_usd: a.cost_usd.unwrap_or(0.0),
        duration_ms: a.duration_ms.unwrap_or(0).max(0) as u64,
        output_tail: a.output_tail.clone(),
    }
}

/// The attempt that completed a task, told from the task's row and result (a completed
/// attempt has no history row): it ended when the task completed and started the agent's run
/// time before.
pub fn completed_attempt(t: &pb::Task) -> Option<pb::AttemptInfo> {
    if t.state != pb::TaskState::Completed as i32 {
        return None;
    }
    let r = t.result.clone().unwrap_or_default();
    let tail = crate::dispatch::output_tail(&r.output);
    Some(pb::AttemptInfo {
        attempt: t.attempts,
        worker_id: t.worker_id.clone(),
        started_ms: t.updated_at_ms - r.duration_ms as i64,
        ended_ms: t.updated_at_ms,
        outcome: "completed".into(),
        reason: String::new(),
        exit_code: r.exit_code,
        cost_usd: r.cost_usd,
        duration_ms: r.duration_ms,
        output_tail: tail.to_string(),
    })
}
