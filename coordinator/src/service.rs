//! The gRPC services, kept thin: check the input (`validate`), call the dispatcher for writes
//! or the store for reads, convert to `pb::` types. [`Error`] becomes a [`Status`] here and
//! only here.

use std::pin::Pin;

use orca_proto::pb;
use prost::Message;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::Error;
use crate::dispatch::{Handle, job_state_of, status_of};
use crate::error::invalid;
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
            Error::Unavailable(m) => Status::unavailable(m),
            Error::Storage(m) | Error::Internal(m) => {
                tracing::error!(error = %m, "internal error");
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
}

pub(crate) fn job_pb(r: &JobRecord) -> pb::Job {
    pb::Job {
        job_id: r.job_id.clone(),
        description: r.description.clone(),
        state: job_state_of(&r.counts, r.cancelled) as i32,
        status: Some(status_of(&r.counts)),
        metadata: r.metadata.as_deref().and_then(|m| prost_types::Struct::decode(m).ok()),
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
    }
}

pub(crate) fn state_pb(s: State) -> i32 {
    s.as_i32()
}

fn task_pb(r: TaskRecord) -> pb::Task {
    pb::Task {
        task_id: r.row.task_id,
        job_id: r.job_id,
        state: state_pb(r.row.state),
        spec: r.spec.as_deref().and_then(|s| pb::TaskSpec::decode(s).ok()),
        result: r.result.as_deref().and_then(|s| pb::TaskResult::decode(s).ok()),
        attempts: r.row.attempt,
        retries_used: r.row.retries_used,
        reason: r.row.reason,
        worker_id: r.row.worker_id.unwrap_or_default(),
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
        not_before_ms: r.row.not_before_ms as i64,
    }
}

impl Services {
    async fn job(&self, job_id: &str) -> Result<JobRecord, Error> {
        validate::id("job_id", job_id)?;
        self.store.job(job_id).await?.ok_or_else(|| Error::NotFound(format!("job {job_id} not found")))
    }

    async fn task(&self, task_id: i64) -> Result<TaskRecord, Error> {
        self.store.task(task_id).await?.ok_or_else(|| Error::NotFound(format!("task {task_id} not found")))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::JobEvent, Status>> + Send>>;
type ListenStream = ReceiverStream<Result<pb::ListenResponse, Status>>;

#[tonic::async_trait]
impl pb::orchestrator_server::Orchestrator for Services {
    async fn create_job(&self, req: Request<pb::CreateJobRequest>) -> Result<Response<pb::Job>, Status> {
        let r = req.into_inner();
        validate::create_job(&r)?;
        let id = self.handle.create_job(r.description, r.metadata).await?;
        Ok(Response::new(job_pb(&self.job(&id).await?)))
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        Ok(Response::new(job_pb(&self.job(&req.into_inner().job_id).await?)))
    }

    async fn list_jobs(&self, req: Request<pb::ListJobsRequest>) -> Result<Response<pb::ListJobsResponse>, Status> {
        let r = req.into_inner();
        let size = validate::page_size("page_size", r.page_size)?;
        let mut jobs = self.store.jobs(&r.page_token, size + 1).await.map_err(Status::from)?;
        let next = if jobs.len() > size as usize {
            jobs.truncate(size as usize);
            jobs.last().map(|j| j.job_id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListJobsResponse { jobs: jobs.iter().map(job_pb).collect(), next_page_token: next }))
    }

    async fn cancel_job(&self, req: Request<pb::CancelJobRequest>) -> Result<Response<pb::Job>, Status> {
        let r = req.into_inner();
        validate::cancel_job(&r)?;
        self.handle.cancel_job(r.job_id.clone(), r.reason).await?;
        Ok(Response::new(job_pb(&self.job(&r.job_id).await?)))
    }

    async fn add_tasks(&self, req: Request<pb::AddTasksRequest>) -> Result<Response<pb::AddTasksResponse>, Status> {
        let (job, tasks) = validate::add_tasks(req.into_inner())?;
        let task_ids = self.handle.add_tasks(job, tasks).await?;
        Ok(Response::new(pb::AddTasksResponse { task_ids }))
    }

    async fn get_task(&self, req: Request<pb::GetTaskRequest>) -> Result<Response<pb::Task>, Status> {
        Ok(Response::new(task_pb(self.task(req.into_inner().task_id).await?)))
    }

    async fn list_tasks(&self, req: Request<pb::ListTasksRequest>) -> Result<Response<pb::ListTasksResponse>, Status> {
        let r = req.into_inner();
        self.job(&r.job_id).await?;
        let size = validate::page_size("page_size", r.page_size)?;
        let after_id = validate::task_page_token(&r.page_token)?;
        let mut states = Vec::new();
        for (i, s) in r.states.iter().enumerate() {
            match State::from_i32(*s) {
                Some(st) => states.push(st),
                None => return Err(invalid(format!("states[{i}]"), format!("{s} is not a task state")).into()),
            }
        }
        let q = TaskQuery { job_id: &r.job_id, states, after_id, limit: size + 1, with_payloads: !r.summary_only };
        let mut tasks = self.store.tasks(&q).await.map_err(Status::from)?;
        let next = if tasks.len() > size as usize {
            tasks.truncate(size as usize);
            tasks.last().map(|t| t.row.task_id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListTasksResponse {
            tasks: tasks.into_iter().map(task_pb).collect(),
            next_page_token: next,
        }))
    }

    async fn cancel_task(&self, req: Request<pb::CancelTaskRequest>) -> Result<Response<pb::Task>, Status> {
        let r = req.into_inner();
        validate::cancel_task(&r)?;
        self.handle.cancel_task(r.task_id, r.reason).await?;
        Ok(Response::new(task_pb(self.task(r.task_id).await?)))
    }

    async fn retry_tasks(
        &self,
        req: Request<pb::RetryTasksRequest>,
    ) -> Result<Response<pb::RetryTasksResponse>, Status> {
        let r = req.into_inner();
        validate::retry_tasks(&r)?;
        if !r.job_id.is_empty() {
            self.job(&r.job_id).await?;
        }
        let task_ids = self.handle.retry_tasks(r.job_id, r.task_ids).await?;
        Ok(Response::new(pb::RetryTasksResponse { task_ids }))
    }

    async fn set_context(
        &self,
        req: Request<pb::SetContextRequest>,
    ) -> Result<Response<pb::SetContextResponse>, Status> {
        let r = req.into_inner();
        validate::context_key(&r)?;
        self.handle.set_context(r.job_id, r.key, r.value).await?;
        Ok(Response::new(pb::SetContextResponse {}))
    }

    async fn get_context(
        &self,
        req: Request<pb::GetContextRequest>,
    ) -> Result<Response<pb::GetContextResponse>, Status> {
        let r = req.into_inner();
        if !r.job_id.is_empty() {
            self.job(&r.job_id).await?;
        }
        let values = self.store.context(&r.job_id).await.map_err(Status::from)?.into_iter().collect();
        Ok(Response::new(pb::GetContextResponse { values }))
    }

    type WatchJobStream = EventStream;

    async fn watch_job(&self, req: Request<pb::WatchJobRequest>) -> Result<Response<Self::WatchJobStream>, Status> {
        let r = req.into_inner();
        validate::id("job_id", &r.job_id)?;
        let stream = crate::watch::start(self.clone(), r).await?;
        Ok(Response::new(Box::pin(stream)))
    }
}

#[tonic::async_trait]
impl pb::worker_gateway_server::WorkerGateway for Services {
    async fn register(&self, req: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        let r = req.into_inner();
        validate::register(&r)?;
        Ok(Response::new(self.handle.register(r).await?))
    }

    type ListenStream = ListenStream;

    async fn listen(&self, req: Request<pb::ListenRequest>) -> Result<Response<Self::ListenStream>, Status> {
        let worker = req.into_inner().worker_id;
        validate::id("worker_id", &worker)?;
        let (session, rx, tx) = self.handle.listen(worker.clone()).await?;
        let handle = self.handle.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            // Liveness is the stream: when the worker goes away, it is disconnected.
            tokio::select! {
                _ = tx.closed() => {}
                _ = shutdown.cancelled() => {}
            }
            drop(tx);
            handle.disconnect(worker, session).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let r = req.into_inner();
        validate::heartbeat(&r)?;
        Ok(Response::new(self.handle.heartbeat(r).await?))
    }

    async fn report(&self, req: Request<pb::ReportRequest>) -> Result<Response<pb::ReportResponse>, Status> {
        let r = req.into_inner();
        validate::report(&r)?;
        Ok(Response::new(self.handle.report(r).await?))
    }
}
