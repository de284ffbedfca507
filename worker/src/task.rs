//! One attempt of a task, from assignment to its final report: workspace and context files,
//! prompt, the agent run, expected outputs, verification, artifacts.
//!
//! What stays true: an attempt ends in exactly one [`Final`]: completed, failed (retryable
//! or not), handed back (the worker shuts down), or silent (the coordinator cancelled it or
//! fenced it off, so there is nothing to report). A fresh workspace is removed when the
//! attempt completed or was stopped, and kept for inspection when it failed.

use std::time::Instant;

use orca_proto::pb;
use pb::report::Body;

use crate::Ctx;
use crate::agent::{self, Ending, Invocation, StopReason, StopRx, claude, command};
use crate::config::AgentKind;
use crate::workspace::{self, Workspace};
use crate::{prompt, verify};

/// Bytes of stderr quoted in an error message.
const ERROR_STDERR: usize = 4_000;

/// How an attempt ended.
#[derive(Debug)]
pub enum Final {
    /// Report this (completed, failed or handed back).
    Report(Body),
    /// Report nothing: the coordinator already moved the task on.
    Silent,
}

fn failed(mut result: pb::TaskResult, error: impl Into<String>, retryable: bool) -> Final {
    result.error = error.into();
    Final::Report(Body::Failed(pb::Failed { result: Some(result), retryable }))
}

fn stopped(reason: StopReason) -> Final {
    match reason {
        StopReason::Shutdown => {
            Final::Report(Body::HandedBack(pb::HandedBack { reason: "worker shutting down".into() }))
        }
        StopReason::Cancelled | StopReason::Stale => Final::Silent,
    }
}

fn stderr_note(stderr: &[u8]) -> String {
    let s = agent::text(stderr);
    let s = agent::tail_str(s.trim(), ERROR_STDERR);
    if s.is_empty() { String::new() } else { format!(": {s}") }
}

/// Runs one attempt. `progress` receives text to forward as progress reports.
pub async fn run(ctx: &Ctx, a: pb::Assignment, mut stop: StopRx, progress: &mut (dyn FnMut(String) + Send)) -> Final {
    let started = Instant::now();
    let spec = a.spec.clone().unwrap_or_default();
    if ctx.config.agent == AgentKind::Noop {
        return Final::Report(Body::Completed(pb::Completed { result: Some(pb::TaskResult::default()) }));
    }
    let (work_dir, allow) = (ctx.config.work_dir.clone(), ctx.config.allow_dirs.clone());
    let (job, files, working_dir) = (a.job_id.clone(), spec.context_files.clone(), spec.working_dir.clone());
    let (task_id, attempt) = (a.task_id, a.attempt);
    let prepared = tokio::task::spawn_blocking(move || {
        let (ws, note) = workspace::prepare(&work_dir, &allow, &job, task_id, attempt, &working_dir)?;
        if let Err(e) = workspace::write_context_files(&ws, &files) {
            workspace::remove(&ws);
            return Err(e);
        }
        Ok((ws, note))
    })
    .await;
    let (ws, note) = match prepared {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            let retryable = e.retryable();
            return failed(pb::TaskResult::default(), e.to_string(), retryable);
        }
        Err(e) => return failed(pb::TaskResult::default(), format!("workspace preparation failed: {e}"), true),
    };
    if let Some(note) = note {
        tracing::info!(task = task_id, attempt, "{note}");
        progress(note);
    }
    let fin = attempt_in(ctx, &a, &spec, &ws, &mut stop, progress, started).await;
    let keep = matches!(fin, Final::Report(Body::Failed(_)));
    if !keep && ws.fresh {
        let _ = tokio::task::spawn_blocking(move || workspace::remove(&ws)).await;
    }
    fin
}

async fn attempt_in(
    ctx: &Ctx,
    a: &pb::Assignment,
    spec: &pb::TaskSpec,
    ws: &Workspace,
    stop: &mut StopRx,
    progress: &mut (dyn FnMut(String) + Send),
    started: Instant,
) -> Final {
    let prompt = prompt::compose(spec, &a.context);
    let values = command::Values {
        prompt: &prompt,
        task_id: a.task_id,
        job_id: &a.job_id,
        workspace: &ws.path,
        attempt: a.attempt,
    };
    let env = command::env(&values);
    let timeout = (spec.timeout_seconds > 0).then(|| std::time::Duration::from_secs(spec.timeout_seconds as u64));
    let mut result = pb::TaskResult::default();
    let kind = ctx.config.agent;
    let inv = match kind {
        AgentKind::Command => {
            let template = ctx.config.agent_command.as_deref().unwrap_or_default();
            let cmd = match command::render(template, &values) {
                Ok(c) => c,
                Err(e) => return failed(result, e, false),
            };
            Invocation {
                program: "sh".into(),
                args: vec!["-c".into(), cmd.into()],
                env: env.clone(),
                cwd: ws.path.clone(),
                stdin: prompt.clone().into_bytes(),
                timeout,
            }
        }
        _ => {
            let bin = ctx.config.agent_command.as_deref().unwrap_or("claude");
            if agent::find_program(bin).is_none() {
                return failed(
                    result,
                    format!(
                        "agent binary {bin:?} not found (not an executable file{}); install Claude Code on this worker or set --agent-command",
                        if bin.contains('/') { "" } else { " in PATH" }
                    ),
                    true,
                );
            }
            Invocation {
                program: bin.into(),
                args: claude::args(spec.agent.as_ref()).into_iter().map(Into::into).collect(),
                env: env.clone(),
                cwd: ws.path.clone(),
                stdin: prompt.clone().into_bytes(),
                timeout,
            }
        }
    };
    let mut parser = claude::Parser::default();
    let out = {
        let mut on_line = |line: &[u8]| {
            if let Some(p) = parser.line(line) {
                progress(p);
            }
        };
        let cb: Option<agent::OnLine<'_>> = if kind == AgentKind::Claude { Some(&mut on_line) } else { None };
        agent::run(&ctx.exe, inv, stop, cb).await
    };
    result.duration_ms = out.duration.as_millis() as u64;
    let code = match out.ending {
        Ending::Stopped(r) => return stopped(r),
        Ending::SpawnFailed(e) => return failed(result, e, true),
        Ending::TimedOut(d) => {
            result.exit_code = -1;
            result.output = agent::text(&out.stdout);
            let msg = format!("timed out after {} s; process group killed{}", d.as_secs(), stderr_note(&out.stderr));
            return failed(result, msg, true);
        }
        Ending::Exited(code) => code,
    };
    result.exit_code = code;
    match kind {
        AgentKind::Claude => match parser.finish(&out.stdout) {
            Some(env) => {
                result.output = env.result.clone();
                result.cost_usd = env.cost_usd;
                result.usage = Some(env.usage);
                result.session_id = env.session_id.clone();
                result.num_turns = env.num_turns;
                if env.is_error || code != 0 {
                    let msg = if env.is_error {
                        env.error_text()
                    } else {
                        format!("claude exited with code {code}{}", stderr_note(&out.stderr))
                    };
                    return failed(result, msg, env.retryable());
                }
            }
            None => {
                result.output = agent::text(&out.stdout);
                let what = if code == 0 { "printed no result".to_string() } else { format!("exited with code {code}") };
                return failed(result, format!("claude {what}{}", stderr_note(&out.stderr)), true);
            }
        },
        _ => {
            result.output = agent::text(&out.stdout);
            if code != 0 {
                let hint = if code == 127 { " (command not found?)" } else { "" };
                return failed(
                    result,
                    format!("command exited with code {code}{hint}{}", stderr_note(&out.stderr)),
                    true,
                );
            }
        }
    }
    // The agent succeeded: check what it was asked to produce, then verify.
    match workspace::missing_outputs(ws, &spec.expected_outputs) {
        Ok(missing) if missing.is_empty() => {}
        Ok(missing) => return failed(result, workspace::Error::Missing(missing).to_string(), true),
        Err(e) => {
            let retryable = e.retryable();
            return failed(result, e.to_string(), retryable);
        }
    }
    let hooks = if spec.verification.is_empty() && spec.auto_verify {
        verify::auto_hooks(&ws.path)
    } else {
        spec.verification.clone()
    };
    if !hooks.is_empty() {
        match verify::run_hooks(&ctx.exe, &ws.path, &env, &hooks, stop).await {
            Ok(results) => result.verification = results,
            Err(r) => return stopped(r),
        }
        if let Some(msg) = verify::failure(&hooks, &result.verification) {
            result.duration_ms = started.elapsed().as_millis() as u64;
            return failed(result, msg, true);
        }
    }
    if !spec.expected_outputs.is_empty() {
        let (path, fresh, outputs) = (ws.path.clone(), ws.fresh, spec.expected_outputs.clone());
        let collected =
            tokio::task::spawn_blocking(move || workspace::collect_artifacts(&Workspace { path, fresh }, &outputs))
                .await;
        match collected {
            Ok(Ok(arts)) => result.artifacts = arts,
            Ok(Err(e)) => {
                let retryable = e.retryable();
                return failed(result, e.to_string(), retryable);
            }
            Err(e) => return failed(result, format!("reading artifacts failed: {e}"), true),
        }
    }
    result.duration_ms = started.elapsed().as_millis() as u64;
    Final::Report(Body::Completed(pb::Completed { result: Some(result) }))
}
