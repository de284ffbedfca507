//! Running one supervised process (an agent or a verification hook) and the agents' own
//! parts: the Claude Code invocation and output parser ([`claude`]) and the command template
//! ([`command`]).
//!
//! What stays true for every process run here (invariant 8 of docs/design.md):
//! - it runs under a [`supervise`]or, so a timeout, a stop (cancellation, shutdown) or the
//!   worker's own death kills it and every process it started;
//! - stdout and stderr are read until EOF while it runs, so it never blocks on a full pipe;
//!   only the tail is kept ([`STDOUT_TAIL`], [`STDERR_TAIL`]);
//! - when the run ends (the process exits, times out or is stopped), the supervisor kills
//!   whatever the process left running, in its group or not, before it exits.

pub mod claude;
pub mod command;
pub mod demo;
pub mod supervise;

pub use orca_proto::contract::head_str;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::config::AgentKind;
use tokio::sync::watch;

/// Bytes of stdout kept (the tail).
pub const STDOUT_TAIL: usize = 1 << 20;
/// Bytes of stderr kept (the tail).
pub const STDERR_TAIL: usize = 64 << 10;
/// Longest output line handed to a line parser; longer lines are skipped.
pub const MAX_LINE: usize = 16 << 20;
/// Time between SIGTERM and SIGKILL when a process group is stopped politely.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// How long the pipes are still read after the supervisor exited (it killed every descendant
/// first, but a process that is not one, given the pipe's fd, may hold them open).
pub const PIPE_DRAIN: Duration = Duration::from_secs(2);

/// Why the worker stops a running attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The coordinator cancelled it.
    Cancelled,
    /// The coordinator no longer counts it as this worker's (fenced off).
    Stale,
    /// The worker shuts down; the attempt is handed back.
    Shutdown,
}

/// A stop request; `immediate` skips the SIGTERM grace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stop {
    pub reason: StopReason,
    pub immediate: bool,
}

/// A callback for each stdout line.
pub type OnLine<'a> = &'a mut (dyn FnMut(&[u8]) + Send);

/// The receiving side of an attempt's stop requests.
pub type StopRx = watch::Receiver<Option<Stop>>;

/// What to run.
#[derive(Clone, Debug, Default)]
pub struct Invocation {
    pub program: OsString,
    pub args: Vec<OsString>,
    /// Added to the worker's environment.
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// Written to stdin, which is then closed (stdin is /dev/null when empty).
    pub stdin: Vec<u8>,
    pub timeout: Option<Duration>,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Exit code, or 128 + signal.
    Exited(i32),
    TimedOut(Duration),
    Stopped(StopReason),
    SpawnFailed(String),
}

/// The result of a run.
#[derive(Debug)]
pub struct Outcome {
    pub ending: Ending,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub duration: Duration,
}

/// The last `cap` bytes of a stream.
pub struct Tail {
    buf: Vec<u8>,
    cap: usize,
}

impl Tail {
    pub fn new(cap: usize) -> Self {
        Tail { buf: Vec::new(), cap }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        if self.buf.len() > 2 * self.cap {
            let cut = self.buf.len() - self.cap;
            self.buf.drain(..cut);
        }
    }

    pub fn into_vec(mut self) -> Vec<u8> {
        if self.buf.len() > self.cap {
            let cut = self.buf.len() - self.cap;
            self.buf.drain(..cut);
        }
        self.buf
    }
}

/// Splits a byte stream into lines (without the newline); lines over `max` bytes are dropped.
pub struct Lines {
    buf: Vec<u8>,
    max: usize,
    overflow: bool,
}

impl Lines {
    pub fn new(max: usize) -> Self {
        Lines { buf: Vec::new(), max, overflow: false }
    }

    pub fn push(&mut self, mut data: &[u8], f: &mut dyn FnMut(&[u8])) {
        while let Some(i) = data.iter().position(|b| *b == b'\n') {
            if !self.overflow && self.buf.len() + i <= self.max {
                if self.buf.is_empty() {
                    f(&data[..i]);
                } else {
                    self.buf.extend_from_slice(&data[..i]);
                    f(&self.buf);
                }
            }
            self.buf.clear();
            self.overflow = false;
            data = &data[i + 1..];
        }
        if !self.overflow {
            if self.buf.len() + data.len() > self.max {
                self.overflow = true;
                self.buf.clear();
            } else {
                self.buf.extend_from_slice(data);
            }
        }
    }

    pub fn finish(&mut self, f: &mut dyn FnMut(&[u8])) {
        if !self.overflow && !self.buf.is_empty() {
            f(&self.buf);
        }
        self.buf.clear();
    }
}

/// Text of captured bytes.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub use orca_proto::contract::tail_str;

/// Whether `program` can be run: a path to an executable file, or a name found in PATH.
pub fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        let p = PathBuf::from(program);
        return runnable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| runnable(p))
}

/// The Claude Code binary the `claude` agent runs: `--agent-command`, or `claude`.
pub fn claude_binary(agent_command: Option<&str>) -> &str {
    agent_command.unwrap_or("claude")
}

/// Why the configured agent cannot be started now, naming the flag to fix: the claude
/// binary, or the program a command template starts with, is not an executable file (in
/// PATH for a bare name). `None` when it can be, and for what cannot be checked without
/// running it (see [`command::leading_program`]).
pub fn problem(kind: AgentKind, agent_command: Option<&str>) -> Option<String> {
    let (program, what) = match kind {
        AgentKind::Noop | AgentKind::Demo => return None,
        AgentKind::Claude => (claude_binary(agent_command), "the claude binary"),
        AgentKind::Command => (command::leading_program(agent_command?)?, "the program of --agent-command"),
    };
    if find_program(program).is_some() {
        return None;
    }
    let where_ = if program.contains('/') { "" } else { " in PATH" };
    let fix = match (kind, agent_command) {
        (AgentKind::Claude, None) => "install Claude Code for this user, or name its path with --agent-command",
        (AgentKind::Claude, Some(_)) => "fix --agent-command",
        _ => "fix --agent-command or install the program",
    };
    Some(format!("{what} {program:?} is not found (no executable file of that name{where_}); {fix}"))
}

fn exit_code(s: std::io::Result<std::process::ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match s {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
        Err(_) => -1,
    }
}

enum Cause {
    Timeout,
    Stop(StopReason),
}

/// Runs `inv` under a supervisor (`exe` is this worker's executable), calling `on_line` with
/// each stdout line as it comes. Returns once the process exited and its pipes were drained.
pub async fn run(exe: &Path, inv: Invocation, stop: &mut StopRx, on_line: Option<OnLine<'_>>) -> Outcome {
    let started = Instant::now();
    let outcome = |ending, stdout, stderr| Outcome { ending, stdout, stderr, duration: started.elapsed() };
    if let Some(s) = *stop.borrow_and_update() {
        return outcome(Ending::Stopped(s.reason), vec![], vec![]);
    }
    let mut sup = match supervise::spawn(exe, &inv) {
        Ok(s) => s,
        Err(e) => return outcome(Ending::SpawnFailed(format!("cannot start the supervisor: {e}")), vec![], vec![]),
    };
    let (Some(out), Some(err)) = (sup.child.stdout.take(), sup.child.stderr.take()) else {
        sup.kill();
        return outcome(Ending::SpawnFailed("no output pipes".into()), vec![], vec![]);
    };
    let mut watched = Watched::new(out, err, on_line);
    watched.until_done(&mut sup, stop, inv.timeout.map(|t| started + t)).await;
    let ending = match watched.cause {
        Some(Cause::Timeout) => Ending::TimedOut(inv.timeout.unwrap_or_default()),
        Some(Cause::Stop(r)) => Ending::Stopped(r),
        None => match sup.spawn_error() {
            Some(e) => Ending::SpawnFailed(e),
            None => Ending::Exited(watched.status.unwrap_or(-1)),
        },
    };
    outcome(ending, watched.out_tail.into_vec(), watched.err_tail.into_vec())
}

/// A supervised process being watched: its pipes, what was read, why it is being stopped.
struct Watched<'a> {
    out: tokio::process::ChildStdout,
    err: tokio::process::ChildStderr,
    on_line: Option<OnLine<'a>>,
    out_tail: Tail,
    err_tail: Tail,
    lines: Lines,
    status: Option<i32>,
    cause: Option<Cause>,
    /// When a polite stop turns into a kill.
    kill_at: Option<Instant>,
    /// How long the pipes are still read after the exit.
    drain_until: Option<Instant>,
}

impl<'a> Watched<'a> {
    fn new(out: tokio::process::ChildStdout, err: tokio::process::ChildStderr, on_line: Option<OnLine<'a>>) -> Self {
        Watched {
            out,
            err,
            on_line,
            out_tail: Tail::new(STDOUT_TAIL),
            err_tail: Tail::new(STDERR_TAIL),
            lines: Lines::new(MAX_LINE),
            status: None,
            cause: None,
            kill_at: None,
            drain_until: None,
        }
    }

    /// Reads both pipes until the supervisor exited and they closed (or [`PIPE_DRAIN`]
    /// passed), acting on the timeout and on stop requests meanwhile.
    async fn until_done(&mut self, sup: &mut supervise::Supervised, stop: &mut StopRx, timeout_at: Option<Instant>) {
        let mut obuf = vec![0u8; 64 << 10];
        let mut ebuf = vec![0u8; 16 << 10];
        let (mut out_open, mut err_open, mut stop_open) = (true, true, true);
        loop {
            if self.status.is_some() && !out_open && !err_open {
                break;
            }
            if self.drain_until.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let running = self.status.is_none();
            tokio::select! {
                r = self.out.read(&mut obuf), if out_open => match r {
                    Ok(0) | Err(_) => out_open = false,
                    Ok(n) => self.stdout(&obuf[..n]),
                },
                r = self.err.read(&mut ebuf), if err_open => match r {
                    Ok(0) | Err(_) => err_open = false,
                    Ok(n) => self.err_tail.push(&ebuf[..n]),
                },
                s = sup.child.wait(), if running => {
                    // The supervisor killed whatever the program left behind before exiting.
                    self.status = Some(exit_code(s));
                    self.drain_until = Some(Instant::now() + PIPE_DRAIN);
                }
                _ = tokio::time::sleep_until(crate::far(timeout_at)), if timeout_at.is_some() && self.cause.is_none() && running => {
                    self.cause = Some(Cause::Timeout);
                    self.stop_politely(sup);
                }
                _ = tokio::time::sleep_until(crate::far(self.kill_at)), if self.kill_at.is_some() && running => {
                    sup.kill();
                    self.kill_at = None;
                }
                r = stop.changed(), if stop_open && running => match r {
                    Err(_) => stop_open = false,
                    Ok(()) => {
                        let req = *stop.borrow_and_update();
                        if let Some(s) = req {
                            self.on_stop(sup, s);
                        }
                    }
                },
                _ = tokio::time::sleep_until(crate::far(self.drain_until)), if self.drain_until.is_some() => {}
            }
        }
        if let Some(f) = self.on_line.as_mut() {
            self.lines.finish(&mut **f);
        }
    }

    fn stdout(&mut self, data: &[u8]) {
        self.out_tail.push(data);
        if let Some(f) = self.on_line.as_mut() {
            self.lines.push(data, &mut **f);
        }
    }

    /// SIGTERM now, everything killed after [`KILL_GRACE`].
    fn stop_politely(&mut self, sup: &supervise::Supervised) {
        sup.terminate();
        self.kill_at = Some(Instant::now() + KILL_GRACE);
    }

    fn on_stop(&mut self, sup: &supervise::Supervised, s: Stop) {
        if self.cause.is_none() {
            self.cause = Some(Cause::Stop(s.reason));
        }
        if s.immediate {
            sup.kill();
        } else if self.kill_at.is_none() {
            self.stop_politely(sup);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end() {
        let mut t = Tail::new(4);
        for chunk in [b"abc".as_slice(), b"defgh", b"ij"] {
            t.push(chunk);
        }
        assert_eq!(t.into_vec(), b"ghij");
        let mut t = Tail::new(10);
        t.push(b"short");
        assert_eq!(t.into_vec(), b"short");
    }

    #[test]
    fn lines_split_across_chunks_and_skip_long_ones() {
        let mut got: Vec<String> = Vec::new();
        let mut f = |l: &[u8]| got.push(String::from_utf8_lossy(l).into_owned());
        let mut lines = Lines::new(8);
        lines.push(b"one\ntw", &mut f);
        lines.push(b"o\nthis line is too long", &mut f);
        lines.push(b" still\nlast", &mut f);
        lines.finish(&mut f);
        assert_eq!(got, vec!["one", "two", "last"]);
    }

    #[test]
    fn strings_are_cut_at_char_boundaries() {
        assert_eq!(tail_str("héllo", 4), "llo");
        assert_eq!(head_str("héllo", 2), "h");
        assert_eq!(tail_str("abc", 10), "abc");
    }

    #[test]
    fn a_missing_agent_program_is_named_with_its_flag() {
        assert_eq!(problem(AgentKind::Noop, None), None);
        assert_eq!(problem(AgentKind::Claude, Some("/bin/sh")), None);
        assert_eq!(problem(AgentKind::Command, Some("sh -c 'exit 0'")), None);
        assert_eq!(problem(AgentKind::Command, Some("cd /tmp && nothing-here")), None);
        let e = problem(AgentKind::Claude, Some("/nonexistent/claude")).unwrap();
        assert!(e.contains("\"/nonexistent/claude\" is not found") && e.contains("--agent-command"), "{e}");
        let e = problem(AgentKind::Command, Some("definitely-not-a-program-orca {prompt}")).unwrap();
        assert!(e.contains("in PATH") && e.contains("--agent-command"), "{e}");
    }

    #[test]
    fn programs_are_found_in_path() {
        assert!(find_program("sh").is_some());
        assert!(find_program("/bin/sh").is_some());
        assert!(find_program("definitely-not-a-program-orca").is_none());
        assert!(find_program("/nonexistent/claude").is_none());
    }
}
