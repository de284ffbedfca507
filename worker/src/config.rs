//! Command-line flags and `ORCA_*` environment variables of `orca-worker` (names fixed by
//! docs/contract.md), and their validation. Everything here is checked before the worker
//! connects anywhere: a bad value ends the process with a message naming the flag.

use std::collections::BTreeMap;
use std::path::PathBuf;

use std::time::Duration;

use clap::{Parser, ValueEnum};
use orca_proto::contract::{self, limits};

use crate::agent;

/// Which agent runs the tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AgentKind {
    /// Claude Code headless (`claude -p`, stream-json output).
    Claude,
    /// Any program, from the `--agent-command` template.
    Command,
    /// Completes every task at once with an empty output, without a process (benchmarks).
    Noop,
    /// A built-in stand-in that needs nothing (`orca up --demo`): writes the expected outputs
    /// and prints a short answer, calling no model (see `agent::demo`).
    Demo,
}

impl AgentKind {
    pub fn name(self) -> &'static str {
        match self {
            AgentKind::Claude => "claude",
            AgentKind::Command => "command",
            AgentKind::Noop => "noop",
            AgentKind::Demo => "demo",
        }
    }
}

/// Orca's worker: runs the tasks the coordinator assigns as supervised agent processes.
#[derive(Clone, Debug, Parser)]
#[command(name = "orca-worker", version, about)]
pub struct Args {
    /// TOML file whose `[worker]` section sets any flag (flag > environment > file).
    #[arg(long, env = "ORCA_CONFIG")]
    pub config: Option<PathBuf>,

    /// Coordinator URL, or several separated by commas (standby coordinators: the worker
    /// moves to the next one whenever it cannot connect or is refused, until one leads).
    #[arg(long, env = "ORCA_COORDINATOR", default_value = orca_proto::defaults::COORDINATOR_URL)]
    pub coordinator: String,

    /// Tasks run at once (default: the number of CPUs).
    #[arg(long, env = "ORCA_SLOTS")]
    pub slots: Option<u32>,

    /// Name shown by the coordinator (default: the host name).
    #[arg(long, env = "ORCA_NAME")]
    pub name: Option<String>,

    /// A label `key=value` that tasks can require (repeatable; ORCA_LABELS is comma-separated).
    #[arg(long = "label", env = "ORCA_LABELS", value_delimiter = ',', value_name = "KEY=VALUE")]
    pub labels: Vec<String>,

    /// The agent that runs the tasks.
    #[arg(long, env = "ORCA_AGENT", value_enum, default_value_t = AgentKind::Claude)]
    pub agent: AgentKind,

    /// For `--agent command`: the command template run with `sh -c` (placeholders {prompt},
    /// {task_id}, {job_id}, {workspace}, {attempt}); for `--agent claude`: the claude binary.
    #[arg(long, env = "ORCA_AGENT_COMMAND", value_name = "CMD")]
    pub agent_command: Option<String>,

    /// Directory for fresh task workspaces (default: orca-worker under the system temp dir).
    #[arg(long, env = "ORCA_WORK_DIR", value_name = "DIR")]
    pub work_dir: Option<PathBuf>,

    /// Root under which a task's working_dir is used in place (repeatable; ORCA_ALLOW_DIRS is
    /// comma-separated).
    #[arg(long = "allow-dir", env = "ORCA_ALLOW_DIRS", value_delimiter = ',', value_name = "DIR")]
    pub allow_dirs: Vec<PathBuf>,

    /// Seconds running tasks get to finish after SIGTERM before they are killed and handed back.
    #[arg(long, env = "ORCA_GRACE_SECONDS", default_value_t = 30)]
    pub grace_seconds: u64,

    /// Hours the workspace of a failed attempt is kept for inspection before a sweep removes
    /// it (0: at the next sweep).
    #[arg(long, env = "ORCA_KEEP_WORKSPACES_HOURS", default_value_t = 24.0, value_name = "HOURS")]
    pub keep_workspaces_hours: f64,

    /// Bound on the disk space of all workspaces in --work-dir, in GiB; kept workspaces are
    /// removed oldest first to stay under it (default: no bound).
    #[arg(long, env = "ORCA_MAX_WORK_DIR_GB", value_name = "GB")]
    pub max_work_dir_gb: Option<f64>,

    /// Free space (MiB) on the filesystem of --work-dir under which the worker takes no new
    /// work until space is back (0: no check).
    #[arg(long, env = "ORCA_MIN_FREE_DISK_MB", default_value_t = 1024, value_name = "MB")]
    pub min_free_disk_mb: u64,

    /// Log lines: human-readable, or JSON objects with the trace id of the span they are in.
    #[arg(long, env = "ORCA_LOG_FORMAT", value_enum, default_value_t = orca_telemetry::LogFormat::Human)]
    pub log_format: orca_telemetry::LogFormat,

    /// The widest permission mode a task's Claude agent may run with (a task may ask for a
    /// narrower one): plan < default, dontAsk < acceptEdits < bypassPermissions.
    #[arg(long, env = "ORCA_PERMISSION_MODE", default_value = "bypassPermissions", value_parser = clap::builder::PossibleValuesParser::new(orca_proto::contract::PERMISSION_MODES))]
    pub permission_mode: String,

    /// Which verification hooks run: any, listed (matching an --allow-hook), or none.
    #[arg(long, env = "ORCA_HOOKS", value_enum, default_value_t = crate::policy::Hooks::Any)]
    pub hooks: crate::policy::Hooks,

    /// A hook command allowed with `--hooks listed` (repeatable; `*` matches any run of
    /// characters, the whole command must match).
    #[arg(long = "allow-hook", env = "ORCA_ALLOW_HOOKS", value_delimiter = ',')]
    pub allow_hooks: Vec<String>,

    /// A git repository tasks may name in their git source (repeatable; `*` matches any run of
    /// characters, the whole URL or path must match; none by default, so git tasks fail
    /// with a `worker policy:` reason). Local paths must also lie under an --allow-dir root.
    #[arg(long = "allow-repo", env = "ORCA_ALLOW_REPOS", value_delimiter = ',', value_name = "PATTERN")]
    pub allow_repos: Vec<String>,

    /// File holding the bearer token (or set ORCA_TOKEN to the token itself; never a flag's
    /// value, which `ps` shows).
    #[arg(long, env = "ORCA_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// PEM CA certificates that sign the coordinator's certificate (for an https:// URL;
    /// default: the system's roots).
    #[arg(long, env = "ORCA_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// PEM client certificate for mutual TLS (with --tls-key).
    #[arg(long, env = "ORCA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "ORCA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// A checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The URLs as given (for logs).
    pub coordinator: String,
    /// Each URL: the worker tries them in turn until one leads (standby coordinators).
    pub coordinators: Vec<String>,
    pub slots: u32,
    pub name: String,
    pub hostname: String,
    pub labels: BTreeMap<String, String>,
    pub agent: AgentKind,
    pub agent_command: Option<String>,
    /// Canonical, created.
    pub work_dir: PathBuf,
    /// Canonical, existing directories.
    pub allow_dirs: Vec<PathBuf>,
    pub grace_seconds: u64,
    /// How long a failed attempt's workspace is kept.
    pub keep_workspaces: Duration,
    /// Bound on the workspaces' disk space.
    pub max_work_dir_bytes: Option<u64>,
    /// Free space under which no new work is taken; 0 for no check.
    pub min_free_disk_bytes: u64,
    /// The bearer token sent with every call (see the coordinator's `--auth-file`).
    pub token: Option<Token>,
    /// What a task may make this worker run.
    pub policy: crate::policy::Policy,
    /// TLS towards an https:// coordinator.
    pub tls: orca_proto::tls::ClientTls,
}

/// A bearer token; never printed.
#[derive(Clone)]
pub struct Token(pub String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl std::ops::Deref for Token {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// A configuration error, naming the flag.
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {message}")]
pub struct Error {
    pub flag: &'static str,
    pub message: String,
}

fn err(flag: &'static str, message: impl Into<String>) -> Error {
    Error { flag, message: message.into() }
}

/// The command template the agent runs: required with `command`, built in with `demo`.
fn agent_command(kind: AgentKind, given: Option<String>) -> Result<Option<String>, Error> {
    let given = given.filter(|c| !c.trim().is_empty());
    match kind {
        AgentKind::Command if given.is_none() => Err(err("--agent-command", "is required with --agent command")),
        AgentKind::Demo if given.is_some() => {
            Err(err("--agent-command", "is not used with --agent demo (its script is built in)"))
        }
        AgentKind::Demo => Ok(Some(crate::agent::demo::SCRIPT.to_string())),
        _ => Ok(given),
    }
}

/// The host name, or "localhost" when it cannot be read.
pub fn hostname() -> String {
    orca_proto::contract::hostname()
}

impl Args {
    /// Checks every value; creates the work directory.
    pub fn validate(self) -> Result<Config, Error> {
        let (keep_workspaces, max_work_dir_bytes, min_free_disk_bytes) = self.disk_limits()?;
        let (policy, token, tls) = self.trust()?;
        let coordinators = contract::coordinator_urls(&self.coordinator).map_err(|e| err("--coordinator", e))?;
        let slots = match self.slots {
            Some(n) => n,
            None => std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1),
        };
        contract::slots(slots).map_err(|v| err("--slots", v.0))?;
        let hostname = hostname();
        let name = self.name.unwrap_or_else(|| hostname.clone());
        if name.trim().is_empty() || name.len() > limits::MAX_NAME_BYTES {
            return Err(err("--name", format!("must be 1-{} bytes", limits::MAX_NAME_BYTES)));
        }
        let mut labels = BTreeMap::new();
        for l in self.labels.iter().filter(|l| !l.trim().is_empty()) {
            let (k, v) = contract::parse_label(l.trim()).map_err(|v| err("--label", v.0))?;
            labels.insert(k, v);
        }
        if labels.len() > limits::MAX_LABELS {
            return Err(err("--label", format!("at most {} labels", limits::MAX_LABELS)));
        }
        let agent_command = agent_command(self.agent, self.agent_command)?;
        let work_dir = self.work_dir.unwrap_or_else(|| std::env::temp_dir().join("orca-worker"));
        std::fs::create_dir_all(&work_dir)
            .map_err(|e| err("--work-dir", format!("cannot create {}: {e}", work_dir.display())))?;
        let work_dir = work_dir
            .canonicalize()
            .map_err(|e| err("--work-dir", format!("cannot resolve {}: {e}", work_dir.display())))?;
        let probe = work_dir.join(format!(".orca-probe-{}", std::process::id()));
        std::fs::write(&probe, b"")
            .map_err(|e| err("--work-dir", format!("{} is not writable: {e}", work_dir.display())))?;
        let _ = std::fs::remove_file(&probe);
        let mut allow_dirs = Vec::new();
        for d in self.allow_dirs.iter().filter(|d| !d.as_os_str().is_empty()) {
            let c = d.canonicalize().map_err(|e| err("--allow-dir", format!("{}: {e}", d.display())))?;
            if !c.is_dir() {
                return Err(err("--allow-dir", format!("{} is not a directory", d.display())));
            }
            allow_dirs.push(c);
        }
        // A worker that cannot run its agent would only fail (or hand back) every task it is
        // given: it refuses to start instead.
        if let Some(why) = agent::problem(self.agent, agent_command.as_deref()) {
            return Err(err(if agent_command.is_some() { "--agent-command" } else { "--agent" }, why));
        }
        if !policy.allow_repos.is_empty()
            && let Err(why) = crate::git::installed()
        {
            return Err(err("--allow-repo", why));
        }
        Ok(Config {
            coordinator: coordinators.join(","),
            coordinators,
            slots,
            name,
            hostname,
            labels,
            agent: self.agent,
            agent_command,
            work_dir,
            allow_dirs,
            grace_seconds: self.grace_seconds,
            keep_workspaces,
            max_work_dir_bytes,
            min_free_disk_bytes,
            policy,
            token,
            tls,
        })
    }

    /// What tasks may make this worker run, and the token and TLS files it presents.
    fn trust(&self) -> Result<(crate::policy::Policy, Option<Token>, orca_proto::tls::ClientTls), Error> {
        let policy = crate::policy::Policy {
            permission_mode: self.permission_mode.clone(),
            hooks: self.hooks,
            allow_hooks: self.allow_hooks.clone(),
            allow_repos: self.allow_repos.iter().filter(|p| !p.is_empty()).cloned().collect(),
        };
        let token = orca_proto::contract::token_from(self.token_file.as_deref())
            .map_err(|e| err("--token-file", e))?
            .map(Token);
        let tls = orca_proto::tls::ClientTls {
            ca: self.tls_ca.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
        };
        Ok((policy, token, tls))
    }

    /// The workspace and disk flags, checked and in the units the worker uses.
    fn disk_limits(&self) -> Result<(Duration, Option<u64>, u64), Error> {
        let hours = self.keep_workspaces_hours;
        if !hours.is_finite() || !(0.0..=MAX_KEEP_HOURS).contains(&hours) {
            return Err(err("--keep-workspaces-hours", format!("{hours} is outside 0-{MAX_KEEP_HOURS}")));
        }
        let keep = Duration::from_secs_f64(hours * 3600.0);
        let max_bytes = match self.max_work_dir_gb {
            None => None,
            Some(gb) if gb.is_finite() && gb > 0.0 && gb <= MAX_WORK_DIR_GB => Some((gb * (1u64 << 30) as f64) as u64),
            Some(gb) => return Err(err("--max-work-dir-gb", format!("{gb} is outside (0, {MAX_WORK_DIR_GB}]"))),
        };
        let min_free = self
            .min_free_disk_mb
            .checked_mul(1 << 20)
            .ok_or_else(|| err("--min-free-disk-mb", format!("{} is too large", self.min_free_disk_mb)))?;
        Ok((keep, max_bytes, min_free))
    }
}

/// Longest `--keep-workspaces-hours` (ten years).
const MAX_KEEP_HOURS: f64 = 24.0 * 3650.0;
/// Largest `--max-work-dir-gb` (1 PiB).
const MAX_WORK_DIR_GB: f64 = 1024.0 * 1024.0;

impl Config {
    /// A worker id for this process: the name (reduced to the id alphabet) and a UUIDv7, so
    /// that it is unique across restarts and readable in logs.
    pub fn new_worker_id(&self) -> String {
        // 64 + 1 + 32 characters: within the id limit.
        let base: String = contract::worker_id_from(&self.name).chars().take(64).collect();
        format!("{base}-{}", uuid::Uuid::now_v7().simple())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn the_example_file_documents_every_flag_and_loads() {
        use clap::CommandFactory;
        use orca_proto::config_file;
        let example = include_str!("../../deploy/orca.toml.example");
        assert_eq!(config_file::documented_keys(example, "worker"), config_file::file_keys(&Args::command()));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orca.toml");
        std::fs::write(&path, example).unwrap();
        let args = vec!["orca-worker".into(), "--config".into(), path.into_os_string()];
        let args = config_file::with_file(&Args::command(), "worker", args).unwrap();
        let a = Args::try_parse_from(args).unwrap();
        assert_eq!((a.agent, a.grace_seconds), (AgentKind::Claude, 30));
    }

    /// A valid configuration with its work dir in `dir` (the noop agent).
    pub(crate) fn config(dir: &std::path::Path) -> Config {
        args(&["--agent", "noop", "--work-dir", dir.to_str().unwrap()]).validate().unwrap()
    }

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["orca-worker"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).unwrap()
    }

    #[test]
    fn labels_parse_with_the_coordinators_rules() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let parse = |s: &str| {
            args(&["--label", s, "--work-dir", d, "--agent", "noop"])
                .validate()
                .map(|c| c.labels)
                .map_err(|e| e.to_string())
        };
        assert_eq!(parse("gpu=a100").unwrap().get("gpu").map(String::as_str), Some("a100"));
        assert!(parse("novalue").unwrap_err().contains("key=value"));
        assert!(parse("a=b c").unwrap_err().contains("--label"));
    }

    #[test]
    fn labels_and_allow_dirs_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let a = args(&[
            "--label",
            "a=1",
            "--label",
            "b=2,c=3",
            "--work-dir",
            d,
            "--allow-dir",
            d,
            "--slots",
            "3",
            "--agent-command",
            "/bin/sh",
        ]);
        let c = a.validate().unwrap();
        assert_eq!(c.labels.len(), 3);
        assert_eq!(c.allow_dirs, vec![dir.path().canonicalize().unwrap()]);
        assert_eq!(c.slots, 3);
        assert_eq!(c.agent, AgentKind::Claude);
        assert_eq!(c.keep_workspaces, Duration::from_secs(24 * 3600));
        assert_eq!((c.max_work_dir_bytes, c.min_free_disk_bytes), (None, 1024 << 20));
    }

    #[test]
    fn bad_values_name_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let cases: &[(&[&str], &str)] = &[
            (&["--slots", "0"], "--slots"),
            (&["--coordinator", "ftp://x"], "--coordinator"),
            (&["--coordinator", "not a url"], "--coordinator"),
            (&["--label", "bad"], "--label"),
            (&["--agent", "command"], "--agent-command"),
            (&["--allow-dir", "/definitely/not/here"], "--allow-dir"),
            (&["--agent", "noop", "--keep-workspaces-hours=-1"], "--keep-workspaces-hours"),
            (&["--agent", "noop", "--keep-workspaces-hours", "NaN"], "--keep-workspaces-hours"),
            (&["--agent", "noop", "--max-work-dir-gb", "0"], "--max-work-dir-gb"),
            (&["--agent", "noop", "--min-free-disk-mb", "18446744073709551615"], "--min-free-disk-mb"),
            (&["--agent", "command", "--agent-command", "/nonexistent {prompt}"], "--agent-command"),
            (&["--agent", "claude", "--agent-command", "/nonexistent/claude"], "--agent-command"),
        ];
        for (extra, flag) in cases {
            let mut v = vec!["--work-dir", d];
            v.extend_from_slice(extra);
            let e = args(&v).validate().unwrap_err();
            assert_eq!(e.flag, *flag, "{extra:?}: {e}");
        }
    }

    #[test]
    fn worker_ids_use_the_id_alphabet() {
        let dir = tempfile::tempdir().unwrap();
        let c = args(&["--name", "my host/1", "--agent", "noop", "--work-dir", dir.path().to_str().unwrap()])
            .validate()
            .unwrap();
        let id = c.new_worker_id();
        assert!(id.starts_with("my_host_1-"), "{id}");
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || "_.-:".contains(c)));
        assert_ne!(id, c.new_worker_id());
    }
}
