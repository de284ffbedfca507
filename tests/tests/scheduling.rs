//! Scheduling for many users, end to end on the real binaries: fair share between jobs at one
//! priority (and by weight), max_running and label limits (checked from the coordinator's
//! attempt records), budgets, pause and resume, run_at across a restart, recurring jobs across
//! a restart, and the job-completion webhook.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use orca_e2e::workers::*;
use orca_e2e::*;
use orca_proto::pb;
use pb::orchestrator_client::OrchestratorClient;
use tonic::transport::Channel;

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

async fn job_with(c: &mut OrchestratorClient<Channel>, req: pb::CreateJobRequest) -> String {
    c.create_job(req).await.expect("create job").into_inner().job_id
}

async fn get_job(c: &mut OrchestratorClient<Channel>, job: &str) -> pb::Job {
    c.get_job(pb::GetJobRequest { job_id: job.into() }).await.expect("get job").into_inner()
}

async fn update(c: &mut OrchestratorClient<Channel>, req: pb::UpdateJobRequest) -> pb::Job {
    c.update_job(req).await.expect("update job").into_inner()
}

/// Adds `n` tasks in batches of the contract's maximum.
async fn add_many(c: &mut OrchestratorClient<Channel>, job: &str, n: usize) {
    let max = orca_proto::contract::limits::MAX_BATCH;
    let mut left = n;
    while left > 0 {
        let k = left.min(max);
        add(c, job, (0..k).map(|_| spec("noop")).collect()).await;
        left -= k;
    }
}

/// Every attempt of the job's tasks as (start, end) in the coordinator's records.
async fn attempt_spans(c: &mut OrchestratorClient<Channel>, ids: &[i64]) -> Vec<(i64, i64)> {
    let mut spans = Vec::new();
    for &id in ids {
        let t = task(c, id).await;
        for a in &t.history {
            spans.push((a.started_ms, a.ended_ms));
        }
    }
    spans
}

/// The most spans open at once (a span ending when another starts does not overlap it).
fn max_overlap(spans: &[(i64, i64)]) -> usize {
    let mut edges: Vec<(i64, i32)> = spans.iter().flat_map(|&(s, e)| [(s, 1), (e, -1)]).collect();
    edges.sort();
    let (mut open, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        open += d;
        most = most.max(open);
    }
    most as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_small_job_finishes_before_a_big_one_runs_a_thousand_more() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let coord = Coordinator::start(d, &[]);
    let mut c = coord.client().await;
    let _w1 = WorkerProc::start(&coord.url(), d, "w1", &["--agent", "noop", "--slots", "8"]);
    let _w2 = WorkerProc::start(&coord.url(), d, "w2", &["--agent", "noop", "--slots", "8"]);
    let a = create_job(&mut c, "big").await;
    add_many(&mut c, &a, 100_000).await;
    until_async("the big job to be running", || {
        let mut c = c.clone();
        let a = a.clone();
        async move { job_status(&mut c, &a).await.completed > 100 }
    })
    .await;
    let b = create_job(&mut c, "small").await;
    add_many(&mut c, &b, 100).await;
    let a_before = job_status(&mut c, &a).await.completed;
    let done = wait_idle(&mut c, &b).await;
    let a_after = job_status(&mut c, &a).await.completed;
    assert_eq!(done.completed, 100);
    let ran = a_after - a_before;
    assert!(ran < 1_000, "the big job completed {ran} tasks while the small one ran its 100");
    assert!(a_after < 100_000, "the big job must still have work left for the comparison to mean anything");
    c.cancel_job(pb::CancelJobRequest { job_id: a.clone(), reason: String::new() }).await.unwrap();

    // Weight 2 against weight 1: about twice the rate while both have work.
    let a = create_job(&mut c, "weight 1").await;
    add_many(&mut c, &a, 20_000).await;
    let b = job_with(&mut c, pb::CreateJobRequest { description: "weight 2".into(), weight: 2, ..Default::default() })
        .await;
    assert_eq!(get_job(&mut c, &b).await.weight, 2);
    add_many(&mut c, &b, 2_000).await;
    let a_before = job_status(&mut c, &a).await.completed;
    wait_idle(&mut c, &b).await;
    let ran = job_status(&mut c, &a).await.completed - a_before;
    // 2,000 of B's against about 1,000 of A's, give or take what was in flight.
    assert!((600..=1_400).contains(&ran), "weight 1 ran {ran} while weight 2 ran 2000");
    c.cancel_job(pb::CancelJobRequest { job_id: a, reason: String::new() }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_running_and_a_label_limit_are_never_exceeded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let coord = Coordinator::start(d, &["--label-limit", "api_key=team-a:2"]);
    let mut c = coord.client().await;
    let sleep = script(d, "nap", "sleep 0.2\necho napped");
    let args = ["--agent", "command", "--agent-command", p(&sleep), "--slots", "4", "--label", "api_key=team-a"];
    let _w1 = WorkerProc::start(&coord.url(), d, "w1", &args);
    let _w2 = WorkerProc::start(&coord.url(), d, "w2", &args);
    let capped =
        job_with(&mut c, pb::CreateJobRequest { description: "capped".into(), max_running: 3, ..Default::default() })
            .await;
    let capped_ids = add(&mut c, &capped, (0..12).map(|i| spec(&format!("capped {i}"))).collect()).await;
    let keyed = create_job(&mut c, "keyed").await;
    let key: HashMap<String, String> = [("api_key".to_string(), "team-a".to_string())].into();
    let keyed_tasks = (0..10).map(|i| pb::TaskSpec { required_labels: key.clone(), ..spec(&format!("keyed {i}")) });
    let keyed_ids = add(&mut c, &keyed, keyed_tasks.collect()).await;
    assert_eq!(wait_idle(&mut c, &capped).await.completed, 12);
    assert_eq!(wait_idle(&mut c, &keyed).await.completed, 10);
    let capped_spans = attempt_spans(&mut c, &capped_ids).await;
    let keyed_spans = attempt_spans(&mut c, &keyed_ids).await;
    assert_eq!((capped_spans.len(), keyed_spans.len()), (12, 10));
    let (most_capped, most_keyed) = (max_overlap(&capped_spans), max_overlap(&keyed_spans));
    assert!(most_capped <= 3, "max_running 3, yet {most_capped} ran at once");
    assert!(most_keyed <= 2, "label limit 2, yet {most_keyed} ran at once");
    // The limits held work back, they did not serialize it: with 8 slots both used them.
    assert!(most_capped >= 2 && most_keyed >= 2, "capped {most_capped}, keyed {most_keyed}");
}

/// A fake `claude` that reports $0.40 per attempt.
fn costly_claude(d: &Path) -> std::path::PathBuf {
    let result = r#"{"type":"result","subtype":"success","is_error":false,"result":"ok","session_id":"s","total_cost_usd":0.4,"num_turns":1,"usage":{"input_tokens":100,"output_tokens":10}}"#;
    script(d, "claude", &format!("cat > /dev/null\nprintf '%s\\n' '{result}'"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_stops_a_job_at_its_limit_and_raising_it_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let coord = Coordinator::start(d, &[]);
    let mut c = coord.client().await;
    let claude = costly_claude(d);
    let _w =
        WorkerProc::start(&coord.url(), d, "w", &["--agent", "claude", "--agent-command", p(&claude), "--slots", "1"]);
    let job =
        job_with(&mut c, pb::CreateJobRequest { description: "budget".into(), budget_usd: 1.0, ..Default::default() })
            .await;
    add(&mut c, &job, (0..10).map(|i| spec(&format!("t{i}"))).collect()).await;
    // $0.40 each with one slot: the third attempt spends $1.20, then nothing starts.
    let blocked = |c: &mut OrchestratorClient<Channel>| {
        let (mut c, job) = (c.clone(), job.clone());
        async move {
            let s = job_status(&mut c, &job).await;
            !s.blocked_reason.is_empty() && s.in_progress == 0
        }
    };
    until_async("the budget to stop the job", || blocked(&mut c)).await;
    let j = get_job(&mut c, &job).await;
    let s = j.status.unwrap();
    assert_eq!((s.completed, s.pending), (3, 7), "{s:?}");
    assert!((s.cost_usd - 1.2).abs() < 1e-9, "{}", s.cost_usd);
    assert_eq!((s.input_tokens, s.output_tokens), (300, 30));
    assert_eq!(s.blocked_reason, "budget spent: $1.20 of $1.00");
    // Raised to $2: two more run ($2.00), then it stops again.
    update(&mut c, pb::UpdateJobRequest { job_id: job.clone(), budget_usd: Some(2.0), ..Default::default() }).await;
    until_async("the raised budget to be spent", || {
        let (mut c, job) = (c.clone(), job.clone());
        async move {
            let s = job_status(&mut c, &job).await;
            s.completed == 5 && s.in_progress == 0
        }
    })
    .await;
    let s = job_status(&mut c, &job).await;
    assert_eq!((s.completed, s.pending, s.blocked_reason.as_str()), (5, 5, "budget spent: $2.00 of $2.00"));
    // A restart keeps the spend and the block.
    drop(c);
    let mut coord = coord;
    coord.restart();
    let mut c = coord.client().await;
    let j = get_job(&mut c, &job).await;
    assert_eq!((j.budget_usd, j.status.unwrap().blocked_reason.as_str()), (2.0, "budget spent: $2.00 of $2.00"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_job_starts_nothing_until_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let coord = Coordinator::start(d, &[]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "paused").await;
    let j =
        update(&mut c, pb::UpdateJobRequest { job_id: job.clone(), paused: Some(true), ..Default::default() }).await;
    assert!(j.paused);
    assert_eq!(j.status.unwrap().blocked_reason, "paused");
    add(&mut c, &job, (0..5).map(|i| spec(&format!("t{i}"))).collect()).await;
    // Another job's tasks run on the same worker while the paused one waits.
    let other = create_job(&mut c, "other").await;
    add(&mut c, &other, vec![spec("go")]).await;
    let _w = WorkerProc::start(&coord.url(), d, "w", &["--agent", "noop", "--slots", "4"]);
    assert_eq!(wait_idle(&mut c, &other).await.completed, 1);
    let s = job_status(&mut c, &job).await;
    assert_eq!((s.pending, s.completed), (5, 0), "a paused job's tasks stay pending");
    // Unknown jobs and empty updates are refused with the field named.
    let e =
        c.update_job(pb::UpdateJobRequest { job_id: "nope".into(), paused: Some(false), ..Default::default() }).await;
    assert_eq!(e.unwrap_err().code(), tonic::Code::NotFound);
    let e = c.update_job(pb::UpdateJobRequest { job_id: job.clone(), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = c.update_job(pb::UpdateJobRequest { job_id: job.clone(), weight: Some(0), ..Default::default() }).await;
    assert!(e.unwrap_err().message().starts_with("weight"));
    let j =
        update(&mut c, pb::UpdateJobRequest { job_id: job.clone(), paused: Some(false), ..Default::default() }).await;
    assert!(!j.paused);
    assert_eq!(wait_idle(&mut c, &job).await.completed, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_at_task_starts_on_time_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut coord = Coordinator::start(d, &[]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "later").await;
    let at = now_ms() + 4_000;
    let run_at = Some(orca_proto::contract::timestamp_of_ms(at as u64));
    let ids = add(&mut c, &job, vec![pb::TaskSpec { run_at, ..spec("later") }, spec("now")]).await;
    let t = task(&mut c, ids[0]).await;
    assert_eq!(t.state, pb::TaskState::Waiting as i32);
    assert_eq!(t.not_before_ms, at);
    drop(c);
    coord.restart_same_port();
    let mut c = coord.client().await;
    let _w = WorkerProc::start(&coord.url(), d, "w", &["--agent", "noop", "--slots", "2"]);
    assert_eq!(wait_idle(&mut c, &job).await.completed, 2);
    let later = task(&mut c, ids[0]).await;
    let now = task(&mut c, ids[1]).await;
    // It ran at its time: not before, and within the documented bound after (one batch; the
    // bound here is generous for a loaded machine).
    assert!(later.updated_at_ms >= at, "completed at {} before its run_at {at}", later.updated_at_ms);
    assert!(later.updated_at_ms < at + 30_000, "started far too late: {} for {at}", later.updated_at_ms);
    assert!(now.updated_at_ms <= later.updated_at_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_once_per_tick_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut coord = Coordinator::start(d, &[]);
    let mut c = coord.client().await;
    let req = pb::CreateScheduleRequest {
        name: "every-second".into(),
        cron: "* * * * * *".into(),
        job: Some(pb::CreateJobRequest { description: "ticked".into(), ..Default::default() }),
        tasks: vec![spec("tick"), pb::TaskSpec { depends_on: vec![-1], ..spec("after the tick") }],
        replace: false,
    };
    let s = c.create_schedule(req.clone()).await.expect("create schedule").into_inner();
    assert!(s.next_run_ms > 0 && s.last_job_id.is_empty());
    let e = c.create_schedule(req.clone()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists);
    let bad = pb::CreateScheduleRequest { cron: "every day".into(), name: "bad".into(), ..req.clone() };
    assert!(c.create_schedule(bad).await.unwrap_err().message().starts_with("cron"));
    let ticked = |c: &OrchestratorClient<Channel>, n: usize| {
        let mut c = c.clone();
        async move {
            let jobs = c.list_jobs(pb::ListJobsRequest::default()).await.unwrap().into_inner().jobs;
            jobs.iter().filter(|j| j.description == "ticked").count() >= n
        }
    };
    until_async("two ticks", || ticked(&c, 2)).await;
    drop(c);
    assert!(coord.terminate().success());
    let down_at = now_ms();
    // Down for three ticks or more.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    coord.restart_same_port();
    let up_at = now_ms();
    let mut c = coord.client().await;
    until_async("two ticks after the restart", || {
        let c = c.clone();
        async move {
            let mut c = c;
            let jobs = c.list_jobs(pb::ListJobsRequest::default()).await.unwrap().into_inner().jobs;
            jobs.iter().filter(|j| j.description == "ticked" && j.created_at_ms >= up_at).count() >= 2
        }
    })
    .await;
    let list = c.list_schedules(pb::ListSchedulesRequest {}).await.unwrap().into_inner().schedules;
    let jobs: Vec<pb::Job> = c
        .list_jobs(pb::ListJobsRequest { page_size: 1_000, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .jobs
        .into_iter()
        .filter(|j| j.description == "ticked")
        .collect();
    // One job per tick: no second, before or after the restart, has two (the ticks missed
    // while it was down fire once at start-up, in the second of the restart, not once each).
    let seconds: HashSet<i64> = jobs.iter().map(|j| j.created_at_ms / 1_000).collect();
    assert_eq!(
        seconds.len(),
        jobs.len(),
        "two jobs in one tick: {:?}",
        jobs.iter().map(|j| j.created_at_ms).collect::<Vec<_>>()
    );
    assert!(!jobs.iter().any(|j| j.created_at_ms > down_at && j.created_at_ms < up_at - 1_000));
    assert_eq!(list.len(), 1);
    assert!(jobs.iter().any(|j| j.job_id == list[0].last_job_id));
    for j in &jobs {
        assert_eq!(j.status.as_ref().unwrap().total_tasks, 2, "each job has the template's tasks");
    }
    c.delete_schedule(pb::DeleteScheduleRequest { name: "every-second".into() }).await.unwrap();
    assert!(c.list_schedules(pb::ListSchedulesRequest {}).await.unwrap().into_inner().schedules.is_empty());
    let e = c.delete_schedule(pb::DeleteScheduleRequest { name: "every-second".into() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

/// A local HTTP server that answers 503 to the first request and 200 after.
fn webhook_server() -> (String, Requests) {
    http_sink(|n| if n == 0 { 503 } else { 200 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_is_called_once_per_finished_job_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (addr, got) = webhook_server();
    let url = format!("http://{addr}/hooks/orca");
    let coord = Coordinator::start(d, &["--job-webhook", &url]);
    let mut c = coord.client().await;
    let _w = WorkerProc::start(&coord.url(), d, "w", &["--agent", "noop", "--slots", "4"]);
    let first = create_job(&mut c, "first").await;
    add(&mut c, &first, (0..3).map(|i| spec(&format!("t{i}"))).collect()).await;
    wait_idle(&mut c, &first).await;
    let second = create_job(&mut c, "second").await;
    add(&mut c, &second, vec![spec("x")]).await;
    wait_idle(&mut c, &second).await;
    let delivered = |job: &str| {
        let g = got.lock().unwrap();
        g.iter().filter(|(code, body)| *code == 200 && body.contains(job)).count()
    };
    until("both notices delivered", || delivered(&first) >= 1 && delivered(&second) >= 1).await;
    let g = got.lock().unwrap().clone();
    // The first try was refused (503) and retried; each job was delivered once.
    assert_eq!(g[0].0, 503);
    assert_eq!((delivered(&first), delivered(&second)), (1, 1), "{g:?}");
    let doc: serde_json::Value =
        serde_json::from_str(&g.iter().find(|(c, b)| *c == 200 && b.contains(&first)).unwrap().1).unwrap();
    assert_eq!(doc["event"], "job.idle");
    assert_eq!(doc["description"], "first");
    assert_eq!(doc["state"], "completed");
    assert_eq!(doc["completed"], 3);
}
