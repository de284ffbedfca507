//! Signals and bounded waits for child processes. A wait never blocks longer than the bound
//! it is given; what to do with a process that outlives it is the caller's decision, except
//! in [`terminate_all`], whose contract is to leave nothing running.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// How often a bounded wait looks at the child again.
const POLL: Duration = Duration::from_millis(10);

/// Sends `sig` to `pid`; a process that is already gone is not an error.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory effects; callers pass pids of processes they started.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// SIGKILL, then reaps it (no zombie stays behind).
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits up to `within` for `child` to exit; `Ok(None)` when it is still running.
pub fn wait_within(child: &mut Child, within: Duration) -> std::io::Result<Option<ExitStatus>> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if start.elapsed() > within {
            return Ok(None);
        }
        std::thread::sleep(POLL);
    }
}

/// SIGTERM to every child first (so they drain in parallel), then waits for each up to
/// `within`; one still running then is killed and reported as `None`.
pub fn terminate_all<'a>(
    children: impl IntoIterator<Item = &'a mut Child>,
    within: Duration,
) -> Vec<Option<ExitStatus>> {
    let children: Vec<&mut Child> = children.into_iter().collect();
    for c in &children {
        signal(c.id(), libc::SIGTERM);
    }
    children
        .into_iter()
        .map(|c| {
            let status = wait_within(c, within).ok().flatten();
            if status.is_none() {
                kill(c);
            }
            status
        })
        .collect()
}
