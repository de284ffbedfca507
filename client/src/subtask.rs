//! [`Subtask`]: a builder for a task spec, with the guide's parameters as methods.

use orca_proto::pb;

use crate::Error;
use crate::git::GitCheckout;

/// A task to add to a job.
///
/// ```
/// use orca_client::Subtask;
/// let t = Subtask::new("Implement user login endpoint with JWT")
///     .priority(10)
///     .context_file("src/routes/auth.js", b"// existing code".to_vec())
///     .expected_output("src/routes/auth.js")
///     .max_retries(2);
/// assert_eq!(t.spec().priority, Some(10));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Subtask {
    spec: pb::TaskSpec,
    metadata: Option<serde_json::Value>,
}

impl Subtask {
    pub fn new(prompt: &str) -> Subtask {
        Subtask { spec: pb::TaskSpec { prompt: prompt.to_string(), ..Default::default() }, metadata: None }
    }

    /// Wraps a full spec.
    pub fn from_spec(spec: pb::TaskSpec) -> Subtask {
        Subtask { spec, metadata: None }
    }

    /// The spec as built so far.
    pub fn spec(&self) -> &pb::TaskSpec {
        &self.spec
    }

    /// Higher runs first; default 5.
    pub fn priority(mut self, p: i32) -> Self {
        self.spec.priority = Some(p);
        self
    }

    /// A short name for people.
    pub fn name(mut self, n: &str) -> Self {
        self.spec.name = n.to_string();
        self
    }

    /// The task waits for this task to complete (hierarchical decomposition).
    pub fn parent(mut self, task_id: i64) -> Self {
        self.spec.parent_task_id = Some(task_id);
        self
    }

    /// The task waits for these tasks to complete.
    pub fn depends_on(mut self, task_ids: &[i64]) -> Self {
        self.spec.depends_on.extend_from_slice(task_ids);
        self
    }

    /// Within one `add_subtasks` batch: depends on the batch's `n`-th task (1-based).
    pub fn after_batch(mut self, n: usize) -> Self {
        self.spec.depends_on.push(-(n as i64));
        self
    }

    /// A file written into the task's workspace before it runs.
    pub fn context_file(mut self, path: &str, contents: Vec<u8>) -> Self {
        self.spec.context_files.push(pb::ContextFile { path: path.to_string(), contents });
        self
    }

    /// A file the task must produce; it comes back as an artifact.
    pub fn expected_output(mut self, path: &str) -> Self {
        self.spec.expected_outputs.push(path.to_string());
        self
    }

    /// Run in this directory when the worker allows it (a shared filesystem).
    pub fn working_dir(mut self, dir: &str) -> Self {
        self.spec.working_dir = dir.to_string();
        self
    }

    /// Metadata, a JSON object.
    pub fn metadata(mut self, m: serde_json::Value) -> Self {
        self.metadata = Some(m);
        self
    }

    /// Retries after a failed attempt; default 0.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.spec.max_retries = Some(n);
        self
    }

    /// Backoff between retries.
    pub fn retry_backoff(mut self, initial_ms: u32, multiplier: f64, max_ms: u32) -> Self {
        self.spec.retry_policy =
            Some(pb::RetryPolicy { initial_backoff_ms: initial_ms, multiplier, max_backoff_ms: max_ms });
        self
    }

    /// Attempt timeout.
    pub fn timeout_seconds(mut self, s: u32) -> Self {
        self.spec.timeout_seconds = s;
        self
    }

    /// A label the worker must have.
    pub fn require_label(mut self, key: &str, value: &str) -> Self {
        self.spec.required_labels.insert(key.to_string(), value.to_string());
        self
    }

    /// A check run after the agent succeeds.
    pub fn verify(mut self, command: &str, description: &str, fail_on_error: bool) -> Self {
        self.spec.verification.push(pb::VerificationHook {
            command: command.to_string(),
            description: description.to_string(),
            timeout_seconds: 0,
            fail_on_error,
        });
        self
    }

    /// Let the worker pick checks from marker files when no hook is given.
    pub fn auto_verify(mut self, on: bool) -> Self {
        self.spec.auto_verify = on;
        self
    }

    /// Agent options (model, max turns, allowed tools, permission mode, budget).
    pub fn agent(mut self, options: pb::AgentOptions) -> Self {
        self.spec.agent = Some(options);
        self
    }

    /// A task that works on the caller's checkout containing `path`: its remote and HEAD
    /// (see [`GitCheckout::open`]: uncommitted changes are an error). The task runs in a
    /// worktree of its own on a worker and comes back as a patch.
    pub fn from_git_checkout(path: impl AsRef<std::path::Path>, prompt: &str) -> Result<Subtask, Error> {
        Ok(Subtask::new(prompt).git(GitCheckout::open(path)?.source()))
    }

    /// Sets the task's git source (see [`GitCheckout::source`] for one from a checkout).
    pub fn git(mut self, source: pb::GitSource) -> Self {
        self.spec.git = Some(source);
        self
    }

    /// Also pushes the task's commit to `branch` of its repository (empty: the default
    /// `orca/<job>/<task>`). Needs a git source first.
    pub fn push_to(mut self, branch: &str) -> Self {
        if let Some(g) = self.spec.git.as_mut() {
            g.push = true;
            g.branch = branch.to_string();
        }
        self
    }

    /// The task starts no earlier than `at` (it waits until then, and for its dependencies).
    pub fn run_at(mut self, at: std::time::SystemTime) -> Self {
        self.spec.run_at = Some(crate::time::timestamp(at));
        self
    }

    /// The task starts no earlier than `delay` from now.
    pub fn delay(self, delay: std::time::Duration) -> Self {
        self.run_at(std::time::SystemTime::now() + delay)
    }

    /// The task as the proto's spec (for calls that take specs, such as CreateSchedule).
    pub fn into_task_spec(self) -> Result<pb::TaskSpec, Error> {
        self.into_spec()
    }

    pub(crate) fn into_spec(self) -> Result<pb::TaskSpec, Error> {
        let mut spec = self.spec;
        if let Some(m) = &self.metadata {
            spec.metadata = Some(crate::json_to_struct(m)?);
        }
        Ok(spec)
    }
}
