//! End to end against the real `orca-coordinator` binary, with test workers written against
//! the generated WorkerGateway client.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use orca_e2e::*;
use orca_proto::pb;
use tokio::sync::mpsc;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_tasks_complete_across_four_workers() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "five hundred").await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut workers = vec![];
    for i in 0..4 {
        workers.push(TestWorker::start(&coord.url(), WorkerOpts::new(&format!("w{i}"), 8), tx.clone()).await);
    }
    let started = std::time::Instant::now();
    let mut ids = vec![];
    for b in 0..5 {
        let batch = (0..100).map(|i| spec(&format!("task {}", b * 100 + i))).collect();
        ids.extend(add(&mut c, &job, batch).await);
    }
    let seen = recv_n(&mut rx, 500).await;
    let status = wait_idle(&mut c, &job).await;
    eprintln!("500 tasks across 4 workers: {:?}", started.elapsed());
    assert_eq!(status.completed, 500, "{status:?}");
    assert_eq!(status.progress_pct, 100.0);
    let mut per: HashMap<String, usize> = HashMap::new();
    let mut done: HashSet<i64> = HashSet::new();
    for s in &seen {
        assert_eq!(s.accepted, Some(true));
        *per.entry(s.worker.clone()).or_default() += 1;
        assert!(done.insert(s.task_id), "task {} ran twice", s.task_id);
    }
    assert_eq!(per.len(), 4, "every worker ran some: {per:?}");
    assert_eq!(done, ids.into_iter().collect());
    let t = task(&mut c, seen[0].task_id).await;
    assert_eq!(t.state, pb::TaskState::Completed as i32);
    assert_eq!(t.result.unwrap().output, "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_order_dispatch() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "priorities").await;
    let prios = [1, 10, 5, 10, 3, 7, 5];
    let tasks = prios
        .iter()
        .enumerate()
        .map(|(i, p)| pb::TaskSpec { priority: Some(*p), ..spec(&format!("p{p}-{i}")) })
        .collect();
    add(&mut c, &job, tasks).await;
    // One worker with one slot, connected after everything is queued, sees the order.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _w = TestWorker::start(&coord.url(), WorkerOpts::new("solo", 1), tx).await;
    let order: Vec<String> = recv_n(&mut rx, prios.len()).await.into_iter().map(|s| s.prompt).collect();
    assert_eq!(order, vec!["p10-1", "p10-3", "p7-5", "p5-2", "p5-6", "p3-4", "p1-0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependency_chain_and_parent_child_run_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "ordering").await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _w = TestWorker::start(&coord.url(), WorkerOpts::new("w", 8), tx).await;
    // a <- b <- c (chain, in one batch), and a parent with a child added later, higher priority.
    let ids = add(
        &mut c,
        &job,
        vec![
            pb::TaskSpec { priority: Some(1), ..spec("a") },
            pb::TaskSpec { depends_on: vec![-1], priority: Some(9), ..spec("b") },
            pb::TaskSpec { depends_on: vec![-2], priority: Some(10), ..spec("c") },
        ],
    )
    .await;
    let parent = add(&mut c, &job, vec![spec("parent")]).await[0];
    let child =
        add(&mut c, &job, vec![pb::TaskSpec { parent_task_id: Some(parent), priority: Some(100), ..spec("child") }])
            .await[0];
    let seen = recv_n(&mut rx, 5).await;
    let pos = |id: i64| seen.iter().position(|s| s.task_id == id).unwrap();
    assert!(pos(ids[0]) < pos(ids[1]) && pos(ids[1]) < pos(ids[2]), "{seen:?}");
    assert!(pos(parent) < pos(child), "{seen:?}");
    let t = task(&mut c, ids[2]).await;
    assert_eq!(t.spec.unwrap().depends_on, vec![ids[1]], "batch references are stored as task ids");
    assert_eq!(wait_idle(&mut c, &job).await.completed, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_worker_loses_its_task_and_its_late_report_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &["--lease-seconds", "1"]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "lease").await;
    let id = add(&mut c, &job, vec![spec("slow")]).await[0];

    // A raw worker takes the task, then goes silent: no heartbeat, stream dropped.
    let mut gw = coord.gateway().await;
    let reg = gw
        .register(pb::RegisterRequest { name: "silent".into(), slots: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reg.lease_seconds, 1);
    let mut stream = gw
        .listen(pb::ListenRequest { worker_id: reg.worker_id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.assignments[0].task_id, id);
    assert_eq!(first.assignments[0].attempt, 1);
    drop(stream);

    let (tx, mut rx) = mpsc::unbounded_channel();
    let _b = TestWorker::start(&coord.url(), WorkerOpts::new("healthy", 1), tx).await;
    let seen = recv_n(&mut rx, 1).await;
    assert_eq!((seen[0].task_id, seen[0].attempt, seen[0].accepted), (id, 2, Some(true)));

    // The silent worker's late report is fenced off.
    let late = gw
        .report(pb::ReportRequest {
            worker_id: reg.worker_id.clone(),
            reports: vec![pb::Report {
                task_id: id,
                attempt: 1,
                body: Some(pb::report::Body::Completed(pb::Completed {
                    result: Some(pb::TaskResult { output: "late".into(), ..Default::default() }),
                })),
                ..Default::default()
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!late.acks[0].accepted);
    assert!(late.acks[0].reason.contains("stale"), "{}", late.acks[0].reason);
    // Its heartbeat is refused too: it has no stream.
    let hb = gw.heartbeat(pb::HeartbeatRequest { worker_id: reg.worker_id, running: vec![] }).await.unwrap_err();
    assert_eq!(hb.code(), Code::FailedPrecondition);
    let t = task(&mut c, id).await;
    assert_eq!(t.state, pb::TaskState::Completed as i32);
    assert_eq!(t.attempts, 2);
    assert_eq!(t.result.unwrap().output, "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_task_dead_letters_cancels_dependents_and_retry_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "failures").await;
    let fail = Arc::new(AtomicBool::new(true));
    let f = fail.clone();
    let opts = WorkerOpts::new("w", 4).behavior(move |a| {
        let prompt = &a.spec.as_ref().unwrap().prompt;
        if prompt == "flaky" && f.load(Ordering::SeqCst) {
            Action::Fail { error: "exit status 3".into(), retryable: true }
        } else {
            Action::Complete(format!("ok {prompt}"))
        }
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _w = TestWorker::start(&coord.url(), opts, tx).await;
    let policy = pb::RetryPolicy { initial_backoff_ms: 10, multiplier: 2.0, max_backoff_ms: 50 };
    let ids = add(
        &mut c,
        &job,
        vec![
            pb::TaskSpec { max_retries: Some(2), retry_policy: Some(policy), ..spec("flaky") },
            pb::TaskSpec { depends_on: vec![-1], ..spec("after flaky") },
            pb::TaskSpec { depends_on: vec![-2], ..spec("after after") },
            spec("independent"),
        ],
    )
    .await;
    let status = wait_idle(&mut c, &job).await;
    assert_eq!((status.completed, status.failed, status.cancelled), (1, 1, 2), "{status:?}");
    let flaky = task(&mut c, ids[0]).await;
    assert_eq!(flaky.state, pb::TaskState::Failed as i32);
    assert_eq!(flaky.attempts, 3, "one try and two retries");
    assert_eq!(flaky.reason, "exit status 3");
    let dep = task(&mut c, ids[2]).await;
    assert_eq!(dep.state, pb::TaskState::Cancelled as i32);
    assert_eq!(dep.reason, format!("dependency {} cancelled", ids[1]));
    let attempts = recv_n(&mut rx, 4).await;
    assert_eq!(attempts.iter().filter(|s| s.task_id == ids[0]).count(), 3);

    fail.store(false, Ordering::SeqCst);
    let retried = c
        .retry_tasks(pb::RetryTasksRequest { job_id: job.clone(), task_ids: vec![] })
        .await
        .unwrap()
        .into_inner()
        .task_ids;
    assert_eq!(retried, ids[..3].to_vec());
    let status = wait_idle(&mut c, &job).await;
    assert_eq!(status.completed, 4, "{status:?}");
    let flaky = task(&mut c, ids[0]).await;
    assert_eq!(flaky.attempts, 4);
    assert_eq!(flaky.result.unwrap().output, "ok flaky");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_submission_loses_no_acknowledged_task() {
    let dir = tempfile::tempdir().unwrap();
    let mut coord = Coordinator::start(dir.path(), &[]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "crash").await;
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<Vec<i64>>();
    let mut submitters = vec![];
    for s in 0..4 {
        let mut c = c.clone();
        let job = job.clone();
        let ack_tx = ack_tx.clone();
        submitters.push(tokio::spawn(async move {
            for b in 0.. {
                let tasks = (0..20).map(|i| spec(&format!("s{s} b{b} t{i}"))).collect();
                match c.add_tasks(pb::AddTasksRequest { job_id: job.clone(), tasks, ..Default::default() }).await {
                    Ok(r) => {
                        if ack_tx.send(r.into_inner().task_ids).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    drop(ack_tx);
    // Kill once a good number of batches were acknowledged, with more in flight.
    let mut acked: Vec<i64> = vec![];
    while acked.len() < 2_000 {
        acked.extend(ack_rx.recv().await.expect("acks"));
    }
    coord.kill();
    for s in submitters {
        let _ = s.await;
    }
    while let Ok(more) = ack_rx.try_recv() {
        acked.extend(more);
    }
    coord.restart();
    let mut c = coord.client().await;
    let status = job_status(&mut c, &job).await;
    assert!(status.total_tasks >= acked.len() as u64, "{} stored, {} acknowledged", status.total_tasks, acked.len());
    let mut stored: HashSet<i64> = HashSet::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_tasks(pb::ListTasksRequest {
                job_id: job.clone(),
                page_size: 1000,
                page_token: token,
                summary_only: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        stored.extend(page.tasks.iter().map(|t| t.task_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    for id in &acked {
        assert!(stored.contains(id), "acknowledged task {id} lost");
    }
    eprintln!("acknowledged {} tasks before SIGKILL; {} stored", acked.len(), stored.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_acknowledged_work_and_honours_leases() {
    let dir = tempfile::tempdir().unwrap();
    let mut coord = Coordinator::start(dir.path(), &["--lease-seconds", "2"]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "restart").await;
    c.set_context(pb::SetContextRequest { job_id: job.clone(), key: "lang".into(), value: "rust".into() })
        .await
        .unwrap();
    let ids = add(&mut c, &job, vec![spec("kept"), spec("abandoned"), spec("queued")]).await;

    // A raw worker with two slots takes the first two tasks.
    let mut gw = coord.gateway().await;
    let wid = "restart-worker".to_string();
    gw.register(pb::RegisterRequest { worker_id: wid.clone(), slots: 2, ..Default::default() }).await.unwrap();
    let mut stream =
        gw.listen(pb::ListenRequest { worker_id: wid.clone(), ..Default::default() }).await.unwrap().into_inner();
    let mut got: Vec<pb::Assignment> = vec![];
    while got.len() < 2 {
        got.extend(stream.message().await.unwrap().unwrap().assignments);
    }
    assert_eq!(
        got[0].context,
        vec![pb::ContextEntry { scope: "job".into(), key: "lang".into(), value: "rust".into() }]
    );
    let kept = got.iter().find(|a| a.task_id == ids[0]).unwrap().clone();
    drop(stream);

    coord.terminate();
    coord.restart();
    let mut c = coord.client().await;
    let status = job_status(&mut c, &job).await;
    assert_eq!((status.total_tasks, status.in_progress, status.pending), (3, 2, 1), "{status:?}");
    let ctx = c.get_context(pb::GetContextRequest { job_id: job.clone() }).await.unwrap().into_inner();
    assert_eq!(ctx.values.get("lang").map(String::as_str), Some("rust"));

    // The worker comes back claiming only the first task: its lease is honoured.
    let mut gw = coord.gateway().await;
    let reg = gw
        .register(pb::RegisterRequest {
            worker_id: wid.clone(),
            slots: 2,
            running: vec![pb::TaskRef { task_id: kept.task_id, attempt: kept.attempt }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reg.stale.is_empty());
    let mut stream =
        gw.listen(pb::ListenRequest { worker_id: wid.clone(), ..Default::default() }).await.unwrap().into_inner();
    let ack = gw
        .report(pb::ReportRequest {
            worker_id: wid.clone(),
            reports: vec![pb::Report {
                task_id: kept.task_id,
                attempt: kept.attempt,
                body: Some(pb::report::Body::Completed(pb::Completed::default())),
                ..Default::default()
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ack.acks[0].accepted, "{:?}", ack.acks[0]);
    // The queued task, and then the abandoned one once its lease expired, come to it.
    let mut next: Vec<pb::Assignment> = vec![];
    while next.len() < 2 {
        next.extend(stream.message().await.unwrap().unwrap().assignments);
    }
    let by_id: HashMap<i64, u32> = next.iter().map(|a| (a.task_id, a.attempt)).collect();
    assert_eq!(by_id.get(&ids[2]), Some(&1));
    assert_eq!(by_id.get(&ids[1]), Some(&2), "the abandoned task runs again with the next attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "valid").await;
    add(&mut c, &job, vec![spec("one")]).await;
    let before = job_status(&mut c, &job).await;

    let code = |r: Result<tonic::Response<pb::AddTasksResponse>, tonic::Status>| r.unwrap_err();
    let e = code(
        c.add_tasks(pb::AddTasksRequest { job_id: "no-such-job".into(), tasks: vec![spec("x")], ..Default::default() })
            .await,
    );
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("no-such-job"));
    let e = code(c.add_tasks(pb::AddTasksRequest { job_id: job.clone(), tasks: vec![], ..Default::default() }).await);
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "tasks: must not be empty"));
    let e = code(
        c.add_tasks(pb::AddTasksRequest {
            job_id: job.clone(),
            tasks: vec![spec("fine"), spec("")],
            ..Default::default()
        })
        .await,
    );
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "tasks[1].prompt: must not be empty"));
    let e = code(
        c.add_tasks(pb::AddTasksRequest {
            job_id: job.clone(),
            tasks: vec![spec("fine"), pb::TaskSpec { depends_on: vec![987_654], ..spec("x") }],
            ..Default::default()
        })
        .await,
    );
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("987654"));

    for id in [0, -5, 999_999] {
        let e = c.get_task(pb::GetTaskRequest { task_id: id }).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "get_task {id}");
        let e = c.cancel_task(pb::CancelTaskRequest { task_id: id, reason: String::new() }).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "cancel_task {id}");
    }
    for bad in ["nope", "00000000-0000-0000-0000-000000000000", "'; DROP TABLE jobs; --"] {
        let e = c.get_job(pb::GetJobRequest { job_id: bad.into() }).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "get_job {bad}");
        let e = c.cancel_job(pb::CancelJobRequest { job_id: bad.into(), reason: String::new() }).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "cancel_job {bad}");
        let e = c
            .watch_job(pb::WatchJobRequest { job_id: bad.into(), after_seq: 0, follow: false })
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "watch_job {bad}");
    }
    let e = c.retry_tasks(pb::RetryTasksRequest { job_id: String::new(), task_ids: vec![424_242] }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c.retry_tasks(pb::RetryTasksRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    assert_eq!(job_status(&mut c, &job).await, before);
    let jobs = c.list_jobs(pb::ListJobsRequest::default()).await.unwrap().into_inner().jobs;
    assert_eq!(jobs.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_with_exit_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut coord = Coordinator::start(dir.path(), &[]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "term").await;
    add(&mut c, &job, vec![spec("x")]).await;
    // An open worker stream and an open watch must not keep the coordinator alive.
    let mut gw = coord.gateway().await;
    let reg = gw.register(pb::RegisterRequest { slots: 1, ..Default::default() }).await.unwrap().into_inner();
    let mut stream =
        gw.listen(pb::ListenRequest { worker_id: reg.worker_id, ..Default::default() }).await.unwrap().into_inner();
    let _first = stream.message().await.unwrap().unwrap();
    let mut watch =
        c.watch_job(pb::WatchJobRequest { job_id: job, after_seq: 0, follow: true }).await.unwrap().into_inner();
    let _snapshot = watch.message().await.unwrap().unwrap();
    let status = coord.terminate();
    assert!(status.success(), "{status:?}");
    assert!(matches!(stream.message().await, Ok(None) | Err(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zombie_worker_heartbeating_without_a_stream_loses_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &["--lease-seconds", "1"]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "zombie").await;
    let id = add(&mut c, &job, vec![spec("held by a zombie")]).await[0];
    let mut gw = coord.gateway().await;
    let reg = gw.register(pb::RegisterRequest { slots: 4, ..Default::default() }).await.unwrap().into_inner();
    let mut stream = gw
        .listen(pb::ListenRequest { worker_id: reg.worker_id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let held = stream.message().await.unwrap().unwrap().assignments[0].clone();
    drop(stream);
    // The zombie keeps heartbeating its attempt; every heartbeat is refused, so the lease
    // is not extended and the task completes on a live worker.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let live = TestWorker::start(&coord.url(), WorkerOpts::new("live", 1), tx).await;
    let mut zombie = gw.clone();
    let wid = reg.worker_id.clone();
    let beats = tokio::spawn(async move {
        let mut refused = 0;
        loop {
            let r = zombie
                .heartbeat(pb::HeartbeatRequest {
                    worker_id: wid.clone(),
                    running: vec![pb::TaskRef { task_id: held.task_id, attempt: held.attempt }],
                })
                .await;
            match r {
                Err(s) if s.code() == Code::FailedPrecondition => refused += 1,
                other => panic!("zombie heartbeat was not refused: {other:?}"),
            }
            if refused >= 3 {
                return refused;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
    let seen = recv_n(&mut rx, 1).await;
    assert_eq!((seen[0].task_id, seen[0].attempt, seen[0].worker.as_str()), (id, 2, live.id.as_str()));
    assert!(beats.await.unwrap() >= 3);
    let t = task(&mut c, id).await;
    assert_eq!(t.state, pb::TaskState::Completed as i32);
    assert_eq!(t.worker_id, live.id);
}
