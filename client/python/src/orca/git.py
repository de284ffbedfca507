"""Git tasks from the caller's side: a task's git source made from the caller's own checkout
(`GitCheckout`, `from_git_checkout`), and the patches the tasks brought back applied to it
(`apply_patches`).

A task with a git source (``TaskSpec.git``) runs on a worker in a worktree of its own of the
source's repository at its base; the worker commits what the agent changed and returns the
commit as a patch (``task.result.git``, see `git_result`).

These run the ``git`` program (with ``GIT_TERMINAL_PROMPT=0``) and block while it runs
(short, local commands); from asyncio code, call them in a thread (``asyncio.to_thread``).
Every failure raises `orca.GitError`, its message starting with what failed.

    import orca
    with orca.Client() as c:
        job = c.create_job("rename")
        c.add_tasks(job.job_id, [orca.from_git_checkout(".", "Rename foo to bar")])
        c.wait(job.job_id)
        print(c.apply_patches(job.job_id, "."))   # Applied(applied=[1], empty=[])
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from orca._config import PathLike
from orca._specs import task_spec
from orca.errors import GitError
from orca.v1 import types_pb2

__all__ = [
    "GitCheckout",
    "Applied",
    "apply_patches",
    "from_git_checkout",
    "git_result",
    "MAX_GIT_PATCH_BYTES",
]

#: The largest ``base_patch`` (and task patch) a task may carry: 8 MiB.
MAX_GIT_PATCH_BYTES = 8 << 20

#: How many uncommitted entries an error names.
_SHOWN_ENTRIES = 5


def _run(
    cwd: str, args: Sequence[str], env: Optional[Mapping[str, str]] = None, stdin: Optional[bytes] = None
) -> bytes:
    """Runs ``git -C cwd args...``; its stdout, or a `GitError` with git's stderr."""
    full_env = dict(os.environ)
    full_env["GIT_TERMINAL_PROMPT"] = "0"
    full_env.update(env or {})
    try:
        out = subprocess.run(
            ["git", "-C", cwd, *args],
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            env=full_env,
            check=False,
        )
    except OSError as e:
        raise GitError(f"cannot run git: {e}") from None
    if out.returncode != 0:
        err = out.stderr.decode("utf-8", "replace").strip()
        raise GitError(f"git {' '.join(args)} failed: {err or f'exit {out.returncode}'}")
    return out.stdout


def _text(cwd: str, args: Sequence[str]) -> str:
    return _run(cwd, args).decode("utf-8", "replace").strip()


def _toplevel(path: PathLike) -> str:
    """The top of the working tree containing ``path`` (a file: its directory's)."""
    p = os.path.abspath(os.fspath(path))
    if os.path.isfile(p):
        p = os.path.dirname(p)
    return _text(p, ["rev-parse", "--show-toplevel"])


@dataclass(frozen=True)
class GitCheckout:
    """A caller's checkout as a git source: its remote's URL, HEAD as the base, and (when
    asked) its local changes as a patch. Made by `open` or `open_with_changes`."""

    #: The top of the working tree.
    root: str
    #: The remote's name and URL (a relative path made absolute).
    remote: str
    repo: str
    #: The commit the tasks start from.
    base: str
    #: The local changes shipped (empty when there are none or they were not asked for).
    base_patch: bytes = b""

    @classmethod
    def open(cls, path: PathLike) -> "GitCheckout":
        """The checkout containing ``path``. Uncommitted changes (untracked files included)
        and a HEAD that is not on the remote raise `orca.GitError`: the workers could not
        see them."""
        return _read(path, ship=False)

    @classmethod
    def open_with_changes(cls, path: PathLike) -> "GitCheckout":
        """The checkout containing ``path``, with everything the remote does not have (local
        commits, staged, unstaged and untracked changes) shipped as a patch the workers
        apply before the agent runs. Ignored files stay behind. The caller's index is not
        touched."""
        return _read(path, ship=True)

    def source(self, *, push_to: Optional[str] = None, author: str = "", message: str = "") -> types_pb2.GitSource:
        """The git source of a task working on this checkout. ``push_to``: also push the
        task's commit to this branch of the repository (``""``: the default
        ``orca/<job>/<task>``); ``author`` (``"Name <email>"``) and ``message`` of the
        task's commit (empty: the worker's identity, the task's name or first prompt line)."""
        src = types_pb2.GitSource(
            repo=self.repo, base=self.base, base_patch=self.base_patch, author=author, message=message
        )
        if push_to is not None:
            src.push = True
            src.branch = push_to
        return src


def _read(path: PathLike, ship: bool) -> GitCheckout:
    root = _toplevel(path)
    remote = _remote_of(root)
    repo = _url_of(root, remote)
    head = _text(root, ["rev-parse", "--verify", "HEAD^{commit}"])
    pushed = bool(_text(root, ["for-each-ref", "--contains", head, "--format=%(refname)", f"refs/remotes/{remote}/"]))
    if ship:
        base = head if pushed else _remote_base(root, remote, head)
        return GitCheckout(root, remote, repo, base, _changes_since(root, base))
    _check_clean(root)
    if not pushed:
        raise GitError(
            f"HEAD ({head[:12]}) is not on remote {remote}: push it, or ship the local commits as a patch "
            "(GitCheckout.open_with_changes, from_git_checkout(..., ship_changes=True))"
        )
    return GitCheckout(root, remote, repo, head)


def _check_clean(root: str) -> None:
    """A `GitError` naming up to 5 uncommitted entries when there are any."""
    entries = [line.strip() for line in _text(root, ["status", "--porcelain", "--untracked-files=normal"]).splitlines()]
    if not entries:
        return
    shown = ", ".join(entries[:_SHOWN_ENTRIES]) + (", ..." if len(entries) > _SHOWN_ENTRIES else "")
    raise GitError(
        f"{root} has uncommitted changes ({shown}): commit and push them, or ship them as a patch "
        "(GitCheckout.open_with_changes, from_git_checkout(..., ship_changes=True))"
    )


def _upstream(root: str) -> Optional[str]:
    """The current branch's upstream (``origin/main``), None without one."""
    try:
        return _text(root, ["rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{upstream}"]) or None
    except GitError:
        return None


def _remote_of(root: str) -> str:
    """The remote to use: the upstream's, else the only one, else ``origin`` among several."""
    up = _upstream(root)
    if up and "/" in up:
        return up.split("/", 1)[0]
    remotes = _text(root, ["remote"]).splitlines()
    if not remotes:
        raise GitError(f"{root} has no remote: the workers need one to fetch from")
    if len(remotes) == 1:
        return remotes[0]
    if "origin" in remotes:
        return "origin"
    raise GitError(
        f"{root} has several remotes ({', '.join(remotes)}) and the branch has no upstream: set one (git branch -u)"
    )


def _is_url(url: str) -> bool:
    return "://" in url or ("@" in url and ":" in url)


def _url_of(root: str, remote: str) -> str:
    """The remote's URL, a relative path made absolute, checked as the coordinator does."""
    url = _text(root, ["remote", "get-url", remote])
    if not (_is_url(url) or url.startswith("/")):
        local = os.path.join(root, url)
        if not os.path.exists(local):
            raise GitError(f"remote {remote} ({url}): {local} does not exist")
        url = os.path.realpath(local)
    problem = _repo_problem(url)
    if problem:
        raise GitError(f"remote {remote} ({url}): {problem}")
    return url


def _repo_problem(url: str) -> str:
    """Why the coordinator would refuse ``url`` as a repository ("" when it would not)."""
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return "must not contain whitespace or control characters"
    if url.startswith("-"):
        return "must not start with '-'"
    if "::" in url:
        return "names a git transport helper (`::`), which Orca does not run"
    if not (_is_url(url) or url.startswith("/")):
        return "must be a URL or an absolute path"
    return ""


def _remote_base(root: str, remote: str, head: str) -> str:
    """Where local commits fork from what the remote has: the merge base of HEAD with the
    upstream (or the remote's default branch)."""
    upstream = _upstream(root) or f"{remote}/HEAD"
    try:
        return _text(root, ["merge-base", head, upstream])
    except GitError:
        raise GitError(
            f"HEAD shares no commit with {upstream}: fetch the remote, or push a branch to start from"
        ) from None


def _changes_since(root: str, base: str) -> bytes:
    """Every difference between ``base`` and the working tree (untracked files included,
    ignored ones not), through a temporary index so the caller's own index is untouched."""
    with tempfile.TemporaryDirectory(prefix="orca-git-") as tmp:
        env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
        _run(root, ["read-tree", "HEAD"], env)
        _run(root, ["add", "--all", "--", "."], env)
        patch = _run(root, ["diff", "--cached", "--binary", "--no-color", "--no-ext-diff", base], env)
    if len(patch) > MAX_GIT_PATCH_BYTES:
        raise GitError(
            f"the local changes are {len(patch)} bytes as a patch, more than the {MAX_GIT_PATCH_BYTES} a task may carry"
        )
    return patch


def from_git_checkout(
    path: PathLike, prompt: str, *, ship_changes: bool = False, push_to: Optional[str] = None, **kwargs: Any
) -> types_pb2.TaskSpec:
    """A task working on the caller's checkout containing ``path``: its remote at HEAD
    (`GitCheckout.open`: uncommitted changes raise `orca.GitError`; with ``ship_changes``,
    `GitCheckout.open_with_changes`: they are shipped as the source's ``base_patch``). The
    task runs in a worktree of its own on a worker and comes back as a patch. ``push_to``
    as in `GitCheckout.source`; other keyword arguments are `orca.task_spec`'s."""
    checkout = GitCheckout.open_with_changes(path) if ship_changes else GitCheckout.open(path)
    return task_spec(prompt, git=checkout.source(), push_to=push_to, **kwargs)


def git_result(task: types_pb2.Task) -> Optional[types_pb2.GitResult]:
    """The task's `GitResult` (commit, patch, stats, ``empty``), None for a task without one
    (no git source, or no result yet)."""
    if not task.HasField("result") or not task.result.HasField("git"):
        return None
    return task.result.git


@dataclass
class Applied:
    """What `apply_patches` did."""

    #: The tasks whose patches were applied, in order.
    applied: List[int] = field(default_factory=list)
    #: Completed git tasks that changed nothing.
    empty: List[int] = field(default_factory=list)


def _completed_git(tasks: Iterable[types_pb2.Task]) -> List[types_pb2.Task]:
    """The completed tasks with a git result, by id; anything but a Task is a TypeError."""
    if isinstance(tasks, (str, bytes, Mapping, types_pb2.Task)):
        raise TypeError(f"tasks: expected a list of Task messages, got {type(tasks).__name__}")
    out: Dict[int, types_pb2.Task] = {}
    for i, t in enumerate(tasks):
        if not isinstance(t, types_pb2.Task):
            raise TypeError(f"tasks[{i}]: expected a Task, got {type(t).__name__}")
        if t.state == types_pb2.TASK_STATE_COMPLETED and git_result(t) is not None:
            out[t.task_id] = t
    return [out[k] for k in sorted(out)]


def apply_patches(path: PathLike, tasks: Iterable[types_pb2.Task]) -> Applied:
    """Applies the patches of the completed git tasks among ``tasks`` to the checkout
    containing ``path`` with ``git am --3way`` (one commit each, with the task's author and
    message), in dependency order (task id order: a task always depends on smaller ids).
    Other tasks are passed over. Stops at the first patch that does not apply, leaving the
    checkout as it was before that patch (``git am --abort``), with an `orca.GitError`
    naming the task and what was applied before it."""
    picked = _completed_git(tasks)
    root = _toplevel(path)
    done = Applied()
    for t in picked:
        patch = t.result.git.patch
        if not patch:
            done.empty.append(t.task_id)
            continue
        try:
            _run(root, ["am", "--3way", "--keep-cr", "--quiet"], stdin=bytes(patch))
        except GitError as e:
            _abort_am(root)
            before = (
                f"the patches of tasks {done.applied} were applied before it"
                if done.applied
                else "no patch was applied before it"
            )
            raise GitError(f"the patch of task {t.task_id} does not apply to {root} ({before}): {e}") from None
        done.applied.append(t.task_id)
    return done


def _abort_am(root: str) -> None:
    try:
        _run(root, ["am", "--abort"])
    except GitError:
        pass
