//! The gRPC services, kept thin: check the input (`validate`), call the dispatcher for writes
//! or the store for reads, convert to `pb::` types. [`Error`] becomes a [`Status`] here and
//! only here.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use orca_proto::contract::limits;
use orca_proto::pb;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::Error;
use crate::auth::{self, Auth, Caller, Role};
use crate::convert;
use crate::dispatch::{Handle, Listening, NewJob};
use crate::error::invalid;
use crate::idempotency;
use crate::queue::State;
use crate::store::{JobRecord, Store, TaskQuery, TaskRecord};
use crate::validate;

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument(m) => Status::invalid_argument(m),
            Error::NotFound(m) => Status::not_found(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::ResourceExhausted(m) => Status::resource_exhausted(m),
            Error::AlreadyExists(m) => Status::already_exists(m),
            Error::Unavailable(m) => Status::unavailable(m),
            e @ (Error::NotLeader(_) | Error::Fenced) => Status::unavailable(e.to_string()),
            e @ (Error::Database(_) | Error::Storage(_)) => {
                tracing::error!(error = %e, "internal error");
                Status::internal("internal error; see the coordinator's log")
            }
        }
    }
}

/// Shared state of the services.
#[derive(Clone, Debug)]
pub struct Services {
    pub handle: Handle,
    pub store: Store,
    pub shutdown: CancellationToken,
    pub auth: Auth,
    /// With auth: worker id -> the name of the token that first used it. Another token
    /// cannot register, stream, heartbeat or report as that worker (until a restart).
    pub workers: Arc<Mutex<HashMap<String, Arc<str>>>>,
    /// The fleet shared by the WatchFleet streams.
    pub fleet: crate::fleet_watch::Hub,
    /// Whether this coordinator serves (a standby, or one reloading from its database, does
    /// not); `/healthz` says why not.
    pub serving: tokio::sync::watch::Receiver<crate::serving::Serving>,
}

/// Worker ids bound to tokens at most (a worker token cannot grow the map without bound).
pub const MAX_WORKER_BINDINGS: usize = 100_000;

fn not_owner(what: impl std::fmt::Display, caller: &Caller) -> Status {
    Status::permission_denied(format!("{what} does not belong to token {:?}", &*caller.name))
}

/// One ListTasks page, with the token of the next one when more tasks follow.
/// The trace context stored with new tasks: this call's span when spans are exported, else
/// the caller's `traceparent` as it came (so the worker still joins the caller's trace).
fn task_trace_parent(md: &tonic::metadata::MetadataMap) -> String {
    if orca_telemetry::enabled() {
        return orca_telemetry::traceparent(&tracing::Span::current()).unwrap_or_default();
    }
    orca_telemetry::from_metadata(md).filter(|tp| orca_telemetry::is_traceparent(tp)).unwrap_or_default().to_string()
}

fn report_spans(r: &pb::ReportRequest) -> Vec<tracing::Span> {
    use pb::report::Body;
    r.reports
        .iter()
        .filter(|rep| !rep.trace_parent.is_empty())
        .filter_map(|rep| {
            let outcome = match rep.body.as_ref()? {
                Body::Completed(_) => "completed",
                Body::Failed(_) => "failed",
                Body::HandedBack(_) => "handed_back",
                Body::Started(_) | Body::Progress(_) => return None,
            };
            let span = tracing::info_span!(
                "report",
                task_id = rep.task_id,
                attempt = rep.attempt,
                worker = %r.worker_id,
                outcome,
                trace_id = tracing::field::Empty
            );
            orca_telemetry::set_parent(&span, &rep.trace_parent);
            Some(span)
        })
        .collect()
}

fn task_page(rows: Vec<TaskRecord>, more: bool) -> pb::ListTasksResponse {
    let next = if more { rows.last().map(|t| t.row.task_id.to_string()).unwrap_or_default() } else { String::new() };
    pb::ListTasksResponse { tasks: rows.into_iter().map(convert::task).collect(), next_page_token: next }
}

impl Services {
    async fn job(&self, job_id: &str) -> Result<JobRecord, Error> {
        validate::id("job_id", job_id)?;
        self.store.job(job_id).await?.ok_or_else(|| Error::NotFound(format!("job {job_id} not found")))
    }

    /// A submitter acts on its own jobs only (readers and admins reach every job, and the
    /// role table keeps readers to reads). The job is read first: an unknown one is NOT_FOUND.
    async fn owned_job(&self, caller: &Caller, job_id: &str) -> Result<JobRecord, Status> {
        let job = self.job(job_id).await?;
        if caller.role == Role::Submitter && !caller.owns(job.owner.as_deref()) {
            return Err(not_owner(format_args!("job {job_id}"), caller));
        }
        Ok(job)
    }

    /// [`Services::owned_job`] without the read when the caller's role reaches every job.
    async fn check_job(&self, caller: &Caller, job_id: &str) -> Result<(), Status> {
        if caller.role == Role::Submitter {
            self.owned_job(caller, job_id).await?;
        }
        Ok(())
    }

    /// The same for the job of a task.
    async fn check_task(&self, caller: &Caller, task_id: i64) -> Result<(), Status> {
        if caller.role == Role::Submitter {
            let t = self.task(task_id).await?;
            self.check_task_record(caller, &t).await?;
        }
        Ok(())
    }

    /// [`Services::check_task`] for a task already read.
    async fn check_task_record(&self, caller: &Caller, t: &TaskRecord) -> Result<(), Status> {
        if caller.role == Role::Submitter {
            self.owned_job(caller, &t.job_id).await.map_err(|e| match e.code() {
                tonic::Code::PermissionDenied => not_owner(format_args!("task {}", t.row.task_id), caller),
                _ => e,
            })?;
        }
        Ok(())
    }

    /// Binds a worker id to the caller's token on first use; refuses another token's id.
    fn bind_worker(&self, caller: &Caller, worker_id: &str) -> Result<(), Status> {
        if !self.auth.enabled() || caller.role == Role::Admin || worker_id.is_empty() {
            return Ok(());
        }
        let mut bound = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        match bound.get(worker_id) {
            Some(owner) if **owner != *caller.name => {
                tracing::info!(caller = %caller.name, worker = worker_id, owner = %owner, "worker id of another token refused");
                Err(not_owner(format_args!("worker id {worker_id:?}"), caller))
            }
            Some(_) => Ok(()),
            None if bound.len() >= MAX_WORKER_BINDINGS => Err(Status::resource_exhausted(format!(
                "{MAX_WORKER_BINDINGS} worker ids are in use; reuse a worker id"
            ))),
            None => {
                bound.insert(worker_id.to_string(), caller.name.clone());
                Ok(())
            }
        }
    }

    /// A job after a committed change, read back; a failed read must not report the change
    /// as failed, so it gives the job's id alone (and logs).
    async fn committed_job(&self, job_id: &str, what: &str) -> pb::Job {
        self.job(job_id).await.map(|j| convert::job(&j)).unwrap_or_else(|e| {
            tracing::warn!(job = %job_id, error = %e, "{what}; reading it back failed");
            pb::Job { job_id: job_id.to_string(), ..Default::default() }
        })
    }

    /// The token a submitter's schedules belong to (others reach every schedule).
    fn schedule_owner(&self, caller: &Caller) -> Option<String> {
        (self.auth.enabled() && caller.role == Role::Submitter).then(|| caller.name.to_string())
    }

    async fn task(&self, task_id: i64) -> Result<TaskRecord, Error> {
        self.store.task(task_id).await?.ok_or_else(|| Error::NotFound(format!("task {task_id} not found")))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::JobEvent, Status>> + Send>>;
type FleetStream = Pin<Box<dyn Stream<Item = Result<pb::FleetEvent, Status>> + Send>>;
type ListenStream = ReceiverStream<Result<pb::ListenResponse, Status>>;

#[tonic::async_trait]
impl pb::orchestrator_server::Orchestrator for Services {
    async fn create_job(&self, req: Request<pb::CreateJobRequest>) -> Result<Response<pb::Job>, Status> {
        let caller = auth::caller(&req);
        let mut r = req.into_inner();
        let controls = validate::create_job(&r)?;
        let idem = idempotency::take(&mut r, |r| &mut r.request_id, "CreateJob", "", &caller.name)?;
        let owner = self.auth.enabled().then(|| caller.name.to_string());
        let job = NewJob { description: r.description, metadata: r.metadata, owner, controls };
        // Built by the dispatcher: a committed job is never reported as failed by a read.
        Ok(Response::new(self.handle.create_job(job, idem).await?))
    }

    async fn create_schedule(&self, req: Request<pb::CreateScheduleRequest>) -> Result<Response<pb::Schedule>, Status> {
        let caller = auth::caller(&req);
        let r = req.into_inner();
        let pattern = validate::create_schedule(&r)?;
        let owner = self.auth.enabled().then(|| caller.name.to_string());
        let own = self.schedule_owner(&caller).is_some();
        Ok(Response::new(self.handle.create_schedule(r, Box::new(pattern), owner, own).await?))
    }

    async fn list_schedules(
        &self,
        req: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        let caller = auth::caller(&req);
        let schedules = self.handle.list_schedules(self.schedule_owner(&caller)).await?;
        Ok(Response::new(pb::ListSchedulesResponse { schedules }))
    }

    async fn delete_schedule(
        &self,
        req: Request<pb::DeleteScheduleRequest>,
    ) -> Result<Response<pb::DeleteScheduleResponse>, Status> {
        let caller = auth::caller(&req);
        let r = req.into_inner();
        validate::schedule_name(&r.name)?;
        self.handle.delete_schedule(r.name, self.schedule_owner(&caller)).await?;
        Ok(Response::new(pb::DeleteScheduleResponse {}))
    }

    async fn update_job(&self, req: Request<pb::UpdateJobRequest>) -> Result<Response<pb::Job>, Status> {
        let caller = auth::caller(&req);
        let r = req.into_inner();
        let update = validate::update_job(&r)?;
        self.check_job(&caller, &r.job_id).await?;
        self.handle.update_job(r.job_id.clone(), update).await?;
        Ok(Response::new(self.committed_job(&r.job_id, "job updated").await))
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        let caller = auth::caller(&req);
        Ok(Response::new(convert::job(&self.owned_job(&caller, &req.into_inner().job_id).await?)))
    }

    async fn list_jobs(&self, req: Request<pb::ListJobsRequest>) -> Result<Response<pb::ListJobsResponse>, Status> {
        let caller = auth::caller(&req);
        let r = req.into_inner();
        let size = validate::page_size("page_size", r.page_size)?;
        // A submitter lists its own jobs.
        let owner = (caller.role == Role::Submitter).then_some(&*caller.name);
        let mut jobs = self.store.jobs(&r.page_token, size + 1, owner).await.map_err(Status::from)?;
        let next = if jobs.len() > size as usize {
            jobs.truncate(size as usize);
            jobs.last().map(|j| j.job_id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListJobsResponse { jobs: jobs.iter().map(convert::job).collect(), next_page_token: next }))
    }

    async fn cancel_job(&self, req: Request<pb::CancelJobRequest>) -> Result<Response<pb::Job>, Status> {
        let caller = auth::caller(&req);
        let r = req.into_inner();
        validate::cancel_job(&r)?;
        self.check_job(&caller, &r.job_id).await?;
        self.handle.cancel_job(r.job_id.clone(), r.reason).await?;
        let mut job = self.committed_job(&r.job_id, "job cancelled").await;
        job.state = pb::JobState::Cancelled as i32;
        Ok(Response::new(job))
    }

    async fn delete_job(&self, req: Request<pb::DeleteJobRequest>) -> Result<Response<pb::DeleteJobResponse>, Status> {
        let caller = auth::caller(&req);
        let r = req.into_inner();
        validate::delete_job(&r)?;
        self.check_job(&caller, &r.job_id).await?;
        self.handle.delete_job(r.job_id).await?;
        Ok(Response::new(pb::DeleteJobResponse {}))
    }

    async fn add_tasks(&self, req: Request<pb::AddTasksRequest>) -> Result<Response<pb::AddTasksResponse>, Status> {
        let trace_parent = task_trace_parent(req.metadata());
        let caller = auth::caller(&req);
        let mut r = req.into_inner();
        let job_id = r.job_id.clone();
        let idem = idempotency::take(&mut r, |r| &mut r.request_id, "AddTasks", &job_id, &caller.name)?;
        let (job, mut tasks) = validate::add_tasks(r)?;
        self.check_job(&caller, &job).await?;
        let external = validate::git_external_deps(&tasks);
        let repos = if external.is_empty() { Default::default() } else { self.store.git_repos(&external).await? };
        validate::git_builds_on(&mut tasks, &repos)?;
        if let Some(l) = &caller.limits {
            l.add_tasks(&caller.name, tasks.len() as u32)?;
        }
        for t in &mut tasks {
            t.spec.trace_parent.clone_from(&trace_parent);
        }
        let task_ids = self.handle.add_tasks(job, tasks, idem).await?;
        Ok(Response::new(pb::AddTasksResponse { task_ids }))
    }

    async fn get_task(&self, req: Request<pb::GetTaskRequest>) -> Result<Response<pb::Task>, Status> {
        let caller = auth::caller(&req);
        let task = self.task(req.into_inner().task_id).await?;
        self.check_task_record(&caller, &task).await?;
        let history = self.store.attempts(task.row.task_id).await.map_err(Status::from)?;
        let mut t = convert::task(task);
        if t.state == pb::TaskState::InProgress as i32
            && let Some(out) = self.handle.live_output(t.task_id).await?
        {
            // While it runs: what the agent printed so far (its latest lines).
            t.result.get_or_insert_with(Default::default).output = out;
        }
        t.history = history.iter().map(convert::attempt).collect();
        if let Some(done) = convert::completed_attempt(&t) {
            t.history.push(done);
        }
        Ok(Response::new(t))
    }

    async fn list_tasks(&self, req: Request<pb::ListTasksRequest>) -> Result<Response<pb::ListTasksResponse>, Status> {
        let caller = auth::caller(&req);
        let r = req.into_inner();
        if !r.job_id.is_empty() {
            self.owned_job(&caller, &r.job_id).await?;
        }
        if !r.worker_id.is_empty() {
            validate::id("worker_id", &r.worker_id)?;
        }
        let size = validate::page_size("page_size", r.page_size)?;
        let after_id = validate::task_page_token(&r.page_token)?;
        let mut states = Vec::new();
        for (i, s) in r.states.iter().enumerate() {
            match State::from_i32(*s) {
                Some(st) => states.push(st),
                None => return Err(invalid(format!("states[{i}]"), format!("{s} is not a task state")).into()),
            }
        }
        let max_bytes = limits::MAX_PAGE_BYTES;
        let q = TaskQuery {
            job_id: (!r.job_id.is_empty()).then_some(r.job_id.as_str()),
            worker_id: (!r.worker_id.is_empty()).then_some(r.worker_id.as_str()),
            // A submitter listing every job sees its own.
            owner: (r.job_id.is_empty() && caller.role == Role::Submitter).then_some(&*caller.name),
            states,
            after_id,
            limit: size,
            with_payloads: !r.summary_only,
            max_bytes,
        };
        let (rows, more) = self.store.tasks(&q).await.map_err(Status::from)?;
        Ok(Response::new(task_page(rows, more)))
    }

    async fn cancel_task(&self, req: Request<pb::CancelTaskRequest>) -> Result<Response<pb::Task>, Status> {
        let caller = auth::caller(&req);
        let r = req.into_inner();
        validate::cancel_task(&r)?;
        self.check_task(&caller, r.task_id).await?;
        if !self.handle.cancel_task(r.task_id, r.reason).await? {
            // Not live: final or unknown, told from the read pool (the dispatcher never waits
            // on a read for it).
            return Err(match self.store.task(r.task_id).await.map_err(Status::from)? {
                Some(t) => Status::failed_precondition(format!("task {} is already {}", r.task_id, t.row.state.name())),
                None => Status::not_found(format!("task {} not found", r.task_id)),
            });
        }
        // Committed: a failed read afterwards must not report the cancellation as failed.
        let task = self.task(r.task_id).await.map(convert::task).unwrap_or_else(|e| {
            tracing::warn!(task = r.task_id, error = %e, "task cancelled; reading it back failed");
            pb::Task { task_id: r.task_id, state: pb::TaskState::Cancelled as i32, ..Default::default() }
        });
        Ok(Response::new(task))
    }

    async fn retry_tasks(
        &self,
        req: Request<pb::RetryTasksRequest>,
    ) -> Result<Response<pb::RetryTasksResponse>, Status> {
        let caller = auth::caller(&req);
        let r = req.into_inner();
        validate::retry_tasks(&r)?;
        if !r.job_id.is_empty() {
            self.owned_job(&caller, &r.job_id).await?;
        } else if caller.role == Role::Submitter {
            // Without a job, tasks of any job: check each one's.
            for id in &r.task_ids {
                self.check_task(&caller, *id).await?;
            }
        }
        let task_ids = self.handle.retry_tasks(r.job_id, r.task_ids).await?;
        Ok(Response::new(pb::RetryTasksResponse { task_ids }))
    }

    async fn set_context(
        &self,
        req: Request<pb::SetContextRequest>,
    ) -> Result<Response<pb::SetContextResponse>, Status> {
        let caller = auth::caller(&req);
        let r = req.into_inner();
        validate::context_key(&r)?;
        if r.job_id.is_empty() && caller.role != Role::Admin {
            return Err(Status::permission_denied(format!(
                "token {:?} may not set the global context (admin only); set a job's",
                &*caller.name
            )));
        }
        if !r.job_id.is_empty() {
            self.check_job(&caller, &r.job_id).await?;
        }
        self.handle.set_context(r.job_id, r.key, r.value).await?;
        Ok(Response::new(pb::SetContextResponse {}))
    }

    async fn get_context(
        &self,
        req: Request<pb::GetContextRequest>,
    ) -> Result<Response<pb::GetContextResponse>, Status> {
        let caller = auth::caller(&req);
        let r = req.into_inner();
        if !r.job_id.is_empty() {
            self.owned_job(&caller, &r.job_id).await?;
        }
        let values = self.store.context(&r.job_id).await.map_err(Status::from)?.into_iter().collect();
        Ok(Response::new(pb::GetContextResponse { values }))
    }

    type WatchJobStream = EventStream;

    async fn watch_job(&self, req: Request<pb::WatchJobRequest>) -> Result<Response<Self::WatchJobStream>, Status> {
        let caller = auth::caller(&req);
        let r = req.into_inner();
        validate::id("job_id", &r.job_id)?;
        self.check_job(&caller, &r.job_id).await?;
        let watching = caller.limits.as_ref().map(|l| l.open_watch(&caller.name)).transpose()?;
        let stream =
            crate::watch::start(self.handle.clone(), self.store.clone(), self.shutdown.clone(), r, watching).await?;
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_workers(
        &self,
        _req: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        let workers = self.handle.fleet().await?.workers;
        Ok(Response::new(pb::ListWorkersResponse { workers }))
    }

    async fn get_stats(&self, _req: Request<pb::GetStatsRequest>) -> Result<Response<pb::Stats>, Status> {
        Ok(Response::new(self.handle.fleet().await?.stats))
    }

    type WatchFleetStream = FleetStream;

    async fn watch_fleet(
        &self,
        req: Request<pb::WatchFleetRequest>,
    ) -> Result<Response<Self::WatchFleetStream>, Status> {
        let every = crate::fleet_watch::interval(req.into_inner().stats_interval_ms)?;
        let first = self.handle.fleet().await?;
        let stream = crate::fleet_watch::start(&self.fleet, self.handle.clone(), self.shutdown.clone(), first, every);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn drain_worker(&self, req: Request<pb::DrainWorkerRequest>) -> Result<Response<pb::WorkerInfo>, Status> {
        let r = req.into_inner();
        validate::id("worker_id", &r.worker_id)?;
        Ok(Response::new(self.handle.drain(r.worker_id, !r.resume).await?))
    }
}

#[tonic::async_trait]
impl pb::worker_gateway_server::WorkerGateway for Services {
    async fn register(&self, req: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        let caller = auth::caller(&req);
        let r = req.into_inner();
        validate::register(&r)?;
        self.bind_worker(&caller, &r.worker_id)?;
        let answer = self.handle.register(r).await?;
        // An id the coordinator made is the caller's too.
        self.bind_worker(&caller, &answer.worker_id)?;
        Ok(Response::new(answer))
    }

    type ListenStream = ListenStream;

    async fn listen(&self, req: Request<pb::ListenRequest>) -> Result<Response<Self::ListenStream>, Status> {
        let caller = auth::caller(&req);
        let r = req.into_inner();
        let worker = r.worker_id;
        validate::id("worker_id", &worker)?;
        self.bind_worker(&caller, &worker)?;
        let Listening { session, rx, tx, ended } = self.handle.listen(worker.clone(), r.context_by_stream).await?;
        let handle = self.handle.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            // Liveness is the stream: when the worker goes away, it is disconnected. A stream
            // replaced by a newer one ends here too (this task holds the last sender).
            tokio::select! {
                _ = tx.closed() => {}
                _ = ended.cancelled() => {}
                _ = shutdown.cancelled() => {}
            }
            drop(tx);
            handle.disconnect(worker, session).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let caller = auth::caller(&req);
        let r = req.into_inner();
        validate::heartbeat(&r)?;
        self.bind_worker(&caller, &r.worker_id)?;
        Ok(Response::new(self.handle.heartbeat(r).await?))
    }

    async fn report(&self, req: Request<pb::ReportRequest>) -> Result<Response<pb::ReportResponse>, Status> {
        let caller = auth::caller(&req);
        let r = req.into_inner();
        validate::report(&r)?;
        self.bind_worker(&caller, &r.worker_id)?;
        // One span per final report in a trace, open until the reports are committed.
        let spans = if orca_telemetry::enabled() { report_spans(&r) } else { Vec::new() };
        let answer = self.handle.report(r).await?;
        drop(spans);
        Ok(Response::new(answer))
    }
}
