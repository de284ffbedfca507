#!/usr/bin/env python3
"""The guide's Pattern 3: Adaptive Workflow."""

import json
import time

from orchestrator import ClaudeOrchestrator

orch = ClaudeOrchestrator("adaptive")
job = orch.create_job("Refactor codebase")

# Step 1: Analysis
analysis_task = orch.add_subtask(
    job,
    "Analyze codebase and identify issues",
    priority=10
)

# Wait for just the analysis
while True:
    task = orch.queue.get_task(analysis_task)
    if task['status'] == 'completed':
        # Read analysis results
        analysis = json.loads(task['result'])
        break
    time.sleep(2)

# Step 2: Based on analysis, create targeted refactoring tasks
# (Claude reads analysis and decides what to do)
if "performance issues" in analysis:
    orch.add_subtask(job, "Optimize database queries", priority=8)

if "security vulnerabilities" in analysis:
    orch.add_subtask(job, "Fix security issues", priority=10)

results = orch.wait_and_collect(job)

for task_id, r in sorted(results.items()):
    print(f"{task_id} {r['status']} {r['prompt']}")
assert all(r["status"] == "completed" for r in results.values()), results
