//! WatchJob and the Rust client against the real coordinator: every transition once and in
//! order, resume after a disconnect, a slow watcher that falls behind, wait_and_collect.

use std::collections::HashMap;
use std::time::Duration;

use orca_client::{Client, Subtask, WatchOptions};
use orca_e2e::workers::{http_get, until};
use orca_e2e::*;
use orca_proto::pb;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

type Transition = (u64, i64, i32);

async fn watch_all(
    c: &mut pb::orchestrator_client::OrchestratorClient<tonic::transport::Channel>,
    job: &str,
    after: u64,
) -> Vec<pb::JobEvent> {
    let mut s = c
        .watch_job(pb::WatchJobRequest { job_id: job.into(), after_seq: after, follow: false })
        .await
        .unwrap()
        .into_inner();
    let mut out = vec![];
    let fut = async {
        while let Some(ev) = s.message().await.unwrap() {
            out.push(ev);
        }
    };
    tokio::time::timeout(WAIT, fut).await.expect("watch did not end");
    out
}

fn transitions(events: &[pb::JobEvent]) -> Vec<Transition> {
    events
        .iter()
        .filter(|e| e.kind == pb::JobEventKind::TaskState as i32)
        .map(|e| (e.seq, e.task_id, e.state))
        .collect()
}

/// Checks that the events after the first snapshot are contiguous and that every task went
/// waiting -> pending -> in_progress -> completed exactly once, in that order.
fn check_lifecycles(events: &[pb::JobEvent], tasks: usize) {
    assert_eq!(events[0].kind, pb::JobEventKind::Snapshot as i32);
    let snapshots = events.iter().filter(|e| e.kind == pb::JobEventKind::Snapshot as i32).count();
    assert_eq!(snapshots, 1, "no watcher fell behind here");
    let mut seq = events[0].seq;
    let mut per: HashMap<i64, Vec<i32>> = HashMap::new();
    for e in &events[1..] {
        assert_eq!(e.seq, seq + 1, "sequence numbers are contiguous");
        seq = e.seq;
        per.entry(e.task_id).or_default().push(e.state);
    }
    assert_eq!(per.len(), tasks);
    let want: Vec<i32> =
        [pb::TaskState::Waiting, pb::TaskState::Pending, pb::TaskState::InProgress, pb::TaskState::Completed]
            .iter()
            .map(|s| *s as i32)
            .collect();
    for (id, states) in per {
        assert_eq!(states, want, "task {id}");
    }
    let last = events.last().unwrap().status.clone().unwrap();
    assert_eq!(last.completed, tasks as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_delivers_every_transition_once_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "watched").await;
    // The watcher starts before any task exists: a job without tasks is not idle.
    let mut c2 = c.clone();
    let j2 = job.clone();
    let watcher = tokio::spawn(async move { watch_all(&mut c2, &j2, 0).await });
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut workers = vec![];
    for i in 0..4 {
        workers.push(TestWorker::start(&coord.url(), WorkerOpts::new(&format!("w{i}"), 8), tx.clone()).await);
    }
    for b in 0..5 {
        add(&mut c, &job, (0..100).map(|i| spec(&format!("t{b}-{i}"))).collect()).await;
    }
    let events = watcher.await.unwrap();
    check_lifecycles(&events, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_resumes_after_a_disconnect_with_the_full_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "resume").await;
    let ids = add(&mut c, &job, (0..300).map(|i| spec(&format!("t{i}"))).collect()).await;
    assert_eq!(ids.len(), 300);

    // Watcher A sees the snapshot, then disconnects; the work happens while it is away.
    let mut a = c
        .watch_job(pb::WatchJobRequest { job_id: job.clone(), after_seq: 0, follow: false })
        .await
        .unwrap()
        .into_inner();
    let snap = a.message().await.unwrap().unwrap();
    assert_eq!(snap.kind, pb::JobEventKind::Snapshot as i32);
    assert_eq!(snap.tasks.len(), 300);
    drop(a);

    let (tx, _rx) = mpsc::unbounded_channel();
    let mut workers = vec![];
    for i in 0..2 {
        workers.push(TestWorker::start(&coord.url(), WorkerOpts::new(&format!("w{i}"), 4), tx.clone()).await);
    }
    wait_idle(&mut c, &job).await;

    // It resumes after the snapshot's sequence number and gets exactly what it missed.
    let missed = watch_all(&mut c, &job, snap.seq).await;
    assert!(missed.iter().all(|e| e.kind != pb::JobEventKind::Snapshot as i32), "resumed without a snapshot");
    let mut seq = snap.seq;
    for e in &missed {
        assert_eq!(e.seq, seq + 1);
        seq = e.seq;
    }
    let done = missed.iter().filter(|e| e.state == pb::TaskState::Completed as i32).count();
    assert_eq!(done, 300);
    // In the middle: resume after any event and get the rest of the same sequence.
    let mid = missed[missed.len() / 2].seq;
    let rest = watch_all(&mut c, &job, mid).await;
    let expect: Vec<Transition> = transitions(&missed).into_iter().filter(|t| t.0 > mid).collect();
    assert_eq!(transitions(&rest), expect);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_gets_a_fresh_snapshot_and_does_not_slow_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "slow watcher").await;
    let n = 3_000;
    // A watcher that reads the snapshot and then stops reading, on a connection with small
    // HTTP/2 windows (hyper's defaults would buffer megabytes of events for it).
    let channel = tonic::transport::Endpoint::from_shared(coord.url())
        .unwrap()
        .initial_stream_window_size(Some(64 << 10))
        .initial_connection_window_size(Some(64 << 10))
        .connect()
        .await
        .unwrap();
    let mut slow = pb::orchestrator_client::OrchestratorClient::new(channel)
        .watch_job(pb::WatchJobRequest { job_id: job.clone(), after_seq: 0, follow: false })
        .await
        .unwrap()
        .into_inner();
    let first = slow.message().await.unwrap().unwrap();
    assert_eq!(first.kind, pb::JobEventKind::Snapshot as i32);

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut workers = vec![];
    for i in 0..4 {
        workers.push(TestWorker::start(&coord.url(), WorkerOpts::new(&format!("w{i}"), 16), tx.clone()).await);
    }
    for b in 0..(n / 1000) {
        add(&mut c, &job, (0..1000).map(|i| spec(&format!("t{b}-{i}"))).collect()).await;
    }
    // The queue finishes every task while the watcher is stalled: its pace is the workers'.
    let seen = recv_n(&mut rx, n).await;
    assert_eq!(seen.len(), n);
    let status = wait_idle(&mut c, &job).await;
    assert_eq!(status.completed, n as u64);

    // The stalled watcher now reads: it fell behind, so it gets a fresh snapshot (never a
    // silent gap), and its stream ends with every task completed.
    let mut rest = vec![];
    let fut = async {
        while let Some(ev) = slow.message().await.unwrap() {
            rest.push(ev);
        }
    };
    tokio::time::timeout(WAIT, fut).await.expect("slow watcher's stream did not end");
    let snap_at = rest.iter().position(|e| e.kind == pb::JobEventKind::Snapshot as i32);
    let snap_at = snap_at.expect("a watcher that fell behind gets a snapshot");
    let snap = &rest[snap_at];
    let mut seq = snap.seq;
    // Up to the snapshot, and after it, the sequence has no gap.
    let before: Vec<u64> = rest[..snap_at].iter().map(|e| e.seq).collect();
    assert!(before.windows(2).all(|w| w[1] == w[0] + 1), "no gap before the snapshot");
    for e in rest[snap_at + 1..].iter().filter(|e| e.kind != pb::JobEventKind::Snapshot as i32) {
        assert_eq!(e.seq, seq + 1);
        seq = e.seq;
    }
    assert_eq!(rest.last().unwrap().status.clone().unwrap().completed, n as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_wait_and_collect_returns_every_result() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let client = Client::connect(&coord.url()).await.unwrap();
    let job = client.create_job("Build and test API").await.unwrap();
    client.set_shared_context(Some(&job), "style", "terse").await.unwrap();
    let api = client.add_subtask(&job, Subtask::new("Implement REST API").priority(10)).await.unwrap();
    let ids = client
        .add_subtasks(
            &job,
            vec![
                Subtask::new("Write API tests").parent(api),
                Subtask::new("Generate API documentation").parent(api).priority(3),
            ],
        )
        .await
        .unwrap();
    let opts = WorkerOpts::new("w", 2).behavior(|a| {
        let p = &a.spec.as_ref().unwrap().prompt;
        if p.contains("documentation") {
            Action::Fail { error: "no docs tool".into(), retryable: false }
        } else {
            Action::Complete(format!("did: {p}"))
        }
    });
    let (tx, _rx) = mpsc::unbounded_channel();
    let _w = TestWorker::start(&coord.url(), opts, tx).await;
    let mut ticks = 0;
    let got = client.wait_and_collect_with(&job, Some(WAIT), |_| ticks += 1).await.unwrap();
    assert!(!got.timed_out);
    assert!(got.unfinished.is_empty());
    assert!(ticks > 0);
    assert_eq!(got.results.len(), 3);
    assert_eq!(got.results[&api].output, "did: Implement REST API");
    assert_eq!(got.results[&ids[1]].state, pb::TaskState::Failed);
    assert_eq!(got.results[&ids[1]].error, "no docs tool");
    assert_eq!(client.get_failed_tasks(&job).await.unwrap().len(), 1);
    assert_eq!(client.get_completed_tasks(&job).await.unwrap().len(), 2);
    let report = orca_client::synthesize_results(&got);
    assert!(report.contains("3 tasks, 2 completed, 1 failed"), "{report}");
    let ctx = client.get_shared_context(Some(&job)).await.unwrap();
    assert_eq!(ctx["style"], "terse");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_wait_and_collect_times_out_with_the_unfinished_listed() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let client = Client::connect(&coord.url()).await.unwrap();
    let job = client.create_job("nobody works").await.unwrap();
    let ids = client.add_subtasks(&job, vec![Subtask::new("a"), Subtask::new("b")]).await.unwrap();
    let got = client.wait_and_collect(&job, Some(Duration::from_millis(300))).await.unwrap();
    assert!(got.timed_out);
    assert!(got.results.is_empty(), "nothing is marked complete on timeout");
    assert_eq!(got.unfinished, ids);
    assert_eq!(got.status.pending, 2);
    let err = client.get_job_status("no-such-job").await.unwrap_err();
    assert!(matches!(err, orca_client::Error::NotFound(ref m) if m.contains("no-such-job")), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_watch_reconnects_and_resumes_across_a_coordinator_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut coord = Coordinator::start(dir.path(), &[]);
    let client = Client::connect(&coord.url()).await.unwrap();
    let job = client.create_job("restart under a watcher").await.unwrap();
    let ids = client.add_subtasks(&job, (0..20).map(|i| Subtask::new(&format!("t{i}"))).collect()).await.unwrap();
    let mut events = Box::pin(client.watch(&job, WatchOptions::default()));
    let snap = events.next().await.unwrap().unwrap();
    assert_eq!(snap.kind, pb::JobEventKind::Snapshot as i32);

    coord.kill();
    coord.restart_same_port();
    let (tx, _rx) = mpsc::unbounded_channel();
    let _w = TestWorker::start(&coord.url(), WorkerOpts::new("w", 4), tx).await;

    let mut completed = vec![];
    let mut last_seq = snap.seq;
    let fut = async {
        while let Some(ev) = events.next().await {
            let ev = ev.unwrap();
            if ev.kind == pb::JobEventKind::Snapshot as i32 {
                for t in &ev.tasks {
                    if t.state == pb::TaskState::Completed as i32 {
                        completed.push(t.task_id);
                    }
                }
            } else {
                assert!(ev.seq > last_seq, "no event twice");
                if ev.state == pb::TaskState::Completed as i32 {
                    completed.push(ev.task_id);
                }
            }
            last_seq = ev.seq;
        }
    };
    tokio::time::timeout(WAIT, fut).await.expect("watch did not end");
    completed.sort();
    assert_eq!(completed, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_job_ends_its_watchers_with_a_cancelled_event() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "to cancel").await;
    let ids = add(&mut c, &job, vec![spec("a"), spec("b")]).await;
    let mut w = c
        .watch_job(pb::WatchJobRequest { job_id: job.clone(), after_seq: 0, follow: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.message().await.unwrap().unwrap().kind, pb::JobEventKind::Snapshot as i32);
    let j = c.cancel_job(pb::CancelJobRequest { job_id: job.clone(), reason: "changed my mind".into() }).await.unwrap();
    assert_eq!(j.into_inner().state, pb::JobState::Cancelled as i32);
    let mut rest = vec![];
    while let Some(ev) = w.message().await.unwrap() {
        rest.push(ev);
    }
    let cancelled: Vec<i64> =
        rest.iter().filter(|e| e.state == pb::TaskState::Cancelled as i32).map(|e| e.task_id).collect();
    assert_eq!(cancelled, ids);
    let first = &rest[0];
    assert_eq!(first.kind, pb::JobEventKind::JobCancelled as i32);
    assert_eq!(first.message, "changed my mind");
    assert_eq!(first.job_state, pb::JobState::Cancelled as i32);
    let last = rest.last().unwrap().status.clone().unwrap();
    assert_eq!((last.cancelled, last.progress_pct), (2, 100.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_read_in_pages_while_tasks_finish_ends_exact_and_never_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "paged").await;
    let n = 6_000;
    add(&mut c, &job, vec![spec("t"); n]).await;
    // Workers finish tasks while the watcher reads its snapshot, page after page.
    let (tx, _rx) = mpsc::unbounded_channel();
    let _w = TestWorker::start(&coord.url(), WorkerOpts::new("busy", 64), tx).await;
    let req = pb::WatchJobRequest { job_id: job.clone(), after_seq: 0, follow: false };
    let mut stream = c.watch_job(req).await.unwrap().into_inner();
    let mut state: HashMap<i64, i32> = HashMap::new();
    let completed = pb::TaskState::Completed as i32;
    while let Some(ev) = tokio::time::timeout(WAIT, stream.message()).await.expect("events").unwrap() {
        // A snapshot (the first one, or a fresh one after falling behind) or a state change:
        // either way no task goes back from completed.
        let changes: Vec<(i64, i32)> = if ev.kind == pb::JobEventKind::Snapshot as i32 {
            ev.tasks.iter().map(|t| (t.task_id, t.state)).collect()
        } else if ev.kind == pb::JobEventKind::TaskState as i32 {
            vec![(ev.task_id, ev.state)]
        } else {
            vec![]
        };
        for (task, to) in changes {
            let before = state.insert(task, to);
            assert!(before != Some(completed) || to == completed, "task {task} went back (seq {})", ev.seq);
        }
    }
    assert_eq!(state.len(), n);
    let mut not_done: Vec<(i64, i32)> =
        state.iter().filter(|(_, s)| **s != pb::TaskState::Completed as i32).map(|(t, s)| (*t, *s)).collect();
    not_done.sort();
    assert!(
        not_done.is_empty(),
        "{} tasks not completed, first: {:?}",
        not_done.len(),
        &not_done[..not_done.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_and_collect_carries_on_across_a_graceful_coordinator_restart() {
    let dir = tempfile::tempdir().unwrap();
    let http_file = dir.path().join("http.addr");
    let args = ["--http-listen", "127.0.0.1:0", "--http-addr-file", http_file.to_str().unwrap()];
    let mut coord = Coordinator::start(dir.path(), &args);
    let http = wait_for_file(&http_file, &mut coord.child);
    let client = Client::connect(&coord.url()).await.unwrap();
    let job = client.create_job("graceful restart under a wait").await.unwrap();
    let ids = client.add_subtasks(&job, (0..10).map(|i| Subtask::new(&format!("t{i}"))).collect()).await.unwrap();
    let waiting = {
        let (client, job) = (client.clone(), job.clone());
        tokio::spawn(async move { client.wait_and_collect(&job, Some(WAIT)).await })
    };
    // The wait's stream is open before the coordinator stops.
    until("the wait's watch stream is open", || {
        http_get(&http, "/metrics", None).1.lines().any(|l| l == "orca_watch_streams 1")
    })
    .await;
    // A stopping coordinator ends the stream with UNAVAILABLE, so the waiter reconnects
    // instead of taking the end for an idle job.
    assert!(coord.terminate().success());
    coord.restart_same_port();
    let (tx, _rx) = mpsc::unbounded_channel();
    let _w = TestWorker::start(&coord.url(), WorkerOpts::new("w", 4), tx).await;
    let got = waiting.await.unwrap().unwrap();
    assert!(!got.timed_out && got.unfinished.is_empty(), "{got:?}");
    assert_eq!(got.results.keys().copied().collect::<Vec<_>>(), ids);
    assert!(got.results.values().all(|r| r.is_completed()));
}
