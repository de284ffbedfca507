//! The `demo` agent: a stand-in that needs nothing installed, for `orca up --demo` and for
//! trying Orca without Claude Code. It runs as a `command` agent (same supervision, same
//! result rules) whose template is the shell script below: it reads the composed prompt on
//! stdin, works for a moment, creates every expected output with a note saying what it was
//! asked, and prints a short answer naming the task. It calls no model.

/// The script, run with `sh -c` like any `--agent-command` template.
pub const SCRIPT: &str = r###"prompt=$(cat)
task=$(printf '%s\n' "$prompt" | awk '/^## Task$/ {f = 1; next} f' | head -n 1)
[ -n "$task" ] || task=$(printf '%s\n' "$prompt" | head -n 1)
sleep "0.$(( (${ORCA_TASK_ID:-1} * 37) % 9 + 1 ))"
outputs=$(printf '%s\n' "$prompt" | awk '/^## Expected outputs$/ {f = 1; next} /^## / {f = 0} f && /^- / {print substr($0, 3)}')
printf '%s\n' "$outputs" | while IFS= read -r path; do
  [ -n "$path" ] || continue
  mkdir -p "$(dirname "$path")"
  printf '%s\n' "// $task" "// written by Orca's demo agent for task ${ORCA_TASK_ID:-?} (no model was called)" >"$path"
done
case "$prompt" in
  *"## Previous attempt"*) echo "Retried after a failure; this time it went through." ;;
esac
n=$(printf '%s\n' "$prompt" | grep -c '^## Task [0-9]' || true)
if [ "$n" -gt 0 ]; then
  echo "Reviewed $n task results: all of them are in the report above; nothing is missing."
else
  echo "Done: $task"
fi
[ -z "$outputs" ] || echo "Wrote: $(printf '%s' "$outputs" | tr '\n' ' ')"
"###;

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::process::{Command, Stdio};

    fn run(dir: &std::path::Path, prompt: &str) -> String {
        let mut child = Command::new("sh")
            .args(["-c", super::SCRIPT])
            .current_dir(dir)
            .env("ORCA_TASK_ID", "7")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(prompt.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn it_writes_the_expected_outputs_and_names_the_task() {
        let d = tempfile::tempdir().unwrap();
        let prompt = crate::prompt::compose(
            &orca_proto::pb::TaskSpec {
                prompt: "Create server.js\nwith details".into(),
                expected_outputs: vec!["server.js".into(), "routes/tasks.js".into()],
                ..Default::default()
            },
            &[],
            "",
        );
        let out = run(d.path(), &prompt);
        assert!(out.starts_with("Done: Create server.js\nWrote: server.js routes/tasks.js"), "{out}");
        let f = std::fs::read_to_string(d.path().join("routes/tasks.js")).unwrap();
        assert!(f.starts_with("// Create server.js\n// written by Orca's demo agent for task 7"), "{f}");
    }

    #[test]
    fn a_bare_prompt_and_a_report_get_an_answer() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(run(d.path(), "say hi"), "Done: say hi\n");
        let out = run(d.path(), "Review\n\n## Task 1 (completed)\nPrompt: a\n\n## Task 2 (completed)\nPrompt: b\n");
        assert_eq!(out, "Reviewed 2 task results: all of them are in the report above; nothing is missing.\n");
    }
}
