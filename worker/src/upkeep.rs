//! The work dir's upkeep, in the background of the session: kept workspaces removed by age
//! and by the work dir's size bound, the free disk space watched, and the agent's program
//! looked for again while the worker takes no work because it could not start it.
//!
//! What stays true:
//! - a workspace in use (claimed in [`workspace::InUse`]) is never removed; only fresh
//!   workspaces are, kept after a failed attempt or left over by an earlier run: those older
//!   than `--keep-workspaces-hours`, then, while all workspaces together are over
//!   `--max-work-dir-gb`, the oldest first. Shared directories (`--allow-dir`) are never
//!   looked at;
//! - the decisions are pure functions ([`plan`], [`disk_low`]) of what was found; the code
//!   around them only reads and removes;
//! - the sweep runs at start, every [`SWEEP_EVERY`], and soon after an attempt kept its
//!   workspace (at most once per [`SWEEP_GAP`]);
//! - the free space of the work dir's filesystem is checked at start and every
//!   [`CHECK_EVERY`]: under `--min-free-disk-mb` the session is told to take no work, and
//!   that it may again once the space is back above the bound plus [`RESUME_MARGIN_PCT`]
//!   percent (so that it does not flap at the bound).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use crate::Ctx;
use crate::agent;
use crate::config::Config;
use crate::session::state::Input;
use crate::workspace::InUse;

/// Between two checks of the free space (and of the agent's program while it is missing).
pub const CHECK_EVERY: Duration = Duration::from_secs(10);
/// Between two sweeps of kept workspaces.
pub const SWEEP_EVERY: Duration = Duration::from_secs(300);
/// Least time between two sweeps asked for by kept workspaces.
pub const SWEEP_GAP: Duration = Duration::from_secs(1);
/// Free space above the bound, in percent of it, before a worker low on disk takes work again.
pub const RESUME_MARGIN_PCT: u64 = 10;

/// A fresh workspace found in the work dir.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub path: PathBuf,
    /// When it was kept (its time stamp).
    pub modified: SystemTime,
    /// Disk space it takes.
    pub bytes: u64,
    pub in_use: bool,
}

/// Why a workspace is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// Older than the time workspaces are kept.
    Age,
    /// The oldest while the workspaces are over the size bound.
    Size,
}

/// The workspaces to remove (indices into `found`), in order: every one not in use that is
/// `keep_for` old or older, then, while the total of all of them (in use or not) is over
/// `max_bytes`, the oldest of the others.
pub fn plan(found: &[Found], now: SystemTime, keep_for: Duration, max_bytes: Option<u64>) -> Vec<(usize, Why)> {
    let mut remove = Vec::new();
    let mut total: u64 = found.iter().map(|f| f.bytes).sum();
    let mut younger = Vec::new();
    for (i, f) in found.iter().enumerate().filter(|(_, f)| !f.in_use) {
        // A time stamp in the future counts as new.
        if now.duration_since(f.modified).unwrap_or_default() >= keep_for {
            remove.push((i, Why::Age));
            total -= f.bytes;
        } else {
            younger.push(i);
        }
    }
    if let Some(max) = max_bytes {
        younger.sort_by_key(|&i| (found[i].modified, i));
        for i in younger {
            if total <= max {
                break;
            }
            remove.push((i, Why::Size));
            total -= found[i].bytes;
        }
    }
    remove
}

/// Whether the filesystem counts as low on space: under `min_free` bytes, or, when it was
/// low already, not yet above it by the margin. `min_free` 0 turns the check off.
pub fn disk_low(free: u64, min_free: u64, was_low: bool) -> bool {
    if min_free == 0 {
        return false;
    }
    let bound = if was_low { min_free.saturating_add(min_free / 100 * RESUME_MARGIN_PCT) } else { min_free };
    free < bound
}

/// Bytes available to this user on the filesystem of `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs is plain data that statvfs(3) fills in; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Why the worker should take no work for lack of space, given whether it was low already;
/// `None` when there is enough (or the check is off, or cannot be made).
pub fn check_disk(config: &Config, was_low: bool) -> Option<String> {
    if config.min_free_disk_bytes == 0 {
        return None;
    }
    let free = match free_bytes(&config.work_dir) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(work_dir = %config.work_dir.display(), error = %e, "cannot read the free disk space");
            return None;
        }
    };
    disk_low(free, config.min_free_disk_bytes, was_low).then(|| {
        format!(
            "low on disk: {} MiB free on the filesystem of {}, under --min-free-disk-mb {}",
            free >> 20,
            config.work_dir.display(),
            config.min_free_disk_bytes >> 20
        )
    })
}

/// Disk space a directory tree takes (allocated blocks), walked without recursion and
/// without following symlinks; what cannot be read counts as nothing.
pub fn tree_bytes(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = p.symlink_metadata() else { continue };
        total = total.saturating_add(m.blocks().saturating_mul(512));
        if m.is_dir()
            && let Ok(dir) = std::fs::read_dir(&p)
        {
            stack.extend(dir.flatten().map(|e| e.path()));
        }
    }
    total
}

/// Whether a name is a fresh workspace's, `TASK-ATTEMPT`.
fn workspace_name(name: &str) -> bool {
    name.split_once('-').is_some_and(|(t, a)| {
        !t.is_empty() && !a.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) && a.bytes().all(|b| b.is_ascii_digit())
    })
}

/// The directories of `path` (not symlinks to one).
fn subdirs(path: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let Ok(dir) = std::fs::read_dir(path) else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| Some((e.path(), e.path().symlink_metadata().ok()?)))
        .filter(|(_, m)| m.is_dir())
        .collect()
}

/// The fresh workspaces of the work dir, `WORK_DIR/JOB/TASK-ATTEMPT`.
pub fn scan(work_dir: &Path, in_use: &InUse) -> Vec<Found> {
    let mut found = Vec::new();
    for (job, _) in subdirs(work_dir) {
        for (path, meta) in subdirs(&job) {
            if !path.file_name().and_then(|n| n.to_str()).is_some_and(workspace_name) {
                continue;
            }
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let bytes = tree_bytes(&path);
            found.push(Found { in_use: in_use.lock().contains(&path), path, modified, bytes });
        }
    }
    found
}

/// Removes a workspace unless an attempt claimed it since it was found, then its job's
/// directory if that is empty now. Returns whether it was removed.
fn remove(path: &Path, in_use: &InUse) -> bool {
    let set = in_use.lock();
    if set.contains(path) {
        return false;
    }
    if let Err(e) = std::fs::remove_dir_all(path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove a kept workspace");
        return false;
    }
    if let Some(job) = path.parent() {
        // Fails while the job has other workspaces: that is the point.
        let _ = std::fs::remove_dir(job);
    }
    true
}

/// One sweep: finds the workspaces, removes what [`plan`] says, and logs it.
pub fn sweep(config: &Config, in_use: &InUse, now: SystemTime) {
    let found = scan(&config.work_dir, in_use);
    let plan = plan(&found, now, config.keep_workspaces, config.max_work_dir_bytes);
    let total: u64 = found.iter().map(|f| f.bytes).sum();
    let mut freed = 0;
    for (i, why) in &plan {
        let f = &found[*i];
        if remove(&f.path, in_use) {
            freed += f.bytes;
            tracing::info!(path = %f.path.display(), bytes = f.bytes, ?why, "kept workspace removed");
        }
    }
    let left = total - freed;
    if config.max_work_dir_bytes.is_some_and(|max| left > max) {
        tracing::warn!(bytes = left, "workspaces in use take more than --max-work-dir-gb");
    }
}

/// The background loop: sweeps, disk checks and agent checks, telling the session what
/// changes. Ends when the session is gone. `low` is the disk state the session starts with.
pub async fn run(ctx: Arc<Ctx>, tx: mpsc::Sender<Input>, mut low: bool) {
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: the sweep at start.
    let mut next_sweep = Instant::now();
    let mut last_sweep: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = check.tick() => {}
            _ = ctx.sweep.notified() => {
                let soonest = last_sweep.map_or(Instant::now(), |t| t + SWEEP_GAP);
                next_sweep = next_sweep.min(soonest);
            }
            _ = tokio::time::sleep_until(next_sweep.into()) => {}
        }
        if Instant::now() >= next_sweep {
            let c = ctx.clone();
            let _ = tokio::task::spawn_blocking(move || sweep(&c.config, &c.workspaces, SystemTime::now())).await;
            last_sweep = Some(Instant::now());
            next_sweep = Instant::now() + SWEEP_EVERY;
        }
        let c = ctx.clone();
        let disk = tokio::task::spawn_blocking(move || check_disk(&c.config, low)).await.unwrap_or(None);
        if disk.is_some() != low {
            low = disk.is_some();
            if tx.send(Input::Disk(disk)).await.is_err() {
                return;
            }
        }
        if agent::problem(ctx.config.agent, ctx.config.agent_command.as_deref()).is_none()
            && tx.send(Input::AgentFound).await.is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn found(name: &str, hours_old: u64, bytes: u64, in_use: bool) -> Found {
        let now = SystemTime::UNIX_EPOCH + 1000 * HOUR;
        Found { path: PathBuf::from(name), modified: now - HOUR * hours_old as u32, bytes, in_use }
    }

    fn names(found: &[Found], plan: &[(usize, Why)]) -> Vec<(String, Why)> {
        plan.iter().map(|(i, w)| (found[*i].path.display().to_string(), *w)).collect()
    }

    #[test]
    fn workspaces_are_removed_by_age_then_oldest_first_over_the_size_bound() {
        let now = SystemTime::UNIX_EPOCH + 1000 * HOUR;
        let f = vec![
            found("old", 30, 100, false),
            found("old-in-use", 40, 100, true),
            found("mid", 10, 300, false),
            found("newer", 5, 300, false),
            found("new", 1, 300, false),
        ];
        let s = |(n, w): (&str, Why)| (n.to_string(), w);
        // Age alone.
        assert_eq!(names(&f, &plan(&f, now, 24 * HOUR, None)), vec![s(("old", Why::Age))]);
        // Total 1100; after the old one 1000; a bound of 500 takes mid then newer (the one in
        // use counts but stays).
        assert_eq!(
            names(&f, &plan(&f, now, 24 * HOUR, Some(500))),
            vec![s(("old", Why::Age)), s(("mid", Why::Size)), s(("newer", Why::Size))]
        );
        // Within the bound: nothing more.
        assert_eq!(plan(&f, now, 24 * HOUR, Some(1000)).len(), 1);
        // Keep 0: every workspace not in use goes at the next sweep.
        assert_eq!(plan(&f, now, Duration::ZERO, None).len(), 4);
        // Nothing can satisfy a bound below what is in use: all the others go, not it.
        let all = plan(&f, now, 100 * HOUR, Some(10));
        assert_eq!(all.len(), 4);
        assert!(all.iter().all(|(i, w)| !f[*i].in_use && *w == Why::Size));
        // A time stamp in the future is new.
        let future = vec![found("future", 0, 1, false)];
        assert!(plan(&future, now - HOUR, HOUR, None).is_empty());
    }

    #[test]
    fn low_disk_has_a_margin_before_work_resumes() {
        let min = 1000;
        assert!(!disk_low(5000, 0, true), "0 turns the check off");
        assert!(disk_low(999, min, false));
        assert!(!disk_low(1000, min, false));
        assert!(disk_low(1050, min, true), "still low within the margin");
        assert!(!disk_low(1100, min, true));
    }

    #[test]
    fn only_fresh_workspace_names_are_swept() {
        for ok in ["1-1", "42-3"] {
            assert!(workspace_name(ok), "{ok}");
        }
        for bad in ["", "1-", "-1", "a-1", "1-1-1", "notes", "1_1"] {
            assert!(!workspace_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_sweep_removes_only_what_is_not_in_use_and_empty_job_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let ws = |job: &str, name: &str| {
            let p = root.join(job).join(name);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("f"), vec![0u8; 10_000]).unwrap();
            p
        };
        let (a, b, c) = (ws("job-a", "1-1"), ws("job-b", "2-1"), ws("job-b", "3-1"));
        let other = root.join("job-b").join("notes");
        std::fs::create_dir_all(&other).unwrap();
        let in_use = InUse::default();
        in_use.lock().insert(c.clone());
        let found = scan(&root, &in_use);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found.iter().all(|f| f.bytes >= 10_000));
        let mut config = crate::config::tests::config(&root);
        config.keep_workspaces = Duration::ZERO;
        sweep(&config, &in_use, SystemTime::now() + HOUR);
        assert!(!a.exists() && !root.join("job-a").exists(), "removed, with its empty job dir");
        assert!(!b.exists());
        assert!(c.exists() && other.exists(), "in use, or not a workspace: kept");
    }

    #[test]
    fn free_space_is_read() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        assert!(free_bytes(Path::new("/definitely/not/here")).is_err());
    }
}
