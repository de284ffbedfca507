//! The per-task supervisor, both halves: the worker spawns `orca-worker __orca_supervise FD --
//! PROGRAM ARGS...` (its own executable, again) for every agent and hook process, and that
//! small process runs the program and guards its process group.
//!
//! What stays true:
//! - the supervisor leads a new session and process group (`setsid` before exec); the agent
//!   and everything it starts inherit that group, so killing `-pgid` kills them all;
//! - the supervisor holds the read end of a pipe whose write end (close-on-exec) only the
//!   worker holds. EOF on it means the worker is gone, whatever the way it died (SIGKILL
//!   included), and the supervisor then kills its whole group: nothing is orphaned. This does
//!   not rely on `PR_SET_PDEATHSIG`, which fires when the spawning *thread* exits;
//! - when the program exits, the supervisor exits with its status (`128 + signal` for a
//!   signal); the worker then kills whatever the program left in the group;
//! - the supervisor catches SIGTERM (so that a polite stop reaches the agent while the
//!   supervisor keeps waiting for it); the handler is reset to the default by exec, so the
//!   agent gets normal signal dispositions.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;

use super::Invocation;

/// The hidden first argument that turns `orca-worker` into a supervisor.
pub const SUBCOMMAND: &str = "__orca_supervise";

/// A running supervisor. Dropping it closes the lifeline, which makes the supervisor kill its
/// group: a supervised process never outlives its handle.
pub struct Supervised {
    pub child: tokio::process::Child,
    /// The supervisor's pid, which is also its process group id.
    pub pgid: i32,
    _lifeline: OwnedFd,
}

/// Sends `sig` to every process of the group.
pub fn signal_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) on a process group this worker created; no memory is involved.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// A pipe whose ends are both close-on-exec, the read end numbered above the standard fds.
fn lifeline_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two fds into the array, which we then own.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds were just created and are owned by nobody else.
    let (mut r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    if r.as_raw_fd() <= 2 {
        // The standard fds are replaced in the child; keep the lifeline clear of them.
        // SAFETY: F_DUPFD_CLOEXEC returns a new fd that we own.
        let fd = cvt(unsafe { libc::fcntl(r.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) })?;
        // SAFETY: fd is new and owned by nobody else.
        r = unsafe { OwnedFd::from_raw_fd(fd) };
    }
    Ok((r, w))
}

/// Spawns the supervisor for `inv`, with piped stdout and stderr (and stdin when there is
/// something to write to it).
pub fn spawn(exe: &Path, inv: &Invocation) -> io::Result<Supervised> {
    let (read_end, write_end) = lifeline_pipe()?;
    let rfd = read_end.as_raw_fd();
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg(SUBCOMMAND)
        .arg(rfd.to_string())
        .arg("--")
        .arg(&inv.program)
        .args(&inv.args)
        .current_dir(&inv.cwd)
        .envs(inv.env.iter().map(|(k, v)| (k, v)))
        .stdin(if inv.stdin.is_empty() { Stdio::null() } else { Stdio::piped() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (setsid, fcntl).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            // Only this child keeps the read end across exec.
            if libc::fcntl(rfd, libc::F_SETFD, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(read_end);
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    Ok(Supervised { child, pgid, _lifeline: write_end })
}

extern "C" fn on_sigterm(_: libc::c_int) {}

/// The supervisor's `main`: `args` are what follows the subcommand (`FD -- PROGRAM ARGS...`).
/// Returns the exit code.
pub fn main(args: &[OsString]) -> i32 {
    let (fd, program, rest) = match args {
        [fd, dash, program, rest @ ..] if dash == OsStr::new("--") => match fd.to_str().and_then(|s| s.parse().ok()) {
            Some(fd) => (fd, program, rest),
            None => {
                eprintln!("orca-worker supervise: bad lifeline fd {fd:?}");
                return 125;
            }
        },
        _ => {
            eprintln!("orca-worker supervise: usage: {SUBCOMMAND} FD -- PROGRAM [ARGS...]");
            return 125;
        }
    };
    let fd: RawFd = fd;
    // SAFETY: plain fcntl/sigaction calls on our own fd and signal table; the handler does
    // nothing and is async-signal-safe.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigterm as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
    std::thread::spawn(move || {
        let mut buf = [0u8; 16];
        loop {
            // SAFETY: reads into a local buffer of the given length.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                continue;
            }
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        // The worker is gone: take the whole group down, this process included.
        // SAFETY: kill(2) on our own process group.
        unsafe {
            libc::kill(0, libc::SIGKILL);
        }
    });
    match std::process::Command::new(program).args(rest).status() {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
        Err(e) => {
            eprintln!("orca-worker: cannot run {}: {e}", program.to_string_lossy());
            if e.kind() == io::ErrorKind::NotFound { 127 } else { 126 }
        }
    }
}
