//! Operating the coordinator: /metrics and /healthz, DeleteJob and retention, online backups,
//! the version-skew rule, upgrades from the previous release's database, and the systemd
//! notification protocol of both binaries.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use orca_e2e::workers::{WorkerProc, http_get, script, until, until_async};
use orca_e2e::*;
use orca_proto::pb;
use tokio::sync::mpsc;
use tonic::Code;

/// The value of the sample `series` (name and labels exactly as rendered), if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_all_present_from_start_and_move_as_tasks_run() {
    let dir = tempfile::tempdir().unwrap();
    let (coord, http) = Coordinator::start_with_http(dir.path(), &[]);
    let (status, health) = http_get(&http, "/healthz", None);
    assert_eq!((status, health.lines().next()), (200, Some("serving")), "{health}");

    let (status, m) = http_get(&http, "/metrics", None);
    assert_eq!(status, 200);
    for (name, help) in orca_coordinator::metrics::DESCRIBED {
        assert!(m.contains(&format!("# HELP {name} {help}")), "{name} is not described:\n{m}");
        let base = name.trim_end_matches("_total");
        assert!(m.lines().any(|l| l.starts_with(base) && !l.starts_with('#')), "{name} has no sample at start:\n{m}");
    }
    assert_eq!(sample(&m, "orca_tasks{state=\"completed\"}"), Some(0.0));
    assert_eq!(sample(&m, "orca_up"), Some(1.0));
    assert!(!m.contains("job_id") && !m.contains("task_id"), "no label per job or task");

    let mut c = coord.client().await;
    let job = create_job(&mut c, "metrics").await;
    let (tx, _rx) = mpsc::unbounded_channel();
    let _w = TestWorker::start(&coord.url(), WorkerOpts::new("m1", 2), tx).await;
    add(&mut c, &job, vec![spec("a"), spec("b"), spec("c")]).await;
    wait_idle(&mut c, &job).await;
    let err = c.add_tasks(pb::AddTasksRequest { job_id: job.clone(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let (_, m) = http_get(&http, "/metrics", None);
    assert_eq!(sample(&m, "orca_tasks{state=\"completed\"}"), Some(3.0), "{m}");
    assert_eq!(sample(&m, "orca_task_transitions_total{state=\"completed\"}"), Some(3.0));
    assert_eq!(sample(&m, "orca_task_attempts_total"), Some(3.0));
    assert_eq!(sample(&m, "orca_workers_connected"), Some(1.0));
    assert_eq!(sample(&m, "orca_worker_slots"), Some(2.0));
    assert_eq!(sample(&m, "orca_jobs"), Some(1.0));
    assert_eq!(sample(&m, "orca_task_run_seconds_count"), Some(3.0));
    assert_eq!(sample(&m, "orca_task_submit_to_start_seconds_count"), Some(3.0));
    let ok = "orca_rpc_requests_total{service=\"orca.v1.Orchestrator\",method=\"AddTasks\",code=\"OK\"}";
    let bad = "orca_rpc_requests_total{service=\"orca.v1.Orchestrator\",method=\"AddTasks\",code=\"INVALID_ARGUMENT\"}";
    assert_eq!(sample(&m, ok), Some(1.0), "{m}");
    assert_eq!(sample(&m, bad), Some(1.0), "{m}");
    assert!(sample(&m, "orca_database_size_bytes").unwrap() > 0.0);
    assert!(sample(&m, "orca_writer_commit_seconds_count").unwrap() > 0.0);
    let (status, _) = http_get(&http, "/nope", None);
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_job_removes_a_finished_job_and_refuses_a_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let (mut coord, http) = Coordinator::start_with_http(dir.path(), &["--retain-days", "0"]);
    let mut c = coord.client().await;
    let (tx, _rx) = mpsc::unbounded_channel();
    let done = create_job(&mut c, "finished").await;
    let running = create_job(&mut c, "running").await;
    let hold = |a: &pb::Assignment| {
        if a.spec.as_ref().is_some_and(|s| s.prompt == "hold") { Action::Hold } else { Action::Complete("ok".into()) }
    };
    let _w = TestWorker::start(&coord.url(), WorkerOpts::new("d1", 4).behavior(hold), tx).await;
    add(&mut c, &running, vec![spec("hold")]).await;
    until_async("the held task to run", || {
        let mut c = c.clone();
        let running = running.clone();
        async move { job_status(&mut c, &running).await.in_progress == 1 }
    })
    .await;
    // The deleted job holds the highest task ids, which must never be given again.
    let done_ids = add(&mut c, &done, vec![spec("a"), spec("b")]).await;
    c.set_context(pb::SetContextRequest { job_id: done.clone(), key: "k".into(), value: "v".into() }).await.unwrap();
    wait_idle(&mut c, &done).await;

    let refused = c.delete_job(pb::DeleteJobRequest { job_id: running.clone() }).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("not final"), "{}", refused.message());
    let missing = c.delete_job(pb::DeleteJobRequest { job_id: "01a2a2a2-0000-7000-8000-000000000000".into() });
    assert_eq!(missing.await.unwrap_err().code(), Code::NotFound);
    let empty = c.delete_job(pb::DeleteJobRequest { job_id: String::new() }).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(empty.message().contains("job_id"), "{}", empty.message());

    c.delete_job(pb::DeleteJobRequest { job_id: done.clone() }).await.unwrap();
    let gone = c.get_job(pb::GetJobRequest { job_id: done.clone() }).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    for id in &done_ids {
        let e = c.get_task(pb::GetTaskRequest { task_id: *id }).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "task {id}");
    }
    let w = c.watch_job(pb::WatchJobRequest { job_id: done.clone(), after_seq: 0, follow: false }).await;
    assert_eq!(w.unwrap_err().code(), Code::NotFound);
    let listed = c.list_jobs(pb::ListJobsRequest::default()).await.unwrap().into_inner();
    assert!(listed.jobs.iter().all(|j| j.job_id != done));
    assert_eq!(job_status(&mut c, &running).await.in_progress, 1, "the other job is untouched");
    until("the purge to finish", || {
        sample(&http_get(&http, "/metrics", None).1, "orca_jobs_purged_total") == Some(1.0)
    })
    .await;

    // Across a restart: still gone, and task ids are never given twice.
    coord.restart();
    let mut c = coord.client().await;
    assert_eq!(c.get_job(pb::GetJobRequest { job_id: done.clone() }).await.unwrap_err().code(), Code::NotFound);
    let next = create_job(&mut c, "after").await;
    let ids = add(&mut c, &next, vec![spec("new")]).await;
    assert!(ids[0] > *done_ids.iter().max().unwrap(), "{ids:?} reuses an id of {done_ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_finished_jobs_only() {
    let dir = tempfile::tempdir().unwrap();
    // About 2.6 s.
    let coord = Coordinator::start(dir.path(), &["--retain-days", "0.00003"]);
    let mut c = coord.client().await;
    let (tx, _rx) = mpsc::unbounded_channel();
    let hold = |a: &pb::Assignment| {
        if a.spec.as_ref().is_some_and(|s| s.prompt == "hold") { Action::Hold } else { Action::Complete("ok".into()) }
    };
    let _w = TestWorker::start(&coord.url(), WorkerOpts::new("r1", 4).behavior(hold), tx).await;
    let finished = create_job(&mut c, "finished").await;
    let ids = add(&mut c, &finished, vec![spec("a"), spec("b")]).await;
    wait_idle(&mut c, &finished).await;
    let running = create_job(&mut c, "running").await;
    let held = add(&mut c, &running, vec![spec("hold"), spec("done")]).await;

    until_async("retention to remove the finished job", || {
        let mut c = c.clone();
        let finished = finished.clone();
        async move { c.get_job(pb::GetJobRequest { job_id: finished }).await.is_err_and(|e| e.code() == Code::NotFound) }
    })
    .await;
    for id in ids {
        assert_eq!(c.get_task(pb::GetTaskRequest { task_id: id }).await.unwrap_err().code(), Code::NotFound);
    }
    // Past the retention time too, but one task still runs: it stays, whole.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let s = job_status(&mut c, &running).await;
    assert_eq!((s.in_progress, s.completed), (1, 1), "{s:?}");
    assert_eq!(task(&mut c, held[0]).await.state, pb::TaskState::InProgress as i32);
}

/// `orca-coordinator backup` while tasks keep arriving: the copy starts as a coordinator
/// and serves every task acknowledged before the backup began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_every_acknowledged_task() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "backup").await;
    let mut acked = vec![];
    for b in 0..20 {
        acked.extend(add(&mut c, &job, (0..50).map(|i| spec(&format!("t{b}-{i}"))).collect()).await);
    }
    // Load during the backup.
    let load = {
        let mut c = c.clone();
        let job = job.clone();
        tokio::spawn(async move {
            let mut n = 0;
            for b in 0..40 {
                n += add(&mut c, &job, (0..50).map(|i| spec(&format!("during{b}-{i}"))).collect()).await.len();
            }
            n
        })
    };
    let copy = dir.path().join("copy.db");
    if on_postgres() {
        // A Postgres database is backed up with pg_dump; the command says so.
        let out = std::process::Command::new(binary("orca-coordinator"))
            .args(["backup", "--db", coord.db.to_str().unwrap(), "--to", copy.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("pg_dump"));
        assert_eq!(load.await.unwrap(), 2_000);
        return;
    }
    let out = tokio::process::Command::new(binary("orca-coordinator"))
        .args(["backup", "--db", coord.db.to_str().unwrap(), "--to", copy.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("written to") && stdout.contains("1 jobs"), "{stdout}");
    assert_eq!(load.await.unwrap(), 2_000, "the coordinator kept serving");

    // Again to the same file: refused, the copy untouched.
    let again = std::process::Command::new(binary("orca-coordinator"))
        .args(["backup", "--db", coord.db.to_str().unwrap(), "--to", copy.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let restored_dir = dir.path().join("restored");
    std::fs::create_dir(&restored_dir).unwrap();
    let restored = Coordinator::start(&restored_dir, &["--db", copy.to_str().unwrap()]);
    let mut r = restored.client().await;
    let s = job_status(&mut r, &job).await;
    assert!(s.total_tasks >= acked.len() as u64, "{s:?}");
    for id in acked {
        assert_eq!(task(&mut r, id).await.job_id, job);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_enforces_the_version_rule() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let mut gw = coord.gateway().await;
    let reg = |version: &str| pb::RegisterRequest { slots: 1, version: version.into(), ..Default::default() };
    let ok = gw.register(reg(orca_proto::contract::VERSION)).await.unwrap().into_inner();
    assert_eq!(ok.coordinator_version, orca_proto::contract::VERSION);
    gw.register(reg("")).await.expect("an unversioned (0.1) worker is one minor behind");
    let old = gw.register(reg("0.0.9")).await.unwrap_err();
    assert_eq!(old.code(), Code::FailedPrecondition);
    assert!(old.message().contains("upgrade the worker"), "{}", old.message());
    let ahead = gw.register(reg("0.9.0")).await.unwrap_err();
    assert_eq!(ahead.code(), Code::FailedPrecondition);
    assert!(ahead.message().contains("upgrade the coordinator first"), "{}", ahead.message());
    let junk = gw.register(reg("latest")).await.unwrap_err();
    assert_eq!(junk.code(), Code::InvalidArgument);
    assert!(junk.message().contains("version"), "{}", junk.message());
}

/// The database a 0.1.0 coordinator left (three jobs: two finished, one with two pending
/// tasks) opens, migrates and runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_previous_release_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/orca-0.1.0.db"), &db).unwrap();
    let coord = Coordinator::start(dir.path(), &["--db", db.to_str().unwrap()]);
    let mut c = coord.client().await;
    let jobs = c.list_jobs(pb::ListJobsRequest::default()).await.unwrap().into_inner().jobs;
    let counts: Vec<(u64, u64)> =
        jobs.iter().map(|j| j.status.as_ref().map(|s| (s.completed, s.pending)).unwrap_or_default()).collect();
    assert_eq!(counts, vec![(2, 0), (1, 0), (0, 2)], "{jobs:?}");
    assert_eq!(task(&mut c, 1).await.state, pb::TaskState::Completed as i32);
    let (tx, _rx) = mpsc::unbounded_channel();
    let _w = TestWorker::start(&coord.url(), WorkerOpts::new("u1", 2), tx).await;
    let s = wait_idle(&mut c, &jobs[2].job_id).await;
    assert_eq!(s.completed, 2);
    let ids = add(&mut c, &jobs[0].job_id, vec![spec("new")]).await;
    assert_eq!(ids, vec![6]);
}

/// Datagrams received on a NOTIFY_SOCKET, joined.
fn notifications(sock: &UnixDatagram, into: &mut String) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        into.push_str(&String::from_utf8_lossy(&buf[..n]));
        into.push('\n');
    }
}

fn notify_socket(dir: &Path, name: &str) -> (UnixDatagram, String) {
    let path = dir.join(name);
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_nonblocking(true).unwrap();
    (sock, path.to_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_binaries_speak_the_systemd_notify_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let (csock, cpath) = notify_socket(dir.path(), "coordinator.sock");
    let config = orca_harness::CoordinatorConfig::new(binary("orca-coordinator"), dir.path())
        .env("NOTIFY_SOCKET", &cpath)
        .env("WATCHDOG_USEC", "200000")
        .ready_within(WAIT);
    let mut coord = orca_harness::Coordinator::start(config).unwrap();
    let mut seen = String::new();
    until("the coordinator's READY=1 and WATCHDOG=1", || {
        notifications(&csock, &mut seen);
        seen.contains("READY=1") && seen.contains("WATCHDOG=1")
    })
    .await;
    assert!(seen.find("READY=1") < seen.find("WATCHDOG=1"), "{seen}");

    let (wsock, wpath) = notify_socket(dir.path(), "worker.sock");
    let agent = script(dir.path(), "agent.sh", "env > \"$ORCA_TEST_ENV_OUT\"\necho done\n");
    let env_out = dir.path().join("agent.env");
    let worker = WorkerProc::start_with_env(
        &coord.url(),
        dir.path(),
        "notify",
        &["--agent", "command", "--agent-command", agent.to_str().unwrap()],
        &[("NOTIFY_SOCKET", &wpath), ("WATCHDOG_USEC", "200000"), ("ORCA_TEST_ENV_OUT", env_out.to_str().unwrap())],
    );
    let mut wseen = String::new();
    until("the worker's READY=1, connected status and WATCHDOG=1", || {
        notifications(&wsock, &mut wseen);
        wseen.contains("READY=1") && wseen.contains("STATUS=connected: 0 of") && wseen.contains("WATCHDOG=1")
    })
    .await;
    assert!(wseen.find("STATUS=connecting") < wseen.find("STATUS=connected"), "{wseen}");

    let mut c = orca_proto::pb::orchestrator_client::OrchestratorClient::connect(coord.url()).await.unwrap();
    let job = create_job(&mut c, "notify").await;
    add(&mut c, &job, vec![spec("print the environment")]).await;
    assert_eq!(wait_idle(&mut c, &job).await.completed, 1);
    let env = std::fs::read_to_string(&env_out).unwrap();
    assert!(env.contains("ORCA_TEST_ENV_OUT"), "the agent's environment was recorded");
    for v in orca_proto::systemd::VARIABLES {
        assert!(!env.contains(&format!("{v}=")), "the agent inherited {v}");
    }

    worker.terminate();
    until("the worker's STOPPING=1", || {
        notifications(&wsock, &mut wseen);
        wseen.contains("STOPPING=1")
    })
    .await;
    signal(coord.child.id(), libc::SIGTERM);
    until("the coordinator's STOPPING=1", || {
        notifications(&csock, &mut seen);
        seen.contains("STOPPING=1")
    })
    .await;
    let _ = coord.terminate(WAIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_fleet_shows_workers_join_change_and_the_stats() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let mut c = coord.client().await;
    let mut fleet = c.watch_fleet(pb::WatchFleetRequest { stats_interval_ms: 500 }).await.unwrap().into_inner();
    let snap = fleet.message().await.unwrap().unwrap();
    assert_eq!(snap.kind, pb::FleetEventKind::Snapshot as i32);
    assert!(snap.workers.is_empty() && snap.stats.is_some());

    let (tx, _rx) = mpsc::unbounded_channel();
    let w = TestWorker::start(&coord.url(), WorkerOpts::new("fleet", 3), tx).await;
    // A worker registers, then opens its stream: it joins connected, or joins and then changes
    // to connected (the two steps can fall in different reads of the fleet).
    let mut seen = next_of(&mut fleet, pb::FleetEventKind::WorkerJoined).await.workers[0].clone();
    while !seen.connected {
        seen = next_of(&mut fleet, pb::FleetEventKind::WorkerChanged).await.workers[0].clone();
    }
    assert_eq!((seen.slots, seen.connected), (3, true));
    let stats = next_of(&mut fleet, pb::FleetEventKind::Stats).await.stats.unwrap();
    assert_eq!((stats.workers_connected, stats.slots, stats.throughput.len()), (1, 3, 60));
    w.stop();
    let changed = next_of(&mut fleet, pb::FleetEventKind::WorkerChanged).await;
    assert!(!changed.workers[0].connected, "{changed:?}");
}

/// The next fleet event of this kind (others are skipped).
async fn next_of(stream: &mut tonic::Streaming<pb::FleetEvent>, kind: pb::FleetEventKind) -> pb::FleetEvent {
    loop {
        let ev = tokio::time::timeout(WAIT, stream.message()).await.expect("an event").unwrap().unwrap();
        if ev.kind == kind as i32 {
            return ev;
        }
    }
}
