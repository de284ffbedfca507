//! `orca-chaos`: the chaos run of issue 6. Runs N tasks (with dependency chains, tasks that
//! fail on purpose with their dependents, flaky tasks that fail their first attempt, slow
//! ones) through one `orca-coordinator` and W `orca-worker` processes (`--agent command`
//! running a small sh agent that records every attempt), while SIGKILLing the coordinator K
//! times and workers M times at random moments and restarting each at once (the coordinator
//! on the same database and address). At the end it stops everything and checks, from the
//! SQLite database (read-only, through python3's sqlite3), from the agents' records and from
//! a WatchJob stream kept open the whole run:
//!
//! - every acknowledged task is in the database, with the prompt it was sent with, and final;
//! - a completed task's stored result was produced by an agent run of exactly the attempt the
//!   database holds (the agent prints its attempt), no attempt above it ever ran, no attempt
//!   ran twice, and WatchJob showed at most one completion per task: so a stale attempt's
//!   result accepted after a re-dispatch, or a second accepted completion, is caught;
//! - failures are the deliberate ones or dead letters (`--max-lease-losses`), dependents of
//!   failed tasks are cancelled (and never ran), dependents started after their dependencies'
//!   accepted runs ended;
//! - no agent process (nor supervisor) outlives its worker: after each worker SIGKILL and at
//!   the end (after SIGTERM), no process carries the run's environment tag;
//! - the job's counters match its tasks; `PRAGMA integrity_check` is ok; workers and the
//!   coordinator exit 0 on SIGTERM.
//!
//! Prints the counts and exits 1 on any violation (2 when the run itself could not be done).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use orca_proto::pb;
use pb::orchestrator_client::OrchestratorClient;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "orca-chaos",
    about = "Orca's chaos run: tasks under coordinator and worker SIGKILLs (docs/resilience.md)",
    args_override_self = true
)]
struct Args {
    /// Tasks to submit (acknowledged ones; a batch whose answer was lost is sent again).
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Slots per worker.
    #[arg(long, default_value_t = 8)]
    slots: u32,
    /// SIGKILLs of the coordinator.
    #[arg(long, default_value_t = 10)]
    coordinator_kills: usize,
    /// SIGKILLs of workers.
    #[arg(long, default_value_t = 50)]
    worker_kills: usize,
    /// The coordinator's --lease-seconds.
    #[arg(long, default_value_t = 3)]
    lease_seconds: u32,
    /// The coordinator's --max-lease-losses (dead letter after that many lost leases).
    #[arg(long, default_value_t = 3)]
    max_lease_losses: u32,
    /// The coordinator's --durability.
    #[arg(long, default_value = "full")]
    durability: String,
    /// Tasks per AddTasks batch.
    #[arg(long, default_value_t = 200)]
    batch: usize,
    /// Most tasks submitted but not final at a time (spreads submission over the run, so that
    /// coordinator kills also hit AddTasks calls).
    #[arg(long, default_value_t = 1_000)]
    window: u64,
    /// The workers' --grace-seconds (used by the final SIGTERM).
    #[arg(long, default_value_t = 10)]
    grace_seconds: u64,
    /// Bound on the whole run in seconds (0: 900 + tasks / 20).
    #[arg(long, default_value_t = 0)]
    deadline_seconds: u64,
    /// Seed of the task mix and the kill schedule (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Directory of orca-coordinator and orca-worker (default: this executable's).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Run directory (database, logs, agent records); default a temporary one, kept on failure.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the temporary run directory even when the run passes.
    #[arg(long)]
    keep: bool,
    /// ORCA_LOG of the coordinator and workers.
    #[arg(long, default_value = "info")]
    log: String,
    /// Also print the results as one JSON document on stdout.
    #[arg(long)]
    json: bool,
    /// Negative control: before checking, raise the stored attempt of N completed tasks, as if
    /// the coordinator had accepted a stale attempt's result. The run must then FAIL.
    #[arg(long, default_value_t = 0, hide = true)]
    tamper_fencing: usize,
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/// splitmix64: enough randomness for a schedule, reproducible from the seed.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn frac(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn millis(&mut self, max: u64) -> Duration {
        Duration::from_millis(self.below(max + 1))
    }
}

fn log(start: Instant, msg: &str) {
    eprintln!("orca-chaos [{:7.1}s] {msg}", start.elapsed().as_secs_f64());
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn append(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("open {}", path.display()))
}

fn sigterm(child: &Child) {
    // SAFETY: kill(2) on our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

/// Waits for `child` up to `bound`; None when it is still running.
async fn wait_bounded(child: &mut Child, bound: Duration) -> Option<std::process::ExitStatus> {
    let t0 = Instant::now();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if t0.elapsed() > bound {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Live (not zombie) processes whose environment has `ORCA_CHAOS_TAG` equal to `tag`, or
/// starting with it when `prefix`: (pid, command line).
fn tagged_processes(tag: &str, prefix: bool) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if let Some(t) = proc_tag(pid) {
            let hit = if prefix { t.starts_with(tag) } else { t == tag };
            if hit {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ").trim().to_string();
                out.push((pid, cmd));
            }
        }
    }
    out
}

/// The `ORCA_CHAOS_TAG` of a live process (None for zombies, exited or untagged ones).
fn proc_tag(pid: i32) -> Option<String> {
    proc_env(pid, "ORCA_CHAOS_TAG")
}

fn proc_env(pid: i32, key: &str) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit(')').next()?.split_whitespace().next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let want = format!("{key}=");
    env.split(|b| *b == 0).find_map(|kv| {
        let kv = String::from_utf8_lossy(kv);
        kv.strip_prefix(&want).map(str::to_string)
    })
}

fn decode_hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2).filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()).collect()
}

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Field 1 of an encoded protobuf message when it is a string (TaskSpec.prompt,
/// TaskResult.output); "" when absent. orca-bench has no prost dependency, and this is all the
/// check needs.
fn proto_field1(b: &[u8]) -> Option<String> {
    let mut i = 0;
    while i < b.len() {
        let (key, n) = varint(&b[i..])?;
        i += n;
        match key & 7 {
            0 => i += varint(&b[i..])?.1,
            1 => i += 8,
            5 => i += 4,
            2 => {
                let (len, n) = varint(&b[i..])?;
                i += n;
                let end = i.checked_add(len as usize)?;
                if end > b.len() {
                    return None;
                }
                if key >> 3 == 1 {
                    return Some(String::from_utf8_lossy(&b[i..end]).into_owned());
                }
                i = end;
            }
            _ => return None,
        }
    }
    Some(String::new())
}

async fn client(url: &str) -> Result<OrchestratorClient<Channel>> {
    let ch = Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .connect_lazy();
    Ok(OrchestratorClient::new(ch).max_decoding_message_size(256 << 20).max_encoding_message_size(256 << 20))
}

/// A call that failed this way may be tried again (the coordinator is down or restarting);
/// its effect, for a write, is unknown.
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Aborted
            | Code::ResourceExhausted
    )
}

// ---------------------------------------------------------------------------------------------
// The task mix

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Completes.
    Ok,
    /// Completes; depends on other tasks.
    Dep,
    /// Exits 1 on every attempt, max_retries 0.
    Fail,
    /// Exits 1 on attempt 1 only, max_retries 2.
    Flaky,
    /// Completes after a second.
    Slow,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Ok => "ok",
            Kind::Dep => "dep",
            Kind::Fail => "fail",
            Kind::Flaky => "flaky",
            Kind::Slow => "slow",
        }
    }
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "ok" => Kind::Ok,
            "dep" => Kind::Dep,
            "fail" => Kind::Fail,
            "flaky" => Kind::Flaky,
            "slow" => Kind::Slow,
            _ => return None,
        })
    }
}

struct Planned {
    kind: Kind,
    /// Indices of earlier tasks of the same batch.
    deps: Vec<usize>,
}

/// The batch's layout, the same for every try of the batch.
fn plan_batch(seed: u64, b: usize, size: usize) -> Vec<Planned> {
    let mut rng = Rng::new(seed ^ (b as u64 + 1).wrapping_mul(0x0000_0100_0000_01B3));
    let mut v: Vec<Planned> = Vec::with_capacity(size);
    let p = |kind, deps: &[usize]| Planned { kind, deps: deps.to_vec() };
    while v.len() < size {
        let room = size - v.len();
        let at = v.len();
        let r = rng.below(100);
        if r < 10 && room >= 3 {
            // A chain: a <- b <- c.
            v.extend([p(Kind::Ok, &[]), p(Kind::Dep, &[at]), p(Kind::Dep, &[at + 1])]);
        } else if r < 14 && room >= 5 {
            // A failure and its dependents: all but the first are cancelled.
            v.extend([
                p(Kind::Ok, &[]),
                p(Kind::Fail, &[]),
                p(Kind::Dep, &[at + 1]),
                p(Kind::Dep, &[at + 2]),
                p(Kind::Dep, &[at, at + 1]),
            ]);
        } else if r < 20 && room >= 2 {
            v.extend([p(Kind::Flaky, &[]), p(Kind::Dep, &[at])]);
        } else if r < 22 {
            v.push(p(Kind::Slow, &[]));
        } else {
            v.push(p(Kind::Ok, &[]));
        }
    }
    v
}

fn prompt(b: usize, s: u32, i: usize, kind: Kind) -> String {
    format!("chaos b={b} s={s} i={i} kind={}", kind.name())
}

/// (batch, try, index, kind) of a prompt made by `prompt`.
fn parse_prompt(p: &str) -> Option<(usize, u32, usize, Kind)> {
    let mut it = p.strip_prefix("chaos ")?.split(' ');
    let b = it.next()?.strip_prefix("b=")?.parse().ok()?;
    let s = it.next()?.strip_prefix("s=")?.parse().ok()?;
    let i = it.next()?.strip_prefix("i=")?.parse().ok()?;
    let k = Kind::parse(it.next()?.strip_prefix("kind=")?)?;
    Some((b, s, i, k))
}

fn specs(plan: &[Planned], b: usize, s: u32) -> Vec<pb::TaskSpec> {
    plan.iter()
        .enumerate()
        .map(|(i, p)| {
            let mut spec = pb::TaskSpec {
                prompt: prompt(b, s, i, p.kind),
                depends_on: p.deps.iter().map(|d| -(*d as i64 + 1)).collect(),
                ..Default::default()
            };
            match p.kind {
                Kind::Fail => spec.max_retries = Some(0),
                Kind::Flaky => {
                    spec.max_retries = Some(2);
                    spec.retry_policy =
                        Some(pb::RetryPolicy { initial_backoff_ms: 200, multiplier: 2.0, max_backoff_ms: 1_000 });
                }
                _ => {}
            }
            spec
        })
        .collect()
}

const AGENT: &str = r#"#!/bin/sh
# orca-chaos agent: records each attempt ("start TASK ATTEMPT PID UPTIME", "end ... ok|fail"),
# sleeps a little, fails on purpose when the prompt says so, prints its attempt on success.
R=__RECORDS__
t=$ORCA_TASK_ID
a=$ORCA_ATTEMPT
read up _ < /proc/uptime
echo "start $t $a $$ $up" >> "$R"
case "$ORCA_PROMPT" in
  *kind=slow*) sleep 1 ;;
  *) case $(( (t * 7 + a) % 4 )) in 1) sleep 0.01 ;; 2) sleep 0.03 ;; 3) sleep 0.05 ;; esac ;;
esac
res=ok
case "$ORCA_PROMPT" in
  *kind=fail*) res=fail ;;
  *kind=flaky*) if [ "$a" = 1 ]; then res=fail; fi ;;
esac
read up _ < /proc/uptime
echo "end $t $a $$ $up $res" >> "$R"
if [ "$res" = ok ]; then
  echo "ok task=$t attempt=$a pid=$$"
  exit 0
fi
echo "failing on purpose: task=$t attempt=$a" >&2
exit 1
"#;

// ---------------------------------------------------------------------------------------------
// Processes

struct WorkerProc {
    child: Child,
    tag: String,
}

struct Procs {
    bin_dir: PathBuf,
    dir: PathBuf,
    run_id: String,
    args: Args,
    /// host:port, fixed after the first start.
    addr: String,
    coord: Option<Child>,
    workers: Vec<WorkerProc>,
    generation: u32,
}

impl Procs {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts the coordinator on `listen` and waits until it has bound (the database is loaded
    /// before that); retries while the address is still taken. Returns the time to ready.
    async fn start_coordinator(&mut self, listen: &str) -> Result<Duration> {
        let addr_file = self.dir.join("addr");
        let t0 = Instant::now();
        for _ in 0..100 {
            let _ = std::fs::remove_file(&addr_file);
            let mut child = Command::new(self.bin_dir.join("orca-coordinator"))
                .args(["--listen", listen, "--db"])
                .arg(self.dir.join("orca.db"))
                .arg("--addr-file")
                .arg(&addr_file)
                .args(["--lease-seconds", &self.args.lease_seconds.to_string()])
                .args(["--max-lease-losses", &self.args.max_lease_losses.to_string()])
                .args(["--durability", &self.args.durability])
                .env("ORCA_LOG", &self.args.log)
                .env("NO_COLOR", "1")
                .stdout(Stdio::null())
                .stderr(append(&self.dir.join("coordinator.log"))?)
                .spawn()
                .context("start orca-coordinator")?;
            loop {
                if let Ok(s) = std::fs::read_to_string(&addr_file)
                    && s.ends_with('\n')
                {
                    self.addr = s.trim().to_string();
                    self.coord = Some(child);
                    return Ok(t0.elapsed());
                }
                if child.try_wait()?.is_some() {
                    break;
                }
                if t0.elapsed() > Duration::from_secs(300) {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("the coordinator was not ready after 300 s");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("the coordinator would not start (see {})", self.dir.join("coordinator.log").display())
    }

    fn spawn_worker(&mut self, i: usize) -> Result<WorkerProc> {
        self.generation += 1;
        let tag = format!("{}:w{i}g{}", self.run_id, self.generation);
        let work = self.dir.join("work").join(format!("w{i}"));
        std::fs::create_dir_all(&work)?;
        let agent = format!("sh {}", shell_quote(&self.dir.join("agent.sh").to_string_lossy()));
        let child = Command::new(self.bin_dir.join("orca-worker"))
            .args(["--coordinator", &self.url(), "--slots", &self.args.slots.to_string()])
            .args(["--name", &format!("chaos-w{i}g{}", self.generation)])
            .args(["--agent", "command", "--agent-command", &agent])
            .arg("--work-dir")
            .arg(&work)
            .args(["--grace-seconds", &self.args.grace_seconds.to_string()])
            .env("ORCA_LOG", &self.args.log)
            .env("NO_COLOR", "1")
            .env("ORCA_CHAOS_TAG", &tag)
            .stdout(Stdio::null())
            .stderr(append(&self.dir.join(format!("worker{i}.log")))?)
            .spawn()
            .context("start orca-worker")?;
        Ok(WorkerProc { child, tag })
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
        if let Some(c) = &mut self.coord {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Submission, progress and the watch stream

struct AckedBatch {
    batch: usize,
    try_no: u32,
    ids: Vec<i64>,
    prompts: Vec<String>,
}

#[derive(Default)]
struct Ledger {
    acked: Vec<AckedBatch>,
    /// (batch, try): AddTasks calls without an answer; they may or may not have committed.
    unanswered: Vec<(usize, u32)>,
    create_job_retries: u32,
}

struct Shared {
    acked_tasks: AtomicU64,
    final_tasks: AtomicU64,
    submit_done: AtomicBool,
    /// An AddTasks call is in flight.
    adding: AtomicBool,
    stop: AtomicBool,
    status: std::sync::Mutex<Option<pb::JobStatus>>,
}

async fn create_job(url: &str, ledger: &Mutex<Ledger>) -> Result<String> {
    let mut c = client(url).await?;
    for _ in 0..600 {
        let req = pb::CreateJobRequest { description: "orca-chaos".into(), metadata: None };
        match c.create_job(req).await {
            Ok(j) => return Ok(j.into_inner().job_id),
            Err(s) if retryable(s.code()) => {
                ledger.lock().await.create_job_retries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => bail!("CreateJob: {s}"),
        }
    }
    bail!("CreateJob kept failing")
}

async fn submitter(
    url: String,
    job: String,
    args: Args,
    seed: u64,
    sh: Arc<Shared>,
    ledger: Arc<Mutex<Ledger>>,
) -> Result<()> {
    let mut c = client(&url).await?;
    let mut planned = 0usize;
    let mut b = 0usize;
    while planned < args.tasks {
        let size = args.batch.min(args.tasks - planned);
        let plan = plan_batch(seed, b, size);
        planned += plan.len();
        while sh.acked_tasks.load(Ordering::SeqCst).saturating_sub(sh.final_tasks.load(Ordering::SeqCst)) > args.window
        {
            if sh.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut s = 0u32;
        loop {
            let tasks = specs(&plan, b, s);
            let prompts: Vec<String> = tasks.iter().map(|t| t.prompt.clone()).collect();
            sh.adding.store(true, Ordering::SeqCst);
            let answer = c.add_tasks(pb::AddTasksRequest { job_id: job.clone(), tasks }).await;
            sh.adding.store(false, Ordering::SeqCst);
            match answer {
                Ok(r) => {
                    let ids = r.into_inner().task_ids;
                    if ids.len() != prompts.len() {
                        bail!("AddTasks answered {} ids for {} tasks", ids.len(), prompts.len());
                    }
                    sh.acked_tasks.fetch_add(ids.len() as u64, Ordering::SeqCst);
                    ledger.lock().await.acked.push(AckedBatch { batch: b, try_no: s, ids, prompts });
                    break;
                }
                Err(st) if retryable(st.code()) => {
                    ledger.lock().await.unanswered.push((b, s));
                    s += 1;
                    if s > 3_000 || sh.stop.load(Ordering::SeqCst) {
                        bail!("AddTasks of batch {b} kept failing: {st}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(st) => bail!("AddTasks of batch {b} rejected: {st}"),
            }
        }
        b += 1;
    }
    sh.submit_done.store(true, Ordering::SeqCst);
    Ok(())
}

async fn monitor(url: String, job: String, sh: Arc<Shared>) {
    let Ok(mut c) = client(&url).await else { return };
    while !sh.stop.load(Ordering::SeqCst) {
        if let Ok(j) = c.get_job(pb::GetJobRequest { job_id: job.clone() }).await
            && let Some(s) = j.into_inner().status
        {
            sh.final_tasks.store(s.completed + s.failed + s.cancelled, Ordering::SeqCst);
            *sh.status.lock().unwrap() = Some(s);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[derive(Default)]
struct WatchState {
    /// Last known state of each task (proto numbers).
    state: HashMap<i64, i32>,
    /// Completion events per task and the attempt of the last one.
    completions: HashMap<i64, (u32, u32)>,
    last_seq: u64,
    events: u64,
    snapshots: u64,
    streams: u64,
    violations: Vec<(&'static str, String)>,
}

fn is_final(state: i32) -> bool {
    (4..=6).contains(&state)
}

impl WatchState {
    fn on_event(&mut self, ev: pb::JobEvent) {
        self.events += 1;
        let kind = pb::JobEventKind::try_from(ev.kind).unwrap_or(pb::JobEventKind::Unspecified);
        match kind {
            pb::JobEventKind::Snapshot => {
                self.snapshots += 1;
                if ev.seq < self.last_seq {
                    let msg = format!("snapshot at seq {} after event seq {}", ev.seq, self.last_seq);
                    self.violations.push(("watch: sequence went back", msg));
                }
                for t in &ev.tasks {
                    if let Some(&prev) = self.state.get(&t.task_id)
                        && is_final(prev)
                        && prev != t.state
                    {
                        let msg = format!("task {} was final ({prev}), snapshot says {}", t.task_id, t.state);
                        self.violations.push(("watch: final state changed", msg));
                    }
                    self.state.insert(t.task_id, t.state);
                }
                self.last_seq = self.last_seq.max(ev.seq);
            }
            pb::JobEventKind::TaskState => {
                if ev.seq <= self.last_seq {
                    let msg = format!("event seq {} after seq {} (task {})", ev.seq, self.last_seq, ev.task_id);
                    self.violations.push(("watch: sequence went back", msg));
                }
                self.last_seq = self.last_seq.max(ev.seq);
                if let Some(&prev) = self.state.get(&ev.task_id)
                    && is_final(prev)
                {
                    let msg = format!(
                        "task {} was final ({prev}), then became {} (attempt {})",
                        ev.task_id, ev.state, ev.attempt
                    );
                    self.violations.push(("watch: final state changed", msg));
                }
                self.state.insert(ev.task_id, ev.state);
                if ev.state == pb::TaskState::Completed as i32 {
                    let e = self.completions.entry(ev.task_id).or_insert((0, 0));
                    e.0 += 1;
                    e.1 = ev.attempt;
                }
            }
            _ => self.last_seq = self.last_seq.max(ev.seq),
        }
    }
}

/// Follows the job's events for the whole run, resuming after its last sequence number when
/// the stream breaks (each coordinator kill).
async fn watcher(url: String, job: String, sh: Arc<Shared>, ws: Arc<Mutex<WatchState>>) {
    let Ok(mut c) = client(&url).await else { return };
    while !sh.stop.load(Ordering::SeqCst) {
        let after_seq = ws.lock().await.last_seq;
        let req = pb::WatchJobRequest { job_id: job.clone(), after_seq, follow: true };
        // The channel's 30 s call timeout would end a long stream: give it a client with none.
        if let Ok(resp) = c.watch_job(tonic::Request::new(req)).await {
            ws.lock().await.streams += 1;
            let mut stream = resp.into_inner();
            loop {
                tokio::select! {
                    m = stream.message() => match m {
                        Ok(Some(ev)) => ws.lock().await.on_event(ev),
                        _ => break,
                    },
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {
                        if sh.stop.load(Ordering::SeqCst) { return; }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(nc) = watch_client(&url).await {
            c = nc;
        }
    }
}

async fn watch_client(url: &str) -> Result<OrchestratorClient<Channel>> {
    let ch = Endpoint::from_shared(url.to_string())?.connect_timeout(Duration::from_secs(2)).connect_lazy();
    Ok(OrchestratorClient::new(ch).max_decoding_message_size(256 << 20))
}

// ---------------------------------------------------------------------------------------------
// The run

/// A SIGKILLed worker's tag, the ms until its processes were gone, and those left.
type OrphanCheck = (String, f64, Vec<(i32, String)>);

#[derive(Default)]
struct Figures {
    coordinator_kills: usize,
    worker_kills: usize,
    restart_ms: Vec<f64>,
    /// Final tasks at each kill, as a share of the tasks.
    kill_progress: Vec<f64>,
    /// Per worker kill: (tag, ms until its processes were gone, leftover pids).
    orphan_checks: Vec<OrphanCheck>,
    worker_exit: Vec<String>,
    coordinator_exit: String,
    leftover: Vec<(i32, String)>,
    leftover_recorded: Vec<i32>,
    run_s: f64,
    drain_s: f64,
    timed_out: bool,
}

#[derive(Clone, Copy)]
enum KillWhat {
    Coordinator,
    Worker,
}

async fn run(args: Args, dir: &Path) -> Result<bool> {
    let start = Instant::now();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?.parent().context("exe dir")?.to_path_buf(),
    };
    for b in ["orca-coordinator", "orca-worker"] {
        if !bin_dir.join(b).exists() {
            bail!(
                "{} not found: build it (`cargo build -p orca-coordinator -p orca-worker`)",
                bin_dir.join(b).display()
            );
        }
    }
    if args.workers == 0 || args.tasks == 0 || args.batch == 0 {
        bail!("--workers, --tasks and --batch must be positive");
    }
    let deadline = Duration::from_secs(if args.deadline_seconds > 0 {
        args.deadline_seconds
    } else {
        900 + args.tasks as u64 / 20
    });
    std::fs::create_dir_all(dir)?;
    let records = dir.join("records.log");
    std::fs::write(&records, "")?;
    std::fs::write(dir.join("agent.sh"), AGENT.replace("__RECORDS__", &shell_quote(&records.to_string_lossy())))?;
    let run_id = format!("chaos-{}-{seed:x}", std::process::id());
    log(
        start,
        &format!(
            "seed {seed}; {} tasks, {} workers x {} slots, {} coordinator kills, {} worker kills, lease {} s; dir {}",
            args.tasks,
            args.workers,
            args.slots,
            args.coordinator_kills,
            args.worker_kills,
            args.lease_seconds,
            dir.display()
        ),
    );

    let mut procs = Procs {
        bin_dir,
        dir: dir.to_path_buf(),
        run_id: run_id.clone(),
        args: args.clone(),
        addr: String::new(),
        coord: None,
        workers: Vec::new(),
        generation: 0,
    };
    procs.start_coordinator("127.0.0.1:0").await?;
    let listen = procs.addr.clone();
    let url = procs.url();
    for i in 0..args.workers {
        let w = procs.spawn_worker(i)?;
        procs.workers.push(w);
    }

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let sh = Arc::new(Shared {
        acked_tasks: AtomicU64::new(0),
        final_tasks: AtomicU64::new(0),
        submit_done: AtomicBool::new(false),
        adding: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        status: std::sync::Mutex::new(None),
    });
    let job = create_job(&url, &ledger).await?;
    log(start, &format!("job {job} at {url}"));
    let ws = Arc::new(Mutex::new(WatchState::default()));
    let watch_task = tokio::spawn(watcher(url.clone(), job.clone(), sh.clone(), ws.clone()));
    let monitor_task = tokio::spawn(monitor(url.clone(), job.clone(), sh.clone()));
    let mut submit_task =
        Some(tokio::spawn(submitter(url.clone(), job.clone(), args.clone(), seed, sh.clone(), ledger.clone())));

    // The kill schedule: each kill at a random share (2%-92%) of the tasks being final.
    let mut rng = Rng::new(seed.rotate_left(17));
    let mut schedule: Vec<(u64, KillWhat)> = Vec::new();
    let n = args.tasks as f64;
    for _ in 0..args.coordinator_kills {
        schedule.push(((n * (0.02 + 0.90 * rng.frac())) as u64, KillWhat::Coordinator));
    }
    for _ in 0..args.worker_kills {
        schedule.push(((n * (0.02 + 0.90 * rng.frac())) as u64, KillWhat::Worker));
    }
    schedule.sort_by_key(|k| k.0);

    let mut fig = Figures::default();
    let mut orphan_tasks = Vec::new();
    let mut last_report = Instant::now();
    let mut last_kill = start;
    let progress = |sh: &Shared, fig: &Figures| {
        let s = (*sh.status.lock().unwrap()).unwrap_or_default();
        format!(
            "final {}/{} (waiting {} pending {} running {}), acked {}, kills: coordinator {}/{}, workers {}/{}",
            s.completed + s.failed + s.cancelled,
            s.total_tasks,
            s.waiting,
            s.pending,
            s.in_progress,
            sh.acked_tasks.load(Ordering::SeqCst),
            fig.coordinator_kills,
            args.coordinator_kills,
            fig.worker_kills,
            args.worker_kills
        )
    };
    let mut timeline = append(&dir.join("kills.log"))?;
    let mut i = 0;
    let mut submit_error = None;
    loop {
        if start.elapsed() > deadline {
            fig.timed_out = true;
            log(start, &format!("deadline passed: {}", progress(&sh, &fig)));
            break;
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            log(start, &progress(&sh, &fig));
            last_report = Instant::now();
        }
        if let Some(t) = &submit_task
            && t.is_finished()
            && let Err(e) = submit_task.take().unwrap().await?
        {
            submit_error = Some(e);
            break;
        }
        if i < schedule.len() {
            let (at, what) = schedule[i];
            if sh.final_tasks.load(Ordering::SeqCst) < at {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            tokio::time::sleep(rng.millis(400)).await;
            let share = sh.final_tasks.load(Ordering::SeqCst) as f64 / n;
            fig.kill_progress.push(share);
            match what {
                KillWhat::Coordinator => {
                    // Every other coordinator kill lands while an AddTasks call is in flight
                    // (when one comes within 3 s), so that answers get lost around commits.
                    if fig.coordinator_kills % 2 == 1 && !sh.submit_done.load(Ordering::SeqCst) {
                        let t0 = Instant::now();
                        while !sh.adding.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(3) {
                            tokio::time::sleep(Duration::from_micros(200)).await;
                        }
                        tokio::time::sleep(rng.millis(3)).await;
                    }
                    let during_add = sh.adding.load(Ordering::SeqCst);
                    let mut c = procs.coord.take().context("no coordinator")?;
                    let _ = c.kill();
                    let _ = c.wait();
                    fig.coordinator_kills += 1;
                    tokio::time::sleep(rng.millis(500)).await;
                    let took = procs.start_coordinator(&listen).await?;
                    fig.restart_ms.push(took.as_secs_f64() * 1e3);
                    use std::io::Write;
                    writeln!(
                        timeline,
                        "{:.3} coordinator kill at {:.1}% final{}; up again in {:.0} ms",
                        start.elapsed().as_secs_f64(),
                        share * 100.0,
                        if during_add { " (AddTasks in flight)" } else { "" },
                        took.as_secs_f64() * 1e3
                    )?;
                }
                KillWhat::Worker => {
                    let w = rng.below(args.workers as u64) as usize;
                    let _ = procs.workers[w].child.kill();
                    let _ = procs.workers[w].child.wait();
                    fig.worker_kills += 1;
                    let tag = procs.workers[w].tag.clone();
                    let check_tag = tag.clone();
                    orphan_tasks.push(tokio::task::spawn_blocking(move || {
                        let t0 = Instant::now();
                        loop {
                            let left = tagged_processes(&check_tag, false);
                            if left.is_empty() || t0.elapsed() > Duration::from_secs(10) {
                                return (check_tag, t0.elapsed().as_secs_f64() * 1e3, left);
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }));
                    tokio::time::sleep(rng.millis(300)).await;
                    let fresh = procs.spawn_worker(w)?;
                    procs.workers[w] = fresh;
                    use std::io::Write;
                    writeln!(
                        timeline,
                        "{:.3} worker {w} kill ({tag}) at {:.1}% final",
                        start.elapsed().as_secs_f64(),
                        share * 100.0
                    )?;
                }
            }
            last_kill = Instant::now();
            i += 1;
            continue;
        }
        // Every kill done: wait until everything submitted is final.
        if sh.submit_done.load(Ordering::SeqCst) {
            let s = (*sh.status.lock().unwrap()).unwrap_or_default();
            if s.waiting + s.pending + s.in_progress == 0 && s.total_tasks >= sh.acked_tasks.load(Ordering::SeqCst) {
                // Confirm with a fresh read.
                let mut c = client(&url).await?;
                if let Ok(j) = c.get_job(pb::GetJobRequest { job_id: job.clone() }).await {
                    let s = j.into_inner().status.unwrap_or_default();
                    if s.waiting + s.pending + s.in_progress == 0 {
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fig.run_s = start.elapsed().as_secs_f64();
    fig.drain_s = last_kill.elapsed().as_secs_f64();
    log(start, &format!("done: {}", progress(&sh, &fig)));
    // Let the watch stream see the last events, then stop the helpers.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    sh.stop.store(true, Ordering::SeqCst);
    if let Some(t) = submit_task.take() {
        t.abort();
    }
    let _ = monitor_task.await;
    let _ = tokio::time::timeout(Duration::from_secs(5), watch_task).await;
    for t in orphan_tasks {
        fig.orphan_checks.push(t.await?);
    }

    // Stop the workers politely: they exit 0 and leave nothing behind.
    log(start, "stopping the workers (SIGTERM)");
    for w in &procs.workers {
        sigterm(&w.child);
    }
    let bound = Duration::from_secs(args.grace_seconds + 30);
    for (i, w) in procs.workers.iter_mut().enumerate() {
        match wait_bounded(&mut w.child, bound).await {
            Some(st) if st.success() => {}
            Some(st) => fig.worker_exit.push(format!("worker {i} ({}) exited with {st}", w.tag)),
            None => {
                fig.worker_exit.push(format!(
                    "worker {i} ({}) still running {} s after SIGTERM",
                    w.tag,
                    bound.as_secs()
                ));
                let _ = w.child.kill();
                let _ = w.child.wait();
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    fig.leftover = tagged_processes(&format!("{run_id}:"), true);
    // The recorded agent pids: gone, or reused by a process that is not one of ours.
    if let Ok(f) = std::fs::File::open(&records) {
        let mut seen = HashSet::new();
        for line in BufReader::new(f).lines().map_while(Result::ok) {
            let v: Vec<&str> = line.split(' ').collect();
            if v.len() >= 4
                && v[0] == "start"
                && let Ok(pid) = v[3].parse::<i32>()
                && seen.insert((pid, v[1].to_string()))
                && proc_env(pid, "ORCA_TASK_ID").as_deref() == Some(v[1])
                && proc_tag(pid).is_some_and(|t| t.starts_with(&run_id))
            {
                fig.leftover_recorded.push(pid);
            }
        }
    }
    log(start, "stopping the coordinator (SIGTERM)");
    if let Some(mut c) = procs.coord.take() {
        sigterm(&c);
        fig.coordinator_exit = match wait_bounded(&mut c, Duration::from_secs(60)).await {
            Some(st) if st.success() => String::new(),
            Some(st) => format!("coordinator exited with {st} on SIGTERM"),
            None => {
                let _ = c.kill();
                let _ = c.wait();
                "coordinator still running 60 s after SIGTERM".into()
            }
        };
    }
    drop(procs);
    if let Some(e) = submit_error {
        return Err(e.context("submission failed"));
    }
    let ledger = std::mem::take(&mut *ledger.lock().await);
    let ws = std::mem::take(&mut *ws.lock().await);
    check(&args, dir, &job, &ledger, &ws, &fig, seed)
}

// ---------------------------------------------------------------------------------------------
// The checks

struct DbTask {
    state: i64,
    attempt: u32,
    lost_leases: u32,
    cancel_cause: i64,
    reason: String,
    prompt: String,
    output: Option<String>,
}

/// One agent run from the records.
struct AgentRun {
    attempt: u32,
    start: f64,
    end: Option<(f64, bool)>,
}

const DUMP: &str = r#"
import json, sqlite3, sys
db = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
w = sys.stdout.write
w(json.dumps(["integrity", db.execute("PRAGMA integrity_check").fetchone()[0]]) + "\n")
for r in db.execute("SELECT task_id, job_id, state, attempt, lost_leases, IFNULL(cancel_cause, 0), reason, hex(spec), IFNULL(hex(result), '') FROM tasks WHERE job_id = ? ORDER BY task_id", (sys.argv[2],)):
    w(json.dumps(["task"] + list(r)) + "\n")
for r in db.execute("SELECT d.task_id, d.depends_on FROM task_deps d JOIN tasks t ON t.task_id = d.task_id WHERE t.job_id = ?", (sys.argv[2],)):
    w(json.dumps(["dep"] + list(r)) + "\n")
for r in db.execute("SELECT n_waiting, n_pending, n_in_progress, n_completed, n_failed, n_cancelled FROM jobs WHERE job_id = ?", (sys.argv[2],)):
    w(json.dumps(["job"] + list(r)) + "\n")
"#;

struct Violations(BTreeMap<&'static str, (usize, Vec<String>)>);

impl Violations {
    fn add(&mut self, what: &'static str, example: String) {
        let e = self.0.entry(what).or_insert((0, Vec::new()));
        e.0 += 1;
        if e.1.len() < 5 {
            e.1.push(example);
        }
    }
}

fn check(
    args: &Args,
    dir: &Path,
    job: &str,
    ledger: &Ledger,
    ws: &WatchState,
    fig: &Figures,
    seed: u64,
) -> Result<bool> {
    let mut v = Violations(BTreeMap::new());
    if args.tamper_fencing > 0 {
        let sql = "import sqlite3, sys\ndb = sqlite3.connect(sys.argv[1])\ndb.execute('UPDATE tasks SET attempt = attempt + 1 WHERE task_id IN (SELECT task_id FROM tasks WHERE job_id = ? AND state = 4 ORDER BY task_id LIMIT ?)', (sys.argv[2], int(sys.argv[3])))\ndb.commit()\n";
        let st = Command::new("python3")
            .arg("-c")
            .arg(sql)
            .arg(dir.join("orca.db"))
            .arg(job)
            .arg(args.tamper_fencing.to_string())
            .status()?;
        eprintln!("orca-chaos: TAMPERED with {} completed tasks ({st}); this run must fail", args.tamper_fencing);
    }
    // The database, read-only.
    let out = Command::new("python3")
        .arg("-c")
        .arg(DUMP)
        .arg(dir.join("orca.db"))
        .arg(job)
        .output()
        .context("run python3 (needed to read the database)")?;
    if !out.status.success() {
        bail!("reading the database failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut tasks: BTreeMap<i64, DbTask> = BTreeMap::new();
    let mut deps: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut integrity = String::new();
    let mut counters: Option<Vec<i64>> = None;
    for line in out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let row: Vec<Value> = serde_json::from_slice(line)?;
        let i = |k: usize| row.get(k).and_then(Value::as_i64).unwrap_or(0);
        let s = |k: usize| row.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        match row.first().and_then(Value::as_str) {
            Some("integrity") => integrity = s(1),
            Some("task") => {
                let spec = decode_hex(&s(8));
                let result = s(9);
                tasks.insert(
                    i(1),
                    DbTask {
                        state: i(3),
                        attempt: i(4) as u32,
                        lost_leases: i(5) as u32,
                        cancel_cause: i(6),
                        reason: s(7),
                        prompt: proto_field1(&spec).unwrap_or_default(),
                        output: if result.is_empty() { None } else { proto_field1(&decode_hex(&result)) },
                    },
                );
            }
            Some("dep") => deps.entry(i(1)).or_default().push(i(2)),
            Some("job") => counters = Some((1..=6).map(i).collect()),
            _ => {}
        }
    }
    if integrity != "ok" {
        v.add("database integrity_check", integrity.clone());
    }

    // The agents' records.
    let mut runs: HashMap<i64, Vec<AgentRun>> = HashMap::new();
    let mut malformed = 0usize;
    let text = std::fs::read_to_string(dir.join("records.log"))?;
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let parsed = (|| -> Option<()> {
            let t: i64 = f.get(1)?.parse().ok()?;
            let a: u32 = f.get(2)?.parse().ok()?;
            let up: f64 = f.get(4)?.parse().ok()?;
            match *f.first()? {
                "start" if f.len() == 5 => {
                    runs.entry(t).or_default().push(AgentRun { attempt: a, start: up, end: None })
                }
                "end" if f.len() == 6 => {
                    let r = runs.get_mut(&t)?.iter_mut().rev().find(|r| r.attempt == a && r.end.is_none())?;
                    r.end = Some((up, f[5] == "ok"));
                }
                _ => return None,
            }
            Some(())
        })();
        if parsed.is_none() {
            malformed += 1;
        }
    }
    if malformed > 0 {
        v.add("agent records: malformed or unmatched lines", format!("{malformed} lines"));
    }

    // Acknowledged tasks: present, with their prompt, final.
    let mut acked_ids: HashSet<i64> = HashSet::new();
    let mut acked_tries: HashMap<(usize, u32), &AckedBatch> = HashMap::new();
    let mut lost = 0usize;
    for a in &ledger.acked {
        acked_tries.insert((a.batch, a.try_no), a);
        for (id, p) in a.ids.iter().zip(&a.prompts) {
            acked_ids.insert(*id);
            match tasks.get(id) {
                None => {
                    lost += 1;
                    v.add("lost: acknowledged task not in the database", format!("task {id} ({p})"));
                }
                Some(t) if &t.prompt != p => {
                    lost += 1;
                    v.add(
                        "lost: acknowledged id holds another task",
                        format!("task {id}: sent {p:?}, stored {:?}", t.prompt),
                    );
                }
                Some(t) if !is_final(t.state as i32) => {
                    lost += 1;
                    v.add("lost: acknowledged task not final", format!("task {id} state {} ({p})", t.state));
                }
                _ => {}
            }
        }
    }
    let unanswered: HashSet<(usize, u32)> = ledger.unanswered.iter().copied().collect();

    let max_ll = args.max_lease_losses;
    let end_of_accepted = |id: i64| -> Option<f64> {
        let t = tasks.get(&id)?;
        runs.get(&id)?.iter().find(|r| r.attempt == t.attempt).and_then(|r| r.end.map(|e| e.0))
    };
    let mut doubled: HashSet<i64> = HashSet::new();
    let (mut completed, mut failed_on_purpose, mut dead_lettered, mut failed_other, mut cancelled) = (0, 0, 0, 0, 0);
    let mut unacked_committed = 0usize;
    let (mut attempts, mut lease_losses) = (0u64, 0u64);
    let mut counts = [0i64; 7];
    for (&id, t) in &tasks {
        attempts += u64::from(t.attempt);
        lease_losses += u64::from(t.lost_leases);
        if (1..=6).contains(&t.state) {
            counts[t.state as usize] += 1;
        }
        let Some((b, s, idx, kind)) = parse_prompt(&t.prompt) else {
            v.add("unknown task in the job", format!("task {id}: {:?}", t.prompt));
            continue;
        };
        match acked_tries.get(&(b, s)) {
            Some(a) => {
                if a.ids.get(idx) != Some(&id) {
                    v.add(
                        "duplicate: task of an acknowledged batch under another id",
                        format!("task {id} ({})", t.prompt),
                    );
                }
            }
            None => {
                unacked_committed += 1;
                if !unanswered.contains(&(b, s)) {
                    v.add("task from a call that was never made", format!("task {id} ({})", t.prompt));
                }
                if !is_final(t.state as i32) {
                    v.add("committed (unacknowledged) task not final", format!("task {id} state {}", t.state));
                }
            }
        }
        let my_runs: &[AgentRun] = runs.get(&id).map(Vec::as_slice).unwrap_or(&[]);
        // No attempt above the database's ever ran; no attempt ran twice.
        for r in my_runs {
            if r.attempt > t.attempt || r.attempt == 0 {
                doubled.insert(id);
                v.add(
                    "fencing: an agent ran an attempt the database does not hold",
                    format!("task {id}: ran attempt {}, database attempt {} (state {})", r.attempt, t.attempt, t.state),
                );
            }
        }
        let mut seen_attempts = HashSet::new();
        for r in my_runs {
            if !seen_attempts.insert(r.attempt) {
                doubled.insert(id);
                v.add("fencing: one attempt ran twice", format!("task {id} attempt {}", r.attempt));
            }
        }
        let my_deps = deps.get(&id).map(Vec::as_slice).unwrap_or(&[]);
        let dep_states: Vec<i64> = my_deps.iter().map(|d| tasks.get(d).map(|t| t.state).unwrap_or(0)).collect();
        let dep_broken = dep_states.iter().any(|s| *s == 5 || *s == 6);
        if dep_broken && t.state != 6 {
            v.add("dependent of a failed task not cancelled", format!("task {id} state {} deps {my_deps:?}", t.state));
        }
        match t.state {
            4 => {
                completed += 1;
                if kind == Kind::Fail {
                    v.add("a task that always fails completed", format!("task {id}"));
                }
                if dep_states.iter().any(|s| *s != 4) {
                    v.add(
                        "completed with a dependency not completed",
                        format!("task {id} deps {my_deps:?} {dep_states:?}"),
                    );
                }
                // The accepted result names the attempt that produced it: it must be the
                // attempt the database holds, and an agent must have produced it.
                let out = t.output.clone().unwrap_or_default();
                let field = |k: &str| {
                    out.split_whitespace().find_map(|w| w.strip_prefix(k)).and_then(|x| x.parse::<i64>().ok())
                };
                match (field("task="), field("attempt=")) {
                    (Some(tid), Some(a)) if tid == id && a == i64::from(t.attempt) => {
                        if !my_runs.iter().any(|r| r.attempt == t.attempt && r.end.is_some_and(|e| e.1)) {
                            v.add(
                                "completed without an agent run of that attempt",
                                format!("task {id} attempt {}", t.attempt),
                            );
                        }
                    }
                    (Some(tid), Some(a)) => {
                        doubled.insert(id);
                        v.add(
                            "fencing: accepted result of another attempt",
                            format!("task {id} attempt {}: result says task {tid} attempt {a}", t.attempt),
                        );
                    }
                    _ => v.add("completed without the agent's output", format!("task {id}: {out:?}")),
                }
                // Dependencies ran first.
                for d in my_deps {
                    if let Some(end) = end_of_accepted(*d)
                        && let Some(r) = my_runs.iter().find(|r| r.start < end)
                    {
                        v.add(
                            "a dependent started before its dependency ended",
                            format!("task {id} attempt {} at {} < end of {d} at {end}", r.attempt, r.start),
                        );
                    }
                }
            }
            5 => {
                if t.lost_leases >= max_ll {
                    dead_lettered += 1;
                } else if kind == Kind::Fail {
                    failed_on_purpose += 1;
                    if !my_runs.iter().any(|r| r.attempt == t.attempt && r.end.is_some_and(|e| !e.1)) {
                        v.add(
                            "failed without a failing run of that attempt",
                            format!("task {id} attempt {}", t.attempt),
                        );
                    }
                } else {
                    failed_other += 1;
                    v.add(
                        "unexpected failure",
                        format!("task {id} ({}) attempt {}: {}", t.prompt, t.attempt, t.reason),
                    );
                }
            }
            6 => {
                cancelled += 1;
                if !dep_broken {
                    v.add(
                        "cancelled without a failed dependency",
                        format!("task {id} deps {my_deps:?} {dep_states:?}"),
                    );
                }
                if tasks.get(&t.cancel_cause).is_none_or(|c| c.state != 5) {
                    v.add("cancel_cause is not a failed task", format!("task {id} cause {}", t.cancel_cause));
                }
                if !my_runs.is_empty() {
                    v.add("a cancelled dependent ran", format!("task {id} ran {} times", my_runs.len()));
                }
            }
            // Not final: counted above ("lost" when acknowledged).
            _ => {}
        }
        // The watch stream: at most one completion, of the accepted attempt.
        if let Some(&(n, a)) = ws.completions.get(&id) {
            if n > 1 {
                doubled.insert(id);
                v.add("fencing: completed twice (WatchJob)", format!("task {id}: {n} completion events"));
            }
            if t.state != 4 || a != t.attempt {
                doubled.insert(id);
                v.add(
                    "fencing: WatchJob completion differs from the database",
                    format!("task {id}: event attempt {a}, database state {} attempt {}", t.state, t.attempt),
                );
            }
        }
    }
    for (what, msg) in &ws.violations {
        v.add(what, msg.clone());
    }
    if let Some(c) = &counters {
        let want: Vec<i64> = counts[1..].to_vec();
        if *c != want {
            v.add("job counters differ from the tasks", format!("jobs row {c:?}, tasks {want:?}"));
        }
    } else {
        v.add("job missing from the database", job.to_string());
    }
    let mut orphans = 0usize;
    for (tag, _, left) in &fig.orphan_checks {
        if !left.is_empty() {
            orphans += left.len();
            v.add("processes outlived a SIGKILLed worker (10 s)", format!("{tag}: {left:?}"));
        }
    }
    for (pid, cmd) in &fig.leftover {
        v.add("process left running after the workers stopped", format!("pid {pid}: {cmd}"));
    }
    for pid in &fig.leftover_recorded {
        v.add("recorded agent pid still running", format!("pid {pid}"));
    }
    for e in &fig.worker_exit {
        v.add("worker did not exit 0 on SIGTERM", e.clone());
    }
    if !fig.coordinator_exit.is_empty() {
        v.add("coordinator did not exit 0 on SIGTERM", fig.coordinator_exit.clone());
    }
    if fig.timed_out {
        v.add("run did not finish within the deadline", format!("{:.0} s", fig.run_s));
    }
    if fig.coordinator_kills < args.coordinator_kills || fig.worker_kills < args.worker_kills {
        v.add("not every kill was done", format!("{} + {}", fig.coordinator_kills, fig.worker_kills));
    }

    // Figures.
    let agent_runs: usize = runs.values().map(Vec::len).sum();
    let tasks_run = runs.len();
    let killed_runs: usize = runs.values().flatten().filter(|r| r.end.is_none()).count();
    let repeated_ok = runs.values().filter(|rs| rs.iter().filter(|r| r.end.is_some_and(|e| e.1)).count() > 1).count();
    let re_runs = agent_runs - tasks_run;
    let mut restart = fig.restart_ms.clone();
    restart.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = restart.get(restart.len() / 2).copied().unwrap_or(0.0);
    let max = restart.last().copied().unwrap_or(0.0);
    let clear_max = fig.orphan_checks.iter().map(|c| c.1).fold(0.0, f64::max);
    let leftover = fig.leftover.len() + fig.leftover_recorded.len();
    let kp_min = fig.kill_progress.iter().copied().fold(f64::INFINITY, f64::min);
    let kp_max = fig.kill_progress.iter().copied().fold(0.0, f64::max);
    let acked = acked_ids.len();
    let rows: Vec<(&str, String)> = vec![
        ("tasks in the job (database)", tasks.len().to_string()),
        ("acknowledged", acked.to_string()),
        ("committed without an answer (retried batches)", unacked_committed.to_string()),
        ("AddTasks calls without an answer", ledger.unanswered.len().to_string()),
        ("completed", completed.to_string()),
        ("failed on purpose", failed_on_purpose.to_string()),
        ("failed: dead letter (lost leases)", dead_lettered.to_string()),
        ("failed otherwise", failed_other.to_string()),
        ("cancelled (dependents of failures)", cancelled.to_string()),
        ("coordinator kills", fig.coordinator_kills.to_string()),
        ("worker kills", fig.worker_kills.to_string()),
        ("kills between (share of tasks final)", format!("{:.0}%-{:.0}%", kp_min * 100.0, kp_max * 100.0)),
        ("coordinator restart to ready, median / max", format!("{median:.0} / {max:.0} ms")),
        ("attempts dispatched (sum of attempt)", attempts.to_string()),
        ("agent runs (records)", agent_runs.to_string()),
        ("re-runs (runs beyond the first per task)", re_runs.to_string()),
        ("agent runs killed before their end", killed_runs.to_string()),
        ("tasks whose agent succeeded more than once", repeated_ok.to_string()),
        ("lease losses (sum of lost_leases)", lease_losses.to_string()),
        ("WatchJob events / snapshots / streams", format!("{} / {} / {}", ws.events, ws.snapshots, ws.streams)),
        ("lost", lost.to_string()),
        ("doubled", doubled.len().to_string()),
        ("leftover processes", leftover.to_string()),
        ("orphans after worker kills (max time to clear)", format!("{orphans} ({clear_max:.0} ms)")),
        ("duration (last kill to all final)", format!("{:.1} s ({:.1} s)", fig.run_s, fig.drain_s)),
        ("violations", v.0.values().map(|e| e.0).sum::<usize>().to_string()),
    ];
    println!(
        "\norca-chaos (seed {seed}; {} workers x {} slots, lease {} s)",
        args.workers, args.slots, args.lease_seconds
    );
    for (k, val) in &rows {
        println!("  {k:<48} {val}");
    }
    if !v.0.is_empty() {
        println!("\nVIOLATIONS");
        for (what, (n, ex)) in &v.0 {
            println!("  {what}: {n}");
            for e in ex {
                println!("      {e}");
            }
        }
    }
    if args.json {
        let mut o = serde_json::Map::new();
        for (k, val) in &rows {
            o.insert(k.to_string(), json!(val));
        }
        o.insert("seed".into(), json!(seed));
        let mut viol = serde_json::Map::new();
        for (what, (n, ex)) in &v.0 {
            viol.insert(what.to_string(), json!({"count": n, "examples": ex}));
        }
        o.insert("violation_details".into(), Value::Object(viol));
        println!("{}", serde_json::to_string_pretty(&Value::Object(o))?);
    }
    println!("\norca-chaos: {}", if v.0.is_empty() { "PASS" } else { "FAIL" });
    Ok(v.0.is_empty())
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let tmp = match &args.dir {
        Some(_) => None,
        None => Some(tempfile::Builder::new().prefix("orca-chaos-").tempdir().expect("temporary directory")),
    };
    let dir = args.dir.clone().unwrap_or_else(|| tmp.as_ref().unwrap().path().to_path_buf());
    let keep = args.keep;
    let result = run(args, &dir).await;
    let code = match &result {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("orca-chaos: error: {e:#}");
            2
        }
    };
    if let Some(t) = tmp {
        if code != 0 || keep {
            let p = t.keep();
            eprintln!("orca-chaos: run directory kept: {}", p.display());
        }
    } else {
        eprintln!("orca-chaos: run directory: {}", dir.display());
    }
    std::process::exit(code);
}
