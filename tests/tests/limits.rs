//! Bounded work per call: single requests within (or one past) the documented limits that
//! once crashed, stalled or bloated the coordinator. Each test drives the real binary and then
//! checks that it still serves calls.

use orca_e2e::*;
use orca_proto::contract::limits;
use orca_proto::pb;
use pb::orchestrator_client::OrchestratorClient;
use tonic::Code;
use tonic::transport::Channel;

/// A client that may send and receive messages up to twice the coordinator's limit, so that
/// the coordinator's own limit is what a test meets.
async fn big_client(coord: &Coordinator) -> OrchestratorClient<Channel> {
    coord
        .client()
        .await
        .max_encoding_message_size(2 * limits::MAX_MESSAGE_BYTES)
        .max_decoding_message_size(2 * limits::MAX_MESSAGE_BYTES)
}

/// The coordinator still takes writes.
async fn still_serves(c: &mut OrchestratorClient<Channel>) {
    create_job(c, "still alive").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_head_of_a_chain_at_the_batch_limit_keeps_the_coordinator_up() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "chain").await;
    let n = limits::MAX_BATCH;
    // Task i (0-based) depends on task i-1, named -(i) within the batch.
    let tasks: Vec<pb::TaskSpec> = (0..n)
        .map(|i| pb::TaskSpec { depends_on: if i == 0 { vec![] } else { vec![-(i as i64)] }, ..spec("link") })
        .collect();
    let ids = add(&mut c, &job, tasks).await;
    c.cancel_task(pb::CancelTaskRequest { task_id: ids[0], reason: String::new() }).await.unwrap();
    let status = job_status(&mut c, &job).await;
    assert_eq!(status.cancelled, n as u64);
    let last = task(&mut c, ids[n - 1]).await;
    assert_eq!(last.state, pb::TaskState::Cancelled as i32);
    still_serves(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_listen_for_a_worker_ends_the_first_stream() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let mut g = coord.gateway().await;
    let reg = pb::RegisterRequest { worker_id: "w1".into(), slots: 1, ..Default::default() };
    g.register(reg).await.unwrap();
    let listen = || pb::ListenRequest { worker_id: "w1".into(), ..Default::default() };
    let mut first = g.listen(listen()).await.unwrap().into_inner();
    let mut second = g.listen(listen()).await.unwrap().into_inner();
    // The first stream ends (an ABORTED status naming the newer stream, then nothing).
    let ended = tokio::time::timeout(WAIT, first.message()).await.expect("the replaced stream ends");
    match ended {
        Err(status) => assert_eq!(status.code(), Code::Aborted, "{status:?}"),
        Ok(None) => {}
        Ok(Some(m)) => panic!("the replaced stream got work: {m:?}"),
    }
    // The newer one gets the work.
    let mut c = coord.client().await;
    let job = create_job(&mut c, "replaced").await;
    let ids = add(&mut c, &job, vec![spec("one")]).await;
    let msg = tokio::time::timeout(WAIT, second.message()).await.expect("an assignment").unwrap().unwrap();
    assert_eq!(msg.assignments[0].task_id, ids[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_of_a_cancelled_job_cannot_be_retried() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "cancelled").await;
    let ids = add(&mut c, &job, vec![spec("one"), spec("two")]).await;
    c.cancel_job(pb::CancelJobRequest { job_id: job.clone(), reason: "stop".into() }).await.unwrap();
    let by_job = c.retry_tasks(pb::RetryTasksRequest { job_id: job.clone(), task_ids: vec![] }).await.unwrap_err();
    assert_eq!(by_job.code(), Code::FailedPrecondition, "{by_job:?}");
    let by_id = c.retry_tasks(pb::RetryTasksRequest { job_id: String::new(), task_ids: ids.clone() }).await;
    let by_id = by_id.unwrap_err();
    assert_eq!(by_id.code(), Code::FailedPrecondition, "{by_id:?}");
    assert!(by_id.message().contains("cancelled"), "{}", by_id.message());
    let status = job_status(&mut c, &job).await;
    assert_eq!((status.cancelled, status.pending, status.waiting), (2, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_limit_is_resource_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let mut c = big_client(&coord).await;
    let job = create_job(&mut c, "too big").await;
    let prompt = "p".repeat(limits::MAX_PROMPT_BYTES);
    let n = limits::MAX_MESSAGE_BYTES / limits::MAX_PROMPT_BYTES + 1;
    let req = pb::AddTasksRequest { job_id: job.clone(), tasks: vec![spec(&prompt); n], ..Default::default() };
    let e = c.add_tasks(req).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert_eq!(job_status(&mut c, &job).await.total_tasks, 0);
    still_serves(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strings_past_their_limit_are_invalid_argument_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let mut c = big_client(&coord).await;
    let job = create_job(&mut c, "strings").await;
    let ids = add(&mut c, &job, vec![spec("one")]).await;
    let reason = "r".repeat(limits::MAX_REASON_BYTES + 1);
    let e = c.cancel_job(pb::CancelJobRequest { job_id: job.clone(), reason: reason.clone() }).await.unwrap_err();
    assert_eq!((e.code(), e.message().starts_with("reason:")), (Code::InvalidArgument, true), "{e:?}");
    let e = c.cancel_task(pb::CancelTaskRequest { task_id: ids[0], reason }).await.unwrap_err();
    assert_eq!((e.code(), e.message().starts_with("reason:")), (Code::InvalidArgument, true), "{e:?}");
    // An expected output a worker could not collect is refused when the task is added.
    let dir_output = pb::TaskSpec { expected_outputs: vec!["out/".into()], ..spec("x") };
    let req = pb::AddTasksRequest { job_id: job.clone(), tasks: vec![dir_output], ..Default::default() };
    let e = c.add_tasks(req).await.unwrap_err();
    assert!(e.message().starts_with("tasks[0].expected_outputs[0]"), "{e:?}");
    assert_eq!(job_status(&mut c, &job).await.pending, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_tasks_pages_by_bytes_as_well_as_by_count() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let mut c = big_client(&coord).await;
    let job = create_job(&mut c, "bulky").await;
    let file = pb::ContextFile { path: "big.bin".into(), contents: vec![7; 1 << 20] };
    let bulky = pb::TaskSpec { context_files: vec![file], ..spec("bulky") };
    let n = 2 * limits::MAX_PAGE_BYTES / (1 << 20) + 1;
    let ids = add(&mut c, &job, vec![bulky; n]).await;
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let req = pb::ListTasksRequest { job_id: job.clone(), page_token: token, ..Default::default() };
        let page = c.list_tasks(req).await.unwrap().into_inner();
        let bytes: usize = page.tasks.iter().map(prost::Message::encoded_len).sum();
        assert!(page.tasks.len() == 1 || bytes <= limits::MAX_PAGE_BYTES, "a page of {bytes} bytes");
        seen.extend(page.tasks.iter().map(|t| t.task_id));
        pages += 1;
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, ids);
    assert!(pages >= 3, "{n} tasks of 1 MiB came in {pages} pages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_context_goes_once_per_stream_not_with_every_assignment() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "context").await;
    let big = "c".repeat(limits::MAX_CONTEXT_VALUE_BYTES);
    let set =
        |key: &str, value: &str| pb::SetContextRequest { job_id: job.clone(), key: key.into(), value: value.into() };
    c.set_context(set("notes", &big)).await.unwrap();
    let mut g = coord.gateway().await;
    g.register(pb::RegisterRequest { worker_id: "w1".into(), slots: 20, ..Default::default() }).await.unwrap();
    let listen = pb::ListenRequest { worker_id: "w1".into(), context_by_stream: true };
    let mut stream = g.listen(listen).await.unwrap().into_inner();
    add(&mut c, &job, vec![spec("task"); 10]).await;
    let mut assignments = 0;
    let mut scopes = Vec::new();
    while assignments < 10 {
        let msg = tokio::time::timeout(WAIT, stream.message()).await.expect("assignments").unwrap().unwrap();
        assert!(msg.assignments.iter().all(|a| a.context.is_empty()), "context travels by stream");
        assignments += msg.assignments.len();
        scopes.extend(msg.contexts);
    }
    // The job's scope once (the global scope is empty and was never sent).
    assert_eq!(scopes.len(), 1, "{:?}", scopes.iter().map(|s| &s.job_id).collect::<Vec<_>>());
    assert_eq!((scopes[0].job_id.as_str(), scopes[0].entries[0].value.len()), (job.as_str(), big.len()));
    // A change is sent again, with the next assignment that needs it.
    c.set_context(set("notes", "short")).await.unwrap();
    add(&mut c, &job, vec![spec("after the change")]).await;
    let msg = tokio::time::timeout(WAIT, stream.message()).await.expect("assignment").unwrap().unwrap();
    assert_eq!(msg.contexts.len(), 1);
    assert_eq!(msg.contexts[0].entries[0].value, "short");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_write_with_the_same_key_is_done_once_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut coord = Coordinator::start(dir.path(), &[]);
    let mut c = coord.client().await;
    let create = |description: &str| pb::CreateJobRequest {
        description: description.into(),
        request_id: "create-1".into(),
        ..Default::default()
    };
    let first = c.create_job(create("keyed")).await.unwrap().into_inner();
    let again = c.create_job(create("keyed")).await.unwrap().into_inner();
    assert_eq!(first.job_id, again.job_id);
    let job = first.job_id;
    let adding = |prompt: &str| pb::AddTasksRequest {
        job_id: job.clone(),
        tasks: vec![spec(prompt), spec(prompt)],
        request_id: "add-1".into(),
    };
    let ids = c.add_tasks(adding("same")).await.unwrap().into_inner().task_ids;
    assert_eq!(c.add_tasks(adding("same")).await.unwrap().into_inner().task_ids, ids);
    // The same key with another body is refused and changes nothing.
    let e = c.add_tasks(adding("different")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("request_id:"), "{}", e.message());
    let e = c.create_job(create("another description")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // The keys are durable: after a restart the repeat still gets the first answer.
    coord.restart();
    let mut c = coord.client().await;
    assert_eq!(c.create_job(create("keyed")).await.unwrap().into_inner().job_id, job);
    assert_eq!(c.add_tasks(adding("same")).await.unwrap().into_inner().task_ids, ids);
    let jobs = c.list_jobs(pb::ListJobsRequest::default()).await.unwrap().into_inner().jobs;
    assert_eq!(jobs.len(), 1);
    assert_eq!(job_status(&mut c, &job).await.total_tasks, 2);
    // The same key on another job is another key.
    let other = create_job(&mut c, "other").await;
    let req = pb::AddTasksRequest { job_id: other.clone(), tasks: vec![spec("same")], request_id: "add-1".into() };
    c.add_tasks(req).await.unwrap();
    assert_eq!(job_status(&mut c, &other).await.total_tasks, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_that_never_read_are_ended_and_do_not_hold_up_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "watched").await;
    for _ in 0..3 {
        add(&mut c, &job, vec![spec("t"); limits::MAX_BATCH]).await;
    }
    // Each task's summary carries (the start of) the reason: a snapshot of many messages,
    // far more than the buffers and flow-control windows hold, so a watcher that does not
    // read really stalls.
    let reason = "r".repeat(limits::MAX_REASON_BYTES);
    c.cancel_job(pb::CancelJobRequest { job_id: job.clone(), reason }).await.unwrap();
    let mut c = big_client(&coord).await;
    let watch = || pb::WatchJobRequest { job_id: job.clone(), after_seq: 0, follow: true };
    // Stalled watchers, each on its own connection (HTTP/2 flow control then stops each of
    // them early), none of them reading.
    let mut stalled = Vec::new();
    for _ in 0..10 {
        let mut s = big_client(&coord).await;
        stalled.push(s.watch_job(watch()).await.unwrap().into_inner());
    }
    // A watcher that reads gets its whole snapshot, stalled ones or not.
    let mut reader = c.watch_job(watch()).await.unwrap().into_inner();
    let mut tasks = 0;
    loop {
        let ev = tokio::time::timeout(WAIT, reader.message()).await.expect("snapshot").unwrap().unwrap();
        tasks += ev.tasks.len();
        if !ev.snapshot_more {
            break;
        }
    }
    assert_eq!(tasks, 3 * limits::MAX_BATCH);
    // A stalled stream is ended once it took no snapshot message for the coordinator's
    // 10 s: it ends before its snapshot is complete. (The wait is the behaviour under test.)
    tokio::time::sleep(std::time::Duration::from_secs(15)).await;
    let mut s = stalled.remove(0);
    let mut got = 0;
    let ended = loop {
        match tokio::time::timeout(WAIT, s.message()).await.expect("the stalled stream ends") {
            Ok(Some(ev)) if ev.snapshot_more || got == 0 => got += ev.tasks.len(),
            Ok(Some(_)) => break false,
            Ok(None) | Err(_) => break true,
        }
    };
    assert!(ended && got < 3 * limits::MAX_BATCH, "a stalled watcher got {got} tasks");
    still_serves(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_capped_so_callers_still_get_in() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &["--max-connections", "16"]);
    // Twice the cap of connections that never send a byte.
    let silent: Vec<std::net::TcpStream> =
        (0..32).map(|_| std::net::TcpStream::connect(coord.addr.as_str()).unwrap()).collect();
    // A caller behind them is served: the silent ones are closed, making room.
    let mut c = tokio::time::timeout(WAIT, coord.client()).await.expect("connect behind silent connections");
    tokio::time::timeout(WAIT, create_job(&mut c, "behind the silent ones")).await.expect("served");
    // And each silent connection was closed by the coordinator (EOF, not a timeout).
    let mut byte = [0u8; 1];
    for mut s in silent.into_iter().take(16) {
        s.set_read_timeout(Some(WAIT)).unwrap();
        assert_eq!(s.read(&mut byte).unwrap(), 0, "a silent connection is closed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn specs_outside_the_memory_budget_are_read_back_when_dispatched_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // No spec is cached: every assignment reads its spec from the database.
    let mut coord = Coordinator::start(dir.path(), &["--payload-cache-mb", "0"]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "uncached").await;
    let prompts: Vec<String> = (0..20).map(|i| format!("prompt {i} {}", "x".repeat(i * 1_000))).collect();
    add(&mut c, &job, prompts.iter().map(|p| spec(p)).collect()).await;
    // Queued across a restart, then dispatched.
    coord.restart();
    let mut c = coord.client().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _w = TestWorker::start(&coord.url(), WorkerOpts::new("reader", 4), tx).await;
    let mut seen: Vec<String> = recv_n(&mut rx, prompts.len()).await.into_iter().map(|s| s.prompt).collect();
    seen.sort();
    let mut want = prompts.clone();
    want.sort();
    assert_eq!(seen, want);
    assert_eq!(wait_idle(&mut c, &job).await.completed, prompts.len() as u64);
}
