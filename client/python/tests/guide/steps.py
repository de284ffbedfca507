#!/usr/bin/env python3
"""The guide's "How to Use This System", steps 1 to 5, as one script."""

from orchestrator import ClaudeOrchestrator

# Step 1: Import the Orchestrator
# Create orchestrator instance
orch = ClaudeOrchestrator("my_orchestrator_id")

# Step 2: Create a Job
# Create a job for a high-level goal
job_id = orch.create_job("Build authentication system for web app")

# Step 3: Decompose into Sub-tasks
# Break down the goal into parallel sub-tasks
orch.add_subtask(
    job_id,
    "Implement user login endpoint with JWT",
    priority=10,
    context_files=["src/routes/auth.js"],
    expected_outputs=["src/routes/auth.js"]
)

orch.add_subtask(
    job_id,
    "Implement user registration endpoint",
    priority=10,
    expected_outputs=["src/routes/register.js"]
)

orch.add_subtask(
    job_id,
    "Create authentication middleware",
    priority=9,
    expected_outputs=["src/middleware/auth.js"]
)

orch.add_subtask(
    job_id,
    "Write unit tests for auth endpoints",
    priority=5,
    expected_outputs=["tests/auth.test.js"]
)

# Step 4: Wait for Completion
# Wait for all tasks to complete and collect results
results = orch.wait_and_collect(job_id, show_progress=True)

# Results is a dictionary: {task_id: {result_data}}

# Step 5: Synthesize Results
# Format results for synthesis
synthesis = orch.synthesize_results(
    results,
    synthesis_prompt="Review the authentication implementation and suggest improvements"
)

# Now you can analyze the synthesis and provide final response to user
print(synthesis)

assert len(results) == 4 and all(r["status"] == "completed" for r in results.values()), results
