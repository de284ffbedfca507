//! Hostile kinds 1-3, the scheduler's graphs and label sets: a chain of `MAX_BATCH` tasks
//! cancelled at its head (one cancellation walks the whole chain); batches at
//! `MAX_BATCH_EDGES` dependency edges; and AddTasks of 1,000 tasks with a label set each,
//! beside a stream of Register calls of fresh worker ids that never Listen.
//!
//! What stays true here: each kind checks what the contract promises of its answer (a
//! cancelled head leaves no task of its chain unfinished), not only the code.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orca_proto::contract::limits::{MAX_BATCH, MAX_BATCH_EDGES, MAX_DEPENDENCIES};
use orca_proto::pb;
use tonic::Code;

use super::{Ctx, OK, spec};
use crate::soak::conn;

/// Tasks with a label set each, per AddTasks call.
const LABEL_TASKS: usize = 1_000;
/// Concurrent Register callers (one call at a time each).
const REGISTER_CALLERS: u64 = 8;

/// 1: a chain of `MAX_BATCH` tasks (task i depends on the one before it), then CancelTask
/// on its head. A head the noop workers already finished answers FAILED_PRECONDITION; the
/// chain's job is then cancelled instead, so chains do not pile up.
pub async fn chains(ctx: Arc<Ctx>) {
    const K: &str = "1 chain";
    let Ok(mut c) = ctx.orchestrator() else { return };
    while ctx.running() {
        let Some(job) = ctx.job(&mut c, K).await else {
            ctx.pause(Duration::from_secs(1)).await;
            continue;
        };
        let tasks = (0..MAX_BATCH).map(|i| spec(format!("chain {i}"), if i == 0 { vec![] } else { vec![-(i as i64)] }));
        if let Some(ids) = ctx.add(&mut c, K, &job, tasks.collect()).await {
            let req = pb::CancelTaskRequest { task_id: ids[0], reason: "soak: cancel the head".into() };
            let cancel =
                ctx.tally.call(K, "CancelTask", &[Code::Ok, Code::FailedPrecondition], c.cancel_task(req)).await;
            if cancel.is_ok() {
                chain_all_final(&ctx, &mut c, &job).await;
            } else {
                let req = pb::CancelJobRequest { job_id: job.clone(), reason: "soak: head already ran".into() };
                let _ = ctx.tally.call(K, "CancelJob", OK, c.cancel_job(req)).await;
            }
        }
        ctx.pause(Duration::from_secs(2)).await;
    }
}

/// After its head was cancelled, every task of a chain is final (the cancellation of the
/// dependents commits with the head's).
async fn chain_all_final(ctx: &Ctx, c: &mut conn::Orchestrator, job: &str) {
    const K: &str = "1 chain";
    let req = pb::GetJobRequest { job_id: job.to_string() };
    if let Ok(j) = ctx.tally.call(K, "GetJob", OK, c.get_job(req)).await {
        let s = j.status.unwrap_or_default();
        let open = s.waiting + s.pending + s.in_progress;
        if open > 0 {
            ctx.tally.finding(K, format!("job {job}: {open} tasks not final after its head was cancelled ({s:?})"));
        }
        ctx.tally.add("1 chain: tasks cancelled with their head", s.cancelled);
    }
}

/// 2: `MAX_DEPENDENCIES` roots, then `MAX_BATCH_EDGES / MAX_DEPENDENCIES` tasks that each
/// depend on every root: exactly `MAX_BATCH_EDGES` edges in one call.
pub async fn dense(ctx: Arc<Ctx>) {
    const K: &str = "2 dense";
    let Ok(mut c) = ctx.orchestrator() else { return };
    let Some(job) = ctx.job(&mut c, K).await else { return };
    let roots = MAX_DEPENDENCIES;
    let joins = (MAX_BATCH_EDGES / MAX_DEPENDENCIES).min(MAX_BATCH - roots);
    let mut n = 0;
    while ctx.running() {
        let all_roots: Vec<i64> = (1..=roots as i64).map(|j| -j).collect();
        let tasks = (0..roots)
            .map(|i| spec(format!("dense {n} root {i}"), vec![]))
            .chain((0..joins).map(|i| spec(format!("dense {n} join {i}"), all_roots.clone())))
            .collect();
        ctx.add(&mut c, K, &job, tasks).await;
        n += 1;
        ctx.pause(Duration::from_secs(2)).await;
    }
    ctx.tally.note("2 dense: edges per call", roots * joins);
}

/// The label set of task `i` of call `n`: one label unique to it, and three shared ones.
fn label_set(n: usize, i: usize) -> HashMap<String, String> {
    [("soak-set", format!("n{n}-{i}")), ("soak-zone", format!("z{}", i % 7)), ("soak-a", "x".into())]
        .into_iter()
        .chain([("soak-b", format!("b{}", i % 3))])
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// 3a: AddTasks of `LABEL_TASKS` tasks, each requiring a label set no other task has. No
/// connected worker carries those labels, so they stay pending (and in memory) all phase.
pub async fn label_sets(ctx: Arc<Ctx>) {
    const K: &str = "3 labels";
    let Ok(mut c) = ctx.orchestrator() else { return };
    let Some(job) = ctx.job(&mut c, K).await else { return };
    let mut n = 0;
    while ctx.running() {
        let tasks = (0..LABEL_TASKS)
            .map(|i| pb::TaskSpec { required_labels: label_set(n, i), ..spec(format!("labels {n} {i}"), vec![]) })
            .collect();
        if ctx.add(&mut c, K, &job, tasks).await.is_some() {
            ctx.tally.add("3 labels: distinct label sets", LABEL_TASKS as u64);
        }
        n += 1;
        ctx.pause(Duration::from_secs(3)).await;
    }
}

/// 3b: `--registrations` Register calls of fresh worker ids over the phase, spread evenly
/// over [`REGISTER_CALLERS`] callers; each carries one of the tasks' label sets, so the
/// coordinator works out what it could run. None of them ever Listens.
pub async fn registrations(ctx: Arc<Ctx>) {
    let Ok(gw) = conn::gateway(&ctx.url) else { return };
    let per_caller = ctx.args.registrations / REGISTER_CALLERS;
    let every = ctx.len.div_f64(per_caller.max(1) as f64);
    let mut callers = Vec::new();
    for k in 0..REGISTER_CALLERS {
        let (ctx, mut gw) = (ctx.clone(), gw.clone());
        callers.push(tokio::spawn(async move {
            let start = Instant::now();
            for r in 0..per_caller {
                tokio::time::sleep_until((start + every.mul_f64(r as f64)).into()).await;
                if !ctx.running() {
                    break;
                }
                let id = k + r * REGISTER_CALLERS;
                let req = pb::RegisterRequest {
                    worker_id: format!("soak-reg-{id}"),
                    name: format!("soak registration {id}"),
                    labels: label_set((id % 50) as usize, (id % LABEL_TASKS as u64) as usize),
                    slots: 1,
                    ..Default::default()
                };
                let _ = ctx.tally.call("3 labels", "Register", OK, gw.register(req)).await;
            }
        }));
    }
    for h in callers {
        let _ = h.await;
    }
    // Callers make one call at a time: slow answers leave registrations unmade.
    ctx.tally.note("3 labels: Register calls planned", per_caller * REGISTER_CALLERS);
}
