//! Git repositories for the tests of git sources: a bare remote with a first commit, and
//! git run with a fixed identity.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::workers::WorkerProc;

/// The identity of every commit the test makes (and of the workers' `git am`).
pub const IDENTITY: [(&str, &str); 4] = [
    ("GIT_AUTHOR_NAME", "Test"),
    ("GIT_AUTHOR_EMAIL", "test@example.com"),
    ("GIT_COMMITTER_NAME", "Test"),
    ("GIT_COMMITTER_EMAIL", "test@example.com"),
];

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("-C").arg(dir).args(args).envs(IDENTITY).output().unwrap();
    assert!(out.status.success(), "git {args:?} in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare remote with `a.txt` and `b.txt` on `main`, tagged `v1`.
pub fn remote(d: &Path) -> PathBuf {
    let remote = d.join("remote.git");
    let seed = d.join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    git(d, &["init", "--quiet", "--bare", "-b", "main", remote.to_str().unwrap()]);
    git(&seed, &["init", "--quiet", "-b", "main"]);
    std::fs::write(seed.join("a.txt"), "a\n").unwrap();
    std::fs::write(seed.join("b.txt"), "b\n").unwrap();
    git(&seed, &["add", "."]);
    git(&seed, &["commit", "--quiet", "-m", "initial"]);
    git(&seed, &["tag", "v1"]);
    git(&seed, &["push", "--quiet", remote.to_str().unwrap(), "main", "v1"]);
    remote
}

/// A worker named `name` that runs each prompt as a shell script (`sh -s`) and may work on
/// `remote` (a local path under `root`, its `--allow-dir`), with `extra` arguments.
pub fn git_worker(url: &str, root: &Path, remote: &Path, name: &str, extra: &[&str]) -> WorkerProc {
    let mut args = vec!["--agent", "command", "--agent-command", "sh -s", "--allow-repo", remote.to_str().unwrap()];
    args.extend(["--allow-dir", root.to_str().unwrap()]);
    args.extend_from_slice(extra);
    WorkerProc::start_with_env(url, root, name, &args, &IDENTITY)
}
