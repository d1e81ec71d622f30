#!/usr/bin/env bash
# Real servers for the session-store tests, on loopback, under one directory.
#
#   scripts/test-services.sh [start] DIR   install what is missing (Debian, as root), start, write DIR/env
#   scripts/test-services.sh stop DIR      stop everything started under DIR
#
# It starts a PostgreSQL cluster on 127.0.0.1:55432 (trust auth, database tribes_test), a Redis on
# 127.0.0.1:56379 and a three-master Redis Cluster on 127.0.0.1:57001-57003 (bus ports 47001-47003: the
# default, port + 10000, does not exist for these ports), waits until each answers,
# then writes DIR/env:
#
#   export TRIBES_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:55432/tribes_test
#   export TRIBES_TEST_REDIS_URL=redis://127.0.0.1:56379
#   export TRIBES_TEST_REDIS_CLUSTER_URLS=redis://127.0.0.1:57001,redis://127.0.0.1:57002,redis://127.0.0.1:57003
#
# Idempotent: running it again with the same DIR keeps what is running and restarts what is not.
# Use with: `scripts/test-services.sh target/test-services && . target/test-services/env && cargo nextest run ...`
set -euo pipefail

PG_PORT=55432
REDIS_PORT=56379
CLUSTER_PORTS=(57001 57002 57003)

usage() {
  echo "usage: $0 [start|stop] DIR" >&2
  exit 2
}

cmd=start
case "${1:-}" in
  start | stop) cmd=$1; shift ;;
  "" | -h | --help) usage ;;
esac
[ $# -eq 1 ] || usage
mkdir -p "$1"
DIR=$(cd "$1" && pwd)

log() { echo "test-services: $*" >&2; }
die() { log "error: $*"; exit 1; }

pg_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

# Runs a command as the postgres user (PostgreSQL refuses to run as root).
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# ---------------------------------------------------------------------------------------------- install
install_missing() {
  local need=()
  [ -n "$(pg_bin)" ] || need+=(postgresql)
  command -v psql >/dev/null || need+=(postgresql-client)
  command -v redis-server >/dev/null || need+=(redis-server)
  command -v redis-cli >/dev/null || need+=(redis-tools)
  [ ${#need[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "missing ${need[*]}: run this script as root on Debian, or install them"
  command -v apt-get >/dev/null || die "missing ${need[*]} and no apt-get: install them by hand"
  log "installing ${need[*]}"
  # Packages must not start services of their own (they would take the default ports and keep running).
  local policy=/usr/sbin/policy-rc.d had_policy=0
  [ -e "$policy" ] && had_policy=1
  if [ $had_policy -eq 0 ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  [ $had_policy -eq 1 ] || rm -f "$policy"
  [ -n "$(pg_bin)" ] || die "postgresql installed but no initdb under /usr/lib/postgresql/*/bin"
}

# ---------------------------------------------------------------------------------------------- postgres
# The data directory lives under DIR unless the postgres user cannot reach DIR; then it lives in /tmp
# and DIR/postgres is a symlink to it.
pg_dir() {
  if [ -L "$DIR/postgres" ] || [ -d "$DIR/postgres" ]; then
    echo "$DIR/postgres"
    return
  fi
  if [ "$(id -u)" -ne 0 ] || runuser -u postgres -- test -x "$DIR"; then
    mkdir -p "$DIR/postgres"
  else
    local tmp
    tmp=/tmp/tribes-test-services-$(echo "$DIR" | md5sum | cut -c1-12)/postgres
    mkdir -p "$tmp"
    chmod 755 "$(dirname "$tmp")"
    ln -sfn "$tmp" "$DIR/postgres"
  fi
  [ "$(id -u)" -ne 0 ] || chown postgres:postgres "$DIR/postgres/"
  echo "$DIR/postgres"
}

pg_ready() {
  "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"
}

start_postgres() {
  local bin pgd
  bin=$(pg_bin)
  pgd=$(pg_dir)
  if pg_ready; then
    log "postgres already answers on 127.0.0.1:$PG_PORT"
  else
    if [ ! -f "$pgd/data/PG_VERSION" ]; then
      log "initdb in $pgd/data"
      rm -rf "${pgd:?}/data"
      as_postgres "$bin/initdb" -D "$pgd/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$pgd/initdb.log" 2>&1 ||
        as_postgres "$bin/initdb" -D "$pgd/data" -U postgres -A trust -E UTF8 --no-locale >"$pgd/initdb.log" 2>&1 ||
        die "initdb failed: see $pgd/initdb.log"
      # Only loopback TCP and the private socket: trust is safe there, nowhere else.
      printf 'local all all trust\nhost all all 127.0.0.1/32 trust\n' >"$pgd/data/pg_hba.conf"
      [ "$(id -u)" -ne 0 ] || chown postgres:postgres "$pgd/data/pg_hba.conf"
    fi
    log "starting postgres on 127.0.0.1:$PG_PORT"
    as_postgres "$bin/pg_ctl" -D "$pgd/data" -l "$pgd/postgres.log" -w -t 60 start \
      -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$pgd -c fsync=off -c max_connections=200" \
      >/dev/null || die "postgres did not start: see $pgd/postgres.log"
  fi
  for _ in $(seq 1 100); do pg_ready && break; sleep 0.1; done
  pg_ready || die "postgres does not answer on 127.0.0.1:$PG_PORT: see $pgd/postgres.log"
  if [ "$(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'tribes_test'")" != 1 ]; then
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qc "CREATE DATABASE tribes_test" >/dev/null
  fi
}

stop_postgres() {
  local bin
  bin=$(pg_bin) || return 0
  if [ -f "$DIR/postgres/data/postmaster.pid" ]; then
    log "stopping postgres"
    as_postgres "$bin/pg_ctl" -D "$DIR/postgres/data" -m fast -w stop >/dev/null || true
  fi
}

# ---------------------------------------------------------------------------------------------- redis
redis_ping() {
  [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]
}

# start_redis PORT DIR [extra args]
start_redis() {
  local port=$1 dir=$2
  shift 2
  if redis_ping "$port"; then
    log "redis already answers on 127.0.0.1:$port"
    return
  fi
  mkdir -p "$dir"
  log "starting redis on 127.0.0.1:$port"
  redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --daemonize yes \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
    --save "" --appendonly no --protected-mode no "$@" >/dev/null
  for _ in $(seq 1 100); do redis_ping "$port" && return; sleep 0.1; done
  die "redis does not answer on 127.0.0.1:$port: see $dir/redis.log"
}

cluster_ok() {
  redis-cli -h 127.0.0.1 -p "${CLUSTER_PORTS[0]}" cluster info 2>/dev/null | grep -q '^cluster_state:ok' &&
    [ "$(redis-cli -h 127.0.0.1 -p "${CLUSTER_PORTS[0]}" cluster info 2>/dev/null | tr -d '\r' |
      sed -n 's/^cluster_known_nodes://p')" = "${#CLUSTER_PORTS[@]}" ]
}

start_cluster() {
  local p known=1
  for p in "${CLUSTER_PORTS[@]}"; do [ -s "$DIR/redis-cluster/$p/nodes.conf" ] || known=0; done
  for p in "${CLUSTER_PORTS[@]}"; do
    start_redis "$p" "$DIR/redis-cluster/$p" --cluster-enabled yes --cluster-config-file nodes.conf \
      --cluster-node-timeout 5000 --cluster-port $((p - 10000))
  done
  # Nodes restarted with their nodes.conf find each other again; give them a moment.
  if [ $known -eq 1 ]; then
    for _ in $(seq 1 50); do cluster_ok && break; sleep 0.2; done
  fi
  if ! cluster_ok; then
    log "creating the redis cluster on ${CLUSTER_PORTS[*]}"
    for p in "${CLUSTER_PORTS[@]}"; do
      redis-cli -h 127.0.0.1 -p "$p" flushall >/dev/null 2>&1 || true
      redis-cli -h 127.0.0.1 -p "$p" cluster reset hard >/dev/null
    done
    local addrs=()
    for p in "${CLUSTER_PORTS[@]}"; do addrs+=("127.0.0.1:$p"); done
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >"$DIR/redis-cluster/create.log" 2>&1 ||
      die "redis-cli --cluster create failed: see $DIR/redis-cluster/create.log"
  fi
  for _ in $(seq 1 100); do cluster_ok && return; sleep 0.1; done
  die "the redis cluster on ${CLUSTER_PORTS[*]} is not ok: see $DIR/redis-cluster/*/redis.log"
}

stop_redis() {
  local port=$1
  if redis_ping "$port"; then
    log "stopping redis on 127.0.0.1:$port"
    redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
  fi
}

# ---------------------------------------------------------------------------------------------- main
case $cmd in
  start)
    install_missing
    start_postgres
    start_redis "$REDIS_PORT" "$DIR/redis"
    start_cluster
    urls=()
    for p in "${CLUSTER_PORTS[@]}"; do urls+=("redis://127.0.0.1:$p"); done
    cat >"$DIR/env" <<EOF
export TRIBES_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$PG_PORT/tribes_test
export TRIBES_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT
export TRIBES_TEST_REDIS_CLUSTER_URLS=$(IFS=,; echo "${urls[*]}")
EOF
    log "ready; wrote $DIR/env"
    ;;
  stop)
    stop_postgres
    stop_redis "$REDIS_PORT"
    for p in "${CLUSTER_PORTS[@]}"; do stop_redis "$p"; done
    ;;
esac
