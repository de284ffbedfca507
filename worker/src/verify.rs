//! Verification after an agent succeeded: the task's hooks (`sh -c COMMAND` in the
//! workspace), or with `auto_verify` and no hooks, checks picked from marker files.
//!
//! What stays true: hooks run one after the other, each supervised like an agent (own process
//! group, timeout, killed on stop); each gives one `VerificationResult` with the tail of its
//! output; the task fails when a hook with `fail_on_error` does not pass.

use std::path::Path;
use std::time::Duration;

use orca_proto::pb;

use crate::agent::{self, Ending, Invocation, StopReason, StopRx};

/// Timeout of a hook that names none.
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 300;
/// Bytes of a hook's output kept (the tail).
pub const OUTPUT_TAIL: usize = 64 << 10;

fn hook(command: &str, description: &str) -> pb::VerificationHook {
    pb::VerificationHook {
        command: command.into(),
        description: description.into(),
        timeout_seconds: 0,
        fail_on_error: true,
    }
}

/// Checks picked from the workspace's marker files (all required).
pub fn auto_hooks(ws: &Path) -> Vec<pb::VerificationHook> {
    let mut hooks = Vec::new();
    if ws.join("Cargo.toml").is_file() {
        hooks.push(hook("cargo check", "auto: Cargo.toml"));
    }
    if let Ok(text) = std::fs::read_to_string(ws.join("package.json"))
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        && let Some(test) = v.get("scripts").and_then(|s| s.get("test")).and_then(|t| t.as_str())
        // npm's placeholder script only fails.
        && !test.contains("no test specified")
    {
        hooks.push(hook("npm test", "auto: package.json"));
    }
    if ws.join("pyproject.toml").is_file() || ws.join("setup.py").is_file() {
        // Exit status 5 is pytest's "no tests collected".
        hooks.push(hook(
            "if python3 -c 'import pytest' 2>/dev/null; then python3 -m pytest; rc=$?; [ $rc -eq 5 ] && exit 0; exit $rc; else echo 'pytest is not installed; skipped'; fi",
            "auto: pytest",
        ));
    }
    if ws.join("go.mod").is_file() {
        hooks.push(hook("go build ./...", "auto: go.mod"));
    }
    hooks
}

/// Runs the hooks in order. `Err` when the attempt was stopped meanwhile.
pub async fn run_hooks(
    exe: &Path,
    ws: &Path,
    env: &[(String, String)],
    hooks: &[pb::VerificationHook],
    stop: &mut StopRx,
) -> Result<Vec<pb::VerificationResult>, StopReason> {
    let mut results = Vec::with_capacity(hooks.len());
    for h in hooks {
        let secs = if h.timeout_seconds == 0 { DEFAULT_TIMEOUT_SECONDS } else { h.timeout_seconds };
        let inv = Invocation {
            program: "sh".into(),
            args: vec!["-c".into(), h.command.clone().into()],
            env: env.to_vec(),
            cwd: ws.to_path_buf(),
            stdin: Vec::new(),
            timeout: Some(Duration::from_secs(secs as u64)),
        };
        let span = tracing::info_span!("verify", command = %h.command);
        let out = tracing::Instrument::instrument(agent::run(exe, inv, stop, None), span.clone()).await;
        let mut output = agent::text(&out.stdout);
        let err = agent::text(&out.stderr);
        if !err.is_empty() {
            if !output.is_empty() && !output.ends_with('\n') {
                output.push('\n');
            }
            output.push_str(&err);
        }
        let (passed, exit_code) = match &out.ending {
            Ending::Exited(code) => (*code == 0, *code),
            Ending::TimedOut(d) => {
                output.push_str(&format!("\ntimed out after {} s; process group killed", d.as_secs()));
                (false, -1)
            }
            Ending::SpawnFailed(e) => {
                output.push_str(e);
                (false, -1)
            }
            Ending::Stopped(r) => return Err(*r),
        };
        orca_telemetry::attribute(&span, "exit_code", exit_code as i64);
        orca_telemetry::attribute(&span, "passed", passed);
        results.push(pb::VerificationResult {
            command: h.command.clone(),
            description: h.description.clone(),
            passed,
            exit_code,
            output: agent::tail_str(&output, OUTPUT_TAIL).to_string(),
            duration_ms: out.duration.as_millis() as u64,
        });
    }
    Ok(results)
}

/// The first required hook that failed, as an error message.
pub fn failure(hooks: &[pb::VerificationHook], results: &[pb::VerificationResult]) -> Option<String> {
    hooks.iter().zip(results).find(|(h, r)| h.fail_on_error && !r.passed).map(|(h, r)| {
        let name = if h.description.is_empty() { h.command.as_str() } else { h.description.as_str() };
        format!("verification failed: {name} (exit code {}): {}", r.exit_code, agent::tail_str(r.output.trim(), 2_000))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_pick_checks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        assert!(auto_hooks(p).is_empty());
        std::fs::write(p.join("Cargo.toml"), "[package]").unwrap();
        std::fs::write(p.join("go.mod"), "module x").unwrap();
        std::fs::write(p.join("package.json"), r#"{"scripts":{"test":"echo \"Error: no test specified\" && exit 1"}}"#)
            .unwrap();
        let cmds: Vec<String> = auto_hooks(p).into_iter().map(|h| h.command).collect();
        assert_eq!(cmds, vec!["cargo check", "go build ./..."]);
        std::fs::write(p.join("package.json"), r#"{"scripts":{"test":"jest"}}"#).unwrap();
        std::fs::write(p.join("pyproject.toml"), "").unwrap();
        let hooks = auto_hooks(p);
        assert_eq!(hooks.len(), 4);
        assert_eq!(hooks[1].command, "npm test");
        assert!(hooks[2].command.contains("python3 -m pytest"));
        assert!(hooks.iter().all(|h| h.fail_on_error));
    }

    #[test]
    fn only_required_hooks_fail_the_task() {
        let hooks = vec![
            pb::VerificationHook { command: "lint".into(), fail_on_error: false, ..Default::default() },
            pb::VerificationHook {
                command: "test".into(),
                description: "unit tests".into(),
                fail_on_error: true,
                ..Default::default()
            },
        ];
        let r = |passed, code| pb::VerificationResult {
            passed,
            exit_code: code,
            output: "out\n".into(),
            ..Default::default()
        };
        assert_eq!(failure(&hooks, &[r(false, 1), r(true, 0)]), None);
        assert_eq!(
            failure(&hooks, &[r(true, 0), r(false, 2)]).unwrap(),
            "verification failed: unit tests (exit code 2): out"
        );
    }
}
