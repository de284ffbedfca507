//! `orca mcp`: an MCP server over stdio, so an agent can use a fleet as its own tool: create
//! a job, add tasks, follow them, collect results and files, cancel, retry, synthesize.
//!
//! Each tool is a thin call of `orca-client`. What the coordinator refuses (an unknown id, an
//! empty prompt, a state that does not allow the call) comes back as a tool error carrying its
//! message, so the model reads it and can correct itself; so do arguments that do not match
//! a tool's schema (rmcp reports them as a tool error naming the field). Replies are
//! bounded: a wait never blocks past `--max-wait-seconds`, outputs and artifacts are cut past
//! their limits with a marker saying how much was left out.

use std::time::Duration;

use orca_client::{Client, Subtask, WatchOptions, pb};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock as Content, Implementation, ProgressNotificationParam, RequestMetaObject,
    ServerCapabilities, ServerConfig,
};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{job_json, state_name};
use tokio_stream::StreamExt;

/// Bounds of what one tool call may take or return.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest `orca_wait`.
    pub max_wait: Duration,
    /// Bytes of one task's output in `orca_get_results`.
    pub max_output_bytes: usize,
    /// Bytes of all outputs of one `orca_get_results` reply together.
    pub max_results_bytes: usize,
    /// Bytes of an artifact in `orca_get_artifact`.
    pub max_artifact_bytes: usize,
}

/// The server: a client (connected on first use) and the limits.
#[derive(Clone)]
pub struct OrcaMcp {
    client: Client,
    limits: Limits,
    tool_router: ToolRouter<Self>,
}

/// Serves MCP on stdin/stdout until the client closes the connection.
pub async fn serve(client: Client, limits: Limits) -> Result<(), String> {
    let server = OrcaMcp { client, limits, tool_router: OrcaMcp::tool_router() };
    let running = server.serve(rmcp::transport::stdio()).await.map_err(|e| format!("MCP start: {e}"))?;
    running.waiting().await.map_err(|e| format!("MCP session: {e}"))?;
    Ok(())
}

// --- arguments (their doc comments are the schema descriptions a model reads) -------------

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJobArgs {
    /// What the job is for, in a sentence (shown in listings).
    pub description: String,
    /// Optional JSON object stored with the job.
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, Value>>,
    /// At most this many of the job's tasks run at once (default: no limit).
    #[serde(default)]
    pub max_running: Option<u32>,
    /// Stop starting the job's tasks once they reported this much cost, in US dollars
    /// (default: no budget); orca_job_status then says `blocked_reason`.
    #[serde(default)]
    pub budget_usd: Option<f64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskArgs {
    /// The instructions for the agent that runs the task. Self-contained: the agent sees only
    /// this prompt (plus the expected outputs and shared context).
    pub prompt: String,
    /// Short name for humans.
    #[serde(default)]
    pub name: Option<String>,
    /// Higher runs first (default 5; 10 critical, 7-9 important, 1-3 nice to have).
    #[serde(default)]
    pub priority: Option<i32>,
    /// Ids of existing tasks of this job that must complete before this one starts.
    #[serde(default)]
    pub depends_on: Vec<i64>,
    /// 0-based positions of earlier tasks in this same call that must complete first.
    #[serde(default)]
    pub depends_on_index: Vec<usize>,
    /// Files (relative paths) the agent must create; they come back as artifacts.
    #[serde(default)]
    pub expected_outputs: Vec<String>,
    /// Absolute directory to run in when the worker shares it; otherwise a fresh workspace.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// Retries after a failed attempt (default 0). A retry's prompt quotes the failure.
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Attempt time limit in seconds (default none).
    #[serde(default)]
    pub timeout_seconds: Option<u32>,
    /// A git checkout on this machine (absolute path): the task works on its remote at its
    /// HEAD, in a worktree of its own on a worker, and its change comes back as a patch
    /// (apply the job's patches with orca_apply_patches). A task that depends on another git
    /// task of the same checkout starts from that task's change.
    #[serde(default)]
    pub git_checkout: Option<String>,
    /// With git_checkout: also send the checkout's uncommitted changes and unpushed commits
    /// (otherwise they are an error).
    #[serde(default)]
    pub ship_changes: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddTasksArgs {
    /// The job to add to (from orca_create_job).
    pub job_id: String,
    /// The tasks, added all or none. Independent tasks run in parallel on the fleet.
    pub tasks: Vec<TaskArgs>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyArgs {
    pub job_id: String,
    /// The git checkout to apply the patches to (an absolute path on this machine).
    pub checkout: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobArgs {
    pub job_id: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitArgs {
    pub job_id: String,
    /// Seconds to wait at most (default 60; the server caps it). Call again to keep waiting.
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResultsArgs {
    pub job_id: String,
    /// Only tasks in these states: waiting, pending, in_progress, completed, failed,
    /// cancelled (default: all).
    #[serde(default)]
    pub states: Vec<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArtifactArgs {
    pub task_id: i64,
    /// The artifact's path, one of the task's expected outputs.
    pub path: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelArgs {
    /// Cancel every unfinished task of this job (give this or task_id).
    #[serde(default)]
    pub job_id: Option<String>,
    /// Cancel this one task (and the tasks that depend on it).
    #[serde(default)]
    pub task_id: Option<i64>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryArgs {
    /// Retry every failed task of this job (when task_ids is empty).
    #[serde(default)]
    pub job_id: Option<String>,
    /// Retry these failed or cancelled tasks.
    #[serde(default)]
    pub task_ids: Vec<i64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SynthesizeArgs {
    pub job_id: String,
    /// What to do with the results (put at the top of the report).
    #[serde(default)]
    pub prompt: Option<String>,
}

// --- the tools ---------------------------------------------------------------------------

type ToolResult = Result<CallToolResult, ErrorData>;

/// A reply as pretty JSON text.
fn reply(v: Value) -> ToolResult {
    Ok(CallToolResult::success(vec![Content::text(serde_json::to_string_pretty(&v).unwrap_or_default())]))
}

/// A refusal the model should read: a tool error, not a protocol failure.
fn refused(message: impl std::fmt::Display) -> ToolResult {
    Ok(CallToolResult::error(vec![Content::text(message.to_string())]))
}

/// `Ok` or the coordinator's refusal as a tool error.
macro_rules! call {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return refused(e),
        }
    };
}

#[tool_router]
impl OrcaMcp {
    #[tool(description = "Create a job: a goal that you will break into tasks for a fleet of agents. \
        Returns {job_id}. Then add tasks with orca_add_tasks.")]
    async fn orca_create_job(&self, Parameters(a): Parameters<CreateJobArgs>) -> ToolResult {
        let options = orca_client::JobOptions {
            metadata: a.metadata.map(Value::Object),
            max_running: a.max_running.unwrap_or(0),
            budget_usd: a.budget_usd.unwrap_or(0.0),
            ..Default::default()
        };
        let job = call!(self.client.create_job_with_options(&a.description, &options).await);
        reply(json!({"job_id": job.job_id}))
    }

    #[tool(description = "Add tasks to a job, all or none. Each task is run by one agent on some worker; \
        independent tasks run in parallel. Order with depends_on (existing task ids) or depends_on_index \
        (earlier positions in this call). Returns {task_ids} in the order given.")]
    async fn orca_add_tasks(&self, Parameters(a): Parameters<AddTasksArgs>) -> ToolResult {
        let tasks = match subtasks(a.tasks) {
            Ok(t) => t,
            Err(msg) => return refused(msg),
        };
        let ids = call!(self.client.add_subtasks(&a.job_id, tasks).await);
        reply(json!({"job_id": a.job_id, "task_ids": ids}))
    }

    #[tool(description = "A job's state and task counts (waiting, pending, in_progress, completed, failed, \
        cancelled), progress_pct (share of tasks final), cost_usd spent so far and blocked_reason (why \
        none of its tasks starts, if so). Does not wait.")]
    async fn orca_job_status(&self, Parameters(a): Parameters<JobArgs>) -> ToolResult {
        let j = call!(self.client.get_job(&a.job_id).await);
        reply(job_json(&j))
    }

    #[tool(description = "Wait until every task of the job is final, or until timeout_seconds pass \
        (capped by the server). Returns {done, ...counts}; when done is false call it again. Sends \
        progress notifications when the request has a progress token.")]
    async fn orca_wait(
        &self,
        Parameters(a): Parameters<WaitArgs>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
    ) -> ToolResult {
        let asked = a.timeout_seconds.unwrap_or(60.0);
        if !asked.is_finite() || asked < 0.0 {
            return refused("timeout_seconds: must be a number of seconds, 0 or more");
        }
        let bound = Duration::from_secs_f64(asked.min(self.limits.max_wait.as_secs_f64()));
        let token = meta.get_progress_token();
        let opts = WatchOptions { max_reconnects: 5, ..Default::default() };
        let mut events = std::pin::pin!(self.client.watch(&a.job_id, opts));
        let deadline = tokio::time::Instant::now() + bound;
        let mut done = false;
        loop {
            match tokio::time::timeout_at(deadline, events.next()).await {
                Err(_) => break,
                Ok(None) => {
                    done = true;
                    break;
                }
                Ok(Some(Err(e))) => return refused(e),
                Ok(Some(Ok(ev))) => {
                    if let (Some(t), Some(s)) = (&token, ev.status) {
                        let finished = s.completed + s.failed + s.cancelled;
                        let note = format!("{finished}/{} tasks final, {} running", s.total_tasks, s.in_progress);
                        let p = ProgressNotificationParam::new(t.clone(), finished as f64)
                            .with_total(s.total_tasks as f64)
                            .with_message(note);
                        let _ = peer.notify_progress(p).await;
                    }
                }
            }
        }
        let j = call!(self.client.get_job(&a.job_id).await);
        let mut v = job_json(&j);
        v["done"] = json!(done);
        v["waited_seconds"] = json!(bound.as_secs_f64().min(asked));
        reply(v)
    }

    #[tool(description = "Each task's outcome: state, prompt, output (cut past a size limit, with a marker), \
        error, reason, attempts, cost, and the paths of its artifacts (read one with orca_get_artifact). \
        Filter with states.")]
    async fn orca_get_results(&self, Parameters(a): Parameters<ResultsArgs>) -> ToolResult {
        let mut states = Vec::new();
        for s in &a.states {
            match pb::TaskState::from_short_name(s) {
                Some(st) => states.push(st),
                None => {
                    return refused(format!(
                        "states: unknown state {s:?}; use waiting, pending, in_progress, completed, failed or cancelled"
                    ));
                }
            }
        }
        let tasks = call!(self.client.list_tasks(&a.job_id, &states).await);
        reply(results_json(&a.job_id, &tasks, self.limits))
    }

    #[tool(description = "The text of one artifact (a file a task produced: one of its expected outputs), \
        cut past a size limit.")]
    async fn orca_get_artifact(&self, Parameters(a): Parameters<ArtifactArgs>) -> ToolResult {
        let t = call!(self.client.get_task(a.task_id).await);
        let arts = t.result.map(|r| r.artifacts).unwrap_or_default();
        let Some(art) = arts.iter().find(|x| x.path == a.path) else {
            let have: Vec<&str> = arts.iter().map(|x| x.path.as_str()).collect();
            return refused(format!("path: task {} has no artifact {:?} (it has: {})", a.task_id, a.path, list(&have)));
        };
        let Ok(text) = std::str::from_utf8(&art.contents) else {
            return refused(format!(
                "path: {} is binary ({} bytes); fetch it with `orca collect {}`",
                a.path,
                art.contents.len(),
                t.job_id
            ));
        };
        Ok(CallToolResult::success(vec![Content::text(cut(text, self.limits.max_artifact_bytes))]))
    }

    #[tool(description = "Apply the patches of the job's completed git tasks (tasks added with \
        git_checkout) to a git checkout on this machine, one commit each (git am --3way), in dependency \
        order. Stops at the first patch that does not apply, leaving the checkout as before that patch. \
        Returns {applied, empty}: task ids.")]
    async fn orca_apply_patches(&self, Parameters(a): Parameters<ApplyArgs>) -> ToolResult {
        let got = call!(self.client.collect(&a.job_id).await);
        let checkout = a.checkout.clone();
        let applied = tokio::task::spawn_blocking(move || orca_client::apply_patches(&checkout, got.results.values()))
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        match applied {
            Ok(d) => reply(json!({"job_id": a.job_id, "applied": d.applied, "empty": d.empty})),
            Err(e) => refused(e),
        }
    }

    #[tool(description = "Cancel a whole job (job_id) or one task (task_id); running agents are stopped, \
        tasks that depend on a cancelled task are cancelled too.")]
    async fn orca_cancel(&self, Parameters(a): Parameters<CancelArgs>) -> ToolResult {
        let reason = a.reason.unwrap_or_else(|| "cancelled by an agent (MCP)".into());
        match (a.job_id, a.task_id) {
            (Some(job), None) => {
                let j = call!(self.client.cancel_job(&job, &reason).await);
                reply(job_json(&j))
            }
            (None, Some(id)) => {
                let t = call!(self.client.cancel_task(id, &reason).await);
                reply(json!({"task_id": t.task_id, "state": state_name(t.state), "reason": t.reason}))
            }
            _ => refused("give exactly one of job_id and task_id"),
        }
    }

    #[tool(description = "Run failed (or cancelled) tasks again: the given task_ids, or every failed task \
        of job_id. Tasks cancelled because of them come back too. Returns {task_ids} brought back.")]
    async fn orca_retry(&self, Parameters(a): Parameters<RetryArgs>) -> ToolResult {
        let ids = match (a.job_id, a.task_ids.is_empty()) {
            (_, false) => call!(self.client.retry_tasks(&a.task_ids).await),
            (Some(job), true) => call!(self.client.retry_failed_tasks(&job).await),
            (None, true) => return refused("give job_id or task_ids"),
        };
        reply(json!({"task_ids": ids}))
    }

    #[tool(description = "A text report of the job's results (every task's prompt, output, errors and \
        artifacts) with your prompt on top, for you to review and summarize. Does not wait: use orca_wait first.")]
    async fn orca_synthesize(&self, Parameters(a): Parameters<SynthesizeArgs>) -> ToolResult {
        let got = call!(self.client.collect(&a.job_id).await);
        let mut text = match a.prompt.as_deref().map(str::trim) {
            Some(p) if !p.is_empty() => format!("# Synthesis request\n{p}\n\n"),
            _ => String::new(),
        };
        text.push_str(&orca_client::synthesize_results(&got));
        Ok(CallToolResult::success(vec![Content::text(cut(&text, self.limits.max_results_bytes))]))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for OrcaMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("orca", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Orca runs tasks on a fleet of agent workers. Create a job, add self-contained tasks \
                 (independent ones run in parallel; order others with depends_on), wait, then read \
                 the results and artifacts. Failed tasks can be retried; their prompt then quotes the \
                 failure.",
            )
    }
}

// --- helpers -----------------------------------------------------------------------------

/// The tasks of an `orca_add_tasks` call; a dependency index must name an earlier task.
fn subtasks(tasks: Vec<TaskArgs>) -> Result<Vec<Subtask>, String> {
    let mut out = Vec::with_capacity(tasks.len());
    for (i, t) in tasks.into_iter().enumerate() {
        let mut s = Subtask::new(&t.prompt).depends_on(&t.depends_on);
        for &d in &t.depends_on_index {
            if d >= i {
                return Err(format!("tasks[{i}].depends_on_index: {d} is not an earlier task of this call (0..{i})"));
            }
            s = s.after_batch(d + 1);
        }
        if let Some(n) = &t.name {
            s = s.name(n);
        }
        if let Some(p) = t.priority {
            s = s.priority(p);
        }
        for p in &t.expected_outputs {
            s = s.expected_output(p);
        }
        if let Some(d) = &t.working_dir {
            s = s.working_dir(d);
        }
        if let Some(n) = t.max_retries {
            s = s.max_retries(n);
        }
        if let Some(n) = t.timeout_seconds {
            s = s.timeout_seconds(n);
        }
        if let Some(path) = &t.git_checkout {
            let checkout = orca_client::GitCheckout::open_as(path, t.ship_changes);
            s = s.git(checkout.map_err(|e| format!("tasks[{i}].git_checkout: {e}"))?.source());
        } else if t.ship_changes {
            return Err(format!("tasks[{i}].ship_changes: needs git_checkout"));
        }
        out.push(s);
    }
    Ok(out)
}

fn list(items: &[&str]) -> String {
    if items.is_empty() { "none".into() } else { items.join(", ") }
}

/// `text` cut to at most `max` bytes (on a character boundary), with a marker saying how much
/// was left out.
fn cut(text: &str, max: usize) -> String {
    let head = orca_proto::contract::head_str(text, max);
    if head.len() == text.len() {
        return text.to_string();
    }
    format!("{head}\n[... {} more bytes cut ...]", text.len() - head.len())
}

/// The reply of `orca_get_results`: every task, outputs cut per task and in all.
/// Text fields of a task in a results reply at most (prompt, error, reason).
const FIELD_BYTES: usize = 2_000;
/// Artifacts listed per task at most.
const ARTIFACTS_LISTED: usize = 50;

/// The reply of `orca_get_results`: tasks in id order, each field cut, the whole reply within
/// `max_results_bytes` (every field counts); the tasks left out are counted, never silently.
fn results_json(job: &str, tasks: &[pb::Task], limits: Limits) -> Value {
    let mut used = 0;
    let mut out = Vec::with_capacity(tasks.len());
    for (i, t) in tasks.iter().enumerate() {
        let spec = t.spec.clone().unwrap_or_default();
        let r = t.result.clone().unwrap_or_default();
        let room = limits.max_output_bytes.min(limits.max_results_bytes.saturating_sub(used));
        let v = json!({
            "task_id": t.task_id,
            "name": spec.name,
            "state": state_name(t.state),
            "prompt": cut(&spec.prompt, FIELD_BYTES),
            "output": cut(&r.output, room),
            "error": cut(&r.error, FIELD_BYTES),
            "reason": cut(&t.reason, FIELD_BYTES),
            "attempts": t.attempts,
            "cost_usd": r.cost_usd,
            "artifacts": r.artifacts.iter().take(ARTIFACTS_LISTED)
                .map(|a| json!({"path": a.path, "bytes": a.contents.len()})).collect::<Vec<_>>(),
            "git": r.git.as_deref().map(|g| json!({
                "commit": g.commit, "branch": g.branch, "pushed": g.pushed, "empty": g.empty,
                "files_changed": g.files_changed, "insertions": g.insertions, "deletions": g.deletions,
            })),
        });
        let size = v.to_string().len();
        if !out.is_empty() && used + size > limits.max_results_bytes {
            let left = tasks.len() - i;
            let note = format!(
                "{left} more tasks left out: the reply is at its size limit; ask with states, or read a task with orca_get_artifact"
            );
            return json!({"job_id": job, "tasks": out, "tasks_left_out": left, "note": note});
        }
        used += size;
        out.push(v);
    }
    json!({"job_id": job, "tasks": out, "tasks_left_out": 0})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(prompt: &str) -> TaskArgs {
        serde_json::from_value(json!({"prompt": prompt})).unwrap()
    }

    #[test]
    fn dependency_indices_name_earlier_tasks_of_the_call() {
        let mut b = task("b");
        b.depends_on_index = vec![0];
        let got = subtasks(vec![task("a"), b]).unwrap();
        assert_eq!(got[1].spec().depends_on, vec![-1]);
        let mut a = task("a");
        a.depends_on_index = vec![0];
        assert_eq!(
            subtasks(vec![a]).unwrap_err(),
            "tasks[0].depends_on_index: 0 is not an earlier task of this call (0..0)"
        );
    }

    #[test]
    fn long_text_is_cut_on_a_char_boundary_with_a_marker() {
        assert_eq!(cut("short", 10), "short");
        let got = cut("ééé", 3);
        assert_eq!(got, "é\n[... 4 more bytes cut ...]");
    }

    #[test]
    fn results_stay_within_the_reply_budget() {
        let t = |id: i64| pb::Task {
            task_id: id,
            result: Some(pb::TaskResult { output: "x".repeat(100), ..Default::default() }),
            ..Default::default()
        };
        let limits = Limits {
            max_wait: Duration::from_secs(1),
            max_output_bytes: 60,
            max_results_bytes: 600,
            max_artifact_bytes: 10,
        };
        let tasks: Vec<pb::Task> = (1..=20).map(t).collect();
        let v = results_json("j", &tasks, limits);
        let listed = v["tasks"].as_array().unwrap();
        let out = listed[0]["output"].as_str().unwrap();
        assert!(out.starts_with(&"x".repeat(60)) && out.contains("40 more bytes cut"), "{out}");
        assert!(v.to_string().len() <= 600 + 200, "the reply stays near its budget: {}", v.to_string().len());
        let left = v["tasks_left_out"].as_u64().unwrap() as usize;
        assert!(left > 0 && listed.len() + left == 20, "{v}");
        assert!(v["note"].as_str().unwrap().starts_with(&format!("{left} more tasks left out")));
    }

    #[test]
    fn unknown_argument_fields_are_refused_by_name() {
        let e = serde_json::from_value::<AddTasksArgs>(json!({"job_id": "j", "tasks": [{"promt": "x"}]}))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("promt"), "{e}");
    }
}
