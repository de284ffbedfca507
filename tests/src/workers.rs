//! Helpers for end-to-end tests of `orca-worker` processes: start and stop real workers,
//! write the agent scripts they run, wait (with the generous bound [`WAIT`]) for files and
//! for processes to end, and collect a job's events.
//!
//! Every worker started here gets `WORKER_NAME=<name>` in its environment, which its agents
//! inherit, so that agent scripts can record which worker ran them.

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use orca_harness::{Worker, WorkerConfig};
use orca_proto::pb;
use pb::orchestrator_client::OrchestratorClient;
use tonic::transport::Channel;

pub use orca_harness::procfs::gone;

use crate::{WAIT, binary, wait_exit};

/// A running `orca-worker` process. It dereferences to the harness's handle, whose public
/// fields (`child`, `name`, `work_dir`, `log`) and `pid`/`kill`/`terminate` the tests use.
pub struct WorkerProc(Worker);

impl Deref for WorkerProc {
    type Target = Worker;
    fn deref(&self) -> &Worker {
        &self.0
    }
}

impl DerefMut for WorkerProc {
    fn deref_mut(&mut self) -> &mut Worker {
        &mut self.0
    }
}

impl WorkerProc {
    /// Starts `orca-worker --coordinator URL --name NAME --work-dir DIR/work-NAME ARGS...`,
    /// logging to `DIR/worker-NAME.log`.
    pub fn start(url: &str, dir: &Path, name: &str, args: &[&str]) -> WorkerProc {
        WorkerProc::start_with_env(url, dir, name, args, &[])
    }

    /// [`WorkerProc::start`] with more environment variables.
    pub fn start_with_env(url: &str, dir: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> WorkerProc {
        let mut vars = vec![("WORKER_NAME".to_string(), name.to_string())];
        vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = WorkerConfig {
            binary: binary("orca-worker"),
            coordinator: url.to_string(),
            name: name.to_string(),
            work_dir: dir.join(format!("work-{name}")),
            log: dir.join(format!("worker-{name}.log")),
            args: args.iter().map(|s| s.to_string()).collect(),
            log_filter: "info,orca_worker=debug".into(),
            env: vars,
        };
        WorkerProc(Worker::start(config).unwrap_or_else(|e| panic!("start orca-worker {name}: {e}")))
    }

    /// Its log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until its log contains `needle`.
    pub async fn wait_log(&self, needle: &str) {
        let what = format!("worker {} to log {needle:?}", self.name);
        until(&what, || self.logs().contains(needle)).await;
    }

    /// Waits for its exit (generous bound).
    pub fn wait(&mut self) -> ExitStatus {
        wait_exit(&mut self.child)
    }
}

/// Writes an executable `sh` script `dir/name` with `body` and returns its path.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    orca_harness::shell::write_script(dir, name, body).unwrap_or_else(|e| panic!("write script {name}: {e}"))
}

/// Polls the async `f` every 20 ms until it holds; fails the test after [`WAIT`].
pub async fn until_async<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < WAIT, "timed out after {WAIT:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GET over HTTP/1.1, with `Authorization: Bearer <token>` when given: (status, body).
pub fn http_get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(WAIT)).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, body.to_string())
}

/// Polls `f` every 10 ms until it holds; fails the test after [`WAIT`].
pub async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "timed out after {WAIT:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The lines of a file (none when it does not exist).
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).map(|s| s.lines().map(str::to_string).collect()).unwrap_or_default()
}

/// The pid written in a file.
pub fn read_pid(path: &Path) -> i32 {
    let s = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    s.trim().parse().unwrap_or_else(|e| panic!("{}: {s:?}: {e}", path.display()))
}

/// Waits until every process is gone.
pub async fn until_gone(pids: &[i32]) {
    until(&format!("processes {pids:?} to end"), || pids.iter().all(|p| gone(*p))).await;
}

/// Opens a following WatchJob stream. Progress is only kept for watched jobs, so open it
/// before adding the tasks whose progress the test wants to see.
pub async fn follow(c: &mut OrchestratorClient<Channel>, job: &str) -> tonic::Streaming<pb::JobEvent> {
    c.watch_job(pb::WatchJobRequest { job_id: job.into(), after_seq: 0, follow: true })
        .await
        .expect("watch")
        .into_inner()
}

/// Events of a following stream until `total` tasks are in a final state.
pub async fn until_final(stream: &mut tonic::Streaming<pb::JobEvent>, total: u64) -> Vec<pb::JobEvent> {
    let fut = async {
        let mut all = Vec::new();
        while let Some(ev) = stream.message().await.expect("watch event") {
            let done = ev
                .status
                .as_ref()
                .is_some_and(|s| s.total_tasks == total && s.completed + s.failed + s.cancelled == total);
            all.push(ev);
            if done {
                return all;
            }
        }
        panic!("watch stream ended early");
    };
    tokio::time::timeout(WAIT, fut).await.expect("job did not finish in time")
}

/// Makes sure each named worker is connected: one task per worker, each requiring the
/// worker's `node=NAME` label (so the workers must be started with `--label node=NAME`),
/// and waits for them all to complete.
pub async fn probe(c: &mut OrchestratorClient<Channel>, names: &[&str]) {
    let job = crate::create_job(c, "probe").await;
    let tasks = names
        .iter()
        .map(|n| pb::TaskSpec {
            required_labels: [("node".to_string(), n.to_string())].into_iter().collect(),
            ..crate::spec(&format!("probe {n}"))
        })
        .collect();
    crate::add(c, &job, tasks).await;
    let status = crate::wait_idle(c, &job).await;
    assert_eq!(status.completed, names.len() as u64, "probe tasks: {status:?}");
}
