"""Files and retries through real workers: artifacts land in the caller's working_dir when
the worker ran elsewhere, are left alone when it ran in place (``--allow-dir`` on a shared
filesystem, ``result.in_place``), and a retry's prompt quotes the previous failure."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import orca
from orca.v1 import types_pb2
from orchestrator import ClaudeOrchestrator

from conftest import Cluster


def inode_reported(output: str, path: str) -> int:
    m = re.search(rf"^inode {re.escape(path)} (\d+)$", output, re.M)
    assert m, output
    return int(m.group(1))


def test_artifacts_are_written_into_working_dir_by_a_worker_that_does_not_share_it(
    client: orca.Client, cluster: Cluster, project: Path
) -> None:
    (project / "keep.txt").write_text("mine")
    job = client.create_job("not shared").job_id
    (tid,) = client.add_tasks(
        job, [{"prompt": "generate", "working_dir": str(project), "expected_outputs": ["gen/out.txt"]}]
    )
    client.wait(job, timeout=60)
    t = client.get_task(tid)
    assert t.state == types_pb2.TASK_STATE_COMPLETED
    assert not t.result.in_place
    cwd = re.search(r"^cwd (.*)$", t.result.output, re.M).group(1)  # type: ignore[union-attr]
    assert cwd.startswith(str(cluster.root)) and cwd != str(project), "ran in a fresh workspace"
    assert not (project / "gen").exists(), "nothing there until the client writes it"
    assert orca.write_artifacts(t) == [str(project / "gen/out.txt")]
    assert (project / "gen/out.txt").read_text() == f"// generate\n// written by the test agent for task {tid}\n"
    assert (project / "keep.txt").read_text() == "mine"


def test_in_place_results_are_not_rewritten(make_cluster, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    shared = make_cluster("shared").start()
    shared.add_worker("w-shared", args=["--allow-dir", str(project)])
    monkeypatch.chdir(project)
    with ClaudeOrchestrator("shared_fs", coordinator=shared.url, show_progress=False) as orch:
        job = orch.create_job("in place")
        tid = orch.add_subtask(job, "write here", expected_outputs=["out/here.txt"])
        results = orch.wait_and_collect(job)
        r = results[tid]
        assert r["status"] == "completed"
        assert r["in_place"], "the worker ran in the project directory itself"
        assert f"cwd {project}" in r["output"]
        # The file the agent made is the one there: same inode, not replaced by a copy.
        assert os.stat(project / "out/here.txt").st_ino == inode_reported(r["output"], "out/here.txt")
        t = orch.client.get_task(tid)
        assert t.result.in_place and orca.write_artifacts(t) == []


def test_a_retry_prompt_quotes_the_previous_attempts_error(client: orca.Client) -> None:
    job = client.create_job("retry prompt").job_id
    (tid,) = client.add_tasks(
        job, [{"prompt": "FAIL_ONCE then fine", "max_retries": 1, "retry_policy": {"initial_backoff_ms": 100}}]
    )
    status = client.wait(job, timeout=60)
    assert status.completed == 1
    t = client.get_task(tid)
    assert (t.attempts, t.retries_used) == (2, 1)
    assert "done: FAIL_ONCE then fine (task %d, attempt 2)" % tid in t.result.output
    section = t.result.output.split("## Previous attempt\n", 1)[1]
    assert section.startswith("The previous attempt failed with: ")
    assert f"failing attempt 1 of task {tid} on purpose" in section
