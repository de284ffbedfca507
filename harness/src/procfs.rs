//! What `/proc` says about a pid: whether it is alive, its environment, command line, memory
//! and CPU time. Every reader tolerates a process that ends while it is being read (it then
//! answers as for a process that is gone).

use std::time::Duration;

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces and `)`):
/// index 0 is the state, 11 and 12 are utime and stime.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat.rsplit_once(')')?.1.split_whitespace().map(str::to_string).collect())
}

/// Running or sleeping: not exited, not a zombie waiting to be reaped.
pub fn alive(pid: i32) -> bool {
    stat_fields(pid).and_then(|f| f.first().cloned()).is_some_and(|s| s != "Z" && s != "X")
}

/// Whether a process has ended (a zombie nobody reaped yet counts as ended).
pub fn gone(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) } == 0;
    !exists || !alive(pid)
}

/// The value of `key` in the environment of a live process.
pub fn env_var(pid: i32, key: &str) -> Option<String> {
    if !alive(pid) {
        return None;
    }
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let want = format!("{key}=");
    env.split(|b| *b == 0).find_map(|kv| String::from_utf8_lossy(kv).strip_prefix(&want).map(str::to_string))
}

/// The command line, arguments joined by spaces.
pub fn cmdline(pid: i32) -> String {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&cmd).replace('\0', " ").trim().to_string()
}

/// Live processes whose environment variable `key` satisfies `wanted`: (pid, command line).
/// The environment is inherited, so this finds every descendant that kept it.
pub fn with_env(key: &str, wanted: impl Fn(&str) -> bool) -> Vec<(i32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|pid| env_var(*pid, key).is_some_and(|v| wanted(&v)))
        .map(|pid| (pid, cmdline(pid)))
        .collect()
}

/// (VmRSS, VmHWM) in MiB; zeros for a process that is gone.
pub fn rss_mib(pid: u32) -> (f64, f64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time (user + system) of a process; zero for a process that is gone.
pub fn cpu_time(pid: u32) -> Duration {
    let f = stat_fields(pid as i32).unwrap_or_default();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / hz)
}
