//! Hostile kind 10, refusals and replays: CreateJob and AddTasks sent twice with the same
//! `request_id` (the second must answer the first's result), the same key with other tasks
//! (INVALID_ARGUMENT), and RetryTasks on a cancelled job (FAILED_PRECONDITION), by job and
//! by task ids.
//!
//! What stays true here: a replay that answers a different job or other task ids is a
//! finding, whatever its code.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use orca_proto::pb;
use tonic::Code;

use super::{Ctx, OK, spec};
use crate::soak::conn::Orchestrator;

const K: &str = "10 idempotency";

/// One round every 500 ms, each with a fresh key.
pub async fn requests(ctx: Arc<Ctx>) {
    let Ok(mut c) = ctx.orchestrator() else { return };
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let run = format!("soak-{}-{nanos}", std::process::id());
    let mut n = 0;
    while ctx.running() {
        let key = format!("{run}-{n}");
        n += 1;
        if let Some(job) = replayed_job(&ctx, &mut c, &key).await {
            let ids = replayed_tasks(&ctx, &mut c, &job, &key).await;
            let req = pb::CancelJobRequest { job_id: job.clone(), reason: "soak: then retry".into() };
            let _ = ctx.tally.call(K, "CancelJob", OK, c.cancel_job(req)).await;
            let fp = &[Code::FailedPrecondition];
            let req = pb::RetryTasksRequest { job_id: job.clone(), task_ids: vec![] };
            let _ = ctx.tally.call(K, "RetryTasks (cancelled job)", fp, c.retry_tasks(req)).await;
            let req = pb::RetryTasksRequest { job_id: job, task_ids: ids };
            let _ = ctx.tally.call(K, "RetryTasks (its task ids)", fp, c.retry_tasks(req)).await;
        }
        ctx.pause(Duration::from_millis(500)).await;
    }
}

/// CreateJob twice with `key`: both answer the same job.
async fn replayed_job(ctx: &Ctx, c: &mut Orchestrator, key: &str) -> Option<String> {
    let req = pb::CreateJobRequest {
        description: "orca-soak idempotency".into(),
        request_id: key.into(),
        ..Default::default()
    };
    let a = ctx.tally.call(K, "CreateJob", OK, c.create_job(req.clone())).await.ok()?;
    let b = ctx.tally.call(K, "CreateJob (repeated)", OK, c.create_job(req)).await.ok()?;
    if a.job_id != b.job_id {
        ctx.tally.finding(K, format!("CreateJob with key {key} answered job {} then {}", a.job_id, b.job_id));
    }
    Some(a.job_id)
}

/// AddTasks twice with `key` (the same ids), then once with other tasks (refused).
async fn replayed_tasks(ctx: &Ctx, c: &mut Orchestrator, job: &str, key: &str) -> Vec<i64> {
    let tasks: Vec<pb::TaskSpec> = (0..3).map(|i| spec(format!("idem {i}"), vec![])).collect();
    let req = pb::AddTasksRequest { job_id: job.into(), tasks, request_id: key.into() };
    let first = ctx.tally.call(K, "AddTasks", OK, c.add_tasks(req.clone())).await;
    let again = ctx.tally.call(K, "AddTasks (repeated)", OK, c.add_tasks(req.clone())).await;
    if let (Ok(a), Ok(b)) = (&first, &again)
        && a.task_ids != b.task_ids
    {
        ctx.tally.finding(K, format!("AddTasks with key {key} answered {:?} then {:?}", a.task_ids, b.task_ids));
    }
    let mut other = req;
    other.tasks[0].prompt = "idem other".into();
    let call = "AddTasks (key reused, other tasks)";
    let _ = ctx.tally.call(K, call, &[Code::InvalidArgument], c.add_tasks(other)).await;
    first.map(|r| r.task_ids).unwrap_or_default()
}
