//! Task workspaces: which directory a task runs in, the context files written into it before
//! the run, and the expected outputs read back from it afterwards as artifacts.
//!
//! What stays true: every path a task names is relative, has no `..`, and resolves
//! canonically (symlinks followed) to a place inside the workspace; a context file is never
//! written through a symlink. A task's `working_dir` is used in place only when it resolves
//! under one of the worker's `--allow-dir` roots; otherwise the task gets a fresh directory
//! `<work-dir>/<job>/<task>-<attempt>`, which only this worker ever touches, and which is
//! [`Claim`]ed in [`InUse`] from before it is made until the attempt is over, so that the
//! sweep of kept workspaces (`crate::upkeep`) never removes one in use.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use orca_proto::pb;

/// Total bytes of artifacts returned with one result.
pub const MAX_ARTIFACT_BYTES: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("path {path:?} {reason}")]
    BadPath { path: String, reason: String },
    #[error("workspace {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("expected outputs missing: {}", .0.join(", "))]
    Missing(Vec<String>),
    #[error("artifacts are {size} bytes, more than the {MAX_ARTIFACT_BYTES} allowed")]
    TooLarge { size: u64 },
}

impl Error {
    /// Whether another attempt could succeed (a bad path never will).
    pub fn retryable(&self) -> bool {
        matches!(self, Error::Io { .. } | Error::Missing(_))
    }
}

fn bad(path: &str, reason: impl Into<String>) -> Error {
    Error::BadPath { path: path.to_string(), reason: reason.into() }
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io { path: path.display().to_string(), source }
}

/// The directory a task runs in.
#[derive(Debug)]
pub struct Workspace {
    /// Canonical.
    pub path: PathBuf,
    /// Made for this attempt (and removed after it), as opposed to a shared directory used in
    /// place.
    pub fresh: bool,
    /// Held while the attempt uses a fresh workspace.
    pub claim: Option<Claim>,
}

/// The fresh workspaces attempts use now. Its lock is held while one is made, and by the
/// sweep while it removes one, so the two never cross.
#[derive(Debug, Default)]
pub struct InUse(Mutex<HashSet<PathBuf>>);

impl InUse {
    /// The set, locked (a panic elsewhere does not make it unusable).
    pub fn lock(&self) -> MutexGuard<'_, HashSet<PathBuf>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A workspace in use; dropping it releases it.
#[derive(Debug)]
pub struct Claim {
    set: Arc<InUse>,
    path: PathBuf,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.set.lock().remove(&self.path);
    }
}

/// Whether `path` (canonical) lies under one of the roots (canonical).
pub fn allowed(path: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|r| path.starts_with(r))
}

/// A file-name-safe form of a job id.
fn safe_component(s: &str) -> String {
    let out: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') { c } else { '_' }).collect();
    if out.is_empty() || out.chars().all(|c| c == '.') { "job".into() } else { out }
}

/// Picks the task's workspace: its `working_dir` when that resolves under an allowed root,
/// otherwise a fresh directory under `work_dir`. Returns the workspace and, when a working
/// directory was named but not used, why.
pub fn prepare(
    in_use: &Arc<InUse>,
    work_dir: &Path,
    allow_dirs: &[PathBuf],
    job: &str,
    task: i64,
    attempt: u32,
    working_dir: &str,
) -> Result<(Workspace, Option<String>), Error> {
    let mut note = None;
    if !working_dir.is_empty() {
        match Path::new(working_dir).canonicalize() {
            Ok(c) if c.is_dir() && allowed(&c, allow_dirs) => {
                return Ok((Workspace { path: c, fresh: false, claim: None }, None));
            }
            Ok(c) => {
                note = Some(format!(
                    "working_dir {} is not under an --allow-dir root; using a fresh workspace",
                    c.display()
                ))
            }
            Err(e) => note = Some(format!("working_dir {working_dir} cannot be used ({e}); using a fresh workspace")),
        }
    }
    let path = work_dir.join(safe_component(job)).join(format!("{task}-{attempt}"));
    let claim = Claim { set: in_use.clone(), path: path.clone() };
    {
        let mut set = in_use.lock();
        set.insert(path.clone());
        if path.symlink_metadata().is_ok() {
            // Left over by a worker that died on this attempt.
            std::fs::remove_dir_all(&path).map_err(|e| io(&path, e))?;
        }
        std::fs::create_dir_all(&path).map_err(|e| io(&path, e))?;
    }
    let path = path.canonicalize().map_err(|e| io(&path, e))?;
    Ok((Workspace { path, fresh: true, claim: Some(claim) }, note))
}

/// Checks a task-supplied relative path with the contract's rule (the coordinator checked
/// it at AddTasks already; this guards against an older coordinator).
pub fn check_relative(p: &str) -> Result<(), Error> {
    orca_proto::contract::relative_file(p).map_err(|v| bad(p, v.0))
}

/// Resolves `rel` inside `root` (canonical) for writing: checks the deepest existing ancestor
/// resolves inside the root, creates the missing directories, and checks again.
fn resolve_for_write(root: &Path, rel: &str) -> Result<PathBuf, Error> {
    check_relative(rel)?;
    let path = root.join(rel);
    let parent = path.parent().ok_or_else(|| bad(rel, "names no file"))?.to_path_buf();
    let mut existing = parent.as_path();
    while existing.symlink_metadata().is_err() {
        existing = existing.parent().ok_or_else(|| bad(rel, "has no existing ancestor"))?;
    }
    let c = existing.canonicalize().map_err(|e| bad(rel, format!("cannot be resolved: {e}")))?;
    if !c.starts_with(root) {
        return Err(bad(rel, "leaves the workspace through a symlink"));
    }
    std::fs::create_dir_all(&parent).map_err(|e| io(&parent, e))?;
    let c = parent.canonicalize().map_err(|e| io(&parent, e))?;
    if !c.starts_with(root) {
        return Err(bad(rel, "leaves the workspace through a symlink"));
    }
    Ok(c.join(path.file_name().ok_or_else(|| bad(rel, "names no file"))?))
}

/// Resolves `rel` inside `root` (canonical) for reading: the file must exist and resolve,
/// symlinks followed, to a regular file inside the root. `Ok(None)` when it does not exist.
fn resolve_for_read(root: &Path, rel: &str) -> Result<Option<PathBuf>, Error> {
    check_relative(rel)?;
    let path = root.join(rel);
    if path.symlink_metadata().is_err() {
        return Ok(None);
    }
    let c = match path.canonicalize() {
        Ok(c) => c,
        // A dangling symlink: the output is not there.
        Err(_) => return Ok(None),
    };
    if !c.starts_with(root) {
        return Err(bad(rel, "leaves the workspace through a symlink"));
    }
    if !c.is_file() {
        return Err(bad(rel, "is not a regular file"));
    }
    Ok(Some(c))
}

/// Writes the task's context files into the workspace, never through a symlink.
pub fn write_context_files(ws: &Workspace, files: &[pb::ContextFile]) -> Result<(), Error> {
    for f in files {
        let path = resolve_for_write(&ws.path, &f.path)?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => bad(&f.path, "is a symlink"),
                _ => io(&path, e),
            })?;
        file.write_all(&f.contents).map_err(|e| io(&path, e))?;
    }
    Ok(())
}

/// The expected outputs that are not there.
pub fn missing_outputs(ws: &Workspace, outputs: &[String]) -> Result<Vec<String>, Error> {
    let mut missing = Vec::new();
    for o in outputs {
        if resolve_for_read(&ws.path, o)?.is_none() {
            missing.push(o.clone());
        }
    }
    Ok(missing)
}

/// Reads the expected outputs as artifacts (at most [`MAX_ARTIFACT_BYTES`] in all).
pub fn collect_artifacts(ws: &Workspace, outputs: &[String]) -> Result<Vec<pb::Artifact>, Error> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    let mut size = 0u64;
    for o in outputs {
        match resolve_for_read(&ws.path, o)? {
            Some(p) => {
                size += p.metadata().map_err(|e| io(&p, e))?.len();
                found.push((o, p));
            }
            None => missing.push(o.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(Error::Missing(missing));
    }
    if size > MAX_ARTIFACT_BYTES {
        return Err(Error::TooLarge { size });
    }
    let mut out = Vec::with_capacity(found.len());
    for (rel, p) in found {
        let contents = std::fs::read(&p).map_err(|e| io(&p, e))?;
        out.push(pb::Artifact { path: rel.clone(), contents });
    }
    Ok(out)
}

/// Marks a fresh workspace kept for inspection: its time stamp becomes now, which is when
/// its age counts from.
pub fn mark_kept(ws: &Workspace) {
    if !ws.fresh {
        return;
    }
    let touched = std::fs::File::open(&ws.path).and_then(|f| f.set_modified(std::time::SystemTime::now()));
    if let Err(e) = touched {
        tracing::warn!(path = %ws.path.display(), error = %e, "cannot mark the kept workspace");
    }
}

/// Removes a fresh workspace (a shared directory is never removed).
pub fn remove(ws: &Workspace) {
    if ws.fresh
        && let Err(e) = std::fs::remove_dir_all(&ws.path)
    {
        tracing::warn!(path = %ws.path.display(), error = %e, "cannot remove workspace");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(dir: &Path) -> Workspace {
        let (ws, note) = prepare(&Arc::default(), dir, &[], "job-1", 7, 2, "").unwrap();
        assert!(note.is_none());
        ws
    }

    #[test]
    fn relative_paths_are_checked() {
        for ok in ["a.txt", "dir/b.txt", "./c", "a/./b"] {
            check_relative(ok).unwrap();
        }
        for (p, why) in
            [("", "empty"), ("/etc/passwd", "relative"), ("../x", ".."), ("a/../../x", ".."), (".", "no file")]
        {
            let e = check_relative(p).unwrap_err().to_string();
            assert!(e.contains(why), "{p}: {e}");
        }
    }

    #[test]
    fn fresh_workspace_is_per_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let ws = fresh(&root);
        assert_eq!(ws.path, root.join("job-1").join("7-2"));
        assert!(ws.fresh && ws.path.is_dir());
        let in_use = Arc::default();
        let (ws2, _) = prepare(&in_use, &root, &[], "../evil", 1, 1, "").unwrap();
        assert!(in_use.lock().contains(&ws2.path), "claimed while in use");
        let path = ws2.path.clone();
        drop(ws2);
        assert!(!in_use.lock().contains(&path), "released with the workspace");
        let (ws2, _) = prepare(&in_use, &root, &[], "../evil", 1, 1, "").unwrap();
        assert!(ws2.path.starts_with(&root), "{}", ws2.path.display());
    }

    #[test]
    fn working_dir_is_used_only_under_an_allowed_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let shared = root.join("shared");
        let project = shared.join("project");
        std::fs::create_dir_all(&project).unwrap();
        let other = root.join("other");
        std::fs::create_dir_all(&other).unwrap();
        let work = root.join("work");
        let allow = vec![shared.clone()];
        let (ws, note) = prepare(&Arc::default(), &work, &allow, "j", 1, 1, project.to_str().unwrap()).unwrap();
        assert_eq!((ws.path.as_path(), ws.fresh, note), (project.as_path(), false, None));
        // A symlink inside the root that points outside does not count as inside.
        std::os::unix::fs::symlink(&other, shared.join("escape")).unwrap();
        let (ws, note) =
            prepare(&Arc::default(), &work, &allow, "j", 1, 2, shared.join("escape").to_str().unwrap()).unwrap();
        assert!(ws.fresh && ws.path.starts_with(&work));
        assert!(note.unwrap().contains("not under an --allow-dir"));
        let (ws, note) = prepare(&Arc::default(), &work, &allow, "j", 1, 3, "/no/such/dir").unwrap();
        assert!(ws.fresh && note.unwrap().contains("cannot be used"));
    }

    #[test]
    fn context_files_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let outside = root.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let ws = fresh(&root.join("work"));
        let file = |p: &str| pb::ContextFile { path: p.into(), contents: b"data".to_vec() };
        write_context_files(&ws, &[file("a.txt"), file("deep/er/b.txt")]).unwrap();
        assert_eq!(std::fs::read(ws.path.join("deep/er/b.txt")).unwrap(), b"data");

        std::os::unix::fs::symlink(&outside, ws.path.join("link")).unwrap();
        let e = write_context_files(&ws, &[file("link/x.txt")]).unwrap_err();
        assert!(e.to_string().contains("symlink") && !e.retryable(), "{e}");
        let e = write_context_files(&ws, &[file("link/new/y.txt")]).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        assert!(!outside.join("new").exists());

        std::os::unix::fs::symlink(outside.join("target"), ws.path.join("file-link")).unwrap();
        let e = write_context_files(&ws, &[file("file-link")]).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        assert!(!outside.join("target").exists());
        assert!(write_context_files(&ws, &[file("../x")]).is_err());
    }

    #[test]
    fn outputs_come_back_as_artifacts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("secret"), b"s").unwrap();
        let ws = fresh(&root.join("work"));
        std::fs::create_dir_all(ws.path.join("out")).unwrap();
        std::fs::write(ws.path.join("out/r.txt"), b"result").unwrap();
        std::os::unix::fs::symlink(ws.path.join("out/r.txt"), ws.path.join("inner-link")).unwrap();
        std::os::unix::fs::symlink(root.join("secret"), ws.path.join("outer-link")).unwrap();

        let outs = vec!["out/r.txt".to_string(), "inner-link".to_string()];
        assert!(missing_outputs(&ws, &outs).unwrap().is_empty());
        let arts = collect_artifacts(&ws, &outs).unwrap();
        assert_eq!(arts.len(), 2);
        assert_eq!((arts[0].path.as_str(), arts[0].contents.as_slice()), ("out/r.txt", b"result".as_slice()));

        let outs = vec!["out/r.txt".to_string(), "nope.txt".to_string(), "also/missing".to_string()];
        assert_eq!(missing_outputs(&ws, &outs).unwrap(), vec!["nope.txt", "also/missing"]);
        let e = collect_artifacts(&ws, &outs).unwrap_err();
        assert_eq!(e.to_string(), "expected outputs missing: nope.txt, also/missing");
        assert!(e.retryable());

        let e = collect_artifacts(&ws, &["outer-link".to_string()]).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        let e = collect_artifacts(&ws, &["out".to_string()]).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        remove(&ws);
        assert!(!ws.path.exists());
    }
}
