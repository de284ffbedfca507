//! One attempt of a task, from assignment to its final report: workspace and context files,
//! prompt, the agent run, expected outputs, verification, artifacts.
//!
//! What stays true: an attempt ends in exactly one [`Final`]: completed, failed (retryable
//! or not), handed back (the worker shuts down), not started (the worker could not start its
//! agent: the worker's fault, handed back so that it does not count against the task's
//! retries), or silent (the coordinator cancelled it or fenced it off, so there is nothing to
//! report). A fresh workspace is removed when the attempt completed, was stopped or did not
//! start, and kept for inspection when it failed (its time stamp then says when, for the
//! sweep of `crate::upkeep`).

use std::time::Instant;

use orca_proto::pb;
use pb::report::Body;

use crate::Ctx;
use crate::agent::{self, Ending, Invocation, StopReason, StopRx, claude, command};
use crate::config::AgentKind;
use crate::workspace::{self, Workspace};
use crate::{git, prompt, verify};

/// Bytes of stderr quoted in an error message.
const ERROR_STDERR: usize = 4_000;

/// How an attempt ended.
#[derive(Debug)]
pub enum Final {
    /// Report this (completed, failed or handed back).
    Report(Body),
    /// Report nothing: the coordinator already moved the task on.
    Silent,
    /// The agent could not be started (why): hand the attempt back; the session counts these.
    NotStarted(String),
}

/// A failed attempt with this result and error.
pub fn failed(mut result: pb::TaskResult, error: impl Into<String>, retryable: bool) -> Final {
    result.error = error.into();
    Final::Report(Body::Failed(pb::Failed { result: Some(result), retryable }))
}

/// Why a workspace step failed, with the retryability the error carries.
fn workspace_failed(result: pb::TaskResult, e: workspace::Error) -> Final {
    let retryable = e.retryable();
    failed(result, e.to_string(), retryable)
}

fn stopped(reason: StopReason) -> Final {
    match reason {
        StopReason::Shutdown => {
            Final::Report(Body::HandedBack(pb::HandedBack { reason: "worker shutting down".into() }))
        }
        StopReason::Cancelled | StopReason::Stale => Final::Silent,
    }
}

/// What the `noop` agent reports for every assignment: completed, empty result.
pub fn noop() -> Final {
    Final::Report(Body::Completed(pb::Completed { result: Some(pb::TaskResult::default()) }))
}

fn stderr_note(stderr: &[u8]) -> String {
    let s = agent::text(stderr);
    let s = agent::tail_str(s.trim(), ERROR_STDERR);
    if s.is_empty() { String::new() } else { format!(": {s}") }
}

/// Runs one attempt. `progress` receives text to forward as progress reports.
/// Runs one attempt in its span (a child of the task's trace when it has one); returns how
/// it ended and the attempt span's `traceparent`, for the final report.
pub async fn run(
    ctx: &Ctx,
    a: pb::Assignment,
    stop: StopRx,
    progress: &mut (dyn FnMut(String) + Send),
) -> (Final, Option<String>) {
    let span = tracing::info_span!(
        "attempt",
        task_id = a.task_id,
        job_id = %a.job_id,
        attempt = a.attempt,
        worker = %ctx.config.name,
        trace_id = tracing::field::Empty
    );
    let parent = a.spec.as_ref().map(|s| s.trace_parent.as_str()).unwrap_or_default();
    orca_telemetry::set_parent(&span, parent);
    // Without export, the caller's context still reaches the agent as it came.
    let traceparent = orca_telemetry::traceparent(&span).or_else(|| (!parent.is_empty()).then(|| parent.to_string()));
    let fin =
        tracing::Instrument::instrument(run_attempt(ctx, a, stop, progress, traceparent.clone()), span.clone()).await;
    let (outcome, result) = match &fin {
        Final::Report(Body::Completed(c)) => ("completed", c.result.as_ref()),
        Final::Report(Body::Failed(f)) => ("failed", f.result.as_ref()),
        Final::Report(_) => ("handed_back", None),
        Final::Silent => ("revoked", None),
        Final::NotStarted(_) => ("not_started", None),
    };
    let r = result.cloned().unwrap_or_default();
    span.in_scope(|| {
        tracing::info!(
            outcome,
            exit_code = r.exit_code,
            duration_ms = r.duration_ms,
            cost_usd = r.cost_usd,
            "attempt finished"
        )
    });
    orca_telemetry::attribute(&span, "outcome", outcome);
    if result.is_some() {
        orca_telemetry::attribute(&span, "exit_code", r.exit_code as i64);
        orca_telemetry::attribute(&span, "cost_usd", r.cost_usd);
        orca_telemetry::attribute(&span, "duration_ms", r.duration_ms as i64);
    }
    (fin, traceparent)
}

async fn run_attempt(
    ctx: &Ctx,
    a: pb::Assignment,
    mut stop: StopRx,
    progress: &mut (dyn FnMut(String) + Send),
    traceparent: Option<String>,
) -> Final {
    let started = Instant::now();
    let spec = a.spec.clone().unwrap_or_default();
    // The worker decides what runs: a task beyond its policy fails before anything starts.
    if let Err(why) = ctx.config.policy.check(&spec, ctx.config.agent == AgentKind::Claude) {
        return failed(pb::TaskResult::default(), format!("worker policy: {why}"), false);
    }
    let Prepared { ws, note, checkout } = match prepare(ctx, &a, &spec, &mut stop).await {
        Ok(p) => p,
        Err(fin) => return *fin,
    };
    if let Some(note) = note {
        tracing::info!(task = a.task_id, attempt = a.attempt, "{note}");
        progress(note);
    }
    let fin = attempt_in(ctx, &a, &spec, (&ws, checkout.as_ref()), &mut stop, progress, (started, traceparent)).await;
    let keep = matches!(fin, Final::Report(Body::Failed(_)));
    if ws.fresh {
        let _ =
            tokio::task::spawn_blocking(move || if keep { workspace::mark_kept(&ws) } else { workspace::remove(&ws) })
                .await;
        if keep {
            // The work dir grew: let the sweep check its bound.
            ctx.sweep.notify_one();
        }
    }
    fin
}

/// Picks the workspace (for a git task, a worktree of its repository at its base) and
/// writes the context files into it. A fresh workspace that cannot be made ready is
/// removed again.
async fn prepare(ctx: &Ctx, a: &pb::Assignment, spec: &pb::TaskSpec, stop: &mut StopRx) -> Step<Prepared> {
    let (in_use, work_dir, allow) =
        (ctx.workspaces.clone(), ctx.config.work_dir.clone(), ctx.config.allow_dirs.clone());
    // A git task always runs in a worktree of its own.
    let working_dir = if spec.git.is_some() { String::new() } else { spec.working_dir.clone() };
    let (job, task_id, attempt) = (a.job_id.clone(), a.task_id, a.attempt);
    let made = tokio::task::spawn_blocking(move || {
        workspace::prepare(&in_use, &work_dir, &allow, &job, task_id, attempt, &working_dir)
    })
    .await;
    let (ws, mut note) = match made {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Err(Box::new(workspace_failed(pb::TaskResult::default(), e))),
        Err(e) => return Err(preparation_failed(e)),
    };
    let mut checkout = None;
    if let Some(g) = &spec.git {
        if !spec.working_dir.is_empty() {
            note = Some(format!("working_dir is ignored: the task runs in a worktree of {}", g.repo));
        }
        // A fetch can take long: a cancellation or the worker's shutdown stops it (git is
        // killed with the future).
        let made = tokio::select! {
            r = git::checkout(&ctx.mirrors, &ctx.config.work_dir, &ctx.config.allow_dirs, a, &ws.path) => {
                r.map_err(|f| failed(pb::TaskResult::default(), f.error, f.retryable))
            }
            reason = stop_requested(stop) => Err(stopped(reason)),
        };
        match made {
            Ok(c) => checkout = Some(c),
            Err(fin) => {
                let _ = tokio::task::spawn_blocking(move || workspace::remove(&ws)).await;
                return Err(Box::new(fin));
            }
        }
    }
    let files = spec.context_files.clone();
    let written = tokio::task::spawn_blocking(move || match workspace::write_context_files(&ws, &files) {
        Ok(()) => Ok(ws),
        Err(e) => {
            workspace::remove(&ws);
            Err(e)
        }
    })
    .await;
    match written {
        Ok(Ok(ws)) => Ok(Prepared { ws, note, checkout }),
        Ok(Err(e)) => Err(Box::new(workspace_failed(pb::TaskResult::default(), e))),
        Err(e) => Err(preparation_failed(e)),
    }
}

/// A blocking step of the preparation panicked or was cancelled: another attempt may work.
fn preparation_failed(e: tokio::task::JoinError) -> Box<Final> {
    Box::new(failed(pb::TaskResult::default(), format!("workspace preparation failed: {e}"), true))
}

/// Resolves when the attempt is asked to stop (never, once nobody can ask).
async fn stop_requested(stop: &mut StopRx) -> StopReason {
    loop {
        if let Some(s) = *stop.borrow_and_update() {
            return s.reason;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A workspace ready for the agent.
struct Prepared {
    ws: Workspace,
    /// Why the task's working_dir was not used, if it named one.
    note: Option<String>,
    /// For a git task: the worktree's start.
    checkout: Option<git::Checkout>,
}

/// The attempt in its workspace: the agent, then (when it succeeded) the expected outputs,
/// the verification hooks and the artifacts. Each step either fills in the result or ends
/// the attempt with a [`Final`].
async fn attempt_in(
    ctx: &Ctx,
    a: &pb::Assignment,
    spec: &pb::TaskSpec,
    (ws, checkout): (&Workspace, Option<&git::Checkout>),
    stop: &mut StopRx,
    progress: &mut (dyn FnMut(String) + Send),
    (started, traceparent): (Instant, Option<String>),
) -> Final {
    let prompt = prompt::compose(spec, &a.context, &a.previous_error);
    let values = command::Values {
        prompt: &prompt,
        task_id: a.task_id,
        job_id: &a.job_id,
        workspace: &ws.path,
        attempt: a.attempt,
    };
    let mut env = command::env(&values);
    if let Some(tp) = traceparent {
        // W3C's name for it in the environment: tools that trace join the task's trace.
        env.push(("TRACEPARENT".into(), tp));
    }
    // A task that ran in place (a filesystem shared with the caller) left its files there.
    let result = pb::TaskResult { in_place: !ws.fresh, ..Default::default() };
    let mut at = Attempt { ctx, spec, ws, checkout, env, started, result };
    match at.steps(&values, stop, progress).await {
        Ok(()) => at.completed(),
        Err(fin) => *fin,
    }
}

/// A step of an attempt: `Err` ends the attempt with that [`Final`] (boxed: it is large).
type Step<T = ()> = Result<T, Box<Final>>;

/// One attempt's steps after the workspace is ready, and the result they fill in.
struct Attempt<'a> {
    ctx: &'a Ctx,
    spec: &'a pb::TaskSpec,
    ws: &'a Workspace,
    /// For a git task: where its worktree started, to commit what the agent changed.
    checkout: Option<&'a git::Checkout>,
    /// The `ORCA_*` variables of the agent and the hooks.
    env: Vec<(String, String)>,
    started: Instant,
    result: pb::TaskResult,
}

impl Attempt<'_> {
    async fn steps(
        &mut self,
        values: &command::Values<'_>,
        stop: &mut StopRx,
        progress: &mut (dyn FnMut(String) + Send),
    ) -> Step {
        let inv = self.invocation(values)?;
        let (code, out, parser) = self.run_agent(inv, stop, progress).await?;
        match self.ctx.config.agent {
            AgentKind::Claude => self.judge_claude(code, &out, parser)?,
            _ => self.judge_command(code, &out)?,
        }
        // The agent succeeded: check what it was asked to produce, then verify.
        self.check_outputs()?;
        self.verify(stop).await?;
        self.collect_artifacts().await?;
        self.git_commit(values).await
    }

    /// For a git task: commits what the agent changed and puts the commit, its patch and
    /// stats in the result (also when the push or the patch's size fails the attempt).
    async fn git_commit(&mut self, values: &command::Values<'_>) -> Step {
        let Some(co) = self.checkout else { return Ok(()) };
        match git::commit(co, &self.ws.path, self.spec, values.job_id, values.task_id).await {
            Ok(r) => {
                self.result.git = Some(Box::new(r));
                Ok(())
            }
            Err((r, f)) => {
                self.result.git = Some(Box::new(r));
                Err(self.fail(f.error, f.retryable))
            }
        }
    }

    /// Fails the attempt with the result so far.
    fn fail(&mut self, error: impl Into<String>, retryable: bool) -> Box<Final> {
        Box::new(failed(std::mem::take(&mut self.result), error, retryable))
    }

    fn workspace_failed(&mut self, e: workspace::Error) -> Box<Final> {
        Box::new(workspace_failed(std::mem::take(&mut self.result), e))
    }

    fn completed(mut self) -> Final {
        self.result.duration_ms = self.started.elapsed().as_millis() as u64;
        Final::Report(Body::Completed(pb::Completed { result: Some(self.result) }))
    }

    /// What to run: the rendered template (its words directly when it has no shell syntax,
    /// else under `sh -c`), or Claude Code with the task's
    /// options. The prompt is on stdin either way.
    fn invocation(&mut self, values: &command::Values<'_>) -> Step<Invocation> {
        let ctx = self.ctx;
        let config = &ctx.config;
        // The program was there when the worker started; it may have gone since. That is the
        // worker's fault, not the task's.
        if let Some(why) = agent::problem(config.agent, config.agent_command.as_deref()) {
            return Err(Box::new(Final::NotStarted(why)));
        }
        let (program, args) = match config.agent {
            AgentKind::Command | AgentKind::Demo => {
                let template = config.agent_command.as_deref().unwrap_or_default();
                let cmd = command::render(template, values).map_err(|e| self.fail(e, false))?;
                // Without a shell when it would only split words: one process less per task.
                // A program that cannot be found goes through sh, which fails as before.
                // A relative path (`./run`) is looked up from the workspace, so it goes via sh.
                let direct = |w: &Vec<String>| {
                    (w[0].starts_with('/') || !w[0].contains('/')) && agent::find_program(&w[0]).is_some()
                };
                match command::plain_words(&cmd).filter(direct) {
                    Some(mut words) => {
                        let program = words.remove(0);
                        (program.into(), words.into_iter().map(Into::into).collect())
                    }
                    None => ("sh".into(), vec!["-c".into(), cmd.into()]),
                }
            }
            _ => {
                let bin = agent::claude_binary(config.agent_command.as_deref());
                // Checked before the workspace was made; the worker's own mode when none asked.
                let mode = config
                    .policy
                    .permission_mode(self.spec)
                    .map_err(|e| self.fail(format!("worker policy: {e}"), false))?;
                let args = claude::args(self.spec.agent.as_ref(), &mode);
                (bin.into(), args.into_iter().map(Into::into).collect())
            }
        };
        let timeout =
            (self.spec.timeout_seconds > 0).then(|| std::time::Duration::from_secs(self.spec.timeout_seconds as u64));
        Ok(Invocation {
            program,
            args,
            env: self.env.clone(),
            cwd: self.ws.path.clone(),
            stdin: values.prompt.as_bytes().to_vec(),
            timeout,
        })
    }

    /// Runs the agent, forwarding its progress: Claude's progress lines, or each line a
    /// command agent prints on stdout (live output for `orca logs -f` and the dashboards).
    /// `Ok` with the exit code when it exited on its own; a stop, a spawn failure or the
    /// timeout end the attempt.
    async fn run_agent(
        &mut self,
        inv: Invocation,
        stop: &mut StopRx,
        progress: &mut (dyn FnMut(String) + Send),
    ) -> Step<(i32, agent::Outcome, claude::Parser)> {
        let mut parser = claude::Parser::default();
        let out = {
            let claude = self.ctx.config.agent == AgentKind::Claude;
            let mut on_line = |line: &[u8]| {
                if claude {
                    if let Some(p) = parser.line(line) {
                        progress(p);
                    }
                    return;
                }
                let text = String::from_utf8_lossy(line);
                let text = text.trim_end();
                if !text.is_empty() {
                    progress(text.to_string());
                }
            };
            agent::run(&self.ctx.exe, inv, stop, Some(&mut on_line)).await
        };
        self.result.duration_ms = out.duration.as_millis() as u64;
        let code = match &out.ending {
            Ending::Stopped(r) => return Err(Box::new(stopped(*r))),
            Ending::SpawnFailed(e) => return Err(Box::new(Final::NotStarted(e.clone()))),
            Ending::TimedOut(d) => {
                self.result.exit_code = -1;
                self.result.output = agent::text(&out.stdout);
                let msg =
                    format!("timed out after {} s; process group killed{}", d.as_secs(), stderr_note(&out.stderr));
                return Err(self.fail(msg, true));
            }
            Ending::Exited(code) => *code,
        };
        self.result.exit_code = code;
        Ok((code, out, parser))
    }

    /// Claude's result envelope fills the result; an error envelope, a non-zero exit or no
    /// envelope at all fail the attempt.
    fn judge_claude(&mut self, code: i32, out: &agent::Outcome, parser: claude::Parser) -> Step {
        let Some(env) = parser.finish(&out.stdout) else {
            self.result.output = agent::text(&out.stdout);
            let what = if code == 0 { "printed no result".to_string() } else { format!("exited with code {code}") };
            return Err(self.fail(format!("claude {what}{}", stderr_note(&out.stderr)), true));
        };
        self.result.output = env.result.clone();
        self.result.cost_usd = env.cost_usd;
        self.result.usage = Some(env.usage);
        self.result.session_id = env.session_id.clone();
        self.result.num_turns = env.num_turns;
        if env.is_error || code != 0 {
            let msg = if env.is_error {
                env.error_text()
            } else {
                format!("claude exited with code {code}{}", stderr_note(&out.stderr))
            };
            return Err(self.fail(msg, env.retryable()));
        }
        Ok(())
    }

    /// A command's stdout is its output; any exit code but 0 fails the attempt.
    fn judge_command(&mut self, code: i32, out: &agent::Outcome) -> Step {
        self.result.output = agent::text(&out.stdout);
        if code != 0 {
            let hint = if code == 127 { " (command not found?)" } else { "" };
            return Err(self.fail(format!("command exited with code {code}{hint}{}", stderr_note(&out.stderr)), true));
        }
        Ok(())
    }

    fn check_outputs(&mut self) -> Step {
        match workspace::missing_outputs(self.ws, &self.spec.expected_outputs) {
            Ok(missing) if missing.is_empty() => Ok(()),
            Ok(missing) => Err(self.fail(workspace::Error::Missing(missing).to_string(), true)),
            Err(e) => Err(self.workspace_failed(e)),
        }
    }

    /// The task's hooks, or with `auto_verify` and none, those picked from marker files.
    async fn verify(&mut self, stop: &mut StopRx) -> Step {
        let hooks = if self.spec.verification.is_empty() && self.spec.auto_verify {
            self.ctx.config.policy.filter_auto(verify::auto_hooks(&self.ws.path))
        } else {
            self.spec.verification.clone()
        };
        if hooks.is_empty() {
            return Ok(());
        }
        match verify::run_hooks(&self.ctx.exe, &self.ws.path, &self.env, &hooks, stop).await {
            Ok(results) => self.result.verification = results,
            Err(r) => return Err(Box::new(stopped(r))),
        }
        if let Some(msg) = verify::failure(&hooks, &self.result.verification) {
            self.result.duration_ms = self.started.elapsed().as_millis() as u64;
            return Err(self.fail(msg, true));
        }
        Ok(())
    }

    /// The expected outputs' contents, read on a blocking thread (file I/O).
    async fn collect_artifacts(&mut self) -> Step {
        if self.spec.expected_outputs.is_empty() {
            return Ok(());
        }
        let ws = Workspace { path: self.ws.path.clone(), fresh: self.ws.fresh, claim: None };
        let outputs = self.spec.expected_outputs.clone();
        match tokio::task::spawn_blocking(move || workspace::collect_artifacts(&ws, &outputs)).await {
            Ok(Ok(arts)) => {
                self.result.artifacts = arts;
                Ok(())
            }
            Ok(Err(e)) => Err(self.workspace_failed(e)),
            Err(e) => Err(self.fail(format!("reading artifacts failed: {e}"), true)),
        }
    }
}
