#!/usr/bin/env python3
"""The guide's Pattern 2: Hierarchical Decomposition."""

from orchestrator import ClaudeOrchestrator

orch = ClaudeOrchestrator("hierarchical")
job = orch.create_job("Build and test API")

# Parent task
api_task = orch.add_subtask(job, "Implement REST API", priority=10)

# Child tasks (depend on parent)
orch.add_subtask(
    job,
    "Write API tests",
    priority=5,
    parent_task_id=api_task  # Links to parent
)

orch.add_subtask(
    job,
    "Generate API documentation",
    priority=3,
    parent_task_id=api_task
)

results = orch.wait_and_collect(job)

for task_id, r in sorted(results.items()):
    print(f"{task_id} {r['status']} parent={r['parent_task_id']} {r['prompt']}")
assert len(results) == 3 and all(r["status"] == "completed" for r in results.values()), results
assert sorted(r["parent_task_id"] for r in results.values() if r["id"] != api_task) == [api_task, api_task]
