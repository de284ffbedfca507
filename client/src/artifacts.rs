//! Writing a task's artifacts (its expected outputs, shipped back with the result) where the
//! caller expects them: into the task's `working_dir`, or under an output directory.
//!
//! What stays true: nothing is written outside the destination (paths are relative, without
//! `..`, and every directory on the way must resolve inside it; a file is never written
//! through a symlink); only the task's declared expected outputs are written (an artifact
//! under any other name is skipped, whatever the worker sent); a task that ran in place (`TaskResult.in_place`, a filesystem shared with
//! the caller) is left alone, since its files are already there. Each file is written to a
//! temporary name and renamed, so a reader never sees half a file.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use crate::{Error, TaskOutcome};

/// What writing one task's artifacts did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// The files written.
    pub files: Vec<PathBuf>,
    /// What was left out, and why (an unsafe path, an existing file the task did not
    /// declare, a working directory that does not exist here, a task that ran in place).
    pub skipped: Vec<Skipped>,
}

/// An artifact (or a whole task, with `path` empty) that was not written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// Where [`TaskOutcome::write_artifacts`] puts the files.
#[derive(Clone, Copy, Debug)]
pub enum Destination<'a> {
    /// The task's own `working_dir` (it must exist; it is never created). Skipped for a
    /// task that ran in place.
    WorkingDir,
    /// `DIR/<task_id>/<path>` (created as needed), whether or not the task ran in place.
    Under(&'a Path),
}

impl TaskOutcome {
    /// Writes the task's artifacts to `dest` (see the module docs for the rules). An I/O
    /// error is [`Error::Artifacts`]; a path that may not be written is only skipped.
    pub fn write_artifacts(&self, dest: Destination<'_>) -> Result<Written, Error> {
        let mut out = Written::default();
        let Some(result) = &self.result else { return Ok(out) };
        if result.artifacts.is_empty() {
            return Ok(out);
        }
        let root = match dest {
            Destination::WorkingDir if result.in_place => {
                out.skipped.push(skip("", "the task ran in its working directory (shared filesystem)"));
                return Ok(out);
            }
            Destination::WorkingDir if self.working_dir.is_empty() => {
                out.skipped.push(skip("", "the task has no working_dir (use an output directory)"));
                return Ok(out);
            }
            Destination::WorkingDir => match Path::new(&self.working_dir).canonicalize() {
                Ok(p) if p.is_dir() => p,
                _ => {
                    let why = format!("working_dir {} is not a directory here", self.working_dir);
                    out.skipped.push(skip("", &why));
                    return Ok(out);
                }
            },
            Destination::Under(dir) => {
                let d = dir.join(self.task_id.to_string());
                std::fs::create_dir_all(&d).map_err(|e| io(&d, e))?;
                d.canonicalize().map_err(|e| io(&d, e))?
            }
        };
        for a in &result.artifacts {
            // Only what the task declared: a worker cannot make a caller write anything else
            // (a `.git/hooks/pre-commit`, say).
            if !self.expected_outputs.iter().any(|p| p == &a.path) {
                out.skipped.push(skip(&a.path, "not one of the task's expected outputs"));
                continue;
            }
            match write_one(&root, &a.path, &a.contents)? {
                Ok(p) => out.files.push(p),
                Err(reason) => out.skipped.push(skip(&a.path, &reason)),
            }
        }
        Ok(out)
    }
}

fn skip(path: &str, reason: &str) -> Skipped {
    Skipped { path: path.to_string(), reason: reason.to_string() }
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Artifacts { path: path.display().to_string(), source }
}

/// Writes one file under `root` (canonical). The outer `Err` is an I/O failure; the inner
/// one is why the file was skipped.
fn write_one(root: &Path, rel: &str, contents: &[u8]) -> Result<Result<PathBuf, String>, Error> {
    let path = Path::new(rel);
    let parts: Vec<&std::ffi::OsStr> = match path.components().map(normal).collect::<Option<Vec<_>>>() {
        Some(p) if !p.is_empty() => p,
        _ => return Ok(Err("not a plain relative path (absolute, empty or with ..)".into())),
    };
    let (name, dirs) = parts.split_last().expect("not empty");
    let mut dir = root.to_path_buf();
    for d in dirs {
        dir.push(d);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => match dir.canonicalize() {
                Ok(c) if c.starts_with(root) && c.is_dir() => dir = c,
                _ => return Ok(Err(format!("{} leads out of the destination", dir.display()))),
            },
            Ok(_) => return Ok(Err(format!("{} is not a directory", dir.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&dir).map_err(|e| io(&dir, e))?;
            }
            Err(e) => return Err(io(&dir, e)),
        }
    }
    let target = dir.join(name);
    match std::fs::symlink_metadata(&target) {
        Ok(m) if m.file_type().is_symlink() => return Ok(Err("is a symlink; never written through".into())),
        Ok(m) if !m.is_file() => return Ok(Err("exists and is not a regular file".into())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&target, e)),
    }
    let tmp = dir.join(format!(".{}.orca-{}.tmp", name.to_string_lossy(), std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(contents).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, &target));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&target, e));
    }
    Ok(Ok(target))
}

/// A plain path component, or `None` for `..`, `.`, a root or a prefix.
fn normal(c: Component<'_>) -> Option<&std::ffi::OsStr> {
    match c {
        Component::Normal(s) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    fn outcome(dir: &Path, arts: &[(&str, &str)], expected: &[&str], in_place: bool) -> TaskOutcome {
        let artifacts =
            arts.iter().map(|(p, c)| pb::Artifact { path: p.to_string(), contents: c.as_bytes().to_vec() }).collect();
        TaskOutcome {
            task_id: 7,
            state: pb::TaskState::Completed,
            prompt: "p".into(),
            output: String::new(),
            error: String::new(),
            reason: String::new(),
            attempts: 1,
            working_dir: dir.display().to_string(),
            expected_outputs: expected.iter().map(|s| s.to_string()).collect(),
            result: Some(pb::TaskResult { artifacts, in_place, ..Default::default() }),
        }
    }

    #[test]
    fn files_land_in_the_working_dir_and_declared_ones_replace_old_copies() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("main.rs"), "old").unwrap();
        let o = outcome(d.path(), &[("main.rs", "new"), ("src/lib.rs", "lib")], &["main.rs", "src/lib.rs"], false);
        let w = o.write_artifacts(Destination::WorkingDir).unwrap();
        assert_eq!(w.files.len(), 2, "{w:?}");
        assert!(w.skipped.is_empty());
        assert_eq!(std::fs::read_to_string(d.path().join("main.rs")).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(d.path().join("src/lib.rs")).unwrap(), "lib");
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 2);
    }

    #[test]
    fn an_artifact_the_task_did_not_declare_is_never_written() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("notes.txt"), "mine").unwrap();
        let arts = [("notes.txt", "theirs"), (".git/hooks/pre-commit", "evil")];
        let o = outcome(d.path(), &arts, &["other.txt"], false);
        let w = o.write_artifacts(Destination::WorkingDir).unwrap();
        assert!(w.files.is_empty());
        assert_eq!(w.skipped.len(), 2);
        assert_eq!(std::fs::read_to_string(d.path().join("notes.txt")).unwrap(), "mine");
        assert!(!d.path().join(".git").exists());
    }

    #[test]
    fn nothing_is_written_outside_the_destination() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("f"), d.path().join("file-link")).unwrap();
        let bad = ["../escape", "/etc/passwd", "a/../../b", "link/x", "file-link", ""];
        let arts: Vec<(&str, &str)> = bad.iter().map(|p| (*p, "x")).collect();
        let o = outcome(d.path(), &arts, &bad, false);
        let w = o.write_artifacts(Destination::WorkingDir).unwrap();
        assert!(w.files.is_empty(), "{w:?}");
        assert_eq!(w.skipped.len(), bad.len());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        assert!(!d.path().parent().unwrap().join("escape").exists());
    }

    #[test]
    fn a_task_that_ran_in_place_is_left_alone_unless_an_output_dir_is_named() {
        let d = tempfile::tempdir().unwrap();
        let o = outcome(d.path(), &[("a.txt", "x")], &["a.txt"], true);
        let w = o.write_artifacts(Destination::WorkingDir).unwrap();
        assert!(w.files.is_empty() && w.skipped.len() == 1);
        assert!(!d.path().join("a.txt").exists());
        let out = tempfile::tempdir().unwrap();
        let w = o.write_artifacts(Destination::Under(out.path())).unwrap();
        assert_eq!(w.files.len(), 1);
        assert_eq!(std::fs::read_to_string(out.path().join("7/a.txt")).unwrap(), "x");
    }

    #[test]
    fn a_working_dir_missing_here_is_skipped_not_created() {
        let d = tempfile::tempdir().unwrap();
        let gone = d.path().join("elsewhere");
        let o = outcome(&gone, &[("a.txt", "x")], &["a.txt"], false);
        let w = o.write_artifacts(Destination::WorkingDir).unwrap();
        assert!(w.files.is_empty() && w.skipped.len() == 1);
        assert!(!gone.exists());
    }
}
