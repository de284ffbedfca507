//! The `orca-worker` binary itself: configuration errors (an agent that cannot run refuses
//! the start), and the per-task supervisor run directly (exit status passed through; a spawn
//! failure reported on the lifeline; the group, and descendants that left it, killed when
//! the program exits or the lifeline closes).

use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
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
        (
            &["--agent", "command", "--agent-command", "/nonexistent/agent {prompt}"],
            "--agent-command: the program of --agent-command \"/nonexistent/agent\" is not found",
        ),
        (&["--agent", "claude", "--agent-command", "/nonexistent/claude"], "--agent-command: the claude binary"),
        (&["--min-free-disk-mb", "18446744073709551615"], "--min-free-disk-mb"),
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
        "--keep-workspaces-hours",
        "--max-work-dir-gb",
        "--min-free-disk-mb",
        "ORCA_COORDINATOR",
        "ORCA_MIN_FREE_DISK_MB",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

/// A socket pair: the first end for the supervisor (its stdin, as the worker spawns it), the
/// second for the test, standing for the worker.
fn lifeline() -> (UnixStream, UnixStream) {
    UnixStream::pair().unwrap()
}

/// The supervisor as the worker starts it (`posix_spawn`, the lifeline as its stdin, a
/// process group of its own); the test sends the prompt with [`send_prompt`].
fn supervise(theirs: &UnixStream, program: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["__orca_supervise", "--"])
        .args(program)
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs.try_clone().unwrap())))
        .process_group(0);
    cmd
}

fn send_prompt(w: &mut UnixStream, prompt: &[u8]) {
    use std::io::Write;
    w.write_all(&(prompt.len() as u64).to_le_bytes()).unwrap();
    w.write_all(prompt).unwrap();
}

fn supervisor(theirs: &UnixStream, script: &str) -> Command {
    supervise(theirs, &["sh", "-c", script])
}

fn until_gone(pids: &[i32]) {
    let start = Instant::now();
    while !pids.iter().all(|p| gone(*p)) {
        assert!(start.elapsed() < WAIT, "processes {pids:?} outlived their supervisor");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path).unwrap().trim().parse().unwrap()
}

/// A script that starts a process in a session of its own (out of the group, as a
/// `nohup`-style server does), writing its pid to `pidfile` once it runs, and waits for it.
fn escape(pidfile: &Path) -> String {
    let f = pidfile.display();
    format!(
        "setsid sh -c 'echo $$ > \"{f}.tmp\"; mv \"{f}.tmp\" \"{f}\"; exec sleep 1000' &\nwhile [ ! -s \"{f}\" ]; do sleep 0.01; done"
    )
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
    let (r, mut w) = lifeline();
    send_prompt(&mut w, b"");
    let status = supervisor(&r, "echo out; echo err >&2; exit 3").output().unwrap();
    assert_eq!(status.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&status.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&status.stderr), "err\n");
    let (r, mut w) = lifeline();
    send_prompt(&mut w, b"");
    let status = supervisor(&r, "kill -9 $$").status().unwrap();
    assert_eq!(status.code(), Some(128 + 9));
    let (r, mut w) = lifeline();
    send_prompt(&mut w, b"");
    let out = supervise(&r, &["/no/such/agent"]).output().unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot run /no/such/agent"));
    // The worker learns it on the lifeline: its own failure, not the program's exit 127.
    drop(r);
    let mut said = String::new();
    w.read_to_string(&mut said).unwrap();
    assert!(said.starts_with("spawn-failed cannot run /no/such/agent"), "{said:?}");
}

#[test]
fn supervisor_kills_descendants_that_left_the_group_when_the_program_exits() {
    let dir = tempfile::tempdir().unwrap();
    let (setsid, double) = (dir.path().join("setsid.pid"), dir.path().join("double.pid"));
    let (r, mut w) = lifeline();
    send_prompt(&mut w, b"");
    // One leaves with setsid; the other is orphaned by a double fork, then leaves too.
    let script = format!("{}\n( {} ) &\nwait $!\nexit 0", escape(&setsid), escape(&double));
    let status = supervisor(&r, &script).status().unwrap();
    assert_eq!(status.code(), Some(0));
    let pids = [read_pid(&setsid), read_pid(&double)];
    // Gone before the supervisor exited: it reaped them.
    assert!(pids.iter().all(|p| gone(*p)), "{pids:?} outlived the supervisor");
}

#[test]
fn supervisor_kills_its_group_when_the_lifeline_closes() {
    let (r, mut w) = lifeline();
    send_prompt(&mut w, b"");
    let mut child = supervisor(&r, "sleep 1000 & echo $!; echo $$; sleep 1000").stdout(Stdio::piped()).spawn().unwrap();
    drop(r);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let grandchild: i32 = lines.next().unwrap().unwrap().parse().unwrap();
    let agent: i32 = lines.next().unwrap().unwrap().parse().unwrap();
    assert!(!gone(grandchild) && !gone(agent));
    // The worker's end closes, as when the worker is killed with SIGKILL.
    drop(w);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 9), "the program was killed; the supervisor exits after it");
    until_gone(&[grandchild, agent]);
}

#[test]
fn supervisor_kills_escaped_descendants_when_the_lifeline_closes() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("escaped.pid");
    let (r, mut w) = lifeline();
    send_prompt(&mut w, b"");
    let script = format!("{}\necho ready\nsleep 1000", escape(&pidfile));
    let mut child = supervisor(&r, &script).stdout(Stdio::piped()).spawn().unwrap();
    drop(r);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let escaped = read_pid(&pidfile);
    assert!(!gone(escaped));
    drop(w);
    child.wait().unwrap();
    assert!(gone(escaped), "the escaped process {escaped} outlived its supervisor");
}

#[test]
fn the_prompt_comes_over_the_lifeline() {
    // Larger than a pipe's buffer, so the supervisor must feed it as the program reads.
    let prompt: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let (r, mut w) = lifeline();
    let child = supervise(&r, &["wc", "-c"]).stdout(Stdio::piped()).spawn().unwrap();
    send_prompt(&mut w, &prompt);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "300000");
    // No prompt: the program's stdin is /dev/null.
    let (r, mut w) = lifeline();
    let child = supervise(&r, &["wc", "-c"]).stdout(Stdio::piped()).spawn().unwrap();
    send_prompt(&mut w, b"");
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
}

#[test]
fn a_program_that_never_reads_its_prompt_is_still_killed_by_the_lifeline() {
    let prompt = vec![b'x'; 1 << 20];
    let (r, mut w) = lifeline();
    let mut child = supervise(&r, &["sleep", "1000"]).spawn().unwrap();
    send_prompt(&mut w, &prompt);
    // The worker goes away: EOF on the lifeline, though the feeding thread is stuck on a
    // full pipe.
    drop(w);
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(128 + 9));
            break;
        }
        assert!(start.elapsed() < WAIT, "the supervisor did not stop its program");
        std::thread::sleep(Duration::from_millis(20));
    }
}
