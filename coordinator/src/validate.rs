//! Input checks for every RPC: sizes, counts, ids, priorities, paths, labels, retry policy
//! ranges. Pure functions over the contract's rules (`orca_proto::contract`); each error
//! names the field (`tasks[3].prompt: must not be empty`). Checks that need the current state
//! (does the job exist, do dependencies exist) are in the scheduler.

use std::collections::HashMap;
use std::fmt::Display;

use orca_proto::contract::{self, Violation, defaults, limits};
use orca_proto::pb;
use prost::Message;

use crate::dispatch::ControlsUpdate;
use crate::error::{Error, invalid};
use crate::queue::Controls;
use crate::schedule::Pattern;

fn rule(field: impl Display, r: Result<(), Violation>) -> Result<(), Error> {
    r.map_err(|v| invalid(field, v))
}

/// A free-text field: at most `max` bytes, no NUL.
fn text(field: impl Display, s: &str, max: usize) -> Result<(), Error> {
    rule(field, contract::text(s, max))
}

/// At most `max` entries.
fn count(field: impl Display, n: usize, max: usize, what: &str) -> Result<(), Error> {
    if n > max {
        return Err(invalid(field, format!("has {n} {what}, at most {max} allowed")));
    }
    Ok(())
}

/// A required id string (job or worker id). Its existence is checked elsewhere (NOT_FOUND).
pub fn id(field: &str, s: &str) -> Result<(), Error> {
    if s.is_empty() {
        return Err(invalid(field, "is required"));
    }
    text(field, s, limits::MAX_ID_BYTES)
}

/// A path relative to the task's workspace (the contract's one rule).
pub fn relative_path(field: &str, p: &str) -> Result<(), Error> {
    rule(field, contract::relative_file(p))
}

pub fn metadata(field: &str, m: &Option<prost_types::Struct>) -> Result<(), Error> {
    if let Some(m) = m {
        let n = m.encoded_len();
        if n > limits::MAX_METADATA_BYTES {
            return Err(invalid(
                field,
                format!("is {n} bytes encoded, at most {} allowed", limits::MAX_METADATA_BYTES),
            ));
        }
    }
    Ok(())
}

/// Checks a CreateJob request and returns the job's controls (defaults filled in).
pub fn create_job(r: &pb::CreateJobRequest) -> Result<Controls, Error> {
    text("description", &r.description, limits::MAX_DESCRIPTION_BYTES)?;
    metadata("metadata", &r.metadata)?;
    let weight = if r.weight == 0 { 1 } else { weight("weight", r.weight)? };
    Ok(Controls { weight, max_running: r.max_running, budget_usd: budget("budget_usd", r.budget_usd)?, paused: false })
}

fn weight(field: &str, w: u32) -> Result<u32, Error> {
    if !(1..=limits::MAX_JOB_WEIGHT).contains(&w) {
        return Err(invalid(field, format!("{w} is outside 1..={}", limits::MAX_JOB_WEIGHT)));
    }
    Ok(w)
}

fn budget(field: &str, usd: f64) -> Result<f64, Error> {
    if !usd.is_finite() || usd < 0.0 {
        return Err(invalid(field, format!("{usd} is not a number of dollars (0 for no budget)")));
    }
    Ok(usd)
}

/// Checks a CreateSchedule request: its name, pattern, job template and tasks (as an
/// AddTasks batch whose dependencies stay inside it, without `run_at`: each tick makes a
/// new job, so a fixed time would be wrong from the second tick on).
pub fn create_schedule(r: &pb::CreateScheduleRequest) -> Result<Pattern, Error> {
    schedule_name(&r.name)?;
    let pattern: Pattern = r.cron.parse().map_err(|e: String| invalid("cron", e))?;
    create_job(r.job.as_ref().unwrap_or(&pb::CreateJobRequest::default())).map_err(|e| match e {
        Error::InvalidArgument(m) => Error::InvalidArgument(format!("job.{m}")),
        e => e,
    })?;
    for (i, t) in r.tasks.iter().enumerate() {
        if t.run_at.is_some() {
            return Err(invalid(
                format!("tasks[{i}].run_at"),
                "is not allowed in a schedule (each tick makes a new job)",
            ));
        }
        let external = t.depends_on.iter().chain(&t.parent_task_id).find(|&&d| d > 0);
        if let Some(d) = external {
            return Err(invalid(
                format!("tasks[{i}].depends_on"),
                format!("task {d}: a schedule's tasks may depend only on each other (-N)"),
            ));
        }
    }
    schedule_tasks(r.tasks.clone())?;
    Ok(pattern)
}

/// A schedule's tasks as the batch each tick adds.
pub fn schedule_tasks(tasks: Vec<pb::TaskSpec>) -> Result<Vec<CheckedTask>, Error> {
    let (_, mut tasks) =
        add_tasks(pb::AddTasksRequest { job_id: "schedule".into(), tasks, request_id: String::new() })?;
    git_builds_on(&mut tasks, &HashMap::new())?;
    Ok(tasks)
}

/// A schedule's name: 1-64 bytes of letters, digits, '.', '_' and '-'.
pub fn schedule_name(name: &str) -> Result<(), Error> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 64 || !name.chars().all(ok) {
        return Err(invalid("name", format!("{name:?} is not 1-64 letters, digits, '.', '_' or '-'")));
    }
    Ok(())
}

/// Checks an UpdateJob request: at least one control, each in range.
pub fn update_job(r: &pb::UpdateJobRequest) -> Result<ControlsUpdate, Error> {
    id("job_id", &r.job_id)?;
    let u = ControlsUpdate {
        weight: r.weight.map(|w| weight("weight", w)).transpose()?,
        max_running: r.max_running,
        budget_usd: r.budget_usd.map(|b| budget("budget_usd", b)).transpose()?,
        paused: r.paused,
    };
    if u == ControlsUpdate::default() {
        return Err(invalid("weight", "nothing to change: set weight, max_running, budget_usd or paused"));
    }
    Ok(u)
}

pub fn cancel_job(r: &pb::CancelJobRequest) -> Result<(), Error> {
    id("job_id", &r.job_id)?;
    text("reason", &r.reason, limits::MAX_REASON_BYTES)
}

pub fn delete_job(r: &pb::DeleteJobRequest) -> Result<(), Error> {
    id("job_id", &r.job_id)
}

pub fn cancel_task(r: &pb::CancelTaskRequest) -> Result<(), Error> {
    text("reason", &r.reason, limits::MAX_REASON_BYTES)
}

pub fn retry_tasks(r: &pb::RetryTasksRequest) -> Result<(), Error> {
    if r.job_id.is_empty() && r.task_ids.is_empty() {
        return Err(invalid("job_id", "job_id or task_ids is required"));
    }
    if !r.job_id.is_empty() {
        id("job_id", &r.job_id)?;
    }
    count("task_ids", r.task_ids.len(), limits::MAX_RETRY_IDS, "ids")
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
    /// For a git task: the one dependency with a git source of the same repository, whose
    /// patches it starts from (found by [`git_builds_on`]).
    pub builds_on: Option<DepRef>,
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
    prompt(&f, &s)?;
    let priority = s.priority.unwrap_or(defaults::PRIORITY);
    if !(limits::MIN_PRIORITY..=limits::MAX_PRIORITY).contains(&priority) {
        let range = format!("{}..={}", limits::MIN_PRIORITY, limits::MAX_PRIORITY);
        return Err(invalid(f("priority"), format!("{priority} is outside {range}")));
    }
    s.priority = Some(priority);
    let deps = dependencies(&f, index, &s)?;
    files(&f, &s)?;
    metadata(&f("metadata"), &s.metadata)?;
    retries(&f, &mut s)?;
    if s.timeout_seconds > limits::MAX_TIMEOUT_SECONDS {
        let max = limits::MAX_TIMEOUT_SECONDS;
        return Err(invalid(f("timeout_seconds"), format!("{} is more than {max} (7 days)", s.timeout_seconds)));
    }
    count(f("required_labels"), s.required_labels.len(), limits::MAX_LABELS, "labels")?;
    for (k, v) in &s.required_labels {
        rule(f("required_labels"), contract::label(k, v))?;
    }
    hooks(&f, &s.verification)?;
    if let Some(t) = &s.run_at
        && !(0..1_000_000_000).contains(&t.nanos)
    {
        return Err(invalid(f("run_at"), format!("nanos {} is outside 0..1e9", t.nanos)));
    }
    if let Some(a) = &s.agent {
        agent(&f, a)?;
    }
    if let Some(g) = &mut s.git {
        git(&f, g)?;
    }
    Ok(CheckedTask { spec: s, deps, builds_on: None })
}

fn prompt(f: &impl Fn(&str) -> String, s: &pb::TaskSpec) -> Result<(), Error> {
    if s.prompt.trim().is_empty() {
        return Err(invalid(f("prompt"), "must not be empty"));
    }
    text(f("prompt"), &s.prompt, limits::MAX_PROMPT_BYTES)?;
    text(f("name"), &s.name, limits::MAX_NAME_BYTES)
}

/// The parent and `depends_on`, resolved, sorted and without repeats.
fn dependencies(f: &impl Fn(&str) -> String, index: usize, s: &pb::TaskSpec) -> Result<Vec<DepRef>, Error> {
    count(f("depends_on"), s.depends_on.len(), limits::MAX_DEPENDENCIES, "entries")?;
    let mut deps = Vec::with_capacity(s.depends_on.len() + 1);
    if let Some(p) = s.parent_task_id {
        deps.push(dep_ref(&f("parent_task_id"), index, p)?);
    }
    for (j, d) in s.depends_on.iter().enumerate() {
        deps.push(dep_ref(&format!("{}[{j}]", f("depends_on")), index, *d)?);
    }
    deps.sort_by_key(|d| match d {
        DepRef::Task(t) => (0, *t),
        DepRef::Batch(b) => (1, *b as i64),
    });
    deps.dedup();
    Ok(deps)
}

/// Context files, expected outputs and the working directory.
fn files(f: &impl Fn(&str) -> String, s: &pb::TaskSpec) -> Result<(), Error> {
    count(f("context_files"), s.context_files.len(), limits::MAX_CONTEXT_FILES, "files")?;
    let mut total = 0usize;
    for (j, c) in s.context_files.iter().enumerate() {
        relative_path(&format!("{}[{j}].path", f("context_files")), &c.path)?;
        total += c.contents.len();
    }
    if total > limits::MAX_CONTEXT_BYTES {
        let max = limits::MAX_CONTEXT_BYTES;
        return Err(invalid(f("context_files"), format!("hold {total} bytes, at most {max} allowed")));
    }
    count(f("expected_outputs"), s.expected_outputs.len(), limits::MAX_EXPECTED_OUTPUTS, "paths")?;
    for (j, p) in s.expected_outputs.iter().enumerate() {
        relative_path(&format!("{}[{j}]", f("expected_outputs")), p)?;
    }
    if !s.working_dir.is_empty() {
        rule(f("working_dir"), contract::absolute_dir(&s.working_dir))?;
    }
    Ok(())
}

/// `max_retries` and the retry policy, with their defaults filled in.
fn retries(f: &impl Fn(&str) -> String, s: &mut pb::TaskSpec) -> Result<(), Error> {
    let retries = s.max_retries.unwrap_or(defaults::MAX_RETRIES);
    if retries > limits::MAX_RETRIES {
        return Err(invalid(f("max_retries"), format!("{retries} is more than {}", limits::MAX_RETRIES)));
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
    if p.initial_backoff_ms > limits::MAX_INITIAL_BACKOFF_MS {
        let max = limits::MAX_INITIAL_BACKOFF_MS;
        return Err(invalid(f("retry_policy.initial_backoff_ms"), format!("must be at most {max} (one hour)")));
    }
    if !p.multiplier.is_finite() || !(1.0..=limits::MAX_BACKOFF_MULTIPLIER).contains(&p.multiplier) {
        let max = limits::MAX_BACKOFF_MULTIPLIER;
        return Err(invalid(f("retry_policy.multiplier"), format!("{} is outside 1..={max}", p.multiplier)));
    }
    if p.max_backoff_ms < p.initial_backoff_ms || p.max_backoff_ms > limits::MAX_BACKOFF_MS {
        let msg = format!(
            "{} must be between initial_backoff_ms ({}) and {} (one day)",
            p.max_backoff_ms,
            p.initial_backoff_ms,
            limits::MAX_BACKOFF_MS
        );
        return Err(invalid(f("retry_policy.max_backoff_ms"), msg));
    }
    s.retry_policy = Some(p);
    Ok(())
}

fn hooks(f: &impl Fn(&str) -> String, hooks: &[pb::VerificationHook]) -> Result<(), Error> {
    count(f("verification"), hooks.len(), limits::MAX_HOOKS, "hooks")?;
    for (j, h) in hooks.iter().enumerate() {
        let field = format!("{}[{j}]", f("verification"));
        if h.command.trim().is_empty() {
            return Err(invalid(format!("{field}.command"), "must not be empty"));
        }
        text(format!("{field}.command"), &h.command, limits::MAX_HOOK_COMMAND_BYTES)?;
        text(format!("{field}.description"), &h.description, limits::MAX_HOOK_DESCRIPTION_BYTES)?;
        if h.timeout_seconds > limits::MAX_HOOK_TIMEOUT_SECONDS {
            let max = limits::MAX_HOOK_TIMEOUT_SECONDS;
            return Err(invalid(format!("{field}.timeout_seconds"), format!("must be at most {max}")));
        }
    }
    Ok(())
}

/// A git source: the repository, revisions and commit fields by the contract's rules. The
/// coordinator sets `builds_on` itself.
fn git(f: &impl Fn(&str) -> String, g: &mut pb::GitSource) -> Result<(), Error> {
    rule(f("git.repo"), contract::git_repo(&g.repo))?;
    if !g.base.is_empty() {
        rule(f("git.base"), contract::git_ref(&g.base))?;
    }
    if !g.branch.is_empty() {
        rule(f("git.branch"), contract::git_ref(&g.branch))?;
    }
    if !g.author.is_empty() {
        rule(f("git.author"), contract::git_author(&g.author))?;
    }
    text(f("git.message"), &g.message, limits::MAX_GIT_MESSAGE_BYTES)?;
    if g.base_patch.len() > limits::MAX_GIT_PATCH_BYTES {
        let max = limits::MAX_GIT_PATCH_BYTES;
        return Err(invalid(f("git.base_patch"), format!("is {} bytes, at most {max} allowed", g.base_patch.len())));
    }
    g.builds_on = 0;
    Ok(())
}

/// Finds what each git task of a batch builds on: its one dependency with a git source of
/// the same repository. `repo_of` gives the repository of an existing task (`None`: no git
/// source, or no such task; the dispatcher reports unknown ids). Two such dependencies are
/// INVALID_ARGUMENT: a worktree starts from one line of changes.
pub fn git_builds_on(tasks: &mut [CheckedTask], repo_of: &HashMap<i64, String>) -> Result<(), Error> {
    for i in 0..tasks.len() {
        let Some(repo) = tasks[i].spec.git.as_ref().map(|g| g.repo.clone()) else { continue };
        let same = |d: &DepRef| match d {
            DepRef::Task(t) => repo_of.get(t) == Some(&repo),
            DepRef::Batch(j) => tasks[*j].spec.git.as_ref().is_some_and(|g| g.repo == repo),
        };
        let on: Vec<DepRef> = tasks[i].deps.iter().copied().filter(same).collect();
        if on.len() > 1 {
            let named: Vec<String> = on
                .iter()
                .map(|d| match d {
                    DepRef::Task(t) => t.to_string(),
                    DepRef::Batch(j) => format!("-{}", j + 1),
                })
                .collect();
            return Err(invalid(
                format!("tasks[{i}].depends_on"),
                format!(
                    "builds on {} git tasks of {repo} ({}); a git task can start from at most one (make the others depend on each other, or drop the git source of a merge task)",
                    on.len(),
                    named.join(", ")
                ),
            ));
        }
        tasks[i].builds_on = on.first().copied();
    }
    Ok(())
}

/// The existing tasks a batch's git tasks depend on: the ids whose repositories
/// [`git_builds_on`] needs.
pub fn git_external_deps(tasks: &[CheckedTask]) -> Vec<i64> {
    let mut ids: Vec<i64> = tasks
        .iter()
        .filter(|t| t.spec.git.is_some())
        .flat_map(|t| t.deps.iter())
        .filter_map(|d| match d {
            DepRef::Task(t) => Some(*t),
            DepRef::Batch(_) => None,
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn agent(f: &impl Fn(&str) -> String, a: &pb::AgentOptions) -> Result<(), Error> {
    text(f("agent.model"), &a.model, limits::MAX_NAME_BYTES)?;
    if a.max_turns > limits::MAX_AGENT_TURNS {
        return Err(invalid(f("agent.max_turns"), format!("must be at most {}", limits::MAX_AGENT_TURNS)));
    }
    count(f("agent.allowed_tools"), a.allowed_tools.len(), limits::MAX_ALLOWED_TOOLS, "tools")?;
    for (j, t) in a.allowed_tools.iter().enumerate() {
        if t.is_empty() {
            return Err(invalid(format!("{}[{j}]", f("agent.allowed_tools")), "must not be empty"));
        }
        text(format!("{}[{j}]", f("agent.allowed_tools")), t, limits::MAX_NAME_BYTES)?;
    }
    let mode = a.permission_mode.as_str();
    if !mode.is_empty() && !contract::PERMISSION_MODES.contains(&mode) {
        let modes = contract::PERMISSION_MODES.join(", ");
        return Err(invalid(f("agent.permission_mode"), format!("{mode:?} is not one of {modes}")));
    }
    if !a.max_budget_usd.is_finite() || a.max_budget_usd < 0.0 {
        return Err(invalid(f("agent.max_budget_usd"), "must be a non-negative number"));
    }
    Ok(())
}

/// Checks an AddTasks request: the batch as a whole (count, dependency edges, bytes), then
/// each task.
pub fn add_tasks(r: pb::AddTasksRequest) -> Result<(String, Vec<CheckedTask>), Error> {
    id("job_id", &r.job_id)?;
    if r.tasks.is_empty() {
        return Err(invalid("tasks", "must not be empty"));
    }
    if r.tasks.len() > limits::MAX_BATCH {
        let max = limits::MAX_BATCH;
        return Err(invalid("tasks", format!("has {} tasks, at most {max} per batch", r.tasks.len())));
    }
    let edges: usize = r.tasks.iter().map(|t| t.depends_on.len() + usize::from(t.parent_task_id.is_some())).sum();
    if edges > limits::MAX_BATCH_EDGES {
        let max = limits::MAX_BATCH_EDGES;
        return Err(invalid("tasks", format!("have {edges} dependencies in all, at most {max} per batch")));
    }
    let bytes: usize = r.tasks.iter().map(Message::encoded_len).sum();
    if bytes > limits::MAX_BATCH_BYTES {
        let max = limits::MAX_BATCH_BYTES;
        return Err(invalid("tasks", format!("are {bytes} bytes encoded, at most {max} per batch")));
    }
    let tasks = r.tasks.into_iter().enumerate().map(|(i, s)| task(i, s)).collect::<Result<_, _>>()?;
    Ok((r.job_id, tasks))
}

pub fn page_size(field: &str, n: u32) -> Result<u32, Error> {
    match n {
        0 => Ok(defaults::PAGE_SIZE),
        n if n > limits::MAX_PAGE_SIZE => Err(invalid(field, format!("{n} is more than {}", limits::MAX_PAGE_SIZE))),
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

pub fn context_key(r: &pb::SetContextRequest) -> Result<(), Error> {
    if !r.job_id.is_empty() {
        id("job_id", &r.job_id)?;
    }
    if r.key.is_empty() {
        return Err(invalid("key", "must not be empty"));
    }
    text("key", &r.key, limits::MAX_CONTEXT_KEY_BYTES)?;
    text("value", &r.value, limits::MAX_CONTEXT_VALUE_BYTES)
}

pub fn register(r: &pb::RegisterRequest) -> Result<(), Error> {
    rule("slots", contract::slots(r.slots))?;
    text("version", &r.version, limits::MAX_NAME_BYTES)?;
    if !r.version.is_empty() {
        rule("version", contract::parse_version(&r.version).map(|_| ()))?;
    }
    contract::compatible(&r.version, contract::VERSION).map_err(|v| Error::FailedPrecondition(v.0))?;
    if !r.worker_id.is_empty() {
        rule("worker_id", contract::worker_id(&r.worker_id))?;
    }
    text("name", &r.name, limits::MAX_NAME_BYTES)?;
    text("hostname", &r.hostname, limits::MAX_NAME_BYTES)?;
    count("labels", r.labels.len(), limits::MAX_LABELS, "labels")?;
    for (k, v) in &r.labels {
        rule("labels", contract::label(k, v))?;
    }
    count("agent_kinds", r.agent_kinds.len(), limits::MAX_AGENT_KINDS, "kinds")?;
    for (i, k) in r.agent_kinds.iter().enumerate() {
        text(format!("agent_kinds[{i}]"), k, limits::MAX_NAME_BYTES)?;
    }
    count("running", r.running.len(), limits::MAX_SLOTS as usize, "entries")
}

pub fn heartbeat(r: &pb::HeartbeatRequest) -> Result<(), Error> {
    rule("worker_id", contract::worker_id(&r.worker_id))?;
    count("running", r.running.len(), limits::MAX_SLOTS as usize, "entries")
}

pub fn report(r: &pb::ReportRequest) -> Result<(), Error> {
    rule("worker_id", contract::worker_id(&r.worker_id))?;
    if r.reports.is_empty() {
        return Err(invalid("reports", "must not be empty"));
    }
    count("reports", r.reports.len(), limits::MAX_REPORTS, "reports")?;
    for (i, rep) in r.reports.iter().enumerate() {
        use pb::report::Body;
        match &rep.body {
            None => return Err(invalid(format!("reports[{i}].body"), "is required")),
            Some(Body::Progress(p)) => {
                text(format!("reports[{i}].progress.message"), &p.message, limits::MAX_PROGRESS_BYTES)?
            }
            Some(Body::HandedBack(h)) => {
                text(format!("reports[{i}].handed_back.reason"), &h.reason, limits::MAX_REASON_BYTES)?
            }
            Some(Body::Completed(pb::Completed { result: Some(res) }))
            | Some(Body::Failed(pb::Failed { result: Some(res), .. })) => {
                let n = res.encoded_len();
                if n > limits::MAX_RESULT_BYTES {
                    let max = limits::MAX_RESULT_BYTES;
                    return Err(invalid(format!("reports[{i}].result"), format!("is {n} bytes, at most {max}")));
                }
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod fuzz;

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
            (pb::TaskSpec { prompt: "x".repeat(limits::MAX_PROMPT_BYTES + 1), ..Default::default() }, "at most"),
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
        let err =
            add_tasks(pb::AddTasksRequest { job_id: "j".into(), tasks: vec![], ..Default::default() }).unwrap_err();
        assert_eq!(err.to_string(), "tasks: must not be empty");
        let err = add_tasks(pb::AddTasksRequest { job_id: "".into(), tasks: vec![spec("x")], ..Default::default() })
            .unwrap_err();
        assert_eq!(err.to_string(), "job_id: is required");
        let many = vec![spec("x"); limits::MAX_BATCH + 1];
        assert!(add_tasks(pb::AddTasksRequest { job_id: "j".into(), tasks: many, ..Default::default() }).is_err());
    }

    #[test]
    fn paths_stay_relative() {
        for ok in ["a.txt", "src/main.rs", "./x", "a..b"] {
            relative_path("p", ok).unwrap();
        }
        // The worker could not use these after the agent ran: refused here, at AddTasks.
        for bad in ["", "/etc", "a/../../b", "..", "\\x", ".", "./", "a/", "a//b"] {
            let e = relative_path("p", bad).unwrap_err();
            assert!(e.to_string().starts_with("p: "), "{e}");
        }
    }

    #[test]
    fn batches_are_bounded_by_edges_and_bytes() {
        let deps: Vec<i64> = (1..=limits::MAX_DEPENDENCIES as i64).collect();
        let dense = pb::TaskSpec { depends_on: deps, ..spec("x") };
        let n = limits::MAX_BATCH_EDGES / limits::MAX_DEPENDENCIES + 1;
        let err = add_tasks(pb::AddTasksRequest { job_id: "j".into(), tasks: vec![dense; n], ..Default::default() })
            .unwrap_err();
        assert!(err.to_string().starts_with("tasks: have"), "{err}");
        let big = spec(&"p".repeat(limits::MAX_PROMPT_BYTES));
        let n = limits::MAX_BATCH_BYTES / limits::MAX_PROMPT_BYTES + 1;
        let err = add_tasks(pb::AddTasksRequest { job_id: "j".into(), tasks: vec![big; n], ..Default::default() })
            .unwrap_err();
        assert!(err.to_string().contains("bytes encoded"), "{err}");
    }

    #[test]
    fn every_string_has_a_limit() {
        let reason = "r".repeat(limits::MAX_REASON_BYTES + 1);
        let e = cancel_job(&pb::CancelJobRequest { job_id: "j".into(), reason: reason.clone() }).unwrap_err();
        assert!(e.to_string().starts_with("reason: is"), "{e}");
        let e = cancel_task(&pb::CancelTaskRequest { task_id: 1, reason: reason.clone() }).unwrap_err();
        assert!(e.to_string().starts_with("reason: is"), "{e}");
        let e = id("job_id", &"j".repeat(limits::MAX_ID_BYTES + 1)).unwrap_err();
        assert!(e.to_string().starts_with("job_id: is"), "{e}");
        let handed = pb::Report {
            task_id: 1,
            attempt: 1,
            body: Some(pb::report::Body::HandedBack(pb::HandedBack { reason })),
            ..Default::default()
        };
        let e = report(&pb::ReportRequest { worker_id: "w".into(), reports: vec![handed] }).unwrap_err();
        assert!(e.to_string().starts_with("reports[0].handed_back.reason"), "{e}");
        let kinds = vec!["k".to_string(); limits::MAX_AGENT_KINDS + 1];
        let r = pb::RegisterRequest { slots: 1, agent_kinds: kinds, ..Default::default() };
        assert!(register(&r).unwrap_err().to_string().starts_with("agent_kinds"));
        let many = vec![1; limits::MAX_RETRY_IDS + 1];
        let e = retry_tasks(&pb::RetryTasksRequest { job_id: String::new(), task_ids: many }).unwrap_err();
        assert!(e.to_string().starts_with("task_ids"), "{e}");
    }

    #[test]
    fn job_controls_are_checked_and_defaulted() {
        let c = create_job(&pb::CreateJobRequest::default()).unwrap();
        assert_eq!(c, Controls::default());
        let c = create_job(&pb::CreateJobRequest { weight: 3, max_running: 2, budget_usd: 1.5, ..Default::default() });
        assert_eq!(c.unwrap(), Controls { weight: 3, max_running: 2, budget_usd: 1.5, paused: false });
        for (r, field) in [
            (pb::CreateJobRequest { weight: 1_001, ..Default::default() }, "weight"),
            (pb::CreateJobRequest { budget_usd: -1.0, ..Default::default() }, "budget_usd"),
            (pb::CreateJobRequest { budget_usd: f64::NAN, ..Default::default() }, "budget_usd"),
        ] {
            let e = create_job(&r).unwrap_err().to_string();
            assert!(e.starts_with(field), "{e}");
        }
        let u = |r: pb::UpdateJobRequest| update_job(&r).map_err(|e| e.to_string());
        let job = || pb::UpdateJobRequest { job_id: "j".into(), ..Default::default() };
        assert!(u(job()).unwrap_err().contains("nothing to change"));
        assert!(u(pb::UpdateJobRequest { weight: Some(0), ..job() }).unwrap_err().starts_with("weight"));
        assert!(
            u(pb::UpdateJobRequest { paused: Some(true), job_id: String::new(), ..job() })
                .unwrap_err()
                .starts_with("job_id")
        );
        let ok = u(pb::UpdateJobRequest { paused: Some(true), max_running: Some(0), ..job() }).unwrap();
        assert_eq!(ok, ControlsUpdate { paused: Some(true), max_running: Some(0), ..Default::default() });
    }

    #[test]
    fn schedules_are_checked_field_by_field() {
        let ok = || pb::CreateScheduleRequest {
            name: "nightly-1".into(),
            cron: "0 3 * * *".into(),
            job: Some(pb::CreateJobRequest { description: "nightly".into(), ..Default::default() }),
            tasks: vec![spec("a"), pb::TaskSpec { depends_on: vec![-1], ..spec("b") }],
            replace: false,
        };
        create_schedule(&ok()).unwrap();
        let cases = [
            (pb::CreateScheduleRequest { name: "bad name".into(), ..ok() }, "name"),
            (pb::CreateScheduleRequest { name: String::new(), ..ok() }, "name"),
            (pb::CreateScheduleRequest { cron: "every day".into(), ..ok() }, "cron"),
            (pb::CreateScheduleRequest { cron: "0 3 31 2 *".into(), ..ok() }, "cron"),
            (pb::CreateScheduleRequest { tasks: vec![], ..ok() }, "tasks"),
            (
                pb::CreateScheduleRequest {
                    job: Some(pb::CreateJobRequest { weight: 5_000, ..Default::default() }),
                    ..ok()
                },
                "job.weight",
            ),
            (
                pb::CreateScheduleRequest { tasks: vec![pb::TaskSpec { depends_on: vec![7], ..spec("a") }], ..ok() },
                "tasks[0].depends_on",
            ),
            (
                pb::CreateScheduleRequest {
                    tasks: vec![pb::TaskSpec { run_at: Some(contract::timestamp_of_ms(1)), ..spec("a") }],
                    ..ok()
                },
                "tasks[0].run_at",
            ),
        ];
        for (r, field) in cases {
            let e = create_schedule(&r).unwrap_err().to_string();
            assert!(e.starts_with(field), "{field}: {e}");
        }
    }
}
