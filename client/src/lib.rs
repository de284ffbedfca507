//! `orca-client`: a typed async client for Orca's `orca.v1.Orchestrator` service, with the
//! calls of the orchestrator guide of the system Orca replaces (docs/design.md, "The system it
//! replaces"): create a job, add subtasks, wait and collect, job status, completed and failed
//! tasks, retry failed tasks, cancel, shared context, quick delegation and result synthesis,
//! plus [`Client::watch`], a resumable stream of a job's events.
//!
//! Waiting is driven by the WatchJob stream, never by polling. Errors are [`Error`], not raw
//! gRPC statuses.
//!
//! ```no_run
//! use orca_client::{Client, Subtask};
//! use std::time::Duration;
//!
//! # async fn demo() -> Result<(), orca_client::Error> {
//! let client = Client::connect("http://127.0.0.1:50051").await?;
//! let job = client.create_job("Generate utility functions").await?;
//! client.add_subtask(&job, Subtask::new("Create factorial function").priority(5)).await?;
//! client.add_subtask(&job, Subtask::new("Create fibonacci function").priority(5)).await?;
//! let collected = client.wait_and_collect(&job, Some(Duration::from_secs(600))).await?;
//! for (id, r) in &collected.results {
//!     println!("task {id}: {} {}", r.state.short_name(), r.output);
//! }
//! assert!(collected.unfinished.is_empty());
//! # Ok(())
//! # }
//! ```

mod artifacts;
pub mod git;
mod json;
mod subtask;
pub mod time;
mod watch;

pub use artifacts::{Destination, Skipped, Written};
pub use git::{Applied, GitCheckout, apply_patches};
pub use json::{json_to_struct, struct_to_json};
pub use orca_proto::pb;
pub use subtask::Subtask;
pub use watch::WatchOptions;

/// A new job's options beyond its description.
#[derive(Clone, Debug, Default)]
pub struct JobOptions {
    /// A JSON object.
    pub metadata: Option<serde_json::Value>,
    /// Its share of the workers against other jobs at the same priority (0: the default, 1).
    pub weight: u32,
    /// At most this many of its tasks run at once (0: no limit).
    pub max_running: u32,
    /// No new attempt once its attempts reported this much cost, in US dollars (0: none).
    pub budget_usd: f64,
}

impl JobOptions {
    /// The CreateJob request for a job with these options (also a schedule's job template).
    pub fn request(&self, description: &str) -> Result<pb::CreateJobRequest, Error> {
        Ok(pb::CreateJobRequest {
            description: description.to_string(),
            metadata: self.metadata.as_ref().map(json_to_struct).transpose()?,
            weight: self.weight,
            max_running: self.max_running,
            budget_usd: self.budget_usd,
            ..Default::default()
        })
    }
}

/// What [`Client::update_job`] changes (`None`: unchanged).
#[derive(Clone, Copy, Debug, Default)]
pub struct JobUpdate {
    pub weight: Option<u32>,
    /// 0 removes the limit.
    pub max_running: Option<u32>,
    /// 0 removes the budget.
    pub budget_usd: Option<f64>,
    pub paused: Option<bool>,
}

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use pb::orchestrator_client::OrchestratorClient;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint};

/// Largest message the client sends or accepts: the contract's.
const MAX_MESSAGE_BYTES: usize = orca_proto::contract::limits::MAX_MESSAGE_BYTES;
/// Tasks per ListTasks page when collecting.
const PAGE: u32 = 1_000;

/// What can go wrong in a client call. The variant says what happened: the address was
/// malformed, the connection failed, the coordinator refused the request (with its message,
/// which names the field or id), the coordinator was unavailable, a wait ran out of time, or
/// another gRPC error. A variant with a cause keeps it as its
/// [`source`](std::error::Error::source); its message repeats the cause's first line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The coordinator address is not a valid URL.
    #[error("cannot connect to {url}: {source}")]
    InvalidAddress {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// A list of coordinator addresses (`URL,URL`) with a bad or empty element; the message
    /// names it.
    #[error("bad coordinator address: {0}")]
    InvalidAddressList(String),
    /// The coordinator cannot be reached (refused, unreachable, connect timeout, a failed
    /// TLS handshake); the message carries the causes.
    #[error("cannot connect to {url}: {}", orca_proto::tls::chain(source))]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The request is malformed: refused by the coordinator (the message names the field) or
    /// caught here before sending (metadata that is not a JSON object).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A job or task id names nothing (the coordinator's message names it).
    #[error("not found: {0}")]
    NotFound(String),
    /// The call is not allowed in the current state (e.g. cancelling a completed task).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// The coordinator is down, restarting or shutting down, or the connection broke (gRPC
    /// UNAVAILABLE or CANCELLED); retrying may help. The status keeps the transport cause.
    #[error("coordinator unavailable: {}", with_causes(.0))]
    Unavailable(#[source] tonic::Status),
    /// What the caller waited for (named here) was not final when its timeout passed.
    #[error("{0} did not finish before the timeout")]
    Timeout(String),
    /// No token, or one the coordinator does not know (UNAUTHENTICATED).
    #[error("unauthenticated: {0} (set ORCA_TOKEN_FILE or ORCA_TOKEN)")]
    Unauthenticated(String),
    /// The token's role or ownership does not allow the call (PERMISSION_DENIED).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The token could not be read or is not usable.
    #[error("token: {0}")]
    Token(String),
    /// The TLS settings cannot be used (a file that cannot be read, a key without its
    /// certificate, TLS files with an http:// URL).
    #[error("TLS: {0}")]
    Tls(String),
    /// An artifact could not be written (the path names the file or directory).
    #[error("cannot write {path}: {source}")]
    Artifacts {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A git command on the caller's checkout failed, or the checkout cannot be used as it is
    /// (see [`git`]).
    #[error("git: {0}")]
    Git(String),
    /// Any other gRPC status (INTERNAL, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, ...).
    #[error("{:?}: {}", .0.code(), with_causes(.0))]
    Rpc(#[source] tonic::Status),
}

/// A status's message and the causes under it (a refused TLS handshake says why only there).
fn with_causes(s: &tonic::Status) -> String {
    use std::error::Error as _;
    match s.source() {
        Some(cause) => format!("{}: {}", s.message(), orca_proto::tls::chain(cause)),
        None => s.message().to_string(),
    }
}

impl Error {
    /// True when retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::Connect { .. })
    }
}

/// The coordinator's refusals (bad input, unknown id, wrong state) carry only its message:
/// that message is the whole answer. Other statuses are kept whole, with their cause.
impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        match s.code() {
            tonic::Code::InvalidArgument => Error::InvalidArgument(s.message().to_string()),
            tonic::Code::NotFound => Error::NotFound(s.message().to_string()),
            tonic::Code::FailedPrecondition => Error::FailedPrecondition(s.message().to_string()),
            tonic::Code::Unavailable | tonic::Code::Cancelled => Error::Unavailable(s),
            tonic::Code::Unauthenticated => Error::Unauthenticated(s.message().to_string()),
            tonic::Code::PermissionDenied => Error::PermissionDenied(s.message().to_string()),
            _ => Error::Rpc(s),
        }
    }
}

/// A finished (or, on timeout, unfinished) task in [`Collected`].
#[derive(Clone, Debug, PartialEq)]
pub struct TaskOutcome {
    pub task_id: i64,
    /// Completed, failed or cancelled (or the state of a task not finished in time);
    /// `state.short_name()` is the contract's lowercase name.
    pub state: pb::TaskState,
    pub prompt: String,
    pub output: String,
    pub error: String,
    /// Why it failed or was cancelled.
    pub reason: String,
    pub attempts: u32,
    /// The task's `working_dir` and expected outputs, where its artifacts belong
    /// ([`TaskOutcome::write_artifacts`]).
    pub working_dir: String,
    pub expected_outputs: Vec<String>,
    pub result: Option<pb::TaskResult>,
}

impl TaskOutcome {
    fn of(t: &pb::Task) -> TaskOutcome {
        let state = pb::TaskState::try_from(t.state).unwrap_or(pb::TaskState::Unspecified);
        let result = t.result.clone();
        let spec = t.spec.clone().unwrap_or_default();
        TaskOutcome {
            task_id: t.task_id,
            state,
            prompt: spec.prompt,
            working_dir: spec.working_dir,
            expected_outputs: spec.expected_outputs,
            output: result.as_ref().map(|r| r.output.clone()).unwrap_or_default(),
            error: result.as_ref().map(|r| r.error.clone()).unwrap_or_default(),
            reason: t.reason.clone(),
            attempts: t.attempts,
            result,
        }
    }

    pub fn is_completed(&self) -> bool {
        self.state == pb::TaskState::Completed
    }

    /// For a task with a git source: its commit, patch and diff stats.
    pub fn git(&self) -> Option<&pb::GitResult> {
        self.result.as_ref().and_then(|r| r.git.as_deref())
    }
}

/// What [`Client::wait_and_collect`] returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Collected {
    /// Every task in a final state, by id.
    pub results: BTreeMap<i64, TaskOutcome>,
    /// Tasks not final when the wait ended (only on timeout); never marked complete.
    pub unfinished: Vec<i64>,
    /// The job's counts at the end.
    pub status: pb::JobStatus,
    /// True when the timeout passed before every task was final.
    pub timed_out: bool,
}

/// The URLs of a coordinator address (one, or several separated by commas).
fn coordinator_urls(url: &str) -> Result<Vec<String>, Error> {
    match orca_proto::contract::coordinator_urls(url) {
        Ok(urls) => Ok(urls),
        // One malformed URL: the transport's own error, as before lists were taken.
        Err(_) if !url.contains(',') => Ok(vec![url.trim().to_string()]),
        Err(e) => Err(Error::InvalidAddressList(e)),
    }
}

/// The endpoint of a coordinator address, with the TLS settings applied.
fn endpoint(url: &str, tls: &orca_proto::tls::ClientTls) -> Result<Endpoint, Error> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|source| Error::InvalidAddress { url: url.to_string(), source })?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10));
    tls.apply(url, endpoint).map_err(Error::Tls)
}

/// A connection to a coordinator. Cheap to clone; clones share the connection.
#[derive(Clone, Debug)]
pub struct Client {
    inner: OrchestratorClient<Channel>,
    url: String,
    /// `Bearer <token>`, sent with every call when set.
    bearer: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    /// With several coordinator URLs (standby coordinators): all of them, and the TLS
    /// settings, to find the leader again after a failover.
    standbys: Option<Arc<(Vec<String>, orca_proto::tls::ClientTls)>>,
}

/// How long a probe of one coordinator's health may take when picking the leader.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Of several coordinators, the leader: the first whose gRPC health says SERVING for
/// `orca.v1.Orchestrator`; else the first that answers at all (its calls then say who
/// leads); else `Error::Connect` for the first.
async fn pick_leader(urls: &[String], tls: &orca_proto::tls::ClientTls) -> Result<(String, Channel), Error> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut answered: Option<(String, Channel)> = None;
    let mut first_error = None;
    for url in urls {
        let channel = match tokio::time::timeout(PROBE_TIMEOUT, endpoint(url, tls)?.connect()).await {
            Ok(Ok(c)) => c,
            Ok(Err(source)) => {
                first_error.get_or_insert(Error::Connect { url: url.clone(), source });
                continue;
            }
            Err(_) => continue,
        };
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let req = tonic_health::pb::HealthCheckRequest { service: "orca.v1.Orchestrator".into() };
        match tokio::time::timeout(PROBE_TIMEOUT, health.check(req)).await {
            Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32 => return Ok((url.clone(), channel)),
            Ok(_) => {
                answered.get_or_insert((url.clone(), channel));
            }
            Err(_) => {}
        }
    }
    match (answered, first_error) {
        (Some(a), _) => Ok(a),
        (None, Some(e)) => Err(e),
        (None, None) => Err(Error::Unavailable(tonic::Status::unavailable(format!(
            "no coordinator of {} answered within {} s",
            urls.join(","),
            PROBE_TIMEOUT.as_secs()
        )))),
    }
}

impl Client {
    /// Connects to a coordinator (`http://host:port`): [`Error::InvalidAddress`] for a
    /// malformed address, [`Error::Connect`] when nothing answers within 10 s.
    pub async fn connect(url: &str) -> Result<Client, Error> {
        Client::connect_tls(url, &orca_proto::tls::ClientTls::default()).await
    }

    /// Connects with TLS settings: an `https://` URL is TLS, verified against `tls.ca` (or the
    /// system's roots), presenting `tls.cert` and `tls.key` when set (mutual TLS).
    ///
    /// `url` may list several coordinators separated by commas (standby coordinators): the
    /// client connects to the leader among them (see [`Client::follow_leader`]).
    pub async fn connect_tls(url: &str, tls: &orca_proto::tls::ClientTls) -> Result<Client, Error> {
        let urls = coordinator_urls(url)?;
        if let [one] = urls.as_slice() {
            let channel =
                endpoint(one, tls)?.connect().await.map_err(|source| Error::Connect { url: one.clone(), source })?;
            return Ok(Client::from_channel(channel, one));
        }
        let (leader, channel) = pick_leader(&urls, tls).await?;
        let mut client = Client::from_channel(channel, &leader);
        client.standbys = Some(Arc::new((urls, tls.clone())));
        Ok(client)
    }

    /// With several coordinator URLs: connects again to whichever leads now (after a
    /// failover, the old leader's calls fail UNAVAILABLE); the token stays. With one URL,
    /// the same client. The watch streams of [`Client::watch`] do this by themselves before
    /// they resume.
    pub async fn follow_leader(&self) -> Result<Client, Error> {
        let Some(standbys) = &self.standbys else { return Ok(self.clone()) };
        let (leader, channel) = pick_leader(&standbys.0, &standbys.1).await?;
        let mut client = Client::from_channel(channel, &leader);
        client.bearer = self.bearer.clone();
        client.standbys = self.standbys.clone();
        Ok(client)
    }

    /// A client that connects on its first call (and reconnects after a broken connection),
    /// for long-lived callers that must start while the coordinator is down: a call then
    /// fails with [`Error::Unavailable`] instead.
    /// With several URLs, it starts on the first and moves to the leader through
    /// [`Client::follow_leader`].
    pub fn connect_lazy(url: &str, tls: &orca_proto::tls::ClientTls) -> Result<Client, Error> {
        let urls = coordinator_urls(url)?;
        let mut client = Client::from_channel(endpoint(&urls[0], tls)?.connect_lazy(), &urls[0]);
        if urls.len() > 1 {
            client.standbys = Some(Arc::new((urls, tls.clone())));
        }
        Ok(client)
    }

    /// Connects to `ORCA_COORDINATOR`, or to the default `http://127.0.0.1:50051`, with the
    /// token of `ORCA_TOKEN_FILE` or `ORCA_TOKEN` when one is set.
    pub async fn from_env() -> Result<Client, Error> {
        let url =
            std::env::var("ORCA_COORDINATOR").unwrap_or_else(|_| orca_proto::defaults::COORDINATOR_URL.to_string());
        let token = orca_proto::contract::token_from(None).map_err(Error::Token)?;
        let client = Client::connect_tls(&url, &orca_proto::tls::ClientTls::from_env()).await?;
        match token {
            Some(t) => client.with_token(&t),
            None => Ok(client),
        }
    }

    /// Sends `authorization: Bearer <token>` with every call (see the coordinator's
    /// `--auth-file`).
    pub fn with_token(mut self, token: &str) -> Result<Client, Error> {
        self.bearer = Some(orca_proto::contract::bearer(token).map_err(Error::Token)?);
        Ok(self)
    }

    /// A request carrying the token and the current span's trace context.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = orca_telemetry::request(message);
        if let Some(b) = &self.bearer {
            req.metadata_mut().insert("authorization", b.clone());
        }
        req
    }

    /// Wraps an existing channel.
    pub fn from_channel(channel: Channel, url: &str) -> Client {
        let inner = OrchestratorClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Client { inner, url: url.to_string(), bearer: None, standbys: None }
    }

    /// The coordinator's address.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The generated gRPC client, for calls this API does not wrap.
    pub fn raw(&self) -> OrchestratorClient<Channel> {
        self.inner.clone()
    }

    /// Creates a job; returns its id.
    pub async fn create_job(&self, description: &str) -> Result<String, Error> {
        Ok(self.create_job_with(description, None).await?.job_id)
    }

    /// Creates a job with metadata (a JSON object).
    pub async fn create_job_with(
        &self,
        description: &str,
        metadata: Option<&serde_json::Value>,
    ) -> Result<pb::Job, Error> {
        let metadata = metadata.map(json_to_struct).transpose()?;
        let req = pb::CreateJobRequest { description: description.to_string(), metadata, ..Default::default() };
        Ok(self.inner.clone().create_job(self.request(req)).await?.into_inner())
    }

    /// Creates a job with scheduling controls (see [`JobOptions`]).
    pub async fn create_job_with_options(&self, description: &str, options: &JobOptions) -> Result<pb::Job, Error> {
        let req = options.request(description)?;
        Ok(self.inner.clone().create_job(self.request(req)).await?.into_inner())
    }

    /// Changes a job's scheduling controls; the fields left `None` keep their value.
    pub async fn update_job(&self, job: &str, update: JobUpdate) -> Result<pb::Job, Error> {
        let req = pb::UpdateJobRequest {
            job_id: job.to_string(),
            weight: update.weight,
            max_running: update.max_running,
            budget_usd: update.budget_usd,
            paused: update.paused,
        };
        Ok(self.inner.clone().update_job(self.request(req)).await?.into_inner())
    }

    /// Pauses a job: no new attempt starts; the running ones finish.
    pub async fn pause_job(&self, job: &str) -> Result<pb::Job, Error> {
        self.update_job(job, JobUpdate { paused: Some(true), ..Default::default() }).await
    }

    /// Resumes a paused job.
    pub async fn resume_job(&self, job: &str) -> Result<pb::Job, Error> {
        self.update_job(job, JobUpdate { paused: Some(false), ..Default::default() }).await
    }

    /// Creates (or with `req.replace`, replaces) a recurring job.
    pub async fn create_schedule(&self, req: pb::CreateScheduleRequest) -> Result<pb::Schedule, Error> {
        Ok(self.inner.clone().create_schedule(self.request(req)).await?.into_inner())
    }

    pub async fn list_schedules(&self) -> Result<Vec<pb::Schedule>, Error> {
        let req = self.request(pb::ListSchedulesRequest {});
        Ok(self.inner.clone().list_schedules(req).await?.into_inner().schedules)
    }

    pub async fn delete_schedule(&self, name: &str) -> Result<(), Error> {
        let req = self.request(pb::DeleteScheduleRequest { name: name.to_string() });
        self.inner.clone().delete_schedule(req).await?;
        Ok(())
    }

    /// Adds one task; returns its id.
    ///
    /// ```no_run
    /// # async fn demo(client: orca_client::Client, job: String) -> Result<(), orca_client::Error> {
    /// use orca_client::Subtask;
    /// let api = client.add_subtask(&job, Subtask::new("Implement REST API").priority(10)).await?;
    /// client.add_subtask(&job, Subtask::new("Write API tests").parent(api)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn add_subtask(&self, job: &str, task: Subtask) -> Result<i64, Error> {
        let ids = self.add_subtasks(job, vec![task]).await?;
        Ok(ids[0])
    }

    /// Adds a batch of tasks, all or none; returns their ids in order. A task may depend on
    /// an earlier task of the same batch with [`Subtask::after_batch`].
    pub async fn add_subtasks(&self, job: &str, tasks: Vec<Subtask>) -> Result<Vec<i64>, Error> {
        let tasks = tasks.into_iter().map(Subtask::into_spec).collect::<Result<Vec<_>, _>>()?;
        let req = pb::AddTasksRequest { job_id: job.to_string(), tasks, ..Default::default() };
        Ok(self.inner.clone().add_tasks(self.request(req)).await?.into_inner().task_ids)
    }

    /// The job, with its state and counts.
    pub async fn get_job(&self, job: &str) -> Result<pb::Job, Error> {
        Ok(self.inner.clone().get_job(self.request(pb::GetJobRequest { job_id: job.to_string() })).await?.into_inner())
    }

    /// The job's counts: `total_tasks`, `waiting`, `pending`, `in_progress`, `completed`,
    /// `failed`, `cancelled`, `progress_pct`.
    pub async fn get_job_status(&self, job: &str) -> Result<pb::JobStatus, Error> {
        Ok(self.get_job(job).await?.status.unwrap_or_default())
    }

    /// Jobs, oldest first (every page).
    pub async fn list_jobs(&self) -> Result<Vec<pb::Job>, Error> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let req = pb::ListJobsRequest { page_size: PAGE, page_token: token };
            let page = self.inner.clone().list_jobs(self.request(req)).await?.into_inner();
            out.extend(page.jobs);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            token = page.next_page_token;
        }
    }

    /// One page of tasks (ListTasks as it is: any filter, a page token from the last page).
    pub async fn list_tasks_page(&self, req: pb::ListTasksRequest) -> Result<pb::ListTasksResponse, Error> {
        Ok(self.inner.clone().list_tasks(self.request(req)).await?.into_inner())
    }

    /// The workers the coordinator knows.
    pub async fn list_workers(&self) -> Result<Vec<pb::WorkerInfo>, Error> {
        let req = self.request(pb::ListWorkersRequest {});
        Ok(self.inner.clone().list_workers(req).await?.into_inner().workers)
    }

    /// Tasks by state, queue depth by priority, throughput, workers and slots.
    pub async fn get_stats(&self) -> Result<pb::Stats, Error> {
        Ok(self.inner.clone().get_stats(self.request(pb::GetStatsRequest {})).await?.into_inner())
    }

    /// Drains a worker (no new work; it finishes what it runs), or with `resume` undoes it.
    pub async fn drain_worker(&self, worker_id: &str, resume: bool) -> Result<pb::WorkerInfo, Error> {
        let req = pb::DrainWorkerRequest { worker_id: worker_id.to_string(), resume };
        Ok(self.inner.clone().drain_worker(self.request(req)).await?.into_inner())
    }

    /// The fleet's events (WatchFleet): a snapshot, then changes and stats every
    /// `stats_interval_ms` (0: the coordinator's default). Not resumed after a broken
    /// connection: call it again for a fresh snapshot.
    pub async fn watch_fleet(&self, stats_interval_ms: u32) -> Result<tonic::Streaming<pb::FleetEvent>, Error> {
        let req = self.request(pb::WatchFleetRequest { stats_interval_ms });
        Ok(self.inner.clone().watch_fleet(req).await?.into_inner())
    }

    /// One task, with its spec and result.
    pub async fn get_task(&self, task_id: i64) -> Result<pb::Task, Error> {
        Ok(self.inner.clone().get_task(self.request(pb::GetTaskRequest { task_id })).await?.into_inner())
    }

    /// The job's tasks in the given states (all when empty), every page.
    pub async fn list_tasks(&self, job: &str, states: &[pb::TaskState]) -> Result<Vec<pb::Task>, Error> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let req = pb::ListTasksRequest {
                job_id: job.to_string(),
                states: states.iter().map(|s| *s as i32).collect(),
                page_size: PAGE,
                page_token: token,
                summary_only: false,
                worker_id: String::new(),
            };
            let page = self.inner.clone().list_tasks(self.request(req)).await?.into_inner();
            out.extend(page.tasks);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            token = page.next_page_token;
        }
    }

    /// Tasks that completed, with their results (partial results without waiting).
    pub async fn get_completed_tasks(&self, job: &str) -> Result<Vec<pb::Task>, Error> {
        self.list_tasks(job, &[pb::TaskState::Completed]).await
    }

    /// Tasks that failed (after their retries), with the reason.
    pub async fn get_failed_tasks(&self, job: &str) -> Result<Vec<pb::Task>, Error> {
        self.list_tasks(job, &[pb::TaskState::Failed]).await
    }

    /// Retries every failed task of the job (their cancelled dependents come back too);
    /// returns the ids brought back.
    pub async fn retry_failed_tasks(&self, job: &str) -> Result<Vec<i64>, Error> {
        let req = pb::RetryTasksRequest { job_id: job.to_string(), task_ids: vec![] };
        Ok(self.inner.clone().retry_tasks(self.request(req)).await?.into_inner().task_ids)
    }

    /// Retries the given failed or cancelled tasks.
    pub async fn retry_tasks(&self, task_ids: &[i64]) -> Result<Vec<i64>, Error> {
        let req = pb::RetryTasksRequest { job_id: String::new(), task_ids: task_ids.to_vec() };
        Ok(self.inner.clone().retry_tasks(self.request(req)).await?.into_inner().task_ids)
    }

    /// Cancels every unfinished task of the job; running agents are stopped.
    pub async fn cancel_job(&self, job: &str, reason: &str) -> Result<pb::Job, Error> {
        let req = pb::CancelJobRequest { job_id: job.to_string(), reason: reason.to_string() };
        Ok(self.inner.clone().cancel_job(self.request(req)).await?.into_inner())
    }

    /// Cancels one task (and the tasks that depend on it).
    pub async fn cancel_task(&self, task_id: i64, reason: &str) -> Result<pb::Task, Error> {
        let req = pb::CancelTaskRequest { task_id, reason: reason.to_string() };
        Ok(self.inner.clone().cancel_task(self.request(req)).await?.into_inner())
    }

    /// Sets a shared-context key (`job` None: global); workers put shared context into every
    /// prompt. An empty value deletes the key.
    pub async fn set_shared_context(&self, job: Option<&str>, key: &str, value: &str) -> Result<(), Error> {
        let req = pb::SetContextRequest {
            job_id: job.unwrap_or("").to_string(),
            key: key.to_string(),
            value: value.to_string(),
        };
        self.inner.clone().set_context(self.request(req)).await?;
        Ok(())
    }

    /// The shared context of a job (`None`: the global one).
    pub async fn get_shared_context(&self, job: Option<&str>) -> Result<HashMap<String, String>, Error> {
        let req = pb::GetContextRequest { job_id: job.unwrap_or("").to_string() };
        Ok(self.inner.clone().get_context(self.request(req)).await?.into_inner().values)
    }

    /// A stream of the job's events: a snapshot, then every state change and progress chunk.
    /// It reconnects with backoff when the connection breaks and resumes after the last
    /// sequence number it delivered, so nothing is missed or repeated. Unless
    /// `options.follow`, it ends once every task of the job is final.
    ///
    /// ```no_run
    /// # async fn demo(client: orca_client::Client, job: String) -> Result<(), orca_client::Error> {
    /// use orca_client::{WatchOptions, pb};
    /// use tokio_stream::StreamExt;
    /// let mut events = client.watch(&job, WatchOptions::default());
    /// while let Some(ev) = events.next().await {
    ///     let ev = ev?;
    ///     if ev.kind == pb::JobEventKind::TaskState as i32 {
    ///         println!("#{} task {} -> {:?}", ev.seq, ev.task_id, pb::TaskState::try_from(ev.state));
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn watch(&self, job: &str, options: WatchOptions) -> impl Stream<Item = Result<pb::JobEvent, Error>> + use<> {
        watch::start(self.clone(), job.to_string(), options)
    }

    /// Waits until every task of the job is final (through WatchJob), then collects every
    /// result. With a timeout, returns what is final when it passes and lists the rest as
    /// unfinished; nothing is marked complete that is not.
    pub async fn wait_and_collect(&self, job: &str, timeout: Option<Duration>) -> Result<Collected, Error> {
        self.wait_and_collect_with(job, timeout, |_| {}).await
    }

    /// [`Client::wait_and_collect`], calling `progress` with the job's counts on every change
    /// (to draw a progress bar).
    pub async fn wait_and_collect_with(
        &self,
        job: &str,
        timeout: Option<Duration>,
        mut progress: impl FnMut(&pb::JobStatus),
    ) -> Result<Collected, Error> {
        let wait = async {
            let mut events = std::pin::pin!(self.watch(job, WatchOptions::default()));
            while let Some(ev) = events.next().await {
                if let Some(s) = ev?.status {
                    progress(&s);
                }
            }
            Ok::<(), Error>(())
        };
        let timed_out = match timeout {
            Some(t) => match tokio::time::timeout(t, wait).await {
                Ok(r) => {
                    r?;
                    false
                }
                Err(_) => true,
            },
            None => {
                wait.await?;
                false
            }
        };
        let mut out = self.collect(job).await?;
        out.timed_out = timed_out;
        Ok(out)
    }

    /// The job's results now, without waiting: the final tasks' outcomes, the others as
    /// unfinished. [`TaskOutcome::write_artifacts`] puts each one's files where they belong.
    pub async fn collect(&self, job: &str) -> Result<Collected, Error> {
        let tasks = self.list_tasks(job, &[]).await?;
        let mut out = Collected::default();
        for t in &tasks {
            let final_ = pb::TaskState::try_from(t.state).map(|s| s.is_final()).unwrap_or(false);
            if final_ {
                out.results.insert(t.task_id, TaskOutcome::of(t));
            } else {
                out.unfinished.push(t.task_id);
            }
        }
        out.status = self.get_job_status(job).await?;
        Ok(out)
    }

    /// Runs a list of prompts as one job and returns their outcomes in order (the orchestrator
    /// guide's `quick_delegate`, docs/design.md).
    pub async fn quick_delegate(&self, prompts: &[&str], timeout: Option<Duration>) -> Result<Vec<TaskOutcome>, Error> {
        let job = self.create_job("quick delegation").await?;
        let ids = self.add_subtasks(&job, prompts.iter().map(|p| Subtask::new(p)).collect()).await?;
        let mut collected = self.wait_and_collect(&job, timeout).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let outcome = match collected.results.remove(&id) {
                Some(o) => o,
                // Not final before the timeout: its current state and reason.
                None => TaskOutcome::of(&self.get_task(id).await?),
            };
            out.push(outcome);
        }
        Ok(out)
    }

    /// Runs a synthesis task after the others: its prompt is `synthesis_prompt` followed by the
    /// text report of `collected`; returns the synthesis task's outcome, or [`Error::Timeout`]
    /// when it is not final before `timeout`.
    pub async fn synthesize_with_task(
        &self,
        job: &str,
        collected: &Collected,
        synthesis_prompt: &str,
        timeout: Option<Duration>,
    ) -> Result<TaskOutcome, Error> {
        let prompt = format!("{synthesis_prompt}\n\n{}", synthesize_results(collected));
        let id = self.add_subtask(job, Subtask::new(&prompt).priority(10).name("synthesis")).await?;
        let collected = self.wait_and_collect(job, timeout).await?;
        collected.results.get(&id).cloned().ok_or_else(|| Error::Timeout(format!("synthesis task {id}")))
    }
}

/// A plain-text report of collected results, for a person or an orchestrating agent to read
/// (the orchestrator guide's `synthesize_results`, docs/design.md).
pub fn synthesize_results(collected: &Collected) -> String {
    let s = &collected.status;
    let mut out = format!(
        "# Results: {} tasks, {} completed, {} failed, {} cancelled{}\n",
        s.total_tasks,
        s.completed,
        s.failed,
        s.cancelled,
        if collected.unfinished.is_empty() {
            String::new()
        } else {
            format!(", {} unfinished", collected.unfinished.len())
        }
    );
    for r in collected.results.values() {
        out.push_str(&format!("\n## Task {} ({})\nPrompt: {}\n", r.task_id, r.state.short_name(), r.prompt));
        if !r.output.is_empty() {
            out.push_str(&format!("Output:\n{}\n", r.output.trim_end()));
        }
        if !r.is_completed() {
            let why = if r.error.is_empty() { &r.reason } else { &r.error };
            out.push_str(&format!("Error: {why}\n"));
        }
        if let Some(res) = &r.result {
            for a in &res.artifacts {
                out.push_str(&format!("Artifact: {} ({} bytes)\n", a.path, a.contents.len()));
            }
        }
        if let Some(g) = r.git() {
            out.push_str(&git_line(g));
        }
    }
    for id in &collected.unfinished {
        out.push_str(&format!("\n## Task {id} (unfinished)\n"));
    }
    out
}

/// A git task's line of the report: its commit and stats, or that it changed nothing.
fn git_line(g: &pb::GitResult) -> String {
    if g.empty {
        return "Git: no change\n".to_string();
    }
    let pushed = if g.pushed { format!(", pushed to {}", g.branch) } else { String::new() };
    let short = &g.commit[..g.commit.len().min(12)];
    let (f, i, d) = (g.files_changed, g.insertions, g.deletions);
    format!("Git: commit {short} ({f} files, +{i} -{d}){pushed}\n")
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn refusals_carry_the_coordinators_message() {
        let e = Error::from(tonic::Status::not_found("task 7 not found"));
        assert!(matches!(&e, Error::NotFound(m) if m == "task 7 not found"), "{e:?}");
        assert_eq!(e.to_string(), "not found: task 7 not found");
        assert!(!e.is_transient());
        let e = Error::from(tonic::Status::invalid_argument("tasks[1].prompt: must not be empty"));
        assert!(matches!(&e, Error::InvalidArgument(m) if m.starts_with("tasks[1].prompt")), "{e:?}");
    }

    #[test]
    fn other_statuses_keep_the_status_as_their_source() {
        let e = Error::from(tonic::Status::unavailable("shutting down"));
        assert!(e.is_transient());
        assert_eq!(e.to_string(), "coordinator unavailable: shutting down");
        let source = e.source().and_then(|s| s.downcast_ref::<tonic::Status>()).unwrap();
        assert_eq!(source.code(), tonic::Code::Unavailable);
        let e = Error::from(tonic::Status::deadline_exceeded("too slow"));
        assert!(matches!(&e, Error::Rpc(s) if s.code() == tonic::Code::DeadlineExceeded), "{e:?}");
        assert_eq!(e.to_string(), "DeadlineExceeded: too slow");
        assert!(!e.is_transient());
    }

    #[tokio::test]
    async fn a_malformed_address_is_not_a_connection_failure() {
        let e = Client::connect("not a url").await.unwrap_err();
        assert!(matches!(e, Error::InvalidAddress { .. }), "{e:?}");
        assert!(!e.is_transient());
        assert!(e.source().is_some());
        assert_eq!(e.to_string(), "cannot connect to not a url: invalid URI");
    }

    #[tokio::test]
    async fn an_unreachable_coordinator_is_a_transient_connection_failure() {
        // Port 1 on loopback: nothing listens there.
        let e = Client::connect("http://127.0.0.1:1").await.unwrap_err();
        assert!(matches!(e, Error::Connect { .. }), "{e:?}");
        assert!(e.is_transient());
        assert!(e.source().is_some());
    }
}

#[cfg(test)]
mod git_report_tests {
    use super::*;

    #[test]
    fn the_report_names_a_git_tasks_commit_or_that_it_changed_nothing() {
        let g = pb::GitResult {
            commit: "0123456789abcdef0123".into(),
            branch: "orca/j/1".into(),
            pushed: true,
            files_changed: 2,
            insertions: 5,
            deletions: 1,
            ..Default::default()
        };
        assert_eq!(git_line(&g), "Git: commit 0123456789ab (2 files, +5 -1), pushed to orca/j/1\n");
        assert_eq!(git_line(&pb::GitResult { empty: true, ..Default::default() }), "Git: no change\n");
        let outcome = TaskOutcome {
            task_id: 1,
            state: pb::TaskState::Completed,
            prompt: "p".into(),
            output: String::new(),
            error: String::new(),
            reason: String::new(),
            attempts: 1,
            working_dir: String::new(),
            expected_outputs: vec![],
            result: Some(pb::TaskResult { git: Some(Box::new(g)), ..Default::default() }),
        };
        let collected = Collected { results: [(1, outcome)].into(), ..Default::default() };
        assert!(synthesize_results(&collected).contains("Git: commit 0123456789ab"));
    }
}
