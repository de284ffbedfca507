#!/usr/bin/env bash
# Regenerates the Python stubs of proto/orca/v1/*.proto (package orca.v1) into OUT_DIR
# (default: this package's src/, where they are checked in). scripts/python-check.sh runs it
# into a temporary directory and compares, so a .proto change without regenerating fails CI.
# Needs grpcio-tools==1.85.1 for $PYTHON (default python3); google/protobuf/struct.proto comes
# from grpc_tools' own include directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$here/src}
py=${PYTHON:-python3}
want=1.85.1
have=$("$py" -c 'import importlib.metadata as m; print(m.version("grpcio-tools"))' 2>/dev/null || true)
if [ "$have" != "$want" ]; then
  echo "generate.sh: needs grpcio-tools==$want for $py (found ${have:-none}); run: $py -m pip install grpcio-tools==$want" >&2
  exit 1
fi
wkt=$("$py" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
mkdir -p "$out"
cd "$root"
"$py" -m grpc_tools.protoc -I proto -I "$wkt" \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  orca/v1/types.proto orca/v1/orchestrator.proto orca/v1/worker.proto
