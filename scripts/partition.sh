#!/usr/bin/env bash
# Partition test (docs/resilience.md; invariants 2, 3 and 7 of docs/design.md). In network
# namespaces made here, a worker is cut off from the coordinator by an nftables drop rule
# while it runs a task:
#   - the task is re-queued when its lease expires and completes on the other worker;
#   - when the cut heals, the cut-off worker's late report of its (finished) attempt is
#     rejected, the task keeps the other worker's result;
#   - the cut-off worker rejoins and takes new work.
# Layout: namespace orca-pc holds the coordinator (10.213.7.1:50051) and worker B; namespace
# orca-pw holds worker A; a veth pair joins them (10.213.7.1/30 <-> 10.213.7.2/30). Traffic
# only goes to loopback and to those two addresses. Everything made here (namespaces, veth,
# nftables table, processes) is removed on exit, also on failure.
#
#   sudo scripts/partition.sh            # debug build (what CI runs)
#   sudo scripts/partition.sh --release
# Needs root: without it the script fails (exit 2) and says so; a check that cannot run never passes.
# Installs what is missing with apt-get (nftables, iproute2, python3; scripts/lib/need.sh).
# Environment: PARTITION_LEASE_SECONDS (default 4),
# PARTITION_TASK_SECONDS (how long the cut-off task runs, default 8),
# PARTITION_MAX_LEASE_LOSSES (the coordinator's flag, default 3), PARTITION_WORKER_LOG (the
# workers' ORCA_LOG), PARTITION_KEEP=1 keeps the run directory.
# The "zombie" case (Listen stream gone, heartbeats still arriving) cannot be made with a drop
# rule on one HTTP/2 connection; the Rust e2e test
# zombie_worker_heartbeating_without_a_stream_loses_its_lease (tests/tests/coordinator.rs)
# covers it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "partition.sh: FAILED: needs root (network namespaces and nftables); run it with sudo" >&2
  exit 2
fi

profile=debug
for a in "$@"; do
  case "$a" in
    --release) profile=release ;;
    --debug) profile=debug ;;
    *) echo "partition.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done
LEASE=${PARTITION_LEASE_SECONDS:-4}
LONG=${PARTITION_TASK_SECONDS:-8}
NS_C=orca-pc
NS_W=orca-pw
VETH_C=orca-pc0
VETH_W=orca-pw0
ADDR_C=10.213.7.1
ADDR_W=10.213.7.2
PORT=50051
export ORCA_COORDINATOR="http://$ADDR_C:$PORT"
export NO_COLOR=1

. scripts/lib/need.sh
. scripts/lib/checks.sh
need ip iproute2
need nft nftables
need python3 python3

build=(cargo build --quiet -p orca-coordinator -p orca-worker -p orca-cli)
if [ "$profile" = release ]; then build+=(--release); fi
echo "== partition: building ($profile)" >&2
"${build[@]}"
BIN=$PWD/target/$profile

dir=$(mktemp -d /tmp/orca-partition-XXXXXX)
pids=()
failures=0
made_ns=()

SECONDS=0
log() { echo "== partition [${SECONDS}s] $*"; }

cleanup() {
  local rc=$?
  set +e
  for p in "${pids[@]}"; do
    kill -KILL "$p" 2>/dev/null
  done
  for p in "${pids[@]}"; do
    wait "$p" 2>/dev/null
  done
  if ip netns list | grep -qw "$NS_W"; then
    ip netns exec "$NS_W" nft delete table inet orca_partition 2>/dev/null
  fi
  for ns in "${made_ns[@]}"; do
    ip netns del "$ns" 2>/dev/null
  done
  # The veth pair goes with its namespaces; remove it in case it never moved.
  ip link del "$VETH_C" 2>/dev/null
  local left
  left=$( (ip netns list | grep -E "^($NS_C|$NS_W)( |$)"; ip link show "$VETH_C" 2>/dev/null | head -1) || true)
  if [ -n "$left" ]; then
    echo "partition.sh: CLEANUP INCOMPLETE: $left" >&2
    rc=1
  else
    echo "== partition: cleaned up (namespaces, veth pair, nftables table, processes)"
  fi
  if [ "$rc" -ne 0 ] || [ "${PARTITION_KEEP:-}" = 1 ]; then
    echo "== partition: run directory kept: $dir" >&2
  else
    rm -rf "$dir"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM


in_c() { ip netns exec "$NS_C" "$@"; }
in_w() { ip netns exec "$NS_W" "$@"; }
orca() { in_c "$BIN/orca" "$@"; }
task_field() { # task_field TASK FIELD
  orca task "$1" --json 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$2"
}
connects() { grep -c "worker connected.*worker=$1" "$dir/coordinator.log" || true; }
# Predicates for wait_until (evaluated on every try).
connected_more_than() { [ "$(connects "$1")" -gt "$2" ]; }
task_is() { [ "$(task_field "$1" state)" = "$2" ]; }

# --- the network -------------------------------------------------------------------------
for ns in "$NS_C" "$NS_W"; do
  if ip netns list | grep -qE "^$ns( |$)"; then
    echo "partition.sh: namespace $ns exists (left by an earlier run?); remove it with: ip netns del $ns" >&2
    exit 1
  fi
done
echo "== partition: namespaces $NS_C ($ADDR_C) and $NS_W ($ADDR_W), veth $VETH_C/$VETH_W; dir $dir"
ip netns add "$NS_C" && made_ns+=("$NS_C")
ip netns add "$NS_W" && made_ns+=("$NS_W")
ip link add "$VETH_C" type veth peer name "$VETH_W"
ip link set "$VETH_C" netns "$NS_C"
ip link set "$VETH_W" netns "$NS_W"
in_c ip addr add "$ADDR_C/30" dev "$VETH_C"
in_w ip addr add "$ADDR_W/30" dev "$VETH_W"
for ns in "$NS_C" "$NS_W"; do
  ip netns exec "$ns" ip link set lo up
done
in_c ip link set "$VETH_C" up
in_w ip link set "$VETH_W" up

# --- the agent: records each run, runs long for prompts "long ..." --------------------------
cat >"$dir/agent.sh" <<EOF
#!/bin/sh
read up _ < /proc/uptime
echo "start \$ORCA_TASK_ID \$ORCA_ATTEMPT \$PART_WORKER \$up" >> "$dir/records"
case "\$ORCA_PROMPT" in long*) sleep $LONG ;; *) sleep 0.2 ;; esac
read up _ < /proc/uptime
echo "end \$ORCA_TASK_ID \$ORCA_ATTEMPT \$PART_WORKER \$up" >> "$dir/records"
echo "done task=\$ORCA_TASK_ID attempt=\$ORCA_ATTEMPT worker=\$PART_WORKER"
EOF
touch "$dir/records"

start_worker() { # start_worker NAME NAMESPACE
  mkdir -p "$dir/work-$1"
  PART_WORKER=$1 ORCA_LOG=${PARTITION_WORKER_LOG:-info,orca_worker=debug} ip netns exec "$2" "$BIN/orca-worker" --coordinator "$ORCA_COORDINATOR" \
    --slots 1 --name "part-$1" --agent command --agent-command "sh $dir/agent.sh" \
    --work-dir "$dir/work-$1" --grace-seconds 5 >/dev/null 2>>"$dir/worker-$1.log" &
  pids+=($!)
  eval "PID_$1=$!"
}

# --- the scenario ----------------------------------------------------------------------------
ORCA_LOG=info,orca_coordinator::dispatch=debug ip netns exec "$NS_C" "$BIN/orca-coordinator" --listen "$ADDR_C:$PORT" \
  --db "$dir/orca.db" --addr-file "$dir/addr" --lease-seconds "$LEASE" \
  --max-lease-losses "${PARTITION_MAX_LEASE_LOSSES:-3}" >/dev/null 2>>"$dir/coordinator.log" &
pids+=($!)
PID_C=$!
wait_until 60 "coordinator listening on $ADDR_C:$PORT" test -s "$dir/addr"

start_worker a "$NS_W"
wait_until 30 "worker A (in $NS_W) connected across the veth" connected_more_than part-a 0

out=$(orca submit --json --description partition "long task")
JOB=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['job_id'])" "$out")
T1=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['task_ids'][0])" "$out")
log "job $JOB, task $T1 (runs ${LONG}s); waiting for it to start on A"
wait_until 30 "task $T1 running on worker A" grep -q "^start $T1 1 a " "$dir/records"

start_worker b "$NS_C"
wait_until 30 "worker B (in $NS_C) connected" connected_more_than part-b 0

in_w nft -f - <<EOF
table inet orca_partition {
  chain input { type filter hook input priority 0; policy accept; ip saddr $ADDR_C drop; }
  chain output { type filter hook output priority 0; policy accept; ip daddr $ADDR_C drop; }
}
EOF
CUT=$SECONDS
log "cut: worker A's traffic to and from $ADDR_C is dropped (nftables table inet orca_partition in $NS_W)"

task_final() { case "$(task_field "$1" state)" in completed | failed | cancelled) return 0 ;; *) return 1 ;; esac; }
wait_until $((LEASE * 4 + LONG * 3 + 20)) "task $T1 final after the cut" task_final "$T1"
if ! task_is "$T1" completed; then
  echo "   FAILED: task $T1 ended $(task_field "$T1" state) after $(task_field "$T1" attempts) attempts:" \
    "$(task_field "$T1" reason)"
  exit 1
fi
DONE_AFTER=$((SECONDS - CUT))
log "task $T1 completed ${DONE_AFTER}s after the cut"
W1=$(task_field "$T1" worker_id)
A1=$(task_field "$T1" attempts)
O1=$(task_field "$T1" output)
echo "   task $T1: worker $W1, attempts $A1, output: $O1"
check "task $T1 was re-queued (attempt >= 2)" test "$A1" -ge 2
check "task $T1 completed on worker B" test "${W1#part-b-}" != "$W1"
check "the accepted result is B's run of attempt $A1" test "$O1" = "done task=$T1 attempt=$A1 worker=b"
check "B ran attempt $A1" grep -q "^end $T1 $A1 b " "$dir/records"
dispatched_to_a=$(grep -c "^start $T1 [0-9]* a " "$dir/records" || true)
check "A ran only attempt 1 while cut off" test "$dispatched_to_a" = 1

wait_until $((LONG + 10)) "A's agent finished attempt 1 while cut off" grep -q "^end $T1 1 a " "$dir/records"

in_w nft delete table inet orca_partition
HEAL=$SECONDS
log "healed: the drop rule is gone"
# Fenced off either way: A reports attempt 1 and is refused, or (when the coordinator had
# already closed its connection) A re-registers naming attempt 1 and is told it is stale.
wait_until 90 "A's late result of task $T1 attempt 1 refused" \
  grep -qE "(report rejected|stale at registration).*task=$T1 attempt=1( |$)" "$dir/coordinator.log"
REJECTED_AFTER=$((SECONDS - HEAL))
grep -E "(report rejected|stale at registration).*task=$T1 attempt=1( |$)" "$dir/coordinator.log" | head -1 | sed 's/^/   coordinator: /' | cut -c1-220
check "task $T1 still holds B's result" \
  test "$(task_field "$T1" worker_id)/$(task_field "$T1" attempts)/$(task_field "$T1" output)" = "$W1/$A1/$O1"
# A's connection either survived the cut (TCP retransmits once the rule is gone) or was
# replaced by a new one; either way A must finish whatever it still runs (a stale assignment
# sent to it during the cut arrives after the heal) and then take new work.
a_idle() { [ "$(grep -c "^start [0-9]* [0-9]* a " "$dir/records")" = "$(grep -c "^end [0-9]* [0-9]* a " "$dir/records")" ]; }
wait_until $((LONG + 30)) "worker A idle after the heal" a_idle
stale=$(grep "^start $T1 [0-9]* a " "$dir/records" | awk '$3 != 1 {print $3}' | xargs)
# A worker that let a lease expire gets no new work until it heartbeats again, and HTTP/2
# pings close a cut connection: no attempt of the task may go to A while it is cut off.
check "no attempt of task $T1 was dispatched to A while it was cut off (saw: ${stale:-none})" test -z "$stale"
sleep 1

# New work, in rounds of two short tasks (one per slot of A and B), until A ran one.
NEW=
by_a=0
rounds=0
all_done() {
  local t
  for t in $1; do
    [ "$(task_field "$t" state)" = completed ] || return 1
  done
}
while [ "$by_a" -eq 0 ] && [ "$rounds" -lt 10 ]; do
  rounds=$((rounds + 1))
  out=$(orca submit --json --job "$JOB" "short $rounds.1" "short $rounds.2")
  ids=$(python3 -c "import json,sys; print(' '.join(map(str, json.loads(sys.argv[1])['task_ids'])))" "$out")
  NEW="$NEW $ids"
  wait_until 60 "new tasks $ids completed" all_done "$ids" || break
  for t in $ids; do
    w=$(task_field "$t" worker_id)
    if [ "${w#part-a-}" != "$w" ]; then by_a=$((by_a + 1)); fi
  done
done
REJOIN_AFTER=$((SECONDS - HEAL))
echo "   new tasks: $(echo $NEW | wc -w) in $rounds round(s), run by A: $by_a"
check "worker A took new work after the heal" test "$by_a" -ge 1

# Stop politely; the database confirms what the API said.
kill -TERM "$PID_a" "$PID_b"
wait "$PID_a" && rca=0 || rca=$?
wait "$PID_b" && rcb=0 || rcb=$?
check "workers exit 0 on SIGTERM (A $rca, B $rcb)" test "$rca$rcb" = 00
kill -TERM "$PID_C"
wait "$PID_C" && rcc=0 || rcc=$?
check "coordinator exits 0 on SIGTERM ($rcc)" test "$rcc" = 0
pids=()
row=$(python3 - "$dir/orca.db" "$T1" <<'EOF'
import sqlite3, sys
db = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
print(*db.execute("SELECT state, attempt, lost_leases, worker_id FROM tasks WHERE task_id = ?", (int(sys.argv[2]),)).fetchone())
EOF
)
echo "   database: task $T1 state/attempt/lost_leases/worker = $row"
read -r st att lost wk <<<"$row"
check "database: task $T1 completed (4) at attempt $A1 by $W1 with >= 1 lost lease" \
  test "$st/$att/$wk" = "4/$A1/$W1" -a "$lost" -ge 1
left=$(grep -c "^start" "$dir/records")
ended=$(grep -c "^end" "$dir/records")
check "every agent run ended ($ended of $left)" test "$left" = "$ended"

echo "== partition: lease ${LEASE}s, cut-off task ${LONG}s; cut to completion on B ${DONE_AFTER}s;" \
  "heal to late report rejected ${REJECTED_AFTER}s; heal to new work done incl. A ${REJOIN_AFTER}s; agent runs $left"
echo "== partition: the zombie case (Listen stream gone, heartbeats arriving) is the e2e test" \
  "zombie_worker_heartbeating_without_a_stream_loses_its_lease (tests/tests/coordinator.rs)"
if [ "$failures" -ne 0 ]; then
  echo "partition.sh: FAIL ($failures checks)"
  exit 1
fi
echo "partition.sh: PASS"
