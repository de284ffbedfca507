# Sourced by the scenario scripts (partition.sh, leader-partition.sh). Each failed check adds
# one to `failures`, which the script reads at its end.
#
#   check DESCRIPTION COMMAND...          runs COMMAND once: "ok" or "FAILED"
#   wait_until SECONDS DESCRIPTION CMD... runs CMD every 0.2 s until it succeeds; FAILED (and
#                                         status 1) when SECONDS pass first
failures=${failures:-0}

check() {
  local what=$1
  shift
  if "$@"; then
    echo "   ok: $what"
  else
    echo "   FAILED: $what"
    failures=$((failures + 1))
  fi
}

wait_until() {
  local limit=$1 what=$2
  shift 2
  local end=$((SECONDS + limit))
  until "$@"; do
    if [ "$SECONDS" -ge "$end" ]; then
      echo "   FAILED: $what (not within ${limit}s)"
      failures=$((failures + 1))
      return 1
    fi
    sleep 0.2
  done
}
