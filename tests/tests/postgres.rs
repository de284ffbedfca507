//! The coordinator on Postgres while Postgres goes away and comes back (`pg_ctl stop`, then
//! start; `pg_ctl restart` under load). Runs in the Postgres pass of the end-to-end tests
//! (`ORCA_E2E_DB=postgres`, which `scripts/test.sh` runs); the SQLite pass has no server to
//! stop and skips it, saying so. The tests of this file run one at a time (they stop the
//! shared server), and no other test binary runs beside them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use orca_e2e::workers::{WorkerProc, until_async};
use orca_e2e::*;
use orca_proto::pb;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The server's data directory and the script that stops and starts it, when this is the
/// Postgres pass.
fn server() -> Option<(PathBuf, String)> {
    orca_harness::coordinator::e2e_postgres()?;
    let data = std::env::var("ORCA_TEST_PGDATA").expect("ORCA_TEST_PGDATA (set by scripts/postgres.sh start)");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/postgres.sh").to_string();
    Some((PathBuf::from(data), script))
}

fn pg(script: &str, verb: &str, data: &Path) {
    let out = std::process::Command::new(script).args([verb, data.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "postgres.sh {verb}: {}", String::from_utf8_lossy(&out.stderr));
}

async fn health(url: &str) -> i32 {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string()).unwrap().connect().await.unwrap();
    let mut h = HealthClient::new(channel);
    let req = tonic_health::pb::HealthCheckRequest { service: "orca.v1.Orchestrator".into() };
    h.check(req).await.map(|r| r.into_inner().status).unwrap_or(-1)
}

/// Postgres stopped under a serving coordinator: the next write is refused with
/// UNAVAILABLE (nothing acknowledged that was not committed), health says NOT_SERVING, and
/// once Postgres is back the coordinator reloads by itself: every acknowledged task runs to
/// completion, once, and the refused call's tasks do not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_started_under_the_coordinator() {
    let Some((data, script)) = server() else {
        eprintln!("not the Postgres pass (ORCA_E2E_DB=postgres): skipped");
        return;
    };
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "pg down").await;
    let before = add(&mut c, &job, (0..50).map(|i| spec(&format!("before {i}"))).collect()).await;
    assert_eq!(health(&coord.url()).await, ServingStatus::Serving as i32);

    pg(&script, "halt", &data);
    let refused = c
        .add_tasks(pb::AddTasksRequest { job_id: job.clone(), tasks: vec![spec("during")], ..Default::default() })
        .await
        .expect_err("a write while Postgres is down");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    until_async("health NOT_SERVING", || async { health(&coord.url()).await == ServingStatus::NotServing as i32 })
        .await;
    // Reads fail as unavailable too (the caller may retry), never as internal errors.
    let read = c.get_job(pb::GetJobRequest { job_id: job.clone() }).await;
    assert!(read.as_ref().is_err_and(|s| s.code() == Code::Unavailable), "{read:?}");

    pg(&script, "resume", &data);
    until_async("health SERVING", || async { health(&coord.url()).await == ServingStatus::Serving as i32 }).await;
    let after = add(&mut c, &job, (0..50).map(|i| spec(&format!("after {i}"))).collect()).await;
    let w = WorkerProc::start(&coord.url(), dir.path(), "w", &["--agent", "noop", "--slots", "8"]);
    let s = wait_idle(&mut c, &job).await;
    assert_eq!((s.completed, s.failed, s.total_tasks), (100, 0, 100), "{s:?}");
    for id in before.iter().chain(&after) {
        let t = task(&mut c, *id).await;
        assert_eq!((t.state, t.attempts), (pb::TaskState::Completed as i32, 1), "{t:?}");
    }
    drop(w);
}

/// `pg_ctl restart` while a worker runs tasks: the coordinator rides through it (reloading
/// once a commit fails), the worker comes back with it, and every acknowledged task
/// completes exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_loses_and_doubles_nothing() {
    let Some((data, script)) = server() else {
        eprintln!("not the Postgres pass (ORCA_E2E_DB=postgres): skipped");
        return;
    };
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "pg restart").await;
    let _w = WorkerProc::start(&coord.url(), dir.path(), "w", &["--agent", "noop", "--slots", "4"]);
    let mut acked = Vec::new();
    let mut refused = 0;
    for round in 0..40 {
        if round == 10 {
            pg(&script, "restart", &data);
        }
        let tasks = (0..25).map(|i| spec(&format!("r{round} t{i}"))).collect();
        match c.add_tasks(pb::AddTasksRequest { job_id: job.clone(), tasks, ..Default::default() }).await {
            Ok(r) => acked.extend(r.into_inner().task_ids),
            Err(s) if s.code() == Code::Unavailable => {
                refused += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("round {round}: {s:?}"),
        }
    }
    let s = wait_idle(&mut c, &job).await;
    assert_eq!(s.total_tasks, acked.len() as u64, "refused rounds: {refused}; {s:?}");
    assert_eq!((s.completed, s.failed), (acked.len() as u64, 0), "{s:?}");
    // Once each: a task's only attempt completed (no attempt ended twice).
    for id in acked.iter().step_by(7) {
        let t = c.get_task(pb::GetTaskRequest { task_id: *id }).await.unwrap().into_inner();
        let history = t.history.iter().filter(|a| a.outcome == "completed").count();
        assert!(history <= 1, "{t:?}");
    }
}

/// The two tests stop the one server: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
