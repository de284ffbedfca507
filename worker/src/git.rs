//! Git sources: a task that names a repository runs in a worktree of its own, and what its
//! agent changed comes back as one commit, in `git format-patch` form (and, with `push`, on a
//! branch of the repository).
//!
//! What stays true:
//! - the worker keeps one bare mirror per repository under `<work-dir>/.git-mirrors`,
//!   fetched when a task needs a revision it does not hold (incrementally after the first
//!   time), one fetch or worktree change at a time per mirror;
//! - a task's worktree is its fresh workspace (`<work-dir>/<job>/<task>-<attempt>`), checked
//!   out detached at the base; the caller's `base_patch` and the patches of the tasks it
//!   builds on are committed on top before the agent runs, so its own patch holds only
//!   its own change; context files are left out of that commit;
//! - git runs with no terminal prompt and only the file, git, http(s) and ssh transports
//!   (never `ext::`); credentials are the worker's own (its SSH agent or credential
//!   helper), a task carries none;
//! - a revision that cannot be found, a patch that does not apply or a repository the
//!   worker may not use fail the attempt before the agent runs; a push is never forced;
//! - the worktree goes with its workspace (removed, or kept after a failure and swept by
//!   age); the mirror's stale worktree entries are pruned before each new worktree.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orca_proto::contract::{self, limits};
use orca_proto::pb;
use tokio::io::AsyncWriteExt;

/// The transports git may use (`GIT_ALLOW_PROTOCOL`).
const PROTOCOLS: &str = "file:git:http:https:ssh";
/// Longest a git command may take (a fetch of a large repository included).
const GIT_TIMEOUT: Duration = Duration::from_secs(1_800);
/// The identity of commits whose task names no author, and of every committer.
const IDENTITY: (&str, &str) = ("Orca", "orca@localhost");
/// Bytes of git's stderr quoted in an error.
const STDERR_QUOTED: usize = 2_000;

/// Why a git step failed, and whether another attempt could succeed.
#[derive(Debug)]
pub struct Failure {
    pub error: String,
    pub retryable: bool,
}

fn fatal(error: impl Into<String>) -> Failure {
    Failure { error: format!("git: {}", error.into()), retryable: false }
}

fn transient(error: impl Into<String>) -> Failure {
    Failure { error: format!("git: {}", error.into()), retryable: true }
}

/// Whether git can run here (checked at start-up by a worker that allows repositories).
pub fn installed() -> Result<(), String> {
    match std::process::Command::new("git").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("`git --version` failed: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Err(format!("git sources need git on PATH: {e}")),
    }
}

/// The worker's mirrors, one lock each.
#[derive(Debug, Default)]
pub struct Mirrors {
    locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl Mirrors {
    fn lock_of(&self, mirror: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(mirror.to_path_buf()).or_default().clone()
    }
}

/// The mirror directory of a repository: a readable stem and a stable hash of the URL.
pub fn mirror_dir(work_dir: &Path, repo: &str) -> PathBuf {
    let stem = repo.trim_end_matches('/').trim_end_matches(".git").rsplit(['/', ':']).next().unwrap_or_default();
    let stem: String = stem.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')).take(40).collect();
    // FNV-1a: stable across releases, unlike std's hasher.
    let hash = repo.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
    work_dir.join(".git-mirrors").join(format!("{stem}-{hash:016x}.git"))
}

/// The output of a git command that succeeded.
struct Output {
    stdout: String,
}

/// Runs `git -C dir args`, with `stdin` on its standard input.
async fn git(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Result<Output, String> {
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("-C").arg(dir).args(args);
    cmd.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ALLOW_PROTOCOL", PROTOCOLS)
        .env("GIT_COMMITTER_NAME", IDENTITY.0)
        .env("GIT_COMMITTER_EMAIL", IDENTITY.1)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("cannot run git: {e}"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let input = input.to_vec();
        tokio::spawn(async move {
            let _ = pipe.write_all(&input).await;
        });
    }
    let out = tokio::time::timeout(GIT_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| format!("git {} took more than {} s", args[0], GIT_TIMEOUT.as_secs()))?
        .map_err(|e| format!("git {}: {e}", args[0]))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let err = crate::agent::tail_str(err.trim(), STDERR_QUOTED);
        return Err(format!("git {} failed: {err}", args[0]));
    }
    Ok(Output { stdout: String::from_utf8_lossy(&out.stdout).into_owned() })
}

/// The commit a revision names in the mirror, if it holds it.
async fn commit_of(mirror: &Path, rev: &str) -> Option<String> {
    let spec = format!("{rev}^{{commit}}");
    let out = git(mirror, &["rev-parse", "--verify", "--quiet", "--end-of-options", &spec], None).await.ok()?;
    Some(out.stdout.trim().to_string())
}

fn is_hex_id(s: &str) -> bool {
    (4..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What `base` names, in the order git users expect: the remote's branch, a tag, then a
/// commit id; empty names the remote's default branch.
async fn resolve(mirror: &Path, base: &str) -> Option<String> {
    if base.is_empty() {
        return commit_of(mirror, "refs/orca/remote-head").await;
    }
    for candidate in [format!("refs/remotes/origin/{base}"), format!("refs/tags/{base}")] {
        if let Some(c) = commit_of(mirror, &candidate).await {
            return Some(c);
        }
    }
    if is_hex_id(base) { commit_of(mirror, base).await } else { None }
}

/// Makes the mirror if it is missing and fetches every branch and tag and the default
/// branch. Called with the mirror's lock held.
async fn fetch(mirror: &Path, repo: &str) -> Result<(), Failure> {
    if !mirror.join("HEAD").exists() {
        tokio::fs::create_dir_all(mirror).await.map_err(|e| transient(format!("{}: {e}", mirror.display())))?;
        git(mirror, &["init", "--bare", "--quiet"], None).await.map_err(transient)?;
        git(mirror, &["remote", "add", "origin", repo], None).await.map_err(transient)?;
    }
    let refspecs = ["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*", "+HEAD:refs/orca/remote-head"];
    let mut args = vec!["fetch", "--quiet", "--prune", "--no-tags", "origin"];
    args.extend(refspecs);
    git(mirror, &args, None).await.map_err(|e| transient(format!("fetching {repo}: {e}")))?;
    Ok(())
}

/// Where an attempt's worktree starts, and what it started from.
#[derive(Debug)]
pub struct Checkout {
    /// The base revision resolved (or the chain's base commit).
    pub base_commit: String,
    /// HEAD after the caller's patch and the chain were applied: the agent's change is
    /// what follows it.
    pub start: String,
    pub branch: String,
    mirror: PathBuf,
}

/// Fetches as needed and checks the base out into `worktree` (an empty fresh workspace),
/// then applies the caller's patch and the chain the task builds on.
pub async fn checkout(
    mirrors: &Mirrors,
    work_dir: &Path,
    allow_dirs: &[PathBuf],
    a: &pb::Assignment,
    worktree: &Path,
) -> Result<Checkout, Failure> {
    let spec = a.spec.as_ref().and_then(|s| s.git.as_ref()).ok_or_else(|| fatal("the task has no git source"))?;
    local_allowed(&spec.repo, allow_dirs)?;
    if let Some(b) = a.git_base.as_ref().filter(|b| !b.error.is_empty()) {
        return Err(fatal(format!("cannot start from task {}: {}", spec.builds_on, b.error)));
    }
    let chain = a.git_base.as_ref().filter(|b| !b.base_commit.is_empty());
    let base = chain.map_or(spec.base.as_str(), |b| b.base_commit.as_str());
    let mirror = mirror_dir(work_dir, &spec.repo);
    let lock = mirrors.lock_of(&mirror);
    let _held = lock.lock().await;
    // A commit id the mirror holds needs no fetch; anything else may have moved.
    let known = if is_hex_id(base) && mirror.join("HEAD").exists() { commit_of(&mirror, base).await } else { None };
    let base_commit = match known {
        Some(c) => c,
        None => {
            fetch(&mirror, &spec.repo).await?;
            resolve(&mirror, base).await.ok_or_else(|| {
                let what = if base.is_empty() { "the default branch".to_string() } else { format!("revision {base}") };
                fatal(format!("{what} not found in {}", spec.repo))
            })?
        }
    };
    let _ = git(&mirror, &["worktree", "prune"], None).await;
    let wt = worktree.to_string_lossy();
    git(&mirror, &["worktree", "add", "--force", "--detach", "--quiet", &wt, &base_commit], None)
        .await
        .map_err(|e| transient(format!("creating the worktree: {e}")))?;
    drop(_held);
    apply_start(worktree, &spec.base_patch, chain.map_or(&[][..], |b| &b.patches[..]), spec.builds_on).await?;
    let start = head(worktree).await?;
    let branch =
        if spec.branch.is_empty() { contract::git_default_branch(&a.job_id, a.task_id) } else { spec.branch.clone() };
    Ok(Checkout { base_commit, start, branch, mirror })
}

/// A local repository must lie under an `--allow-dir` root (a URL is up to `--allow-repo`).
fn local_allowed(repo: &str, allow_dirs: &[PathBuf]) -> Result<(), Failure> {
    let Some(path) = contract::git_repo_local(repo) else { return Ok(()) };
    let policy = |why: String| Failure { error: format!("worker policy: {why}"), retryable: false };
    let canonical =
        Path::new(path).canonicalize().map_err(|e| policy(format!("git repository {repo} cannot be used: {e}")))?;
    if !crate::workspace::allowed(&canonical, allow_dirs) {
        return Err(policy(format!("git repository {repo} is a local path outside every --allow-dir root")));
    }
    Ok(())
}

async fn head(worktree: &Path) -> Result<String, Failure> {
    let out = git(worktree, &["rev-parse", "HEAD"], None).await.map_err(transient)?;
    Ok(out.stdout.trim().to_string())
}

/// Commits the caller's patch, then applies the chain's patches (`git am`), on the base.
async fn apply_start(worktree: &Path, base_patch: &[u8], chain: &[Vec<u8>], builds_on: i64) -> Result<(), Failure> {
    if !base_patch.is_empty() {
        git(worktree, &["apply", "--index", "--binary", "--whitespace=nowarn", "-"], Some(base_patch))
            .await
            .map_err(|e| fatal(format!("the caller's base_patch does not apply on the base: {e}")))?;
        let msg = "orca: the caller's uncommitted changes";
        let author = format!("--author={} <{}>", IDENTITY.0, IDENTITY.1);
        git(worktree, &["commit", "--quiet", "--no-verify", "--allow-empty", &author, "-m", msg], None)
            .await
            .map_err(transient)?;
    }
    for (i, patch) in chain.iter().enumerate() {
        if let Err(e) = git(worktree, &["am", "--quiet", "--keep-cr"], Some(patch)).await {
            let _ = git(worktree, &["am", "--abort"], None).await;
            let which = format!("patch {} of {} of the chain ending at task {builds_on}", i + 1, chain.len());
            return Err(fatal(format!("{which} does not apply: {e}")));
        }
    }
    Ok(())
}

/// The commit message: the task's, its name, or the prompt's first line; with the task
/// named in trailers.
fn message(spec: &pb::TaskSpec, job: &str, task: i64) -> String {
    let g = spec.git.clone().unwrap_or_default();
    let mut subject = if !g.message.trim().is_empty() {
        g.message.trim().to_string()
    } else if !spec.name.trim().is_empty() {
        spec.name.trim().to_string()
    } else {
        let first = spec.prompt.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("orca task");
        contract::head_str(first, 72).to_string()
    };
    subject.push_str(&format!("\n\nOrca-Job: {job}\nOrca-Task: {task}\n"));
    subject
}

/// Commits what the agent changed (context files left out) and returns the task's
/// [`pb::GitResult`]: the commit, its patch and stats, pushed when asked. A patch over the
/// limit or a refused push is an error that still carries the result made so far.
pub async fn commit(
    co: &Checkout,
    worktree: &Path,
    spec: &pb::TaskSpec,
    job: &str,
    task: i64,
) -> Result<pb::GitResult, (pb::GitResult, Failure)> {
    let g = spec.git.clone().unwrap_or_default();
    let mut r = pb::GitResult { base_commit: co.base_commit.clone(), branch: co.branch.clone(), ..Default::default() };
    if let Err(f) = stage(co, worktree, spec).await {
        return Err((r, f));
    }
    if git(worktree, &["diff", "--cached", "--quiet"], None).await.is_ok() {
        r.empty = true;
        return Ok(r);
    }
    let author = if g.author.is_empty() { format!("{} <{}>", IDENTITY.0, IDENTITY.1) } else { g.author.clone() };
    let author = format!("--author={author}");
    let msg = message(spec, job, task);
    let made = git(worktree, &["commit", "--quiet", "--no-verify", &author, "-F", "-"], Some(msg.as_bytes())).await;
    if let Err(e) = made {
        return Err((r, transient(e)));
    }
    match describe(co, worktree, &mut r).await {
        Ok(()) if g.push => match push(co, &r.commit).await {
            Ok(()) => {
                r.pushed = true;
                Ok(r)
            }
            Err(f) => Err((r, f)),
        },
        Ok(()) => Ok(r),
        Err(f) => Err((r, f)),
    }
}

/// Stages everything the agent changed, except the context files (as they were at start).
async fn stage(co: &Checkout, worktree: &Path, spec: &pb::TaskSpec) -> Result<(), Failure> {
    git(worktree, &["add", "--all", "--", "."], None).await.map_err(transient)?;
    let files: Vec<&str> = spec.context_files.iter().map(|f| f.path.as_str()).collect();
    for chunk in files.chunks(100) {
        let mut args = vec!["reset", "--quiet", co.start.as_str(), "--"];
        args.extend(chunk);
        git(worktree, &args, None).await.map_err(transient)?;
    }
    Ok(())
}

/// Fills in the commit id, its patch and its stats.
async fn describe(co: &Checkout, worktree: &Path, r: &mut pb::GitResult) -> Result<(), Failure> {
    r.commit = head(worktree).await?;
    let range = format!("{}..{}", co.start, r.commit);
    let patch = git(worktree, &["format-patch", "--stdout", "--binary", &range], None).await.map_err(transient)?;
    if patch.stdout.len() > limits::MAX_GIT_PATCH_BYTES {
        let (size, max) = (patch.stdout.len(), limits::MAX_GIT_PATCH_BYTES);
        return Err(fatal(format!(
            "the patch is {size} bytes, more than the {max} a result may carry (the commit is {}; push it instead)",
            r.commit
        )));
    }
    r.patch = patch.stdout.into_bytes();
    let stat = git(worktree, &["diff", "--numstat", &co.start, &r.commit], None).await.map_err(transient)?;
    (r.files_changed, r.insertions, r.deletions) = numstat(&stat.stdout);
    Ok(())
}

/// Files, insertions and deletions from `git diff --numstat` (binary files count as files).
pub fn numstat(out: &str) -> (u32, u32, u32) {
    out.lines().filter(|l| !l.trim().is_empty()).fold((0, 0, 0), |(f, i, d), l| {
        let mut cols = l.split('\t');
        let n = |c: Option<&str>| c.and_then(|c| c.parse::<u32>().ok()).unwrap_or(0);
        let (a, r) = (n(cols.next()), n(cols.next()));
        (f + 1, i + a, d + r)
    })
}

/// Pushes the commit to the task's branch; never forced, so a branch that moved elsewhere
/// is refused, not overwritten.
async fn push(co: &Checkout, commit: &str) -> Result<(), Failure> {
    let refspec = format!("{commit}:refs/heads/{}", co.branch);
    git(&co.mirror, &["push", "--quiet", "origin", &refspec], None)
        .await
        .map(|_| ())
        .map_err(|e| fatal(format!("pushing to branch {}: {e}", co.branch)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_are_named_by_repository_and_stable() {
        let w = Path::new("/w");
        let a = mirror_dir(w, "https://github.com/acme/app.git");
        assert!(a.starts_with("/w/.git-mirrors"));
        assert!(a.file_name().unwrap().to_str().unwrap().starts_with("app-"), "{a:?}");
        assert_eq!(a, mirror_dir(w, "https://github.com/acme/app.git"));
        assert_ne!(a, mirror_dir(w, "https://github.com/other/app.git"));
        let odd = mirror_dir(w, "git@host:../../x y");
        assert_eq!(odd.parent(), Some(Path::new("/w/.git-mirrors")));
    }

    #[test]
    fn numstat_counts_files_and_lines() {
        assert_eq!(numstat("3\t1\ta.txt\n-\t-\timg.png\n10\t0\tb/c.rs\n"), (3, 13, 1));
        assert_eq!(numstat(""), (0, 0, 0));
    }

    #[test]
    fn the_message_is_the_tasks_or_its_name_or_the_prompts_first_line() {
        let mut spec = pb::TaskSpec { prompt: "\n  Fix the parser\nmore".into(), ..Default::default() };
        assert!(message(&spec, "j", 7).starts_with("Fix the parser\n\nOrca-Job: j\nOrca-Task: 7"));
        spec.name = "parser".into();
        assert!(message(&spec, "j", 7).starts_with("parser\n"));
        spec.git = Some(pb::GitSource { message: "feat: x".into(), ..Default::default() });
        assert!(message(&spec, "j", 7).starts_with("feat: x\n"));
    }
}

#[cfg(test)]
mod checkout_tests {
    use super::*;

    fn sh(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .envs([
                ("GIT_AUTHOR_NAME", "T"),
                ("GIT_AUTHOR_EMAIL", "t@x"),
                ("GIT_COMMITTER_NAME", "T"),
                ("GIT_COMMITTER_EMAIL", "t@x"),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn assignment(repo: &Path, task: i64) -> pb::Assignment {
        let git = pb::GitSource { repo: repo.display().to_string(), ..Default::default() };
        let spec = pb::TaskSpec { prompt: "p".into(), git: Some(git), ..Default::default() };
        pb::Assignment { task_id: task, job_id: "j".into(), attempt: 1, spec: Some(spec), ..Default::default() }
    }

    #[tokio::test]
    async fn worktrees_of_removed_workspaces_are_pruned_and_local_repos_need_an_allowed_root() {
        let d = tempfile::tempdir().unwrap();
        let (remote, seed, work) = (d.path().join("r.git"), d.path().join("seed"), d.path().join("work"));
        std::fs::create_dir_all(&seed).unwrap();
        sh(d.path(), &["init", "-q", "--bare", "-b", "main", remote.to_str().unwrap()]);
        sh(&seed, &["init", "-q", "-b", "main"]);
        std::fs::write(seed.join("a"), "a").unwrap();
        sh(&seed, &["add", "a"]);
        sh(&seed, &["commit", "-q", "-m", "one"]);
        sh(&seed, &["push", "-q", remote.to_str().unwrap(), "main"]);
        let mirrors = Mirrors::default();
        let roots = [d.path().canonicalize().unwrap()];
        let (ws1, ws2) = (work.join("j/1-1"), work.join("j/2-1"));
        for ws in [&ws1, &ws2] {
            std::fs::create_dir_all(ws).unwrap();
        }
        let co = checkout(&mirrors, &work, &roots, &assignment(&remote, 1), &ws1).await.unwrap();
        assert!(ws1.join("a").exists() && co.start == co.base_commit);
        // The sweep removes a kept workspace with remove_dir_all; the next checkout prunes it.
        std::fs::remove_dir_all(&ws1).unwrap();
        checkout(&mirrors, &work, &roots, &assignment(&remote, 2), &ws2).await.unwrap();
        let list = sh(&co.mirror, &["worktree", "list", "--porcelain"]);
        assert!(!list.contains("1-1") && list.contains("2-1"), "{list}");
        // A local repository outside every --allow-dir root is refused by the worker.
        let other = tempfile::tempdir().unwrap();
        let e = checkout(&mirrors, &work, &[other.path().to_path_buf()], &assignment(&remote, 3), &work.join("j/3-1"))
            .await
            .unwrap_err();
        assert!(e.error.starts_with("worker policy: ") && e.error.contains("outside every --allow-dir"), "{}", e.error);
        assert!(!e.retryable);
    }
}
