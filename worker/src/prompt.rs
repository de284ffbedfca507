//! Composition of the prompt an agent receives. The format is documented in
//! `docs/worker.md` and is part of what task authors rely on, so it stays stable:
//!
//! ```text
//! ## Shared context
//! - global.KEY: VALUE
//! - job.KEY: VALUE
//!
//! ## Context files
//! These files are in your working directory:
//! - PATH (N bytes)
//!
//! ## Expected outputs
//! Create these files, relative to your working directory:
//! - PATH
//!
//! ## Previous attempt
//! The previous attempt failed with: ERROR
//!
//! ## Task
//! PROMPT
//! ```
//!
//! A section with nothing in it is left out; with no section at all the prompt is exactly
//! the task's prompt. Continuation lines of multi-line values are indented by two spaces.

use std::fmt::Write;

use orca_proto::pb;

fn push_item(out: &mut String, head: &str, value: &str) {
    let mut lines = value.lines();
    let first = lines.next().unwrap_or("");
    let _ = writeln!(out, "- {head}{first}");
    for l in lines {
        let _ = writeln!(out, "  {l}");
    }
}

/// Bytes of a previous attempt's error quoted in the prompt at most (its tail is cut).
pub const MAX_PREVIOUS_ERROR_BYTES: usize = 4 << 10;

/// The agent's prompt for a task: the shared context (global entries, then the job's, as the
/// coordinator sends them), the context files, the expected outputs, the error of the
/// previous attempt when this one retries it, then the task prompt.
pub fn compose(spec: &pb::TaskSpec, context: &[pb::ContextEntry], previous_error: &str) -> String {
    let mut out = String::new();
    if !context.is_empty() {
        out.push_str("## Shared context\n");
        for e in context {
            push_item(&mut out, &format!("{}.{}: ", e.scope, e.key), &e.value);
        }
        out.push('\n');
    }
    if !spec.context_files.is_empty() {
        out.push_str("## Context files\nThese files are in your working directory:\n");
        for f in &spec.context_files {
            let _ = writeln!(out, "- {} ({} bytes)", f.path, f.contents.len());
        }
        out.push('\n');
    }
    if !spec.expected_outputs.is_empty() {
        out.push_str("## Expected outputs\nCreate these files, relative to your working directory:\n");
        for p in &spec.expected_outputs {
            let _ = writeln!(out, "- {p}");
        }
        out.push('\n');
    }
    if !previous_error.is_empty() {
        let kept = orca_proto::contract::head_str(previous_error, MAX_PREVIOUS_ERROR_BYTES);
        let cut = if kept.len() < previous_error.len() { " [...]" } else { "" };
        out.push_str("## Previous attempt\n");
        let mut lines = kept.lines();
        let _ = write!(out, "The previous attempt failed with: {}", lines.next().unwrap_or(""));
        for l in lines {
            let _ = write!(out, "\n  {l}");
        }
        let _ = writeln!(out, "{cut}\n");
    }
    if out.is_empty() {
        return spec.prompt.clone();
    }
    out.push_str("## Task\n");
    out.push_str(&spec.prompt);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_task_is_its_prompt() {
        let spec = pb::TaskSpec { prompt: "say hi".into(), ..Default::default() };
        assert_eq!(compose(&spec, &[], ""), "say hi");
    }

    #[test]
    fn sections_come_in_order() {
        let spec = pb::TaskSpec {
            prompt: "Summarize the notes.".into(),
            context_files: vec![pb::ContextFile { path: "notes/a.txt".into(), contents: b"hello".to_vec() }],
            expected_outputs: vec!["summary.md".into(), "out/b.json".into()],
            ..Default::default()
        };
        let ctx = vec![
            pb::ContextEntry { scope: "global".into(), key: "style".into(), value: "terse".into() },
            pb::ContextEntry { scope: "job".into(), key: "goal".into(), value: "line one\nline two".into() },
        ];
        let expected = "\
## Shared context
- global.style: terse
- job.goal: line one
  line two

## Context files
These files are in your working directory:
- notes/a.txt (5 bytes)

## Expected outputs
Create these files, relative to your working directory:
- summary.md
- out/b.json

## Task
Summarize the notes.";
        assert_eq!(compose(&spec, &ctx, ""), expected);
    }

    #[test]
    fn a_retry_quotes_the_previous_error_before_the_task() {
        let spec = pb::TaskSpec { prompt: "fix it".into(), ..Default::default() };
        assert_eq!(
            compose(&spec, &[], "exit 1: tests failed\nassert x == 2"),
            "## Previous attempt\nThe previous attempt failed with: exit 1: tests failed\n  assert x == 2\n\n## Task\nfix it"
        );
        let long = "é".repeat(MAX_PREVIOUS_ERROR_BYTES);
        let got = compose(&spec, &[], &long);
        assert!(got.contains(" [...]\n\n## Task\nfix it"));
        assert!(got.len() < MAX_PREVIOUS_ERROR_BYTES + 200);
    }

    #[test]
    fn only_outputs() {
        let spec = pb::TaskSpec { prompt: "p".into(), expected_outputs: vec!["x".into()], ..Default::default() };
        assert_eq!(
            compose(&spec, &[], ""),
            "## Expected outputs\nCreate these files, relative to your working directory:\n- x\n\n## Task\np"
        );
    }
}
