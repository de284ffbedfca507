#!/usr/bin/env bash
# The Python client (client/python): its packaging, its generated stubs against proto/, and
# its tests against real binaries. Needs python3 (with venv) and, unless ORCA_NO_BUILD=1,
# cargo. Steps:
#   1. make the venv target/tools/pyvenv when missing; install grpcio-tools 1.85.1 and pytest
#   2. pip install ./client/python (a real install, not editable: the packaging is tested)
#   3. regenerate the stubs into a temporary directory and compare with the checked-in ones
#   4. cargo build -p orca-coordinator -p orca-worker (skipped with ORCA_NO_BUILD=1)
#   5. pytest client/python/tests with ORCA_BIN_DIR=target/debug (extra arguments go to pytest)
# Exits non-zero on the first failing step, with a summary line either way.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv=$root/target/tools/pyvenv
py=$venv/bin/python
pip=("$py" -m pip --disable-pip-version-check --quiet)
started=$(date +%s)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step() { printf '\n== %s\n' "$*"; }
fail() {
  printf '\npython-check: FAIL (%s) after %ss\n' "$*" "$(($(date +%s) - started))"
  exit 1
}

step "venv $venv"
if [ ! -x "$py" ]; then
  python3 -m venv "$venv" || fail "python3 -m venv $venv"
fi
"${pip[@]}" install grpcio-tools==1.85.1 pytest || fail "installing grpcio-tools and pytest"

step "pip install ./client/python"
"${pip[@]}" install ./client/python || fail "pip install ./client/python"
version=$("$py" -c 'import importlib.metadata as m; print(m.version("orca-client"))')
location=$("$py" -c 'import orca, os; print(os.path.dirname(orca.__file__))')
case "$location" in
  "$venv"/*) echo "orca-client $version installed in $location" ;;
  *) fail "orca imports from $location, not from the venv" ;;
esac

step "stubs in client/python/src/orca/v1 against proto/orca/v1"
PYTHON=$py client/python/generate.sh "$work/gen" || fail "generating the stubs"
checked=client/python/src/orca/v1
stale=()
for f in "$work"/gen/orca/v1/*; do
  name=$(basename "$f")
  cmp -s "$f" "$checked/$name" || stale+=("$checked/$name")
done
for f in "$checked"/*_pb2*.py "$checked"/*_pb2*.pyi; do
  [ -e "$work/gen/orca/v1/$(basename "$f")" ] || stale+=("$f (no longer generated)")
done
if [ ${#stale[@]} -gt 0 ]; then
  diff -ru "$checked" "$work/gen/orca/v1" -x __init__.py -x __pycache__ | head -40 || true
  printf 'stale: %s\n' "${stale[@]}"
  echo "The checked-in Python stubs do not match proto/orca/v1/*.proto. Regenerate and commit them:"
  echo "  PYTHON=$py client/python/generate.sh && git add client/python/src/orca/v1"
  fail "Python stubs out of date with proto/"
fi
echo "stubs match"

if [ "${ORCA_NO_BUILD:-}" = 1 ]; then
  step "ORCA_NO_BUILD=1: using the binaries in target/debug as they are"
else
  step "cargo build -p orca-coordinator -p orca-worker"
  cargo build --quiet -p orca-coordinator -p orca-worker || fail "cargo build"
fi

step "pytest client/python/tests"
set +e
(cd client/python && ORCA_BIN_DIR="$root/target/debug" "$venv/bin/pytest" -q -p no:cacheprovider "$@") 2>&1 | tee "$work/pytest.log"
status=${PIPESTATUS[0]}
set -e
result=$(grep -E '^(=+ )?[0-9]+ (passed|failed|error)' "$work/pytest.log" | tail -1 | sed -E 's/^=+ //; s/ =+$//')
if [ "$status" -ne 0 ]; then
  fail "pytest: ${result:-exit $status}"
fi
printf '\npython-check: ok: orca-client %s installed, stubs match proto/, %s; %ss in all\n' \
  "$version" "$result" "$(($(date +%s) - started))"
