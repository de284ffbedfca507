//! `orca up`: a coordinator on a local SQLite file and N local workers in this one process,
//! in the foreground until SIGINT or SIGTERM; `orca up --demo` also runs a sample job (tasks
//! with priorities and dependencies, then a synthesis step), prints the report and exits.
//!
//! Shutdown keeps the binaries' own order: the workers drain first (running tasks finish; a
//! second signal stops them at once), then the coordinator stops accepting, flushes and
//! returns. Everything acknowledged is already committed, so nothing is lost either way.
//!
//! The workers run their agents through the same supervisor as `orca-worker`: this binary
//! answers `orca __orca_supervise ...` (see `main`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser};
use orca_client::{Client, Destination, Subtask};
use orca_worker::config::AgentKind;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Failure;

/// The flags of `orca up`.
#[derive(Args)]
pub struct UpArgs {
    /// gRPC address to serve [default: 127.0.0.1:50051; with --demo a free port].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// SQLite database, created if missing [default: orca.db; with --demo a temporary one].
    #[arg(long)]
    db: Option<PathBuf>,
    /// After binding, write the bound host:port here.
    #[arg(long)]
    addr_file: Option<PathBuf>,
    /// Local workers to run.
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// Tasks each worker runs at once.
    #[arg(long, default_value_t = 2)]
    slots: u32,
    /// What runs a task [default: claude when it is on PATH, otherwise demo].
    #[arg(long, value_enum)]
    agent: Option<AgentKind>,
    /// With --agent command: the command template (see orca-worker --help).
    #[arg(long)]
    agent_command: Option<String>,
    /// Where the workers make task workspaces [default: a temporary directory].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Also serve /metrics, /healthz and the web dashboard on this address (e.g.
    /// 127.0.0.1:8080; port 0 picks one; the URL is printed).
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// Git repositories the local workers may work on (repeatable; see orca-worker
    /// --allow-repo); local paths also need --allow-dir.
    #[arg(long = "allow-repo", value_name = "PATTERN")]
    allow_repos: Vec<String>,
    /// Roots under which the local workers use a task's working_dir (or a local git
    /// repository) in place (repeatable).
    #[arg(long = "allow-dir", value_name = "DIR")]
    allow_dirs: Vec<PathBuf>,
    /// Submit a sample job, show its progress, print the report, then stop.
    #[arg(long)]
    demo: bool,
}

/// Runs `orca up`.
pub async fn run(args: UpArgs) -> Result<ExitCode, Failure> {
    let scratch = tempfile::Builder::new().prefix("orca-up-").tempdir().map_err(|e| io("a temporary directory", e))?;
    let (agent, why) = match args.agent {
        Some(a) => (a, "as asked"),
        None if orca_worker::agent::find_program("claude").is_some() => (AgentKind::Claude, "claude is on PATH"),
        None => (AgentKind::Demo, "claude is not on PATH; the demo agent calls no model"),
    };
    let listen = args.listen.unwrap_or_else(|| {
        let port = if args.demo { 0 } else { 50051 };
        SocketAddr::from(([127, 0, 0, 1], port))
    });
    let db = match (&args.db, args.demo) {
        (Some(p), _) => p.clone(),
        (None, true) => scratch.path().join("orca.db"),
        (None, false) => PathBuf::from("orca.db"),
    };

    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let http_file = scratch.path().join("http.addr");
    let http = args.http_listen.map(|a| (a, http_file.as_path()));
    let coordinator = tokio::spawn(orca_coordinator::run_with_ready(
        coordinator_config(listen, &db, args.addr_file.as_deref(), http),
        shutdown.clone(),
        Some(ready_tx),
    ));
    let Ok(addr) = ready_rx.await else {
        let err = match coordinator.await {
            Ok(Err(e)) => e.to_string(),
            Ok(Ok(())) => "it stopped before serving".into(),
            Err(e) => e.to_string(),
        };
        return Err(Failure::Up(format!("the coordinator did not start: {err}")));
    };
    // Bound to every address (0.0.0.0): the local workers and the printed URL use loopback.
    let addr = if addr.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], addr.port())) } else { addr };
    let url = format!("http://{addr}");
    let work_dir = args.work_dir.clone().unwrap_or_else(|| scratch.path().join("work"));
    let mut signals = Vec::new();
    let mut workers = Vec::new();
    for i in 0..args.workers {
        let config = worker_config(&url, i, &args, agent, &work_dir.join(format!("w{i}")))?;
        let (tx, rx) = mpsc::channel(4);
        signals.push(tx);
        workers.push(tokio::spawn(orca_worker::run_with_signals(config, rx)));
    }
    println!(
        "Orca is up at {url} (database {}, {} workers x {} slots, agent {}: {why})",
        db.display(),
        args.workers,
        args.slots,
        agent.name()
    );
    if args.http_listen.is_some() {
        // Bound (and written) before the coordinator said it was ready.
        let bound = std::fs::read_to_string(&http_file).map_err(|e| io("the dashboard's address", e))?;
        println!("Dashboard: http://{}/", bound.trim());
    }

    let code = if args.demo {
        let client = Client::connect(&url).await?;
        demo(&client).await?
    } else {
        println!("In another terminal: export ORCA_COORDINATOR={url}; orca submit 'Say hello'; orca jobs");
        println!("Ctrl-C stops it (running tasks finish first).");
        tokio::select! {
            _ = wait_for_signal() => {
                eprintln!("orca up: stopping: the workers finish their running tasks (Ctrl-C again to stop them now)");
            }
            // The coordinator stopped on its own (a failed commit): stop the rest, say why.
            _ = shutdown.cancelled() => eprintln!("orca up: the coordinator stopped; stopping the workers"),
        }
        ExitCode::SUCCESS
    };
    stop(signals, workers, shutdown, coordinator).await?;
    Ok(code)
}

/// The coordinator's configuration: its own defaults and environment, with this command's
/// address and database.
fn coordinator_config(
    listen: SocketAddr,
    db: &Path,
    addr_file: Option<&Path>,
    http: Option<(SocketAddr, &Path)>,
) -> orca_coordinator::Config {
    let mut argv = vec!["orca-coordinator".to_string(), "--listen".into(), listen.to_string()];
    argv.extend(["--db".into(), db.display().to_string()]);
    if let Some(f) = addr_file {
        argv.extend(["--addr-file".into(), f.display().to_string()]);
    }
    if let Some((at, file)) = http {
        argv.extend(["--http-listen".into(), at.to_string(), "--http-addr-file".into(), file.display().to_string()]);
    }
    orca_coordinator::Config::parse_from(argv)
}

/// One local worker's configuration, checked like `orca-worker`'s flags.
fn worker_config(
    url: &str,
    i: u32,
    args: &UpArgs,
    agent: AgentKind,
    work_dir: &Path,
) -> Result<orca_worker::config::Config, Failure> {
    let mut argv = vec!["orca-worker".to_string(), "--coordinator".into(), url.into()];
    argv.extend(["--slots".into(), args.slots.to_string(), "--agent".into(), agent.name().into()]);
    argv.extend(["--name".into(), format!("up-{i}"), "--work-dir".into(), work_dir.display().to_string()]);
    if let Some(c) = &args.agent_command {
        argv.extend(["--agent-command".into(), c.clone()]);
    }
    for r in &args.allow_repos {
        argv.extend(["--allow-repo".into(), r.clone()]);
    }
    for d in &args.allow_dirs {
        argv.extend(["--allow-dir".into(), d.display().to_string()]);
    }
    let parsed = orca_worker::Args::try_parse_from(argv).map_err(|e| Failure::Up(e.to_string()))?;
    parsed.validate().map_err(|e| Failure::Up(format!("worker {i}: {e}")))
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Drains the workers (a second signal meanwhile stops them at once), then stops the
/// coordinator.
async fn stop(
    signals: Vec<mpsc::Sender<orca_worker::session::Signal>>,
    workers: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
    shutdown: CancellationToken,
    coordinator: tokio::task::JoinHandle<Result<(), orca_coordinator::StartError>>,
) -> Result<(), Failure> {
    for s in &signals {
        let _ = s.send(orca_worker::session::Signal::Terminate).await;
    }
    let again = signals.clone();
    let forward = tokio::spawn(async move {
        wait_for_signal().await;
        for s in &again {
            let _ = s.send(orca_worker::session::Signal::Terminate).await;
        }
    });
    for w in workers {
        match w.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("orca up: a worker failed: {e}"),
            Err(e) => eprintln!("orca up: a worker panicked: {e}"),
        }
    }
    forward.abort();
    shutdown.cancel();
    match coordinator.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Failure::Up(format!("the coordinator failed: {e}"))),
        Err(e) => Err(Failure::Up(format!("the coordinator panicked: {e}"))),
    }
}

fn io(what: &str, e: std::io::Error) -> Failure {
    Failure::Up(format!("cannot make {what}: {e}"))
}

/// The sample job: an API built in parallel steps with dependencies, then a synthesis task
/// over the results. Files land in a new project directory, which is kept.
async fn demo(client: &Client) -> Result<ExitCode, Failure> {
    // The project outlives the command, so its files can be looked at.
    let project =
        tempfile::Builder::new().prefix("orca-demo-").tempdir().map_err(|e| io("the demo project", e))?.keep();
    let dir = project.display().to_string();
    let job = client.create_job("Orca demo: a small task-management API").await?;
    let task = |name: &str, prompt: &str, priority: i32, output: &str| {
        Subtask::new(prompt).name(name).priority(priority).expected_output(output).working_dir(&dir)
    };
    let tasks = vec![
        task("server", "Create an Express.js server with the basic setup", 10, "server.js"),
        task("list", "Implement GET /tasks to list every task", 8, "routes/list.js").after_batch(1),
        task("create", "Implement POST /tasks to create a task", 8, "routes/create.js").after_batch(1),
        task("delete", "Implement DELETE /tasks/:id", 7, "routes/delete.js").after_batch(1),
        task("tests", "Write integration tests for every endpoint", 5, "tests/tasks.test.js")
            .after_batch(2)
            .after_batch(3)
            .after_batch(4),
    ];
    let ids = client.add_subtasks(&job, tasks).await?;
    println!("Job {job}: {} tasks (server first; list, create and delete in parallel; tests last)", ids.len());
    let mut progress = crate::Progress::new(true);
    let collected = client.wait_and_collect_with(&job, Some(Duration::from_secs(1800)), |s| progress.show(s)).await?;
    progress.finish();
    let mut files = Vec::new();
    for r in collected.results.values() {
        files.extend(r.write_artifacts(Destination::WorkingDir)?.files);
    }
    let prompt = "Review the results of the API tasks above: say what was built and what to do next.";
    let synthesis = client.synthesize_with_task(&job, &collected, prompt, Some(Duration::from_secs(1800))).await?;
    files.extend(synthesis.write_artifacts(Destination::WorkingDir)?.files);
    print!("\n{}", orca_client::synthesize_results(&collected));
    println!(
        "\n## Synthesis (task {}, {})\n{}",
        synthesis.task_id,
        synthesis.state.short_name(),
        synthesis.output.trim_end()
    );
    println!("\nFiles in {}:", project.display());
    files.sort();
    for f in &files {
        println!("  {}", f.strip_prefix(&project).unwrap_or(f).display());
    }
    let all = collected.status.completed == collected.status.total_tasks && synthesis.is_completed();
    println!("\nDemo {}.", if all { "finished" } else { "ended with failures" });
    Ok(if all { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
