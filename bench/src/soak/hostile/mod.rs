//! The hostile mix: ten kinds of calls, each within the documented limits
//! (`orca_proto::contract::limits`), each kind in its own tasks on its own connections,
//! running the whole hostile phase beside the normal workload. Every call's code is counted
//! in the [`Tally`]; a code outside the kind's expected ones is a finding.
//!
//! Layout: [`graphs`] (1 chains cancelled at the head, 2 dense graphs, 3 label sets and
//! registrations), [`payloads`] (4 full context scopes, 5 long cancel reasons, 7 pages of
//! big tasks), [`streams`] (6 watchers that never read, 8 a second Listen, 9 idle TCP),
//! [`idem`] (10 retries on cancelled jobs, repeated request ids).
//!
//! What stays true here: every kind stops at the phase's deadline and drops what it holds
//! (streams, connections) when it returns, so the coordinator is stopped without them.

mod graphs;
mod idem;
mod payloads;
mod streams;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use orca_proto::pb;
use pb::orchestrator_client::OrchestratorClient;
use tonic::Code;
use tonic::transport::Channel;

use super::Args;
use super::conn;
use super::tally::Tally;

/// Bound on a kind's return after the deadline (its last call may still be running).
const FINISH_WITHIN: Duration = Duration::from_secs(90);

/// What every hostile task shares.
pub struct Ctx {
    pub url: String,
    /// host:port, for raw TCP.
    pub addr: String,
    pub deadline: Instant,
    pub len: Duration,
    pub args: Args,
    pub tally: Arc<Tally>,
}

pub const OK: &[Code] = &[Code::Ok];

impl Ctx {
    pub fn running(&self) -> bool {
        Instant::now() < self.deadline
    }

    /// Sleeps `d`, or until the deadline; whether the phase still runs.
    pub async fn pause(&self, d: Duration) -> bool {
        tokio::time::sleep_until((Instant::now() + d).min(self.deadline).into()).await;
        self.running()
    }

    pub fn orchestrator(&self) -> Result<OrchestratorClient<Channel>> {
        conn::orchestrator(&self.url)
    }

    /// A new job; counted under `kind`.
    pub async fn job(&self, c: &mut OrchestratorClient<Channel>, kind: &str) -> Option<String> {
        let req = pb::CreateJobRequest { description: format!("orca-soak {kind}"), ..Default::default() };
        self.tally.call(kind, "CreateJob", OK, c.create_job(req)).await.ok().map(|j| j.job_id)
    }

    /// AddTasks of `tasks`, counted under `kind`; the new ids.
    pub async fn add(
        &self,
        c: &mut OrchestratorClient<Channel>,
        kind: &str,
        job: &str,
        tasks: Vec<pb::TaskSpec>,
    ) -> Option<Vec<i64>> {
        let req = pb::AddTasksRequest { job_id: job.to_string(), tasks, ..Default::default() };
        self.tally.call(kind, "AddTasks", OK, c.add_tasks(req)).await.ok().map(|r| r.task_ids)
    }
}

/// A task with a prompt and dependencies (`-N`: the N-th task of the batch).
pub fn spec(prompt: String, depends_on: Vec<i64>) -> pb::TaskSpec {
    pb::TaskSpec { prompt, depends_on, ..Default::default() }
}

/// Runs every kind until `ctx.deadline`; a kind that has not returned [`FINISH_WITHIN`]
/// after it is a finding (a call or stream stuck past its bounds).
pub async fn run(ctx: Arc<Ctx>) {
    let kinds: Vec<(&str, tokio::task::JoinHandle<()>)> = vec![
        ("1 chain", tokio::spawn(graphs::chains(ctx.clone()))),
        ("2 dense", tokio::spawn(graphs::dense(ctx.clone()))),
        ("3 labels", tokio::spawn(graphs::label_sets(ctx.clone()))),
        ("3 labels", tokio::spawn(graphs::registrations(ctx.clone()))),
        ("4 context", tokio::spawn(payloads::context(ctx.clone()))),
        ("5 reasons", tokio::spawn(payloads::reasons(ctx.clone()))),
        ("6 watchers", tokio::spawn(streams::watchers(ctx.clone()))),
        ("7 pages", tokio::spawn(payloads::pages(ctx.clone()))),
        ("8 listen", tokio::spawn(streams::second_listen(ctx.clone()))),
        ("9 idle tcp", tokio::spawn(streams::idle_tcp(ctx.clone()))),
        ("10 idempotency", tokio::spawn(idem::requests(ctx.clone()))),
    ];
    let bound = ctx.deadline + FINISH_WITHIN;
    for (kind, h) in kinds {
        let abort = h.abort_handle();
        match tokio::time::timeout_at(bound.into(), h).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => ctx.tally.finding(kind, format!("the task failed: {e}")),
            Err(_) => {
                abort.abort();
                ctx.tally.finding(kind, format!("still running {FINISH_WITHIN:?} after the deadline"));
            }
        }
    }
}
