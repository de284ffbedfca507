#!/usr/bin/env python3
"""The guide's Pattern 1: Simple Parallel Execution."""

from orchestrator import ClaudeOrchestrator

orch = ClaudeOrchestrator("parallel_tasks")
job = orch.create_job("Generate utility functions")

orch.add_subtask(job, "Create factorial function", priority=5)
orch.add_subtask(job, "Create fibonacci function", priority=5)
orch.add_subtask(job, "Create prime checker function", priority=5)

results = orch.wait_and_collect(job)

for task_id, r in sorted(results.items()):
    print(f"{task_id} {r['status']} {r['prompt']}")
assert len(results) == 3 and all(r["status"] == "completed" for r in results.values()), results
