"""Git tasks from Python: the caller's checkout read as a git source (`orca.GitCheckout`,
`orca.from_git_checkout`), tasks run by a real worker in worktrees of a bare repository, and
their patches applied back (`orca.apply_patches`, `Client.apply_patches`).

Every test makes its own bare repository (``remote.git``, branch ``main``) under one
directory the module's worker allows (``--allow-repo <dir>/*``, ``--allow-dir <dir>``), a
seed clone that pushed a first commit, and the caller's clone. The agent edits files with a
``sh:`` task (tests/agent.py).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List

import pytest

import orca
from orca.v1 import types_pb2

from conftest import Cluster

WAIT_SECONDS = 120.0


def git(cwd: Path, *args: str) -> str:
    """Runs git in ``cwd``; its stdout, stripped (a failure fails the test with git's error)."""
    out = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True)
    assert out.returncode == 0, f"git {' '.join(args)} failed: {out.stderr}"
    return out.stdout.strip()


@pytest.fixture(autouse=True)
def git_identity(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A known identity for every commit here (git am in the caller's clone included), and
    no global or system git configuration."""
    empty = tmp_path / "gitconfig"
    empty.write_text("")
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "Test Caller")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "caller@example.com")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@dataclass
class Repos:
    remote: Path
    seed: Path
    caller: Path

    def remote_head(self) -> str:
        return git(self.remote, "rev-parse", "refs/heads/main")


def make_repos(root: Path) -> Repos:
    """A bare ``remote.git`` on ``main`` with one commit (a.txt = "hello"), pushed from a seed
    clone, and the caller's clone of it."""
    root.mkdir(parents=True)
    remote, seed, caller = root / "remote.git", root / "seed", root / "caller"
    git(root, "init", "--quiet", "--bare", "-b", "main", str(remote))
    git(root, "clone", "--quiet", str(remote), str(seed))
    git(seed, "symbolic-ref", "HEAD", "refs/heads/main")
    (seed / "a.txt").write_text("hello\n")
    git(seed, "add", "a.txt")
    git(seed, "commit", "--quiet", "-m", "first")
    git(seed, "push", "--quiet", "origin", "main")
    git(root, "clone", "--quiet", str(remote), str(caller))
    return Repos(remote, seed, caller)


@pytest.fixture(scope="module")
def git_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where every test's repositories live: the directory the worker allows."""
    return tmp_path_factory.mktemp("repos").resolve()


@pytest.fixture
def repos(git_root: Path, request: pytest.FixtureRequest) -> Repos:
    return make_repos(git_root / request.node.name)


@pytest.fixture(scope="module")
def git_cluster(tmp_path_factory: pytest.TempPathFactory, git_root: Path) -> Iterator[Cluster]:
    """A coordinator and one worker that runs git sources under ``git_root``."""
    c = Cluster(tmp_path_factory.mktemp("gitcluster"))
    try:
        c.start()
        c.add_worker("git-w", args=["--allow-repo", f"{git_root}/*", "--allow-dir", str(git_root)])
        yield c
    finally:
        c.close()


@pytest.fixture
def gc(git_cluster: Cluster) -> Iterator[orca.Client]:
    with git_cluster.client() as c:
        yield c


def run_job(c: orca.Client, tasks: List[types_pb2.TaskSpec]) -> List[types_pb2.Task]:
    """Runs the tasks as one job; every one of them, final, in order."""
    job = c.create_job("git tasks")
    ids = c.add_tasks(job.job_id, tasks)
    c.wait(job.job_id, timeout=WAIT_SECONDS)
    return [c.get_task(i) for i in ids]


def completed(t: types_pb2.Task) -> types_pb2.GitResult:
    assert t.state == types_pb2.TASK_STATE_COMPLETED, f"task {t.task_id}: {orca.state_name(t.state)}: {t.reason}"
    g = orca.git_result(t)
    assert g is not None, f"task {t.task_id} has no git result"
    return g


def log_subjects(path: Path) -> List[str]:
    return git(path, "log", "--format=%s").splitlines()


# Reading the checkout (no binaries).


def test_a_clean_pushed_checkout_is_its_remote_at_head(repos: Repos) -> None:
    co = orca.GitCheckout.open(repos.caller / "a.txt")
    assert co.root == str(repos.caller)
    assert (co.remote, co.repo, co.base, co.base_patch) == ("origin", str(repos.remote), repos.remote_head(), b"")
    spec = orca.from_git_checkout(repos.caller, "p", push_to="feature/x", name="n")
    assert (spec.git.repo, spec.git.base, spec.git.push, spec.git.branch, spec.name) == (
        str(repos.remote),
        repos.remote_head(),
        True,
        "feature/x",
        "n",
    )


def test_uncommitted_changes_and_unpushed_commits_are_refused(repos: Repos) -> None:
    (repos.caller / "a.txt").write_text("changed\n")
    (repos.caller / "new.txt").write_text("untracked\n")
    with pytest.raises(orca.GitError, match="has uncommitted changes") as e:
        orca.from_git_checkout(repos.caller, "p")
    assert "M a.txt" in e.value.message and "?? new.txt" in e.value.message, e.value.message
    assert "ship_changes=True" in e.value.message
    git(repos.caller, "commit", "--quiet", "-am", "local")
    (repos.caller / "new.txt").unlink()
    with pytest.raises(orca.GitError, match=r"HEAD \([0-9a-f]{12}\) is not on remote origin"):
        orca.GitCheckout.open(repos.caller)


def test_shipped_changes_start_at_the_remote_and_leave_the_index_alone(repos: Repos) -> None:
    (repos.caller / "d.txt").write_text("committed locally\n")
    git(repos.caller, "add", "d.txt")
    git(repos.caller, "commit", "--quiet", "-m", "local")
    (repos.caller / "a.txt").write_text("hello\ndirty\n")
    (repos.caller / "u.txt").write_text("untracked\n")
    (repos.caller / ".gitignore").write_text("ignored.txt\n")
    (repos.caller / "ignored.txt").write_text("stays\n")
    status = git(repos.caller, "status", "--porcelain")
    co = orca.GitCheckout.open_with_changes(repos.caller)
    assert co.base == repos.remote_head(), "the local commit is not on the remote: its merge base"
    patch = co.base_patch.decode()
    for name in ("d.txt", "a.txt", "u.txt", ".gitignore"):
        assert f"diff --git a/{name} b/{name}" in patch, name
    assert "diff --git a/ignored.txt" not in patch, "ignored files stay behind"
    assert git(repos.caller, "status", "--porcelain") == status, "the caller's index is untouched"


def test_checkouts_without_a_usable_remote_are_refused(tmp_path: Path) -> None:
    lone = tmp_path / "lone"
    git(tmp_path, "init", "--quiet", "-b", "main", str(lone))
    with pytest.raises(orca.GitError, match="has no remote"):
        orca.GitCheckout.open(lone)
    git(lone, "remote", "add", "one", "https://example.com/one.git")
    git(lone, "remote", "add", "two", "https://example.com/two.git")
    with pytest.raises(orca.GitError, match=r"several remotes \(one, two\)"):
        orca.GitCheckout.open(lone)
    with pytest.raises(orca.GitError, match="^git rev-parse --show-toplevel failed: "):
        orca.GitCheckout.open(tmp_path)


def test_a_relative_remote_is_made_absolute(repos: Repos) -> None:
    git(repos.caller, "remote", "set-url", "origin", "../remote.git")
    assert orca.GitCheckout.open(repos.caller).repo == str(repos.remote)


def test_local_changes_over_8_mib_are_refused(repos: Repos) -> None:
    (repos.caller / "big.bin").write_bytes(os.urandom(7 << 20))
    with pytest.raises(orca.GitError, match="more than the 8388608 a task may carry"):
        orca.GitCheckout.open_with_changes(repos.caller)


def test_git_and_push_to_in_task_specs(repos: Repos) -> None:
    spec = orca.task_spec("p", git={"repo": "https://h/r.git", "base": "v1"}, push_to="")
    assert (spec.git.repo, spec.git.base, spec.git.push, spec.git.branch) == ("https://h/r.git", "v1", True, "")
    with pytest.raises(ValueError, match="^push_to: the task has no git source"):
        orca.task_spec("p", push_to="b")
    with orca.Client("http://127.0.0.1:1") as c, pytest.raises(ValueError, match=r"^tasks\[0\]\.git: unknown key 'url'"):
        c.add_tasks("j", [{"prompt": "p", "git": {"url": "x"}}])
    co = orca.GitCheckout.open(repos.caller)
    assert orca.task_spec("p", git=co).git == co.source()
    assert orca.git_result(types_pb2.Task(task_id=1)) is None
    assert orca.apply_patches(repos.caller, [types_pb2.Task(task_id=1)]) == orca.Applied([], [])
    with pytest.raises(TypeError, match=r"tasks\[0\]: expected a Task"):
        orca.apply_patches(repos.caller, [1])  # type: ignore[list-item]


# Tasks on a real worker.


def test_a_task_on_a_clean_checkout_comes_back_as_a_patch_that_applies(gc: orca.Client, repos: Repos) -> None:
    base = repos.remote_head()
    spec = orca.from_git_checkout(repos.caller, "sh: echo world >> a.txt && echo new > c.txt", name="add world")
    [t] = run_job(gc, [spec])
    g = completed(t)
    assert (g.base_commit, g.empty, g.pushed) == (base, False, False)
    assert len(g.commit) == 40 and g.commit != base
    assert (g.files_changed, g.insertions, g.deletions) == (2, 2, 0)
    assert g.patch.startswith(b"From " + g.commit.encode()), g.patch[:80]
    applied = gc.apply_patches(t.job_id, repos.caller)
    assert applied == orca.Applied(applied=[t.task_id], empty=[])
    assert (repos.caller / "a.txt").read_text() == "hello\nworld\n"
    assert (repos.caller / "c.txt").read_text() == "new\n"
    assert log_subjects(repos.caller) == ["add world", "first"]
    assert git(repos.caller, "status", "--porcelain") == ""


def test_shipped_changes_reach_the_agent_and_stay_out_of_its_patch(gc: orca.Client, repos: Repos) -> None:
    (repos.caller / "a.txt").write_text("hello\ndirty\n")
    (repos.caller / "u.txt").write_text("untracked\n")
    spec = orca.from_git_checkout(
        repos.caller, "sh: grep -q dirty a.txt && test -f u.txt && echo x >> b.txt", ship_changes=True, name="ship"
    )
    assert spec.git.base == repos.remote_head() and spec.git.base_patch
    [t] = run_job(gc, [spec])
    g = completed(t)
    patch = g.patch.decode()
    assert "diff --git a/b.txt b/b.txt" in patch
    assert "a/a.txt" not in patch and "a/u.txt" not in patch, patch
    assert (g.files_changed, g.insertions) == (1, 1)
    applied = orca.apply_patches(repos.caller, [t])
    assert applied.applied == [t.task_id]
    assert (repos.caller / "b.txt").read_text() == "x\n"
    assert (repos.caller / "a.txt").read_text() == "hello\ndirty\n", "the caller's own change is still there"


def test_a_task_that_changes_nothing_is_empty(gc: orca.Client, repos: Repos) -> None:
    [t] = run_job(gc, [orca.from_git_checkout(repos.caller, "sh: grep -q hello a.txt")])
    g = completed(t)
    assert (g.empty, g.commit, g.patch, g.files_changed) == (True, "", b"", 0)
    head = git(repos.caller, "rev-parse", "HEAD")

    async def apply() -> orca.Applied:
        async with orca.AsyncClient(gc.coordinator) as ac:
            return await ac.apply_patches(t.job_id, repos.caller)

    assert asyncio.run(apply()) == orca.Applied(applied=[], empty=[t.task_id])
    assert git(repos.caller, "rev-parse", "HEAD") == head, "nothing was committed"


def test_a_task_builds_on_its_git_dependency_and_both_apply_in_order(gc: orca.Client, repos: Repos) -> None:
    first = orca.from_git_checkout(repos.caller, "sh: echo one > one.txt", name="one")
    second = orca.from_git_checkout(repos.caller, "sh: test -f one.txt && echo two > two.txt", name="two", depends_on=[-1])
    t1, t2 = run_job(gc, [first, second])
    g1, g2 = completed(t1), completed(t2)
    assert t2.spec.git.builds_on == t1.task_id
    assert g2.base_commit == g1.base_commit
    assert "a/one.txt" not in g2.patch.decode(), "the second patch holds only its own change"
    applied = gc.apply_patches(t1.job_id, repos.caller)
    assert applied.applied == [t1.task_id, t2.task_id]
    assert log_subjects(repos.caller) == ["two", "one", "first"]


def test_a_patch_that_does_not_apply_leaves_the_checkout_as_it_was(gc: orca.Client, repos: Repos) -> None:
    [t] = run_job(gc, [orca.from_git_checkout(repos.caller, "sh: echo agent > a.txt")])
    completed(t)
    (repos.caller / "a.txt").write_text("caller\n")
    git(repos.caller, "commit", "--quiet", "-am", "conflicting")
    head = git(repos.caller, "rev-parse", "HEAD")
    with pytest.raises(orca.GitError, match=rf"^the patch of task {t.task_id} does not apply to .*no patch was applied before it"):
        gc.apply_patches(t.job_id, repos.caller)
    assert git(repos.caller, "rev-parse", "HEAD") == head
    assert git(repos.caller, "status", "--porcelain") == ""
    assert not (repos.caller / ".git" / "rebase-apply").exists(), "git am was aborted"


def test_push_to_puts_the_commit_on_a_branch_of_the_remote(gc: orca.Client, repos: Repos) -> None:
    spec = orca.from_git_checkout(repos.caller, "sh: echo pushed > p.txt", push_to="orca-test/pushed")
    [t] = run_job(gc, [spec])
    g = completed(t)
    assert (g.pushed, g.branch) == (True, "orca-test/pushed")
    assert git(repos.remote, "rev-parse", "refs/heads/orca-test/pushed") == g.commit


def test_the_guides_api_runs_git_tasks_and_applies_them(git_cluster: Cluster, repos: Repos) -> None:
    from orchestrator import ClaudeOrchestrator

    with ClaudeOrchestrator("git-guide", coordinator=git_cluster.url, show_progress=False) as orch:
        job = orch.create_job("guide git")
        with pytest.raises(ValueError, match="^ship_changes: needs git_checkout"):
            orch.add_subtask(job, "p", ship_changes=True)
        tid = orch.add_subtask(
            job,
            "sh: grep -q hello a.txt && echo guide > g.txt",
            context_files=[str(repos.caller / "a.txt")],
            git_checkout=repos.caller,
        )
        results = orch.wait_and_collect(job, apply=repos.caller)
    t = results[tid]
    assert t["status"] == "completed", t
    assert t["working_dir"] is None and t["context_files"] == ["a.txt"], "named from the checkout's top"
    assert t["git"]["repo"] == str(repos.remote)
    assert t["git_result"]["applied"] is True and t["git_result"]["files_changed"] == 1, t["git_result"]
    assert (repos.caller / "g.txt").read_text() == "guide\n"
