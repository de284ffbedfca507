#!/usr/bin/env python3
"""
Example: Claude Code acting as orchestrator
"""

from orchestrator import ClaudeOrchestrator

def main():
    # You are Claude Code, and the user asked:
    # "Build a task management API with CRUD operations"

    print("Breaking down your request into sub-tasks...")

    orch = ClaudeOrchestrator("claude_main")
    job = orch.create_job("Build task management API with CRUD")

    # Decompose
    orch.add_subtask(
        job,
        "Create Express.js server with basic setup",
        priority=10,
        expected_outputs=["server.js"]
    )

    orch.add_subtask(
        job,
        "Implement GET /tasks endpoint to list all tasks",
        priority=8,
        expected_outputs=["routes/tasks.js"]
    )

    orch.add_subtask(
        job,
        "Implement POST /tasks endpoint to create task",
        priority=8,
        expected_outputs=["routes/tasks.js"]
    )

    orch.add_subtask(
        job,
        "Implement PUT /tasks/:id endpoint to update task",
        priority=7,
        expected_outputs=["routes/tasks.js"]
    )

    orch.add_subtask(
        job,
        "Implement DELETE /tasks/:id endpoint",
        priority=7,
        expected_outputs=["routes/tasks.js"]
    )

    orch.add_subtask(
        job,
        "Write integration tests for all endpoints",
        priority=5,
        expected_outputs=["tests/tasks.test.js"]
    )

    print("\nDelegating to worker pool...")
    results = orch.wait_and_collect(job, show_progress=True)

    # Synthesize
    synthesis = orch.synthesize_results(
        results,
        synthesis_prompt="""
        Review the implementation and provide:
        1. Summary of what was built
        2. Any issues or improvements needed
        3. Next steps for the user
        """
    )

    print("\n" + "="*70)
    print("FINAL REPORT")
    print("="*70)
    print(synthesis)

if __name__ == '__main__':
    main()
