//! Tokens and roles end to end (`--auth-file`): every RPC of both services against every
//! role, job ownership, worker ids bound to their token, revocation by SIGHUP, /metrics, and
//! the real worker and CLI with their tokens.

use std::path::Path;

use orca_e2e::workers::{WorkerProc, http_get, until_async};
use orca_e2e::*;
use orca_proto::pb;
use pb::orchestrator_client::OrchestratorClient;
use pb::worker_gateway_client::WorkerGatewayClient;
use tonic::Code;
use tonic::transport::Channel;

const ROLES: [(&str, &str); 5] = [
    ("admin", "admin-token"),
    ("ci", "submitter-token"),
    ("other", "other-submitter-token"),
    ("dash", "reader-token"),
    ("farm", "worker-token"),
];

fn write_auth(path: &Path, skip: &[&str]) {
    let mut text = String::new();
    for ((name, token), role) in ROLES.iter().zip(["admin", "submitter", "submitter", "reader", "worker"]) {
        if !skip.contains(name) {
            text.push_str(&format!(
                "[[tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n\n",
                token_digest(token)
            ));
        }
    }
    std::fs::write(path, text).unwrap();
}

fn with<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    r.map(|_| Code::Ok).unwrap_or_else(|s| s.code())
}

/// Every RPC of both services, called with `token` on a job and task of the submitter `ci`.
async fn every_rpc(
    c: &mut OrchestratorClient<Channel>,
    gw: &mut WorkerGatewayClient<Channel>,
    token: Option<&str>,
    job: &str,
    task: i64,
) -> Vec<(&'static str, Code)> {
    let j = || job.to_string();
    let t = token;
    vec![
        ("CreateJob", code(c.create_job(with(pb::CreateJobRequest::default(), t)).await)),
        ("GetJob", code(c.get_job(with(pb::GetJobRequest { job_id: j() }, t)).await)),
        ("ListJobs", code(c.list_jobs(with(pb::ListJobsRequest::default(), t)).await)),
        (
            "CancelJob",
            code(
                c.cancel_job(with(
                    pb::CancelJobRequest {
                        job_id: "01a2a2a2-0000-7000-8000-000000000000".into(),
                        reason: String::new(),
                    },
                    t,
                ))
                .await,
            ),
        ),
        (
            "DeleteJob",
            code(
                c.delete_job(with(pb::DeleteJobRequest { job_id: "01a2a2a2-0000-7000-8000-000000000000".into() }, t))
                    .await,
            ),
        ),
        (
            "AddTasks",
            code(
                c.add_tasks(with(pb::AddTasksRequest { job_id: j(), tasks: vec![spec("x")], ..Default::default() }, t))
                    .await,
            ),
        ),
        ("GetTask", code(c.get_task(with(pb::GetTaskRequest { task_id: task }, t)).await)),
        ("ListTasks", code(c.list_tasks(with(pb::ListTasksRequest { job_id: j(), ..Default::default() }, t)).await)),
        (
            "CancelTask",
            code(c.cancel_task(with(pb::CancelTaskRequest { task_id: 999_999, reason: String::new() }, t)).await),
        ),
        ("RetryTasks", code(c.retry_tasks(with(pb::RetryTasksRequest { job_id: j(), task_ids: vec![] }, t)).await)),
        (
            "SetContext",
            code(
                c.set_context(with(pb::SetContextRequest { job_id: j(), key: "k".into(), value: "v".into() }, t)).await,
            ),
        ),
        ("GetContext", code(c.get_context(with(pb::GetContextRequest { job_id: j() }, t)).await)),
        (
            "WatchJob",
            code(c.watch_job(with(pb::WatchJobRequest { job_id: j(), after_seq: 0, follow: false }, t)).await),
        ),
        ("ListWorkers", code(c.list_workers(with(pb::ListWorkersRequest {}, t)).await)),
        ("GetStats", code(c.get_stats(with(pb::GetStatsRequest {}, t)).await)),
        ("WatchFleet", code(c.watch_fleet(with(pb::WatchFleetRequest::default(), t)).await)),
        (
            "DrainWorker",
            code(c.drain_worker(with(pb::DrainWorkerRequest { worker_id: "nobody".into(), resume: false }, t)).await),
        ),
        ("Register", code(gw.register(with(pb::RegisterRequest { slots: 1, ..Default::default() }, t)).await)),
        (
            "Listen",
            code(
                gw.listen(with(pb::ListenRequest { worker_id: "nobody-listens".into(), context_by_stream: true }, t))
                    .await,
            ),
        ),
        (
            "Heartbeat",
            code(
                gw.heartbeat(with(pb::HeartbeatRequest { worker_id: "nobody-beats".into(), running: vec![] }, t)).await,
            ),
        ),
        (
            "Report",
            code(gw.report(with(pb::ReportRequest { worker_id: "nobody-reports".into(), reports: vec![] }, t)).await),
        ),
    ]
}

fn denied(codes: &[(&'static str, Code)], what: Code) -> Vec<&'static str> {
    codes.iter().filter(|(_, c)| *c == what).map(|(m, _)| *m).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_follows_the_role_table_and_ownership() {
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.toml");
    write_auth(&auth, &[]);
    let coord = Coordinator::start(dir.path(), &["--auth-file", auth.to_str().unwrap()]);
    let mut c = coord.client().await;
    let mut gw = coord.gateway().await;
    // A job and a task of the submitter `ci`.
    let job = c.create_job(with(pb::CreateJobRequest::default(), Some("submitter-token"))).await.unwrap().into_inner();
    assert_eq!(job.owner, "ci");
    let job = job.job_id;
    let added = c.add_tasks(with(
        pb::AddTasksRequest { job_id: job.clone(), tasks: vec![spec("mine")], ..Default::default() },
        Some("submitter-token"),
    ));
    let task = added.await.unwrap().into_inner().task_ids[0];

    let none = every_rpc(&mut c, &mut gw, None, &job, task).await;
    assert_eq!(denied(&none, Code::Unauthenticated).len(), none.len(), "no token: {none:?}");
    let unknown = every_rpc(&mut c, &mut gw, Some("guess"), &job, task).await;
    assert_eq!(denied(&unknown, Code::Unauthenticated).len(), unknown.len(), "unknown token: {unknown:?}");

    let orchestrator_reads = [
        "GetJob",
        "ListJobs",
        "GetTask",
        "ListTasks",
        "GetContext",
        "WatchJob",
        "ListWorkers",
        "GetStats",
        "WatchFleet",
    ];
    let gateway = ["Register", "Listen", "Heartbeat", "Report"];
    let admin = every_rpc(&mut c, &mut gw, Some("admin-token"), &job, task).await;
    assert!(
        denied(&admin, Code::PermissionDenied).is_empty() && denied(&admin, Code::Unauthenticated).is_empty(),
        "{admin:?}"
    );
    let owner = every_rpc(&mut c, &mut gw, Some("submitter-token"), &job, task).await;
    let mut want = vec!["DrainWorker"];
    want.extend(gateway);
    assert_eq!(denied(&owner, Code::PermissionDenied), want, "the owning submitter: {owner:?}");
    let reader = every_rpc(&mut c, &mut gw, Some("reader-token"), &job, task).await;
    let mut not_reads: Vec<&str> = reader.iter().map(|(m, _)| *m).filter(|m| !orchestrator_reads.contains(m)).collect();
    not_reads.sort();
    let mut refused = denied(&reader, Code::PermissionDenied);
    refused.sort();
    assert_eq!(refused, not_reads, "the reader: {reader:?}");
    let worker = every_rpc(&mut c, &mut gw, Some("worker-token"), &job, task).await;
    let refused = denied(&worker, Code::PermissionDenied);
    assert_eq!(refused.len(), worker.len() - gateway.len(), "the worker token on the caller API: {worker:?}");
    assert!(gateway.iter().all(|g| !refused.contains(g)));
    // Another submitter: refused on `ci`'s job and task (CreateJob and ListJobs are its own;
    // the unknown job and task are NOT_FOUND first; the gateway is not for submitters).
    let other = every_rpc(&mut c, &mut gw, Some("other-submitter-token"), &job, task).await;
    let mut refused = denied(&other, Code::PermissionDenied);
    refused.sort();
    let mut want = vec![
        "GetJob",
        "AddTasks",
        "GetTask",
        "ListTasks",
        "RetryTasks",
        "SetContext",
        "GetContext",
        "WatchJob",
        "DrainWorker",
    ];
    want.extend(gateway);
    want.sort();
    assert_eq!(refused, want, "another submitter: {other:?}");

    // Nothing the refused calls asked for happened: `ci`'s job has what the owner and the
    // admin added, and `other` lists only its own job.
    let s = c.get_job(with(pb::GetJobRequest { job_id: job.clone() }, Some("admin-token"))).await.unwrap().into_inner();
    assert_eq!(s.status.unwrap().total_tasks, 3, "mine + the owner's x + the admin's x");
    let listed = c.list_jobs(with(pb::ListJobsRequest::default(), Some("other-submitter-token"))).await.unwrap();
    assert!(listed.into_inner().jobs.iter().all(|j| j.owner == "other"));
    // Listing the tasks of every job, a submitter sees only its own jobs' tasks.
    let all = c.list_tasks(with(pb::ListTasksRequest::default(), Some("other-submitter-token"))).await.unwrap();
    assert!(all.into_inner().tasks.iter().all(|t| t.job_id != job), "another submitter sees ci's tasks");
    let all = c.list_tasks(with(pb::ListTasksRequest::default(), Some("submitter-token"))).await.unwrap();
    assert_eq!(all.into_inner().tasks.len(), 3, "ci sees its own tasks");
    let global = c.set_context(with(
        pb::SetContextRequest { key: "g".into(), value: "v".into(), ..Default::default() },
        Some("submitter-token"),
    ));
    assert_eq!(code(global.await), Code::PermissionDenied, "the global context is an admin's");

    // Health and reflection stay open.
    let channel = tonic::transport::Endpoint::from_shared(coord.url()).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health.check(tonic_health::pb::HealthCheckRequest::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_id_belongs_to_its_token_and_sighup_revokes() {
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.toml");
    write_auth(&auth, &[]);
    let coord = Coordinator::start(dir.path(), &["--auth-file", auth.to_str().unwrap()]);
    let mut gw = coord.gateway().await;
    let reg = |id: &str| pb::RegisterRequest { worker_id: id.into(), slots: 1, ..Default::default() };
    gw.register(with(reg("w-farm"), Some("worker-token"))).await.unwrap();
    // The admin may act for any worker; another worker token may not.
    gw.register(with(reg("w-farm"), Some("admin-token"))).await.unwrap();
    std::fs::write(
        &auth,
        format!(
            "{}[[tokens]]\nname = \"farm2\"\nrole = \"worker\"\nsha256 = \"{}\"\n",
            std::fs::read_to_string(&auth).unwrap(),
            token_digest("second-worker-token")
        ),
    )
    .unwrap();
    signal(coord.child.id(), libc::SIGHUP);
    let mut c = coord.client().await;
    until_code(&mut gw, "second-worker-token", Code::Ok).await;
    let forged = gw.register(with(reg("w-farm"), Some("second-worker-token"))).await.unwrap_err();
    assert_eq!(forged.code(), Code::PermissionDenied);
    assert!(forged.message().contains("w-farm"), "{}", forged.message());
    let started = pb::Report {
        task_id: 1,
        attempt: 1,
        body: Some(pb::report::Body::Started(pb::Started {})),
        ..Default::default()
    };
    let report = pb::ReportRequest { worker_id: "w-farm".into(), reports: vec![started] };
    assert_eq!(code(gw.report(with(report, Some("second-worker-token"))).await), Code::PermissionDenied);
    let beat = pb::HeartbeatRequest { worker_id: "w-farm".into(), running: vec![] };
    assert_eq!(code(gw.heartbeat(with(beat, Some("second-worker-token"))).await), Code::PermissionDenied);

    // Revoke the submitter: after SIGHUP its token is unknown; the others still work.
    c.create_job(with(pb::CreateJobRequest::default(), Some("submitter-token"))).await.unwrap();
    write_auth(&auth, &["ci"]);
    signal(coord.child.id(), libc::SIGHUP);
    until_async("the revoked token to be refused", || {
        let mut c = c.clone();
        async move {
            let r = c.create_job(with(pb::CreateJobRequest::default(), Some("submitter-token"))).await;
            code(r) == Code::Unauthenticated
        }
    })
    .await;
    c.create_job(with(pb::CreateJobRequest::default(), Some("other-submitter-token"))).await.unwrap();
    // A broken file on SIGHUP keeps the tokens as they were.
    std::fs::write(&auth, "[[tokens]\nbroken").unwrap();
    signal(coord.child.id(), libc::SIGHUP);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    c.create_job(with(pb::CreateJobRequest::default(), Some("other-submitter-token"))).await.unwrap();
}

async fn until_code(gw: &mut WorkerGatewayClient<Channel>, token: &str, want: Code) {
    until_async(&format!("register with {token} to give {want:?}"), || {
        let mut gw = gw.clone();
        async move {
            let reg = pb::RegisterRequest { worker_id: "probe".into(), slots: 1, ..Default::default() };
            code(gw.register(with(reg, Some(token))).await) == want
        }
    })
    .await;
}

fn http_status(addr: &str, path: &str, token: Option<&str>) -> u16 {
    http_get(addr, path, token).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_and_the_cli_use_their_tokens_and_metrics_need_a_reader() {
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.toml");
    write_auth(&auth, &[]);
    let http_file = dir.path().join("http.addr");
    let mut coord = Coordinator::start(
        dir.path(),
        &[
            "--auth-file",
            auth.to_str().unwrap(),
            "--http-listen",
            "127.0.0.1:0",
            "--http-addr-file",
            http_file.to_str().unwrap(),
        ],
    );
    let http = wait_for_file(&http_file, &mut coord.child);
    assert_eq!(http_status(&http, "/healthz", None), 200, "health stays open");
    assert_eq!(http_status(&http, "/metrics", None), 401);
    assert_eq!(http_status(&http, "/metrics", Some("worker-token")), 403);
    assert_eq!(http_status(&http, "/metrics", Some("reader-token")), 200);

    let worker = WorkerProc::start_with_env(
        &coord.url(),
        dir.path(),
        "tokened",
        &["--agent", "noop"],
        &[("ORCA_TOKEN", "worker-token")],
    );
    let token_file = dir.path().join("ci.token");
    std::fs::write(&token_file, "submitter-token\n").unwrap();
    let orca = |args: &[&str]| {
        std::process::Command::new(binary("orca"))
            .args(["--coordinator", &coord.url(), "--token-file", token_file.to_str().unwrap()])
            .args(args)
            .env_remove("ORCA_TOKEN")
            .output()
            .unwrap()
    };
    let out = orca(&["submit", "--json", "one", "two"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let job = job["job_id"].as_str().unwrap().to_string();
    let waited = orca(&["wait", &job, "--json"]);
    assert!(waited.status.success(), "{}", String::from_utf8_lossy(&waited.stderr));
    // Without a token the CLI says what is missing.
    let bare = std::process::Command::new(binary("orca"))
        .args(["--coordinator", &coord.url(), "status", &job])
        .env_remove("ORCA_TOKEN")
        .env_remove("ORCA_TOKEN_FILE")
        .output()
        .unwrap();
    assert!(!bare.status.success());
    let err = String::from_utf8_lossy(&bare.stderr);
    assert!(err.contains("unauthenticated") && err.contains("ORCA_TOKEN"), "{err}");
    worker.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_token_limits_refuse_with_resource_exhausted_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.toml");
    std::fs::write(
        &auth,
        format!(
            "[[tokens]]\nname = \"slow\"\nrole = \"submitter\"\nsha256 = \"{}\"\ntasks_per_second = 1\nburst = 2\nwatch_streams = 1\n",
            token_digest("slow-token")
        ),
    )
    .unwrap();
    let coord = Coordinator::start(dir.path(), &["--auth-file", auth.to_str().unwrap()]);
    let mut c = coord.client().await;
    let t = Some("slow-token");
    let job = c.create_job(with(pb::CreateJobRequest::default(), t)).await.unwrap().into_inner().job_id;
    let add = |n: usize| pb::AddTasksRequest {
        job_id: job.clone(),
        tasks: (0..n).map(|i| spec(&format!("t{i}"))).collect(),
        ..Default::default()
    };
    c.add_tasks(with(add(2), t)).await.unwrap();
    let over = c.add_tasks(with(add(1), t)).await.unwrap_err();
    assert_eq!(over.code(), Code::ResourceExhausted);
    assert!(over.message().contains("tasks_per_second = 1"), "{}", over.message());
    let s = c.get_job(with(pb::GetJobRequest { job_id: job.clone() }, t)).await.unwrap().into_inner();
    assert_eq!(s.status.unwrap().total_tasks, 2, "what was accepted stays; nothing else was added");

    let watch = |c: &mut OrchestratorClient<Channel>| {
        let mut c = c.clone();
        let job = job.clone();
        async move { c.watch_job(with(pb::WatchJobRequest { job_id: job, after_seq: 0, follow: true }, t)).await }
    };
    let first = watch(&mut c).await.unwrap();
    let second = watch(&mut c).await.unwrap_err();
    assert_eq!(second.code(), Code::ResourceExhausted);
    assert!(second.message().contains("watch_streams = 1"), "{}", second.message());
    drop(first);
    until_async("the closed stream to be given back", || {
        let opened = watch(&mut c);
        async move { opened.await.is_ok() }
    })
    .await;
}
