//! `orca-bench`: Orca's benchmark. Starts real `orca-coordinator` processes on fresh SQLite
//! files and real `orca-worker` processes (`--agent noop`, or `--agent command` running
//! `true` for the process cost), and measures:
//!
//! 1. end to end: N no-op tasks through W workers, durable (`synchronous=FULL`);
//! 2. batched enqueue: AddTasks in batches of 1,000;
//! 3. submit-to-start latency on an idle pool at a steady light rate (the bench's own worker
//!    session timestamps each assignment's arrival);
//! 4. scale: dispatch rate with 1,000,000 tasks queued vs an empty queue, restart time, and
//!    the coordinator's peak RSS;
//! 5. 1,000 idle connected worker sessions: coordinator RSS and CPU;
//! 6. small callers: 64 concurrent callers adding one task per AddTasks, and one caller's
//!    sequential AddTasks latency;
//! 7. submit-to-start as a caller sees it: 4 no-op worker processes, tasks added one per
//!    AddTasks at a steady rate, timed from before each AddTasks to its task's `in_progress`
//!    event on a WatchJob stream (the bench is the separate client process);
//! 8. fair share: a job of 100 tasks submitted behind a running job of 100,000 (how long it
//!    takes, and how many of the big job's tasks complete meanwhile), the completion rates of
//!    two jobs of weight 1 and 2, and the end-to-end rate spread over 1,000 jobs.
//!
//! Prints a table (and JSON with `--json`). Not a test: figures depend on the machine. The
//! processes are started and stopped through `orca-harness`; every one started here is
//! stopped (SIGTERM, then reaped) before its part's figures are printed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use orca_harness::procfs::{cpu_time, rss_mib};
use orca_harness::{Coordinator, CoordinatorConfig, Worker, WorkerConfig};
use orca_proto::pb;
use pb::orchestrator_client::OrchestratorClient;
use pb::worker_gateway_client::WorkerGatewayClient;
use serde_json::json;
use tokio::sync::Mutex;
use tonic::transport::{Channel, Endpoint};

/// Bound on a process's exit after SIGTERM.
const STOP_WITHIN: Duration = Duration::from_secs(600);

#[derive(Parser, Debug, Clone)]
#[command(name = "orca-bench", about = "Orca's benchmark (see docs/benchmarks.md)")]
struct Args {
    /// Tasks of the end-to-end and enqueue runs.
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Slots per worker.
    #[arg(long, default_value_t = 512)]
    slots: u32,
    /// Concurrent submitters.
    #[arg(long, default_value_t = 4)]
    submitters: usize,
    /// Tasks of the process-cost run (agent `command` running `true`).
    #[arg(long, default_value_t = 2_000)]
    process_tasks: usize,
    /// Latency run: tasks per second and duration in seconds.
    #[arg(long, default_value_t = 200)]
    latency_rate: u32,
    #[arg(long, default_value_t = 10)]
    latency_seconds: u32,
    /// Queued tasks of the scale run (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    scale_tasks: usize,
    /// Idle worker sessions (0 skips it) and how long to measure them.
    #[arg(long, default_value_t = 1_000)]
    idle_workers: usize,
    #[arg(long, default_value_t = 30)]
    idle_seconds: u64,
    /// Slots per worker in the fair-share run (few, so that the order of dispatch shows in
    /// the order of completion instead of thousands of tasks in flight).
    #[arg(long, default_value_t = 8)]
    fair_slots: u32,
    /// Only run these parts (comma-separated: e2e,process,enqueue,latency,callers,watch,scale,idle,fair).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Directory for databases and logs (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// A coordinator on a fresh database in `dir`, on `127.0.0.1:0`.
fn start_coordinator(dir: &Path) -> Result<Coordinator> {
    start_coordinator_with(dir, &[])
}

fn start_coordinator_with(dir: &Path, args: &[&str]) -> Result<Coordinator> {
    let binary = orca_harness::binary_in(&orca_harness::binary_dir()?, "orca-coordinator")?;
    let config =
        CoordinatorConfig::new(binary, dir).args(args).log_filter("warn").ready_within(Duration::from_secs(600));
    Ok(Coordinator::start(config)?)
}

/// The `orca_dispatcher_stage_seconds` buckets of a `/metrics` page: stage -> [(le, count)].
fn stage_buckets(metrics: &str) -> HashMap<String, Vec<(f64, f64)>> {
    let mut out: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
    for line in metrics.lines().filter(|l| l.starts_with("orca_dispatcher_stage_seconds_bucket{")) {
        let field = |name: &str| {
            let start = line.find(&format!("{name}=\""))? + name.len() + 2;
            let end = start + line[start..].find('"')?;
            Some(&line[start..end])
        };
        let (Some(stage), Some(le)) = (field("stage"), field("le")) else { continue };
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) };
        let n: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        out.entry(stage.to_string()).or_default().push((le, n));
    }
    out
}

/// GET /metrics from `addr`.
fn scrape(addr: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// The p50 and p99 of each stage between two scrapes, as the upper bound (ms) of the bucket
/// that holds them, and the number of samples.
fn stage_quantiles(before: &str, after: &str) -> Vec<(String, f64, f64, f64)> {
    let (b, a) = (stage_buckets(before), stage_buckets(after));
    let mut out = Vec::new();
    for stage in ["queued", "apply", "commit", "send"] {
        let Some(after) = a.get(stage) else { continue };
        let before = b.get(stage).cloned().unwrap_or_default();
        let delta: Vec<(f64, f64)> =
            after.iter().map(|&(le, n)| (le, n - before.iter().find(|(l, _)| *l == le).map_or(0.0, |x| x.1))).collect();
        let total = delta.iter().map(|x| x.1).fold(0.0, f64::max);
        let q = |p: f64| delta.iter().find(|(_, n)| *n >= total * p).map_or(f64::INFINITY, |x| x.0 * 1e3);
        out.push((stage.to_string(), q(0.5), q(0.99), total));
    }
    out
}

/// SIGTERM, and waits for its exit.
fn stop(mut coord: Coordinator) -> Result<()> {
    match coord.terminate(STOP_WITHIN) {
        Some(_) => Ok(()),
        None => bail!("the coordinator did not stop within {STOP_WITHIN:?} of SIGTERM"),
    }
}

/// Worker processes, stopped with SIGTERM (and waited for) when dropped.
struct Workers(Vec<Worker>);

impl Workers {
    fn start(n: usize, slots: u32, url: &str, dir: &Path, agent: &[&str]) -> Result<Workers> {
        let binary = orca_harness::binary_in(&orca_harness::binary_dir()?, "orca-worker")?;
        let slots = slots.to_string();
        let mut v = Vec::new();
        for i in 0..n {
            let args = ["--slots", slots.as_str()].into_iter().chain(agent.iter().copied());
            v.push(Worker::start(WorkerConfig {
                binary: binary.clone(),
                coordinator: url.to_string(),
                name: format!("bench{i}"),
                work_dir: dir.join(format!("work{i}")),
                log: dir.join(format!("worker{i}.log")),
                args: args.map(str::to_string).collect(),
                log_filter: "warn".into(),
                env: Vec::new(),
            })?);
        }
        Ok(Workers(v))
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        orca_harness::process::terminate_all(self.0.iter_mut().map(|w| &mut w.child), STOP_WITHIN);
    }
}

async fn channel(url: &str) -> Result<Channel> {
    Ok(Endpoint::from_shared(url.to_string())?.tcp_nodelay(true).connect().await?)
}

async fn orchestrator(url: &str) -> Result<OrchestratorClient<Channel>> {
    Ok(orca_bench::rpc::orchestrator(channel(url).await?))
}

async fn create_job(c: &mut OrchestratorClient<Channel>, d: &str) -> Result<String> {
    Ok(c.create_job(pb::CreateJobRequest { description: d.into(), metadata: None, ..Default::default() })
        .await?
        .into_inner()
        .job_id)
}

/// Submits `n` tasks in batches with `submitters` concurrent callers; returns the time taken.
async fn submit(url: &str, job: &str, n: usize, batch: usize, submitters: usize) -> Result<Duration> {
    let t0 = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..submitters {
        let mut c = orchestrator(url).await?;
        let job = job.to_string();
        let next = next.clone();
        handles.push(tokio::spawn(async move {
            loop {
                let start = next.fetch_add(batch, std::sync::atomic::Ordering::SeqCst);
                if start >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                let end = (start + batch).min(n);
                let tasks =
                    (start..end).map(|i| pb::TaskSpec { prompt: format!("t{i}"), ..Default::default() }).collect();
                c.add_tasks(pb::AddTasksRequest { job_id: job.clone(), tasks, ..Default::default() }).await?;
            }
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok(t0.elapsed())
}

/// Waits until the job has at least `n` completed tasks; polls GetJob (a one-row read).
async fn wait_completed(c: &mut OrchestratorClient<Channel>, job: &str, n: u64) -> Result<()> {
    let t0 = Instant::now();
    loop {
        let s = c.get_job(pb::GetJobRequest { job_id: job.into() }).await?.into_inner().status.unwrap_or_default();
        if s.completed >= n {
            return Ok(());
        }
        if s.failed + s.cancelled > 0 {
            bail!("tasks failed: {s:?}");
        }
        if t0.elapsed() > Duration::from_secs(3600) {
            bail!("not done after an hour: {s:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs N tasks through W workers; returns tasks per second and the coordinator's peak RSS.
async fn end_to_end(args: &Args, dir: &Path, n: usize, agent: &[&str]) -> Result<(f64, f64)> {
    let coord = start_coordinator(dir)?;
    let url = coord.url();
    let _workers = Workers::start(args.workers, args.slots, &url, dir, agent)?;
    let mut c = orchestrator(&url).await?;
    let job = create_job(&mut c, "bench e2e").await?;
    let t0 = Instant::now();
    let sub = {
        let url = url.clone();
        let job = job.clone();
        let submitters = args.submitters;
        tokio::spawn(async move { submit(&url, &job, n, 1_000, submitters).await })
    };
    wait_completed(&mut c, &job, n as u64).await?;
    let elapsed = t0.elapsed();
    sub.await??;
    let (_, hwm) = rss_mib(coord.pid());
    stop(coord)?;
    Ok((n as f64 / elapsed.as_secs_f64(), hwm))
}

/// Quantiles of samples in milliseconds: (p50, p99, max).
fn quantiles(mut ms: Vec<f64>) -> (f64, f64, f64) {
    if ms.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    ms.sort_by(|x, y| x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal));
    let pct = |p: f64| ms[((ms.len() as f64 * p) as usize).min(ms.len() - 1)];
    (pct(0.50), pct(0.99), ms[ms.len() - 1])
}

/// 64 callers adding one task per call (tasks/s accepted), then one caller's sequential
/// calls (ms per call).
async fn callers(dir: &Path) -> Result<(f64, (f64, f64, f64))> {
    let coord = start_coordinator(dir)?;
    let url = coord.url();
    let mut c = orchestrator(&url).await?;
    let job = create_job(&mut c, "bench callers").await?;
    let n = 20_000;
    let took = submit(&url, &job, n, 1, 64).await?;
    let rate = n as f64 / took.as_secs_f64();
    let mut ms = Vec::with_capacity(2_000);
    for i in 0..2_000 {
        let spec = pb::TaskSpec { prompt: format!("seq-{i}"), ..Default::default() };
        let t0 = Instant::now();
        c.add_tasks(pb::AddTasksRequest { job_id: job.clone(), tasks: vec![spec], ..Default::default() }).await?;
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    stop(coord)?;
    Ok((rate, quantiles(ms)))
}

async fn callers_part(root: &Path, t: &mut Table) -> Result<()> {
    log("small callers: 64 concurrent callers x one task per AddTasks; one caller, sequential");
    let (rate, (p50, p99, max)) = callers(&root.join("callers")).await?;
    t.row("64 callers, one task per AddTasks", format!("{rate:.0} tasks/s"), ">= 20,000 tasks/s");
    t.row("one caller, sequential AddTasks p50", format!("{p50:.2} ms"), "<= 0.8 ms");
    t.row("one caller, sequential AddTasks p99 / max", format!("{p99:.2} / {max:.2} ms"), "");
    t.out["callers"] = json!({"concurrent_tasks_per_s": rate, "sequential_ms": {"p50": p50, "p99": p99, "max": max}});
    Ok(())
}

/// Submit-to-start from a separate client: AddTasks of one task at `--latency-rate` for
/// `--latency-seconds` with 4 no-op workers, each timed from before its call to its
/// `in_progress` event on a following WatchJob stream.
async fn watch_latency(args: &Args, dir: &Path) -> Result<WatchLatency> {
    std::fs::create_dir_all(dir)?;
    let http_file = dir.join("http.addr");
    let coord = start_coordinator_with(
        dir,
        &["--http-listen", "127.0.0.1:0", "--http-addr-file", &http_file.to_string_lossy()],
    )?;
    let http = std::fs::read_to_string(&http_file)?.trim().to_string();
    let url = coord.url();
    let _workers = Workers::start(4, args.slots, &url, dir, &["--agent", "noop"])?;
    let mut c = orchestrator(&url).await?;
    let job = create_job(&mut c, "bench watch latency").await?;
    let mut stream = orchestrator(&url)
        .await?
        .watch_job(pb::WatchJobRequest { job_id: job.clone(), after_seq: 0, follow: true })
        .await?
        .into_inner();
    let total = (args.latency_rate * args.latency_seconds) as usize;
    let watcher = tokio::spawn(async move {
        let mut at: HashMap<i64, Instant> = HashMap::new();
        while at.len() < total {
            let Ok(Some(ev)) = stream.message().await else { break };
            if ev.kind == pb::JobEventKind::TaskState as i32 && ev.state == pb::TaskState::InProgress as i32 {
                at.entry(ev.task_id).or_insert_with(Instant::now);
            }
        }
        at
    });
    let mut started: HashMap<i64, (Instant, Instant)> = HashMap::with_capacity(total);
    let before = scrape(&http)?;
    let interval = Duration::from_secs_f64(1.0 / args.latency_rate as f64);
    let start = Instant::now();
    for i in 0..total {
        tokio::time::sleep_until((start + interval * i as u32).into()).await;
        let spec = pb::TaskSpec { prompt: format!("lat-{i}"), ..Default::default() };
        let t0 = Instant::now();
        let ids = c
            .add_tasks(pb::AddTasksRequest { job_id: job.clone(), tasks: vec![spec], ..Default::default() })
            .await?
            .into_inner()
            .task_ids;
        started.insert(ids[0], (t0, Instant::now()));
    }
    wait_completed(&mut c, &job, total as u64).await?;
    let at = tokio::time::timeout(Duration::from_secs(60), watcher).await??;
    let after = scrape(&http)?;
    let ms = |f: &dyn Fn(&(Instant, Instant), &Instant) -> Duration| -> Vec<f64> {
        started.iter().filter_map(|(id, t)| at.get(id).map(|e| f(t, e).as_secs_f64() * 1e3)).collect()
    };
    let total_ms = ms(&|(t0, _), e| e.saturating_duration_since(*t0));
    let call_ms = ms(&|(t0, reply), _| reply.saturating_duration_since(*t0));
    let event_after_reply_ms = ms(&|(_, reply), e| e.saturating_duration_since(*reply));
    let samples = total_ms.len();
    stop(coord)?;
    Ok(WatchLatency {
        total: quantiles(total_ms),
        call: quantiles(call_ms),
        event_after_reply: quantiles(event_after_reply_ms),
        stages: stage_quantiles(&before, &after),
        samples,
    })
}

/// What the submit-to-start run measured, in ms: (p50, p99, max) each.
struct WatchLatency {
    total: (f64, f64, f64),
    /// The AddTasks call, as the client saw it.
    call: (f64, f64, f64),
    /// From the call's answer to the task's `in_progress` event (negative clamps to 0).
    event_after_reply: (f64, f64, f64),
    /// (stage, p50, p99, samples) from the coordinator's `orca_dispatcher_stage_seconds`.
    stages: Vec<(String, f64, f64, f64)>,
    samples: usize,
}

async fn watch_part(args: &Args, root: &Path, t: &mut Table) -> Result<()> {
    log(&format!(
        "submit-to-start from a client: {} tasks/s for {} s, 4 no-op workers, to the in_progress event",
        args.latency_rate, args.latency_seconds
    ));
    let w = watch_latency(args, &root.join("watch")).await?;
    let (p50, p99, max) = w.total;
    t.row("AddTasks to in_progress event p50", format!("{p50:.2} ms"), "<= 1 ms");
    t.row("AddTasks to in_progress event p99", format!("{p99:.2} ms"), "<= 5 ms");
    t.row("AddTasks to in_progress event max", format!("{max:.2} ms"), "<= 20 ms");
    let (c50, c99, cmax) = w.call;
    t.row("  of which the AddTasks call p50 / p99 / max", format!("{c50:.2} / {c99:.2} / {cmax:.2} ms"), "");
    let (e50, e99, emax) = w.event_after_reply;
    t.row("  then the event after the answer p50 / p99 / max", format!("{e50:.2} / {e99:.2} / {emax:.2} ms"), "");
    for (stage, s50, s99, n) in &w.stages {
        t.row(
            format!("  dispatcher stage {stage} p50 / p99 (bucket bound)"),
            format!("<= {s50} / <= {s99} ms ({n} samples)"),
            "",
        );
    }
    t.out["watch_latency_ms"] = json!({"p50": p50, "p99": p99, "max": max, "samples": w.samples,
        "call": {"p50": c50, "p99": c99, "max": cmax}, "event_after_reply": {"p50": e50, "p99": e99, "max": emax},
        "stages": w.stages.iter().map(|(s, a, b, n)| json!({"stage": s, "p50_le_ms": a, "p99_le_ms": b, "samples": n})).collect::<Vec<_>>()});
    Ok(())
}

/// A job's completed count.
async fn completed(c: &mut OrchestratorClient<Channel>, job: &str) -> Result<u64> {
    Ok(c.get_job(pb::GetJobRequest { job_id: job.into() }).await?.into_inner().status.unwrap_or_default().completed)
}

/// What the fair-share run measured.
struct Fair {
    small_seconds: f64,
    big_ran_meanwhile: u64,
    weight_ratio: f64,
    many_jobs_rate: f64,
}

async fn fairness(args: &Args, dir: &Path) -> Result<Fair> {
    let coord = start_coordinator(dir)?;
    let url = coord.url();
    let _workers = Workers::start(args.workers, args.fair_slots, &url, dir, &["--agent", "noop"])?;
    let mut c = orchestrator(&url).await?;
    // A small job behind a big one at the same priority.
    let big = create_job(&mut c, "bench big").await?;
    submit(&url, &big, 100_000, 10_000, 1).await?;
    wait_completed(&mut c, &big, 1_000).await?;
    let small = create_job(&mut c, "bench small").await?;
    let t0 = Instant::now();
    submit(&url, &small, 100, 100, 1).await?;
    let before = completed(&mut c, &big).await?;
    wait_completed(&mut c, &small, 100).await?;
    let small_seconds = t0.elapsed().as_secs_f64();
    let big_ran_meanwhile = completed(&mut c, &big).await? - before;
    c.cancel_job(pb::CancelJobRequest { job_id: big, reason: String::new() }).await?;
    // Weights 1 and 2, both with 40,000 tasks queued: rates while both have work.
    let one = create_job(&mut c, "bench weight 1").await?;
    let req = pb::CreateJobRequest { description: "bench weight 2".into(), weight: 2, ..Default::default() };
    let two = c.create_job(req).await?.into_inner().job_id;
    submit(&url, &one, 40_000, 10_000, 1).await?;
    submit(&url, &two, 40_000, 10_000, 1).await?;
    wait_completed(&mut c, &two, 5_000).await?;
    let (a0, b0) = (completed(&mut c, &one).await?, completed(&mut c, &two).await?);
    wait_completed(&mut c, &two, 30_000).await?;
    let (a1, b1) = (completed(&mut c, &one).await?, completed(&mut c, &two).await?);
    let weight_ratio = (b1 - b0) as f64 / (a1 - a0).max(1) as f64;
    c.cancel_job(pb::CancelJobRequest { job_id: one, reason: String::new() }).await?;
    c.cancel_job(pb::CancelJobRequest { job_id: two, reason: String::new() }).await?;
    stop(coord)?;
    let many_jobs_rate = many_jobs(args, &dir.join("many")).await?;
    Ok(Fair { small_seconds, big_ran_meanwhile, weight_ratio, many_jobs_rate })
}

/// The end-to-end rate with the work spread over 1,000 jobs of 100 tasks, submitted by
/// `--submitters` concurrent callers (the e2e run's shape, with 1,000 flows to share).
async fn many_jobs(args: &Args, dir: &Path) -> Result<f64> {
    let coord = start_coordinator(dir)?;
    let url = coord.url();
    let _workers = Workers::start(args.workers, args.slots, &url, dir, &["--agent", "noop"])?;
    let mut c = orchestrator(&url).await?;
    let mut jobs = Vec::with_capacity(1_000);
    for i in 0..1_000 {
        jobs.push(create_job(&mut c, &format!("bench many {i}")).await?);
    }
    let t0 = Instant::now();
    let mut subs = Vec::new();
    for part in jobs.chunks(jobs.len().div_ceil(args.submitters.max(1))) {
        let (url, part) = (url.clone(), part.to_vec());
        subs.push(tokio::spawn(async move {
            for j in &part {
                submit(&url, j, 100, 100, 1).await?;
            }
            anyhow::Ok(())
        }));
    }
    for s in subs {
        s.await??;
    }
    // Every job's tasks done: the fleet's count (one call, not one per job).
    loop {
        let s = c.get_stats(pb::GetStatsRequest {}).await?.into_inner().tasks.unwrap_or_default();
        if s.completed >= 100_000 {
            break;
        }
        if s.failed + s.cancelled > 0 || t0.elapsed() > Duration::from_secs(3_600) {
            bail!("the 1,000 jobs did not complete: {s:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = 100_000.0 / t0.elapsed().as_secs_f64();
    stop(coord)?;
    Ok(rate)
}

async fn fair_part(args: &Args, root: &Path, t: &mut Table) -> Result<()> {
    log(&format!(
        "fair share ({} workers x {} slots): 100 tasks behind 100,000; weights 1 and 2; 1,000 jobs of 100",
        args.workers, args.fair_slots
    ));
    let f = fairness(args, &root.join("fair")).await?;
    t.row("100 tasks behind a running 100,000: done in", format!("{:.2} s", f.small_seconds), "");
    t.row("  the big job's completions meanwhile", format!("{}", f.big_ran_meanwhile), "< 1,000");
    t.row("weight 2 : weight 1 completion rate", format!("{:.2}", f.weight_ratio), "about 2");
    t.row("end to end over 1,000 jobs of 100", format!("{:.0} tasks/s", f.many_jobs_rate), "(vs one job)");
    t.out["fair"] = json!({"small_seconds": f.small_seconds, "big_ran_meanwhile": f.big_ran_meanwhile,
                           "weight_ratio": f.weight_ratio, "many_jobs_tasks_per_s": f.many_jobs_rate});
    Ok(())
}

async fn enqueue(args: &Args, dir: &Path) -> Result<f64> {
    let coord = start_coordinator(dir)?;
    let mut c = orchestrator(&coord.url()).await?;
    let job = create_job(&mut c, "bench enqueue").await?;
    let took = submit(&coord.url(), &job, args.tasks, 1_000, args.submitters).await?;
    stop(coord)?;
    Ok(args.tasks as f64 / took.as_secs_f64())
}

/// The bench's own worker session: timestamps each assignment's arrival by prompt.
async fn latency(args: &Args, dir: &Path) -> Result<(f64, f64, f64, usize)> {
    let coord = start_coordinator(dir)?;
    let url = coord.url();
    let mut gw = WorkerGatewayClient::new(channel(&url).await?);
    let reg = gw
        .register(pb::RegisterRequest { name: "latency".into(), slots: 256, ..Default::default() })
        .await?
        .into_inner();
    let mut stream =
        gw.listen(pb::ListenRequest { worker_id: reg.worker_id.clone(), ..Default::default() }).await?.into_inner();
    let arrivals: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
    let arr = arrivals.clone();
    let wid = reg.worker_id.clone();
    let mut gw2 = gw.clone();
    let receiver = tokio::spawn(async move {
        while let Ok(Some(msg)) = stream.message().await {
            let now = Instant::now();
            let mut reports = Vec::new();
            {
                let mut a = arr.lock().await;
                for asg in &msg.assignments {
                    if let Some(i) =
                        asg.spec.as_ref().and_then(|s| s.prompt.strip_prefix("lat-")).and_then(|v| v.parse().ok())
                    {
                        a.insert(i, now);
                    }
                    reports.push(pb::Report {
                        task_id: asg.task_id,
                        attempt: asg.attempt,
                        body: Some(pb::report::Body::Completed(pb::Completed::default())),
                        ..Default::default()
                    });
                }
            }
            let _ = gw2.report(pb::ReportRequest { worker_id: wid.clone(), reports }).await;
        }
    });
    let mut c = orchestrator(&url).await?;
    let job = create_job(&mut c, "bench latency").await?;
    let total = (args.latency_rate * args.latency_seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / args.latency_rate as f64);
    let mut sent: Vec<Instant> = Vec::with_capacity(total);
    let start = Instant::now();
    for i in 0..total {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        sent.push(Instant::now());
        let spec = pb::TaskSpec { prompt: format!("lat-{i}"), ..Default::default() };
        c.add_tasks(pb::AddTasksRequest { job_id: job.clone(), tasks: vec![spec], ..Default::default() }).await?;
    }
    wait_completed(&mut c, &job, total as u64).await?;
    receiver.abort();
    let a = arrivals.lock().await;
    let lat: Vec<f64> =
        (0..total).filter_map(|i| a.get(&i).map(|t| t.duration_since(sent[i]).as_secs_f64() * 1e3)).collect();
    let n = lat.len();
    let (p50, p99, max) = quantiles(lat);
    let r = (p50, p99, max, n);
    drop(a);
    stop(coord)?;
    Ok(r)
}

struct Scale {
    enqueue_per_s: f64,
    full_rate: f64,
    restart: Duration,
    peak_rss: f64,
}

async fn scale(args: &Args, dir: &Path, sample: usize) -> Result<Scale> {
    let coord = start_coordinator(dir)?;
    let url = coord.url();
    let mut c = orchestrator(&url).await?;
    let job = create_job(&mut c, "bench scale").await?;
    let took = submit(&url, &job, args.scale_tasks, 10_000, args.submitters).await?;
    let (_, hwm_before) = rss_mib(coord.pid());
    stop(coord)?;
    let coord = start_coordinator(dir)?;
    let restart = coord.ready_in;
    let url = coord.url();
    let mut c = orchestrator(&url).await?;
    let _workers = Workers::start(args.workers, args.slots, &url, dir, &["--agent", "noop"])?;
    // The dispatch rate with the queue full: the first `sample` completions.
    let t0 = Instant::now();
    wait_completed(&mut c, &job, sample as u64).await?;
    let rate = sample as f64 / t0.elapsed().as_secs_f64();
    let (_, hwm_after) = rss_mib(coord.pid());
    drop(_workers);
    stop(coord)?;
    Ok(Scale {
        enqueue_per_s: args.scale_tasks as f64 / took.as_secs_f64(),
        full_rate: rate,
        restart,
        peak_rss: hwm_before.max(hwm_after),
    })
}

async fn idle(args: &Args, dir: &Path) -> Result<(f64, f64, f64)> {
    let coord = start_coordinator(dir)?;
    let url = coord.url();
    let (rss0, _) = rss_mib(coord.pid());
    // One process, many sessions: 10 sessions share each HTTP/2 connection.
    let mut channels = Vec::new();
    for _ in 0..args.idle_workers.div_ceil(10) {
        channels.push(channel(&url).await?);
    }
    let mut tasks = Vec::new();
    for i in 0..args.idle_workers {
        let mut gw = WorkerGatewayClient::new(channels[i / 10].clone());
        let reg = gw
            .register(pb::RegisterRequest { name: format!("idle{i}"), slots: 4, ..Default::default() })
            .await?
            .into_inner();
        let mut stream =
            gw.listen(pb::ListenRequest { worker_id: reg.worker_id.clone(), ..Default::default() }).await?.into_inner();
        let every = Duration::from_secs(reg.heartbeat_interval_seconds.max(1) as u64);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    m = stream.message() => if !matches!(m, Ok(Some(_))) { return },
                    _ = tick.tick() => {
                        let _ = gw.heartbeat(pb::HeartbeatRequest { worker_id: reg.worker_id.clone(), running: vec![] }).await;
                    }
                }
            }
        }));
    }
    // Let the registrations settle, then measure a steady window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu0 = cpu_time(coord.pid());
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let cpu = (cpu_time(coord.pid()) - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0;
    let (rss, _) = rss_mib(coord.pid());
    for t in tasks {
        t.abort();
    }
    stop(coord)?;
    Ok((rss0, rss, cpu))
}

fn wants(args: &Args, part: &str) -> bool {
    args.only.is_empty() || args.only.iter().any(|p| p == part)
}

/// The printed table (figure, measured, bar) and the JSON document.
struct Table {
    rows: Vec<(String, String, String)>,
    out: serde_json::Value,
}

impl Table {
    fn row(&mut self, figure: impl Into<String>, measured: String, bar: &str) {
        self.rows.push((figure.into(), measured, bar.into()));
    }
}

fn log(s: &str) {
    eprintln!("orca-bench: {s}");
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let root = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut t = Table {
        rows: Vec::new(),
        out: json!({"cores": cores, "tasks": args.tasks, "workers": args.workers, "slots": args.slots}),
    };
    let mut empty_rate = None;
    if wants(&args, "e2e") {
        log(&format!("end to end: {} no-op tasks, {} workers x {} slots", args.tasks, args.workers, args.slots));
        let (rate, hwm) = end_to_end(&args, &root.join("e2e"), args.tasks, &["--agent", "noop"]).await?;
        empty_rate = Some(rate);
        t.row("end to end, no-op, durable", format!("{rate:.0} tasks/s"), ">= 20,000 tasks/s");
        t.out["e2e_tasks_per_s"] = json!(rate);
        t.out["e2e_coordinator_peak_rss_mib"] = json!(hwm);
    }
    if wants(&args, "process") && args.process_tasks > 0 {
        log(&format!("process cost: {} tasks spawning `true`", args.process_tasks));
        let agent = ["--agent", "command", "--agent-command", "true"];
        let (rate, _) = end_to_end(&args, &root.join("process"), args.process_tasks, &agent).await?;
        t.row("end to end, spawning `true`", format!("{rate:.0} tasks/s"), "(process cost)");
        t.out["process_tasks_per_s"] = json!(rate);
    }
    if wants(&args, "enqueue") {
        log(&format!("batched enqueue: {} tasks in batches of 1,000", args.tasks));
        let rate = enqueue(&args, &root.join("enqueue")).await?;
        t.row("batched enqueue (1,000/batch)", format!("{rate:.0} tasks/s"), ">= 100,000 tasks/s");
        t.out["enqueue_tasks_per_s"] = json!(rate);
    }
    if wants(&args, "latency") {
        log(&format!("latency: {} tasks/s for {} s", args.latency_rate, args.latency_seconds));
        let (p50, p99, max, n) = latency(&args, &root.join("latency")).await?;
        t.row("submit-to-start p50", format!("{p50:.2} ms"), "<= 1 ms");
        t.row("submit-to-start p99", format!("{p99:.2} ms"), "<= 5 ms");
        t.row("submit-to-start max", format!("{max:.2} ms"), "");
        t.out["latency_ms"] = json!({"p50": p50, "p99": p99, "max": max, "samples": n});
    }
    if wants(&args, "callers") {
        callers_part(&root, &mut t).await?;
    }
    if wants(&args, "watch") {
        watch_part(&args, &root, &mut t).await?;
    }
    if wants(&args, "fair") {
        fair_part(&args, &root, &mut t).await?;
    }
    if wants(&args, "scale") && args.scale_tasks > 0 {
        scale_part(&args, &root, empty_rate, &mut t).await?;
    }
    if wants(&args, "idle") && args.idle_workers > 0 {
        idle_part(&args, &root, &mut t).await?;
    }
    println!("orca-bench on {cores} cores ({} workers x {} slots)\n", args.workers, args.slots);
    println!("| figure | measured | bar |\n| --- | --- | --- |");
    for (a, b, c) in &t.rows {
        println!("| {a} | {b} | {c} |");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&t.out)?);
    }
    Ok(())
}

/// The scale figures, against the empty-queue rate (measured here when e2e did not run).
async fn scale_part(args: &Args, root: &Path, empty_rate: Option<f64>, t: &mut Table) -> Result<()> {
    let sample = args.tasks.min(args.scale_tasks);
    log(&format!("scale: {} queued tasks, dispatch of the first {sample}", args.scale_tasks));
    let s = scale(args, &root.join("scale"), sample).await?;
    let base = match empty_rate {
        Some(r) => r,
        None => end_to_end(args, &root.join("e2e-base"), sample, &["--agent", "noop"]).await?.0,
    };
    let ratio = s.full_rate / base;
    t.row(
        format!("enqueue of {} tasks (10,000/batch)", s_num(args.scale_tasks)),
        format!("{:.0} tasks/s", s.enqueue_per_s),
        "",
    );
    t.row(
        "dispatch with the queue full",
        format!("{:.0} tasks/s ({:.0}% of empty)", s.full_rate, ratio * 100.0),
        "within 20% of empty",
    );
    t.row("restart on that database", format!("{:.2} s", s.restart.as_secs_f64()), "< 5 s");
    t.row("coordinator peak RSS", format!("{:.0} MiB", s.peak_rss), "< 500 MB");
    t.out["scale"] = json!({"queued": args.scale_tasks, "enqueue_tasks_per_s": s.enqueue_per_s, "full_queue_tasks_per_s": s.full_rate,
                            "empty_queue_tasks_per_s": base, "ratio": ratio, "restart_s": s.restart.as_secs_f64(), "peak_rss_mib": s.peak_rss});
    Ok(())
}

async fn idle_part(args: &Args, root: &Path, t: &mut Table) -> Result<()> {
    log(&format!("idle: {} worker sessions for {} s", args.idle_workers, args.idle_seconds));
    let (rss0, rss, cpu) = idle(args, &root.join("idle")).await?;
    t.row(format!("{} idle workers: RSS", args.idle_workers), format!("{rss:.0} MiB (empty {rss0:.0})"), "< 200 MB");
    t.row(format!("{} idle workers: CPU", args.idle_workers), format!("{cpu:.2}% of a core"), "< 10%");
    t.out["idle"] = json!({"sessions": args.idle_workers, "rss_mib": rss, "empty_rss_mib": rss0, "cpu_pct": cpu});
    Ok(())
}

fn s_num(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
