//! The client side of the run: the job, the submitter (AddTasks batches spread over the run,
//! retried with a new try number when a call gets no answer) and the progress monitor. The
//! [`Ledger`] is the truth the checks hold the database to: only answered calls count as
//! acknowledged; a call without an answer may or may not have committed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use orca_proto::pb;
use pb::orchestrator_client::OrchestratorClient;
use tokio::sync::Mutex;
use tonic::Code;
use tonic::transport::Channel;

use super::Args;
use super::plan::{plan_batch, specs};

/// Pause between tries of a call while the coordinator is down.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

pub struct AckedBatch {
    pub batch: usize,
    pub try_no: u32,
    pub ids: Vec<i64>,
    pub prompts: Vec<String>,
}

#[derive(Default)]
pub struct Ledger {
    pub acked: Vec<AckedBatch>,
    /// (batch, try): AddTasks calls without an answer; they may or may not have committed.
    pub unanswered: Vec<(usize, u32)>,
    pub create_job_retries: u32,
}

/// What the run's tasks share.
#[derive(Default)]
pub struct Shared {
    pub acked_tasks: AtomicU64,
    pub final_tasks: AtomicU64,
    pub submit_done: AtomicBool,
    /// An AddTasks call is in flight.
    pub adding: AtomicBool,
    pub stop: AtomicBool,
    /// The coordinator's last answer to GetJob.
    pub status: std::sync::Mutex<Option<pb::JobStatus>>,
}

impl Shared {
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub fn status(&self) -> pb::JobStatus {
        self.status.lock().unwrap().clone().unwrap_or_default()
    }
}

/// A lazily connecting client; `call_timeout` None for streams that last the whole run.
pub fn client(url: &str, call_timeout: Option<Duration>) -> Result<OrchestratorClient<Channel>> {
    let mut ep = tonic::transport::Endpoint::from_shared(url.to_string())?.connect_timeout(Duration::from_secs(2));
    if let Some(t) = call_timeout {
        ep = ep.timeout(t).tcp_nodelay(true);
    }
    Ok(crate::rpc::orchestrator(ep.connect_lazy()))
}

/// A call that failed this way may be tried again (the coordinator is down or restarting);
/// its effect, for a write, is unknown.
pub fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Aborted
            | Code::ResourceExhausted
    )
}

pub async fn create_job(url: &str, ledger: &Mutex<Ledger>) -> Result<String> {
    let mut c = client(url, Some(Duration::from_secs(30)))?;
    // One key for every retry: a CreateJob that committed before its answer was lost is not
    // made twice.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let request_id = format!("orca-chaos-{}-{nanos}", std::process::id());
    for _ in 0..600 {
        let req = pb::CreateJobRequest {
            description: "orca-chaos".into(),
            request_id: request_id.clone(),
            ..Default::default()
        };
        match c.create_job(req).await {
            Ok(j) => return Ok(j.into_inner().job_id),
            Err(s) if retryable(s.code()) => {
                ledger.lock().await.create_job_retries += 1;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(s) => bail!("CreateJob: {s}"),
        }
    }
    bail!("CreateJob kept failing")
}

/// Submits `--tasks` tasks in batches, keeping at most `--window` submitted but not final.
pub async fn submitter(
    url: String,
    job: String,
    args: Args,
    seed: u64,
    sh: Arc<Shared>,
    ledger: Arc<Mutex<Ledger>>,
) -> Result<()> {
    let mut c = client(&url, Some(Duration::from_secs(30)))?;
    let (mut planned, mut b) = (0usize, 0usize);
    while planned < args.tasks {
        let size = args.batch.min(args.tasks - planned);
        let plan = plan_batch(seed, b, size);
        planned += plan.len();
        while sh.acked_tasks.load(Ordering::SeqCst).saturating_sub(sh.final_tasks.load(Ordering::SeqCst)) > args.window
        {
            if sh.stopped() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut s = 0u32;
        while let Err(st) = add_batch(&mut c, &job, &plan, b, s, &sh, &ledger).await? {
            s += 1;
            if s > 3_000 || sh.stopped() {
                bail!("AddTasks of batch {b} kept failing: {st}");
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        b += 1;
    }
    sh.submit_done.store(true, Ordering::SeqCst);
    Ok(())
}

/// Try `s` of batch `b`: `Ok(Ok(()))` when answered (acknowledged), `Ok(Err(status))` when
/// unanswered and worth another try.
async fn add_batch(
    c: &mut OrchestratorClient<Channel>,
    job: &str,
    plan: &[super::plan::Planned],
    b: usize,
    s: u32,
    sh: &Shared,
    ledger: &Mutex<Ledger>,
) -> Result<Result<(), tonic::Status>> {
    let tasks = specs(plan, b, s);
    let prompts: Vec<String> = tasks.iter().map(|t| t.prompt.clone()).collect();
    sh.adding.store(true, Ordering::SeqCst);
    let answer = c.add_tasks(pb::AddTasksRequest { job_id: job.to_string(), tasks, ..Default::default() }).await;
    sh.adding.store(false, Ordering::SeqCst);
    match answer {
        Ok(r) => {
            let ids = r.into_inner().task_ids;
            if ids.len() != prompts.len() {
                bail!("AddTasks answered {} ids for {} tasks", ids.len(), prompts.len());
            }
            sh.acked_tasks.fetch_add(ids.len() as u64, Ordering::SeqCst);
            ledger.lock().await.acked.push(AckedBatch { batch: b, try_no: s, ids, prompts });
            Ok(Ok(()))
        }
        Err(st) if retryable(st.code()) => {
            ledger.lock().await.unanswered.push((b, s));
            Ok(Err(st))
        }
        Err(st) => bail!("AddTasks of batch {b} rejected: {st}"),
    }
}

/// Reads the job's status every 200 ms until the run stops.
pub async fn monitor(url: String, job: String, sh: Arc<Shared>) {
    let Ok(mut c) = client(&url, Some(Duration::from_secs(30))) else { return };
    while !sh.stopped() {
        if let Ok(s) = job_status(&mut c, &job).await {
            sh.final_tasks.store(s.completed + s.failed + s.cancelled, Ordering::SeqCst);
            *sh.status.lock().unwrap() = Some(s);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The coordinator's counts for the job (GetJob).
pub async fn job_status(c: &mut OrchestratorClient<Channel>, job: &str) -> Result<pb::JobStatus> {
    c.get_job(pb::GetJobRequest { job_id: job.to_string() })
        .await?
        .into_inner()
        .status
        .context("GetJob without a status")
}
