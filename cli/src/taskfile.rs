//! `orca submit --file F`: tasks from a JSON file (an array of tasks, or `{"tasks": [...]}`)
//! or a TOML file (`[[tasks]]`). Keys are `TaskSpec`'s snake_case fields plus `name`; a
//! `depends_on` item is the name of an earlier task of the file or its 0-based index. Any
//! other file is one prompt per line (what `--file` always took).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use orca_client::{Subtask, json_to_struct, pb};
use serde::Deserialize;
use serde_json::Value;

/// A dependency on another task of the file.
#[derive(Deserialize)]
#[serde(untagged)]
enum Dep {
    Index(usize),
    Name(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileContext {
    path: String,
    /// The file's text.
    contents: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHook {
    command: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    timeout_seconds: u32,
    #[serde(default = "yes")]
    fail_on_error: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRetry {
    #[serde(default)]
    initial_backoff_ms: u32,
    #[serde(default)]
    multiplier: f64,
    #[serde(default)]
    max_backoff_ms: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAgent {
    #[serde(default)]
    model: String,
    #[serde(default)]
    max_turns: u32,
    #[serde(default)]
    allowed_tools: Vec<String>,
    #[serde(default)]
    permission_mode: String,
    #[serde(default)]
    max_budget_usd: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGit {
    repo: String,
    #[serde(default)]
    base: String,
    #[serde(default)]
    branch: String,
    #[serde(default)]
    push: bool,
    #[serde(default)]
    author: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTask {
    prompt: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    priority: Option<i32>,
    #[serde(default)]
    depends_on: Vec<Dep>,
    #[serde(default)]
    context_files: Vec<FileContext>,
    #[serde(default)]
    expected_outputs: Vec<String>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    max_retries: Option<u32>,
    #[serde(default)]
    retry_policy: Option<FileRetry>,
    #[serde(default)]
    timeout_seconds: Option<u32>,
    #[serde(default)]
    required_labels: BTreeMap<String, String>,
    #[serde(default)]
    verification: Vec<FileHook>,
    #[serde(default)]
    auto_verify: Option<bool>,
    #[serde(default)]
    agent: Option<FileAgent>,
    #[serde(default)]
    git: Option<FileGit>,
    /// RFC 3339 text or unix seconds.
    #[serde(default)]
    run_at: Option<Value>,
}

/// What a `--file` holds.
pub enum Contents {
    /// One prompt per line.
    Lines(String),
    Tasks(Vec<Subtask>),
}

/// Reads `path`: JSON by its `.json` extension or a leading `[` / `{`, TOML by `.toml`,
/// otherwise lines. Errors name the file and the task (`tasks[2].depends_on[0]: ...`).
pub fn read(path: &Path, text: String) -> Result<Contents, String> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
    let head = text.trim_start().chars().next();
    let value: Value = match ext {
        "toml" => toml::from_str(&text).map_err(|e| format!("{}: not valid TOML: {e}", path.display()))?,
        "json" => serde_json::from_str(&text).map_err(|e| format!("{}: not valid JSON: {e}", path.display()))?,
        _ if matches!(head, Some('[') | Some('{')) => {
            serde_json::from_str(&text).map_err(|e| format!("{}: not valid JSON: {e}", path.display()))?
        }
        _ => return Ok(Contents::Lines(text)),
    };
    parse(value).map(Contents::Tasks).map_err(|e| format!("{}: {e}", path.display()))
}

/// The tasks of a parsed file.
fn parse(value: Value) -> Result<Vec<Subtask>, String> {
    let list = match value {
        Value::Array(a) => a,
        Value::Object(mut m) => match m.remove("tasks") {
            Some(Value::Array(a)) if m.is_empty() => a,
            Some(Value::Array(_)) => {
                let other = m.keys().next().cloned().unwrap_or_default();
                return Err(format!("unknown key {other:?} beside tasks"));
            }
            _ => return Err("expected an array of tasks, or an object with a \"tasks\" array".into()),
        },
        _ => return Err("expected an array of tasks, or an object with a \"tasks\" array".into()),
    };
    if list.is_empty() {
        return Err("tasks: no task in the file".into());
    }
    let mut tasks = Vec::with_capacity(list.len());
    for (i, v) in list.into_iter().enumerate() {
        let t: FileTask = serde_json::from_value(v).map_err(|e| format!("tasks[{i}]: {e}"))?;
        tasks.push(t);
    }
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, t) in tasks.iter().enumerate() {
        if let Some(n) = &t.name
            && let Some(first) = names.insert(n.clone(), i)
        {
            return Err(format!("tasks[{i}].name: {n:?} is also the name of tasks[{first}]"));
        }
    }
    tasks.into_iter().enumerate().map(|(i, t)| subtask(i, t, &names)).collect()
}

/// A task's `run_at`: RFC 3339 text, unix seconds, or a TOML date-time.
fn run_at_of(i: usize, v: &Value) -> Result<orca_client::time::Timestamp, String> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        // A TOML date-time written without quotes.
        Value::Object(m) if m.len() == 1 && m.contains_key("$__toml_private_datetime") => {
            m["$__toml_private_datetime"].as_str().unwrap_or_default().to_string()
        }
        _ => return Err(format!("tasks[{i}].run_at: expected RFC 3339 text or unix seconds")),
    };
    let at = orca_client::time::parse_time(&text).map_err(|e| format!("tasks[{i}].run_at: {e}"))?;
    Ok(orca_client::time::timestamp(at))
}

fn subtask(i: usize, t: FileTask, names: &HashMap<String, usize>) -> Result<Subtask, String> {
    let mut depends_on = Vec::with_capacity(t.depends_on.len());
    for (j, d) in t.depends_on.iter().enumerate() {
        let at = match d {
            Dep::Index(n) => *n,
            Dep::Name(n) => *names
                .get(n)
                .ok_or_else(|| format!("tasks[{i}].depends_on[{j}]: no task of the file is named {n:?}"))?,
        };
        if at >= i {
            return Err(format!(
                "tasks[{i}].depends_on[{j}]: tasks[{at}] is not before this task (list a task after those it depends on)"
            ));
        }
        // Within one AddTasks call, -N names the call's N-th task.
        depends_on.push(-(at as i64 + 1));
    }
    let run_at = t.run_at.as_ref().map(|v| run_at_of(i, v)).transpose()?;
    let metadata = match &t.metadata {
        Some(m) => Some(json_to_struct(m).map_err(|e| format!("tasks[{i}].metadata: {e}"))?),
        None => None,
    };
    let spec = pb::TaskSpec {
        prompt: t.prompt,
        priority: t.priority,
        depends_on,
        context_files: t
            .context_files
            .into_iter()
            .map(|c| pb::ContextFile { path: c.path, contents: c.contents.into_bytes() })
            .collect(),
        expected_outputs: t.expected_outputs,
        working_dir: t.working_dir.unwrap_or_default(),
        metadata,
        max_retries: t.max_retries,
        retry_policy: t.retry_policy.map(|r| pb::RetryPolicy {
            initial_backoff_ms: r.initial_backoff_ms,
            multiplier: r.multiplier,
            max_backoff_ms: r.max_backoff_ms,
        }),
        timeout_seconds: t.timeout_seconds.unwrap_or(0),
        required_labels: t.required_labels.into_iter().collect(),
        verification: t
            .verification
            .into_iter()
            .map(|h| pb::VerificationHook {
                command: h.command,
                description: h.description,
                timeout_seconds: h.timeout_seconds,
                fail_on_error: h.fail_on_error,
            })
            .collect(),
        auto_verify: t.auto_verify.unwrap_or(true),
        agent: t.agent.map(|a| pb::AgentOptions {
            model: a.model,
            max_turns: a.max_turns,
            allowed_tools: a.allowed_tools,
            permission_mode: a.permission_mode,
            max_budget_usd: a.max_budget_usd,
        }),
        name: t.name.unwrap_or_default(),
        parent_task_id: None,
        trace_parent: String::new(),
        git: t.git.map(|g| pb::GitSource {
            repo: g.repo,
            base: g.base,
            branch: g.branch,
            push: g.push,
            author: g.author,
            message: g.message,
            ..Default::default()
        }),
        run_at,
    };
    Ok(Subtask::from_spec(spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tasks(path: &str, text: &str) -> Result<Vec<pb::TaskSpec>, String> {
        match read(Path::new(path), text.to_string())? {
            Contents::Tasks(t) => Ok(t.iter().map(|s| s.spec().clone()).collect()),
            Contents::Lines(_) => Err("lines".into()),
        }
    }

    #[test]
    fn run_at_takes_rfc3339_unix_seconds_and_toml_date_times() {
        let json = r#"[{"prompt": "a", "run_at": "2026-01-01T00:00:00Z"}, {"prompt": "b", "run_at": 1767225600}]"#;
        let t = tasks("t.json", json).unwrap();
        let secs = |t: &pb::TaskSpec| t.run_at.map(|r| (r.seconds, r.nanos));
        let want = Some((1_767_225_600, 0));
        assert_eq!((secs(&t[0]), secs(&t[1])), (want, want));
        let toml = "[[tasks]]\nprompt = \"a\"\nrun_at = 2026-01-01T00:00:00Z\n";
        assert_eq!(secs(&tasks("t.toml", toml).unwrap()[0]), want);
        let e = tasks("t.json", r#"[{"prompt": "a", "run_at": "soon"}]"#).unwrap_err();
        assert!(e.contains("tasks[0].run_at: \"soon\" is not a time"), "{e}");
    }

    #[test]
    fn json_and_toml_name_dependencies_by_name_or_index() {
        let json = r#"{"tasks": [
            {"name": "api", "prompt": "Build the API", "priority": 9, "expected_outputs": ["api.py"]},
            {"prompt": "Test it", "depends_on": ["api"], "max_retries": 2},
            {"prompt": "Document it", "depends_on": [0, 1], "required_labels": {"gpu": "a100"}}
        ]}"#;
        let got = tasks("tasks.json", json).unwrap();
        assert_eq!(got[0].name, "api");
        assert_eq!(got[0].priority, Some(9));
        assert_eq!(got[1].depends_on, vec![-1]);
        assert_eq!(got[1].max_retries, Some(2));
        assert_eq!(got[2].depends_on, vec![-1, -2]);
        assert!(got[2].auto_verify);
        let toml = "[[tasks]]\nname = \"api\"\nprompt = \"Build the API\"\n\n[[tasks]]\nprompt = \"Test it\"\ndepends_on = [\"api\"]\n[[tasks.verification]]\ncommand = \"pytest\"\n";
        let got = tasks("tasks.toml", toml).unwrap();
        assert_eq!(got[1].depends_on, vec![-1]);
        assert_eq!(got[1].verification[0].command, "pytest");
        assert!(got[1].verification[0].fail_on_error);
        // A bare array works too.
        assert_eq!(tasks("t.json", r#"[{"prompt": "a"}]"#).unwrap().len(), 1);
    }

    #[test]
    fn mistakes_name_the_task_and_the_field() {
        let e = tasks("t.json", r#"[{"prompt": "a", "depends_on": ["b"]}]"#).unwrap_err();
        assert_eq!(e, "t.json: tasks[0].depends_on[0]: no task of the file is named \"b\"");
        let e = tasks("t.json", r#"[{"prompt": "a", "depends_on": [1]}, {"prompt": "b"}]"#).unwrap_err();
        assert!(e.contains("tasks[0].depends_on[0]: tasks[1] is not before this task"), "{e}");
        let e = tasks("t.json", r#"[{"prompt": "a", "priorty": 3}]"#).unwrap_err();
        assert!(e.starts_with("t.json: tasks[0]: unknown field `priorty`"), "{e}");
        let e = tasks("t.json", r#"[{"name": "x", "prompt": "a"}, {"name": "x", "prompt": "b"}]"#).unwrap_err();
        assert!(e.contains("tasks[1].name: \"x\" is also the name of tasks[0]"), "{e}");
        assert!(tasks("t.json", "[]").unwrap_err().contains("no task"));
        assert!(tasks("t.toml", "tasks = 3").unwrap_err().contains("expected an array of tasks"));
    }

    #[test]
    fn other_files_are_lines() {
        assert!(matches!(read(Path::new("prompts.txt"), "a\nb\n".into()).unwrap(), Contents::Lines(_)));
    }
}
