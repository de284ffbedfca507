"""The guide's code, unchanged but for imports and a closing check, run as scripts
(tests/guide/*.py import only `orchestrator`) in a project directory with ORCA_COORDINATOR
set, as a caller would run them."""

from __future__ import annotations

import re
from pathlib import Path


def test_steps_one_to_five(run_guide, project: Path) -> None:  # type: ignore[no-untyped-def]
    (project / "src/routes").mkdir(parents=True)
    (project / "src/routes/auth.js").write_text("// the login route as it was\n")
    out = run_guide("steps.py", project).stdout
    assert out.startswith("Review the authentication implementation and suggest improvements\n\n# Results: 4 tasks, 4 completed")
    assert "context file src/routes/auth.js: 29 bytes, first line '// the login route as it was'" in out
    for path, prompt in [
        ("src/routes/auth.js", "Implement user login endpoint with JWT"),
        ("src/routes/register.js", "Implement user registration endpoint"),
        ("src/middleware/auth.js", "Create authentication middleware"),
        ("tests/auth.test.js", "Write unit tests for auth endpoints"),
    ]:
        assert (project / path).read_text().startswith(f"// {prompt}\n"), path


def test_pattern_1_parallel(run_guide, project: Path) -> None:  # type: ignore[no-untyped-def]
    out = run_guide("pattern1_parallel.py", project).stdout
    assert re.findall(r"^\d+ (\w+) (.*)$", out, re.M) == [
        ("completed", "Create factorial function"),
        ("completed", "Create fibonacci function"),
        ("completed", "Create prime checker function"),
    ]


def test_pattern_2_hierarchical(run_guide, project: Path) -> None:  # type: ignore[no-untyped-def]
    proc = run_guide("pattern2_hierarchical.py", project)
    assert len(re.findall(r"^\d+ completed parent=", proc.stdout, re.M)) == 3
    assert "3/3" in proc.stderr, "the progress bar is on stderr"


def test_pattern_3_adaptive(run_guide, project: Path) -> None:  # type: ignore[no-untyped-def]
    out = run_guide("pattern3_adaptive.py", project).stdout
    assert [p for _, p in re.findall(r"^\d+ (\w+) (.*)$", out, re.M)] == [
        "Analyze codebase and identify issues",
        "Optimize database queries",
        "Fix security issues",
    ], "the analysis named both, so both follow-up tasks were added and ran"


def test_pattern_4_quick_delegate(run_guide, project: Path) -> None:  # type: ignore[no-untyped-def]
    out = run_guide("pattern4_quick_delegate.py", project).stdout
    assert len(re.findall(r"^\d+ completed Create Python", out, re.M)) == 3


def test_retry_failed_tasks_monitor_and_partial_results(run_guide, project: Path) -> None:  # type: ignore[no-untyped-def]
    out = run_guide("retry_failed.py", project).stdout
    assert "Retrying 1 failed tasks..." in out
    assert "Progress: 100.0%\nCompleted: 2/2\n" in out
    assert len(re.findall(r"^Task \d+: ", out, re.M)) == 2
    # The retry's prompt quotes the failure of the first attempt.
    assert "## Previous attempt" in out and "failing attempt 1 of task" in out
    assert (project / "flaky.py").read_text().startswith("// FAIL_ONCE Create the flaky module")
    assert (project / "stable.py").exists()


def test_full_orchestrator_session(run_guide, project: Path) -> None:  # type: ignore[no-untyped-def]
    out = run_guide("full_session.py", project).stdout
    assert out.startswith("Breaking down your request into sub-tasks...\n\nDelegating to worker pool...\n")
    report = out.split("FINAL REPORT\n" + "=" * 70 + "\n", 1)[1]
    assert report.startswith("Review the implementation and provide:\n1. Summary of what was built\n")
    assert "# Results: 6 tasks, 6 completed, 0 failed, 0 cancelled" in report
    assert report.count("Artifact: routes/tasks.js") == 4
    assert (project / "server.js").read_text().startswith("// Create Express.js server with basic setup")
    assert (project / "tests/tasks.test.js").exists()
    # Four tasks wrote routes/tasks.js, an expected output of each: one of them is there.
    assert (project / "routes/tasks.js").read_text().startswith("// Implement ")
