//! `orca`: the command line on `orca-client`, and `orca mcp`, an MCP server for agents
//! ([`mcp`]). Data goes to stdout (one JSON document with
//! `--json`), logs and progress to stderr. Exit codes: 0 done, 1 `wait` ended with a task
//! not completed (failed, cancelled or unfinished at the timeout), 2 any error (usage,
//! connection, a refused call, an unreadable prompt file).
//!
//! Layout: the flags, `run` (connect, then one function per subcommand), then the renderers
//! shared by the subcommands (JSON documents and text lines).

mod control;
mod dashboard;
mod mcp;
mod read;
mod taskfile;
mod up;

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use orca_client::{Client, Collected, Subtask, WatchOptions, pb};
use orca_proto::json::{git_json, job_json, job_state_name, state_name, status_json, task_json};
use serde_json::json;
use tokio_stream::StreamExt;

#[derive(Parser)]
#[command(name = "orca", version, about = "Orca's command line: submit, watch and collect jobs")]
struct Cli {
    /// TOML file whose `[client]` section sets the global flags (flag > environment > file).
    #[arg(long, env = "ORCA_CONFIG", global = true)]
    config: Option<std::path::PathBuf>,
    /// Coordinator address, or several separated by commas (standby coordinators: the CLI
    /// talks to the one that leads).
    #[arg(long, env = "ORCA_COORDINATOR", default_value = orca_proto::defaults::COORDINATOR_URL, global = true)]
    coordinator: String,
    /// File holding the bearer token (or set ORCA_TOKEN to the token itself).
    #[arg(long, env = "ORCA_TOKEN_FILE", global = true)]
    token_file: Option<std::path::PathBuf>,
    /// PEM CA certificates of an https:// coordinator (default: the system's roots).
    #[arg(long, env = "ORCA_TLS_CA", global = true)]
    tls_ca: Option<std::path::PathBuf>,
    /// PEM client certificate for mutual TLS (with --tls-key).
    #[arg(long, env = "ORCA_TLS_CERT", global = true)]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "ORCA_TLS_KEY", global = true)]
    tls_key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Submit tasks: the prompt arguments, or --file, or one prompt per line on stdin.
    Submit(SubmitArgs),
    /// A job's counts.
    Status {
        job: String,
        #[arg(long)]
        json: bool,
    },
    /// Wait until every task of the job is final; exit 0 only if all completed.
    Wait {
        job: String,
        /// Give up after this many seconds (the unfinished tasks are listed).
        #[arg(long)]
        timeout: Option<f64>,
        #[arg(long)]
        json: bool,
    },
    /// Print the job's events as they happen.
    Watch {
        job: String,
        /// Keep watching after the job is idle.
        #[arg(long)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// List jobs.
    Jobs {
        #[arg(long)]
        json: bool,
    },
    /// One page of tasks, of a job or of every job (filters: --state, --worker).
    List(read::ListArgs),
    /// One task: its spec, state, attempts, worker and result (`orca task` is the same).
    #[command(alias = "task")]
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// A task's output; -f follows a running task's progress live until it ends.
    Logs {
        id: i64,
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// The queue at a glance: tasks by state, queue depth by priority, throughput, slots.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// The workers (and `orca workers drain|resume ID`).
    Workers(read::WorkersArgs),
    /// Shared context: `orca context set KEY VALUE [--job J]`, `get`, `rm KEY`.
    Context(read::ContextArgs),
    /// A live terminal dashboard of the fleet and the jobs (keys: `?`).
    Dashboard,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Write the files the job's finished tasks produced (their expected outputs) into each
    /// task's working_dir, or under --out DIR as DIR/<task_id>/<path>.
    Collect {
        job: String,
        /// Write under this directory instead of the tasks' working directories (git tasks'
        /// patches as DIR/<task_id>.patch).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Apply the git tasks' patches to the checkout containing the current directory
        /// (`git am --3way`, one commit each, in dependency order; stops at the first conflict).
        #[arg(long)]
        apply: bool,
        #[arg(long)]
        json: bool,
    },
    /// Retry the failed tasks of a job.
    Retry {
        job: String,
        #[arg(long)]
        json: bool,
    },
    /// Change a job's weight, running limit or budget.
    Update(control::UpdateArgs),
    /// Pause a job: no new attempt starts; the running ones finish.
    Pause {
        job: String,
        #[arg(long)]
        json: bool,
    },
    /// Resume a paused job.
    Resume {
        job: String,
        #[arg(long)]
        json: bool,
    },
    /// Recurring jobs: `orca schedule add NAME --cron EXPR PROMPT...`, `list`, `rm NAME`.
    Schedule(control::ScheduleArgs),
    /// Cancel a job.
    Cancel {
        job: String,
        #[arg(long, default_value = "cancelled with orca")]
        reason: String,
    },
    /// Run a coordinator and local workers in this process (`--demo`: and a sample job).
    Up(up::UpArgs),
    /// Serve the Model Context Protocol on stdin/stdout, so an agent (e.g. Claude Code) can
    /// use the fleet as a tool. Connects to the coordinator on the first call.
    Mcp(McpArgs),
}

/// The flags of `orca mcp`: how much one tool call may wait for or return.
#[derive(Args)]
struct McpArgs {
    /// Longest orca_wait, in seconds (a longer timeout asked for is cut to this).
    #[arg(long, env = "ORCA_MCP_MAX_WAIT_SECONDS", default_value_t = 300)]
    max_wait_seconds: u64,
    /// Bytes of one task's output in orca_get_results (cut with a marker past it).
    #[arg(long, env = "ORCA_MCP_MAX_OUTPUT_BYTES", default_value_t = 16 << 10)]
    max_output_bytes: usize,
    /// Bytes of one orca_get_results or orca_synthesize reply.
    #[arg(long, env = "ORCA_MCP_MAX_RESULTS_BYTES", default_value_t = 256 << 10)]
    max_results_bytes: usize,
    /// Bytes of an artifact in orca_get_artifact.
    #[arg(long, env = "ORCA_MCP_MAX_ARTIFACT_BYTES", default_value_t = 256 << 10)]
    max_artifact_bytes: usize,
}

/// The flags of `orca submit`.
#[derive(Args)]
struct SubmitArgs {
    /// Add to this job (default: create one).
    #[arg(long)]
    job: Option<String>,
    /// Description of the new job.
    #[arg(long, default_value = "submitted with orca")]
    description: String,
    /// Tasks from this file: JSON (`.json`, or text starting with `[` or `{`) or TOML
    /// (`.toml`) with every task option, `name` and `depends_on` by name or index; any other
    /// file is one prompt per line.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Then wait until every task is final and print the results (exit as `orca wait`).
    #[arg(long)]
    wait: bool,
    #[arg(long)]
    priority: Option<i32>,
    #[arg(long)]
    max_retries: Option<u32>,
    #[arg(long)]
    timeout_seconds: Option<u32>,
    /// Print {"job_id", "task_ids"}.
    #[arg(long)]
    json: bool,
    /// The new job's controls (without --job).
    #[command(flatten)]
    job_flags: control::JobFlags,
    #[command(flatten)]
    start: control::StartFlags,
    /// Work on the git checkout containing this path: each task (without a git source of its
    /// own) runs in a worktree of the checkout's remote at its HEAD, and comes back as a
    /// patch (`orca collect --apply` applies them).
    #[arg(long, value_name = "PATH")]
    git: Option<PathBuf>,
    /// With --git: ship local commits and uncommitted changes as a patch the workers apply
    /// first (otherwise they are an error).
    #[arg(long, requires = "git")]
    ship_changes: bool,
    /// With --git: also push each task's commit to a branch of the remote.
    #[arg(long, requires = "git")]
    push: bool,
    /// With --push: the branch (one task only; default orca/<job>/<task>).
    #[arg(long, requires = "push")]
    branch: Option<String>,
    prompts: Vec<String>,
}

impl SubmitArgs {
    /// A task for one prompt, with the flags every submitted task gets.
    fn subtask(&self, prompt: &str) -> Subtask {
        let mut t = Subtask::new(prompt);
        if let Some(v) = self.priority {
            t = t.priority(v);
        }
        if let Some(v) = self.max_retries {
            t = t.max_retries(v);
        }
        if let Some(v) = self.timeout_seconds {
            t = t.timeout_seconds(v);
        }
        t
    }
}

/// Why a command failed (exit code 2).
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// A call to the coordinator failed, or it could not be reached.
    #[error(transparent)]
    Client(#[from] orca_client::Error),
    /// A prompt source (`--file` or stdin) could not be read.
    #[error("cannot read {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// `orca up` could not start or stop its parts.
    #[error("{0}")]
    Up(String),
    /// A flag or argument is wrong in a way clap cannot see (the message names it).
    #[error("{0}")]
    Usage(String),
    /// The MCP session could not start or broke.
    #[error("{0}")]
    Mcp(String),
    /// Nothing to submit: no prompt argument, and the file or stdin had only blank lines.
    #[error("invalid argument: no prompt given (arguments, --file or stdin)")]
    NoPrompt,
}

fn main() -> ExitCode {
    // The workers of `orca up` run each agent under this binary as its supervisor.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == orca_worker::agent::supervise::SUBCOMMAND) {
        std::process::exit(orca_worker::agent::supervise::main(&argv[2..]));
    }
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt.block_on(cli_main()),
        Err(e) => {
            eprintln!("orca: cannot start the runtime: {e}");
            ExitCode::from(2)
        }
    }
}

async fn cli_main() -> ExitCode {
    let cli = match orca_proto::config_file::with_file(&Cli::command(), "client", std::env::args_os().collect()) {
        Ok(args) => Cli::parse_from(args),
        Err(e) => {
            eprintln!("orca: {e}");
            return ExitCode::from(2);
        }
    };
    // Logs only say something when they must (ORCA_LOG raises it); with an OTLP endpoint set
    // the command is a span whose context goes with every call.
    let telemetry = orca_telemetry::init("orca", orca_telemetry::LogFormat::Human, "warn");
    let hint = TlsHint { url: cli.coordinator.clone(), client_cert: cli.tls_cert.is_some() };
    let span = tracing::info_span!(
        "command",
        otel.name = %format_args!("orca {}", cli.command.name()),
        trace_id = tracing::field::Empty
    );
    orca_telemetry::record_trace_id(&span);
    let result = tracing::Instrument::instrument(run(cli), span).await;
    telemetry.shutdown().await;
    match result {
        Ok(code) => code,
        Err(Failure::Client(orca_client::Error::Connect { url, source })) if refused(&source) => {
            eprintln!(
                "orca: no coordinator at {url} (is `orca up` or orca-coordinator running? the address comes from \
                 --coordinator or ORCA_COORDINATOR)"
            );
            ExitCode::from(2)
        }
        Err(e) => {
            let text = e.to_string();
            eprintln!("orca: {text}{}", hint.for_error(&text));
            ExitCode::from(2)
        }
    }
}

/// Whether a connection failed because nothing listens at the address.
fn refused(e: &tonic::transport::Error) -> bool {
    let mut cause: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused) {
            return true;
        }
        cause = c.source();
    }
    false
}

/// What a closed connection most likely means, since TLS peers close without saying why.
struct TlsHint {
    url: String,
    client_cert: bool,
}

impl TlsHint {
    fn for_error(&self, text: &str) -> &'static str {
        // A TLS server's alert read as HTTP/2 is a frame of invalid size.
        let closed = [
            "connection closed",
            "connection reset",
            "broken pipe",
            "operation was canceled",
            "frame with invalid size",
        ]
        .iter()
        .any(|t| text.contains(t));
        match (closed, self.url.starts_with("https://"), self.client_cert) {
            (true, false, _) => " (if the coordinator serves TLS, use an https:// URL and --tls-ca)",
            (true, true, false) => " (if the coordinator requires client certificates, give --tls-cert and --tls-key)",
            (true, true, true) => " (the coordinator may not accept this client certificate: see its log)",
            _ => "",
        }
    }
}

impl Cmd {
    fn name(&self) -> &'static str {
        match self {
            Cmd::Submit(_) => "submit",
            Cmd::Status { .. } => "status",
            Cmd::Wait { .. } => "wait",
            Cmd::Watch { .. } => "watch",
            Cmd::Jobs { .. } => "jobs",
            Cmd::List(_) => "list",
            Cmd::Show { .. } => "show",
            Cmd::Logs { .. } => "logs",
            Cmd::Stats { .. } => "stats",
            Cmd::Workers(_) => "workers",
            Cmd::Context(_) => "context",
            Cmd::Completions { .. } => "completions",
            Cmd::Dashboard => "dashboard",
            Cmd::Collect { .. } => "collect",
            Cmd::Retry { .. } => "retry",
            Cmd::Cancel { .. } => "cancel",
            Cmd::Update(_) => "update",
            Cmd::Pause { .. } => "pause",
            Cmd::Resume { .. } => "resume",
            Cmd::Schedule(_) => "schedule",
            Cmd::Mcp(_) => "mcp",
            Cmd::Up(_) => "up",
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let cli = match cli.command {
        Cmd::Up(args) => return up::run(args).await,
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "orca", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        command => Cli { command, ..cli },
    };
    let token = orca_proto::contract::token_from(cli.token_file.as_deref()).map_err(orca_client::Error::Token)?;
    let tls =
        orca_proto::tls::ClientTls { ca: cli.tls_ca.clone(), cert: cli.tls_cert.clone(), key: cli.tls_key.clone() };
    let mut client = match &cli.command {
        // A server for an agent starts whatever the coordinator's state; calls say it.
        Cmd::Mcp(_) | Cmd::Dashboard => Client::connect_lazy(&cli.coordinator, &tls)?,
        _ => Client::connect_tls(&cli.coordinator, &tls).await?,
    };
    if let Some(t) = token {
        client = client.with_token(&t)?;
    }
    match cli.command {
        Cmd::Submit(args) => submit(&client, args).await,
        Cmd::Status { job, json } => status(&client, &job, json).await,
        Cmd::Wait { job, timeout, json } => wait(&client, &job, timeout, json).await,
        Cmd::Watch { job, follow, json } => watch(&client, &job, follow, json).await,
        Cmd::Jobs { json } => jobs(&client, json).await,
        Cmd::List(a) => read::list(&client, a).await,
        Cmd::Show { id, json } => task(&client, id, json).await,
        Cmd::Logs { id, follow } => read::logs(&client, id, follow).await,
        Cmd::Stats { json } => read::stats(&client, json).await,
        Cmd::Workers(a) => read::workers(&client, a).await,
        Cmd::Context(a) => read::context(&client, a).await,
        Cmd::Dashboard => dashboard::run(client).await,
        Cmd::Collect { job, out, apply, json } => collect(&client, &job, out.as_deref(), apply, json).await,
        Cmd::Retry { job, json } => retry(&client, &job, json).await,
        Cmd::Cancel { job, reason } => cancel(&client, &job, &reason).await,
        Cmd::Update(a) => control::update(&client, a).await,
        Cmd::Pause { job, json } => control::pause(&client, &job, true, json).await,
        Cmd::Resume { job, json } => control::pause(&client, &job, false, json).await,
        Cmd::Schedule(a) => control::schedule(&client, a).await,
        Cmd::Up(_) | Cmd::Completions { .. } => Ok(ExitCode::SUCCESS),
        Cmd::Mcp(a) => {
            let limits = mcp::Limits {
                max_wait: Duration::from_secs(a.max_wait_seconds),
                max_output_bytes: a.max_output_bytes,
                max_results_bytes: a.max_results_bytes,
                max_artifact_bytes: a.max_artifact_bytes,
            };
            mcp::serve(client, limits).await.map_err(Failure::Mcp)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

// --- the subcommands ---------------------------------------------------------------------

/// `orca submit`: adds one task per prompt, to `--job` or to a job created here.
async fn submit(client: &Client, mut args: SubmitArgs) -> Result<ExitCode, Failure> {
    let mut tasks: Vec<Subtask> = Vec::new();
    let mut lines = std::mem::take(&mut args.prompts);
    if let Some(f) = &args.file {
        match taskfile::read(f, read_file(f)?).map_err(Failure::Usage)? {
            taskfile::Contents::Lines(text) => lines.extend(text.lines().map(str::to_string)),
            taskfile::Contents::Tasks(t) => tasks = t,
        }
    }
    if tasks.is_empty() {
        let stdin = args.file.is_none() && lines.is_empty();
        tasks = read_prompts(lines, stdin)?.iter().map(|p| args.subtask(p)).collect();
    }
    if let Some(path) = &args.git {
        tasks = with_git(tasks, path, &args)?;
    }
    tasks = tasks.into_iter().map(|t| args.start.apply(t)).collect();
    let job = match &args.job {
        Some(_) if args.job_flags.given() => {
            return Err(Failure::Usage(
                "--weight, --max-running and --budget apply to a new job; for an existing one use `orca update`".into(),
            ));
        }
        Some(j) => j.clone(),
        None => client.create_job_with_options(&args.description, &args.job_flags.options()).await?.job_id,
    };
    let ids = client.add_subtasks(&job, tasks).await?;
    if args.wait {
        if !args.json {
            println!("job {job}: {} tasks submitted; waiting", ids.len());
        }
        return wait(client, &job, None, args.json).await;
    }
    if args.json {
        print_json(&json!({"job_id": job, "task_ids": ids}));
    } else {
        println!("job {job}: {} tasks ({}..{})", ids.len(), ids[0], ids[ids.len() - 1]);
    }
    Ok(ExitCode::SUCCESS)
}

/// `--git`: the checkout's source on every task that has none of its own.
fn with_git(tasks: Vec<Subtask>, path: &Path, args: &SubmitArgs) -> Result<Vec<Subtask>, Failure> {
    if args.branch.is_some() && tasks.len() > 1 {
        return Err(Failure::Usage(format!("--branch names one branch, and there are {} tasks", tasks.len())));
    }
    let checkout = orca_client::GitCheckout::open_as(path, args.ship_changes)?;
    let source = checkout.source();
    Ok(tasks
        .into_iter()
        .map(|t| {
            if t.spec().git.is_some() {
                return t;
            }
            let t = t.git(source.clone());
            if args.push { t.push_to(args.branch.as_deref().unwrap_or_default()) } else { t }
        })
        .collect())
}

/// The text of `--file`.
fn read_file(f: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(f).map_err(|source| Failure::Read { what: format!("--file {}", f.display()), source })
}

/// The prompts to submit: `lines` (the arguments and a prompt file's lines), or with `stdin`
/// the lines of stdin. Blank lines are dropped; none left is an error.
fn read_prompts(mut lines: Vec<String>, stdin: bool) -> Result<Vec<String>, Failure> {
    if stdin {
        if std::io::stdin().is_terminal() {
            eprintln!("orca: reading prompts from stdin, one per line (Ctrl-D to end)");
        }
        for l in std::io::stdin().lock().lines() {
            lines.push(l.map_err(|source| Failure::Read { what: "stdin".into(), source })?);
        }
    }
    lines.retain(|l| !l.trim().is_empty());
    if lines.is_empty() {
        return Err(Failure::NoPrompt);
    }
    Ok(lines)
}

/// `orca status`: the job's counts, spend and controls.
async fn status(client: &Client, job: &str, json: bool) -> Result<ExitCode, Failure> {
    let j = client.get_job(job).await?;
    let s = j.status.clone().unwrap_or_default();
    if json {
        print_json(&job_json(&j));
    } else {
        println!(
            "job {job}: {} tasks, {:.1}% done: {} waiting, {} pending, {} in progress, {} completed, {} failed, {} cancelled",
            s.total_tasks, s.progress_pct, s.waiting, s.pending, s.in_progress, s.completed, s.failed, s.cancelled
        );
        println!("{}", control::spend_line(&s));
        println!("{}", control::controls_line(&j));
    }
    Ok(ExitCode::SUCCESS)
}

/// `orca wait`: waits until every task is final (or the timeout passes), prints the results;
/// exit 0 only when every task completed.
async fn wait(client: &Client, job: &str, timeout: Option<f64>, json: bool) -> Result<ExitCode, Failure> {
    let mut progress = Progress::new(!json);
    let timeout = timeout.map(Duration::from_secs_f64);
    let got = client.wait_and_collect_with(job, timeout, |s| progress.show(s)).await?;
    progress.finish();
    if json {
        print_json(&collected_json(job, &got));
    } else {
        print!("{}", orca_client::synthesize_results(&got));
        if got.timed_out {
            eprintln!("orca: timed out with {} tasks unfinished", got.unfinished.len());
        }
    }
    let all_completed = !got.timed_out && got.status.total_tasks == got.status.completed;
    Ok(if all_completed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `orca watch`: one line (or JSON object) per event, until the job is idle (or forever with
/// `--follow`).
async fn watch(client: &Client, job: &str, follow: bool, json: bool) -> Result<ExitCode, Failure> {
    let mut events = Box::pin(client.watch(job, WatchOptions { follow, ..Default::default() }));
    while let Some(ev) = events.next().await {
        let ev = ev?;
        if json {
            println!("{}", event_json(job, &ev));
        } else {
            println!("{}", event_line(&ev));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `orca jobs`: every job with its state and counts.
async fn jobs(client: &Client, json: bool) -> Result<ExitCode, Failure> {
    let jobs = client.list_jobs().await?;
    if json {
        print_json(&json!({"jobs": jobs.iter().map(job_json).collect::<Vec<_>>()}));
    } else {
        for j in jobs {
            let s = j.status.unwrap_or_default();
            let state = job_state_name(j.state);
            println!("{}  {:<9} {:>6}/{:<6} {}", j.job_id, state, s.completed, s.total_tasks, j.description);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `orca task`: one task, as JSON or as `key: value` lines.
async fn task(client: &Client, id: i64, json: bool) -> Result<ExitCode, Failure> {
    let v = task_json(&client.get_task(id).await?);
    if json {
        print_json(&v);
    } else {
        for (k, val) in v.as_object().into_iter().flatten().filter(|(k, _)| *k != "history") {
            println!("{k}: {}", val.as_str().map(str::to_string).unwrap_or_else(|| val.to_string()));
        }
        for a in v["history"].as_array().into_iter().flatten() {
            println!(
                "attempt {} on {}: {} after {} ms (exit {}){}",
                a["attempt"],
                a["worker_id"].as_str().unwrap_or("?"),
                a["outcome"].as_str().unwrap_or("?"),
                a["ended_ms"].as_i64().unwrap_or(0) - a["started_ms"].as_i64().unwrap_or(0),
                a["exit_code"],
                a["reason"].as_str().filter(|r| !r.is_empty()).map(|r| format!(": {r}")).unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `orca collect`: writes the finished tasks' artifacts where they belong (see
/// [`orca_client::TaskOutcome::write_artifacts`]) and says what it wrote and skipped; with
/// `--out`, git tasks' patches too; with `--apply`, applies those patches to the checkout.
async fn collect(client: &Client, job: &str, out: Option<&Path>, apply: bool, json: bool) -> Result<ExitCode, Failure> {
    let got = client.collect(job).await?;
    let dest = out.map_or(orca_client::Destination::WorkingDir, orca_client::Destination::Under);
    let mut tasks = Vec::new();
    let mut files = 0;
    for r in got.results.values() {
        let mut w = r.write_artifacts(dest)?;
        if let (Some(dir), Some(g)) = (out, r.git().filter(|g| !g.patch.is_empty())) {
            let path = dir.join(format!("{}.patch", r.task_id));
            std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(&path, &g.patch))
                .map_err(|source| orca_client::Error::Artifacts { path: path.display().to_string(), source })?;
            w.files.push(path);
        }
        files += w.files.len();
        if !json {
            for f in &w.files {
                println!("task {}: wrote {}", r.task_id, f.display());
            }
            for s in &w.skipped {
                let what = if s.path.is_empty() { String::new() } else { format!(" {}", s.path) };
                println!("task {}: skipped{what}: {}", r.task_id, s.reason);
            }
        }
        if !w.files.is_empty() || !w.skipped.is_empty() {
            tasks.push(json!({
                "task_id": r.task_id,
                "state": r.state.short_name(),
                "files": w.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
                "skipped": w.skipped.iter().map(|s| json!({"path": s.path, "reason": s.reason})).collect::<Vec<_>>(),
            }));
        }
    }
    let applied = if apply { Some(apply_patches(&got, json)?) } else { None };
    if json {
        let mut doc = json!({"job_id": job, "files": files, "tasks": tasks, "unfinished": got.unfinished});
        if let Some(a) = applied {
            doc["applied"] = json!(a.applied);
            doc["empty"] = json!(a.empty);
        }
        print_json(&doc);
    } else {
        let pending = if got.unfinished.is_empty() {
            String::new()
        } else {
            format!("; {} tasks not finished yet", got.unfinished.len())
        };
        println!("job {job}: {files} files written{pending}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `collect --apply`: the git tasks' patches onto the checkout of the current directory.
fn apply_patches(got: &Collected, json: bool) -> Result<orca_client::Applied, Failure> {
    let a = orca_client::apply_patches(".", got.results.values())?;
    if !json {
        for id in &a.applied {
            println!("task {id}: patch applied");
        }
        for id in &a.empty {
            println!("task {id}: changed nothing");
        }
        println!("{} patches applied", a.applied.len());
    }
    Ok(a)
}

/// `orca retry`: brings back the job's failed tasks (and the dependents cancelled with them).
async fn retry(client: &Client, job: &str, json: bool) -> Result<ExitCode, Failure> {
    let ids = client.retry_failed_tasks(job).await?;
    if json {
        print_json(&json!({"job_id": job, "task_ids": ids}));
    } else {
        println!("job {job}: {} tasks retried", ids.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// `orca cancel`: cancels every unfinished task of the job.
async fn cancel(client: &Client, job: &str, reason: &str) -> Result<ExitCode, Failure> {
    let j = client.cancel_job(job, reason).await?;
    let s = j.status.unwrap_or_default();
    println!("job {job} cancelled: {} completed, {} cancelled", s.completed, s.cancelled);
    Ok(ExitCode::SUCCESS)
}

// --- renderers ---------------------------------------------------------------------------

/// Unix time in milliseconds (ages of workers and tasks).
fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// `orca wait --json`: the status document plus `timed_out`, `unfinished` and the final tasks.
fn collected_json(job: &str, got: &Collected) -> serde_json::Value {
    let tasks: Vec<_> = got
        .results
        .values()
        .map(|r| {
            json!({"task_id": r.task_id, "state": r.state.short_name(), "prompt": r.prompt, "output": r.output,
                   "error": r.error, "reason": r.reason, "attempts": r.attempts, "git": r.git().map(git_json)})
        })
        .collect();
    let mut doc = status_json(job, &got.status);
    doc["timed_out"] = json!(got.timed_out);
    doc["unfinished"] = json!(got.unfinished);
    doc["tasks"] = json!(tasks);
    doc
}

fn event_kind(ev: &pb::JobEvent) -> pb::JobEventKind {
    pb::JobEventKind::try_from(ev.kind).unwrap_or(pb::JobEventKind::Unspecified)
}

/// A line of `orca watch --json` (one compact object per event).
fn event_json(job: &str, ev: &pb::JobEvent) -> serde_json::Value {
    let status = ev.status.clone().unwrap_or_default();
    json!({"seq": ev.seq, "kind": format!("{:?}", event_kind(ev)).to_lowercase(), "task_id": ev.task_id,
           "state": state_name(ev.state), "attempt": ev.attempt, "message": ev.message,
           "status": status_json(job, &status)})
}

/// A line of `orca watch`.
fn event_line(ev: &pb::JobEvent) -> String {
    let status = ev.status.clone().unwrap_or_default();
    match event_kind(ev) {
        pb::JobEventKind::Snapshot => format!(
            "#{} snapshot: {} tasks, {} completed, {} failed",
            ev.seq, status.total_tasks, status.completed, status.failed
        ),
        pb::JobEventKind::TaskState => {
            let why = if ev.message.is_empty() { String::new() } else { format!(": {}", ev.message) };
            format!("#{} task {} {} (attempt {}){why}", ev.seq, ev.task_id, state_name(ev.state), ev.attempt)
        }
        pb::JobEventKind::TaskProgress => format!("#{} task {}: {}", ev.seq, ev.task_id, ev.message),
        kind => format!("#{} {:?}: {}", ev.seq, kind, ev.message),
    }
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// A job's progress on stderr while waiting: a bar redrawn in place on a terminal, otherwise
/// one plain line per change of the counts (for logs and CI).
struct Progress {
    on: bool,
    bar: bool,
    last: Option<(u64, u64, u64)>,
}

impl Progress {
    fn new(on: bool) -> Progress {
        Progress { on, bar: on && std::io::stderr().is_terminal(), last: None }
    }

    fn show(&mut self, s: &pb::JobStatus) {
        if !self.on {
            return;
        }
        if self.bar {
            progress_line(s);
            return;
        }
        let now = (s.completed, s.in_progress, s.failed + s.cancelled);
        if self.last != Some(now) {
            self.last = Some(now);
            eprintln!(
                "progress: {}/{} completed, {} running, {} failed or cancelled",
                s.completed, s.total_tasks, s.in_progress, now.2
            );
        }
    }

    fn finish(&self) {
        if self.bar {
            eprintln!();
        }
    }
}

/// The progress bar on a terminal (stderr, redrawn in place).
fn progress_line(s: &pb::JobStatus) {
    let width = 30usize;
    let filled = ((s.progress_pct / 100.0) * width as f64).round() as usize;
    eprint!(
        "\r[{}{}] {:>5.1}%  {} done, {} running, {} queued, {} failed ",
        "#".repeat(filled.min(width)),
        "-".repeat(width - filled.min(width)),
        s.progress_pct,
        s.completed,
        s.in_progress,
        s.pending + s.waiting,
        s.failed + s.cancelled
    );
    let _ = std::io::stderr().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_prompt_file_is_a_read_error_naming_the_file() {
        let e = read_file(Path::new("/definitely/not/here")).unwrap_err();
        assert!(matches!(&e, Failure::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound), "{e:?}");
        assert!(e.to_string().starts_with("cannot read --file /definitely/not/here: "), "{e}");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn blank_prompts_are_dropped_and_none_left_is_an_error() {
        let got = read_prompts(vec!["a".into(), " ".into(), String::new(), "b".into()], false).unwrap();
        assert_eq!(got, ["a", "b"]);
        let e = read_prompts(vec!["  ".into()], false).unwrap_err();
        assert!(matches!(e, Failure::NoPrompt), "{e:?}");
        assert_eq!(e.to_string(), "invalid argument: no prompt given (arguments, --file or stdin)");
    }
}
