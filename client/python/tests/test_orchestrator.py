"""The compatibility module `orchestrator` (the guide's API) against the shared cluster."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import orca
from orca.v1 import types_pb2
from orchestrator import ClaudeOrchestrator, VerificationHook, quick_delegate

from conftest import Cluster

GUIDE_KEYS = {"id", "job_id", "prompt", "status", "result", "error", "priority", "parent_task_id", "working_dir",
              "expected_outputs", "metadata", "attempts"}


@pytest.fixture
def orch(cluster: Cluster, project: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """An orchestrator configured from ORCA_COORDINATOR, in an empty project directory."""
    monkeypatch.setenv("ORCA_COORDINATOR", cluster.url)
    monkeypatch.chdir(project)
    o = ClaudeOrchestrator("test_orch", show_progress=False)
    yield o
    o.close()


def test_unknown_options_are_warned_about_and_ignored(cluster: Cluster) -> None:
    with pytest.warns(UserWarning, match=r"option\(s\) db_path, max_workers ignored"):
        o = ClaudeOrchestrator("old", db_path="/tmp/queue.db", max_workers=4, coordinator=cluster.url)
    assert o.client.coordinator == cluster.url
    o.close()
    with pytest.raises(orca.ConfigError, match="^coordinator:"):
        ClaudeOrchestrator("bad", coordinator="localhost:1")


def test_create_job_records_the_orchestrator_and_becomes_current(orch: ClaudeOrchestrator) -> None:
    job = orch.create_job("Build authentication system", metadata={"ticket": "T-1"})
    assert isinstance(job, str) and orch.current_job == job
    meta = orca.from_struct(orch.client.get_job(job).metadata)
    assert meta == {"ticket": "T-1", "orchestrator_id": "test_orch"}


def test_add_subtask_sends_what_the_guide_names(orch: ClaudeOrchestrator, project: Path, tmp_path: Path) -> None:
    (project / "src/routes").mkdir(parents=True)
    (project / "src/routes/auth.js").write_text("// old login code\n")
    notes = tmp_path / "notes.md"
    notes.write_text("outside the project\n")
    job = orch.create_job("auth")
    tid = orch.add_subtask(
        job,
        "Implement user login endpoint with JWT",
        priority=10,
        context_files=["src/routes/auth.js", str(notes)],
        expected_outputs=["src/routes/auth.js"],
        metadata={"area": "auth"},
        max_retries=2,
        retry_policy={"initial_backoff_ms": 100, "multiplier": 2, "max_backoff_ms": 1000},
        verification_hooks=[VerificationHook("test -s src/routes/auth.js", "output exists", timeout=30),
                            {"command": "true", "description": "always"}],
        auto_verify=False,
    )
    assert isinstance(tid, int)
    spec = orch.client.get_task(tid).spec
    assert spec.working_dir == str(project)
    assert [(f.path, f.contents) for f in spec.context_files] == [
        ("src/routes/auth.js", b"// old login code\n"),
        ("notes.md", b"outside the project\n"),
    ], "relative to working_dir; a file outside it under its base name"
    assert spec.priority == 10 and spec.max_retries == 2 and spec.retry_policy.initial_backoff_ms == 100
    assert [(h.command, h.timeout_seconds, h.fail_on_error) for h in spec.verification] == [
        ("test -s src/routes/auth.js", 30, True),
        ("true", 300, True),
    ]
    assert not spec.auto_verify

    results = orch.wait_and_collect(job, show_progress=False)
    r = results[tid]
    assert GUIDE_KEYS <= set(r) and r["task_id"] == tid
    assert r["status"] == "completed" and r["error"] is None and r["attempts"] == 1
    text = json.loads(r["result"])
    assert text == r["output"] and text.startswith("done: Implement user login endpoint with JWT")
    assert "context file src/routes/auth.js: 18 bytes, first line '// old login code'" in text
    assert "context file notes.md: 20 bytes" in text
    assert r["working_dir"] == str(project) and r["expected_outputs"] == ["src/routes/auth.js"]
    assert r["metadata"] == {"area": "auth"} and r["priority"] == 10 and r["parent_task_id"] is None
    assert r["artifacts"] == ["src/routes/auth.js"] and [v["passed"] for v in r["verification"]] == [True, True]
    # The agent rewrote the expected output in its own workspace; the file came back here.
    assert (project / "src/routes/auth.js").read_text().startswith("// Implement user login endpoint with JWT")


def test_add_subtask_refuses_unreadable_context_files_and_defaults_to_the_guides_values(orch: ClaudeOrchestrator) -> None:
    job = orch.create_job("defaults")
    with pytest.raises(ValueError, match=r"^context_files\[0\]: cannot read missing.txt"):
        orch.add_subtask(job, "x", context_files=["missing.txt"])
    tid = orch.add_subtask(job, "plain", working_dir="sub")
    spec = orch.client.get_task(tid).spec
    assert spec.working_dir == os.path.join(os.getcwd(), "sub"), "made absolute"
    assert spec.priority == 5 and spec.max_retries == 0 and spec.auto_verify
    orch.client.cancel_job(job)


def test_hierarchical_tasks_wait_for_their_parent(orch: ClaudeOrchestrator) -> None:
    job = orch.create_job("Build and test API")
    api = orch.add_subtask(job, "SLEEP=0.3 Implement REST API", priority=10)
    kids = orch.create_hierarchical_tasks(job, api, ["Write API tests", {"prompt": "Generate API docs", "priority": 3}])
    assert len(kids) == 2
    for k in kids:
        assert orch.client.get_task(k).spec.parent_task_id == api
    results = orch.wait_and_collect(job)
    assert {r["status"] for r in results.values()} == {"completed"}
    assert [results[k]["parent_task_id"] for k in kids] == [api, api]
    assert results[kids[1]]["priority"] == 3
    api_done = orch.client.get_task(api).updated_at_ms
    assert all(orch.client.get_task(k).created_at_ms <= api_done <= orch.client.get_task(k).updated_at_ms for k in kids)
    with pytest.raises(ValueError, match=r"^subtasks\[0\]: prompt is required"):
        orch.create_hierarchical_tasks(job, api, [{"priority": 1}])


def test_status_lists_retry_and_the_guides_progress(orch: ClaudeOrchestrator) -> None:
    job = orch.create_job("mixed")
    ok = orch.add_subtask(job, "works")
    bad = orch.add_subtask(job, "FAIL_ONCE flaky")
    child = orch.add_subtask(job, "after the flaky one", depends_on=[bad])
    results = orch.wait_and_collect(job)
    assert (results[ok]["status"], results[bad]["status"], results[child]["status"]) == ("completed", "failed", "cancelled")
    assert results[bad]["result"] is None and "failing attempt 1" in results[bad]["error"]
    assert results[child]["error"], "a cancelled task says why"

    status = orch.get_job_status(job)
    assert {k: status[k] for k in ("job_id", "total_tasks", "completed", "failed", "in_progress", "pending")} == {
        "job_id": job, "total_tasks": 3, "completed": 1, "failed": 1, "in_progress": 0, "pending": 0}
    assert status["progress_pct"] == pytest.approx(100 / 3), "completed tasks only, as the guide counts"
    assert (status["waiting"], status["cancelled"], status["state"]) == (0, 1, "failed")

    completed = orch.get_completed_tasks(job)
    assert [t["id"] for t in completed] == [ok] and json.loads(completed[0]["result"]).startswith("done: works")
    failed = orch.get_failed_tasks(job)
    assert [t["id"] for t in failed] == [bad] and GUIDE_KEYS <= set(failed[0])

    assert sorted(orch.retry_failed_tasks(job)) == [bad, child]
    results = orch.wait_and_collect(job)
    assert {r["status"] for r in results.values()} == {"completed"}
    assert results[bad]["attempts"] == 2
    assert orch.get_job_status(job)["progress_pct"] == 100.0


def test_shared_context_round_trips_and_reaches_the_agent(orch: ClaudeOrchestrator, cluster: Cluster) -> None:
    other = ClaudeOrchestrator("ctx_global", coordinator=cluster.url, show_progress=False)
    other.set_shared_context("py_style", "pep8")  # no current job: global
    job = orch.create_job("context")
    values = {"lang": "python", "version": "3", "n": 3, "flags": {"strict": True}, "list": [1, "a"], "none": None}
    for k, v in values.items():
        orch.set_shared_context(k, v)  # the current job
    ctx = orch.get_shared_context()
    assert {k: ctx[k] for k in values} == values, "what goes in comes back, strings included"
    assert ctx["py_style"] == "pep8", "the global context under the job's"
    orch.set_shared_context("py_style", "black", job_id=job)
    assert orch.get_shared_context(job)["py_style"] == "black"
    assert other.get_shared_context()["py_style"] == "pep8"
    orch.client.set_context("plain", "set by another client", job)
    assert orch.get_shared_context()["plain"] == "set by another client"

    tid = orch.add_subtask(job, "what do you know")
    out = orch.wait_and_collect(job)[tid]["output"]
    assert 'context job.lang: "python"' in out and "context job.n: 3" in out
    orch.client.set_context("py_style", "", "")
    other.close()


def test_queue_get_task(orch: ClaudeOrchestrator) -> None:
    assert orch.queue.get_task(987654321) is None
    job = orch.create_job("queue")
    tid = orch.add_subtask(job, "look me up", metadata={"m": 1})
    t = orch.queue.get_task(tid)
    assert t is not None and t["id"] == tid and t["prompt"] == "look me up" and t["metadata"] == {"m": 1}
    assert t["status"] in ("pending", "in_progress", "completed")
    orch.wait_and_collect(job)
    assert orch.queue.get_task(tid)["status"] == "completed"


def test_synthesize_results_layout(orch: ClaudeOrchestrator) -> None:
    job = orch.create_job("synthesis")
    a = orch.add_subtask(job, "first", expected_outputs=["out/a.txt"])
    b = orch.add_subtask(job, "FAIL_ONCE second")
    results = orch.wait_and_collect(job)
    size = results[a]["artifact_sizes"]["out/a.txt"]
    report = orch.synthesize_results(results, synthesis_prompt="\n    Review the work.\n    ")
    expected = (
        "Review the work.\n\n"
        "# Results: 2 tasks, 1 completed, 1 failed, 0 cancelled\n\n"
        f"## Task {a} (completed)\nPrompt: first\nOutput:\n{results[a]['output'].rstrip()}\n"
        f"Artifact: out/a.txt ({size} bytes)\n\n"
        f"## Task {b} (failed)\nPrompt: FAIL_ONCE second\nError: {results[b]['error']}\n"
    )
    assert report == expected
    assert orch.synthesize_results(results).startswith("# Results: 2 tasks")


def test_wait_and_collect_shows_progress_and_writes_files_once(cluster: Cluster, project: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(project)
    o = ClaudeOrchestrator("progress", coordinator=cluster.url)
    job = o.create_job("files")
    tid = o.add_subtask(job, "make a file", expected_outputs=["made.txt"], priority=7)
    results = o.wait_and_collect(job, poll_interval=0.01)
    assert results[tid]["status"] == "completed"
    err = capsys.readouterr().err
    assert "job " in err and "1/1" in err, err
    assert (project / "made.txt").read_text().startswith("// make a file")
    (project / "made.txt").write_text("edited after collecting")
    o.wait_and_collect(job, show_progress=False)
    assert (project / "made.txt").read_text() == "edited after collecting", "collected files are not written again"
    o.close()


def test_wait_and_collect_timeout_returns_what_finished_and_cancels_nothing(orch: ClaudeOrchestrator) -> None:
    job = orch.create_job("partial")
    fast = orch.add_subtask(job, "fast")
    slow = orch.add_subtask(job, "SLEEP=30 slow")
    # Let the fast one finish first.
    for ev in orch.client.watch_job(job):
        if ev.task_id == fast and ev.state == types_pb2.TASK_STATE_COMPLETED:
            break
    with pytest.warns(UserWarning, match="not finished after 0.5 s"):
        results = orch.wait_and_collect(job, timeout=0.5)
    assert list(results) == [fast]
    assert orch.queue.get_task(slow)["status"] in ("pending", "in_progress")
    orch.client.cancel_job(job)


def test_quick_delegate(cluster: Cluster, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCA_COORDINATOR", cluster.url)
    monkeypatch.chdir(project)
    results = quick_delegate(["Create Python factorial function", "Create Python fibonacci function"],
                             show_progress=False)
    assert sorted(r["prompt"] for r in results.values()) == ["Create Python factorial function", "Create Python fibonacci function"]
    assert {r["status"] for r in results.values()} == {"completed"} and {r["priority"] for r in results.values()} == {5}
    job = next(iter(results.values()))["job_id"]
    with orca.Client(cluster.url) as c:
        assert orca.from_struct(c.get_job(job).metadata) == {"orchestrator_id": "quick_orch"}
    assert quick_delegate([]) == {}
