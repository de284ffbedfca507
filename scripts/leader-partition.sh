#!/usr/bin/env bash
# A leader cut off from Postgres (README "High availability"): two coordinators on one
# Postgres; the leader, A, runs in a network namespace and reaches Postgres across a veth
# pair; an nftables drop rule then cuts A from Postgres only (workers still reach A). Checks:
#   - A stops serving (its commits cannot finish: /healthz 503, calls UNAVAILABLE);
#   - Postgres gives up on A's session (TCP keepalives), its leader lock goes, and the standby
#     B takes over and serves;
#   - every task completes, none twice (the attempts in the database), workers end on B;
#   - once the cut heals, A finds B leading and stays a standby naming it.
# Layout: namespace orca-hl holds A (10.213.9.2:50051, HTTP :9090); the root namespace holds
# Postgres (127.0.0.1 and 10.213.9.1), B (127.0.0.1) and two workers given both URLs.
# Traffic only goes to loopback and to those two addresses. Everything made here
# (namespace, veth, nftables table, processes, Postgres) is removed on exit.
#
#   sudo scripts/leader-partition.sh            # debug build (what CI runs)
# Needs root: without it the script fails (exit 2) and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "leader-partition.sh: FAILED: needs root (network namespaces and nftables); run it with sudo" >&2
  exit 2
fi
NS=orca-hl
VETH_R=orca-hl0
VETH_N=orca-hl1
ADDR_R=10.213.9.1
ADDR_A=10.213.9.2
TASKS=${LEADER_PARTITION_TASKS:-60}
export NO_COLOR=1

. scripts/lib/need.sh
. scripts/lib/checks.sh
need ip iproute2
need nft nftables
need python3 python3

cargo build --quiet -p orca-coordinator -p orca-worker -p orca-cli
BIN=$PWD/target/debug
dir=$(mktemp -d /tmp/orca-leader-partition-XXXXXX)
pids=()
failures=0
pgdir=
SECONDS=0
log() { echo "== leader-partition [${SECONDS}s] $*"; }

cleanup() {
  local rc=$?
  set +e
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  ip netns exec "$NS" nft delete table inet orca_leader_cut 2>/dev/null
  [ -n "$pgdir" ] && scripts/postgres.sh stop "$pgdir"
  ip netns del "$NS" 2>/dev/null
  ip link del "$VETH_R" 2>/dev/null
  if ip netns list | grep -qE "^$NS( |$)" || ip link show "$VETH_R" >/dev/null 2>&1; then
    echo "leader-partition.sh: CLEANUP INCOMPLETE" >&2
    rc=1
  fi
  if [ "$rc" -ne 0 ]; then echo "== leader-partition: run directory kept: $dir" >&2; else rm -rf "$dir"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# /healthz of a coordinator: "CODE BODY" (the first line).
healthz() {
  python3 - "$1" <<'EOF'
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen("http://" + sys.argv[1] + "/healthz", timeout=3)
    print(r.status, r.read().decode().splitlines()[0])
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode().splitlines()[0])
except Exception as e:
    print(0, e)
EOF
}
serving() { healthz "$1" | grep -q "^200 serving"; }
not_serving() { healthz "$1" | grep -q "^503 "; }

# --- the network and Postgres ------------------------------------------------------------
if ip netns list | grep -qE "^$NS( |$)"; then
  echo "leader-partition.sh: namespace $NS exists (left by an earlier run?); ip netns del $NS" >&2
  exit 1
fi
ip netns add "$NS"
ip link add "$VETH_R" type veth peer name "$VETH_N"
ip link set "$VETH_N" netns "$NS"
ip addr add "$ADDR_R/30" dev "$VETH_R"
ip link set "$VETH_R" up
ip netns exec "$NS" ip addr add "$ADDR_A/30" dev "$VETH_N"
ip netns exec "$NS" ip link set "$VETH_N" up
ip netns exec "$NS" ip link set lo up
eval "$(ORCA_PG_EXTRA_LISTEN=$ADDR_R ORCA_PG_EXTRA_HBA=$ADDR_A/32 scripts/postgres.sh start)"
pgdir=$ORCA_TEST_PGDATA
PGPORT=${ORCA_TEST_POSTGRES##*:}
PGPORT=${PGPORT%%/*}
log "Postgres on 127.0.0.1 and $ADDR_R:$PGPORT; A in $NS at $ADDR_A; dir $dir"

# --- the coordinators and workers ---------------------------------------------------------
ORCA_LOG=info ip netns exec "$NS" "$BIN/orca-coordinator" --listen "$ADDR_A:50051" \
  --http-listen "$ADDR_A:9090" --db "postgres://orca@$ADDR_R:$PGPORT/orca_cut" --addr-file "$dir/a.addr" \
  --lease-seconds 4 >/dev/null 2>>"$dir/a.log" &
pids+=($!)
wait_until 60 "A listening" test -s "$dir/a.addr"
wait_until 30 "A leading" serving "$ADDR_A:9090"
ORCA_LOG=info "$BIN/orca-coordinator" --listen 127.0.0.1:0 --addr-file "$dir/b.addr" --http-listen 127.0.0.1:0 \
  --http-addr-file "$dir/b.http" --db "postgres://orca@127.0.0.1:$PGPORT/orca_cut" --lease-seconds 4 \
  >/dev/null 2>>"$dir/b.log" &
pids+=($!)
wait_until 60 "B listening" test -s "$dir/b.http"
B=$(cat "$dir/b.addr")
BH=$(cat "$dir/b.http")
b_standby() { healthz "$BH" | grep -q "^503 not serving: this coordinator is a standby; the leader is at http://$ADDR_A:50051"; }
check "B is a standby naming A" b_standby
export ORCA_COORDINATOR="http://$ADDR_A:50051,http://$B"
cat >"$dir/agent.sh" <<EOF
#!/bin/sh
echo "start \$ORCA_TASK_ID \$ORCA_ATTEMPT" >> "$dir/records"
sleep 0.5
echo "end \$ORCA_TASK_ID \$ORCA_ATTEMPT" >> "$dir/records"
echo "done \$ORCA_TASK_ID"
EOF
touch "$dir/records"
for w in 1 2; do
  mkdir -p "$dir/work-$w"
  ORCA_LOG=info "$BIN/orca-worker" --slots 4 --name "w$w" --agent command --agent-command "sh $dir/agent.sh" \
    --work-dir "$dir/work-$w" >/dev/null 2>>"$dir/worker-$w.log" &
  pids+=($!)
done

prompts=$(seq 1 "$TASKS" | sed 's/^/task /')
out=$(echo "$prompts" | "$BIN/orca" submit --json --description leader-partition)
JOB=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['job_id'])" "$out")
log "job $JOB: $TASKS tasks of 0.5 s on 2 workers x 4 slots"
started() { [ "$(grep -c '^end' "$dir/records")" -ge 8 ]; }
wait_until 60 "some tasks done through A" started

# --- the cut: A <-> Postgres only ---------------------------------------------------------
ip netns exec "$NS" nft -f - <<EOF
table inet orca_leader_cut {
  chain input { type filter hook input priority 0; policy accept; ip saddr $ADDR_R tcp sport $PGPORT drop; }
  chain output { type filter hook output priority 0; policy accept; ip daddr $ADDR_R tcp dport $PGPORT drop; }
}
EOF
CUT=$SECONDS
log "cut: A's traffic to and from Postgres ($ADDR_R:$PGPORT) is dropped"
wait_until 30 "A not serving" not_serving "$ADDR_A:9090"
A_DOWN=$((SECONDS - CUT))
wait_until 60 "B serving (it took the leader lock)" serving "$BH"
B_UP=$((SECONDS - CUT))
log "A stopped serving after ${A_DOWN}s, B leads after ${B_UP}s"
# (Output captured before it is searched: the CLI must not write into a closed pipe.)
status() { "$BIN/orca" --coordinator "http://$B" status "$JOB" 2>/dev/null || true; }
done_all() { local st; st=$(status); [[ "$st" == *"100.0% done"* ]]; }
wait_until 120 "every task final, through B" done_all
st=$(status)
echo "   ${st%%$'\n'*}"
check "every task completed" test -n "$(echo "$st" | grep " $TASKS completed, 0 failed")"
twice=$(psql -At "postgres://orca@127.0.0.1:$PGPORT/orca_cut" -c \
  "SELECT count(*) FROM (SELECT task_id FROM attempts WHERE outcome = 'completed' GROUP BY task_id HAVING count(*) > 1) t")
check "no task completed twice (attempts in the database)" test "$twice" = 0
epochs=$(psql -At "postgres://orca@127.0.0.1:$PGPORT/orca_cut" -c "SELECT epoch, addr FROM orca_leader")
check "B holds the leadership ($epochs)" sh -c "echo '$epochs' | grep -q '127.0.0.1'"
check "A logged that it stopped serving" grep -qE "commit did not finish|lost the leadership|a commit failed" "$dir/a.log"

# --- the heal ---------------------------------------------------------------------------------
ip netns exec "$NS" nft delete table inet orca_leader_cut
log "healed"
a_standby() { healthz "$ADDR_A:9090" | grep -q "^503 not serving: this coordinator is a standby; the leader is at http://$B"; }
wait_until 60 "A a standby naming B after the heal" a_standby
healthz "$ADDR_A:9090" | sed 's/^/   A: /'

echo "== leader-partition: cut to A not serving ${A_DOWN}s; cut to B leading ${B_UP}s; $TASKS tasks, none twice"
if [ "$failures" -ne 0 ]; then
  echo "leader-partition.sh: FAIL ($failures checks)"
  exit 1
fi
echo "leader-partition.sh: PASS"
