#!/usr/bin/env bash
# Throwaway PostgreSQL and Redis on loopback for the test suite.
#   source scripts/services.sh && services_start   -> exports TAILOR_TEST_* URLs
#   services_stop                                   -> stops both, removes their files
# Installs the servers with apt-get when they are missing, and Debian's chromium +
# chromedriver for the dashboard's browser tests (test tools never download browsers).

_as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

services_install() {
  local need=()
  ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
  if [ ${#need[@]} -gt 0 ]; then
    echo "==> apt-get install ${need[*]}"
    _as_root apt-get update -qq
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

_free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

services_start() {
  services_install
  SERVICES_DIR=$(mktemp -d /tmp/tailor-services.XXXXXX)
  chmod 755 "$SERVICES_DIR"
  export TAILOR_TEST_PG_BIN
  TAILOR_TEST_PG_BIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -1)")
  export TAILOR_TEST_PGDATA="$SERVICES_DIR/pg"
  export TAILOR_TEST_PG_PORT TAILOR_TEST_REDIS_PORT
  TAILOR_TEST_PG_PORT=$(_free_port)
  TAILOR_TEST_REDIS_PORT=$(_free_port)
  mkdir -p "$TAILOR_TEST_PGDATA"
  local run=()
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$TAILOR_TEST_PGDATA"
    run=(runuser -u postgres --)
  fi
  export TAILOR_TEST_PG_RUN="${run[*]}"
  "${run[@]}" "$TAILOR_TEST_PG_BIN/initdb" -D "$TAILOR_TEST_PGDATA" -U postgres -A trust \
    --no-sync >/dev/null
  export TAILOR_TEST_SERVICES_DIR="$SERVICES_DIR"
  pg_start
  redis_start
  export TAILOR_TEST_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:$TAILOR_TEST_PG_PORT/postgres"
  export TAILOR_TEST_REDIS_URL="redis://127.0.0.1:$TAILOR_TEST_REDIS_PORT/0"
  export TAILOR_TEST_REQUIRE_SERVICES=1
  echo "==> PostgreSQL on 127.0.0.1:$TAILOR_TEST_PG_PORT, Redis on 127.0.0.1:$TAILOR_TEST_REDIS_PORT"
}

pg_start() {
  $TAILOR_TEST_PG_RUN "$TAILOR_TEST_PG_BIN/pg_ctl" -D "$TAILOR_TEST_PGDATA" -w -s \
    -l "$TAILOR_TEST_PGDATA/server.log" \
    -o "-p $TAILOR_TEST_PG_PORT -c listen_addresses=127.0.0.1 -k $TAILOR_TEST_PGDATA -c fsync=off -c max_connections=200" start
}

# Fault-injection tests stop and restart the servers with these (same ports, same data).
pg_stop() {
  $TAILOR_TEST_PG_RUN "$TAILOR_TEST_PG_BIN/pg_ctl" -D "$TAILOR_TEST_PGDATA" -m fast -w -s stop
}

redis_start() {
  redis-server --port "$TAILOR_TEST_REDIS_PORT" --bind 127.0.0.1 --daemonize yes \
    --dir "$TAILOR_TEST_SERVICES_DIR" --save "" --appendonly no \
    --logfile "$TAILOR_TEST_SERVICES_DIR/redis.log"
  for _ in $(seq 50); do
    redis-cli -p "$TAILOR_TEST_REDIS_PORT" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

# Like a crash or an operator restart without persistence: queued messages are lost.
redis_stop() {
  redis-cli -p "$TAILOR_TEST_REDIS_PORT" shutdown nosave >/dev/null 2>&1
  for _ in $(seq 50); do
    redis-cli -p "$TAILOR_TEST_REDIS_PORT" ping >/dev/null 2>&1 || return 0
    sleep 0.1
  done
  return 1
}

services_stop() {
  [ -n "${TAILOR_TEST_PGDATA:-}" ] && $TAILOR_TEST_PG_RUN "$TAILOR_TEST_PG_BIN/pg_ctl" \
    -D "$TAILOR_TEST_PGDATA" -m immediate -s stop >/dev/null 2>&1
  [ -n "${TAILOR_TEST_REDIS_PORT:-}" ] && redis-cli -p "$TAILOR_TEST_REDIS_PORT" shutdown nosave \
    >/dev/null 2>&1
  [ -n "${SERVICES_DIR:-}" ] && rm -rf "$SERVICES_DIR"
  return 0
}
