//! Helpers for Orca's end-to-end tests: start the real `orca-coordinator` binary on
//! `127.0.0.1:0` (readiness: the address it writes to `--addr-file`), connect clients, and
//! run test workers written against the generated WorkerGateway client.
//!
//! The processes are started by `orca-harness` (shared with the benchmark and the chaos run);
//! this crate keeps the tests' side of it: failures panic with a message, and every wait is
//! bounded by [`WAIT`].

pub mod gitrepo;
pub mod webdriver;
pub mod workers;

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use orca_harness::CoordinatorConfig;
use orca_proto::pb;
use pb::orchestrator_client::OrchestratorClient;
use pb::worker_gateway_client::WorkerGatewayClient;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub use orca_harness::process::signal;

/// Generous bound on anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(120);

/// Each request an [`http_sink`] got: (the status it answered, the body).
pub type Requests = Arc<std::sync::Mutex<Vec<(u16, String)>>>;

/// A local HTTP/1.1 server (a webhook's target) on a free port: answers the n-th request
/// (from 0) with `answer(n)`, and records each. Returns its `host:port`.
pub fn http_sink(answer: impl Fn(usize) -> u16 + Send + 'static) -> (String, Requests) {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let got: Requests = Arc::default();
    let seen = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let mut g = seen.lock().unwrap();
            let code = answer(g.len());
            g.push((code, String::from_utf8_lossy(&body).into_owned()));
            drop(g);
            let _ = write!(s, "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (addr, got)
}

/// Whether this is the Postgres pass of the end-to-end tests (`ORCA_E2E_DB=postgres`).
pub fn on_postgres() -> bool {
    orca_harness::coordinator::e2e_postgres().is_some()
}

/// Path of a workspace binary, next to the test executable's `deps/` directory.
pub fn binary(name: &str) -> PathBuf {
    let dir = orca_harness::binary_dir().expect("target dir");
    match orca_harness::binary_in(&dir, name) {
        Ok(path) => path,
        Err(_) => panic!("{} not found; build it first (cargo test --workspace builds it)", dir.join(name).display()),
    }
}

/// A running coordinator process. It dereferences to the harness's handle, whose public
/// fields (`child`, `addr`, `db`, `dir`) and `url`/`pid`/`kill` the tests use directly.
pub struct Coordinator(orca_harness::Coordinator);

impl Deref for Coordinator {
    type Target = orca_harness::Coordinator;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Coordinator {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Coordinator {
    /// Starts a coordinator with its database in `dir`, and waits for its bound address.
    pub fn start(dir: &Path, extra: &[&str]) -> Coordinator {
        let config = CoordinatorConfig::new(binary("orca-coordinator"), dir).args(extra).ready_within(WAIT);
        Coordinator(orca_harness::Coordinator::start(config).unwrap_or_else(|e| panic!("start orca-coordinator: {e}")))
    }

    /// Starts a coordinator that also serves HTTP (`--http-listen` on a free port); returns
    /// it with the HTTP `host:port`.
    pub fn start_with_http(dir: &Path, extra: &[&str]) -> (Coordinator, String) {
        let addr_file = dir.join("http.addr");
        let mut args = vec!["--http-listen", "127.0.0.1:0", "--http-addr-file", addr_file.to_str().unwrap()];
        args.extend_from_slice(extra);
        let mut coord = Coordinator::start(dir, &args);
        let http = wait_for_file(&addr_file, &mut coord.child);
        (coord, http)
    }

    pub async fn client(&self) -> OrchestratorClient<Channel> {
        OrchestratorClient::connect(self.url()).await.expect("connect orchestrator")
    }

    pub async fn gateway(&self) -> WorkerGatewayClient<Channel> {
        WorkerGatewayClient::connect(self.url()).await.expect("connect gateway")
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        signal(self.child.id(), libc::SIGTERM);
        wait_exit(&mut self.child)
    }

    /// Starts it again on the same database (a new port).
    pub fn restart(&mut self) {
        self.0.restart().unwrap_or_else(|e| panic!("restart orca-coordinator: {e}"));
    }

    /// Starts it again on the same database and the same address, so that connected
    /// clients and workers can reconnect.
    pub fn restart_same_port(&mut self) {
        let before = self.addr.clone();
        self.0.restart_same_port().unwrap_or_else(|e| panic!("restart orca-coordinator on {before}: {e}"));
        assert_eq!(self.addr, before);
    }
}

/// Waits until the process wrote its address file (or exits, which fails the test).
pub fn wait_for_file(path: &Path, child: &mut Child) -> String {
    orca_harness::coordinator::wait_for_address(path, child, WAIT).unwrap_or_else(|e| panic!("{e}"))
}

/// Waits for a child's exit (generous bound), killing it if the bound passes.
pub fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    match orca_harness::process::wait_within(child, WAIT).expect("try_wait") {
        Some(status) => status,
        None => {
            let _ = child.kill();
            panic!("process did not exit within {WAIT:?}");
        }
    }
}

/// The hex SHA-256 of a token, the operator's way (`printf %s TOKEN | sha256sum`), for
/// auth files.
pub fn token_digest(token: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(format!("printf %s '{token}' | sha256sum")).output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

/// A plain task spec.
pub fn spec(prompt: &str) -> pb::TaskSpec {
    pb::TaskSpec { prompt: prompt.to_string(), ..Default::default() }
}

pub async fn create_job(c: &mut OrchestratorClient<Channel>, description: &str) -> String {
    c.create_job(pb::CreateJobRequest { description: description.into(), ..Default::default() })
        .await
        .expect("create job")
        .into_inner()
        .job_id
}

pub async fn add(c: &mut OrchestratorClient<Channel>, job: &str, tasks: Vec<pb::TaskSpec>) -> Vec<i64> {
    c.add_tasks(pb::AddTasksRequest { job_id: job.into(), tasks, ..Default::default() })
        .await
        .expect("add tasks")
        .into_inner()
        .task_ids
}

pub async fn job_status(c: &mut OrchestratorClient<Channel>, job: &str) -> pb::JobStatus {
    c.get_job(pb::GetJobRequest { job_id: job.into() }).await.expect("get job").into_inner().status.expect("status")
}

pub async fn task(c: &mut OrchestratorClient<Channel>, id: i64) -> pb::Task {
    c.get_task(pb::GetTaskRequest { task_id: id }).await.expect("get task").into_inner()
}

/// Waits, through WatchJob, until every task of the job is final; returns the last status.
pub async fn wait_idle(c: &mut OrchestratorClient<Channel>, job: &str) -> pb::JobStatus {
    let fut = async {
        let mut stream = c
            .watch_job(pb::WatchJobRequest { job_id: job.into(), after_seq: 0, follow: false })
            .await
            .expect("watch")
            .into_inner();
        let mut last = None;
        while let Some(ev) = stream.message().await.expect("watch event") {
            last = ev.status;
        }
        last.expect("at least one event")
    };
    tokio::time::timeout(WAIT, fut).await.expect("job did not finish in time")
}

/// What a test worker does with an assignment.
#[derive(Clone, Debug)]
pub enum Action {
    Complete(String),
    Fail {
        error: String,
        retryable: bool,
    },
    /// Never report (the attempt stays running until its lease expires).
    Hold,
}

/// What a test worker saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub worker: String,
    pub task_id: i64,
    pub attempt: u32,
    pub prompt: String,
    /// Whether the report for it was accepted (None for Hold).
    pub accepted: Option<bool>,
}

pub type Behavior = Arc<dyn Fn(&pb::Assignment) -> Action + Send + Sync>;

/// Options of a test worker.
#[derive(Clone)]
pub struct WorkerOpts {
    pub name: String,
    pub slots: u32,
    pub heartbeat: bool,
    pub labels: Vec<(String, String)>,
    pub behavior: Behavior,
}

impl WorkerOpts {
    pub fn new(name: &str, slots: u32) -> Self {
        WorkerOpts {
            name: name.into(),
            slots,
            heartbeat: true,
            labels: vec![],
            behavior: Arc::new(|_| Action::Complete("done".into())),
        }
    }

    pub fn behavior(mut self, f: impl Fn(&pb::Assignment) -> Action + Send + Sync + 'static) -> Self {
        self.behavior = Arc::new(f);
        self
    }
}

/// A running test worker (a task in this process speaking the worker protocol).
pub struct TestWorker {
    pub id: String,
    task: JoinHandle<()>,
}

impl TestWorker {
    /// Registers, opens the Listen stream, and handles assignments until dropped.
    pub async fn start(url: &str, opts: WorkerOpts, seen: mpsc::UnboundedSender<Seen>) -> TestWorker {
        let mut gw = WorkerGatewayClient::connect(url.to_string()).await.expect("connect gateway");
        let reg = gw
            .register(pb::RegisterRequest {
                worker_id: String::new(),
                name: opts.name.clone(),
                hostname: "test".into(),
                labels: opts.labels.iter().cloned().collect(),
                slots: opts.slots,
                agent_kinds: vec!["test".into()],
                running: vec![],
                version: orca_proto::contract::VERSION.into(),
            })
            .await
            .expect("register")
            .into_inner();
        let id = reg.worker_id.clone();
        let mut stream = gw
            .listen(pb::ListenRequest { worker_id: id.clone(), ..Default::default() })
            .await
            .expect("listen")
            .into_inner();
        let wid = id.clone();
        let task = tokio::spawn(async move {
            let mut held: Vec<pb::TaskRef> = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                let msg = tokio::select! {
                    m = stream.message() => match m {
                        Ok(Some(m)) => m,
                        _ => return,
                    },
                    _ = tick.tick(), if opts.heartbeat => {
                        let req = pb::HeartbeatRequest { worker_id: wid.clone(), running: held.clone() };
                        if gw.heartbeat(req).await.is_err() {
                            return;
                        }
                        continue;
                    }
                };
                let mut reports = Vec::new();
                let mut pending_seen = Vec::new();
                for a in msg.assignments {
                    let prompt = a.spec.as_ref().map(|s| s.prompt.clone()).unwrap_or_default();
                    let action = (opts.behavior)(&a);
                    let body = match action {
                        Action::Complete(output) => Some(pb::report::Body::Completed(pb::Completed {
                            result: Some(pb::TaskResult { output, ..Default::default() }),
                        })),
                        Action::Fail { error, retryable } => Some(pb::report::Body::Failed(pb::Failed {
                            result: Some(pb::TaskResult { error, exit_code: 1, ..Default::default() }),
                            retryable,
                        })),
                        Action::Hold => None,
                    };
                    let seen_one =
                        Seen { worker: wid.clone(), task_id: a.task_id, attempt: a.attempt, prompt, accepted: None };
                    match body {
                        Some(body) => {
                            reports.push(pb::Report {
                                task_id: a.task_id,
                                attempt: a.attempt,
                                body: Some(body),
                                ..Default::default()
                            });
                            pending_seen.push(seen_one);
                        }
                        None => {
                            held.push(pb::TaskRef { task_id: a.task_id, attempt: a.attempt });
                            let _ = seen.send(seen_one);
                        }
                    }
                }
                if reports.is_empty() {
                    continue;
                }
                match gw.report(pb::ReportRequest { worker_id: wid.clone(), reports }).await {
                    Ok(resp) => {
                        for (mut s, ack) in pending_seen.into_iter().zip(resp.into_inner().acks) {
                            s.accepted = Some(ack.accepted);
                            let _ = seen.send(s);
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        TestWorker { id, task }
    }

    /// Drops the stream and stops heartbeating (the worker vanishes).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Receives `n` items, failing after the generous bound.
pub async fn recv_n<T>(rx: &mut mpsc::UnboundedReceiver<T>, n: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(n);
    let fut = async {
        while out.len() < n {
            match rx.recv().await {
                Some(v) => out.push(v),
                None => break,
            }
        }
    };
    tokio::time::timeout(WAIT, fut).await.expect("timed out waiting for worker events");
    out
}
