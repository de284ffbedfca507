"""A stand-in agent for the tests, run by ``orca-worker --agent command``: reads the composed
prompt on stdin, acts on markers in the task's text, creates the expected outputs and prints
what it saw, so tests can check what reached the agent.

Markers in the task text:
- ``SLEEP=<seconds>``: work that long first;
- ``FAIL_ALWAYS``: exit 3;
- ``FAIL_ONCE``: exit 3 on attempt 1 (``ORCA_ATTEMPT``), succeed after;
- ``Analyze``: answer with an analysis naming performance issues and security vulnerabilities
  (the guide's adaptive pattern reads them);
- a task starting with ``sh:``: run the rest of the task with ``sh -c`` in the working
  directory (a git task's worktree) first; its output is printed, a non-zero exit is the
  agent's.

Its output: ``done: <first line of the task> (task N, attempt A)``, then ``cwd <dir>``, the
shared context lines, each context file's size and first line, the ``## Previous attempt``
section verbatim, and ``inode <path> <n>`` for each output it wrote.
"""

import os
import re
import subprocess
import sys
import time

HEADERS = ("## Shared context", "## Context files", "## Expected outputs", "## Previous attempt", "## Task")


def sections(prompt: str) -> dict:
    """The prompt's sections by header; a prompt without any is all task."""
    lines = prompt.split("\n")
    out: dict = {}
    current = None
    for line in lines:
        if line.rstrip() in HEADERS:
            current = line.rstrip()
            out[current] = []
        elif current is not None:
            out[current].append(line)
    if "## Task" not in out:
        out["## Task"] = lines
    return {k: "\n".join(v).strip("\n") for k, v in out.items()}


def listed(section: str) -> list:
    return [line[2:] for line in section.split("\n") if line.startswith("- ")]


def main() -> int:
    prompt = sys.stdin.read()
    s = sections(prompt)
    task = s["## Task"]
    first = task.split("\n", 1)[0]
    task_id = os.environ.get("ORCA_TASK_ID", "?")
    attempt = int(os.environ.get("ORCA_ATTEMPT", "1"))

    m = re.search(r"SLEEP=(\d+(?:\.\d+)?)", task)
    if m:
        time.sleep(float(m.group(1)))
    if "FAIL_ALWAYS" in task:
        print(f"failing task {task_id} on purpose (attempt {attempt})", file=sys.stderr)
        return 3
    if "FAIL_ONCE" in task and attempt == 1:
        print(f"failing attempt 1 of task {task_id} on purpose", file=sys.stderr)
        return 3

    if task.startswith("sh:"):
        sh = subprocess.run(["sh", "-c", task[3:]], stdin=subprocess.DEVNULL)
        if sh.returncode != 0:
            print(f"sh: exit {sh.returncode}", file=sys.stderr)
            return sh.returncode
    out = [f"done: {first} (task {task_id}, attempt {attempt})", f"cwd {os.getcwd()}"]
    if "Analyze" in task:
        out.append("Analysis: performance issues in the database queries; security vulnerabilities in the login form")
    for line in s.get("## Shared context", "").split("\n"):
        if line.startswith("- "):
            out.append(f"context {line[2:]}")
    for entry in listed(s.get("## Context files", "")):
        path = re.sub(r" \(\d+ bytes\)$", "", entry)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                data = f.read()
            out.append(f"context file {path}: {len(data.encode())} bytes, first line {data.split(chr(10), 1)[0]!r}")
        except OSError as e:
            out.append(f"context file {path}: missing ({e.strerror})")
    if "## Previous attempt" in s:
        out.append("## Previous attempt")
        out.append(s["## Previous attempt"])
    for path in listed(s.get("## Expected outputs", "")):
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, exist_ok=True)
        with open(path, "w") as f:
            f.write(f"// {first}\n// written by the test agent for task {task_id}\n")
        out.append(f"inode {path} {os.stat(path).st_ino}")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
