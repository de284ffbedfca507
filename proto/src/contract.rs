//! The rules the coordinator, the worker and the clients must agree on, in one place: the
//! defaults the public contract fixes, every size and count limit, and the syntax of paths,
//! labels and worker ids. All three binaries call these functions; none keeps a copy.
//!
//! What stays true here: a value one rule accepts is accepted everywhere, so a task the
//! coordinator took at AddTasks never fails on a worker for a rule checked after the agent
//! ran. Rule functions return a [`Violation`] without the field name; the caller adds it
//! (`tasks[3].expected_outputs[0]: ...`).

/// Defaults fixed by docs/contract.md.
pub mod defaults {
    /// Priority of a task that names none (higher runs first).
    pub const PRIORITY: i32 = 5;
    /// Retries of a task that names none.
    pub const MAX_RETRIES: u32 = 0;
    /// First retry backoff.
    pub const INITIAL_BACKOFF_MS: u32 = 1_000;
    /// Backoff growth per retry.
    pub const BACKOFF_MULTIPLIER: f64 = 2.0;
    /// Backoff cap.
    pub const MAX_BACKOFF_MS: u32 = 60_000;
    /// Lease of an assignment, in seconds.
    pub const LEASE_SECONDS: u32 = 30;
    /// Longest heartbeat interval told to workers (it is also at most a third of the lease).
    pub const HEARTBEAT_SECONDS: u32 = 10;
    /// Leases an attempt may lose before its task is failed (dead letter).
    pub const MAX_LEASE_LOSSES: u32 = 3;
    /// Coordinator address of the CLI, the worker and the clients.
    pub const COORDINATOR_URL: &str = "http://127.0.0.1:50051";
    /// Page size of list calls that name none.
    pub const PAGE_SIZE: u32 = 100;
    /// Reason of a cancelled task when the caller gives none.
    pub const TASK_CANCEL_REASON: &str = "cancelled";
    /// Reason of a cancelled job when the caller gives none.
    pub const JOB_CANCEL_REASON: &str = "job cancelled";
    /// First delay before a worker or a watching client reconnects.
    pub const RECONNECT_MIN: Duration = Duration::from_millis(100);
    /// Largest delay between reconnects.
    pub const RECONNECT_MAX: Duration = Duration::from_secs(5);

    use std::time::Duration;
}

/// Reconnect delays of workers and clients: doubling from [`defaults::RECONNECT_MIN`] to
/// [`defaults::RECONNECT_MAX`], each drawn between half and all of its step so that a fleet
/// does not reconnect in lockstep. The caller supplies the random draw, so this stays pure.
#[derive(Clone, Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The next delay; `draw` is a uniform number in `[0, 1)`.
    pub fn next(&mut self, draw: f64) -> std::time::Duration {
        let step = defaults::RECONNECT_MIN.saturating_mul(1 << self.failures.min(10)).min(defaults::RECONNECT_MAX);
        self.failures = self.failures.saturating_add(1);
        step.mul_f64(0.5 + draw.clamp(0.0, 1.0) * 0.5)
    }

    /// After a success: the next failure starts from the first delay again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Limits on what one request may carry. Past a field limit a call is INVALID_ARGUMENT
/// naming the field; past [`MAX_MESSAGE_BYTES`] it is RESOURCE_EXHAUSTED.
pub mod limits {
    /// One gRPC message, either way.
    pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
    /// Tasks in one AddTasks call.
    pub const MAX_BATCH: usize = 10_000;
    /// Dependencies (parent included) of one task.
    pub const MAX_DEPENDENCIES: usize = 1_000;
    /// Dependency edges in one AddTasks call, all tasks together.
    pub const MAX_BATCH_EDGES: usize = 100_000;
    /// Bytes of all task specs of one AddTasks call, encoded.
    pub const MAX_BATCH_BYTES: usize = 48 << 20;
    pub const MAX_PROMPT_BYTES: usize = 1 << 20;
    pub const MAX_DESCRIPTION_BYTES: usize = 64 << 10;
    /// A job's weight (CreateJobRequest.weight, UpdateJob): 1 up to this.
    pub const MAX_JOB_WEIGHT: u32 = 1_000;
    pub const MAX_METADATA_BYTES: usize = 64 << 10;
    /// A name, model, hostname, tool name and the like.
    pub const MAX_NAME_BYTES: usize = 256;
    /// A cancel or hand-back reason.
    pub const MAX_REASON_BYTES: usize = 4 << 10;
    pub const MAX_CONTEXT_FILES: usize = 100;
    /// Bytes of one task's context files together.
    pub const MAX_CONTEXT_BYTES: usize = 8 << 20;
    pub const MAX_EXPECTED_OUTPUTS: usize = 100;
    pub const MAX_PATH_BYTES: usize = 4_096;
    /// One component of a path (a file or directory name).
    pub const MAX_PATH_COMPONENT_BYTES: usize = 255;
    pub const MIN_PRIORITY: i32 = -1_000;
    pub const MAX_PRIORITY: i32 = 1_000;
    pub const MAX_RETRIES: u32 = 100;
    pub const MAX_INITIAL_BACKOFF_MS: u32 = 3_600_000;
    pub const MAX_BACKOFF_MS: u32 = 86_400_000;
    pub const MAX_BACKOFF_MULTIPLIER: f64 = 100.0;
    pub const MAX_TIMEOUT_SECONDS: u32 = 7 * 24 * 3_600;
    pub const MAX_HOOK_TIMEOUT_SECONDS: u32 = 86_400;
    /// Labels a task may require or a worker may carry.
    pub const MAX_LABELS: usize = 32;
    /// A label key or value.
    pub const MAX_LABEL_BYTES: usize = 63;
    pub const MAX_HOOKS: usize = 20;
    pub const MAX_HOOK_COMMAND_BYTES: usize = 4_096;
    pub const MAX_HOOK_DESCRIPTION_BYTES: usize = 1_024;
    pub const MAX_AGENT_TURNS: u32 = 10_000;
    pub const MAX_ALLOWED_TOOLS: usize = 100;
    pub const MAX_PAGE_SIZE: u32 = 1_000;
    /// Bytes of one page of a list call; a page ends early rather than pass it.
    pub const MAX_PAGE_BYTES: usize = 8 << 20;
    pub const MAX_CONTEXT_KEY_BYTES: usize = 256;
    pub const MAX_CONTEXT_VALUE_BYTES: usize = 64 << 10;
    /// Shared context entries in one scope (the global one or a job's).
    pub const MAX_CONTEXT_KEYS: usize = 1_000;
    /// Bytes of one scope's shared context, keys and values together (it goes to workers
    /// with every assignment of the scope).
    pub const MAX_CONTEXT_SCOPE_BYTES: usize = 1 << 20;
    /// A job or worker id, an idempotency key.
    pub const MAX_ID_BYTES: usize = 128;
    /// Task ids in one RetryTasks call.
    pub const MAX_RETRY_IDS: usize = 10_000;
    pub const MAX_SLOTS: u32 = 10_000;
    /// Reports in one Report call.
    pub const MAX_REPORTS: usize = 10_000;
    /// Bytes of the reports a worker sends in one Report call (below the message limit).
    pub const MAX_REPORT_BATCH_BYTES: usize = 48 << 20;
    pub const MAX_PROGRESS_BYTES: usize = 16 << 10;
    /// One task's result, encoded (its output, artifacts and error).
    pub const MAX_RESULT_BYTES: usize = 32 << 20;
    /// Agent kinds a worker may name at registration.
    pub const MAX_AGENT_KINDS: usize = 16;
    /// A git task's own patch (`result.git.patch`) and a caller's `git.base_patch`.
    pub const MAX_GIT_PATCH_BYTES: usize = 8 << 20;
    /// The patches a git task builds on, together (shipped with its assignment).
    pub const MAX_GIT_CHAIN_BYTES: usize = 32 << 20;
    /// A git revision or branch name.
    pub const MAX_GIT_REF_BYTES: usize = 256;
    /// A git commit message.
    pub const MAX_GIT_MESSAGE_BYTES: usize = 64 << 10;
}

/// Permission modes of the Claude agent a task may ask for (empty: the worker's own).
pub const PERMISSION_MODES: &[&str] = &["default", "acceptEdits", "bypassPermissions", "plan", "dontAsk"];

/// The short lowercase task state names used by the CLI, JSON and logs, indexed by the proto
/// enum value minus one (`TASK_STATE_WAITING` = 1).
pub const TASK_STATE_NAMES: [&str; 6] = ["waiting", "pending", "in_progress", "completed", "failed", "cancelled"];

/// Why a value breaks a rule; the caller prefixes the field name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Violation(pub String);

fn violation(msg: impl Into<String>) -> Violation {
    Violation(msg.into())
}

/// At most `max` bytes.
fn max_len(s: &str, max: usize) -> Result<(), Violation> {
    if s.len() > max {
        return Err(violation(format!("is {} bytes, at most {max} allowed", s.len())));
    }
    Ok(())
}

/// No NUL byte (SQLite and C strings stop at it; process arguments cannot carry it).
fn no_nul(s: &str) -> Result<(), Violation> {
    if s.contains('\0') {
        return Err(violation("must not contain NUL characters"));
    }
    Ok(())
}

/// A short free-text string (a reason, a name): at most `max` bytes, no NUL.
/// A timestamp as unix milliseconds (0 for any time before 1970).
pub fn timestamp_ms(t: &prost_types::Timestamp) -> u64 {
    let ms = t.seconds.saturating_mul(1_000).saturating_add(i64::from(t.nanos.clamp(0, 999_999_999) / 1_000_000));
    ms.max(0) as u64
}

/// Unix milliseconds as a timestamp.
pub fn timestamp_of_ms(ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: (ms / 1_000) as i64, nanos: ((ms % 1_000) * 1_000_000) as i32 }
}

pub fn text(s: &str, max: usize) -> Result<(), Violation> {
    max_len(s, max)?;
    no_nul(s)
}

/// A file path relative to a task's workspace (context files, expected outputs): `/`
/// separated components, each non-empty and neither `..` nor a control character; `.`
/// components are allowed but the last one must name a file. So `src/a.rs` and `./a.rs` are
/// fine; `/a`, `a/../b`, `a/`, `a//b`, `.` and `a\b` are not.
pub fn relative_file(p: &str) -> Result<(), Violation> {
    if p.is_empty() {
        return Err(violation("must not be empty"));
    }
    max_len(p, limits::MAX_PATH_BYTES)?;
    if p.chars().any(|c| c.is_control()) {
        return Err(violation(format!("{p:?} must not contain control characters")));
    }
    if p.contains('\\') {
        return Err(violation(format!("{p:?} must use / as the separator")));
    }
    if p.starts_with('/') {
        return Err(violation(format!("{p:?} must be relative to the workspace")));
    }
    let parts: Vec<&str> = p.split('/').collect();
    for part in &parts {
        match *part {
            "" => return Err(violation(format!("{p:?} has an empty component (a doubled or trailing /)"))),
            ".." => return Err(violation(format!("{p:?} must not contain '..'"))),
            c if c.len() > limits::MAX_PATH_COMPONENT_BYTES => {
                return Err(violation(format!(
                    "{p:?} has a component over {} bytes",
                    limits::MAX_PATH_COMPONENT_BYTES
                )));
            }
            _ => {}
        }
    }
    if parts.last() == Some(&".") {
        return Err(violation(format!("{p:?} names no file")));
    }
    Ok(())
}

/// A working directory: absolute, without `..` or control characters.
pub fn absolute_dir(p: &str) -> Result<(), Violation> {
    max_len(p, limits::MAX_PATH_BYTES)?;
    if p.chars().any(|c| c.is_control()) {
        return Err(violation(format!("{p:?} must not contain control characters")));
    }
    if !p.starts_with('/') {
        return Err(violation(format!("{p:?} must be an absolute path")));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(violation(format!("{p:?} must not contain '..'")));
    }
    Ok(())
}

/// A git source's repository: a URL (`scheme://...`, `user@host:path`) or an absolute path;
/// never an option (`-...`), never a transport helper (`ext::`, `fd::`), no control
/// characters or whitespace.
pub fn git_repo(s: &str) -> Result<(), Violation> {
    if s.is_empty() {
        return Err(violation("must not be empty"));
    }
    max_len(s, limits::MAX_PATH_BYTES)?;
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(violation(format!("{s:?} must not contain whitespace or control characters")));
    }
    if s.starts_with('-') {
        return Err(violation(format!("{s:?} must not start with '-'")));
    }
    if s.contains("::") {
        return Err(violation(format!("{s:?} names a git transport helper (`::`), which Orca does not run")));
    }
    let url = s.contains("://") || (s.contains('@') && s.contains(':'));
    if !url && !s.starts_with('/') {
        return Err(violation(format!("{s:?} must be a URL or an absolute path")));
    }
    Ok(())
}

/// Whether a repository names a path on the worker's disk (an absolute path or `file://`).
pub fn git_repo_local(s: &str) -> Option<&str> {
    if s.starts_with('/') { Some(s) } else { s.strip_prefix("file://") }
}

/// A git revision or branch name, with git's `check-ref-format` rules and no option-like
/// start: no `..`, `@{`, `//`, control characters, space, `~^:?*[\`; not starting or ending
/// with `/` or `.`, no component starting with `.` or ending with `.lock`.
pub fn git_ref(s: &str) -> Result<(), Violation> {
    if s.is_empty() {
        return Err(violation("must not be empty"));
    }
    max_len(s, limits::MAX_GIT_REF_BYTES)?;
    let bad_char = |c: char| c.is_control() || c == ' ' || "~^:?*[\\".contains(c);
    if let Some(c) = s.chars().find(|c| bad_char(*c)) {
        return Err(violation(format!("{s:?} must not contain {c:?}")));
    }
    if s.starts_with('-') || s.starts_with('/') || s.ends_with('/') || s.ends_with('.') || s == "@" {
        return Err(violation(format!("{s:?} is not a valid git reference name")));
    }
    if s.contains("..") || s.contains("@{") || s.contains("//") {
        return Err(violation(format!("{s:?} must not contain '..', '@{{' or '//'")));
    }
    if s.split('/').any(|c| c.starts_with('.') || c.ends_with(".lock")) {
        return Err(violation(format!("{s:?} has a component starting with '.' or ending with '.lock'")));
    }
    Ok(())
}

/// A commit author: `Name <email>`, one line.
pub fn git_author(s: &str) -> Result<(), Violation> {
    max_len(s, limits::MAX_NAME_BYTES)?;
    let ok = s.chars().all(|c| !c.is_control())
        && s.ends_with('>')
        && s.find('<').is_some_and(|i| i > 0 && !s[..i].trim().is_empty() && s[i + 1..s.len() - 1].contains('@'));
    if !ok {
        return Err(violation(format!("{s:?} is not \"Name <email>\"")));
    }
    Ok(())
}

/// The branch a git task's commit goes to when its source names none: `orca/<job>/<task>`,
/// with characters a reference cannot hold replaced by `-`.
pub fn git_default_branch(job: &str, task: i64) -> String {
    let job: String =
        job.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-') { c } else { '-' }).collect();
    let job = job.trim_matches('-');
    format!("orca/{}/{task}", if job.is_empty() { "job" } else { job })
}

fn label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')
}

/// A label: key 1-63 and value 0-63 characters of `[A-Za-z0-9_.-/]`.
pub fn label(key: &str, value: &str) -> Result<(), Violation> {
    let max = limits::MAX_LABEL_BYTES;
    if key.is_empty() || key.len() > max || !key.chars().all(label_char) {
        return Err(violation(format!("label key {key:?} must be 1-{max} characters of [A-Za-z0-9_.-/]")));
    }
    if value.len() > max || !value.chars().all(label_char) {
        return Err(violation(format!("label value {value:?} must be 0-{max} characters of [A-Za-z0-9_.-/]")));
    }
    Ok(())
}

/// Parses `key=value` (a worker's `--label`) and checks it with [`label`].
pub fn parse_label(s: &str) -> Result<(String, String), Violation> {
    let (k, v) = s.split_once('=').ok_or_else(|| violation(format!("{s:?} is not key=value")))?;
    label(k, v)?;
    Ok((k.to_string(), v.to_string()))
}

fn worker_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':')
}

/// A worker id: 1-128 characters of `[A-Za-z0-9_.-:]`.
pub fn worker_id(s: &str) -> Result<(), Violation> {
    if s.is_empty() {
        return Err(violation("is required"));
    }
    max_len(s, limits::MAX_ID_BYTES)?;
    if !s.chars().all(worker_id_char) {
        return Err(violation("must be characters of [A-Za-z0-9_.-:]"));
    }
    Ok(())
}

/// Turns any string into a valid worker id (other characters become `_`, cut to the limit).
pub fn worker_id_from(s: &str) -> String {
    let mut id: String = s.chars().map(|c| if worker_id_char(c) { c } else { '_' }).collect();
    id.truncate(limits::MAX_ID_BYTES);
    if id.is_empty() { "worker".to_string() } else { id }
}

/// Slots a worker advertises: 1..=[`limits::MAX_SLOTS`].
pub fn slots(n: u32) -> Result<(), Violation> {
    if n == 0 || n > limits::MAX_SLOTS {
        return Err(violation(format!("{n} is outside 1..={}", limits::MAX_SLOTS)));
    }
    Ok(())
}

/// A client's bearer token: the file `token_file` (a flag), else the file named by
/// `ORCA_TOKEN_FILE`, else `ORCA_TOKEN` itself; `None` when none is set. A token is never
/// taken from a flag's value, which `ps` would show. Surrounding whitespace is dropped.
pub fn token_from(token_file: Option<&std::path::Path>) -> Result<Option<String>, String> {
    let from_env = std::env::var_os("ORCA_TOKEN_FILE").filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    if let Some(path) = token_file.map(std::path::Path::to_path_buf).or(from_env) {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(format!("{} is empty", path.display()));
        }
        return Ok(Some(token.to_string()));
    }
    Ok(std::env::var("ORCA_TOKEN").ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()))
}

/// The `authorization` metadata value of a token: `Bearer <token>`.
pub fn bearer(token: &str) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>, String> {
    format!("Bearer {}", token.trim()).parse().map_err(|_| "the token must be printable ASCII".to_string())
}

/// This release (every binary of a build shares it).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a worker that sends no version is: the last release before Register carried one.
pub const UNVERSIONED_WORKER: &str = "0.1.0";

/// `major.minor.patch` (a pre-release or build suffix after `-` or `+` is ignored).
pub fn parse_version(v: &str) -> Result<(u64, u64, u64), Violation> {
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    let num = |s: &str| s.parse::<u64>().ok().filter(|_| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    match parts.as_slice() {
        [a, b, c] => match (num(a), num(b), num(c)) {
            (Some(a), Some(b), Some(c)) => Ok((a, b, c)),
            _ => Err(violation(format!("{v:?} is not a version like 1.2.3"))),
        },
        _ => Err(violation(format!("{v:?} is not a version like 1.2.3"))),
    }
}

/// The version-skew rule: a worker runs with a coordinator of the same major version and of
/// the same minor version or one above (a worker may be one minor release behind, never
/// ahead), so coordinators are upgraded first and workers after, machine by machine.
pub fn compatible(worker: &str, coordinator: &str) -> Result<(), Violation> {
    let w = parse_version(if worker.is_empty() { UNVERSIONED_WORKER } else { worker })?;
    let c = parse_version(coordinator)?;
    if w.0 == c.0 && (w.1 == c.1 || w.1 + 1 == c.1) {
        return Ok(());
    }
    let fix = if (w.0, w.1) > (c.0, c.1) { "upgrade the coordinator first" } else { "upgrade the worker" };
    Err(violation(format!(
        "worker {} cannot run with coordinator {coordinator}: a worker may be at most one minor \
         version behind its coordinator and never ahead; {fix}",
        if worker.is_empty() { UNVERSIONED_WORKER } else { worker }
    )))
}

/// The first `max` bytes of `s`, cut at a character boundary (how text is cut to a limit).
pub fn head_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut i = max;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    &s[..i]
}

/// The last `max` bytes of `s`, cut at a character boundary.
pub fn tail_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut i = s.len() - max;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// Escapes a string for a log line: control characters and non-ASCII shown as escapes, cut
/// to `max` bytes, so a name cannot forge log lines or terminal escapes.
pub fn log_safe(s: &str, max: usize) -> String {
    let mut out: String = s.chars().flat_map(char::escape_debug).take(max).collect();
    if out.len() < s.escape_debug().count() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn git_names_follow_gits_rules_and_never_look_like_options() {
        use super::{git_author, git_default_branch, git_ref, git_repo, git_repo_local};
        for ok in [
            "https://github.com/a/b.git",
            "ssh://git@h/x",
            "git@github.com:a/b.git",
            "/srv/repos/x.git",
            "file:///srv/x",
        ] {
            assert!(git_repo(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-uhttps://x", "ext::sh -c touch% /tmp/x", "relative/path", "/a b", "fd::3"] {
            assert!(git_repo(bad).is_err(), "{bad}");
        }
        assert_eq!(git_repo_local("file:///srv/x"), Some("/srv/x"));
        assert_eq!(git_repo_local("https://h/x"), None);
        for ok in ["main", "v1.2", "feature/x", "0123abcd", "orca/job-1/7"] {
            assert!(git_ref(ok).is_ok(), "{ok}");
        }
        for bad in
            ["", "-f", "a..b", "a b", "x~1", "HEAD^", "a:b", "/a", "a/", "a.lock", ".hidden", "a//b", "x@{1}", "end."]
        {
            assert!(git_ref(bad).is_err(), "{bad}");
        }
        assert!(git_author("Ada Lovelace <ada@example.com>").is_ok());
        for bad in ["ada", "<ada@x>", "Ada <ada>", "Ada <a@x>\nX: y"] {
            assert!(git_author(bad).is_err(), "{bad}");
        }
        assert_eq!(git_default_branch("job 1/x", 7), "orca/job-1-x/7");
        assert!(git_ref(&git_default_branch(".a..b", 1)).is_ok());
        assert_eq!(git_default_branch("...", 2), "orca/job/2");
    }

    use super::*;

    #[test]
    fn coordinator_lists_name_the_bad_url() {
        assert_eq!(coordinator_urls(" http://a:1 , https://b:2").unwrap(), ["http://a:1", "https://b:2"]);
        assert_eq!(coordinator_urls("http://a:1").unwrap(), ["http://a:1"]);
        assert!(coordinator_urls("http://a:1,,http://b:2").unwrap_err().contains("empty URL"));
        assert!(coordinator_urls("http://a:1,").unwrap_err().contains("empty URL"));
        assert!(coordinator_urls("http://a:1,ftp://b").unwrap_err().contains("\"ftp://b\" must start with http"));
        assert!(coordinator_urls("http://a:1,not a url").unwrap_err().contains("not a url"));
    }

    #[test]
    fn relative_files_are_one_rule() {
        for ok in ["a.txt", "src/main.rs", "./x", "a..b", "./a/./b", ".hidden", "x/.env"] {
            relative_file(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let bad = [
            ("", "empty"),
            (".", "names no file"),
            ("./", "empty component"),
            ("a/", "empty component"),
            ("a//b", "empty component"),
            ("a/.", "names no file"),
            ("/etc/passwd", "relative"),
            ("..", "'..'"),
            ("a/../../b", "'..'"),
            ("a\\b", "separator"),
            ("a\nb", "control"),
            ("a\0b", "control"),
        ];
        for (p, want) in bad {
            let e = relative_file(p).unwrap_err();
            assert!(e.0.contains(want), "{p:?}: {e} should say {want:?}");
        }
        relative_file(&"a".repeat(255)).unwrap();
        assert!(relative_file(&"a".repeat(256)).is_err());
        assert!(relative_file(&"a/".repeat(2_048)).is_err());
    }

    #[test]
    fn working_dirs_are_absolute() {
        absolute_dir("/srv/repo").unwrap();
        absolute_dir("/srv/a..b").unwrap();
        for bad in ["rel", "/srv/../etc", "/a\nb", ""] {
            assert!(absolute_dir(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn labels_have_one_syntax() {
        label("gpu", "a100").unwrap();
        label("zone/x", "").unwrap();
        assert_eq!(parse_label("os=linux").unwrap(), ("os".into(), "linux".into()));
        for (k, v) in [("", "x"), ("bad key", "x"), ("k", "v v"), (&"k".repeat(64)[..], "x")] {
            assert!(label(k, v).is_err(), "{k:?}={v:?}");
        }
        assert!(label("k", &"v".repeat(64)).is_err());
        assert!(parse_label("novalue").unwrap_err().0.contains("key=value"));
    }

    #[test]
    fn worker_ids_use_one_alphabet() {
        worker_id("host-1:w_2.a").unwrap();
        assert!(worker_id("").is_err());
        assert!(worker_id("a b").is_err());
        assert!(worker_id(&"a".repeat(129)).is_err());
        let made = worker_id_from("my host/ü\n");
        worker_id(&made).unwrap();
        assert_eq!(made, "my_host___");
        worker_id(&worker_id_from(&"x".repeat(500))).unwrap();
        assert_eq!(worker_id_from(""), "worker");
    }

    #[test]
    fn slots_and_text_limits() {
        slots(1).unwrap();
        slots(limits::MAX_SLOTS).unwrap();
        assert!(slots(0).is_err());
        assert!(slots(limits::MAX_SLOTS + 1).is_err());
        text("fine", 10).unwrap();
        assert!(text("toolong", 3).unwrap_err().0.contains("at most 3"));
        assert!(text("a\0", 10).is_err());
    }

    #[test]
    fn text_is_cut_at_a_character_boundary() {
        assert_eq!(head_str("abc", 5), "abc");
        assert_eq!(head_str("aé", 2), "a");
        assert_eq!(head_str("aéb", 3), "aé");
    }

    #[test]
    fn log_safe_escapes_and_cuts() {
        assert_eq!(log_safe("w1", 64), "w1");
        assert_eq!(log_safe("a\nb\x1b[2J", 64), "a\\nb\\u{1b}[2J");
        assert_eq!(log_safe(&"x".repeat(10), 4), "xxxx…");
    }

    #[test]
    fn reconnect_delays_double_up_to_the_cap_with_jitter() {
        use std::time::Duration;
        let mut b = Backoff::default();
        let top: Vec<Duration> = (0..8).map(|_| b.next(1.0)).collect();
        assert_eq!(top[0], defaults::RECONNECT_MIN);
        assert_eq!(top[1], defaults::RECONNECT_MIN * 2);
        assert_eq!(*top.last().unwrap(), defaults::RECONNECT_MAX);
        b.reset();
        assert_eq!(b.next(0.0), defaults::RECONNECT_MIN / 2);
    }

    #[test]
    fn state_names_follow_the_proto_numbers() {
        use crate::pb::TaskState;
        for (i, name) in TASK_STATE_NAMES.iter().enumerate() {
            let s = TaskState::try_from(i as i32 + 1).unwrap();
            assert_eq!(s.short_name(), *name);
        }
    }
}

#[cfg(test)]
mod version_tests {
    use super::*;

    #[test]
    fn workers_may_be_one_minor_version_behind_never_ahead() {
        assert!(compatible("0.2.0", "0.2.0").is_ok());
        assert!(compatible("0.2.7", "0.2.1").is_ok(), "patch releases mix freely");
        assert!(compatible("0.1.3", "0.2.0").is_ok(), "one minor behind");
        assert!(compatible("", "0.2.0").is_ok(), "an unversioned worker is 0.1.0");
        assert!(compatible("1.4.0-rc.1", "1.5.2").is_ok());
        let behind = compatible("0.1.0", "0.3.0").unwrap_err().0;
        assert!(behind.contains("upgrade the worker") && behind.contains("0.3.0"), "{behind}");
        let ahead = compatible("0.3.0", "0.2.0").unwrap_err().0;
        assert!(ahead.contains("upgrade the coordinator first"), "{ahead}");
        assert!(compatible("1.2.0", "2.2.0").is_err(), "majors differ");
        assert!(compatible("x.y", "0.2.0").unwrap_err().0.contains("not a version"));
        assert!(parse_version("1.2").is_err() && parse_version("1.2.+3").is_err());
        assert_eq!(parse_version("10.20.30+build").unwrap(), (10, 20, 30));
    }
}

/// The host name (Linux's `/proc/sys/kernel/hostname`), or "localhost" when it cannot be
/// read: a worker's default name, a coordinator's default advertised host.
pub fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = name.trim();
    if name.is_empty() { "localhost".into() } else { name.to_string() }
}

/// Whether a coordinator's `--db` names a Postgres database (a `postgres://` or
/// `postgresql://` URL) rather than a SQLite file.
pub fn is_postgres_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// The coordinator URLs of `--coordinator` / `ORCA_COORDINATOR`: one, or several separated by
/// commas (standby coordinators; callers follow the leader among them). Each must be an
/// `http://` or `https://` URL with a host; the error names the bad one.
pub fn coordinator_urls(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for url in s.split(',').map(str::trim) {
        if url.is_empty() {
            return Err(format!("{s:?} has an empty URL (URLs are separated by commas)"));
        }
        let uri: tonic::transport::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http") | Some("https")) {
            return Err(format!("{url:?} must start with http:// or https://"));
        }
        if uri.host().is_none() {
            return Err(format!("{url:?} has no host"));
        }
        out.push(url.to_string());
    }
    Ok(out)
}
