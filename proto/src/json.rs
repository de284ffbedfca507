//! The JSON documents of Orca's messages, one renderer per message: the CLI's `--json`
//! output (shapes in docs/contract.md) and the coordinator's web API (`/api/`) print the same
//! documents. Keys are the proto's snake_case names; states are the short lowercase names.

use serde_json::{Value, json};

use crate::pb;

/// A task state's short name (`completed`), or `unknown`.
pub fn state_name(v: i32) -> &'static str {
    pb::TaskState::try_from(v).map(|s| s.short_name()).unwrap_or("unknown")
}

/// A job state's short name (`active`), or `unknown`.
pub fn job_state_name(v: i32) -> &'static str {
    pb::JobState::try_from(v).map(|s| s.short_name()).unwrap_or("unknown")
}

/// The flat status document of `orca status --json`.
pub fn status_json(job: &str, s: &pb::JobStatus) -> Value {
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

/// A job: the status document plus spend, scheduling controls, description, state, owner
/// and times.
pub fn job_json(j: &pb::Job) -> Value {
    let status = j.status.clone().unwrap_or_default();
    let mut v = status_json(&j.job_id, &status);
    v["cost_usd"] = json!(status.cost_usd);
    v["input_tokens"] = json!(status.input_tokens);
    v["output_tokens"] = json!(status.output_tokens);
    v["blocked_reason"] = json!(status.blocked_reason);
    v["weight"] = json!(j.weight);
    v["max_running"] = json!(j.max_running);
    v["budget_usd"] = json!(j.budget_usd);
    v["paused"] = json!(j.paused);
    v["description"] = json!(j.description);
    v["state"] = json!(job_state_name(j.state));
    v["owner"] = json!(j.owner);
    v["created_at_ms"] = json!(j.created_at_ms);
    v["updated_at_ms"] = json!(j.updated_at_ms);
    v
}

/// A task as `orca show --json` prints it: spec, state, result (artifact paths and sizes, not
/// contents; a git result without its patch) and the attempts that ended.
pub fn task_json(t: &pb::Task) -> Value {
    let spec = t.spec.clone().unwrap_or_default();
    let result = t.result.clone().unwrap_or_default();
    let usage = result.usage.unwrap_or_default();
    let mut v = json!({
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
        "artifact_bytes": result.artifacts.iter().map(|a| a.contents.len()).collect::<Vec<_>>(),
        "name": spec.name,
        "retries_used": t.retries_used,
        "max_retries": spec.max_retries.unwrap_or(0),
        "depends_on": spec.depends_on,
        "parent_task_id": spec.parent_task_id,
        "working_dir": spec.working_dir,
        "expected_outputs": spec.expected_outputs,
        "duration_ms": result.duration_ms,
        "in_place": result.in_place,
        "git": spec.git.as_ref().map(|g| json!({
            "repo": g.repo, "base": g.base, "branch": g.branch, "push": g.push, "builds_on": g.builds_on,
        })),
        "git_result": result.git.as_deref().map(git_json),
    });
    let more = json!({
        "verification": result.verification.iter().map(|v| json!({
            "command": v.command, "description": v.description, "passed": v.passed, "exit_code": v.exit_code,
            "output": v.output, "duration_ms": v.duration_ms,
        })).collect::<Vec<_>>(),
        "usage": {
            "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "cache_read_input_tokens": usage.cache_read_input_tokens,
            "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        },
        "num_turns": result.num_turns,
        "created_at_ms": t.created_at_ms,
        "updated_at_ms": t.updated_at_ms,
        "history": t.history.iter().map(|a| json!({
            "attempt": a.attempt, "worker_id": a.worker_id, "started_ms": a.started_ms, "ended_ms": a.ended_ms,
            "outcome": a.outcome, "reason": a.reason, "exit_code": a.exit_code, "cost_usd": a.cost_usd,
            "duration_ms": a.duration_ms, "output_tail": a.output_tail,
        })).collect::<Vec<_>>(),
    });
    if let (Some(v), Value::Object(more)) = (v.as_object_mut(), more) {
        v.extend(more);
    }
    v
}

/// A git task's result without its patch (`orca collect --out` writes that).
pub fn git_json(g: &pb::GitResult) -> Value {
    json!({
        "base_commit": g.base_commit, "commit": g.commit, "branch": g.branch, "pushed": g.pushed, "empty": g.empty,
        "files_changed": g.files_changed, "insertions": g.insertions, "deletions": g.deletions,
        "patch_bytes": g.patch.len(),
    })
}

/// The fleet's stats (`orca stats --json`).
pub fn stats_json(s: &pb::Stats) -> Value {
    let t = s.tasks.clone().unwrap_or_default();
    json!({
        "tasks": {"total_tasks": t.total_tasks, "waiting": t.waiting, "pending": t.pending,
                  "in_progress": t.in_progress, "completed": t.completed, "failed": t.failed,
                  "cancelled": t.cancelled},
        "queue": s.queue.iter().map(|q| json!({"priority": q.priority, "pending": q.pending})).collect::<Vec<_>>(),
        "throughput": s.throughput.iter().map(|b| json!({"start_ms": b.start_ms, "completed": b.completed, "failed": b.failed})).collect::<Vec<_>>(),
        "tasks_per_second": s.tasks_per_second,
        "workers_connected": s.workers_connected,
        "slots": s.slots,
        "slots_free": s.slots_free,
        "jobs": s.jobs,
        "time_ms": s.time_ms,
        "recent_failures": s.recent_failures.iter().map(|f| json!({
            "task_id": f.task_id, "job_id": f.job_id, "reason": f.reason, "worker_id": f.worker_id, "time_ms": f.time_ms,
        })).collect::<Vec<_>>(),
    })
}

/// A worker (`orca workers --json`).
pub fn worker_json(w: &pb::WorkerInfo) -> Value {
    json!({
        "worker_id": w.worker_id, "name": w.name, "hostname": w.hostname, "labels": w.labels,
        "slots": w.slots, "running_tasks": w.running_tasks, "last_seen_ms": w.last_seen_ms,
        "version": w.version, "draining": w.draining, "connected": w.connected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_use_short_state_names_and_leave_contents_out() {
        let t = pb::Task {
            task_id: 7,
            state: pb::TaskState::Completed as i32,
            result: Some(pb::TaskResult {
                artifacts: vec![pb::Artifact { path: "a.txt".into(), contents: b"hello".to_vec() }],
                git: Some(Box::new(pb::GitResult { patch: b"From x".to_vec(), ..Default::default() })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = task_json(&t);
        assert_eq!((v["state"].as_str(), v["priority"].as_i64()), (Some("completed"), Some(5)));
        assert_eq!((v["artifacts"][0].as_str(), v["artifact_bytes"][0].as_u64()), (Some("a.txt"), Some(5)));
        assert_eq!(v["git_result"]["patch_bytes"], 6);
        assert!(!v.to_string().contains("hello"), "contents stay out: {v}");
        assert_eq!(state_name(99), "unknown");
        let j = pb::Job { job_id: "j".into(), state: pb::JobState::Failed as i32, ..Default::default() };
        assert_eq!((job_json(&j)["state"].as_str(), job_json(&j)["job_id"].as_str()), (Some("failed"), Some("j")));
    }
}
