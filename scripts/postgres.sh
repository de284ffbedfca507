#!/usr/bin/env bash
# A throwaway Postgres for tests and benchmarks: a temporary data directory, a free port on
# 127.0.0.1, run as a non-root user (Debian's `postgres` when run as root). Installs Debian's
# postgresql package when it is missing.
#
#   eval "$(scripts/postgres.sh start [--durable])"   # exports ORCA_TEST_POSTGRES, ORCA_TEST_PGDATA
#   scripts/postgres.sh restart "$ORCA_TEST_PGDATA"   # pg_ctl restart (fast shutdown)
#   scripts/postgres.sh halt "$ORCA_TEST_PGDATA"      # stops the server, keeps the data
#   scripts/postgres.sh resume "$ORCA_TEST_PGDATA"    # starts it again after halt
#   scripts/postgres.sh stop "$ORCA_TEST_PGDATA"      # stops it and removes the directory
#
# `start` prints the exports on stdout (its log goes to stderr). The cluster has one
# superuser, `orca`, trusted on loopback. It serves TLS too (ssl=on, a certificate for
# 127.0.0.1 from a CA made here: ORCA_TEST_PG_CA), for the tests of --db-ssl-mode. Without --durable it runs with fsync=off (tests:
# faster, and nothing there outlives the machine); benchmarks pass --durable.
# ORCA_PG_EXTRA_LISTEN=ADDR also listens on ADDR, and ORCA_PG_EXTRA_HBA=CIDR trusts that
# network (scripts/leader-partition.sh: a coordinator in a network namespace).
set -euo pipefail

log() { echo "postgres.sh: $*" >&2; }

bindir() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
    done
    command -v pg_ctl >/dev/null 2>&1 && { dirname "$(command -v pg_ctl)"; return 0; }
    return 1
}

install_postgres() {
    log "installing Debian's postgresql package"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >&2
}

# Runs a command as the cluster's owner: `postgres` when we are root, else ourselves.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A CA and a server certificate for 127.0.0.1 signed by it, in DIR/tls (the key readable by
# the cluster's owner alone, as Postgres requires).
make_certs() {
    local t=$1/tls
    mkdir -p "$t"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=orca test CA" \
        -keyout "$t/ca.key" -out "$t/ca.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$t/server.key" -out "$t/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$t/ext"
    openssl x509 -req -in "$t/server.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial \
        -days 2 -extfile "$t/ext" -out "$t/server.pem" 2>/dev/null
    chmod 600 "$t/server.key"
    [ "$(id -u)" -eq 0 ] && chown -R postgres "$t"
    chmod 644 "$t/ca.pem"
}

start() {
    local durable=0
    [ "${1:-}" = "--durable" ] && durable=1
    local bin
    bin=$(bindir) || { install_postgres; bin=$(bindir); }
    if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres
    fi
    local dir port
    dir=$(mktemp -d /tmp/orca-pg.XXXXXX)
    chmod 755 "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
    port=$(free_port)
    as_owner "$bin/initdb" -D "$dir/data" -U orca --auth=trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    if [ -n "${ORCA_PG_EXTRA_HBA:-}" ]; then
        echo "host all all ${ORCA_PG_EXTRA_HBA} trust" >>"$dir/data/pg_hba.conf"
    fi
    local listen="127.0.0.1${ORCA_PG_EXTRA_LISTEN:+,$ORCA_PG_EXTRA_LISTEN}"
    local fsync="off"
    [ "$durable" -eq 1 ] && fsync="on"
    make_certs "$dir"
    echo "$bin" >"$dir/bin"
    echo "-c listen_addresses=$listen -c port=$port -c unix_socket_directories=$dir/data \
-c fsync=$fsync -c max_connections=400 -c shared_buffers=256MB \
-c ssl=on -c ssl_cert_file=$dir/tls/server.pem -c ssl_key_file=$dir/tls/server.key" >"$dir/opts"
    resume "$dir"
    log "Postgres on 127.0.0.1:$port, data in $dir/data (fsync=$fsync)"
    echo "export ORCA_TEST_POSTGRES=postgres://orca@127.0.0.1:$port/postgres"
    echo "export ORCA_TEST_PGDATA=$dir"
    echo "export ORCA_TEST_PG_CA=$dir/tls/ca.pem"
}

restart() {
    local dir=$1
    as_owner "$(cat "$dir/bin")/pg_ctl" -D "$dir/data" -l "$dir/data/server.log" -w -t 60 -m fast restart >&2
}

halt() {
    local dir=$1
    as_owner "$(cat "$dir/bin")/pg_ctl" -D "$dir/data" -w -t 60 -m fast stop >&2
}

resume() {
    local dir=$1
    as_owner "$(cat "$dir/bin")/pg_ctl" -D "$dir/data" -l "$dir/data/server.log" -w -t 60 \
        -o "$(cat "$dir/opts")" start >&2
}

stop() {
    local dir=$1
    [ -d "$dir/data" ] || return 0
    as_owner "$(cat "$dir/bin")/pg_ctl" -D "$dir/data" -w -t 60 -m fast stop >&2 || true
    rm -rf "$dir"
}

case "${1:-}" in
    start) shift; start "$@" ;;
    restart) restart "$2" ;;
    halt) halt "$2" ;;
    resume) resume "$2" ;;
    stop) stop "$2" ;;
    *) echo "usage: $0 start [--durable] | restart DIR | halt DIR | resume DIR | stop DIR" >&2; exit 2 ;;
esac
