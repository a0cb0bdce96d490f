#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for the multi-worker search test.
#
#   source .ci/postgres.sh; pg_start; ...; pg_stop      # exports RECSYS_EMB_TEST_POSTGRES_URL / _DIR
#   .ci/postgres.sh start [BASE_DIR]                    # prints KEY=VALUE lines (URL, DIR); server keeps running
#   .ci/postgres.sh stop DIR                            # stops it and deletes DIR
#
# Installs Debian's postgresql package when initdb/pg_ctl are missing (needs root + apt-get). initdb refuses
# to run as root, so under root the server runs as the `postgres` user (created by the package) or, failing
# that, a system user `recsys-pg` created here. Auth is `trust` on 127.0.0.1 only: a test server, never a
# real one.

_pg_log() { echo "postgres.sh: $*" >&2; }

_pg_bindir() {
    local d
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return 0
    fi
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
    done
    return 1
}

_pg_install() {
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        _pg_log "PostgreSQL is not installed and cannot be installed here (needs root and apt-get)"
        return 1
    fi
    _pg_log "installing PostgreSQL from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2
}

_pg_free_port() {
    local py
    for py in python3 python; do
        if command -v "$py" >/dev/null 2>&1; then
            "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
            return 0
        fi
    done
    echo $(( 20000 + RANDOM % 20000 ))
}

# pg_start [BASE_DIR]: init + start; exports RECSYS_EMB_TEST_POSTGRES_URL and RECSYS_EMB_TEST_POSTGRES_DIR
pg_start() {
    local bindir base data port run_as user=recsys db=optuna
    bindir="$(_pg_bindir)" || { _pg_install && bindir="$(_pg_bindir)"; } || {
        _pg_log "initdb/pg_ctl not found after installing"; return 1; }
    base="${1:-$(mktemp -d /tmp/recsys-emb-pg.XXXXXX)}"
    mkdir -p "$base"
    chmod 755 "$base"
    data="$base/data"
    run_as=()
    if [ "$(id -u)" = 0 ]; then
        local os_user=postgres
        if ! id "$os_user" >/dev/null 2>&1; then
            os_user=recsys-pg
            id "$os_user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$os_user"
        fi
        mkdir -p "$data"
        chown "$os_user" "$data"
        run_as=(runuser -u "$os_user" --)
    fi
    "${run_as[@]}" "$bindir/initdb" -D "$data" -U "$user" --auth=trust -E UTF8 --no-instructions >"$base/initdb.log" 2>&1 || {
        _pg_log "initdb failed:"; cat "$base/initdb.log" >&2; return 1; }
    port="$(_pg_free_port)"
    "${run_as[@]}" "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
        -o "-h 127.0.0.1 -p $port -k $data -c fsync=off -c max_connections=100" start >&2 || {
        _pg_log "pg_ctl start failed:"; cat "$data/server.log" >&2; return 1; }
    "$bindir/createdb" -h 127.0.0.1 -p "$port" -U "$user" "$db" || { pg_stop "$base"; return 1; }
    echo "$bindir" >"$base/bindir"
    if [ "$(id -u)" = 0 ]; then echo "${run_as[2]}" >"$base/os_user"; fi
    export RECSYS_EMB_TEST_POSTGRES_URL="postgresql://$user@127.0.0.1:$port/$db"
    export RECSYS_EMB_TEST_POSTGRES_DIR="$base"
    _pg_log "started $RECSYS_EMB_TEST_POSTGRES_URL (data in $data)"
}

# pg_stop [BASE_DIR]: stop the server and delete its directory
pg_stop() {
    local base="${1:-${RECSYS_EMB_TEST_POSTGRES_DIR:-}}" bindir run_as=()
    [ -n "$base" ] && [ -d "$base" ] || return 0
    bindir="$(cat "$base/bindir" 2>/dev/null || _pg_bindir)"
    if [ -f "$base/os_user" ]; then run_as=(runuser -u "$(cat "$base/os_user")" --); fi
    if [ -f "$base/data/postmaster.pid" ]; then
        "${run_as[@]}" "$bindir/pg_ctl" -D "$base/data" -m fast -w stop >&2 || true
    fi
    rm -rf "$base"
    if [ "${RECSYS_EMB_TEST_POSTGRES_DIR:-}" = "$base" ]; then
        unset RECSYS_EMB_TEST_POSTGRES_URL RECSYS_EMB_TEST_POSTGRES_DIR
    fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    case "${1:-}" in
        start)
            pg_start "${2:-}"
            echo "RECSYS_EMB_TEST_POSTGRES_URL=$RECSYS_EMB_TEST_POSTGRES_URL"
            echo "RECSYS_EMB_TEST_POSTGRES_DIR=$RECSYS_EMB_TEST_POSTGRES_DIR"
            ;;
        stop)
            pg_stop "${2:?usage: $0 stop DIR}"
            ;;
        *)
            echo "usage: $0 start [BASE_DIR] | stop DIR   (or: source $0; pg_start; ...; pg_stop)" >&2
            exit 2
            ;;
    esac
fi
