//! The per-task supervisor, both halves: the worker spawns `orca-worker __orca_supervise --
//! PROGRAM ARGS...` (its own executable, again) for every agent and hook process, and that
//! small process runs the program and answers for everything the program starts.
//!
//! The worker spawns it without a `pre_exec` hook, so the standard library uses
//! `posix_spawn` (a vfork): the worker's address space is never copied, which made a fork per
//! task cost more than the task itself once the worker was large. Hence the lifeline is the
//! supervisor's stdin (fd 0, put there by posix_spawn), and the program's stdin (the prompt)
//! comes over it: a length, then the bytes, which the supervisor feeds to the program from a
//! thread of its own.
//!
//! What stays true:
//! - the supervisor leads its own process group (set at spawn), out of the worker's; the
//!   program runs in another group of its own (the supervisor is not in it), which everything
//!   the program starts inherits;
//! - the supervisor is a child subreaper (`PR_SET_CHILD_SUBREAPER`): a descendant whose
//!   parent dies (a double fork, a `setsid` daemon) becomes its child instead of init's, so
//!   leaving the process group or the session does not leave the supervisor's reach;
//! - when the program's run ends, however it ends (it exits, the worker stops it, the worker
//!   dies), the supervisor kills the program's group and then every descendant still there
//!   (its children, found in `/proc`, again and again until none is left), reaps them, and
//!   only then exits, with the program's status (`128 + signal` for a signal);
//! - the supervisor holds one end of a socket pair whose other end (close-on-exec) only the
//!   worker holds. EOF on it means "kill everything now": the worker asked for it, or died,
//!   whatever the way (SIGKILL included). This does not rely on `PR_SET_PDEATHSIG`, which
//!   fires when the spawning *thread* exits;
//! - SIGTERM to the supervisor is passed on to the program's group (a polite stop); the
//!   handler is reset to the default by exec, so the program gets normal dispositions;
//! - a program that cannot be started (not found, not executable) is reported to the worker
//!   on the socket, so that the worker tells its own failure from the task's.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use super::Invocation;

/// The hidden first argument that turns `orca-worker` into a supervisor.
pub const SUBCOMMAND: &str = "__orca_supervise";
/// How long the supervisor tries to kill and reap the descendants left at the end (a process
/// stuck in uninterruptible sleep cannot be reaped; the supervisor then exits without it).
pub const CLEANUP_BOUND: Duration = Duration::from_secs(10);
/// What the supervisor writes on the socket before the line saying why the program could not
/// be started.
const SPAWN_FAILED: &str = "spawn-failed ";
/// The lifeline: the supervisor's stdin. The program's stdin comes over it first (a u64
/// length, little endian, then the bytes).
const LIFELINE_FD: RawFd = 0;
/// Longest stdin the supervisor takes over the lifeline.
const MAX_LIFELINE_STDIN: u64 = 64 << 20;

/// A running supervisor. Dropping it closes the lifeline, which makes the supervisor kill
/// everything it supervises: a supervised process never outlives its handle.
pub struct Supervised {
    pub child: tokio::process::Child,
    /// The supervisor's pid (a child of this worker: it cannot be reused before it is reaped).
    pub pid: i32,
    lifeline: UnixStream,
}

impl Supervised {
    /// Asks for a polite stop: the supervisor passes SIGTERM on to the program's group.
    pub fn terminate(&self) {
        if self.pid > 1 {
            // SAFETY: kill(2) on our own child, not yet reaped; no memory is involved.
            unsafe {
                libc::kill(self.pid, libc::SIGTERM);
            }
        }
    }

    /// Kills the program and every descendant now: EOF on the lifeline. The supervisor exits
    /// once they are gone; what it wrote on the socket can still be read.
    pub fn kill(&self) {
        let _ = self.lifeline.shutdown(std::net::Shutdown::Write);
    }

    /// Once the supervisor exited: why the program could not be started, if that is how it
    /// ended.
    pub fn spawn_error(&mut self) -> Option<String> {
        if self.lifeline.set_nonblocking(true).is_err() {
            return None;
        }
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        // The supervisor wrote before it exited, so the bytes are there; bounded by the
        // socket buffer.
        while let Ok(n) = self.lifeline.read(&mut chunk) {
            if n == 0 || buf.len() > 64 << 10 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&buf);
        text.strip_prefix(SPAWN_FAILED).map(|s| s.trim().to_string())
    }
}

/// Spawns the supervisor for `inv`, with piped stdout and stderr; `inv.stdin` goes over the
/// lifeline (written from a blocking thread, so a large prompt never holds up the runtime).
pub fn spawn(exe: &Path, inv: &Invocation) -> io::Result<Supervised> {
    // Both ends close-on-exec; posix_spawn's dup2 onto fd 0 gives the supervisor its end.
    let (theirs, ours) = UnixStream::pair()?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg(SUBCOMMAND)
        .arg("--")
        .arg(&inv.program)
        .args(&inv.args)
        .current_dir(&inv.cwd)
        .envs(inv.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    // Agents and hooks must not speak to systemd for the worker.
    for v in orca_proto::systemd::VARIABLES {
        cmd.env_remove(v);
    }
    // No pre_exec: see the module documentation.
    let child = cmd.spawn()?;
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    let mut writer = ours.try_clone()?;
    let data = inv.stdin.clone();
    tokio::task::spawn_blocking(move || {
        // A supervisor that died or was stopped closes its end: nothing to do then.
        let _ = writer.write_all(&(data.len() as u64).to_le_bytes()).and_then(|()| writer.write_all(&data));
    });
    Ok(Supervised { child, pid, lifeline: ours })
}

// ----- the supervisor's side -----

/// The program's process group, once it runs (0 before).
static GROUP: AtomicI32 = AtomicI32::new(0);
/// SIGTERM came before the program ran.
static TERM_PENDING: AtomicBool = AtomicBool::new(false);
/// The lifeline closed.
static LIFELINE_GONE: AtomicBool = AtomicBool::new(false);

fn signal_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) on the process group this supervisor created.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

extern "C" fn on_sigterm(_: libc::c_int) {
    // Only atomics and kill(2): async-signal-safe.
    match GROUP.load(Ordering::SeqCst) {
        0 => TERM_PENDING.store(true, Ordering::SeqCst),
        pgid => signal_group(pgid, libc::SIGTERM),
    }
}

/// `-- PROGRAM ARGS...`: (program, args).
fn parse_args(args: &[OsString]) -> Result<(&OsString, &[OsString]), String> {
    match args {
        [dash, program, rest @ ..] if dash == OsStr::new("--") => Ok((program, rest)),
        _ => Err(format!("usage: {SUBCOMMAND} -- PROGRAM [ARGS...] (the lifeline on stdin)")),
    }
}

/// Subreaper, SIGTERM handler, close-on-exec lifeline.
fn set_up(fd: RawFd) {
    // SAFETY: plain prctl/fcntl/sigaction calls on our own process, fd and signal table; the
    // handler only uses atomics and kill(2).
    unsafe {
        if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0 {
            eprintln!("orca-worker supervise: cannot become a subreaper: {}", io::Error::last_os_error());
        }
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigterm as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
}

/// Watches the lifeline: on EOF, kills the program's group (the main thread then cleans up).
/// With `prompt`, it first reads that many bytes and hands them to a thread that writes them
/// to the program's stdin (which may never read them: the watch goes on meanwhile).
fn watch_lifeline(mut lifeline: UnixStream, prompt: Option<(u64, std::io::PipeWriter)>) {
    std::thread::spawn(move || {
        if let Some((len, mut pipe)) = prompt {
            let mut data = Vec::with_capacity(len as usize);
            if (&mut lifeline).take(len).read_to_end(&mut data).is_ok() && data.len() as u64 == len {
                std::thread::spawn(move || {
                    // A program that exits without reading closes the pipe: not an error.
                    let _ = pipe.write_all(&data);
                });
            }
        }
        let mut buf = [0u8; 16];
        loop {
            match lifeline.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        LIFELINE_GONE.store(true, Ordering::SeqCst);
        signal_group(GROUP.load(Ordering::SeqCst), libc::SIGKILL);
    });
}

/// Waits for `pid`, reaping any orphan that ends meanwhile. Returns its exit code. The
/// program's group is killed while its leader is still a zombie (so the group id cannot have
/// been reused), and forgotten before the leader is reaped.
fn wait_for(pid: i32) -> i32 {
    loop {
        // SAFETY: siginfo_t is plain data; waitid fills it in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes into the local; WNOWAIT leaves the child a zombie.
        let r = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if r < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return -1;
        }
        // SAFETY: waitid succeeded with WEXITED, so the fields of a child's state are set.
        let who = unsafe { info.si_pid() };
        if who == pid {
            GROUP.store(0, Ordering::SeqCst);
            signal_group(pid, libc::SIGKILL);
        }
        let mut status = 0;
        // SAFETY: reaps the child waitid reported; the status goes into a local.
        unsafe { libc::waitpid(who, &mut status, 0) };
        if who == pid {
            return if libc::WIFSIGNALED(status) { 128 + libc::WTERMSIG(status) } else { libc::WEXITSTATUS(status) };
        }
    }
}

/// The live (not zombie) children of `parent`, from `/proc/PID/stat`.
pub fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
            // After the command name (which may hold spaces and ')'): state, ppid, ...
            let mut fields = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace()).into_iter().flatten();
            let state = fields.next();
            let ppid = fields.next().and_then(|p| p.parse::<i32>().ok());
            ppid == Some(parent) && state != Some("Z")
        })
        .collect()
}

/// Reaps every child that has exited; true when there is no child left at all (ECHILD).
fn reap_all() -> bool {
    loop {
        // SAFETY: waitpid with WNOHANG on our own children; the status is discarded.
        let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if r > 0 {
            continue;
        }
        if r == 0 {
            return false;
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ECHILD) => return true,
            _ => return false,
        }
    }
}

/// Kills and reaps every descendant: the subreaper's children are its descendants' survivors,
/// so killing them, reaping, and looking again reaches every level. Bounded by
/// [`CLEANUP_BOUND`].
fn kill_descendants() {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let until = Instant::now() + CLEANUP_BOUND;
    loop {
        if reap_all() {
            // No child left at all: the program left nothing behind (the usual end), and no
            // need to look through /proc.
            return;
        }
        let children = children_of(me);
        if children.is_empty() {
            return;
        }
        if Instant::now() >= until {
            eprintln!("orca-worker supervise: processes {children:?} do not die; leaving them");
            return;
        }
        for pid in children {
            // SAFETY: kill(2) on our own child, which cannot be reaped by anyone else.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Reads the length of the program's stdin from the lifeline: `None` for none (the program
/// gets /dev/null), else a pipe for it.
fn prompt_stdin(lifeline: &mut UnixStream) -> io::Result<Option<(u64, std::io::PipeReader, std::io::PipeWriter)>> {
    let mut len = [0u8; 8];
    lifeline.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    if len > MAX_LIFELINE_STDIN {
        return Err(io::Error::other(format!("{len} bytes is more than {MAX_LIFELINE_STDIN}")));
    }
    if len == 0 {
        return Ok(None);
    }
    let (reader, writer) = std::io::pipe()?;
    Ok(Some((len, reader, writer)))
}

/// Tells the worker the program could not be started; best effort (the exit code says it
/// too).
fn report_spawn_failure(lifeline: &mut UnixStream, program: &OsStr, e: &io::Error) {
    let _ = writeln!(lifeline, "{SPAWN_FAILED}cannot run {}: {e}", program.to_string_lossy());
}

/// The supervisor's `main`: `args` are what follows the subcommand (`FD -- PROGRAM ARGS...`).
/// Returns the exit code.
pub fn main(args: &[OsString]) -> i32 {
    let (program, rest) = match parse_args(args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("orca-worker supervise: {e}");
            return 125;
        }
    };
    set_up(LIFELINE_FD);
    // SAFETY: the worker put its socket on our stdin; nothing else here uses the fd.
    let mut lifeline = unsafe { UnixStream::from_raw_fd(LIFELINE_FD) };
    let watcher = match lifeline.try_clone() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("orca-worker supervise: lifeline: {e}");
            return 125;
        }
    };
    let (stdin, prompt) = match prompt_stdin(&mut lifeline) {
        Ok(None) => (Stdio::null(), None),
        Ok(Some((len, reader, writer))) => (Stdio::from(reader), Some((len, writer))),
        Err(e) => {
            eprintln!("orca-worker supervise: the program's stdin: {e}");
            return 125;
        }
    };
    watch_lifeline(watcher, prompt);
    let child = match std::process::Command::new(program).args(rest).stdin(stdin).process_group(0).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("orca-worker: cannot run {}: {e}", program.to_string_lossy());
            report_spawn_failure(&mut lifeline, program, &e);
            return if e.kind() == io::ErrorKind::NotFound { 127 } else { 126 };
        }
    };
    let pid = child.id() as i32;
    GROUP.store(pid, Ordering::SeqCst);
    // A stop that came while the program was being started.
    if LIFELINE_GONE.load(Ordering::SeqCst) {
        signal_group(pid, libc::SIGKILL);
    } else if TERM_PENDING.load(Ordering::SeqCst) {
        signal_group(pid, libc::SIGTERM);
    }
    // Whatever the program left behind goes with it: first its group, then the rest.
    let code = wait_for(pid);
    kill_descendants();
    code
}
