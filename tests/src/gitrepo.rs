//! Git repositories for the tests of git sources: a bare remote with a first commit, and
//! git run with a fixed identity.

use std::path::{Path, PathBuf};
use std::process::Command;

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
