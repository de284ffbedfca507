//! The web dashboard's JSON API under `/api/`: each handler makes the gRPC call the CLI would
//! make, in process, as the caller the request's bearer token names, so a token may do here
//! exactly what it may do over gRPC (the role table of `crate::auth` and the handlers' job
//! ownership checks), and renders the answer with `orca_proto::json`.
//!
//! Errors are `{"error": message, "code": "NOT_FOUND"}` with the HTTP status of the gRPC code.
//! Actions are POSTs that must carry `Content-Type: application/json` and, when the browser
//! sends one, an `Origin` of this host: a page on another site can neither send that content
//! type without a preflight (which this server never allows) nor fake its origin.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use orca_proto::json::{job_json, state_name, stats_json, task_json, worker_json};
use orca_proto::pb;
use pb::orchestrator_server::Orchestrator;
use serde::Deserialize;
use serde_json::{Value, json};
use tonic::{Code, Status};

use super::Ctx;
use crate::auth;

/// Tasks of a job per page at most, and by default.
const MAX_TASK_PAGE: u32 = 200;
const TASK_PAGE: u32 = 50;
/// Characters of a prompt in a task row.
const ROW_PROMPT_CHARS: usize = 200;

/// An API error: an HTTP status and a JSON body naming the gRPC code.
#[derive(Debug)]
pub struct ApiError(pub Status);

impl From<Status> for ApiError {
    fn from(s: Status) -> Self {
        ApiError(s)
    }
}

impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> Self {
        ApiError(Status::from(e))
    }
}

/// The HTTP status of a gRPC code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The SCREAMING_SNAKE name of a gRPC code, as grpcurl prints it.
fn code_name(code: Code) -> String {
    let mut out = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.0.message(), "code": code_name(self.0.code())});
        (http_status(self.0.code()), Json(body)).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// The request for the Orchestrator method `method`, as the caller the headers name: with an
/// auth file, the token must be known and its role allowed for the method.
pub fn request<T>(ctx: &Ctx, headers: &HeaderMap, method: &str, msg: T) -> Result<tonic::Request<T>, ApiError> {
    let mut req = tonic::Request::new(msg);
    if !ctx.svc.auth.enabled() {
        return Ok(req);
    }
    let caller = super::caller(ctx, headers)?;
    let path = format!("/orca.v1.Orchestrator/{method}");
    let need = auth::access(&path).ok_or_else(|| Status::internal(format!("{method} is no method")))?;
    if !auth::allowed(caller.role, need) {
        return Err(ApiError(Status::permission_denied(format!(
            "token {:?} has role {}, which may not call {method}",
            &*caller.name,
            caller.role.name()
        ))));
    }
    req.extensions_mut().insert(caller);
    Ok(req)
}

/// POSTs must be JSON from this origin (see the module's documentation).
fn same_origin_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")));
    if !json {
        return Err(ApiError(Status::invalid_argument("actions need Content-Type: application/json")));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
        let origin = origin.to_str().unwrap_or_default();
        let origin_host = origin.split_once("://").map_or("", |(_, h)| h);
        if host.is_empty() || origin_host != host {
            return Err(ApiError(Status::permission_denied(format!(
                "origin {origin:?} is not this dashboard's ({host})"
            ))));
        }
    }
    Ok(())
}

/// `GET /api/session`: whether tokens are configured, and who the caller is.
pub async fn session(State(ctx): State<Ctx>, headers: HeaderMap) -> ApiResult {
    if !ctx.svc.auth.enabled() {
        return Ok(Json(json!({"auth": false, "name": "", "role": "admin"})));
    }
    let caller = super::caller(&ctx, &headers)?;
    Ok(Json(json!({"auth": true, "name": &*caller.name, "role": caller.role.name()})))
}

pub async fn stats(State(ctx): State<Ctx>, headers: HeaderMap) -> ApiResult {
    let req = request(&ctx, &headers, "GetStats", pb::GetStatsRequest {})?;
    Ok(Json(stats_json(&ctx.svc.get_stats(req).await?.into_inner())))
}

/// `GET /api/failures`: the recent failures of the stats, newest first.
pub async fn failures(State(ctx): State<Ctx>, headers: HeaderMap) -> ApiResult {
    let req = request(&ctx, &headers, "GetStats", pb::GetStatsRequest {})?;
    let s = ctx.svc.get_stats(req).await?.into_inner();
    let tasks: Vec<Value> = s
        .recent_failures
        .iter()
        .map(|f| {
            json!({"task_id": f.task_id, "job_id": f.job_id, "reason": f.reason, "worker_id": f.worker_id,
                   "updated_at_ms": f.time_ms, "state": "failed"})
        })
        .collect();
    Ok(Json(json!({"tasks": tasks})))
}

pub async fn workers(State(ctx): State<Ctx>, headers: HeaderMap) -> ApiResult {
    let req = request(&ctx, &headers, "ListWorkers", pb::ListWorkersRequest {})?;
    let r = ctx.svc.list_workers(req).await?.into_inner();
    Ok(Json(json!({"workers": r.workers.iter().map(worker_json).collect::<Vec<_>>()})))
}

#[derive(Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    page_size: Option<u32>,
    #[serde(default)]
    page_token: String,
    /// Comma-separated task states.
    #[serde(default)]
    state: String,
}

pub async fn jobs(State(ctx): State<Ctx>, headers: HeaderMap, Query(q): Query<PageQuery>) -> ApiResult {
    let msg = pb::ListJobsRequest { page_size: q.page_size.unwrap_or(100), page_token: q.page_token };
    let r = ctx.svc.list_jobs(request(&ctx, &headers, "ListJobs", msg)?).await?.into_inner();
    Ok(Json(json!({"jobs": r.jobs.iter().map(job_json).collect::<Vec<_>>(), "next_page_token": r.next_page_token})))
}

pub async fn job(State(ctx): State<Ctx>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let req = request(&ctx, &headers, "GetJob", pb::GetJobRequest { job_id: id })?;
    Ok(Json(job_json(&ctx.svc.get_job(req).await?.into_inner())))
}

/// A task as a row of a job's table: no result contents, the prompt's head.
fn row(t: &pb::Task) -> Value {
    let spec = t.spec.clone().unwrap_or_default();
    let r = t.result.clone().unwrap_or_default();
    let prompt: String = spec.prompt.chars().take(ROW_PROMPT_CHARS).collect();
    json!({
        "task_id": t.task_id, "job_id": t.job_id, "name": spec.name, "prompt": prompt, "state": state_name(t.state),
        "priority": spec.priority.unwrap_or(5), "worker_id": t.worker_id, "attempts": t.attempts,
        "duration_ms": r.duration_ms, "cost_usd": r.cost_usd, "depends_on": spec.depends_on,
        "parent_task_id": spec.parent_task_id, "reason": orca_proto::contract::head_str(&t.reason, 512),
        "updated_at_ms": t.updated_at_ms,
    })
}

/// Task states named by a comma-separated list.
fn states(list: &str) -> Result<Vec<i32>, ApiError> {
    let mut out = Vec::new();
    for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let st = pb::TaskState::from_short_name(s)
            .ok_or_else(|| ApiError(Status::invalid_argument(format!("state: unknown task state {s:?}"))))?;
        out.push(st as i32);
    }
    Ok(out)
}

pub async fn job_tasks(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult {
    let size = q.page_size.unwrap_or(TASK_PAGE);
    if size == 0 || size > MAX_TASK_PAGE {
        return Err(ApiError(Status::invalid_argument(format!("page_size: must be 1..={MAX_TASK_PAGE}"))));
    }
    let msg = pb::ListTasksRequest {
        job_id: id,
        states: states(&q.state)?,
        page_size: size,
        page_token: q.page_token,
        summary_only: false,
        worker_id: String::new(),
    };
    let r = ctx.svc.list_tasks(request(&ctx, &headers, "ListTasks", msg)?).await?.into_inner();
    Ok(Json(json!({"tasks": r.tasks.iter().map(row).collect::<Vec<_>>(), "next_page_token": r.next_page_token})))
}

pub async fn task(State(ctx): State<Ctx>, headers: HeaderMap, Path(id): Path<i64>) -> ApiResult {
    let req = request(&ctx, &headers, "GetTask", pb::GetTaskRequest { task_id: id })?;
    Ok(Json(task_json(&ctx.svc.get_task(req).await?.into_inner())))
}

#[derive(Deserialize)]
pub struct ArtifactQuery {
    path: String,
}

/// `GET /api/tasks/{id}/artifact?path=P`: the artifact's bytes, as a download.
pub async fn artifact(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<ArtifactQuery>,
) -> Result<Response, ApiError> {
    let req = request(&ctx, &headers, "GetTask", pb::GetTaskRequest { task_id: id })?;
    let t = ctx.svc.get_task(req).await?.into_inner();
    let arts = t.result.map(|r| r.artifacts).unwrap_or_default();
    let a = arts
        .into_iter()
        .find(|a| a.path == q.path)
        .ok_or_else(|| ApiError(Status::not_found(format!("path: task {id} has no artifact {:?}", q.path))))?;
    let name: String = a
        .path
        .rsplit('/')
        .next()
        .unwrap_or("artifact")
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
        .collect();
    let disposition = format!("attachment; filename=\"{}\"", if name.is_empty() { "artifact" } else { &name });
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream".to_string()), (header::CONTENT_DISPOSITION, disposition)],
        a.contents,
    )
        .into_response())
}

const ACTION_REASON: &str = "cancelled from the web dashboard";

pub async fn cancel_job(State(ctx): State<Ctx>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    same_origin_json(&headers)?;
    let msg = pb::CancelJobRequest { job_id: id, reason: ACTION_REASON.into() };
    Ok(Json(job_json(&ctx.svc.cancel_job(request(&ctx, &headers, "CancelJob", msg)?).await?.into_inner())))
}

pub async fn retry_job(State(ctx): State<Ctx>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    same_origin_json(&headers)?;
    let msg = pb::RetryTasksRequest { job_id: id, task_ids: vec![] };
    let r = ctx.svc.retry_tasks(request(&ctx, &headers, "RetryTasks", msg)?).await?.into_inner();
    Ok(Json(json!({"task_ids": r.task_ids})))
}

pub async fn cancel_task(State(ctx): State<Ctx>, headers: HeaderMap, Path(id): Path<i64>) -> ApiResult {
    same_origin_json(&headers)?;
    let msg = pb::CancelTaskRequest { task_id: id, reason: ACTION_REASON.into() };
    Ok(Json(task_json(&ctx.svc.cancel_task(request(&ctx, &headers, "CancelTask", msg)?).await?.into_inner())))
}

pub async fn retry_task(State(ctx): State<Ctx>, headers: HeaderMap, Path(id): Path<i64>) -> ApiResult {
    same_origin_json(&headers)?;
    let msg = pb::RetryTasksRequest { job_id: String::new(), task_ids: vec![id] };
    let r = ctx.svc.retry_tasks(request(&ctx, &headers, "RetryTasks", msg)?).await?.into_inner();
    Ok(Json(json!({"task_ids": r.task_ids})))
}

/// Any other `/api/` path.
pub async fn unknown() -> ApiError {
    ApiError(Status::not_found("no such API path"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_map_to_http_statuses_and_names() {
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(http_status(Code::FailedPrecondition), StatusCode::CONFLICT);
        assert_eq!(http_status(Code::Unauthenticated), StatusCode::UNAUTHORIZED);
        assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(Code::NotFound), "NOT_FOUND");
    }

    #[test]
    fn actions_must_be_json_from_this_origin() {
        let mut h = HeaderMap::new();
        assert!(same_origin_json(&h).is_err(), "no content type");
        h.insert(header::CONTENT_TYPE, "application/json; charset=utf-8".parse().unwrap());
        assert!(same_origin_json(&h).is_ok(), "no Origin: not a browser's cross-site request");
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(same_origin_json(&h).is_ok());
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(same_origin_json(&h).is_err());
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(same_origin_json(&h).is_err(), "a form's content type");
        assert_eq!(states("completed, failed").unwrap().len(), 2);
        assert!(states("done").is_err());
    }
}
