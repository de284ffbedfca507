#!/usr/bin/env bash
# A stand-in agent for the demo (no Claude Code needed): reads its prompt on stdin, works for
# a moment, creates the expected outputs the prompt lists, and prints a one-line answer.
set -euo pipefail
prompt=$(cat)
task=$(printf '%s\n' "$prompt" | awk '/^## Task$/ {f = 1; next} f' | head -n 1)
[ -n "$task" ] || task=$(printf '%s\n' "$prompt" | head -n 1)
sleep "0.$((RANDOM % 5))"
printf '%s\n' "$prompt" | awk '/^## Expected outputs$/ {f = 1; next} /^## / {f = 0} f && /^- / {print substr($0, 3)}' |
  while IFS= read -r path; do
    mkdir -p "$(dirname "$path")"
    printf '// %s\n// written by the demo agent for task %s\n' "$task" "${ORCA_TASK_ID:-?}" >"$path"
  done
echo "done: $task (task ${ORCA_TASK_ID:-?}, attempt ${ORCA_ATTEMPT:-?})"
