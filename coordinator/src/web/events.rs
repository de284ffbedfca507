//! `GET /api/events`: live updates for the web dashboard as server-sent events, from the same
//! streams gRPC callers get (never by polling the database). Without `job`, the fleet's
//! WatchFleet stream (`event: fleet`, stats every second); with `job=ID`, that job's WatchJob
//! stream, followed (`event: job`, `id:` its sequence number, so `after_seq` resumes it). A
//! job's snapshot is sent as its status only: the page reads the tasks it shows a page at a
//! time, so a job of 100,000 tasks costs the browser nothing here. The stream ends with an
//! `event: error` when the gRPC stream ends with an error (the coordinator stopping:
//! UNAVAILABLE).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use orca_proto::json::{state_name, stats_json, worker_json};
use orca_proto::pb;
use pb::orchestrator_server::Orchestrator;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_stream::{Stream, StreamExt};

use super::Ctx;
use super::api::{ApiError, request};

/// How often the fleet stream carries the stats.
const STATS_EVERY_MS: u32 = 1_000;
/// A comment line this often keeps proxies and the browser from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Deserialize)]
pub struct EventsQuery {
    #[serde(default)]
    job: Option<String>,
    #[serde(default)]
    after_seq: u64,
}

pub async fn events(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    Ok(match q.job {
        None => {
            let msg = pb::WatchFleetRequest { stats_interval_ms: STATS_EVERY_MS };
            let stream = ctx.svc.watch_fleet(request(&ctx, &headers, "WatchFleet", msg)?).await?.into_inner();
            sse(stream.map(|r| r.map(|e| Some(fleet_event(&e)))))
        }
        Some(job_id) => {
            let msg = pb::WatchJobRequest { job_id, after_seq: q.after_seq, follow: true };
            let stream = ctx.svc.watch_job(request(&ctx, &headers, "WatchJob", msg)?).await?.into_inner();
            sse(stream.map(|r| r.map(|e| job_event(&e))))
        }
    })
}

/// The SSE response of a stream of events (`None`: nothing to send for that message), ended
/// by an `error` event when the stream fails.
fn sse(stream: impl Stream<Item = Result<Option<Event>, tonic::Status>> + Send + 'static) -> Response {
    let mut ended = false;
    let events = stream
        .map_while(move |r| {
            if ended {
                return None;
            }
            Some(match r {
                Ok(e) => e,
                Err(status) => {
                    ended = true;
                    let body = json!({"error": status.message(), "code": format!("{:?}", status.code())});
                    Some(Event::default().event("error").data(body.to_string()))
                }
            })
        })
        .filter_map(|e| e.map(Ok::<_, Infallible>));
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response()
}

fn fleet_kind(k: i32) -> &'static str {
    match pb::FleetEventKind::try_from(k) {
        Ok(pb::FleetEventKind::Snapshot) => "snapshot",
        Ok(pb::FleetEventKind::WorkerJoined) => "worker_joined",
        Ok(pb::FleetEventKind::WorkerChanged) => "worker_changed",
        Ok(pb::FleetEventKind::WorkerLeft) => "worker_left",
        Ok(pb::FleetEventKind::Stats) => "stats",
        _ => "unknown",
    }
}

fn fleet_event(e: &pb::FleetEvent) -> Event {
    let v = json!({
        "kind": fleet_kind(e.kind),
        "workers": e.workers.iter().map(worker_json).collect::<Vec<_>>(),
        "stats": e.stats.as_ref().map(stats_json),
        "time_ms": e.time_ms,
    });
    Event::default().event("fleet").data(v.to_string())
}

fn job_kind(k: i32) -> &'static str {
    match pb::JobEventKind::try_from(k) {
        Ok(pb::JobEventKind::Snapshot) => "snapshot",
        Ok(pb::JobEventKind::TaskState) => "task_state",
        Ok(pb::JobEventKind::TaskProgress) => "task_progress",
        Ok(pb::JobEventKind::JobCancelled) => "job_cancelled",
        _ => "unknown",
    }
}

/// A job event without the snapshot's task list; the parts of a snapshot but its last are
/// not sent.
pub fn job_document(e: &pb::JobEvent) -> Option<Value> {
    if e.snapshot_more {
        return None;
    }
    let s = e.status.clone().unwrap_or_default();
    let state = |v: i32| if v == 0 { "" } else { state_name(v) };
    Some(json!({
        "seq": e.seq,
        "kind": job_kind(e.kind),
        "task_id": e.task_id,
        "state": state(e.state),
        "previous_state": state(e.previous_state),
        "attempt": e.attempt,
        "message": e.message,
        "status": orca_proto::json::status_json(&e.job_id, &s),
        "job_state": orca_proto::json::job_state_name(e.job_state),
        "time_ms": e.time_ms,
    }))
}

fn job_event(e: &pb::JobEvent) -> Option<Event> {
    let v = job_document(e)?;
    Some(Event::default().event("job").id(e.seq.to_string()).data(v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jobs_snapshot_goes_as_its_last_part_without_tasks() {
        let part = pb::JobEvent { snapshot_more: true, kind: pb::JobEventKind::Snapshot as i32, ..Default::default() };
        assert!(job_document(&part).is_none());
        let last = pb::JobEvent {
            seq: 9,
            kind: pb::JobEventKind::Snapshot as i32,
            tasks: vec![pb::TaskSummary { task_id: 1, ..Default::default() }],
            status: Some(pb::JobStatus { total_tasks: 1, ..Default::default() }),
            ..Default::default()
        };
        let v = job_document(&last).unwrap();
        assert_eq!(
            (v["kind"].as_str(), v["seq"].as_u64(), v["status"]["total_tasks"].as_u64()),
            (Some("snapshot"), Some(9), Some(1))
        );
        assert!(v.get("tasks").is_none());
        let moved = pb::JobEvent {
            kind: pb::JobEventKind::TaskState as i32,
            state: pb::TaskState::Completed as i32,
            previous_state: pb::TaskState::InProgress as i32,
            ..Default::default()
        };
        let v = job_document(&moved).unwrap();
        assert_eq!((v["state"].as_str(), v["previous_state"].as_str()), (Some("completed"), Some("in_progress")));
        assert_eq!(fleet_kind(pb::FleetEventKind::WorkerLeft as i32), "worker_left");
    }
}
