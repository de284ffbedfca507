//! Helpers for Orca's end-to-end tests: start the real `orca-coordinator` binary on
//! `127.0.0.1:0` (readiness: the address it writes to `--addr-file`), connect clients, and
//! run test workers written against the generated WorkerGateway client.

pub mod workers;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orca_proto::pb;
use pb::orchestrator_client::OrchestratorClient;
use pb::worker_gateway_client::WorkerGatewayClient;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// Generous bound on anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(120);

/// Path of a workspace binary, next to the test executable's `deps/` directory.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(path.exists(), "{} not found; build it first (cargo test --workspace builds it)", path.display());
    path
}

/// A running coordinator process.
pub struct Coordinator {
    pub child: Child,
    pub addr: String,
    pub db: PathBuf,
    pub dir: PathBuf,
    args: Vec<String>,
}

impl Coordinator {
    /// Starts a coordinator with its database in `dir`, and waits for its bound address.
    pub fn start(dir: &Path, extra: &[&str]) -> Coordinator {
        let db = dir.join("orca.db");
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, addr) = spawn(dir, &db, &args);
        Coordinator { child, addr, db, dir: dir.to_path_buf(), args }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn client(&self) -> OrchestratorClient<Channel> {
        OrchestratorClient::connect(self.url()).await.expect("connect orchestrator")
    }

    pub async fn gateway(&self) -> WorkerGatewayClient<Channel> {
        WorkerGatewayClient::connect(self.url()).await.expect("connect gateway")
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        signal(self.child.id(), libc::SIGTERM);
        wait_exit(&mut self.child)
    }

    /// Starts it again on the same database (a new port).
    pub fn restart(&mut self) {
        let (child, addr) = spawn(&self.dir, &self.db, &self.args);
        self.child = child;
        self.addr = addr;
    }

    /// Starts it again on the same database and the same address, so that connected
    /// clients and workers can reconnect.
    pub fn restart_same_port(&mut self) {
        let mut args = vec!["--listen".to_string(), self.addr.clone()];
        args.extend(self.args.iter().cloned());
        let (child, addr) = spawn(&self.dir, &self.db, &args);
        assert_eq!(addr, self.addr);
        self.child = child;
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(dir: &Path, db: &Path, extra: &[String]) -> (Child, String) {
    let addr_file = dir.join("addr");
    let _ = std::fs::remove_file(&addr_file);
    let log =
        std::fs::OpenOptions::new().create(true).append(true).open(dir.join("coordinator.log")).expect("log file");
    // A later --listen in `extra` overrides this one.
    let mut child = Command::new(binary("orca-coordinator"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--db")
        .arg(db)
        .arg("--addr-file")
        .arg(&addr_file)
        .args(extra)
        .env("ORCA_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn orca-coordinator");
    let addr = wait_for_file(&addr_file, &mut child);
    (child, addr)
}

/// Waits until the process wrote its address file (or exits, which fails the test).
pub fn wait_for_file(path: &Path, child: &mut Child) -> String {
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && s.ends_with('\n')
        {
            return s.trim().to_string();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("process exited with {status} before writing {}", path.display());
        }
        assert!(start.elapsed() < WAIT, "no address in {} after {WAIT:?}", path.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid we spawned and own.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Waits for a child's exit (generous bound), killing it if the bound passes.
pub fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if start.elapsed() > WAIT {
            let _ = child.kill();
            panic!("process did not exit within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A plain task spec.
pub fn spec(prompt: &str) -> pb::TaskSpec {
    pb::TaskSpec { prompt: prompt.to_string(), ..Default::default() }
}

pub async fn create_job(c: &mut OrchestratorClient<Channel>, description: &str) -> String {
    c.create_job(pb::CreateJobRequest { description: description.into(), metadata: None })
        .await
        .expect("create job")
        .into_inner()
        .job_id
}

pub async fn add(c: &mut OrchestratorClient<Channel>, job: &str, tasks: Vec<pb::TaskSpec>) -> Vec<i64> {
    c.add_tasks(pb::AddTasksRequest { job_id: job.into(), tasks }).await.expect("add tasks").into_inner().task_ids
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
            })
            .await
            .expect("register")
            .into_inner();
        let id = reg.worker_id.clone();
        let mut stream = gw.listen(pb::ListenRequest { worker_id: id.clone() }).await.expect("listen").into_inner();
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
                            reports.push(pb::Report { task_id: a.task_id, attempt: a.attempt, body: Some(body) });
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
