//! Input checks for every RPC: sizes, counts, ids, priorities, paths, labels, retry policy
//! ranges. Pure functions; each error names the field (`tasks[3].prompt: must not be empty`).
//! Checks that need the current state (does the job exist, do dependencies exist) are in
//! the scheduler.

use orca_proto::{defaults, pb};
use prost::Message;

use crate::error::{Error, invalid};

pub const MAX_BATCH: usize = 10_000;
pub const MAX_PROMPT_BYTES: usize = 1 << 20;
pub const MAX_DESCRIPTION_BYTES: usize = 64 << 10;
pub const MAX_METADATA_BYTES: usize = 64 << 10;
pub const MAX_NAME_BYTES: usize = 256;
pub const MAX_CONTEXT_FILES: usize = 100;
pub const MAX_CONTEXT_BYTES: usize = 8 << 20;
pub const MAX_EXPECTED_OUTPUTS: usize = 100;
pub const MAX_PATH_BYTES: usize = 4096;
pub const MAX_DEPENDENCIES: usize = 1_000;
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -1_000..=1_000;
pub const MAX_RETRIES: u32 = 100;
pub const MAX_TIMEOUT_SECONDS: u32 = 7 * 24 * 3600;
pub const MAX_LABELS: usize = 32;
pub const MAX_HOOKS: usize = 20;
pub const MAX_PAGE_SIZE: u32 = 1_000;
pub const DEFAULT_PAGE_SIZE: u32 = 100;
pub const MAX_CONTEXT_KEY_BYTES: usize = 256;
pub const MAX_CONTEXT_VALUE_BYTES: usize = 64 << 10;
pub const MAX_ID_BYTES: usize = 128;
pub const MAX_SLOTS: u32 = 10_000;
pub const MAX_REPORTS: usize = 10_000;
pub const MAX_PROGRESS_BYTES: usize = 64 << 10;
pub const MAX_RESULT_BYTES: usize = 64 << 20;
pub const PERMISSION_MODES: &[&str] = &["", "default", "acceptEdits", "bypassPermissions", "plan", "dontAsk"];

fn max_len(field: &str, s: &str, max: usize) -> Result<(), Error> {
    if s.len() > max {
        return Err(invalid(field, format!("is {} bytes, at most {max} allowed", s.len())));
    }
    Ok(())
}

fn no_control(field: &str, s: &str) -> Result<(), Error> {
    if s.contains('\0') {
        return Err(invalid(field, "must not contain NUL characters"));
    }
    Ok(())
}

/// A required id string (job or worker id). Its existence is checked elsewhere (NOT_FOUND).
pub fn id(field: &str, s: &str) -> Result<(), Error> {
    if s.is_empty() {
        return Err(invalid(field, "is required"));
    }
    Ok(())
}

/// A path relative to the task's workspace: not absolute, no `..`, no empty parts.
pub fn relative_path(field: &str, p: &str) -> Result<(), Error> {
    if p.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    max_len(field, p, MAX_PATH_BYTES)?;
    no_control(field, p)?;
    if p.starts_with('/') || p.starts_with('\\') {
        return Err(invalid(field, format!("{p:?} must be relative to the workspace")));
    }
    for part in p.split(['/', '\\']) {
        if part == ".." {
            return Err(invalid(field, format!("{p:?} must not contain '..'")));
        }
    }
    Ok(())
}

/// A label key or value: ASCII letters, digits and `_ . - /`.
pub fn label(field: &str, key: &str, value: &str) -> Result<(), Error> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/');
    if key.is_empty() || key.len() > 63 || !key.chars().all(ok_char) {
        return Err(invalid(field, format!("label key {key:?} must be 1-63 characters of [A-Za-z0-9_.-/]")));
    }
    if value.len() > 63 || !value.chars().all(ok_char) {
        return Err(invalid(field, format!("label value {value:?} must be 0-63 characters of [A-Za-z0-9_.-/]")));
    }
    Ok(())
}

pub fn metadata(field: &str, m: &Option<prost_types::Struct>) -> Result<(), Error> {
    if let Some(m) = m {
        let n = m.encoded_len();
        if n > MAX_METADATA_BYTES {
            return Err(invalid(field, format!("is {n} bytes encoded, at most {MAX_METADATA_BYTES} allowed")));
        }
    }
    Ok(())
}

pub fn create_job(r: &pb::CreateJobRequest) -> Result<(), Error> {
    max_len("description", &r.description, MAX_DESCRIPTION_BYTES)?;
    no_control("description", &r.description)?;
    metadata("metadata", &r.metadata)
}

/// A dependency as submitted: an existing task, or an earlier task of the same batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DepRef {
    Task(i64),
    /// 0-based index into the batch.
    Batch(usize),
}

/// A checked task: the spec with its defaults filled in, and its dependencies.
#[derive(Clone, Debug)]
pub struct CheckedTask {
    pub spec: pb::TaskSpec,
    pub deps: Vec<DepRef>,
}

fn dep_ref(field: &str, index: usize, v: i64) -> Result<DepRef, Error> {
    match v {
        0 => Err(invalid(field, "0 is not a task id (use a task id, or -N for the N-th task of this batch)")),
        v if v > 0 => Ok(DepRef::Task(v)),
        v => {
            let n = v.unsigned_abs() as usize;
            if n > index {
                Err(invalid(
                    field,
                    format!(
                        "{v} names task {n} of the batch, which is not earlier than this one (task {}): that would be a cycle",
                        index + 1
                    ),
                ))
            } else {
                Ok(DepRef::Batch(n - 1))
            }
        }
    }
}

/// Checks one task of an AddTasks batch (at `index`) and fills in defaults.
pub fn task(index: usize, mut s: pb::TaskSpec) -> Result<CheckedTask, Error> {
    let f = |name: &str| format!("tasks[{index}].{name}");
    if s.prompt.trim().is_empty() {
        return Err(invalid(f("prompt"), "must not be empty"));
    }
    max_len(&f("prompt"), &s.prompt, MAX_PROMPT_BYTES)?;
    no_control(&f("prompt"), &s.prompt)?;
    max_len(&f("name"), &s.name, MAX_NAME_BYTES)?;
    let priority = s.priority.unwrap_or(defaults::PRIORITY);
    if !PRIORITY_RANGE.contains(&priority) {
        return Err(invalid(
            f("priority"),
            format!("{priority} is outside {}..={}", PRIORITY_RANGE.start(), PRIORITY_RANGE.end()),
        ));
    }
    s.priority = Some(priority);

    let mut deps = Vec::new();
    if let Some(p) = s.parent_task_id {
        deps.push(dep_ref(&f("parent_task_id"), index, p)?);
    }
    if s.depends_on.len() > MAX_DEPENDENCIES {
        return Err(invalid(
            f("depends_on"),
            format!("has {} entries, at most {MAX_DEPENDENCIES} allowed", s.depends_on.len()),
        ));
    }
    for (j, d) in s.depends_on.iter().enumerate() {
        deps.push(dep_ref(&format!("{}[{j}]", f("depends_on")), index, *d)?);
    }
    deps.sort_by_key(|d| match d {
        DepRef::Task(t) => (0, *t),
        DepRef::Batch(b) => (1, *b as i64),
    });
    deps.dedup();

    if s.context_files.len() > MAX_CONTEXT_FILES {
        return Err(invalid(
            f("context_files"),
            format!("has {} files, at most {MAX_CONTEXT_FILES} allowed", s.context_files.len()),
        ));
    }
    let mut total = 0usize;
    for (j, c) in s.context_files.iter().enumerate() {
        relative_path(&format!("{}[{j}].path", f("context_files")), &c.path)?;
        total += c.contents.len();
    }
    if total > MAX_CONTEXT_BYTES {
        return Err(invalid(f("context_files"), format!("hold {total} bytes, at most {MAX_CONTEXT_BYTES} allowed")));
    }
    if s.expected_outputs.len() > MAX_EXPECTED_OUTPUTS {
        return Err(invalid(
            f("expected_outputs"),
            format!("has {} paths, at most {MAX_EXPECTED_OUTPUTS} allowed", s.expected_outputs.len()),
        ));
    }
    for (j, p) in s.expected_outputs.iter().enumerate() {
        relative_path(&format!("{}[{j}]", f("expected_outputs")), p)?;
    }
    if !s.working_dir.is_empty() {
        let field = f("working_dir");
        max_len(&field, &s.working_dir, MAX_PATH_BYTES)?;
        no_control(&field, &s.working_dir)?;
        if !s.working_dir.starts_with('/') {
            return Err(invalid(field, format!("{:?} must be an absolute path", s.working_dir)));
        }
        if s.working_dir.split('/').any(|p| p == "..") {
            return Err(invalid(field, format!("{:?} must not contain '..'", s.working_dir)));
        }
    }
    metadata(&f("metadata"), &s.metadata)?;

    let retries = s.max_retries.unwrap_or(defaults::MAX_RETRIES);
    if retries > MAX_RETRIES {
        return Err(invalid(f("max_retries"), format!("{retries} is more than {MAX_RETRIES}")));
    }
    s.max_retries = Some(retries);
    let mut p = s.retry_policy.take().unwrap_or_default();
    if p.initial_backoff_ms == 0 {
        p.initial_backoff_ms = defaults::INITIAL_BACKOFF_MS;
    }
    if p.multiplier == 0.0 {
        p.multiplier = defaults::BACKOFF_MULTIPLIER;
    }
    if p.max_backoff_ms == 0 {
        p.max_backoff_ms = defaults::MAX_BACKOFF_MS.max(p.initial_backoff_ms);
    }
    if p.initial_backoff_ms > 3_600_000 {
        return Err(invalid(f("retry_policy.initial_backoff_ms"), "must be at most 3600000 (one hour)"));
    }
    if !p.multiplier.is_finite() || !(1.0..=100.0).contains(&p.multiplier) {
        return Err(invalid(f("retry_policy.multiplier"), format!("{} is outside 1..=100", p.multiplier)));
    }
    if p.max_backoff_ms < p.initial_backoff_ms || p.max_backoff_ms > 86_400_000 {
        return Err(invalid(
            f("retry_policy.max_backoff_ms"),
            format!(
                "{} must be between initial_backoff_ms ({}) and 86400000 (one day)",
                p.max_backoff_ms, p.initial_backoff_ms
            ),
        ));
    }
    s.retry_policy = Some(p);
    if s.timeout_seconds > MAX_TIMEOUT_SECONDS {
        return Err(invalid(
            f("timeout_seconds"),
            format!("{} is more than {MAX_TIMEOUT_SECONDS} (7 days)", s.timeout_seconds),
        ));
    }
    if s.required_labels.len() > MAX_LABELS {
        return Err(invalid(
            f("required_labels"),
            format!("has {} labels, at most {MAX_LABELS} allowed", s.required_labels.len()),
        ));
    }
    for (k, v) in &s.required_labels {
        label(&f("required_labels"), k, v)?;
    }
    if s.verification.len() > MAX_HOOKS {
        return Err(invalid(
            f("verification"),
            format!("has {} hooks, at most {MAX_HOOKS} allowed", s.verification.len()),
        ));
    }
    for (j, h) in s.verification.iter().enumerate() {
        let field = format!("{}[{j}]", f("verification"));
        if h.command.trim().is_empty() {
            return Err(invalid(format!("{field}.command"), "must not be empty"));
        }
        max_len(&format!("{field}.command"), &h.command, MAX_PATH_BYTES)?;
        no_control(&format!("{field}.command"), &h.command)?;
        max_len(&format!("{field}.description"), &h.description, MAX_NAME_BYTES * 4)?;
        if h.timeout_seconds > 86_400 {
            return Err(invalid(format!("{field}.timeout_seconds"), "must be at most 86400"));
        }
    }
    if let Some(a) = &s.agent {
        max_len(&f("agent.model"), &a.model, MAX_NAME_BYTES)?;
        if a.max_turns > 10_000 {
            return Err(invalid(f("agent.max_turns"), "must be at most 10000"));
        }
        if a.allowed_tools.len() > 100 {
            return Err(invalid(f("agent.allowed_tools"), "at most 100 tools"));
        }
        for (j, t) in a.allowed_tools.iter().enumerate() {
            if t.is_empty() || t.len() > MAX_NAME_BYTES {
                return Err(invalid(format!("{}[{j}]", f("agent.allowed_tools")), "must be 1-256 bytes"));
            }
        }
        if !PERMISSION_MODES.contains(&a.permission_mode.as_str()) {
            return Err(invalid(
                f("agent.permission_mode"),
                format!("{:?} is not one of {}", a.permission_mode, PERMISSION_MODES[1..].join(", ")),
            ));
        }
        if !a.max_budget_usd.is_finite() || a.max_budget_usd < 0.0 {
            return Err(invalid(f("agent.max_budget_usd"), "must be a non-negative number"));
        }
    }
    Ok(CheckedTask { spec: s, deps })
}

pub fn add_tasks(r: pb::AddTasksRequest) -> Result<(String, Vec<CheckedTask>), Error> {
    id("job_id", &r.job_id)?;
    if r.tasks.is_empty() {
        return Err(invalid("tasks", "must not be empty"));
    }
    if r.tasks.len() > MAX_BATCH {
        return Err(invalid("tasks", format!("has {} tasks, at most {MAX_BATCH} per batch", r.tasks.len())));
    }
    let tasks = r.tasks.into_iter().enumerate().map(|(i, s)| task(i, s)).collect::<Result<_, _>>()?;
    Ok((r.job_id, tasks))
}

pub fn page_size(field: &str, n: u32) -> Result<u32, Error> {
    match n {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n > MAX_PAGE_SIZE => Err(invalid(field, format!("{n} is more than {MAX_PAGE_SIZE}"))),
        n => Ok(n),
    }
}

/// A page token of ListTasks: the last task id of the previous page.
pub fn task_page_token(t: &str) -> Result<i64, Error> {
    if t.is_empty() {
        return Ok(0);
    }
    t.parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| invalid("page_token", format!("{t:?} is not a token from a previous page")))
}

pub fn context_key(key: &str, value: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(invalid("key", "must not be empty"));
    }
    max_len("key", key, MAX_CONTEXT_KEY_BYTES)?;
    no_control("key", key)?;
    max_len("value", value, MAX_CONTEXT_VALUE_BYTES)?;
    no_control("value", value)
}

pub fn register(r: &pb::RegisterRequest) -> Result<(), Error> {
    if r.slots == 0 || r.slots > MAX_SLOTS {
        return Err(invalid("slots", format!("{} is outside 1..={MAX_SLOTS}", r.slots)));
    }
    if !r.worker_id.is_empty() {
        max_len("worker_id", &r.worker_id, MAX_ID_BYTES)?;
        if !r.worker_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':')) {
            return Err(invalid("worker_id", "must be characters of [A-Za-z0-9_.-:]"));
        }
    }
    max_len("name", &r.name, MAX_NAME_BYTES)?;
    max_len("hostname", &r.hostname, MAX_NAME_BYTES)?;
    if r.labels.len() > MAX_LABELS {
        return Err(invalid("labels", format!("at most {MAX_LABELS} labels")));
    }
    for (k, v) in &r.labels {
        label("labels", k, v)?;
    }
    if r.running.len() > MAX_SLOTS as usize {
        return Err(invalid("running", "too many entries"));
    }
    Ok(())
}

pub fn report(r: &pb::ReportRequest) -> Result<(), Error> {
    id("worker_id", &r.worker_id)?;
    if r.reports.is_empty() {
        return Err(invalid("reports", "must not be empty"));
    }
    if r.reports.len() > MAX_REPORTS {
        return Err(invalid("reports", format!("has {} reports, at most {MAX_REPORTS}", r.reports.len())));
    }
    for (i, rep) in r.reports.iter().enumerate() {
        use pb::report::Body;
        match &rep.body {
            None => return Err(invalid(format!("reports[{i}].body"), "is required")),
            Some(Body::Progress(p)) => {
                max_len(&format!("reports[{i}].progress.message"), &p.message, MAX_PROGRESS_BYTES)?
            }
            Some(Body::Completed(pb::Completed { result: Some(res) }))
            | Some(Body::Failed(pb::Failed { result: Some(res), .. })) => {
                let n = res.encoded_len();
                if n > MAX_RESULT_BYTES {
                    return Err(invalid(
                        format!("reports[{i}].result"),
                        format!("is {n} bytes, at most {MAX_RESULT_BYTES}"),
                    ));
                }
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(prompt: &str) -> pb::TaskSpec {
        pb::TaskSpec { prompt: prompt.into(), ..Default::default() }
    }

    #[test]
    fn defaults_are_filled_in() {
        let t = task(0, spec("hi")).unwrap();
        assert_eq!(t.spec.priority, Some(5));
        assert_eq!(t.spec.max_retries, Some(0));
        let p = t.spec.retry_policy.unwrap();
        assert_eq!((p.initial_backoff_ms, p.multiplier, p.max_backoff_ms), (1_000, 2.0, 60_000));
    }

    #[test]
    fn bad_tasks_name_the_field() {
        let cases: Vec<(pb::TaskSpec, &str)> = vec![
            (spec(""), "tasks[0].prompt: must not be empty"),
            (spec("   "), "tasks[0].prompt"),
            (pb::TaskSpec { priority: Some(5000), ..spec("x") }, "tasks[0].priority"),
            (pb::TaskSpec { depends_on: vec![-1], ..spec("x") }, "cycle"),
            (pb::TaskSpec { depends_on: vec![0], ..spec("x") }, "tasks[0].depends_on[0]"),
            (pb::TaskSpec { parent_task_id: Some(-3), ..spec("x") }, "tasks[0].parent_task_id"),
            (
                pb::TaskSpec {
                    context_files: vec![pb::ContextFile { path: "../etc/passwd".into(), contents: vec![] }],
                    ..spec("x")
                },
                "tasks[0].context_files[0].path",
            ),
            (pb::TaskSpec { expected_outputs: vec!["/abs".into()], ..spec("x") }, "must be relative"),
            (pb::TaskSpec { working_dir: "rel/dir".into(), ..spec("x") }, "tasks[0].working_dir"),
            (pb::TaskSpec { max_retries: Some(1000), ..spec("x") }, "tasks[0].max_retries"),
            (
                pb::TaskSpec {
                    retry_policy: Some(pb::RetryPolicy { multiplier: 0.5, ..Default::default() }),
                    ..spec("x")
                },
                "tasks[0].retry_policy.multiplier",
            ),
            (
                pb::TaskSpec {
                    retry_policy: Some(pb::RetryPolicy {
                        initial_backoff_ms: 5_000,
                        max_backoff_ms: 10,
                        multiplier: 2.0,
                    }),
                    ..spec("x")
                },
                "tasks[0].retry_policy.max_backoff_ms",
            ),
            (pb::TaskSpec { timeout_seconds: u32::MAX, ..spec("x") }, "tasks[0].timeout_seconds"),
            (
                pb::TaskSpec { required_labels: [("bad key".to_string(), "v".to_string())].into(), ..spec("x") },
                "label key",
            ),
            (
                pb::TaskSpec {
                    verification: vec![pb::VerificationHook { command: " ".into(), ..Default::default() }],
                    ..spec("x")
                },
                "tasks[0].verification[0].command",
            ),
            (
                pb::TaskSpec {
                    agent: Some(pb::AgentOptions { permission_mode: "yolo".into(), ..Default::default() }),
                    ..spec("x")
                },
                "tasks[0].agent.permission_mode",
            ),
            (pb::TaskSpec { prompt: "a\0b".into(), ..Default::default() }, "NUL"),
            (pb::TaskSpec { prompt: "x".repeat(MAX_PROMPT_BYTES + 1), ..Default::default() }, "at most"),
        ];
        for (s, want) in cases {
            let err = task(0, s.clone()).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
            assert!(err.to_string().contains(want), "{err} should contain {want:?}");
        }
    }

    #[test]
    fn batch_references_resolve_to_earlier_tasks() {
        let t =
            task(2, pb::TaskSpec { depends_on: vec![-1, -2, 7, 7], parent_task_id: Some(-1), ..spec("x") }).unwrap();
        assert_eq!(t.deps, vec![DepRef::Task(7), DepRef::Batch(0), DepRef::Batch(1)]);
    }

    #[test]
    fn empty_and_oversized_batches_are_refused() {
        let err = add_tasks(pb::AddTasksRequest { job_id: "j".into(), tasks: vec![] }).unwrap_err();
        assert_eq!(err.to_string(), "tasks: must not be empty");
        let err = add_tasks(pb::AddTasksRequest { job_id: "".into(), tasks: vec![spec("x")] }).unwrap_err();
        assert_eq!(err.to_string(), "job_id: is required");
        let many = vec![spec("x"); MAX_BATCH + 1];
        assert!(add_tasks(pb::AddTasksRequest { job_id: "j".into(), tasks: many }).is_err());
    }

    #[test]
    fn paths_stay_relative() {
        for ok in ["a.txt", "src/main.rs", "./x", "a..b"] {
            relative_path("p", ok).unwrap();
        }
        for bad in ["", "/etc", "a/../../b", "..", "\\x"] {
            assert!(relative_path("p", bad).is_err(), "{bad}");
        }
    }
}
