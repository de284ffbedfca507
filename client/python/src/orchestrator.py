"""The orchestrator guide's Python API, served by Orca.

A script written for the guide runs unchanged::

    from orchestrator import ClaudeOrchestrator, quick_delegate, VerificationHook

    orch = ClaudeOrchestrator("my_orchestrator_id")
    job_id = orch.create_job("Build authentication system for web app")
    orch.add_subtask(job_id, "Implement user login endpoint with JWT", priority=10,
                     context_files=["src/routes/auth.js"], expected_outputs=["src/routes/auth.js"])
    results = orch.wait_and_collect(job_id, show_progress=True)
    print(orch.synthesize_results(results))

The shapes (arguments, dict keys, return values) are the guide's. Where Orca differs on
purpose (docs/python.md has the full table):

- the queue lives in the coordinator (``ORCA_COORDINATOR``); options of the old system such
  as ``db_path`` are ignored with a warning;
- a task's ``status`` is one of ``waiting`` (blocked on its parent, dependencies or a retry
  backoff), ``pending``, ``in_progress``, ``completed``, ``failed``, ``cancelled``;
- ``result`` is JSON text of the agent's output (``json.loads(task['result'])`` gives the
  text), None for a task that did not complete; the raw text is also under ``output``;
- ``wait_and_collect`` follows the WatchJob stream (``poll_interval`` is accepted and
  unused) and writes each completed task's files into its ``working_dir`` (the artifacts
  the worker shipped back; nothing when the worker ran in that directory on a shared
  filesystem);
- shared-context values are stored as JSON text and decoded on the way back;
- Orca's git tasks: ``add_subtask(..., git_checkout=path)`` runs the task in a worktree of
  that checkout's remote at its HEAD (``ship_changes=True`` ships the uncommitted changes
  too), and ``wait_and_collect(job_id, apply=path)`` applies the patches they brought back.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

import orca
from orca.artifacts import ArtifactSkipped
from orca.v1 import types_pb2

__all__ = ["ClaudeOrchestrator", "TaskQueue", "VerificationHook", "quick_delegate", "task_dict"]

#: Options passed on to `orca.Client`.
CLIENT_OPTIONS = ("coordinator", "token", "token_file", "tls_ca", "tls_cert", "tls_key")

_COMPLETED = types_pb2.TASK_STATE_COMPLETED
_FAILED = types_pb2.TASK_STATE_FAILED
_CANCELLED = types_pb2.TASK_STATE_CANCELLED


@dataclass
class VerificationHook:
    """A check the worker runs in the task's directory after the agent succeeded
    (``sh -c command``); with ``fail_on_error`` a failing hook fails the task."""

    command: str
    description: str
    timeout: int = 300
    fail_on_error: bool = True

    def to_dict(self) -> Dict[str, Any]:
        return {
            "command": self.command,
            "description": self.description,
            "timeout_seconds": int(self.timeout),
            "fail_on_error": bool(self.fail_on_error),
        }


def _hook(value: Any, source: str) -> Dict[str, Any]:
    if isinstance(value, VerificationHook):
        return value.to_dict()
    if isinstance(value, types_pb2.VerificationHook):
        return {
            "command": value.command,
            "description": value.description,
            "timeout_seconds": value.timeout_seconds,
            "fail_on_error": value.fail_on_error,
        }
    if isinstance(value, Mapping):
        known = {"command", "description", "timeout", "timeout_seconds", "fail_on_error"}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"{source}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        if "command" not in value:
            raise ValueError(f"{source}: command is required")
        timeout = value.get("timeout_seconds", value.get("timeout", 300))
        return VerificationHook(
            command=value["command"],
            description=value.get("description", ""),
            timeout=timeout,
            fail_on_error=value.get("fail_on_error", True),
        ).to_dict()
    raise TypeError(f"{source}: expected a VerificationHook or a dict, got {type(value).__name__}")


def _context_files(paths: Iterable[Any], working_dir: str) -> List[Dict[str, Any]]:
    """Reads each file (relative to the current directory) and names it relative to
    ``working_dir``; a file outside ``working_dir`` is sent under its base name."""
    if isinstance(paths, (str, bytes)):
        raise TypeError("context_files: expected a list of paths, got a single string")
    out: List[Dict[str, Any]] = []
    sent_as: Dict[str, str] = {}
    for i, p in enumerate(paths):
        src = os.path.abspath(os.fspath(p))
        try:
            with open(src, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ValueError(f"context_files[{i}]: cannot read {os.fspath(p)}: {e.strerror or e}") from None
        rel = os.path.relpath(src, working_dir)
        if rel == os.pardir or rel.startswith(os.pardir + os.sep):
            name = os.path.basename(src)
        else:
            name = rel.replace(os.sep, "/")
        if name in sent_as:
            raise ValueError(
                f"context_files[{i}]: {os.fspath(p)} and {sent_as[name]} would both be sent as {name!r}"
            )
        sent_as[name] = os.fspath(p)
        out.append({"path": name, "contents": data})
    return out


def _output_text(res: Optional[types_pb2.TaskResult]) -> str:
    return res.output if res is not None else ""


def _git_dicts(t: types_pb2.Task) -> Tuple[Optional[Dict[str, Any]], Optional[Dict[str, Any]]]:
    """A git task's source and result as the CLI's ``orca task --json`` shows them (the
    patch by its size); (None, None) for other tasks."""
    if not t.spec.HasField("git"):
        return None, None
    g = t.spec.git
    source = {"repo": g.repo, "base": g.base, "branch": g.branch, "push": g.push, "builds_on": g.builds_on}
    r = orca.git_result(t)
    if r is None:
        return source, None
    result = {
        "base_commit": r.base_commit,
        "commit": r.commit,
        "branch": r.branch,
        "pushed": r.pushed,
        "empty": r.empty,
        "files_changed": r.files_changed,
        "insertions": r.insertions,
        "deletions": r.deletions,
        "patch_bytes": len(r.patch),
    }
    return source, result


def task_dict(t: types_pb2.Task) -> Dict[str, Any]:
    """A task as the guide's dict (``id``, ``prompt``, ``status``, ``result``, ``error``, ...)
    plus Orca's extras."""
    spec = t.spec
    res = t.result if t.HasField("result") else None
    output = _output_text(res)
    error: Optional[str] = None
    if t.state in (_FAILED, _CANCELLED):
        error = (res.error if res is not None and res.error else "") or t.reason or None
    git, git_result = _git_dicts(t)
    return {
        "id": t.task_id,
        "task_id": t.task_id,
        "job_id": t.job_id,
        "prompt": spec.prompt,
        "status": orca.state_name(t.state),
        "result": json.dumps(output) if t.state == _COMPLETED else None,
        "error": error,
        "priority": spec.priority if spec.HasField("priority") else 5,
        "parent_task_id": spec.parent_task_id if spec.HasField("parent_task_id") else None,
        "depends_on": list(spec.depends_on),
        "working_dir": spec.working_dir or None,
        "context_files": [f.path for f in spec.context_files],
        "expected_outputs": list(spec.expected_outputs),
        "metadata": orca.from_struct(spec.metadata) if spec.HasField("metadata") else {},
        "attempts": t.attempts,
        "max_retries": spec.max_retries if spec.HasField("max_retries") else 0,
        "retries_used": t.retries_used,
        "name": spec.name or None,
        # Orca's extras.
        "output": output,
        "reason": t.reason or None,
        "exit_code": res.exit_code if res is not None else None,
        "duration_ms": res.duration_ms if res is not None else None,
        "cost_usd": res.cost_usd if res is not None else 0.0,
        "num_turns": res.num_turns if res is not None else 0,
        "artifacts": [a.path for a in res.artifacts] if res is not None else [],
        "artifact_sizes": {a.path: len(a.contents) for a in res.artifacts} if res is not None else {},
        "in_place": bool(res.in_place) if res is not None else False,
        "verification": [
            {
                "command": v.command,
                "description": v.description,
                "passed": v.passed,
                "exit_code": v.exit_code,
                "output": v.output,
            }
            for v in (res.verification if res is not None else [])
        ],
        "git": git,
        "git_result": git_result,
        "worker_id": t.worker_id or None,
        "created_at_ms": t.created_at_ms,
        "updated_at_ms": t.updated_at_ms,
    }


def _decode(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        # Set by another client as plain text.
        return value


class TaskQueue:
    """``orch.queue``: direct task lookups."""

    def __init__(self, client: orca.Client) -> None:
        self._client = client

    def get_task(self, task_id: int) -> Optional[Dict[str, Any]]:
        """The task's dict, or None when no task has this id."""
        try:
            return task_dict(self._client.get_task(int(task_id)))
        except orca.NotFound:
            return None


class ClaudeOrchestrator:
    """The guide's orchestrator. ``options``: ``coordinator``, ``token``, ``token_file``,
    ``tls_ca``, ``tls_cert``, ``tls_key`` (as `orca.Client`; by default from the ``ORCA_*``
    variables) and ``show_progress`` (False turns every progress bar off). Other options
    (the old system's ``db_path``, ...) are ignored with a warning naming them."""

    def __init__(self, orchestrator_id: str, **options: Any) -> None:
        if not isinstance(orchestrator_id, str) or not orchestrator_id:
            raise ValueError("orchestrator_id: must be a non-empty string")
        unknown = sorted(k for k in options if k not in CLIENT_OPTIONS and k != "show_progress")
        if unknown:
            warnings.warn(
                f"ClaudeOrchestrator: option(s) {', '.join(unknown)} ignored: Orca does not use them "
                f"(its queue lives in the coordinator; options are {', '.join(CLIENT_OPTIONS)}, show_progress)",
                stacklevel=2,
            )
        self.orchestrator_id = orchestrator_id
        self.show_progress = bool(options.get("show_progress", True))
        self.client = orca.Client(**{k: options[k] for k in CLIENT_OPTIONS if k in options})
        self.queue = TaskQueue(self.client)
        #: The job of the last create_job (the default scope of set_shared_context).
        self.current_job: Optional[str] = None
        # (task id, attempts) whose files were written already, so a second wait_and_collect
        # does not write them again over later edits.
        self._written: Set[Tuple[int, int]] = set()

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "ClaudeOrchestrator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Jobs and tasks

    def create_job(
        self,
        description: str,
        metadata: Optional[Mapping[str, Any]] = None,
        *,
        weight: int = 0,
        max_running: int = 0,
        budget_usd: float = 0.0,
    ) -> str:
        """Creates a job (its metadata gets ``orchestrator_id``); returns its id and makes it
        the current job.

        Orca's extras, keyword-only: the scheduling controls of `orca.Client.create_job`
        (``weight``: share of the workers against other jobs, 0 the default 1;
        ``max_running``: most tasks running at once, 0 no limit; ``budget_usd``: no new
        attempt once the job's reported cost reaches it, 0 no budget). Change them later with
        ``orch.client.update_job`` (or ``pause_job`` / ``resume_job``)."""
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata: expected a dict, got {type(metadata).__name__}")
        meta = dict(metadata or {})
        meta["orchestrator_id"] = self.orchestrator_id
        job = self.client.create_job(
            description, meta, weight=weight, max_running=max_running, budget_usd=budget_usd
        )
        self.current_job = job.job_id
        return job.job_id

    def _spec(
        self,
        prompt: str,
        working_dir: Optional[str] = None,
        context_files: Optional[Sequence[str]] = None,
        expected_outputs: Optional[Sequence[str]] = None,
        priority: Optional[int] = None,
        parent_task_id: Optional[int] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        max_retries: int = 0,
        retry_policy: Union[Mapping[str, Any], types_pb2.RetryPolicy, None] = None,
        depends_on: Optional[Sequence[int]] = None,
        verification_hooks: Optional[Sequence[Union[VerificationHook, Mapping[str, Any]]]] = None,
        auto_verify: bool = True,
        git_checkout: Optional[Union[str, "os.PathLike[str]"]] = None,
        ship_changes: bool = False,
    ) -> types_pb2.TaskSpec:
        wd = os.path.abspath(os.fspath(working_dir)) if working_dir is not None else os.getcwd()
        hooks = [_hook(h, f"verification_hooks[{i}]") for i, h in enumerate(verification_hooks or [])]
        checkout = _git_checkout(git_checkout, ship_changes)
        if checkout is not None:
            # The task runs in a worktree of the checkout: its files are named from its top.
            wd = checkout.root
        return orca.task_spec(
            prompt,
            working_dir="" if checkout is not None else wd,
            git=checkout,
            context_files=_context_files(context_files or [], wd),
            expected_outputs=list(expected_outputs or []),
            priority=priority,
            parent_task_id=parent_task_id,
            metadata=metadata,
            max_retries=max_retries,
            retry_policy=retry_policy,
            depends_on=list(depends_on or []),
            verification=hooks,
            auto_verify=auto_verify,
        )

    def add_subtask(
        self,
        job_id: str,
        prompt: str,
        working_dir: Optional[str] = None,
        context_files: Optional[Sequence[str]] = None,
        expected_outputs: Optional[Sequence[str]] = None,
        priority: Optional[int] = None,
        parent_task_id: Optional[int] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        max_retries: int = 0,
        retry_policy: Union[Mapping[str, Any], types_pb2.RetryPolicy, None] = None,
        depends_on: Optional[Sequence[int]] = None,
        verification_hooks: Optional[Sequence[Union[VerificationHook, Mapping[str, Any]]]] = None,
        auto_verify: bool = True,
        *,
        git_checkout: Optional[Union[str, "os.PathLike[str]"]] = None,
        ship_changes: bool = False,
    ) -> int:
        """Adds a task; returns its id. ``working_dir`` defaults to the current directory
        (sent absolute); ``context_files`` are read here (paths relative to the current
        directory) and sent relative to ``working_dir`` (a file outside it under its base
        name); ``priority`` None is Orca's default, 5; a task with ``parent_task_id`` waits
        until its parent completed.

        Orca's extra: with ``git_checkout`` (a path in a git checkout) the task works on
        that checkout's remote at its HEAD, in a worktree of its own on the worker
        (`orca.from_git_checkout`; ``working_dir`` is not used, context files are named from
        the checkout's top), and its change comes back as a patch
        (``wait_and_collect(..., apply=path)``). Uncommitted changes raise `orca.GitError`
        unless ``ship_changes`` sends them along."""
        spec = self._spec(
            prompt,
            working_dir,
            context_files,
            expected_outputs,
            priority,
            parent_task_id,
            metadata,
            max_retries,
            retry_policy,
            depends_on,
            verification_hooks,
            auto_verify,
            git_checkout,
            ship_changes,
        )
        return self.client.add_tasks(job_id, [spec])[0]

    def create_hierarchical_tasks(
        self, job_id: str, parent_task_id: int, subtasks: Sequence[Union[str, Mapping[str, Any]]]
    ) -> List[int]:
        """Adds children of ``parent_task_id`` in one call: each item is a prompt string or a
        dict of `add_subtask`'s keyword arguments (``prompt`` required); every child gets
        ``parent_task_id``. Returns their ids in order."""
        specs = []
        for i, s in enumerate(subtasks):
            if isinstance(s, str):
                kwargs: Dict[str, Any] = {"prompt": s}
            elif isinstance(s, Mapping):
                kwargs = dict(s)
            else:
                raise TypeError(f"subtasks[{i}]: expected a prompt string or a dict, got {type(s).__name__}")
            if "prompt" not in kwargs:
                raise ValueError(f"subtasks[{i}]: prompt is required")
            kwargs["parent_task_id"] = parent_task_id
            try:
                specs.append(self._spec(**kwargs))
            except (TypeError, ValueError) as e:
                raise type(e)(f"subtasks[{i}]: {e}") from None
        return self.client.add_tasks(job_id, specs)

    # Waiting and results

    def _write_files(self, t: types_pb2.Task) -> None:
        key = (t.task_id, t.attempts)
        if key in self._written or t.spec.HasField("git"):
            # A git task's files come back in its patch (wait_and_collect's apply).
            return
        try:
            orca.write_artifacts(t)
        except (OSError, ValueError) as e:
            warnings.warn(ArtifactSkipped(f"task {t.task_id}: files not written: {e}"), stacklevel=3)
        self._written.add(key)

    def wait_and_collect(
        self,
        job_id: str,
        poll_interval: float = 2.0,
        timeout: Optional[float] = None,
        show_progress: bool = True,
        *,
        apply: Optional[Union[str, "os.PathLike[str]"]] = None,
    ) -> Dict[int, Dict[str, Any]]:
        """Waits until every task of the job is final (following the WatchJob stream;
        ``poll_interval`` is accepted and unused), writes each completed task's files into
        its working_dir, and returns ``{task_id: task dict}``. With ``timeout`` (seconds)
        it returns the tasks final by then; the others keep running, nothing is cancelled.
        A progress bar goes to stderr unless ``show_progress`` (or the orchestrator's) is
        False. With ``apply`` (a path in a git checkout), the completed git tasks' patches
        are then applied to that checkout (`orca.apply_patches`: one commit each, in task id
        order; a patch that does not apply raises `orca.GitError`), and each git task's
        ``git_result`` says whether its patch was ``applied``."""
        show = show_progress and self.show_progress
        bar: Any = None
        last: List[Any] = [None]

        def progress(st: types_pb2.JobStatus) -> None:
            nonlocal bar
            counts = (st.total_tasks, st.completed, st.failed, st.cancelled)
            if not show or counts == last[0]:
                return
            last[0] = counts
            if bar is None:
                from tqdm import tqdm  # type: ignore[import-untyped,unused-ignore]

                bar = tqdm(total=st.total_tasks, desc=f"job {job_id[:8]}", unit="task", file=sys.stderr, dynamic_ncols=True)
            if bar.total != st.total_tasks:
                bar.total = st.total_tasks
            bar.n = st.completed + st.failed + st.cancelled
            bar.set_postfix(completed=st.completed, failed=st.failed, refresh=False)
            bar.refresh()

        try:
            self.client.wait(job_id, timeout=timeout, on_progress=progress)
        except orca.WaitTimeout as e:
            warnings.warn(f"wait_and_collect: {e}; returning the tasks finished so far", stacklevel=2)
        finally:
            if bar is not None:
                bar.close()
        results: Dict[int, Dict[str, Any]] = {}
        final: List[types_pb2.Task] = []
        for t in self.client.list_tasks(job_id):
            if not orca.is_final(t.state):
                continue
            if t.state == _COMPLETED:
                self._write_files(t)
            final.append(t)
            results[t.task_id] = task_dict(t)
        if apply is not None:
            applied = set(orca.apply_patches(apply, final).applied)
            for tid, d in results.items():
                if d["git_result"] is not None:
                    d["git_result"]["applied"] = tid in applied
        return results

    def get_job_status(self, job_id: str) -> Dict[str, Any]:
        """The guide's status keys (``progress_pct`` counts completed tasks, as the guide
        does) plus ``waiting``, ``cancelled``, ``state`` and ``description``."""
        job = self.client.get_job(job_id)
        s = job.status
        return {
            "job_id": job.job_id,
            "total_tasks": s.total_tasks,
            "completed": s.completed,
            "failed": s.failed,
            "in_progress": s.in_progress,
            "pending": s.pending,
            "progress_pct": (s.completed / s.total_tasks * 100.0) if s.total_tasks else 0.0,
            "waiting": s.waiting,
            "cancelled": s.cancelled,
            "state": orca.job_state_name(job.state),
            "description": job.description,
        }

    def get_completed_tasks(self, job_id: str) -> List[Dict[str, Any]]:
        """The tasks that completed so far (no waiting)."""
        return [task_dict(t) for t in self.client.list_tasks(job_id, states=["completed"])]

    def get_failed_tasks(self, job_id: str) -> List[Dict[str, Any]]:
        """The tasks that failed (after their retries)."""
        return [task_dict(t) for t in self.client.list_tasks(job_id, states=["failed"])]

    def retry_failed_tasks(self, job_id: str) -> List[int]:
        """Brings every failed task of the job back (with the dependents cancelled with them);
        returns their ids."""
        return self.client.retry_tasks(job_id=job_id)

    def cancel_job(self, job_id: str, reason: str = "") -> Dict[str, Any]:
        """Cancels every task of the job that is not final; returns the job's status."""
        self.client.cancel_job(job_id, reason)
        return self.get_job_status(job_id)

    # Shared context

    def set_shared_context(self, key: str, value: Any, job_id: Optional[str] = None) -> None:
        """Sets a key of the job's shared context (default: the current job; with no current
        job, or ``job_id=""``, the global context). The value is stored as its JSON text
        (``json.dumps``, strings included), so `get_shared_context` gives it back as given;
        workers show that text in every prompt."""
        scope = job_id if job_id is not None else (self.current_job or "")
        try:
            text = json.dumps(value)
        except (TypeError, ValueError) as e:
            raise ValueError(f"value: not JSON-serialisable: {e}") from None
        self.client.set_context(key, text, scope)

    def get_shared_context(self, job_id: Optional[str] = None) -> Dict[str, Any]:
        """The global context with the job's (default: the current job) over it, values
        decoded from JSON (a value that is not JSON, set by another client, comes back as
        its text)."""
        scope = job_id if job_id is not None else (self.current_job or "")
        merged = {k: _decode(v) for k, v in self.client.get_context("").items()}
        if scope:
            merged.update({k: _decode(v) for k, v in self.client.get_context(scope).items()})
        return merged

    # Synthesis

    def synthesize_results(self, results: Mapping[Any, Mapping[str, Any]], synthesis_prompt: Optional[str] = None) -> str:
        """A plain-text report of collected results (no task is run): the synthesis prompt
        first when given, then ``# Results: N tasks, C completed, F failed, X cancelled`` and
        per task its state, prompt, output, error and artifacts."""
        return synthesize_results(results, synthesis_prompt)


def _git_checkout(path: Optional[Union[str, "os.PathLike[str]"]], ship_changes: bool) -> Optional[orca.GitCheckout]:
    """`add_subtask`'s ``git_checkout`` read (with its changes when ``ship_changes``)."""
    if path is None:
        if ship_changes:
            raise ValueError("ship_changes: needs git_checkout (the checkout whose changes to ship)")
        return None
    return orca.GitCheckout.open_with_changes(path) if ship_changes else orca.GitCheckout.open(path)


def synthesize_results(results: Mapping[Any, Mapping[str, Any]], synthesis_prompt: Optional[str] = None) -> str:
    """See `ClaudeOrchestrator.synthesize_results`."""
    tasks = [results[k] for k in sorted(results)]
    count = {s: sum(1 for t in tasks if t.get("status") == s) for s in ("completed", "failed", "cancelled")}
    unfinished = len(tasks) - sum(count.values())
    head = (
        f"# Results: {len(tasks)} tasks, {count['completed']} completed, "
        f"{count['failed']} failed, {count['cancelled']} cancelled"
    )
    if unfinished:
        head += f", {unfinished} unfinished"
    lines = [head]
    for t in tasks:
        tid = t.get("task_id", t.get("id"))
        lines += ["", f"## Task {tid} ({t.get('status')})", f"Prompt: {t.get('prompt', '')}"]
        output = t.get("output")
        if output is None and isinstance(t.get("result"), str):
            output = _decode(t["result"])
        if output:
            lines += ["Output:", str(output).rstrip()]
        if t.get("status") != "completed":
            lines.append(f"Error: {t.get('error') or t.get('reason') or ''}")
        sizes = t.get("artifact_sizes") or {}
        for path in t.get("artifacts") or []:
            lines.append(f"Artifact: {path} ({sizes.get(path, 0)} bytes)")
    report = "\n".join(lines) + "\n"
    if synthesis_prompt:
        report = textwrap.dedent(synthesis_prompt).strip() + "\n\n" + report
    return report


def quick_delegate(
    tasks: Sequence[Union[str, Mapping[str, Any]]],
    orchestrator_id: str = "quick_orch",
    priority: int = 5,
    **options: Any,
) -> Dict[int, Dict[str, Any]]:
    """Runs a list of prompts as one job and returns the same dict as
    `ClaudeOrchestrator.wait_and_collect`. An item may also be a dict of `add_subtask`'s
    keyword arguments. ``options`` go to `ClaudeOrchestrator`."""
    if isinstance(tasks, (str, bytes)):
        raise TypeError("tasks: expected a list of prompts, got a single string")
    items = list(tasks)
    if not items:
        return {}
    with ClaudeOrchestrator(orchestrator_id, **options) as orch:
        job = orch.create_job(f"Quick delegation of {len(items)} tasks")
        specs = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                kwargs: Dict[str, Any] = {"prompt": item}
            elif isinstance(item, Mapping):
                kwargs = dict(item)
            else:
                raise TypeError(f"tasks[{i}]: expected a prompt string or a dict, got {type(item).__name__}")
            kwargs.setdefault("priority", priority)
            try:
                specs.append(orch._spec(**kwargs))
            except (TypeError, ValueError) as e:
                raise type(e)(f"tasks[{i}]: {e}") from None
        orch.client.add_tasks(job, specs)
        return orch.wait_and_collect(job)
