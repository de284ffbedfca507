# Sourced by scripts that need tools beyond the Rust toolchain. `need COMMAND PACKAGE`
# returns when COMMAND is on the PATH; otherwise it installs the Debian PACKAGE with apt-get
# (as CI does, running as root on a fresh machine) and fails the calling script, with a
# message naming the command and the package, when that is not possible. A check that
# cannot run never passes.
need() {
  local cmd=$1 pkg=$2 me
  me=$(basename "$0")
  command -v "$cmd" >/dev/null && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "$me: FAILED: $cmd is missing; install the Debian package $pkg (apt-get needs root)" >&2
    exit 2
  fi
  echo "== $me: installing $pkg (for $cmd)" >&2
  local install=(apt-get install -y -qq --no-install-recommends "$pkg")
  if ! DEBIAN_FRONTEND=noninteractive "${install[@]}" >/dev/null 2>&1; then
    # A fresh machine may have no package lists yet.
    if ! apt-get update -qq >/dev/null || ! DEBIAN_FRONTEND=noninteractive "${install[@]}" >/dev/null; then
      echo "$me: FAILED: could not install $pkg (for $cmd) with apt-get" >&2
      exit 2
    fi
  fi
  command -v "$cmd" >/dev/null || {
    echo "$me: FAILED: $pkg is installed but $cmd is still not on the PATH" >&2
    exit 2
  }
}
