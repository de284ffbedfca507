//! The validation matrix: every RPC gets its bad inputs; each must fail with the right code
//! and a message naming the field, and change nothing.

use orca_e2e::*;
use orca_proto::pb;
use pb::orchestrator_client::OrchestratorClient;
use tonic::Code;
use tonic::transport::Channel;

/// Everything a caller can observe: jobs, the job's tasks, and the contexts.
async fn observe(c: &mut OrchestratorClient<Channel>, job: &str) -> String {
    let jobs = c.list_jobs(pb::ListJobsRequest::default()).await.unwrap().into_inner();
    let tasks =
        c.list_tasks(pb::ListTasksRequest { job_id: job.into(), ..Default::default() }).await.unwrap().into_inner();
    let global = c.get_context(pb::GetContextRequest::default()).await.unwrap().into_inner();
    let local = c.get_context(pb::GetContextRequest { job_id: job.into() }).await.unwrap().into_inner();
    let mut jobs = jobs.jobs;
    for j in &mut jobs {
        j.updated_at_ms = 0;
    }
    let mut global: Vec<_> = global.values.into_iter().collect();
    global.sort();
    let mut local: Vec<_> = local.values.into_iter().collect();
    local.sort();
    format!("{jobs:?}\n{:?}\n{global:?}\n{local:?}", tasks.tasks)
}

fn check(name: &str, r: Result<(), tonic::Status>, code: Code, needle: &str) {
    let e = r.expect_err(name);
    assert_eq!(e.code(), code, "{name}: {e:?}");
    assert!(e.message().contains(needle), "{name}: {:?} should mention {needle:?}", e.message());
}

fn task_with(f: impl FnOnce(&mut pb::TaskSpec)) -> pb::TaskSpec {
    let mut s = spec("valid prompt");
    f(&mut s);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_refuses_bad_input_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "matrix").await;
    let ids = add(&mut c, &job, vec![spec("one"), spec("two")]).await;
    c.set_context(pb::SetContextRequest { job_id: job.clone(), key: "k".into(), value: "v".into() }).await.unwrap();
    let before = observe(&mut c, &job).await;

    // AddTasks: (spec, code, text the message must contain).
    let big = "x".repeat((1 << 20) + 1);
    let cases: Vec<(pb::TaskSpec, Code, &str)> = vec![
        (spec(""), Code::InvalidArgument, "tasks[0].prompt"),
        (spec(&big), Code::InvalidArgument, "tasks[0].prompt"),
        (spec("nul \0 byte"), Code::InvalidArgument, "tasks[0].prompt"),
        (task_with(|s| s.priority = Some(1_001)), Code::InvalidArgument, "tasks[0].priority"),
        (task_with(|s| s.priority = Some(-1_001)), Code::InvalidArgument, "tasks[0].priority"),
        (task_with(|s| s.depends_on = vec![999_999]), Code::NotFound, "999999"),
        (task_with(|s| s.depends_on = vec![0]), Code::InvalidArgument, "tasks[0].depends_on[0]"),
        (task_with(|s| s.depends_on = vec![-1]), Code::InvalidArgument, "cycle"),
        (task_with(|s| s.parent_task_id = Some(888_888)), Code::NotFound, "888888"),
        (
            task_with(|s| s.context_files = vec![pb::ContextFile { path: "../x".into(), contents: vec![] }]),
            Code::InvalidArgument,
            "tasks[0].context_files[0].path",
        ),
        (
            task_with(|s| s.context_files = vec![pb::ContextFile { path: "/etc/passwd".into(), contents: vec![] }]),
            Code::InvalidArgument,
            "tasks[0].context_files[0].path",
        ),
        (
            task_with(|s| {
                s.context_files =
                    (0..101).map(|i| pb::ContextFile { path: format!("f{i}"), contents: vec![] }).collect()
            }),
            Code::InvalidArgument,
            "tasks[0].context_files",
        ),
        (
            task_with(|s| {
                s.context_files = vec![pb::ContextFile { path: "big".into(), contents: vec![0; (8 << 20) + 1] }]
            }),
            Code::InvalidArgument,
            "tasks[0].context_files",
        ),
        (
            task_with(|s| s.expected_outputs = vec!["a/../../b".into()]),
            Code::InvalidArgument,
            "tasks[0].expected_outputs[0]",
        ),
        (task_with(|s| s.working_dir = "relative".into()), Code::InvalidArgument, "tasks[0].working_dir"),
        (task_with(|s| s.working_dir = "/srv/../etc".into()), Code::InvalidArgument, "tasks[0].working_dir"),
        (task_with(|s| s.max_retries = Some(101)), Code::InvalidArgument, "tasks[0].max_retries"),
        (
            task_with(|s| s.retry_policy = Some(pb::RetryPolicy { multiplier: 1000.0, ..Default::default() })),
            Code::InvalidArgument,
            "tasks[0].retry_policy.multiplier",
        ),
        (
            task_with(|s| {
                s.retry_policy = Some(pb::RetryPolicy { initial_backoff_ms: 4_000_000, ..Default::default() })
            }),
            Code::InvalidArgument,
            "tasks[0].retry_policy.initial_backoff_ms",
        ),
        (
            task_with(|s| {
                s.retry_policy = Some(pb::RetryPolicy { initial_backoff_ms: 10, multiplier: 2.0, max_backoff_ms: 5 })
            }),
            Code::InvalidArgument,
            "tasks[0].retry_policy.max_backoff_ms",
        ),
        (task_with(|s| s.timeout_seconds = 8 * 24 * 3600), Code::InvalidArgument, "tasks[0].timeout_seconds"),
        (
            task_with(|s| s.required_labels = [("has space".into(), "v".into())].into()),
            Code::InvalidArgument,
            "tasks[0].required_labels",
        ),
        (
            task_with(|s| s.required_labels = [("gpu".into(), "a=b".into())].into()),
            Code::InvalidArgument,
            "tasks[0].required_labels",
        ),
        (
            task_with(|s| s.verification = vec![pb::VerificationHook::default()]),
            Code::InvalidArgument,
            "tasks[0].verification[0].command",
        ),
        (
            task_with(|s| {
                s.agent = Some(pb::AgentOptions { permission_mode: "everything".into(), ..Default::default() })
            }),
            Code::InvalidArgument,
            "tasks[0].agent.permission_mode",
        ),
        (
            task_with(|s| s.agent = Some(pb::AgentOptions { max_budget_usd: -1.0, ..Default::default() })),
            Code::InvalidArgument,
            "tasks[0].agent.max_budget_usd",
        ),
    ];
    for (i, (bad, code, needle)) in cases.into_iter().enumerate() {
        let r = c
            .add_tasks(pb::AddTasksRequest { job_id: job.clone(), tasks: vec![bad], ..Default::default() })
            .await
            .map(|_| ());
        check(&format!("add_tasks case {i}"), r, code, needle);
    }
    // A bad task anywhere in a batch refuses the whole batch.
    let r = c
        .add_tasks(pb::AddTasksRequest {
            job_id: job.clone(),
            tasks: vec![spec("ok"), spec("ok"), spec("")],
            ..Default::default()
        })
        .await
        .map(|_| ());
    check("batch", r, Code::InvalidArgument, "tasks[2].prompt");
    let r = c
        .add_tasks(pb::AddTasksRequest { job_id: job.clone(), tasks: vec![spec("ok"); 10_001], ..Default::default() })
        .await
        .map(|_| ());
    check("batch size", r, Code::InvalidArgument, "tasks");
    let r = c
        .add_tasks(pb::AddTasksRequest { job_id: String::new(), tasks: vec![spec("ok")], ..Default::default() })
        .await
        .map(|_| ());
    check("add_tasks job_id", r, Code::InvalidArgument, "job_id");
    // A task of another job cannot be a dependency.
    let other = create_job(&mut c, "other").await;
    let foreign = add(&mut c, &other, vec![spec("x")]).await[0];
    let r = c
        .add_tasks(pb::AddTasksRequest {
            job_id: job.clone(),
            tasks: vec![task_with(|s| s.depends_on = vec![foreign])],
            ..Default::default()
        })
        .await
        .map(|_| ());
    check("foreign dependency", r, Code::InvalidArgument, "belongs to job");
    c.cancel_job(pb::CancelJobRequest { job_id: other.clone(), reason: "test".into() }).await.unwrap();
    let r = c
        .add_tasks(pb::AddTasksRequest { job_id: other.clone(), tasks: vec![spec("late")], ..Default::default() })
        .await
        .map(|_| ());
    check("cancelled job", r, Code::FailedPrecondition, "cancelled");
    let before_other = observe(&mut c, &job).await;

    // CreateJob.
    let r = c
        .create_job(pb::CreateJobRequest {
            description: "d".repeat((64 << 10) + 1),
            metadata: None,
            ..Default::default()
        })
        .await
        .map(|_| ());
    check("create_job description", r, Code::InvalidArgument, "description");
    let r = c
        .create_job(pb::CreateJobRequest { description: "nul\0".into(), metadata: None, ..Default::default() })
        .await
        .map(|_| ());
    check("create_job nul", r, Code::InvalidArgument, "description");
    let huge = prost_types::Struct {
        fields: [(
            "k".to_string(),
            prost_types::Value { kind: Some(prost_types::value::Kind::StringValue("v".repeat(70_000))) },
        )]
        .into(),
    };
    let r = c
        .create_job(pb::CreateJobRequest { description: "x".into(), metadata: Some(huge), ..Default::default() })
        .await
        .map(|_| ());
    check("create_job metadata", r, Code::InvalidArgument, "metadata");

    // Reads and job calls.
    check("get_job empty", c.get_job(pb::GetJobRequest::default()).await.map(|_| ()), Code::InvalidArgument, "job_id");
    check(
        "get_job unknown",
        c.get_job(pb::GetJobRequest { job_id: "nope".into() }).await.map(|_| ()),
        Code::NotFound,
        "nope",
    );
    let r = c.list_jobs(pb::ListJobsRequest { page_size: 5_000, page_token: String::new() }).await.map(|_| ());
    check("list_jobs page_size", r, Code::InvalidArgument, "page_size");
    let r =
        c.list_tasks(pb::ListTasksRequest { job_id: job.clone(), page_token: "garbage".into(), ..Default::default() });
    check("list_tasks token", r.await.map(|_| ()), Code::InvalidArgument, "page_token");
    let r = c.list_tasks(pb::ListTasksRequest { job_id: job.clone(), states: vec![42], ..Default::default() });
    check("list_tasks state", r.await.map(|_| ()), Code::InvalidArgument, "states[0]");
    let r = c.list_tasks(pb::ListTasksRequest { worker_id: "bad\0id".into(), ..Default::default() });
    check("list_tasks worker", r.await.map(|_| ()), Code::InvalidArgument, "worker_id");
    let r = c.watch_fleet(pb::WatchFleetRequest { stats_interval_ms: 10 });
    check("watch_fleet interval", r.await.map(|_| ()), Code::InvalidArgument, "stats_interval_ms");
    let r = c.drain_worker(pb::DrainWorkerRequest::default());
    check("drain_worker id", r.await.map(|_| ()), Code::InvalidArgument, "worker_id");
    let r = c.drain_worker(pb::DrainWorkerRequest { worker_id: "nobody".into(), resume: false });
    check("drain_worker unknown", r.await.map(|_| ()), Code::NotFound, "nobody");
    let r = c.list_tasks(pb::ListTasksRequest { job_id: "nope".into(), ..Default::default() });
    check("list_tasks job", r.await.map(|_| ()), Code::NotFound, "nope");
    check("get_task", c.get_task(pb::GetTaskRequest { task_id: 777_777 }).await.map(|_| ()), Code::NotFound, "777777");
    let r = c.cancel_job(pb::CancelJobRequest { job_id: "nope".into(), reason: String::new() }).await.map(|_| ());
    check("cancel_job", r, Code::NotFound, "nope");
    let r = c.cancel_task(pb::CancelTaskRequest { task_id: 777_777, reason: String::new() }).await.map(|_| ());
    check("cancel_task unknown", r, Code::NotFound, "777777");
    let r = c.cancel_task(pb::CancelTaskRequest { task_id: foreign, reason: String::new() }).await.map(|_| ());
    check("cancel_task final", r, Code::FailedPrecondition, "already cancelled");
    let r = c.retry_tasks(pb::RetryTasksRequest::default()).await.map(|_| ());
    check("retry empty", r, Code::InvalidArgument, "job_id");
    let r = c.retry_tasks(pb::RetryTasksRequest { job_id: String::new(), task_ids: vec![ids[0]] }).await.map(|_| ());
    check("retry pending", r, Code::FailedPrecondition, "only failed or cancelled");
    let r = c.retry_tasks(pb::RetryTasksRequest { job_id: "nope".into(), task_ids: vec![] }).await.map(|_| ());
    check("retry job", r, Code::NotFound, "nope");
    let r = c.retry_tasks(pb::RetryTasksRequest { job_id: job.clone(), task_ids: vec![foreign] }).await.map(|_| ());
    check("retry foreign", r, Code::InvalidArgument, "task_ids");

    // Context.
    let r = c.set_context(pb::SetContextRequest { job_id: job.clone(), key: String::new(), value: "v".into() });
    check("set_context key", r.await.map(|_| ()), Code::InvalidArgument, "key");
    let r = c.set_context(pb::SetContextRequest { job_id: job.clone(), key: "k".into(), value: "v".repeat(70_000) });
    check("set_context value", r.await.map(|_| ()), Code::InvalidArgument, "value");
    let r = c.set_context(pb::SetContextRequest { job_id: "nope".into(), key: "k".into(), value: "v".into() });
    check("set_context job", r.await.map(|_| ()), Code::NotFound, "nope");
    let r = c.get_context(pb::GetContextRequest { job_id: "nope".into() }).await.map(|_| ());
    check("get_context job", r, Code::NotFound, "nope");

    // Watch.
    let r = c.watch_job(pb::WatchJobRequest { job_id: String::new(), after_seq: 0, follow: false }).await.map(|_| ());
    check("watch empty", r, Code::InvalidArgument, "job_id");

    // The worker gateway.
    let mut gw = coord.gateway().await;
    let reg = |f: fn(&mut pb::RegisterRequest)| {
        let mut r = pb::RegisterRequest { name: "w".into(), slots: 1, ..Default::default() };
        f(&mut r);
        r
    };
    check("register slots 0", gw.register(reg(|r| r.slots = 0)).await.map(|_| ()), Code::InvalidArgument, "slots");
    check("register slots", gw.register(reg(|r| r.slots = 10_001)).await.map(|_| ()), Code::InvalidArgument, "slots");
    let r = gw.register(reg(|r| r.worker_id = "bad id!".into())).await.map(|_| ());
    check("register id", r, Code::InvalidArgument, "worker_id");
    let r = gw.register(reg(|r| r.labels = [("".into(), "x".into())].into())).await.map(|_| ());
    check("register label", r, Code::InvalidArgument, "labels");
    let r =
        gw.listen(pb::ListenRequest { worker_id: "never-registered".into(), ..Default::default() }).await.map(|_| ());
    check("listen unknown", r, Code::NotFound, "never-registered");
    let r = gw.heartbeat(pb::HeartbeatRequest::default()).await.map(|_| ());
    check("heartbeat id", r, Code::InvalidArgument, "worker_id");
    let r = gw.heartbeat(pb::HeartbeatRequest { worker_id: "never-registered".into(), running: vec![] }).await;
    check("heartbeat unknown", r.map(|_| ()), Code::NotFound, "never-registered");
    let r = gw.report(pb::ReportRequest { worker_id: "w".into(), reports: vec![] }).await.map(|_| ());
    check("report empty", r, Code::InvalidArgument, "reports");
    let r = gw
        .report(pb::ReportRequest {
            worker_id: "w".into(),
            reports: vec![pb::Report { task_id: ids[0], attempt: 1, body: None, ..Default::default() }],
        })
        .await
        .map(|_| ());
    check("report body", r, Code::InvalidArgument, "reports[0].body");
    // A report for an attempt nobody holds is refused per report, and changes nothing.
    let acks = gw
        .report(pb::ReportRequest {
            worker_id: "w".into(),
            reports: vec![pb::Report {
                task_id: ids[0],
                attempt: 1,
                body: Some(pb::report::Body::Completed(pb::Completed::default())),
                ..Default::default()
            }],
        })
        .await
        .unwrap()
        .into_inner()
        .acks;
    assert!(!acks[0].accepted);

    assert_eq!(observe(&mut c, &job).await, before_other, "bad input changed nothing");
    assert_ne!(before, before_other, "the other job is visible in the listing");
}

/// GetJobRequest with `job_id` as raw bytes, to send what a correct client cannot: a string
/// field that is not UTF-8.
#[derive(Clone, PartialEq, prost::Message)]
struct RawGetJob {
    #[prost(bytes = "vec", tag = "1")]
    job_id: Vec<u8>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_string_that_is_not_utf8_is_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let channel = tonic::transport::Endpoint::from_shared(coord.url()).unwrap().connect().await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<RawGetJob, pb::Job>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/orca.v1.Orchestrator/GetJob");
    let req = tonic::Request::new(RawGetJob { job_id: vec![0x66, 0xff, 0xfe] });
    let e = grpc.unary(req, path, codec).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("UTF-8") || e.message().contains("utf-8"), "{}", e.message());
}
