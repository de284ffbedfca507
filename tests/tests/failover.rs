//! Standby coordinators on Postgres: two coordinators on one database, workers and clients
//! given both URLs, the leader killed (-9) again and again while tasks flow. Runs in the
//! Postgres pass of the end-to-end tests (`ORCA_E2E_DB=postgres`); the SQLite pass skips it,
//! saying so. CI size by default; `ORCA_FAILOVER_TASKS` and `ORCA_FAILOVER_KILLS` set the
//! full size (`scripts/failover.sh`: 20,000 tasks, 5 kills).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use orca_e2e::workers::{WorkerProc, until, until_async};
use orca_e2e::*;
use orca_proto::pb;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn size(var: &str, ci: usize) -> usize {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(ci)
}

async fn health(url: &str) -> i32 {
    let Ok(ep) = tonic::transport::Endpoint::from_shared(url.to_string()) else { return -1 };
    let Ok(channel) = ep.connect_timeout(Duration::from_secs(2)).connect().await else { return -1 };
    let req = tonic_health::pb::HealthCheckRequest { service: "orca.v1.Orchestrator".into() };
    HealthClient::new(channel).check(req).await.map(|r| r.into_inner().status).unwrap_or(-1)
}

/// A standby refuses every call naming the leader and reports NOT_SERVING; the leader serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_names_the_leader_and_takes_over_when_it_dies() {
    if !on_postgres() {
        eprintln!("not the Postgres pass (ORCA_E2E_DB=postgres): skipped");
        return;
    }
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Coordinator::start(da.path(), &[]);
    let mut b = Coordinator::start(db.path(), &["--db", a.db.to_str().unwrap()]);
    assert_eq!(health(&a.url()).await, ServingStatus::Serving as i32);
    assert_eq!(health(&b.url()).await, ServingStatus::NotServing as i32);
    let mut on_b = b.client().await;
    let refused = on_b.create_job(pb::CreateJobRequest::default()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    assert!(refused.message().contains(&a.url()), "{}", refused.message());

    let both = format!("{},{}", a.url(), b.url());
    let client = orca_client::Client::connect(&both).await.unwrap();
    assert_eq!(client.url(), a.url());
    let job = client.create_job("failover").await.unwrap();
    a.kill();
    let killed = Instant::now();
    until_async("the standby serving", || async { health(&b.url()).await == ServingStatus::Serving as i32 }).await;
    eprintln!("standby serving {} ms after the leader's kill -9", killed.elapsed().as_millis());
    // The job the old leader acknowledged is there; the client follows the new leader.
    let client = client.follow_leader().await.unwrap();
    assert_eq!(client.url(), b.url());
    let req =
        pb::AddTasksRequest { job_id: job.clone(), tasks: vec![spec("after the takeover")], ..Default::default() };
    let ids = client.raw().add_tasks(req).await.unwrap().into_inner().task_ids;
    let _w = WorkerProc::start(&both, da.path(), "w", &["--agent", "noop"]);
    let status = wait_idle(&mut b.client().await, &job).await;
    assert_eq!((status.completed, ids.len()), (1, 1));
    // The old leader, started again, is a standby naming the new one.
    a.restart_same_port();
    assert_eq!(health(&a.url()).await, ServingStatus::NotServing as i32);
    let refused = a.client().await.get_job(pb::GetJobRequest { job_id: job }).await.unwrap_err();
    assert!(refused.message().contains(&b.url()), "{}", refused.message());
    // SIGTERM: a standby and a leader both stop cleanly.
    assert!(a.terminate().success());
    assert!(b.terminate().success());
}

/// The failover chaos run: two coordinators, 4 workers with both URLs, N tasks added while
/// the leader is killed K times (each restarted as a standby). Every acknowledged task ends
/// completed, none completed twice, and a WatchJob client following the leader sees each
/// seq once, in order, and every task's completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_under_load_loses_and_doubles_nothing() {
    if !on_postgres() {
        eprintln!("not the Postgres pass (ORCA_E2E_DB=postgres): skipped");
        return;
    }
    let (tasks, kills) = (size("ORCA_FAILOVER_TASKS", 2_000), size("ORCA_FAILOVER_KILLS", 3));
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let first = Coordinator::start(dirs[0].path(), &["--lease-seconds", "5"]);
    let db = first.db.to_str().unwrap().to_string();
    let mut coords = [first, Coordinator::start(dirs[1].path(), &["--lease-seconds", "5", "--db", &db])];
    let both = format!("{},{}", coords[0].url(), coords[1].url());
    let workers: Vec<WorkerProc> = (0..4)
        .map(|i| WorkerProc::start(&both, dirs[0].path(), &format!("w{i}"), &["--agent", "noop", "--slots", "8"]))
        .collect();
    let client = orca_client::Client::connect(&both).await.unwrap();
    let job = client.create_job("failover chaos").await.unwrap();
    let watch = {
        let (client, job) = (client.clone(), job.clone());
        tokio::spawn(async move {
            let opts = orca_client::WatchOptions { follow: true, ..Default::default() };
            let mut stream = Box::pin(client.watch(&job, opts));
            let mut seen: Vec<pb::JobEvent> = Vec::new();
            while let Some(ev) = stream.next().await {
                let ev = ev.expect("the watch gives up only on a refused request");
                let done = ev.status.as_ref().is_some_and(|s| s.total_tasks > 0 && s.finished() == s.total_tasks);
                seen.push(ev);
                if done && seen.last().is_some_and(|e| e.status.as_ref().unwrap().total_tasks as usize >= tasks) {
                    return seen;
                }
            }
            seen
        })
    };
    let (mut acked, mut leader, mut takeovers) = (Vec::new(), 0usize, Vec::new());
    let batch = 50;
    let every = (tasks / batch / (kills + 1)).max(1);
    let mut client = client;
    let mut round = 0;
    while acked.len() < tasks + takeovers.len() {
        if round > 0 && round % every == 0 && takeovers.len() < kills {
            coords[leader].kill();
            let killed = Instant::now();
            let next = 1 - leader;
            let url = coords[next].url();
            until_async("the standby serving", || async { health(&url).await == ServingStatus::Serving as i32 }).await;
            let serving = killed.elapsed();
            // A task added now runs once a worker found the new leader: the whole takeover.
            let mut c = coords[next].client().await;
            let probe = add(&mut c, &job, vec![spec(&format!("probe {round}"))]).await[0];
            acked.push(probe);
            until_async("the probe task completed", || {
                let mut c = c.clone();
                async move { task(&mut c, probe).await.state == pb::TaskState::Completed as i32 }
            })
            .await;
            takeovers.push((serving, killed.elapsed()));
            coords[leader].restart_same_port();
            leader = next;
        }
        round += 1;
        let specs: Vec<pb::TaskSpec> = (0..batch).map(|i| spec(&format!("r{round} t{i}"))).collect();
        let req = pb::AddTasksRequest { job_id: job.clone(), tasks: specs, ..Default::default() };
        match client.raw().add_tasks(req).await {
            Ok(r) => acked.extend(r.into_inner().task_ids),
            Err(s) if s.code() == Code::Unavailable => client = client.follow_leader().await.unwrap_or(client),
            Err(s) => panic!("round {round}: {s:?}"),
        }
    }
    let mut c = coords[leader].client().await;
    let status = wait_idle(&mut c, &job).await;
    assert_eq!(status.total_tasks, acked.len() as u64, "{status:?}");
    assert_eq!((status.completed, status.failed), (acked.len() as u64, 0), "{status:?}");
    let seen = tokio::time::timeout(WAIT, watch).await.expect("the watcher saw the job finish").unwrap();
    check_watch(&seen, &acked);
    for id in acked.iter().step_by(10) {
        let t = c.get_task(pb::GetTaskRequest { task_id: *id }).await.unwrap().into_inner();
        let completed = t.history.iter().filter(|a| a.outcome == "completed").count();
        assert!(t.state == pb::TaskState::Completed as i32 && completed <= 1, "{t:?}");
    }
    let ms: Vec<(u128, u128)> = takeovers.iter().map(|(s, d)| (s.as_millis(), d.as_millis())).collect();
    eprintln!(
        "failover: {tasks} tasks, {kills} kills of the leader; kill -9 to (the standby serving, a task \
         added then completed), ms: {ms:?}"
    );
    drop(workers);
}

/// The watcher's view: seqs in order (a snapshot's messages share one), no event twice, and
/// each task's completion seen, as an event or in a snapshot taken after a takeover.
fn check_watch(seen: &[pb::JobEvent], acked: &[i64]) {
    let mut last = 0u64;
    let mut completed: HashMap<i64, u32> = HashMap::new();
    for ev in seen {
        let snapshot = ev.kind == pb::JobEventKind::Snapshot as i32;
        assert!(ev.seq > last || (snapshot && ev.seq >= last), "seq {} after {last}", ev.seq);
        last = ev.seq;
        if snapshot {
            for t in &ev.tasks {
                if t.state == pb::TaskState::Completed as i32 {
                    completed.entry(t.task_id).or_insert(0);
                }
            }
        } else if ev.state == pb::TaskState::Completed as i32 {
            *completed.entry(ev.task_id).or_insert(0) += 1;
        }
    }
    for id in acked {
        let n = completed.get(id).copied();
        assert!(matches!(n, Some(0 | 1)), "task {id}: completion seen {n:?} times as an event");
    }
}

/// With `--job-webhook` on both: only the leader delivers, and a notice the old leader could
/// not deliver before it died is delivered by the new one, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_leader_delivers_the_webhooks_the_old_one_left() {
    if !on_postgres() {
        eprintln!("not the Postgres pass (ORCA_E2E_DB=postgres): skipped");
        return;
    }
    // Refused (503) while the first leader lives; accepted once `open` is set.
    let open = Arc::new(AtomicBool::new(false));
    let gate = open.clone();
    let (addr, got) = http_sink(move |_| if gate.load(Ordering::SeqCst) { 200 } else { 503 });
    let hook = format!("http://{addr}/hook");
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Coordinator::start(da.path(), &["--job-webhook", &hook]);
    let b = Coordinator::start(db.path(), &["--job-webhook", &hook, "--db", a.db.to_str().unwrap()]);
    let mut c = a.client().await;
    let job = create_job(&mut c, "hooked").await;
    let _w = WorkerProc::start(&format!("{},{}", a.url(), b.url()), da.path(), "w", &["--agent", "noop"]);
    add(&mut c, &job, vec![spec("one")]).await;
    wait_idle(&mut c, &job).await;
    until("the old leader tried the webhook", || !got.lock().unwrap().is_empty()).await;
    a.kill();
    open.store(true, Ordering::SeqCst);
    let delivered = || got.lock().unwrap().iter().filter(|(code, body)| *code == 200 && body.contains(&job)).count();
    until("the new leader delivered the notice", || delivered() >= 1).await;
    // No second delivery (the standby never delivers; the new leader marks it done).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(delivered(), 1, "{:?}", got.lock().unwrap());
}
