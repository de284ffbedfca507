//! The `orca-worker` binary itself: configuration errors, and the per-task supervisor run
//! directly (exit status passed through; the whole group killed when its lifeline closes).

use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_orca-worker");
const WAIT: Duration = Duration::from_secs(60);

fn run_worker(args: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--work-dir", dir.path().to_str().unwrap()])
        .args(args)
        .env_remove("ORCA_AGENT")
        .env_remove("ORCA_AGENT_COMMAND")
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_flags_exit_with_a_message_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["--slots", "0"], "--slots: 0 is outside 1..=10000"),
        (&["--agent", "command"], "--agent-command: is required with --agent command"),
        (&["--label", "nokey"], "--label: \"nokey\" is not key=value"),
        (&["--coordinator", "localhost:50051"], "--coordinator"),
        (&["--allow-dir", "/no/such/dir/for/orca"], "--allow-dir: /no/such/dir/for/orca"),
    ];
    for (args, msg) in cases {
        let (code, stderr) = run_worker(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.starts_with("orca-worker: "), "{args:?}: {stderr}");
        assert!(stderr.contains(msg), "{args:?}: {stderr}");
    }
    let (code, stderr) = run_worker(&["--agent", "robot"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid value 'robot'"), "{stderr}");
}

#[test]
fn help_lists_the_contract_flags() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--coordinator",
        "--slots",
        "--name",
        "--label",
        "--agent",
        "--agent-command",
        "--work-dir",
        "--allow-dir",
        "--grace-seconds",
        "ORCA_COORDINATOR",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

/// A pipe; the write end is close-on-exec, the read end is inherited by the supervisor.
fn lifeline() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two new fds that we own.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fresh fds.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on our own fd.
    unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    (r, w)
}

fn supervisor(read_end: &OwnedFd, script: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["__orca_supervise", &read_end.as_raw_fd().to_string(), "--", "sh", "-c", script]);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd
}

fn gone(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return true;
    }
    // A zombie nobody reaped yet is gone too.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

#[test]
fn supervisor_passes_the_exit_status_through() {
    let (r, _w) = lifeline();
    let status = supervisor(&r, "echo out; echo err >&2; exit 3").output().unwrap();
    assert_eq!(status.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&status.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&status.stderr), "err\n");
    let status = supervisor(&r, "kill -9 $$").status().unwrap();
    assert_eq!(status.code(), Some(128 + 9));
    let (r, _w) = lifeline();
    let mut cmd = Command::new(BIN);
    cmd.args(["__orca_supervise", &r.as_raw_fd().to_string(), "--", "/no/such/agent"]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot run /no/such/agent"));
}

#[test]
fn supervisor_kills_its_group_when_the_lifeline_closes() {
    let (r, w) = lifeline();
    let mut child = supervisor(&r, "sleep 1000 & echo $!; echo $$; sleep 1000")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    drop(r);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let grandchild: i32 = lines.next().unwrap().unwrap().parse().unwrap();
    let agent: i32 = lines.next().unwrap().unwrap().parse().unwrap();
    assert!(!gone(grandchild) && !gone(agent));
    // The worker's end closes, as when the worker is killed with SIGKILL.
    drop(w);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), None, "the supervisor is killed with its group");
    let start = Instant::now();
    while !(gone(grandchild) && gone(agent)) {
        assert!(start.elapsed() < WAIT, "agent {agent} or its child {grandchild} outlived the supervisor");
        std::thread::sleep(Duration::from_millis(20));
    }
}
