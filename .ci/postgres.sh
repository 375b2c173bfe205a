#!/usr/bin/env bash
# A private, throwaway PostgreSQL server for the tests of the `postgres` storage backend
# (docs/receiver-store-postgres.md): its own cluster in a temporary directory, listening on
# 127.0.0.1 only (and a Unix socket inside that directory), with a role `fleet` that may
# CREATE DATABASE and logs in with a random password (scram-sha-256). Nothing of the system's
# own PostgreSQL (if any) is touched.
#
#   .ci/postgres.sh start [PORT]   start one (PORT: a free one when not given) and print,
#                                  one per line, the variables the tests read:
#                                    FLEET_TEST_POSTGRES=postgres://fleet@127.0.0.1:PORT/postgres
#                                    FLEET_TEST_POSTGRES_PASSWORD=<random hex>
#                                    FLEET_POSTGRES_DIR=<the cluster's directory, for stop>
#   .ci/postgres.sh stop [DIR]     stop the cluster in DIR (default $FLEET_POSTGRES_DIR) and
#                                  delete the directory
#
# Usage from a script:  eval "$(.ci/postgres.sh start | sed 's/^/export /')"
# The values are plain (URL characters and hex), so the eval is safe.
#
# initdb refuses to run as root: as root the cluster is made and run as the `postgres` OS user
# (created by the distribution's package) through runuser; as anyone else, as that user.
# The server binaries come from `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin.
set -euo pipefail

die() { echo "postgres.sh: $*" >&2; exit 1; }

bindir() {
  local dir
  for dir in "$(pg_config --bindir 2>/dev/null || true)" $(printf "%s\n" /usr/lib/postgresql/*/bin | sort -V -r); do
    if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
      echo "$dir"
      return
    fi
  done
  die "no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql"
}

# Run a command as the cluster's owner.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "no \`postgres\` OS user to run the server as (apt-get install postgresql makes it)"
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  local port=${1:-} bin dir password
  bin=$(bindir)
  dir=$(mktemp -d "${TMPDIR:-/tmp}/fleet-postgres.XXXXXX")
  chmod 0700 "$dir"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
  fi
  password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  as_owner "$bin/initdb" --pgdata "$dir/data" --username postgres --encoding UTF8 --locale C \
    --auth-local peer --auth-host scram-sha-256 >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; die "initdb failed (log above)"; }
  # A free port can be taken between the probe and the bind: try a few.
  local tries=0
  while :; do
    [ -n "$port" ] || port=$(free_port)
    if as_owner "$bin/pg_ctl" --pgdata "$dir/data" --log "$dir/server.log" --wait --timeout 60 \
      -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c max_connections=200 -c fsync=on" \
      start >/dev/null 2>&1; then
      break
    fi
    tries=$((tries + 1))
    if [ -n "${1:-}" ] || [ "$tries" -ge 5 ]; then
      cat "$dir/server.log" >&2 || true
      die "cannot start the server on 127.0.0.1:$port (log above)"
    fi
    port=
  done
  # The password goes through stdin, never argv. psql connects over the private Unix socket
  # as the superuser (peer authentication: we are its OS user).
  printf "CREATE ROLE fleet LOGIN CREATEDB PASSWORD '%s';\n" "$password" |
    as_owner psql --quiet --no-psqlrc --set ON_ERROR_STOP=1 --host "$dir" --port "$port" --username postgres \
      --dbname postgres >/dev/null ||
    { stop "$dir"; die "cannot create the role fleet"; }
  echo "$port" >"$dir/port"
  echo "FLEET_TEST_POSTGRES=postgres://fleet@127.0.0.1:$port/postgres"
  echo "FLEET_TEST_POSTGRES_PASSWORD=$password"
  echo "FLEET_POSTGRES_DIR=$dir"
}

stop() {
  local dir=${1:-${FLEET_POSTGRES_DIR:-}} bin
  [ -n "$dir" ] || die "stop: which cluster? give its directory or set FLEET_POSTGRES_DIR"
  case "$dir" in
    */fleet-postgres.*) ;;
    *) die "stop: $dir is not a directory this script made" ;;
  esac
  [ -d "$dir" ] || return 0
  bin=$(bindir)
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_owner "$bin/pg_ctl" --pgdata "$dir/data" --mode fast --wait --timeout 60 stop >/dev/null 2>&1 ||
      as_owner "$bin/pg_ctl" --pgdata "$dir/data" --mode immediate --wait stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  *) die "usage: .ci/postgres.sh start [PORT] | stop [DIR]" ;;
esac
