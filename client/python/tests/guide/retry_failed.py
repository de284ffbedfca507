#!/usr/bin/env python3
"""The guide's Advanced Features: Retry Failed Tasks, Monitor Progress, Get Partial Results.
(The test agent fails a task whose prompt says FAIL_ONCE on its first attempt.)"""

import json

from orchestrator import ClaudeOrchestrator

orch = ClaudeOrchestrator("retry_demo")
job = orch.create_job("Flaky work")
orch.add_subtask(job, "FAIL_ONCE Create the flaky module", expected_outputs=["flaky.py"])
orch.add_subtask(job, "Create the stable module", expected_outputs=["stable.py"])

# Retry Failed Tasks
results = orch.wait_and_collect(job)

# Check for failures
failed = orch.get_failed_tasks(job)
if failed:
    print(f"Retrying {len(failed)} failed tasks...")
    orch.retry_failed_tasks(job)
    results = orch.wait_and_collect(job)

# Monitor Progress
# Check status without blocking
status = orch.get_job_status(job)
print(f"Progress: {status['progress_pct']}%")
print(f"Completed: {status['completed']}/{status['total_tasks']}")

# Get Partial Results
# Don't wait - just get what's completed so far
completed_tasks = orch.get_completed_tasks(job)

for task in completed_tasks:
    print(f"Task {task['id']}: {task['prompt']}")
    result = json.loads(task['result'])
    print(f"  Result: {result}")
