//! Hostile kinds 4, 5 and 7, large payloads within the limits: a job's shared context
//! filled to `MAX_CONTEXT_SCOPE_BYTES` with values of `MAX_CONTEXT_VALUE_BYTES` while the
//! noop workers run its tasks (each Listen stream carries the scope); CancelJob with a
//! reason of `MAX_REASON_BYTES` on jobs of hundreds of tasks (the reason lands on each);
//! and ListTasks pages of tasks that carry ~1 MiB context files each.
//!
//! What stays true here: a limit that is not enforced (a scope that takes more than its
//! bytes, a page larger than `MAX_PAGE_BYTES` allows) is a finding like a wrong code.

use std::sync::Arc;
use std::time::Duration;

use orca_proto::contract::limits::{
    MAX_BATCH_BYTES, MAX_CONTEXT_BYTES, MAX_CONTEXT_SCOPE_BYTES, MAX_CONTEXT_VALUE_BYTES, MAX_MESSAGE_BYTES,
    MAX_PAGE_BYTES, MAX_PAGE_SIZE, MAX_REASON_BYTES,
};
use orca_proto::pb;
use prost::Message;
use tonic::Code;

use super::{Ctx, OK, spec};
use crate::soak::conn::Orchestrator;

/// Tasks added to a job with a full context scope, twice per job.
const CONTEXT_TASKS: usize = 200;
/// Tasks of a job cancelled with a long reason.
const REASON_TASKS: usize = 500;
/// Bytes of the one context file of a paged task.
const PAGED_FILE_BYTES: usize = MAX_CONTEXT_BYTES / 8;
/// Batches of paged tasks at the start; one more is added every [`PAGED_BATCH_EVERY`].
const PAGED_BATCHES: usize = 3;
const PAGED_BATCH_EVERY: Duration = Duration::from_secs(30);

/// A value of exactly `len` bytes, different for each `seed`.
fn filler(seed: usize, len: usize) -> String {
    let c = (b'a' + (seed % 26) as u8) as char;
    std::iter::repeat_n(c, len).collect()
}

/// 4: fill a new job's scope until RESOURCE_EXHAUSTED, run tasks of the job, rewrite one
/// value (same size: it must still fit), run more tasks; a new job every 2 s.
pub async fn context(ctx: Arc<Ctx>) {
    const K: &str = "4 context";
    let Ok(mut c) = ctx.orchestrator() else { return };
    let fits = MAX_CONTEXT_SCOPE_BYTES / MAX_CONTEXT_VALUE_BYTES;
    let mut n = 0;
    while ctx.running() {
        let Some(job) = ctx.job(&mut c, K).await else {
            ctx.pause(Duration::from_secs(1)).await;
            continue;
        };
        let mut stored = 0;
        for k in 0..=fits + 1 {
            let req = pb::SetContextRequest {
                job_id: job.clone(),
                key: format!("k{k}"),
                value: filler(n + k, MAX_CONTEXT_VALUE_BYTES),
            };
            match ctx.tally.call(K, "SetContext", &[Code::Ok, Code::ResourceExhausted], c.set_context(req)).await {
                Ok(_) => stored += 1,
                Err(_) => break,
            }
        }
        if stored > fits {
            let bytes = stored * MAX_CONTEXT_VALUE_BYTES;
            ctx.tally.finding(K, format!("job {job}: the scope took {stored} values ({bytes} bytes)"));
        }
        let tasks =
            |round: usize| (0..CONTEXT_TASKS).map(|i| spec(format!("context {n}.{round} {i}"), vec![])).collect();
        ctx.add(&mut c, K, &job, tasks(0)).await;
        let req = pb::SetContextRequest {
            job_id: job.clone(),
            key: "k0".into(),
            value: filler(n + 13, MAX_CONTEXT_VALUE_BYTES),
        };
        let _ = ctx.tally.call(K, "SetContext (rewrite)", OK, c.set_context(req)).await;
        ctx.add(&mut c, K, &job, tasks(1)).await;
        n += 1;
        ctx.pause(Duration::from_secs(2)).await;
    }
}

/// 5: a job of [`REASON_TASKS`] tasks cancelled at once with a reason of
/// `MAX_REASON_BYTES`; every 2 s.
pub async fn reasons(ctx: Arc<Ctx>) {
    const K: &str = "5 reasons";
    let Ok(mut c) = ctx.orchestrator() else { return };
    let reason = filler(17, MAX_REASON_BYTES);
    while ctx.running() {
        let Some(job) = ctx.job(&mut c, K).await else {
            ctx.pause(Duration::from_secs(1)).await;
            continue;
        };
        let tasks = (0..REASON_TASKS).map(|i| spec(format!("reason {i}"), vec![])).collect();
        if ctx.add(&mut c, K, &job, tasks).await.is_some() {
            let req = pb::CancelJobRequest { job_id: job.clone(), reason: reason.clone() };
            if let Ok(j) = ctx.tally.call(K, "CancelJob", OK, c.cancel_job(req)).await {
                if j.state != pb::JobState::Cancelled as i32 {
                    ctx.tally.finding(K, format!("job {job} answered state {} after CancelJob", j.state));
                }
                ctx.tally
                    .add("5 reasons: tasks cancelled with the long reason", j.status.unwrap_or_default().cancelled);
            }
        }
        ctx.pause(Duration::from_secs(2)).await;
    }
}

/// One batch of paged tasks: as many ~1 MiB tasks as fit `MAX_BATCH_BYTES` with room.
fn paged_batch(b: usize) -> Vec<pb::TaskSpec> {
    let per = (MAX_BATCH_BYTES / (PAGED_FILE_BYTES + 4_096)).saturating_sub(4).max(1);
    (0..per)
        .map(|i| pb::TaskSpec {
            context_files: vec![pb::ContextFile {
                path: "big.txt".into(),
                contents: filler(b + i, PAGED_FILE_BYTES).into_bytes(),
            }],
            ..spec(format!("paged {b} {i}"), vec![])
        })
        .collect()
}

/// 7: [`PAGED_BATCHES`] batches of ~1 MiB tasks, then ListTasks pages over them (spec and
/// result included, `MAX_PAGE_SIZE` a page) back to back, one more batch now and then.
pub async fn pages(ctx: Arc<Ctx>) {
    const K: &str = "7 pages";
    let Ok(mut c) = ctx.orchestrator() else { return };
    let Some(job) = ctx.job(&mut c, K).await else { return };
    let mut batches = 0;
    let mut added = tokio::time::Instant::now();
    while ctx.running() {
        if batches < PAGED_BATCHES || added.elapsed() > PAGED_BATCH_EVERY {
            ctx.add(&mut c, K, &job, paged_batch(batches)).await;
            (batches, added) = (batches + 1, tokio::time::Instant::now());
            continue;
        }
        walk_pages(&ctx, &mut c, &job).await;
        ctx.pause(Duration::from_millis(100)).await;
    }
}

/// Pages through the job once; a page over its byte bound is a finding.
async fn walk_pages(ctx: &Ctx, c: &mut Orchestrator, job: &str) {
    const K: &str = "7 pages";
    let mut token = String::new();
    loop {
        let req = pb::ListTasksRequest {
            job_id: job.to_string(),
            page_size: MAX_PAGE_SIZE,
            page_token: token.clone(),
            ..Default::default()
        };
        let Ok(page) = ctx.tally.call(K, "ListTasks", OK, c.list_tasks(req)).await else { return };
        let bytes = page.encoded_len();
        // A page holds at least one task, whatever its size; past that, the tasks' bytes stay
        // under MAX_PAGE_BYTES (plus each task's field tag and length, and the token).
        let framing = 16 * page.tasks.len() + 64;
        if page.tasks.len() > 1 && bytes > MAX_PAGE_BYTES + framing || bytes > MAX_MESSAGE_BYTES {
            ctx.tally.finding(K, format!("a page of {} tasks is {bytes} bytes", page.tasks.len()));
        }
        ctx.tally.add("7 pages: pages read", 1);
        ctx.tally.add("7 pages: MiB read", (bytes >> 20) as u64);
        if page.next_page_token.is_empty() {
            return;
        }
        if page.tasks.is_empty() {
            ctx.tally.finding(K, "an empty page with a next_page_token");
            return;
        }
        token = page.next_page_token;
    }
}
