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
    type Kind = fn(Arc<Ctx>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
    let all: [(u32, &str, Kind); 11] = [
        (1, "1 chain", |c| Box::pin(graphs::chains(c))),
        (2, "2 dense", |c| Box::pin(graphs::dense(c))),
        (3, "3 labels", |c| Box::pin(graphs::label_sets(c))),
        (3, "3 labels", |c| Box::pin(graphs::registrations(c))),
        (4, "4 context", |c| Box::pin(payloads::context(c))),
        (5, "5 reasons", |c| Box::pin(payloads::reasons(c))),
        (6, "6 watchers", |c| Box::pin(streams::watchers(c))),
        (7, "7 pages", |c| Box::pin(payloads::pages(c))),
        (8, "8 listen", |c| Box::pin(streams::second_listen(c))),
        (9, "9 idle tcp", |c| Box::pin(streams::idle_tcp(c))),
        (10, "10 idempotency", |c| Box::pin(idem::requests(c))),
    ];
    let kinds: Vec<(&str, tokio::task::JoinHandle<()>)> = all
        .into_iter()
        .filter(|(n, _, _)| ctx.args.wants(*n))
        .map(|(_, name, kind)| (name, tokio::spawn(kind(ctx.clone()))))
        .collect();
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
