//! Git tasks from the caller's side: a task's git source made from the caller's own
//! checkout ([`GitCheckout`], [`crate::Subtask::from_git_checkout`]), and the patches the
//! tasks brought back applied to it ([`apply_patches`]).
//!
//! These run the `git` program and block while it runs (short, local commands); call them
//! from a blocking context in async code.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use orca_proto::{contract, pb};

use crate::{Error, TaskOutcome};

fn git_err(msg: impl Into<String>) -> Error {
    Error::Git(msg.into())
}

/// Runs git in `dir` with extra environment variables and `stdin`; its stdout on success.
fn run(dir: &Path, args: &[&str], env: &[(&str, &Path)], stdin: Option<&[u8]>) -> Result<Vec<u8>, Error> {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(dir).args(args).env("GIT_TERMINAL_PROMPT", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| git_err(format!("cannot run git: {e}")))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        // A failed write shows as git's own error below.
        let _ = pipe.write_all(input);
    }
    let out = child.wait_with_output().map_err(|e| git_err(format!("git {}: {e}", args[0])))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(git_err(format!("git {} failed: {}", args.join(" "), err.trim())));
    }
    Ok(out.stdout)
}

fn text(dir: &Path, args: &[&str]) -> Result<String, Error> {
    Ok(String::from_utf8_lossy(&run(dir, args, &[], None)?).trim().to_string())
}

/// A caller's checkout, as a git source: its remote's URL, HEAD as the base, and (when
/// asked) its local changes as a patch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitCheckout {
    /// The top of the working tree.
    pub root: PathBuf,
    /// The remote's name and URL.
    pub remote: String,
    pub repo: String,
    /// The commit the tasks start from.
    pub base: String,
    /// The local changes shipped (empty when there are none or they were not asked for).
    pub base_patch: Vec<u8>,
}

impl GitCheckout {
    /// The checkout containing `path`. Uncommitted changes (untracked files included) and a
    /// HEAD that is not on the remote are errors: the workers could not see them.
    pub fn open(path: impl AsRef<Path>) -> Result<GitCheckout, Error> {
        Self::read(path.as_ref(), false)
    }

    /// The checkout containing `path`, with everything the remote does not have (local
    /// commits, staged, unstaged and untracked changes) shipped as a patch that the workers
    /// apply before the agent runs. Ignored files stay behind.
    pub fn open_with_changes(path: impl AsRef<Path>) -> Result<GitCheckout, Error> {
        Self::read(path.as_ref(), true)
    }

    /// [`GitCheckout::open_with_changes`] when `ship_changes`, else [`GitCheckout::open`].
    pub fn open_as(path: impl AsRef<Path>, ship_changes: bool) -> Result<GitCheckout, Error> {
        Self::read(path.as_ref(), ship_changes)
    }

    fn read(path: &Path, ship: bool) -> Result<GitCheckout, Error> {
        let root = PathBuf::from(text(path, &["rev-parse", "--show-toplevel"])?);
        let remote = remote_of(&root)?;
        let repo = url_of(&root, &remote)?;
        let head = text(&root, &["rev-parse", "--verify", "HEAD^{commit}"])?;
        let pushed = !text(
            &root,
            &["for-each-ref", "--contains", &head, "--format=%(refname)", &format!("refs/remotes/{remote}/")],
        )?
        .is_empty();
        let dirty = text(&root, &["status", "--porcelain", "--untracked-files=normal"])?;
        if !ship {
            if !dirty.is_empty() {
                let first: Vec<&str> = dirty.lines().take(5).map(str::trim).collect();
                return Err(git_err(format!(
                    "{} has uncommitted changes ({}{}): commit and push them, or ship them as a patch (GitCheckout::open_with_changes, `orca submit --ship-changes`)",
                    root.display(),
                    first.join(", "),
                    if dirty.lines().count() > 5 { ", ..." } else { "" }
                )));
            }
            if !pushed {
                return Err(git_err(format!(
                    "HEAD ({}) is not on remote {remote}: push it, or ship the local commits as a patch (GitCheckout::open_with_changes, `orca submit --ship-changes`)",
                    &head[..12.min(head.len())]
                )));
            }
            return Ok(GitCheckout { root, remote, repo, base: head, base_patch: Vec::new() });
        }
        let base = if pushed { head } else { remote_base(&root, &remote, &head)? };
        let base_patch = changes_since(&root, &base)?;
        Ok(GitCheckout { root, remote, repo, base, base_patch })
    }

    /// The git source of a task working on this checkout.
    pub fn source(&self) -> pb::GitSource {
        pb::GitSource {
            repo: self.repo.clone(),
            base: self.base.clone(),
            base_patch: self.base_patch.clone(),
            ..Default::default()
        }
    }
}

/// The remote to use: the current branch's upstream's, else `origin`, else the only one.
fn remote_of(root: &Path) -> Result<String, Error> {
    if let Ok(up) = text(root, &["rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{upstream}"])
        && let Some((remote, _)) = up.split_once('/')
    {
        return Ok(remote.to_string());
    }
    let remotes = text(root, &["remote"])?;
    let remotes: Vec<&str> = remotes.lines().collect();
    match remotes.as_slice() {
        [] => Err(git_err(format!("{} has no remote: the workers need one to fetch from", root.display()))),
        [one] => Ok(one.to_string()),
        many if many.contains(&"origin") => Ok("origin".into()),
        many => Err(git_err(format!(
            "{} has several remotes ({}) and the branch has no upstream: set one (git branch -u)",
            root.display(),
            many.join(", ")
        ))),
    }
}

/// The remote's URL, a relative path made absolute, checked by the contract's rule.
fn url_of(root: &Path, remote: &str) -> Result<String, Error> {
    let url = text(root, &["remote", "get-url", remote])?;
    let url = if url.contains("://") || url.starts_with('/') || (url.contains('@') && url.contains(':')) {
        url
    } else {
        root.join(&url)
            .canonicalize()
            .map_err(|e| git_err(format!("remote {remote} ({url}): {e}")))?
            .display()
            .to_string()
    };
    contract::git_repo(&url).map_err(|v| git_err(format!("remote {remote} ({url}): {v}")))?;
    Ok(url)
}

/// Where local commits fork from what the remote has: the merge base of HEAD with the
/// upstream (or the remote's default branch).
fn remote_base(root: &Path, remote: &str, head: &str) -> Result<String, Error> {
    let upstream = text(root, &["rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{upstream}"])
        .unwrap_or_else(|_| format!("{remote}/HEAD"));
    text(root, &["merge-base", head, &upstream]).map_err(|_| {
        git_err(format!("HEAD shares no commit with {upstream}: fetch the remote, or push a branch to start from"))
    })
}

/// Every difference between `base` and the working tree (untracked files included, ignored
/// ones not), through a temporary index so the caller's own index is not touched.
fn changes_since(root: &Path, base: &str) -> Result<Vec<u8>, Error> {
    let dir = tempfile_dir()?;
    let index = dir.join("index");
    let env = [("GIT_INDEX_FILE", index.as_path())];
    let result = (|| {
        run(root, &["read-tree", "HEAD"], &env, None)?;
        run(root, &["add", "--all", "--", "."], &env, None)?;
        run(root, &["diff", "--cached", "--binary", "--no-color", "--no-ext-diff", base], &env, None)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let patch = result?;
    if patch.len() > contract::limits::MAX_GIT_PATCH_BYTES {
        let max = contract::limits::MAX_GIT_PATCH_BYTES;
        return Err(git_err(format!(
            "the local changes are {} bytes as a patch, more than the {max} a task may carry",
            patch.len()
        )));
    }
    Ok(patch)
}

fn tempfile_dir() -> Result<PathBuf, Error> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("orca-git-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| git_err(format!("{}: {e}", dir.display())))?;
    Ok(dir)
}

/// What [`apply_patches`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The tasks whose patches were applied, in order.
    pub applied: Vec<i64>,
    /// Completed git tasks that changed nothing.
    pub empty: Vec<i64>,
}

/// Applies the patches of the completed git tasks among `outcomes` to the checkout
/// containing `path` with `git am --3way` (one commit each, with the task's author and
/// message), in dependency order (task id order: a task always depends on smaller ids).
/// Stops at the first patch that does not apply, leaving the checkout as it was before that
/// patch, with an error naming the task and what was applied before it.
pub fn apply_patches<'a>(
    path: impl AsRef<Path>,
    outcomes: impl IntoIterator<Item = &'a TaskOutcome>,
) -> Result<Applied, Error> {
    let root = PathBuf::from(text(path.as_ref(), &["rev-parse", "--show-toplevel"])?);
    let mut git: Vec<(i64, &pb::GitResult)> =
        outcomes.into_iter().filter(|o| o.is_completed()).filter_map(|o| Some((o.task_id, o.git()?))).collect();
    git.sort_by_key(|(id, _)| *id);
    let mut done = Applied::default();
    for (id, g) in git {
        if g.patch.is_empty() {
            done.empty.push(id);
            continue;
        }
        if let Err(e) = run(&root, &["am", "--3way", "--keep-cr", "--quiet"], &[], Some(&g.patch)) {
            let _ = run(&root, &["am", "--abort"], &[], None);
            let before = if done.applied.is_empty() {
                "no patch was applied before it".to_string()
            } else {
                format!("the patches of tasks {:?} were applied before it", done.applied)
            };
            return Err(git_err(format!(
                "the patch of task {id} does not apply to {} ({before}): {e}",
                root.display()
            )));
        }
        done.applied.push(id);
    }
    Ok(done)
}
