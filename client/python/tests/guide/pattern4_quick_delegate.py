#!/usr/bin/env python3
"""The guide's Pattern 4: Quick Delegation."""

from orchestrator import quick_delegate

results = quick_delegate([
    "Create Python factorial function",
    "Create Python fibonacci function",
    "Create Python prime checker"
])

# That's it! Results collected automatically
for task_id, r in sorted(results.items()):
    print(f"{task_id} {r['status']} {r['prompt']}")
assert len(results) == 3 and all(r["status"] == "completed" for r in results.values()), results
